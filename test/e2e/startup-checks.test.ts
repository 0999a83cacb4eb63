/**
 * Start-up refuses what would fail later in front of the agent: an action whose config schema
 * refuses what the agent sends for a declared parameter, a description with fields the spec
 * does not have, and a module that fails to load on the worker threads — through
 * `createExtension`, and in a child process as an operator starts it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RegistrationError } from '../../src/api/description.js';
import { HANDLERS_TASK_MODULE } from '../../src/pool.js';
import { fixture, SERVE_ENTRY, spawnNode, start } from '../support/harness.js';

describe('start-up checks of action definitions', () => {
  test('a config schema expecting strings for duration and integer parameters fails createExtension, naming action, parameter and expectation', async () => {
    await assert.rejects(start({ actions: [fixture('config-mismatch')] }), (error: unknown) => {
      assert.ok(error instanceof RegistrationError, String(error));
      assert.equal(error.actionId, 'fixture.config-mismatch');
      assert.equal(error.field, 'parameters[0].type');
      assert.equal(
        error.message,
        'Action "fixture.config-mismatch": parameters[0] "duration" is of type "duration", for which the agent sends a number of milliseconds (e.g. 30000), ' +
          'but the config schema refuses that at duration: Invalid input: expected string, received number',
      );
      return true;
    });
  });

  test('misspelt description fields fail createExtension, naming action and fields', async () => {
    await assert.rejects(start({ actions: [fixture('misspelt-description')] }), (error: unknown) => {
      assert.ok(error instanceof RegistrationError, String(error));
      assert.equal(error.field, 'categroy');
      assert.equal(
        error.message,
        'Action "fixture.misspelt-description": unknown field "categroy" (did you mean "category"?); unknown field "icn" (did you mean "icon"?): the ActionKit spec has no such fields',
      );
      return true;
    });
  });

  test('an action module that throws when a handler thread loads it fails createExtension with its error', async () => {
    await assert.rejects(start({ actions: [fixture('worker-load-fails')], handlerThreads: 2 }), /fixture\.worker-load-fails refuses to load on a worker thread/);
  });

  test('the task module piscina require()s on handler threads is CommonJS whose exports are promises of the handlers', async () => {
    // piscina require()s its task module before it tries import(). For an ES module, Node 20.19+
    // runs its require(esm) loader there, and a thread terminated inside that loader's synchronous
    // instantiation (the pool destroyed by a failed start-up while piscina boots a replacement
    // thread) aborts the whole process (V8: "IsGraphAsync must be used on an instantiated
    // module"). No hook can hold a thread inside V8's instantiation, so this checks what rules the
    // path out: with require(esm) turned off, require() still loads the entry, and what piscina
    // awaits before a thread reports ready is the handlers' loading (here, off a handler thread,
    // it fails: the handlers need a handler thread's boot data).
    const noRequireEsm = process.allowedNodeEnvironmentFlags.has('--experimental-require-module') ? ['--no-experimental-require-module'] : [];
    const script = `
      const entry = require(${JSON.stringify(HANDLERS_TASK_MODULE)});
      const exported = ['decode', 'uploadViolation', 'ping'].map((name) => entry[name]);
      Promise.allSettled([entry, ...exported]).then((settled) => console.error(JSON.stringify(settled.map((s) => s.status))));`;
    const child = spawnNode([...noRequireEsm, '-e', script]);
    assert.equal(await child.exited, 0, child.logs.join('\n'));
    assert.deepEqual(JSON.parse(child.logs.at(-1) ?? 'null'), ['rejected', 'rejected', 'rejected', 'rejected'], child.logs.join('\n'));
  });

  test('a child process serving the mismatched action exits at start-up with the message, before listening', async () => {
    const child = spawnNode([SERVE_ENTRY, fixture('config-mismatch')]);
    const code = await child.exited;
    assert.notEqual(code, 0);
    const output = child.logs.join('\n');
    assert.match(output, /Action "fixture\.config-mismatch": parameters\[0\] "duration" is of type "duration"/);
    assert.ok(!output.includes('extension listening'), output);
  });
});
