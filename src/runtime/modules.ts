/**
 * Loading action modules. The same code runs on the main thread (to read descriptions and config
 * schemas) and on each worker thread (to run handlers), so both see the same set of actions.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
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
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`cannot load action module ${url}: ${message}${commonJsLoadHint(error)}`, { cause: error });
    }
    const exported = Array.isArray(namespace.default) ? (namespace.default as unknown[]) : [namespace.default];
    for (const candidate of exported) {
      if (!isDefinedAction(candidate)) {
        if (isCommonJsWrapped(namespace.default)) throw new Error(commonJsMessage(url));
        throw new Error(`action module ${url} must export default defineAction({...}) or an array of them`);
      }
      actions.push(candidate);
    }
  }
  return actions;
}

/**
 * A CommonJS module's `exports` as `import()` sees it: TypeScript compiles `export default x` to
 * `exports.default = x`, and Node hands an importer the whole `module.exports` as the default
 * export, so the action sits one level down, at `default.default`.
 */
function isCommonJsWrapped(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || !('default' in value)) return false;
  const inner = (value as { default: unknown }).default;
  return Array.isArray(inner) ? inner.length > 0 && inner.every(isDefinedAction) : isDefinedAction(inner);
}

/** The fix for an action module that was compiled to, or loaded as, CommonJS. */
const ESM_FIX =
  'Action modules must be ES modules: set "type": "module" in the package.json of the project, compile with "module": "NodeNext" in tsconfig.json, and rebuild (or name the file .mjs).';

/** The message for a module whose action arrived inside `module.exports`. */
function commonJsMessage(url: string): string {
  const packageJson = url.startsWith('file:') ? nearestPackageJson(fileURLToPath(url)) : undefined;
  const why =
    packageJson === undefined
      ? 'it was loaded as CommonJS'
      : packageJson.type === 'module'
        ? `it was loaded as CommonJS (its file extension makes it CommonJS although ${packageJson.path} has "type": "module")`
        : `it was loaded as CommonJS because ${packageJson.path} has ${packageJson.type === undefined ? 'no "type" field' : `"type": ${JSON.stringify(packageJson.type)}`}`;
  return `action module ${url} exports its action as module.exports.default, not as an ES module default export: ${why}. ${ESM_FIX}`;
}

/**
 * A hint for load errors that come from mixing module systems: CommonJS output in an ES module
 * package (`exports is not defined in ES module scope`), a CommonJS module that `require`s this
 * ES-only package on a Node without `require(esm)`, or ES module syntax in a package Node reads as
 * CommonJS. Empty for any other error.
 */
function commonJsLoadHint(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  if (code === 'ERR_REQUIRE_ESM') return ` (the action module is CommonJS. ${ESM_FIX})`;
  if (/\b(exports|require|module) is not defined in ES module scope/.test(message)) {
    return ` (the file is CommonJS but its package.json makes it an ES module. ${ESM_FIX})`;
  }
  if (/Cannot use import statement outside a module|Unexpected token 'export'/.test(message)) {
    return ` (the file is an ES module but Node loaded it as CommonJS. ${ESM_FIX})`;
  }
  return '';
}

/** The `package.json` that decides how Node loads `file` (the nearest one above it), if any. */
function nearestPackageJson(file: string): { path: string; type: unknown } | undefined {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const path = join(dir, 'package.json');
    let text: string | undefined;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      text = undefined;
    }
    if (text !== undefined) {
      try {
        return { path, type: (JSON.parse(text) as { type?: unknown }).type };
      } catch {
        return { path, type: undefined };
      }
    }
    if (dirname(dir) === dir) return undefined;
  }
}
