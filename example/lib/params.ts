/**
 * Helpers shared by the example actions: config value types as the agent sends them, and rendering
 * durations for messages. (The runtime drops `null` config values before the config schema runs,
 * so `.default()` covers parameters the user left empty.)
 */
import { z } from 'actionkit-runtime/action';

/** An absolute `http:` or `https:` URL (a `url` parameter arrives as a plain string). */
export const httpUrl = z.url({ protocol: /^https?$/, error: 'expected an absolute http:// or https:// URL' });

/** A `duration` parameter: whole milliseconds, at least `minMs`. */
export function durationMs(minMs = 1) {
  return z.number().int().min(minMs, { error: `expected a duration of at least ${formatMs(minMs)}` });
}

/** Human form of a duration: `42 µs`, `3.4 ms`, `2.5 s`, `1 min 30 s`. */
export function formatMs(ms: number): string {
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 1000) return `${Number(ms.toFixed(1))} ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))} s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return seconds === 0 ? `${minutes} min` : `${minutes} min ${seconds} s`;
}

/** A percentage with at most one decimal: `96.7%`. */
export function formatPercent(ratio: number): string {
  return `${Number((ratio * 100).toFixed(1))}%`;
}
