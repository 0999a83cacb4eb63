/**
 * Child-process entry for signal tests: serves the action modules given as arguments, configured
 * only by the environment, with real signal handling — exactly how a deployed extension runs.
 */
import { createExtension } from '../../src/index.js';

const modules = process.argv.slice(2);
const extension = await createExtension({ actions: modules });
await extension.listen();
