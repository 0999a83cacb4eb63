/**
 * Large JSON values never pass through the main thread as objects.
 *
 * Parsing, walking, cloning and serialising a JSON value costs the thread that does it time in
 * proportion to its size — about two seconds for 5 MiB of nested arrays — and the main thread
 * reads every request. So a request body larger than {@link LARGE_JSON_BYTES}, and a state a
 * handler hands out whose JSON text is larger, stay *sealed* on the main thread: a
 * {@link SealedJson} holding the JSON text's bytes in shared memory, which it hands between
 * threads without copying and copies into its answers unread. The value is parsed,
 * checked and used only on worker threads: the large-request lane (`src/pool.ts`) decodes such
 * bodies and runs the handlers that receive them, so a flood of large requests waits in a lane of
 * its own while the agent's small status requests keep theirs.
 *
 * Below the threshold a value is an object everywhere: the agent's requests are small, and
 * parsing them where they arrive is cheaper than a round trip to another thread.
 *
 * @module
 */
import type { JsonObject } from '../api/schemas.js';

/**
 * Request bodies above this many bytes are decoded off the main thread; states whose JSON text is
 * longer are kept sealed. 16 KiB: the agent's status, start and stop requests of an ordinary action
 * are far smaller, and the main thread's worst case below it stays small — a body of 16 KiB whose
 * every value is invalid costs the schema check about 10 ms (measured: 64 KiB of them, 25 ms).
 */
export const LARGE_JSON_BYTES = 16 * 1024;

/**
 * A JSON value kept on the main thread as its UTF-8 text, in a `SharedArrayBuffer` written once by
 * the thread that made it and never again: handing it to another thread shares the memory instead
 * of copying it (a 5 MiB string costs the main thread about 5 ms to post; shared bytes, 0.1 ms),
 * and it lives outside the main thread's heap.
 */
export class SealedJson {
  private constructor(readonly bytes: Uint8Array) {}

  /** Seal `text`, JSON of a value that passed the checks of where it came from (parsed, depth, schema). */
  static of(text: string): SealedJson {
    const bytes = new Uint8Array(new SharedArrayBuffer(Buffer.byteLength(text)));
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).write(text);
    return new SealedJson(bytes);
  }

  /** The sealed value another thread sent (its {@link SealedJson.bytes}). */
  static received(bytes: Uint8Array): SealedJson {
    return new SealedJson(bytes);
  }

  /** The bytes as a Buffer (no copy). */
  buffer(): Buffer {
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }

  /** Parse it (worker threads only: this is the work the main thread must not do). */
  parse(): unknown {
    return JSON.parse(this.buffer().toString('utf8'));
  }
}

/** A state as the main thread holds it: an object, or sealed when large. */
export type StateValue = JsonObject | SealedJson;

/** A state in a message between threads: the object, or the bytes of a sealed one. */
export interface WireState {
  state?: JsonObject;
  sealedState?: Uint8Array;
}

/** `value` as the fields of a message to a worker thread. */
export function wireState(value: StateValue | undefined): WireState {
  if (value === undefined) return {};
  return value instanceof SealedJson ? { sealedState: value.bytes } : { state: value };
}

/** The state of a message from the main thread, parsed when it came sealed. */
export function stateOfWire(wire: WireState): JsonObject | undefined {
  return wire.sealedState === undefined ? wire.state : (SealedJson.received(wire.sealedState).parse() as JsonObject);
}

/** The main thread's form of a state a worker sent: sealed when it came as bytes. */
export function stateFromWire(wire: WireState): StateValue | undefined {
  return wire.sealedState === undefined ? wire.state : SealedJson.received(wire.sealedState);
}

/**
 * A state for a message to the main thread, from its JSON text: sealed when longer than
 * {@link LARGE_JSON_BYTES}, else the object parsed from it.
 */
export function wireStateFromText(text: string): WireState {
  return Buffer.byteLength(text) > LARGE_JSON_BYTES ? { sealedState: SealedJson.of(text).bytes } : { state: JSON.parse(text) as JsonObject };
}

/**
 * The JSON of an answer body whose top-level `state` may be sealed: a string, or — with a sealed
 * state — a Buffer with the sealed bytes copied in unread. Only `state` is ever sealed in an answer.
 */
export function answerJson(body: Record<string, unknown>): string | Buffer {
  const state = body['state'];
  if (!(state instanceof SealedJson)) return JSON.stringify(body);
  const { state: _sealed, ...rest } = body;
  const others = JSON.stringify(rest);
  return Buffer.concat([Buffer.from('{"state":'), state.buffer(), Buffer.from(others === '{}' ? '}' : `,${others.slice(1)}`)]);
}
