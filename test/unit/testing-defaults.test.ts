/**
 * `defaultConfig` of `actionkit-runtime/testing`: parameter default values converted as the platform
 * sends them, and required parameters without a default reported.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ActionDescription, ActionParameter } from '../../src/api/schemas.js';
import { defaultConfig } from '../../src/testing/defaults.js';

function describing(parameters: ActionParameter[]): ActionDescription {
  return {
    id: 'unit.defaults',
    label: 'Defaults',
    version: '1.0.0',
    description: 'Parameters of every type.',
    kind: 'other',
    timeControl: 'instantaneous',
    parameters,
    prepare: { method: 'POST', path: '/unit.defaults/prepare' },
    start: { method: 'POST', path: '/unit.defaults/start' },
  };
}

test('default values are converted by parameter type', () => {
  const { config, missing } = defaultConfig(
    describing([
      { name: 'duration', label: 'd', type: 'duration', defaultValue: '30s' },
      { name: 'bareDuration', label: 'd', type: 'duration', defaultValue: '1500' },
      { name: 'count', label: 'c', type: 'integer', defaultValue: '3' },
      { name: 'load', label: 'l', type: 'percentage', defaultValue: '50' },
      { name: 'enabled', label: 'e', type: 'boolean', defaultValue: 'false' },
      { name: 'tags', label: 't', type: 'string_array', defaultValue: '["a","b"]' },
      { name: 'one', label: 'o', type: 'string[]', defaultValue: 'solo' },
      { name: 'headers', label: 'h', type: 'key_value', defaultValue: '[{"key":"k","value":"v"}]' },
      { name: 'url', label: 'u', type: 'url', defaultValue: 'http://example.invalid' },
      { name: 'odd', label: 'o', type: 'integer', defaultValue: 'many' },
      { name: 'section', label: 's', type: 'separator' },
    ]),
  );
  assert.deepEqual(config, {
    duration: 30_000,
    bareDuration: 1_500,
    count: 3,
    load: 50,
    enabled: false,
    tags: ['a', 'b'],
    one: ['solo'],
    headers: [{ key: 'k', value: 'v' }],
    url: 'http://example.invalid',
    // Not convertible: kept, so the extension's own validation names it.
    odd: 'many',
  });
  assert.deepEqual(missing, []);
});

test('required parameters without a default, and files, are reported missing', () => {
  const { config, missing } = defaultConfig(
    describing([
      { name: 'url', label: 'u', type: 'url', required: true },
      { name: 'optional', label: 'o', type: 'string' },
      { name: 'log', label: 'l', type: 'file', required: true, defaultValue: 'ignored' },
    ]),
  );
  assert.deepEqual(config, {});
  assert.deepEqual(missing, ['url', 'log']);
});
