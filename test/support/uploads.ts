/** Helpers for tests that look into an upload dir (`src/http/uploads.ts`). */
import { existsSync, lstatSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { BOOKKEEPING_DIR } from '../../src/http/uploads.js';

/**
 * The empty directories the bookkeeping keeps between uploads: `.actionkit`, its `owners` and
 * `staging` folders and a staging folder per process. Relative to the upload dir.
 */
function isSkeleton(path: string): boolean {
  const parts = path.split('/');
  if (parts[0] !== BOOKKEEPING_DIR) return false;
  return parts.length === 1 || (parts.length === 2 && (parts[1] === 'owners' || parts[1] === 'staging')) || (parts.length === 3 && parts[1] === 'staging');
}

/** Every path under `dir` (files, folders, links; relative, sorted); none when it is missing. */
export function walk(dir: string): string[] {
  const out: string[] = [];
  const visit = (current: string): void => {
    for (const name of readdirSync(current)) {
      const full = join(current, name);
      out.push(relative(dir, full));
      if (lstatSync(full).isDirectory()) visit(full);
    }
  };
  if (existsSync(dir)) visit(dir);
  return out.sort();
}

/**
 * Every path under `uploadDir` except the bookkeeping's empty skeleton: what an upload, or the
 * cleanup after it, left behind.
 */
export function uploadLeftovers(uploadDir: string): string[] {
  return walk(uploadDir).filter((path) => !(isSkeleton(path) && lstatSync(join(uploadDir, path)).isDirectory()));
}

/** The files of the staging folders under `uploadDir` (`<staging>/<file>`, relative to the upload dir). */
export function stagedFiles(uploadDir: string): string[] {
  const staging = join(uploadDir, BOOKKEEPING_DIR, 'staging');
  return uploadLeftovers(uploadDir).filter((path) => path.startsWith(`${relative(uploadDir, staging)}/`) && path.split('/').length === 5);
}
