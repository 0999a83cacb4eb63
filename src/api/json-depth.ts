/**
 * How deeply JSON may nest, in requests and in the states the extension hands out (which come
 * back in requests), and a check that costs no allocation.
 */

/**
 * Deepest JSON nesting accepted in a request (the body's own object is level 1). Far beyond any
 * real state, and far below the depth at which serialising an answer would overflow the stack (a
 * few thousand levels).
 */
export const MAX_JSON_DEPTH = 512;

/**
 * True when the JSON text `json` opens more than `maxDepth` objects and arrays inside each other.
 * A scan of the text (strings skipped), so checking a large body costs a pass over its characters
 * and nothing else; on text that is not JSON the answer means nothing (parsing then fails anyway).
 */
export function jsonTextDeeperThan(json: string, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: the next character is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) return true;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return false;
}
