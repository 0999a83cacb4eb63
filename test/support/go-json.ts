/**
 * JSON as the reference client writes it (Go's encoding/json, as `action_kit_test` sends requests
 * through resty): the tests' own model, independent of `src/runtime/state-limit.ts`.
 */

/**
 * Like JSON.stringify, except that `<`, `>`, `&`, U+2028 and U+2029 become `\u…` escapes. (Go also
 * sorts object keys, which does not change the length.)
 */
export function goJson(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The agent's start, status or stop request as a Go encoder writes it, trailing newline included. */
export function goRequest(executionId: string, state: unknown): string {
  return `{"executionId":"${executionId}","state":${goJson(state)}}\n`;
}
