/**
 * Bench child: the extension under test, configured only by its environment like a deployed one,
 * with real signal handling (the storm sends it a real SIGUSR1). The parent asks it for the
 * runtime's counters and its memory over IPC; `/metrics` is on its probe port, announced when ready.
 */
import { fileURLToPath } from 'node:url';
import { createExtension } from '../src/index.js';
import { serveParent } from './ipc.js';

const actions = ['spin', 'spin-expiring', 'wait', 'wait-expiring'].map((name) => fileURLToPath(new URL(`./actions/${name}.js`, import.meta.url)));
const extension = await createExtension({ actions });
const { port, healthPort } = await extension.listen();

/** What the parent reads between phases. */
export type ServerStats = ReturnType<typeof extension.stats> & { rssBytes: number };

serveParent({ port, healthPort, pid: process.pid }, {
  stats: (): ServerStats => ({ ...extension.stats(), rssBytes: process.memoryUsage().rss }),
  cpuUsage: () => process.cpuUsage(),
});
