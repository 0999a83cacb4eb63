/**
 * JSON Schema rules zod does not have as such, shared by the wire schemas of every kit
 * (`./schemas.ts` for ActionKit, `./discovery.ts` for DiscoveryKit): `maxLength` in code points,
 * `uniqueItems` with JSON equality, and the type names used in messages.
 */
import { z } from 'zod';

/** Number of Unicode code points of `text` (what JSON Schema's `maxLength` counts). */
function codePointLength(text: string): number {
  let length = text.length;
  for (let i = 0; i < text.length - 1; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        length--;
        i++;
      }
    }
  }
  return length;
}

/**
 * A string with JSON Schema `maxLength` semantics. The message mirrors zod's own `.max()` message so
 * that every length error reads the same.
 */
export function maxChars(max: number): z.ZodString {
  return z.string().refine(
    // Fast paths keep the 7 MB artifact check linear-free in the common (ASCII) case: code points
    // never exceed code units, and are at least half of them.
    (text) => text.length <= max || (text.length <= 2 * max && codePointLength(text) <= max),
    { message: `Too big: expected string to have <=${max} characters` },
  );
}

/** Canonical JSON (object keys sorted) so that JSON-Schema-equal values compare equal as strings. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'undefined';
}

/** Adds the spec's `uniqueItems` constraint to an array schema; the issue points at the duplicate. */
export function uniqueItems<T extends z.ZodType>(schema: z.ZodArray<T>): z.ZodArray<T> {
  return schema.superRefine((items, ctx) => {
    const seen = new Map<string, number>();
    items.forEach((item, index) => {
      let key: string;
      try {
        key = canonicalJson(item);
      } catch {
        return; // not JSON (cyclic): other issues already describe what is wrong with it
      }
      const first = seen.get(key);
      if (first === undefined) seen.set(key, index);
      else ctx.addIssue({ code: 'custom', path: [index], message: `Duplicate item: equal to item [${first}] (items must be unique)` });
    });
  });
}

/** Human name of a JSON value's type, for messages. */
export function jsonTypeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}
