/**
 * File parameters stay confined to the uploads of their execution.
 *
 * An action reads the files of its `file` parameters from paths the runtime made:
 * `<uploadDir>/<executionId>/<name>`. Those paths come back to the extension in the config of the
 * prepare and in the state the agent holds — both written by the client, so a client that is not
 * the agent could put any path of this host there (`/etc/passwd`) and read it through the action's
 * messages. For actions with `file` parameters, checked on the main thread before author code runs:
 *
 * 1. **Prepare:** a `file` parameter's value is the file uploaded for it in this request
 * *    (multipart). A value in the JSON config of a parameter with no uploaded file is refused;
 *    `null`, `""` or absent is fine (a missing required file is the author's to report).
 * 2. **Every later state** (start, status, stop): each string in it that is an absolute path lies
 *    inside the execution's upload folder, or is one the extension itself put into a state it
 *    handed out for this execution (the author's own paths, e.g. a cgroup). So a client can send
 *    back what it was given, but cannot introduce a path. For an execution this process does not
 *    know (after a restart, or an action that keeps no execution records) nothing was handed out:
 *    only paths inside the upload folder pass.
 *
 * A violation is a 400 naming the location; nothing of the request runs. Paths are compared after
 * `path.resolve`, so `<folder>/../x` is outside.
 *
 * @module
 */
import * as path from 'node:path';
import type { JsonObject } from '../api/schemas.js';
import { ErrorCode, RuntimeError } from '../errors.js';

/** A location in a JSON value: object keys and array indices from the root. */
export type JsonLocation = readonly (string | number)[];

/** Rule 1: every file parameter with a value in `config` must have an upload in this request. */
export function assertFileParametersUploaded(fileParameters: ReadonlySet<string>, config: JsonObject, uploaded: ReadonlyMap<string, string> | undefined): void {
  for (const name of fileParameters) {
    const value = config[name];
    if (value === undefined || value === null || value === '' || uploaded?.has(name) === true) continue;
    throw new RuntimeError(
      ErrorCode.InvalidRequest,
      400,
      `Invalid request body: file parameter ${name} must be uploaded`,
      `config.${name} names no file uploaded with this prepare; send the prepare as multipart/form-data with the file in a part named ${JSON.stringify(name)} (a path in the JSON config is refused: it could name any file on this host)`,
    );
  }
}

/** Add the absolute paths in a state the extension hands out to `into` (rule 2's allowed paths). */
export function collectAbsolutePaths(state: JsonObject, into: Set<string>): void {
  visitStrings(state, (value) => {
    if (path.isAbsolute(value)) into.add(value);
  });
}

/**
 * Rule 2: every absolute path in `state` lies inside `folder` (the execution's upload folder) or
 * is one of `handedOut`.
 */
export function assertNoForeignPaths(state: JsonObject, folder: string, handedOut: ReadonlySet<string> | undefined, executionId: string): void {
  const inside = path.resolve(folder) + path.sep;
  visitStrings(state, (value, at) => {
    if (!path.isAbsolute(value) || handedOut?.has(value) === true || path.resolve(value).startsWith(inside)) return;
    throw new RuntimeError(
      ErrorCode.InvalidRequest,
      400,
      `Invalid request body: state${formatLocation(at())} names a path outside the uploads of execution ${executionId}`,
      'an action with file parameters reads only the files uploaded for its execution; send back the state the extension handed out',
    );
  });
}

/** `.a[2].b`, or `["odd key"]` for keys that are not identifiers. */
export function formatLocation(at: JsonLocation): string {
  return at.map((key) => (typeof key === 'number' ? `[${key}]` : /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`)).join('');
}

/** A location as a chain to the root, materialised only when asked for (most strings never are). */
interface Step {
  key: string | number;
  parent: Step | undefined;
}

function locationOf(step: Step | undefined): JsonLocation {
  const at: (string | number)[] = [];
  for (let s = step; s !== undefined; s = s.parent) at.push(s.key);
  return at.reverse();
}

/** Every string in a JSON value with (a way to get) its location; iterative (states may nest deeply). */
function visitStrings(root: unknown, visit: (value: string, at: () => JsonLocation) => void): void {
  const stack: [unknown, Step | undefined][] = [[root, undefined]];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const [value, step] = item;
    if (typeof value === 'string') visit(value, () => locationOf(step));
    else if (Array.isArray(value)) value.forEach((child, index) => stack.push([child, { key: index, parent: step }]));
    else if (typeof value === 'object' && value !== null) for (const [key, child] of Object.entries(value)) stack.push([child, { key, parent: step }]);
  }
}
