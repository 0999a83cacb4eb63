/**
 * The reference's logging and process settings: `STEADYBIT_LOG_LEVEL=panic`, `STEADYBIT_LOG_COLOR`
 * and `STEADYBIT_EXTENSION_OOM_SCORE_ADJ`, resolved from options and the environment.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, DEFAULT_OOM_SCORE_ADJ, resolveOptions } from '../../src/config.js';
import { logSettingsOf } from '../../src/logging.js';

/** Resolve with no options but the actions, and only `env` as the environment. */
function fromEnv(env: Record<string, string>) {
  return resolveOptions({ actions: [] }, env);
}

/** Assert that resolving `env` throws a ConfigError matching `message`. */
function refused(env: Record<string, string>, message: RegExp): void {
  assert.throws(() => fromEnv(env), (error: unknown) => error instanceof ConfigError && message.test(error.message));
}

test('STEADYBIT_LOG_LEVEL=panic (any case) resolves to pino\'s fatal, as does the option', () => {
  for (const raw of ['panic', 'PANIC', 'Panic', ' panic ']) assert.equal(fromEnv({ STEADYBIT_LOG_LEVEL: raw }).logLevel, 'fatal', raw);
  assert.equal(resolveOptions({ actions: [], logLevel: 'panic' }, {}).logLevel, 'fatal');
  assert.equal(fromEnv({ STEADYBIT_LOG_LEVEL: 'WARN' }).logLevel, 'warn');
  assert.equal(fromEnv({}).logLevel, 'info');
  refused({ STEADYBIT_LOG_LEVEL: 'loud' }, /STEADYBIT_LOG_LEVEL="loud"/);
});

test('STEADYBIT_LOG_COLOR: true or false in any case; anything else is a ConfigError naming the variable', () => {
  assert.equal(fromEnv({ STEADYBIT_LOG_COLOR: 'true' }).logColor, true);
  assert.equal(fromEnv({ STEADYBIT_LOG_COLOR: 'TRUE' }).logColor, true);
  assert.equal(fromEnv({ STEADYBIT_LOG_COLOR: 'false' }).logColor, false);
  assert.equal(fromEnv({ STEADYBIT_LOG_COLOR: 'False' }).logColor, false);
  assert.equal(fromEnv({}).logColor, undefined);
  // The environment has the last word over the option.
  assert.equal(resolveOptions({ actions: [], logColor: true }, { STEADYBIT_LOG_COLOR: 'false' }).logColor, false);
  for (const raw of ['yes', '1', 'on']) refused({ STEADYBIT_LOG_COLOR: raw }, new RegExp(`STEADYBIT_LOG_COLOR="${raw}": expected true or false`));
});

test('log settings: colour as configured, else iff stderr is a terminal', () => {
  const text = { logLevel: 'info', logFormat: 'text' } as const;
  assert.deepEqual(logSettingsOf({ ...text, logColor: undefined }, true), { level: 'info', format: 'text', color: true });
  assert.deepEqual(logSettingsOf({ ...text, logColor: undefined }, false), { level: 'info', format: 'text', color: false });
  assert.equal(logSettingsOf({ ...text, logColor: false }, true).color, false);
  assert.equal(logSettingsOf({ ...text, logColor: true }, false).color, true);
});

test('STEADYBIT_EXTENSION_OOM_SCORE_ADJ: default -998, clamped to [-1000, 1000], off (any case) → null', () => {
  assert.equal(DEFAULT_OOM_SCORE_ADJ, -998);
  assert.equal(fromEnv({}).oomScoreAdj, -998);
  assert.equal(fromEnv({ STEADYBIT_EXTENSION_OOM_SCORE_ADJ: '500' }).oomScoreAdj, 500);
  assert.equal(fromEnv({ STEADYBIT_EXTENSION_OOM_SCORE_ADJ: '-1000' }).oomScoreAdj, -1000);
  assert.equal(fromEnv({ STEADYBIT_EXTENSION_OOM_SCORE_ADJ: '-5000' }).oomScoreAdj, -1000);
  assert.equal(fromEnv({ STEADYBIT_EXTENSION_OOM_SCORE_ADJ: '1001' }).oomScoreAdj, 1000);
  assert.equal(fromEnv({ STEADYBIT_EXTENSION_OOM_SCORE_ADJ: 'off' }).oomScoreAdj, null);
  assert.equal(fromEnv({ STEADYBIT_EXTENSION_OOM_SCORE_ADJ: 'OFF' }).oomScoreAdj, null);
  assert.equal(resolveOptions({ actions: [], oomScoreAdj: 3000 }, {}).oomScoreAdj, 1000);
  assert.equal(resolveOptions({ actions: [], oomScoreAdj: null }, {}).oomScoreAdj, null);
  // The environment overrides the option, also to switch it off.
  assert.equal(resolveOptions({ actions: [], oomScoreAdj: 100 }, { STEADYBIT_EXTENSION_OOM_SCORE_ADJ: 'off' }).oomScoreAdj, null);
});

test('STEADYBIT_EXTENSION_OOM_SCORE_ADJ: not an integer nor off → ConfigError naming the variable', () => {
  for (const raw of ['low', '-998.5', '1e3', 'none']) {
    refused({ STEADYBIT_EXTENSION_OOM_SCORE_ADJ: raw }, new RegExp(`STEADYBIT_EXTENSION_OOM_SCORE_ADJ="${raw.replace('.', '\\.')}": expected an integer or off`));
  }
  assert.throws(() => resolveOptions({ actions: [], oomScoreAdj: 1.5 }, {}), (error: unknown) => error instanceof ConfigError && /option "oomScoreAdj"/.test(error.message));
});

test('durations above the longest Node timer (2^31 - 1 ms) are refused, as option and as variable; up to it they are taken', () => {
  refused({ ACTIONKIT_HANDLER_TIMEOUT: '30d' }, /ACTIONKIT_HANDLER_TIMEOUT.*at most 2147483647 ms/);
  assert.throws(
    () => resolveOptions({ actions: [], stopGraceMs: 2 ** 31 }, {}),
    (error: unknown) => error instanceof ConfigError && /option "stopGraceMs".*at most 2147483647 ms/.test(error.message),
  );
  assert.equal(fromEnv({ ACTIONKIT_HANDLER_TIMEOUT: '24d' }).handlerTimeoutMs, 24 * 86_400_000);
  assert.equal(resolveOptions({ actions: [], handlerTimeoutMs: 2 ** 31 - 1 }, {}).handlerTimeoutMs, 2 ** 31 - 1);
});
