/**
 * How large a state a handler may hand out: one the agent can send back.
 *
 * The agent holds the state of prepare, start and status and sends it back in the next start,
 * status and stop request, `{"executionId":"<uuid>","state":<state>}`, which this extension
 * refuses above `ACTIONKIT_MAX_BODY_BYTES` (413). A state that cannot come back would make the
 * execution unstoppable by the agent, so it is refused where it is made (the handler thread) and
 * the agent keeps the state it had.
 *
 * The rule: `agentStateBytes(state) ≤ maxBodyBytes − REQUEST_ENVELOPE_BYTES`, where
 *
 * - {@link REQUEST_ENVELOPE_BYTES} (64) is the request without its state: `{"executionId":"`,
 *   a 36-character UUID, `","state":`, `}` (63 bytes), plus one byte for the trailing newline
 *   that an encoder such as Go's `json.Encoder` writes;
 * - {@link agentStateBytes} is the size of the state as the reference client re-encodes it
 *   (Go's `encoding/json`, which `action_kit_test` uses through resty's `json.Marshal`): the
 *   UTF-8 bytes of our JSON text, plus 5 bytes for each `<`, `>` and `&` (written as `\u003c`
 *   etc. instead of one byte) and 3 for each U+2028 and U+2029 (`\u2028` instead of 3 bytes).
 *   Everything else Go writes exactly as `JSON.stringify` does, or shorter: the same shortest
 *   round-trip numbers, the same escapes (Go ≥ 1.22 writes `\b` and `\f` short too), sorted keys
 *   of the same length, and a lone surrogate (`\ud800`, 6 bytes) decoded to U+FFFD (3 bytes).
 *
 * Runs on handler threads (the check) and on the main thread (the limit, from the options).
 */

/** The executionId and keys around the state in a start, status or stop request, plus a trailing newline. */
export const REQUEST_ENVELOPE_BYTES =
  Buffer.byteLength(JSON.stringify({ executionId: '00000000-0000-0000-0000-000000000000', state: null })) - 'null'.length + '\n'.length;

/** No UTF-16 unit of a JSON text grows beyond this many bytes when the agent re-encodes it (`<` → 6). */
const MAX_BYTES_PER_UNIT = 6;

/** The state limit of an extension, as handler threads enforce it. */
export interface StateLimit {
  /** Largest state (in {@link agentStateBytes}) a handler may hand out. */
  maxStateBytes: number;
  /** The request body limit it is derived from (`ACTIONKIT_MAX_BODY_BYTES`). */
  maxBodyBytes: number;
}

/** The state limit that follows from a request body limit (never below 0: then no state fits). */
export function stateLimitFor(maxBodyBytes: number): StateLimit {
  return { maxStateBytes: Math.max(0, maxBodyBytes - REQUEST_ENVELOPE_BYTES), maxBodyBytes };
}

/**
 * The {@link agentStateBytes} of a state's JSON text when they exceed `limitBytes`, else
 * `undefined`. Counts only when the text could exceed the limit: every status result passes
 * through here, and a text of up to a sixth of the limit cannot.
 */
export function stateBytesOver(json: string, limitBytes: number): number | undefined {
  if (json.length * MAX_BYTES_PER_UNIT <= limitBytes) return undefined;
  const bytes = agentStateBytes(json);
  return bytes > limitBytes ? bytes : undefined;
}

/** Bytes of a state's JSON text (`JSON.stringify`) once the reference client has re-encoded it. */
export function agentStateBytes(json: string): number {
  let bytes = Buffer.byteLength(json, 'utf8');
  for (let i = 0; i < json.length; i++) {
    switch (json.charCodeAt(i)) {
      case 0x3c: // <  → \u003c: 1 byte becomes 6
      case 0x3e: // >
      case 0x26: // &
        bytes += 5;
        break;
      case 0x2028: // line separator: 3 bytes become 6 (\u2028)
      case 0x2029: // paragraph separator
        bytes += 3;
        break;
    }
  }
  return bytes;
}
