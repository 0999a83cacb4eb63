/**
 * SHA-256 load: keeps one CPU core of the extension's host busy computing SHA-256 hashes for the
 * chosen duration.
 *
 * The hashing runs in `body`, on a worker thread of its own, so the extension keeps answering the
 * agent however hard it works. The body checks `ctx.shouldStop()` (one atomic load) after every
 * few hashes: a stop from the agent, a lost agent (heartbeat timeout) or SIGTERM ends it within
 * about a millisecond.
 */
import { createHash } from 'node:crypto';
import { defineAction, z } from 'actionkit-runtime/action';

/** Bytes hashed per `update`: large enough that the loop is all hashing, small enough to stop fast. */
const CHUNK_BYTES = 64 * 1024;
/** Chunks hashed between two stop checks (about a millisecond of work). */
const CHUNKS_PER_CHECK = 8;
const BYTES_PER_MIB = 1024 * 1024;

interface State {
  durationMs: number;
  /** When start ran (ms since the epoch); 0 before. */
  startedAtMs: number;
}

export default defineAction({
  description: {
    id: '{{actionPrefix}}.sha256-load',
    label: 'SHA-256 load',
    version: '0.1.0',
    description: 'Keeps one CPU core of the extension host busy computing SHA-256 hashes for the given duration.',
    kind: 'attack',
    category: 'resource',
    timeControl: 'external',
    parameters: [{ name: 'duration', label: 'Duration', type: 'duration', defaultValue: '30s', required: true, description: 'How long to hash.' }],
    status: { callInterval: '1s' },
  },
  // The agent sends a duration parameter as a number of milliseconds.
  config: z.object({ duration: z.number().int().positive() }),

  prepare({ config }) {
    const state: State = { durationMs: config.duration, startedAtMs: 0 };
    return { state };
  },

  start(state) {
    state.startedAtMs = Date.now();
    return { messages: [{ message: `Hashing with SHA-256 on one core for ${state.durationMs} ms` }] };
  },

  body(state, ctx) {
    const chunk = Buffer.alloc(CHUNK_BYTES, 0x5a);
    const endAtMs = state.startedAtMs + state.durationMs;
    let chunks = 0;
    while (!ctx.shouldStop() && Date.now() < endAtMs) {
      for (let i = 0; i < CHUNKS_PER_CHECK; i++) {
        // Feed each digest into the next chunk: every hash depends on the one before.
        createHash('sha256').update(chunk).digest().copy(chunk);
      }
      chunks += CHUNKS_PER_CHECK;
      // Progress is an integer that status and stop read without any message passing.
      ctx.progress(Math.floor((chunks * CHUNK_BYTES) / BYTES_PER_MIB));
    }
  },

  status(_state, ctx) {
    const hashedMiB = ctx.body.progress;
    return {
      // The body returns by itself once the duration is over.
      completed: ctx.body.phase === 'returned',
      metrics: [{ name: 'sha256_load_hashed_mib', metric: {}, value: hashedMiB, timestamp: new Date().toISOString() }],
    };
  },

  stop(state, ctx) {
    const ranMs = state.startedAtMs === 0 ? 0 : Date.now() - state.startedAtMs;
    const text = `Hashed ${ctx.body.progress} MiB with SHA-256 in ${Math.min(ranMs, state.durationMs)} ms (body ${ctx.body.phase})`;
    return { messages: [{ message: text, level: ctx.body.phase === 'killed' ? 'warn' : 'info' }], summary: { text, level: 'info' } };
  },
});
