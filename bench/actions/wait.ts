/** Await-the-stop action on a shared io body thread, heartbeat never expiring during a benchmark: the storm's bulk. */
import { spinAction } from './spin-action.js';

export default spinAction('bench.wait', '60s', 'io');
