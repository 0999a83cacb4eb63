/**
 * Loading action modules. The same code runs on the main thread (to read descriptions and config
 * schemas) and on each worker thread (to run handlers), so both see the same set of actions.
 */
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isDefinedAction, type DefinedAction } from '../action.js';

/** Normalise a module reference (URL, `file:` string or absolute path) to a `file:` URL string. */
export function moduleUrl(reference: URL | string): string {
  if (reference instanceof URL) return reference.href;
  if (isAbsolute(reference)) return pathToFileURL(reference).href;
  if (/^[a-z][a-z0-9+.-]*:/i.test(reference)) return reference;
  throw new TypeError(`action module "${reference}" must be a URL or an absolute path (relative paths are ambiguous across threads)`);
}

/**
 * Import every module and collect its actions (default export: one `defineAction(...)` or an
 * array of them), in order. Throws naming the module that is missing or exports something else.
 */
export async function importActions(urls: readonly string[]): Promise<DefinedAction[]> {
  const actions: DefinedAction[] = [];
  for (const url of urls) {
    let namespace: { default?: unknown };
    try {
      namespace = (await import(url)) as { default?: unknown };
    } catch (error) {
      throw new Error(`cannot load action module ${url}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    const exported = Array.isArray(namespace.default) ? (namespace.default as unknown[]) : [namespace.default];
    for (const candidate of exported) {
      if (!isDefinedAction(candidate)) {
        throw new Error(`action module ${url} must export default defineAction({...}) or an array of them`);
      }
      actions.push(candidate);
    }
  }
  return actions;
}
