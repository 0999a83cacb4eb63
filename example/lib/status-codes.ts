/** Expected HTTP status codes as users type them: `200-299, 404`. */
import { z } from 'actionkit-runtime/action';

/** An inclusive range of status codes. */
export type StatusRange = [low: number, high: number];

/** `"200-299, 404"` → `[[200, 299], [404, 404]]`. */
export const StatusCodes = z.string().transform((text, ctx) => {
  const ranges: StatusRange[] = [];
  for (const part of text.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const match = /^(\d{3})(?:\s*-\s*(\d{3}))?$/.exec(part);
    const low = Number(match?.[1]);
    const high = Number(match?.[2] ?? match?.[1]);
    if (match === null || low < 100 || high > 599 || low > high) {
      ctx.addIssue({ code: 'custom', message: `"${part}" is not a status code (100-599) or a range like 200-299` });
      return z.NEVER;
    }
    ranges.push([low, high]);
  }
  if (ranges.length === 0) ctx.addIssue({ code: 'custom', message: 'expected at least one status code or range' });
  return ranges;
});

/** `[[200, 299], [404, 404]]` → `200-299, 404`. */
export function describeRanges(ranges: StatusRange[]): string {
  return ranges.map(([low, high]) => (low === high ? String(low) : `${low}-${high}`)).join(', ');
}
