/** Await-the-stop action with a short heartbeat (250 ms → expires 1 s after the last status): the storm's heartbeat-expiry share. */
import { spinAction } from './spin-action.js';

export default spinAction('bench.wait-expiring', '250ms', 'io');
