/** Spin action whose heartbeat never expires during a benchmark (status interval 60 s → timeout 4 min). */
import { spinAction } from './spin-action.js';

export default spinAction('bench.spin', '60s');
