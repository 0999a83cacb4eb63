/**
 * Child-process entry for signal tests: serves the action modules given as arguments, configured
 * only by the environment, with real signal handling — exactly how a deployed extension runs.
 */
import { createExtension } from '../../src/index.js';

const modules = process.argv.slice(2);
const extension = await createExtension({ actions: modules });
// A shutdown hook that never finishes, for the tests of the shutdown bound.
if (process.env['TEST_HANGING_SHUTDOWN_HOOK'] === '1') extension.onShutdown('hangs', () => new Promise(() => undefined));
await extension.listen();
