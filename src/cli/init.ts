/**
 * `actionkit init <dir>`: scaffolds an extension project from the templates shipped in this package
 * (`templates/init/`): an ES module `package.json` depending on this runtime, a tsconfig that
 * compiles without `skipLibCheck`, a CPU-bound attack with a body, a check, a `node:test` file
 * driving both through `actionkit-runtime/testing`, a Dockerfile, a README, ignore files.
 *
 * Everything written into the project is either fixed template text or a value checked here: the
 * project name must be a valid npm package name (it ends up in JSON, TypeScript, a Dockerfile and
 * Markdown, so nothing else may pass), and the runtime dependency is JSON-encoded. Files are
 * created exclusively (`wx`): an existing file — a race with another writer, a symlink planted in
 * the folder — fails the command instead of being overwritten.
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { builtinModules } from 'node:module';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCommandLine, UsageError } from './usage.js';

const USAGE = `Usage: actionkit init <dir> [options]

Creates an ActionKit extension project in <dir> (created if missing; it must be empty): an ES
module package.json depending on actionkit-runtime, tsconfig.json, two actions (a CPU-bound
attack with a body, a check), a node:test file for both, a Dockerfile, a README and .gitignore.

Options:
  --runtime <spec>   Where the project gets actionkit-runtime from:
                       a tarball made by 'npm pack' (copied into <dir>/vendor/),
                       a folder holding a built checkout of actionkit-runtime (linked),
                       a git or https URL, or a version range of the registry package.
                     Default: the registry package, ^<version of this command>.
  --name <name>      The package name (an npm package name). Default: the folder's name.
  -h, --help         Show this help.

Then: cd <dir> && npm install && npm test, and npm start to serve the extension.
`;

/** The npm package name rules that matter here: lowercase, URL-safe, optional scope. */
const PACKAGE_NAME = /^(?:@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/;
/** npm's maximum package name length. */
const MAX_PACKAGE_NAME_CHARS = 214;
/** Dependency specs taken verbatim: URLs and the hosted-git shortcuts npm understands. */
const URL_SPEC = /^(?:git\+(?:https?|ssh|file):\/\/|git:\/\/|https?:\/\/|github:|gitlab:|bitbucket:)[^\s]+$/;
/** A semver version, range or dist-tag of the registry package. */
const REGISTRY_SPEC = /^(?:[~^<>=]*\s*v?\d[\w.+-]*(?:\s*(?:\|\||-|\s)\s*[~^<>=]*\s*v?\d[\w.+-]*)*|\*|latest|next)$/;
/** A vendored tarball keeps its own file name when it is this tame. */
const TARBALL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*\.(?:tgz|tar\.gz)$/;
/** Template files named without their leading dot: npm leaves a `.gitignore` out of a package. */
const DOT_FILES: Readonly<Record<string, string>> = { gitignore: '.gitignore', dockerignore: '.dockerignore' };
/** Where the vendored tarball goes, relative to the project. */
const VENDOR_DIR = 'vendor';

/** What this package is, for the default dependency and the generated devDependencies. */
interface OwnPackage {
  name: string;
  version: string;
  devDependencies: Record<string, string>;
}

/** How the project depends on the runtime. */
interface RuntimeSource {
  /** The value under `dependencies["actionkit-runtime"]`. */
  spec: string;
  /** A tarball to copy to `vendor/<name>` (the spec then points there). */
  vendor?: { from: string; name: string };
}

/** Run `init`; returns the exit code (wrong arguments throw a {@link UsageError}). */
export function runInitCommand(argv: readonly string[]): number {
  const parsed = parseCommandLine(argv, { runtime: { type: 'string' }, name: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, USAGE);
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'init needs the folder of the new project' : `init takes one folder, got ${positionals.length}`, USAGE);
  const dirArgument = positionals[0]!;
  if (dirArgument.trim() === '') throw new UsageError('init needs the folder of the new project, got an empty string', USAGE);
  const projectDir = resolve(dirArgument);
  const name = values.name ?? basename(projectDir);
  checkPackageName(name, values.name === undefined);
  checkTarget(projectDir);

  const own = ownPackage();
  const runtime = runtimeSource(values.runtime, own, projectDir);
  let created: string[];
  try {
    created = createProject(projectDir, name, runtime, own);
  } catch (error) {
    // Permissions, a full disk, a file that appeared meanwhile: one line, nothing left behind.
    process.stderr.write(`actionkit init: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }

  const shown = relative(process.cwd(), projectDir) || '.';
  const cd = /^[\w./-]+$/.test(shown) ? shown : JSON.stringify(shown);
  process.stdout.write(
    `Created ${name} in ${cd}:\n${created.map((file) => `  ${file}`).join('\n')}\n\n` +
      `Next:\n  cd ${cd}\n  npm install && npm test    # build, then test both actions\n  npm start                  # serve them on :8080 (probes on :8081)\n`,
  );
  return 0;
}

/** Throws a {@link UsageError} unless `name` is a package name npm accepts (and safe in every template). */
function checkPackageName(name: string, fromFolder: boolean): void {
  const problem =
    name.length === 0
      ? 'is empty'
      : name.length > MAX_PACKAGE_NAME_CHARS
        ? `is longer than ${MAX_PACKAGE_NAME_CHARS} characters`
        : !PACKAGE_NAME.test(name)
          ? 'is not an npm package name (lowercase letters, digits, ".", "_", "-", an optional @scope/; starting with a letter or digit)'
          : name === 'node_modules' || name === 'favicon.ico' || builtinModules.includes(name)
            ? 'is reserved'
            : name === 'actionkit-runtime'
              ? 'is the name of the runtime itself (the project depends on it)'
              : undefined;
  if (problem === undefined) return;
  const hint = fromFolder ? ' (it is the folder\'s name; choose another with --name <name>)' : '';
  throw new UsageError(`project name ${JSON.stringify(name)} ${problem}${hint}`, USAGE);
}

/** Throws a {@link UsageError} unless `dir` is missing or an empty folder. */
function checkTarget(dir: string): void {
  let stats: Stats;
  try {
    stats = statSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!stats.isDirectory()) throw new UsageError(`${dir} exists and is not a folder`, USAGE);
  const entries = readdirSync(dir);
  if (entries.length > 0) {
    const listed = entries.slice(0, 5).map((entry) => JSON.stringify(entry)).join(', ');
    throw new UsageError(`${dir} is not empty (${listed}${entries.length > 5 ? ', …' : ''}); init only writes into a new or empty folder`, USAGE);
  }
}

/** This package's own manifest (for the default dependency and the TypeScript versions). */
function ownPackage(): OwnPackage {
  const manifest = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as Partial<OwnPackage>;
  return { name: manifest.name ?? 'actionkit-runtime', version: manifest.version ?? '0.0.0', devDependencies: manifest.devDependencies ?? {} };
}

/** Turn `--runtime` into a dependency spec (and, for a tarball, the copy to vendor). */
function runtimeSource(option: string | undefined, own: OwnPackage, projectDir: string): RuntimeSource {
  if (option === undefined) return { spec: `^${own.version}` };
  const value = option.trim();
  if (value === '') throw new UsageError('--runtime is empty', USAGE);
  if (URL_SPEC.test(value)) return { spec: value };
  const path = resolve(value.startsWith('file:') ? value.slice('file:'.length) : value);
  let stats: Stats | undefined;
  try {
    stats = statSync(path);
  } catch {
    stats = undefined;
  }
  if (stats === undefined) {
    if (REGISTRY_SPEC.test(value)) return { spec: value };
    throw new UsageError(`--runtime ${JSON.stringify(option)}: no such file or folder (expected a tarball from 'npm pack', a folder, a git URL or a version range)`, USAGE);
  }
  if (stats.isFile()) {
    if (!/\.(?:tgz|tar\.gz)$/.test(path)) throw new UsageError(`--runtime ${JSON.stringify(option)}: a file must be a tarball made by 'npm pack' (.tgz)`, USAGE);
    const name = TARBALL_NAME.test(basename(path)) ? basename(path) : 'actionkit-runtime.tgz';
    return { spec: `file:${VENDOR_DIR}/${name}`, vendor: { from: path, name } };
  }
  if (!stats.isDirectory()) throw new UsageError(`--runtime ${JSON.stringify(option)}: neither a file nor a folder`, USAGE);
  let manifestName: unknown;
  try {
    manifestName = (JSON.parse(readFileSync(join(path, 'package.json'), 'utf8')) as { name?: unknown }).name;
  } catch {
    manifestName = undefined;
  }
  if (manifestName !== own.name) throw new UsageError(`--runtime ${JSON.stringify(option)}: the folder holds no package.json of ${own.name}`, USAGE);
  if (path === projectDir || path.startsWith(projectDir + sep)) throw new UsageError('--runtime must not be inside the new project', USAGE);
  // npm links a folder dependency; a relative link keeps working when both folders move together.
  const link = relative(projectDir, path).split(sep).join('/');
  return { spec: `file:${isAbsolute(link) ? link : link.startsWith('.') ? link : `./${link}`}` };
}

/** The generated package.json. */
function packageJson(name: string, runtime: RuntimeSource, own: OwnPackage): string {
  const manifest = {
    name,
    version: '0.1.0',
    private: true,
    description: 'A Steadybit ActionKit extension on actionkit-runtime',
    // The runtime loads action modules with import(): they must be ES modules.
    type: 'module',
    engines: { node: '>=20.10' },
    scripts: {
      build: 'tsc -p tsconfig.json',
      // pre-scripts, so that npm runs node itself as the last step and signals reach it.
      prestart: 'npm run build',
      start: 'node dist/src/main.js',
      pretest: 'npm run build',
      test: 'node --test dist/test/*.test.js',
    },
    dependencies: { [own.name]: runtime.spec },
    devDependencies: {
      '@types/node': own.devDependencies['@types/node'] ?? '^20.10.0',
      typescript: own.devDependencies['typescript'] ?? '^5.9.0',
    },
  };
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/** Values of the `{{key}}` placeholders of the templates. */
function placeholders(name: string, runtime: RuntimeSource): Record<string, string> {
  const unscoped = name.replace(/^@[^/]*\//, '');
  return {
    name,
    actionPrefix: `com.example.${unscoped}`,
    imageName: unscoped,
    // The build context must hold the tarball `npm ci` installs from.
    dockerCopyVendor: runtime.vendor === undefined ? '' : `COPY ${VENDOR_DIR} ./${VENDOR_DIR}\n`,
  };
}

/** Replace every `{{key}}`; a key without a value is a bug in the templates. */
function fill(template: string, values: Record<string, string>, file: string): string {
  return template.replace(/\{\{(\w+)\}\}/g, (_match, key: string) => {
    const value = values[key];
    if (value === undefined) throw new Error(`template ${file}: unknown placeholder {{${key}}}`);
    return value;
  });
}

/** Template files, relative to the template folder, in a stable order. */
function templateFiles(root: string, under = ''): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(join(root, under), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = under === '' ? entry.name : `${under}/${entry.name}`;
    if (entry.isDirectory()) files.push(...templateFiles(root, path));
    else if (entry.isFile()) files.push(path);
  }
  return files;
}

/**
 * Write the project; returns the files written. On failure, removes what it wrote (the folder
 * too when it created it) and rethrows.
 */
function createProject(projectDir: string, name: string, runtime: RuntimeSource, own: OwnPackage): string[] {
  const templateRoot = fileURLToPath(new URL('../../../templates/init', import.meta.url));
  const values = placeholders(name, runtime);
  const firstCreated = mkdirSync(projectDir, { recursive: true });
  const written: string[] = [];
  const write = (file: string, content: string | { copyFrom: string }): void => {
    const target = join(projectDir, ...file.split('/'));
    mkdirSync(dirname(target), { recursive: true });
    if (typeof content === 'string') writeFileSync(target, content, { flag: 'wx' });
    else copyFileSync(content.copyFrom, target, 1 /* COPYFILE_EXCL */);
    written.push(file);
  };
  try {
    write('package.json', packageJson(name, runtime, own));
    for (const file of templateFiles(templateRoot)) {
      const base = basename(file);
      const targetFile = base in DOT_FILES ? `${file.slice(0, -base.length)}${DOT_FILES[base]}` : file;
      write(targetFile, fill(readFileSync(join(templateRoot, file), 'utf8'), values, file));
    }
    if (runtime.vendor !== undefined) write(`${VENDOR_DIR}/${runtime.vendor.name}`, { copyFrom: runtime.vendor.from });
  } catch (error) {
    if (firstCreated !== undefined) rmSync(firstCreated, { recursive: true, force: true });
    else for (const top of new Set(written.map((file) => file.split('/')[0]!))) rmSync(join(projectDir, top), { recursive: true, force: true });
    throw error;
  }
  return written;
}
