/**
 * `actionkit init` as a new author meets it, against this repository packed by `npm pack`: the
 * generated project installs (third-party packages from the registry), its `npm test` passes, its
 * `npm start` serves both actions through an agent-like lifecycle and ends on SIGTERM, and a
 * consumer with a plain tsconfig (no `lib`, no `skipLibCheck`) compiles against the package.
 *
 * Slow by nature (one `npm install`, three TypeScript builds), never by a timing verdict: every
 * limit below only bounds a hang, and no assertion measures speed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AgentClient } from 'actionkit-runtime/testing';
import { tempDir } from '../support/harness.js';
import { walk } from '../support/uploads.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const OWN = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { name: string; version: string };

/** Bounds a hung command, not a slow one: npm install from a cold cache on a busy machine included. */
const COMMAND_LIMIT_MS = 8 * 60_000;
const PROJECT_TIMEOUT_MS = 30 * 60_000;
const ARGUMENTS_TIMEOUT_MS = 60_000;
const NPM_QUIET = ['--prefer-offline', '--no-audit', '--no-fund'];

/** The project name given to `init`, and so the action id prefix. */
const NAME = 'hash-and-primes';
const PREFIX = `com.example.${NAME}`;

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of the commands: this one without what would make a nested npm or test runner
 * act as part of this run (lifecycle variables of an outer `npm test`, the test runner's child
 * marker) or change the generated project's behaviour (runtime settings, NODE_ENV=production would
 * skip devDependencies).
 */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(npm_lifecycle_|npm_package_|STEADYBIT_|ACTIONKIT_)/i.test(key)) continue;
    if (['NODE_TEST_CONTEXT', 'NODE_ENV', 'INIT_CWD', 'npm_config_local_prefix'].includes(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/** Run a command to completion (killed after {@link COMMAND_LIMIT_MS}). */
function run(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = childEnv()): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const limit = setTimeout(() => child.kill('SIGKILL'), COMMAND_LIMIT_MS);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(limit);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** `actionkit <args>` in `cwd`. */
function actionkit(args: readonly string[], cwd: string): Promise<Outcome> {
  return run(process.execPath, [CLI, ...args], cwd);
}

/** Assert exit code 0, showing the end of the output otherwise. */
function assertSucceeded(outcome: Outcome, what: string): void {
  const tail = (text: string): string => text.split('\n').slice(-40).join('\n');
  assert.equal(outcome.code, 0, `${what} exited ${outcome.code ?? outcome.signal}\n--- stdout\n${tail(outcome.stdout)}\n--- stderr\n${tail(outcome.stderr)}`);
}

/** Every file under `dir` (relative, sorted). */
function filesUnder(dir: string): string[] {
  return walk(dir).filter((path) => lstatSync(join(dir, path)).isFile());
}

describe('actionkit init: arguments', { timeout: ARGUMENTS_TIMEOUT_MS }, () => {
  const scratch = tempDir('actionkit-init-args-');
  after(() => scratch.remove());

  test('refuses a missing or non-empty folder, names that are not package names and runtimes that are not there: exit 2, nothing written', async () => {
    const help = await actionkit(['init', '--help'], scratch.path);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--runtime <spec>/);

    const refusals: [string[], RegExp][] = [
      [[], /init needs the folder of the new project/],
      [['a', 'b'], /init takes one folder, got 2/],
      [['My Extension'], /project name "My Extension" is not an npm package name .*--name <name>/],
      [['ok', '--name', '../escape'], /project name "\.\.\/escape" is not an npm package name/],
      [['ok', '--name', 'x"; rm -rf ~; "'], /is not an npm package name/],
      [['ok', '--name', '$(touch pwned)'], /is not an npm package name/],
      [['ok', '--name', 'a\nb'], /is not an npm package name/],
      [['ok', '--name', '.hidden'], /is not an npm package name/],
      [['ok', '--name', 'http'], /project name "http" is reserved/],
      [['ok', '--name', 'node_modules'], /is reserved/],
      [['ok', '--name', 'actionkit-runtime'], /is the name of the runtime itself/],
      [['ok', '--name', 'x'.repeat(215)], /is longer than 214 characters/],
      [['ok', '--runtime', 'missing.tgz'], /--runtime "missing\.tgz": no such file or folder/],
      [['ok', '--runtime', '.'], /--runtime "\.": the folder holds no package\.json of actionkit-runtime/],
      [['ok', '--runtime', 'notes.txt'], /a file must be a tarball made by 'npm pack'/],
      [['ok', '--frobnicate'], /Unknown option '--frobnicate'/],
      [['full'], /full is not empty \("README\.md"\); init only writes into a new or empty folder/],
      [['notes.txt'], /notes\.txt exists and is not a folder/],
    ];
    writeFileSync(join(scratch.path, 'notes.txt'), 'not a tarball\n');
    mkdirSync(join(scratch.path, 'full'));
    writeFileSync(join(scratch.path, 'full', 'README.md'), 'mine\n');
    const before = walk(scratch.path);
    for (const [args, message] of refusals) {
      const outcome = await actionkit(['init', ...args], scratch.path);
      assert.equal(outcome.code, 2, `init ${JSON.stringify(args)}: exit ${outcome.code}\n${outcome.stderr}`);
      assert.match(outcome.stderr, /^actionkit: /);
      assert.match(outcome.stderr, message, `init ${JSON.stringify(args)}`);
      assert.match(outcome.stderr, /Usage: actionkit init <dir>/);
    }
    assert.deepEqual(walk(scratch.path), before, 'a refused init writes nothing');
    assert.equal(readFileSync(join(scratch.path, 'full', 'README.md'), 'utf8'), 'mine\n');
  });

  test('the runtime dependency: the registry by default, a folder linked, a tarball vendored, a URL verbatim; every placeholder filled', async () => {
    const expectations: [string, string[], string][] = [
      ['from-registry', [], `^${OWN.version}`],
      ['from-folder', ['--runtime', REPO], `file:${relative(join(scratch.path, 'from-folder'), REPO).split('\\').join('/')}`],
      ['from-git', ['--runtime', 'git+https://example.com/actionkit-runtime.git#v1'], 'git+https://example.com/actionkit-runtime.git#v1'],
      ['from-range', ['--runtime', '~0.1.0'], '~0.1.0'],
    ];
    const tarball = join(scratch.path, 'runtime.tgz');
    writeFileSync(tarball, 'stands in for a packed tarball');
    expectations.push(['from-tarball', ['--runtime', tarball], 'file:vendor/runtime.tgz']);
    // An existing empty folder is fine too.
    mkdirSync(join(scratch.path, 'from-tarball'));

    for (const [dir, args, spec] of expectations) {
      const outcome = await actionkit(['init', dir, ...args], scratch.path);
      assertSucceeded(outcome, `init ${dir}`);
      assert.match(outcome.stdout, new RegExp(`Created ${dir} in ${dir}:[^]*npm install && npm test`));
      const project = join(scratch.path, dir);
      const manifest = JSON.parse(readFileSync(join(project, 'package.json'), 'utf8')) as { name: string; type: string; dependencies: Record<string, string> };
      assert.equal(manifest.name, dir);
      assert.equal(manifest.type, 'module');
      assert.deepEqual(manifest.dependencies, { [OWN.name]: spec }, dir);
      const files = filesUnder(project);
      for (const expected of ['.dockerignore', '.gitignore', 'Dockerfile', 'README.md', 'package.json', 'src/actions/prime-count.ts', 'src/actions/sha256-load.ts', 'src/main.ts', 'test/actions.test.ts', 'tsconfig.json']) {
        assert.ok(files.includes(expected), `${dir}: ${expected} missing from ${files.join(', ')}`);
      }
      for (const file of files.filter((f) => !f.endsWith('.tgz'))) {
        const text = readFileSync(join(project, file), 'utf8');
        assert.doesNotMatch(text, /\{\{|\}\}/, `${dir}/${file}: a placeholder left`);
      }
      assert.match(readFileSync(join(project, 'src/actions/prime-count.ts'), 'utf8'), new RegExp(`id: 'com\\.example\\.${dir}\\.prime-count'`));
      const dockerfile = readFileSync(join(project, 'Dockerfile'), 'utf8');
      assert.equal(dockerfile.includes('COPY vendor ./vendor'), dir === 'from-tarball', `${dir}: Dockerfile copies vendor/ exactly when the runtime is vendored`);
    }
    assert.equal(readFileSync(join(scratch.path, 'from-tarball', 'vendor', 'runtime.tgz'), 'utf8'), 'stands in for a packed tarball');
    assert.ok(existsSync(tarball), 'the tarball is copied, not moved');

    const scoped = await actionkit(['init', 'scoped', '--name', '@acme/cpu-tools'], scratch.path);
    assertSucceeded(scoped, 'init --name @acme/cpu-tools');
    assert.match(readFileSync(join(scratch.path, 'scoped', 'src/actions/sha256-load.ts'), 'utf8'), /id: 'com\.example\.cpu-tools\.sha256-load'/);
  });
});

describe('actionkit init: the generated project, installed from a tarball of this repository', { timeout: PROJECT_TIMEOUT_MS }, () => {
  const work = tempDir('actionkit-init-project-');
  const project = join(work.path, NAME);
  let packedFiles: string[] = [];

  before(async () => {
    // --ignore-scripts: pack the build these tests run from (prepack would rebuild dist meanwhile).
    const pack = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work.path], REPO);
    assertSucceeded(pack, 'npm pack');
    const [packed] = JSON.parse(pack.stdout) as { filename: string; files: { path: string }[] }[];
    assert.ok(packed !== undefined);
    packedFiles = packed.files.map((file) => file.path);
    assertSucceeded(await actionkit(['init', NAME, '--runtime', join(work.path, packed.filename)], work.path), 'actionkit init');
    assertSucceeded(await run('npm', ['install', ...NPM_QUIET], project), 'npm install');
  });
  after(() => work.remove());

  test('every export of the package has its types and code in the tarball, types first; the bin is there', () => {
    const manifest = JSON.parse(readFileSync(join(project, 'node_modules', OWN.name, 'package.json'), 'utf8')) as {
      exports: Record<string, string | Record<string, string>>;
      bin: Record<string, string>;
      dependencies: Record<string, string>;
    };
    const normalise = (path: string): string => path.replace(/^\.\//, '');
    for (const [entry, target] of Object.entries(manifest.exports)) {
      if (typeof target === 'string') {
        assert.ok(packedFiles.includes(normalise(target)), `${entry} → ${target} is not in the tarball`);
        continue;
      }
      // TypeScript takes the first matching condition: "types" must come before "default".
      assert.deepEqual(Object.keys(target), ['types', 'default'], `conditions of ${entry}`);
      assert.ok(packedFiles.includes(normalise(target['types']!)), `types of ${entry} (${target['types']}) are not in the tarball`);
      assert.ok(packedFiles.includes(normalise(target['default']!)), `code of ${entry} (${target['default']}) is not in the tarball`);
    }
    assert.deepEqual(Object.keys(manifest.exports).sort(), ['.', './action', './package.json', './testing']);
    for (const bin of Object.values(manifest.bin)) {
      assert.ok(packedFiles.includes(normalise(bin)), `bin ${bin} is not in the tarball`);
      assert.match(readFileSync(join(project, 'node_modules', OWN.name, bin), 'utf8'), /^#!\/usr\/bin\/env node\n/);
    }
    // The public declarations import express's types: a consumer must get them with the package.
    assert.ok(manifest.dependencies['@types/express'] !== undefined, '@types/express is a dependency');
    assert.ok(packedFiles.some((file) => file.startsWith('templates/init/')), 'the init templates are packed');
  });

  test('npm test passes: the generated tsconfig builds, both actions pass their tests', async () => {
    const outcome = await run('npm', ['test'], project);
    assertSucceeded(outcome, 'npm test');
    // TAP (`# pass 4`) or, on newer Node versions, the spec reporter (`ℹ pass 4`).
    assert.match(outcome.stdout, /^(?:#|ℹ) pass 4$/m);
    assert.match(outcome.stdout, /^(?:#|ℹ) fail 0$/m);
  });

  test('a consumer with a plain tsconfig (no lib, no types, no skipLibCheck) compiles against every entry point', async () => {
    const consumer = join(project, 'plain-consumer');
    mkdirSync(consumer);
    // target ES2022 without "lib" means the DOM lib too (its RequestInit has no `dispatcher`).
    writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', strict: true, noEmit: true }, files: ['consumer.ts'] }));
    writeFileSync(
      join(consumer, 'consumer.ts'),
      `import * as runtime from 'actionkit-runtime';
import * as action from 'actionkit-runtime/action';
import * as testing from 'actionkit-runtime/testing';

export const noop = action.defineAction({
  description: { id: 'consumer.noop', label: 'No-op', version: '1.0.0', description: 'Does nothing.', kind: 'other', timeControl: 'instantaneous', parameters: [] },
  config: action.z.object({ times: action.z.number().int().default(1) }),
  prepare: ({ config }) => ({ state: { times: config.times } }),
});
export const client = new testing.AgentClient({ baseUrl: 'http://127.0.0.1:8080', fetch: testing.nodeTransport({}) });
export const options: runtime.ExtensionOptions = { actions: [new URL('./noop.js', import.meta.url)] };
export { runtime, action, testing };
`,
    );
    const outcome = await run(process.execPath, [join(project, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', consumer], project);
    assertSucceeded(outcome, 'tsc -p plain-consumer');
  });

  test('npm start serves both actions; an agent-like client walks them through their lifecycle; SIGTERM ends it', async () => {
    // Its own process group: npm runs the extension under `sh -c`, and a terminal's Ctrl-C (or a
    // kill of the group) is how it is stopped; npm alone would leave the extension running.
    const child = spawn('npm', ['start'], {
      cwd: project,
      env: childEnv({ STEADYBIT_EXTENSION_PORT: '0', STEADYBIT_EXTENSION_HEALTH_PORT: '0', STEADYBIT_LOG_FORMAT: 'json', STEADYBIT_LOG_LEVEL: 'info' }),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const pid = child.pid!;
    const lines: string[] = [];
    child.stdout.resume();
    createInterface({ input: child.stderr }).on('line', (line) => lines.push(line));
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    let ended = false;
    void closed.then(() => (ended = true));
    const logged = (message: string): Record<string, unknown> | undefined =>
      lines
        .map((line) => {
          try {
            return JSON.parse(line) as Record<string, unknown>;
          } catch {
            return undefined;
          }
        })
        .find((entry) => entry?.['message'] === message);
    try {
      const deadline = Date.now() + COMMAND_LIMIT_MS;
      let listening: Record<string, unknown> | undefined;
      while ((listening = logged('extension listening')) === undefined) {
        assert.ok(!ended, `npm start ended before listening:\n${lines.join('\n')}`);
        assert.ok(Date.now() < deadline, `npm start did not listen:\n${lines.join('\n')}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.deepEqual(listening['actions'], [`${PREFIX}.sha256-load`, `${PREFIX}.prime-count`]);
      const client = new AgentClient({ baseUrl: `http://127.0.0.1:${String(listening['port'])}` });
      assert.deepEqual((await client.describeAll()).map((d) => d.id).sort(), [`${PREFIX}.prime-count`, `${PREFIX}.sha256-load`]);

      const load = await client.run(`${PREFIX}.sha256-load`, { config: { duration: 1500 }, statusIntervalMs: 250 });
      assert.deepEqual(load.errors, []);
      assert.equal(load.ended, 'duration');
      assert.ok(load.status.length > 0);
      assert.ok(load.messages.some((m) => /^Hashed \d+ MiB with SHA-256/.test(m.message)), JSON.stringify(load.messages));

      const check = await client.run(`${PREFIX}.prime-count`, { config: { limit: 100_000, maxDuration: 600_000 }, statusIntervalMs: 100 });
      assert.deepEqual(check.errors, []);
      assert.equal(check.ended, 'completed');
      assert.ok(check.messages.some((m) => m.message === '9592 primes below 100000'), JSON.stringify(check.messages));
    } finally {
      process.kill(-pid, 'SIGTERM');
      const limit = setTimeout(() => process.kill(-pid, 'SIGKILL'), COMMAND_LIMIT_MS);
      await closed;
      clearTimeout(limit);
    }
    // One SIGTERM reached the extension (npm forwards its own to the shell, not to node).
    const received = lines.filter((line) => line.includes('"received signal"'));
    assert.equal(received.length, 1, lines.join('\n'));
    assert.match(received[0]!, /"signal":"SIGTERM"/);
    assert.ok(!lines.some((line) => line.includes('second termination signal')), lines.join('\n'));
    assert.ok(statSync(join(project, 'dist', 'src', 'main.js')).isFile());
  });
});
