/**
 * Unit tests of the wire schemas (`src/api/schemas.ts`) and of description registration
 * (`src/api/description.ts`): spec limits, request/result bodies, defaults and registration rules.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import type { z } from 'zod';
import {
  ActionDescriptionSchema,
  ActionListSchema,
  ActionParameterSchema,
  ActionStatusRequestBodySchema,
  ArtifactSchema,
  ExecutionModificationSchema,
  MetricSchema,
  PrepareActionRequestBodySchema,
  PrepareActionResponseSchema,
  PrepareResultSchema,
  QueryMetricsRequestBodySchema,
  QueryMetricsResultSchema,
  StartActionRequestBodySchema,
  StartResultSchema,
  StatusResultSchema,
  StopActionRequestBodySchema,
  StopResultSchema,
  SummarySchema,
  GO_ZERO_TIME,
  RestrictedEndpointInRequestSchema,
  RestrictedEndpointSchema,
  TargetInRequestSchema,
  TargetSchema,
  TargetSelectionSchema,
  formatZodIssues,
  type ActionDescription,
  type PrepareActionRequestBody,
} from '../../src/api/schemas.js';
import {
  RegistrationError,
  assertUniqueRoutes,
  normalizeDescription,
  parseDurationMs,
  registrationError,
  type ImplementedHandlers,
} from '../../src/api/description.js';

const ID = 'com.example.x';
const UUID = '5f0c6b9e-8b1a-4c2e-9d3f-0a1b2c3d4e5f';
const NONE: ImplementedHandlers = { status: false, stop: false, query: false, body: false };
const STOP: ImplementedHandlers = { ...NONE, stop: true };
const STATUS: ImplementedHandlers = { ...NONE, status: true };
const BODY: ImplementedHandlers = { ...NONE, body: true };

/** A minimal valid author description (external, with its `duration` parameter). */
function minimal(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: ID,
    label: 'X',
    version: '1.0.0',
    description: 'Does x',
    kind: 'attack',
    timeControl: 'external',
    parameters: [{ name: 'duration', label: 'Duration', type: 'duration', defaultValue: '30s', required: true }],
    ...overrides,
  };
}

/** Run `fn`, expect a RegistrationError, and check that its message names the action and `field`. */
function expectRegistrationError(fn: () => unknown, field: string, pattern?: RegExp): RegistrationError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof RegistrationError, `expected a RegistrationError, got ${String(caught)}`);
  assert.ok(caught.message.startsWith(`Action "${ID}": `), `message must name the action: ${caught.message}`);
  assert.ok(caught.message.includes(field), `message must name ${field}: ${caught.message}`);
  assert.equal(caught.field, field);
  assert.equal(caught.actionId, ID);
  if (pattern !== undefined) assert.match(caught.message, pattern);
  return caught;
}

/** Parse and expect failure; returns the formatted issues. */
function failure(schema: z.ZodType, value: unknown): { first: string; all: string } {
  const result = schema.safeParse(value);
  assert.equal(result.success, false, `expected ${JSON.stringify(value)?.slice(0, 200)} to be rejected`);
  return formatZodIssues(result.error!);
}

function assertDeepFrozen(value: unknown, path = 'description'): void {
  if (typeof value !== 'object' || value === null) return;
  assert.ok(Object.isFrozen(value), `${path} must be frozen`);
  for (const [key, child] of Object.entries(value)) assertDeepFrozen(child, `${path}.${key}`);
}

const ALL_PARAMETER_TYPES = [
  'string',
  'string[]',
  'string_array',
  'integer',
  'boolean',
  'percentage',
  'duration',
  'file',
  'key_value',
  'url',
  'textarea',
  'separator',
  'header',
  'bitrate',
  'stressng-workers',
  'regex',
  'target-selection',
] as const;

function fullDescription(): Record<string, unknown> {
  return {
    id: ID,
    label: 'Full action',
    icon: 'data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=',
    version: '1.2.3',
    description: 'Uses every feature of the spec',
    kind: 'load_test',
    technology: 'Host',
    category: 'Resources',
    targetSelection: {
      targetType: 'com.steadybit.extension_host.host',
      targetQuery: 'host.hostname=""',
      selectionTemplates: [{ label: 'by host', description: 'pick a host', query: 'host.hostname=""' }],
      quantityRestriction: 'exactly_one',
      defaultBlastRadius: { mode: 'maximum', value: 1 },
      missingQuerySelection: 'include_none',
    },
    targetType: 'com.steadybit.extension_host.host',
    targetSelectionTemplates: [{ label: 'legacy', query: 'a="b"' }],
    timeControl: 'external',
    parameters: [
      ...ALL_PARAMETER_TYPES.map((type) => ({ name: type === 'duration' ? 'duration' : `p_${type}`, label: `Param ${type}`, type })),
      {
        name: 'mode',
        label: 'Mode',
        description: 'How to run',
        type: 'string',
        required: true,
        advanced: true,
        order: 3,
        defaultValue: 'fast',
        optionsOnly: false,
        options: [{ label: 'Fast', value: 'fast' }, { attribute: 'host.hostname' }],
        hint: { type: 'hint_warning', content: 'careful' },
        deprecated: true,
        deprecationMessage: 'use p_string',
      },
      { name: 'upload', label: 'Upload', type: 'file', acceptedFileTypes: ['.jar', 'application/zip'] },
      { name: 'wait', label: 'Wait', type: 'duration', minValue: 0, maxValue: 60_000, durationUnits: ['seconds', 'minutes'] },
    ],
    additionalFlags: ['DISABLE_HEARTBEAT'],
    hint: { type: 'hint_info', content: '**Markdown**' },
    widgets: [
      {
        type: 'com.steadybit.widget.state_over_time',
        title: 'States',
        identity: { from: 'id' },
        label: { from: 'label' },
        tooltip: { from: 'tooltip' },
        url: { from: 'url' },
        state: { from: 'state' },
        value: { hide: true },
      },
      { type: 'com.steadybit.widget.log', title: 'Log', logType: 'RESPONSES' },
      { type: 'com.steadybit.widget.markdown', title: 'Report', messageType: 'REPORT', append: true },
      { type: 'com.steadybit.widget.predefined', predefinedWidgetId: 'com.steadybit.widget.predefined.HttpCheck' },
      {
        type: 'com.steadybit.widget.line_chart',
        title: 'Latency',
        identity: { metricName: 'latency', from: 'url', mode: 'com.steadybit.widget.line_chart.identity_mode.widget-per-value' },
        grouping: {
          showSummary: true,
          groups: [
            { title: 'ok', color: 'success', matcher: { type: 'com.steadybit.widget.line_chart.group_matcher_key_equals_value', key: 'status', value: '200' } },
            { title: 'err', color: 'danger', matcher: { type: 'com.steadybit.widget.line_chart.group_matcher_not_empty', key: 'error' } },
            { title: 'other', color: 'warn', matcher: { type: 'com.steadybit.widget.line_chart.group_matcher_fallback' } },
          ],
        },
        tooltip: { metricValueUnit: 'ms', metricValueTitle: 'Latency', additionalContent: [{ title: 'Status', from: 'status', unit: '' }] },
      },
    ],
    metrics: {
      query: {
        endpoint: { callInterval: '1s' },
        parameters: [{ name: 'threshold', label: 'Threshold', type: 'integer' }],
      },
    },
    prepare: { path: `/${ID}/prepare`, method: 'post' },
    start: {},
    status: { callInterval: '2s' },
    stop: { path: '/custom/stop', method: 'DELETE' },
    'x-extra': { kept: true },
  };
}

// -----------------------------------------------------------------------------------------------

describe('normalizeDescription: full description', () => {
  test('a description with every parameter type, widget, hint, targetSelection and metrics passes', () => {
    const normalized = normalizeDescription(fullDescription(), { status: true, stop: true, query: true, body: false });
    assert.equal(ActionDescriptionSchema.safeParse(normalized).success, true);
    assert.deepEqual(
      normalized.parameters.slice(0, ALL_PARAMETER_TYPES.length).map((p) => p.type),
      [...ALL_PARAMETER_TYPES],
    );
    assert.equal(normalized.widgets?.length, 5);
    assert.deepEqual(normalized.prepare, { path: `/${ID}/prepare`, method: 'POST' });
    assert.deepEqual(normalized.start, { path: `/${ID}/start`, method: 'POST' });
    assert.deepEqual(normalized.status, { path: `/${ID}/status`, method: 'POST', callInterval: '2s' });
    assert.deepEqual(normalized.stop, { path: '/custom/stop', method: 'DELETE' });
    assert.deepEqual(normalized.metrics?.query?.endpoint, { path: `/${ID}/query`, method: 'POST', callInterval: '1s' });
    assert.deepEqual(normalized['x-extra'], { kept: true }, 'additional properties are kept, as the spec allows');
    assertDeepFrozen(normalized);
    assert.throws(() => {
      (normalized.parameters as unknown[]).push({});
    }, TypeError);
  });

  test('the result is a copy: later changes to the author object do not leak in', () => {
    const input = minimal();
    const normalized = normalizeDescription(input, STOP);
    (input.parameters as Array<Record<string, unknown>>)[0]!.label = 'changed';
    assert.equal(normalized.parameters[0]?.label, 'Duration');
    assert.ok(!Object.isFrozen(input), 'the author object itself is not frozen');
  });
});

describe('normalizeDescription: defaults (reference §1.2)', () => {
  test('stop handler without status: stop + synthetic status 15s, default paths, POST', () => {
    const d = normalizeDescription(minimal(), STOP);
    assert.deepEqual(d.prepare, { path: `/${ID}/prepare`, method: 'POST' });
    assert.deepEqual(d.start, { path: `/${ID}/start`, method: 'POST' });
    assert.deepEqual(d.stop, { path: `/${ID}/stop`, method: 'POST' });
    assert.deepEqual(d.status, { path: `/${ID}/status`, method: 'POST', callInterval: '15s' });
  });

  test('a body alone makes the action stoppable (stop + synthetic status)', () => {
    const d = normalizeDescription(minimal(), BODY);
    assert.deepEqual(d.stop, { path: `/${ID}/stop`, method: 'POST' });
    assert.equal(d.status?.callInterval, '15s');
  });

  test('status handler: status with callInterval 5s; empty callInterval also becomes 5s', () => {
    assert.deepEqual(normalizeDescription(minimal(), STATUS).status, { path: `/${ID}/status`, method: 'POST', callInterval: '5s' });
    assert.equal(normalizeDescription(minimal({ status: { callInterval: '' } }), STATUS).status?.callInterval, '5s');
    assert.equal(normalizeDescription(minimal({ status: { callInterval: '250ms' } }), STATUS).status?.callInterval, '250ms');
    assert.equal(normalizeDescription(minimal(), STATUS).stop, undefined, 'no stop without stop handler or body');
  });

  test('status and stop: real status at 5s, not the synthetic 15s', () => {
    const d = normalizeDescription(minimal(), { ...NONE, status: true, stop: true });
    assert.equal(d.status?.callInterval, '5s');
  });

  test('a stoppable action that declares status without interval gets 5s (as the reference)', () => {
    assert.equal(normalizeDescription(minimal({ status: {} }), STOP).status?.callInterval, '5s');
  });

  test('lowercase methods are uppercased, custom paths kept, empty paths defaulted', () => {
    const d = normalizeDescription(
      minimal({ prepare: { method: 'put', path: '/p' }, start: { method: 'Post', path: '' }, stop: { method: 'delete' }, status: { method: 'put' } }),
      { ...STOP, status: true },
    );
    assert.deepEqual(d.prepare, { path: '/p', method: 'PUT' });
    assert.deepEqual(d.start, { path: `/${ID}/start`, method: 'POST' });
    assert.deepEqual(d.stop, { path: `/${ID}/stop`, method: 'DELETE' });
    assert.deepEqual(d.status, { path: `/${ID}/status`, method: 'PUT', callInterval: '5s' });
  });

  test('additional properties of endpoint references are kept', () => {
    const d = normalizeDescription(minimal({ prepare: { 'x-note': 'n' } }), NONE);
    assert.deepEqual(d.prepare, { 'x-note': 'n', path: `/${ID}/prepare`, method: 'POST' });
  });

  test('metrics.query endpoint: default path and method, callInterval not defaulted', () => {
    const d = normalizeDescription(minimal({ metrics: { query: { parameters: [] } } }), { ...NONE, query: true });
    assert.deepEqual(d.metrics?.query?.endpoint, { path: `/${ID}/query`, method: 'POST' });
    const e = normalizeDescription(minimal({ metrics: { query: { endpoint: { method: 'put', callInterval: '' } } } }), { ...NONE, query: true });
    assert.deepEqual(e.metrics?.query, { endpoint: { path: `/${ID}/query`, method: 'PUT' }, parameters: [] });
  });

  test('instantaneous action without handlers: no status, no stop; omitted parameters become []', () => {
    const d = normalizeDescription(minimal({ timeControl: 'instantaneous', parameters: undefined }), NONE);
    assert.equal(d.status, undefined);
    assert.equal(d.stop, undefined);
    assert.deepEqual(d.parameters, []);
    assert.equal(ActionDescriptionSchema.safeParse(d).success, true);
  });

  test('internal action with status handler', () => {
    const d = normalizeDescription(minimal({ timeControl: 'internal', parameters: [] }), STATUS);
    assert.equal(d.status?.path, `/${ID}/status`);
  });
});

describe('normalizeDescription: rules', () => {
  test('schema violations name the field', () => {
    const error = expectRegistrationError(
      () => normalizeDescription(minimal({ parameters: [{ name: 'a', label: 'A', type: 'password' }] }), NONE),
      'parameters[0].type',
    );
    assert.match(error.message, /^Action "com\.example\.x": parameters\[0\]\.type: Invalid option: expected one of "string"\|"string\[\]"\|/);
  });

  test('description without a usable id', () => {
    assert.throws(() => normalizeDescription({ label: 'x' }, NONE), (error: unknown) => {
      assert.ok(error instanceof RegistrationError);
      assert.equal(error.actionId, undefined);
      assert.equal(error.field, 'id');
      assert.match(error.message, /^Action <unknown id>: id: Invalid input/);
      return true;
    });
    assert.throws(() => normalizeDescription(null, NONE), RegistrationError);
    assert.throws(() => normalizeDescription({ id: 1n }, NONE), /not JSON-serialisable/);
  });

  test('query implemented requires metrics and metrics.query (rules 1-2)', () => {
    expectRegistrationError(() => normalizeDescription(minimal(), { ...NONE, query: true }), 'metrics', /query handler is implemented/);
    expectRegistrationError(() => normalizeDescription(minimal({ metrics: {} }), { ...NONE, query: true }), 'metrics.query', /query handler is implemented/);
  });

  test('file parameter requires a stop handler or a body (rule 3)', () => {
    const withFile = minimal({ parameters: [...(minimal().parameters as unknown[]), { name: 'f', label: 'F', type: 'file' }] });
    expectRegistrationError(() => normalizeDescription(withFile, STATUS), 'parameters[1].type', /"file" requires a stop handler/);
    assert.ok(normalizeDescription(withFile, STOP));
    assert.ok(normalizeDescription(withFile, BODY));
  });

  test('internal requires a status handler (rule 4)', () => {
    expectRegistrationError(
      () => normalizeDescription(minimal({ timeControl: 'internal' }), STOP),
      'timeControl',
      /^Action "com\.example\.x": timeControl "internal" requires a status handler/,
    );
  });

  test('instantaneous forbids status, stop and body (rules 5-6 + body)', () => {
    const instantaneous = minimal({ timeControl: 'instantaneous' });
    expectRegistrationError(() => normalizeDescription(instantaneous, STATUS), 'timeControl', /"instantaneous" must not have a status handler/);
    expectRegistrationError(() => normalizeDescription(instantaneous, STOP), 'timeControl', /"instantaneous" must not have a stop handler/);
    expectRegistrationError(() => normalizeDescription(instantaneous, BODY), 'timeControl', /"instantaneous" must not have a body/);
  });

  test('id must be non-empty and URL-path safe', () => {
    assert.throws(() => normalizeDescription(minimal({ id: '' }), NONE), (error: unknown) => {
      assert.ok(error instanceof RegistrationError);
      assert.equal(error.field, 'id');
      assert.equal(error.message, 'Action "": id: must not be empty');
      return true;
    });
    for (const bad of ['a/b', 'a b', 'a?b', 'a#b', 'a%20b', '..', 'é']) {
      assert.throws(() => normalizeDescription(minimal({ id: bad }), NONE), (error: unknown) => {
        assert.ok(error instanceof RegistrationError);
        assert.equal(error.field, 'id');
        assert.equal(error.actionId, bad);
        assert.match(error.message, /cannot be used as a URL path segment/);
        return true;
      });
    }
    assert.equal(normalizeDescription(minimal({ id: 'Com.Example_x-1~2' }), NONE).id, 'Com.Example_x-1~2');
  });

  test('stop declared without stop handler or body', () => {
    expectRegistrationError(() => normalizeDescription(minimal({ stop: { path: '/s' } }), STATUS), 'stop', /stop is declared but neither a stop handler nor a body/);
  });

  test('status declared without status handler and not stoppable', () => {
    expectRegistrationError(() => normalizeDescription(minimal({ status: { path: '/s' } }), NONE), 'status', /status is declared/);
    assert.equal(normalizeDescription(minimal({ status: { callInterval: '30s' } }), STOP).status?.callInterval, '30s');
  });

  test('metrics.query declared without query handler', () => {
    expectRegistrationError(() => normalizeDescription(minimal({ metrics: { query: { parameters: [] } } }), NONE), 'metrics.query', /no query handler/);
  });

  test('external requires a "duration" parameter of type duration', () => {
    expectRegistrationError(() => normalizeDescription(minimal({ parameters: [] }), STOP), 'parameters', /timeControl "external" requires a parameter named "duration"/);
    expectRegistrationError(
      () => normalizeDescription(minimal({ parameters: [{ name: 'x', label: 'X', type: 'string' }, { name: 'duration', label: 'D', type: 'integer' }] }), STOP),
      'parameters[1].type',
      /of type "duration", not "integer"/,
    );
  });

  test('duplicate parameter names, also within metrics.query.parameters', () => {
    const twice = [...(minimal().parameters as unknown[]), { name: 'duration', label: 'Again', type: 'duration' }];
    expectRegistrationError(() => normalizeDescription(minimal({ parameters: twice }), STOP), 'parameters[1].name', /duplicate parameter name "duration" \(also parameters\[0\]\.name\)/);
    const query = { parameters: [{ name: 'q', label: 'Q', type: 'string' }, { name: 'q', label: 'Q2', type: 'integer' }] };
    expectRegistrationError(() => normalizeDescription(minimal({ metrics: { query } }), { ...STOP, query: true }), 'metrics.query.parameters[1].name', /duplicate parameter name "q"/);
  });

  test('file parameters inside metrics.query.parameters', () => {
    const query = { parameters: [{ name: 'f', label: 'F', type: 'file' }] };
    expectRegistrationError(() => normalizeDescription(minimal({ metrics: { query } }), { ...STOP, query: true }), 'metrics.query.parameters[0].type', /"file" are not supported/);
  });

  test('callInterval must match the spec pattern and be > 0', () => {
    for (const bad of ['1.5s', '1m30s', '5 s', '-1s', '5', 's', '10us', '0s', '0ms']) {
      expectRegistrationError(() => normalizeDescription(minimal({ status: { callInterval: bad } }), STATUS), 'status.callInterval', /Invalid duration/);
    }
    expectRegistrationError(
      () => normalizeDescription(minimal({ metrics: { query: { endpoint: { callInterval: '0s' } } } }), { ...STOP, query: true }),
      'metrics.query.endpoint.callInterval',
      /must be greater than 0/,
    );
    assert.equal(normalizeDescription(minimal({ status: { callInterval: '1d' } }), STATUS).status?.callInterval, '1d');
    assert.equal(normalizeDescription(minimal({ status: { callInterval: '1ns' } }), STATUS).status?.callInterval, '1ns');
  });

  test('custom endpoint paths must start with "/"; methods must be POST/PUT/DELETE', () => {
    expectRegistrationError(() => normalizeDescription(minimal({ prepare: { path: 'prepare' } }), NONE), 'prepare.path', /must start with "\/"/);
    expectRegistrationError(() => normalizeDescription(minimal({ stop: { path: 'x/stop' } }), STOP), 'stop.path', /must start with "\/"/);
    expectRegistrationError(() => normalizeDescription(minimal({ start: { method: 'get' } }), NONE), 'start.method', /"POST"\|"PUT"\|"DELETE"/);
  });

  test('max lengths and patterns of the spec are enforced at registration', () => {
    expectRegistrationError(() => normalizeDescription(minimal({ label: 'x'.repeat(256) }), NONE), 'label', /label: Too big: expected string to have <=255 characters/);
    assert.ok(normalizeDescription(minimal({ label: 'x'.repeat(255) }), NONE));
    // maxLength counts code points (JSON Schema), not UTF-16 units: 255 emoji are 510 units.
    assert.ok(normalizeDescription(minimal({ label: '🔥'.repeat(255) }), NONE));
    expectRegistrationError(() => normalizeDescription(minimal({ label: '🔥'.repeat(256) }), NONE), 'label');
    expectRegistrationError(() => normalizeDescription(minimal({ icon: 'https://example.com/x.svg' }), NONE), 'icon', /data URI/);
    expectRegistrationError(() => normalizeDescription(minimal({ icon: `data:${'a'.repeat(1_000_000)}` }), NONE), 'icon', /<=1000000 characters/);
    expectRegistrationError(() => normalizeDescription(minimal({ version: 'v'.repeat(65) }), NONE), 'version');
    expectRegistrationError(() => normalizeDescription(minimal({ description: 'd'.repeat(2001) }), NONE), 'description');
    assert.throws(() => normalizeDescription(minimal({ id: 'i'.repeat(256) }), NONE), (error: unknown) => {
      assert.ok(error instanceof RegistrationError);
      assert.equal(error.field, 'id');
      assert.match(error.message, /^Action "i{256}": id: Too big: expected string to have <=255 characters$/);
      return true;
    });
    const many = Array.from({ length: 65 }, (_, i) => ({ name: i === 0 ? 'duration' : `p${i}`, label: 'P', type: i === 0 ? 'duration' : 'string' }));
    expectRegistrationError(() => normalizeDescription(minimal({ parameters: many }), NONE), 'parameters', /<=64 items/);
    expectRegistrationError(
      () => normalizeDescription(minimal({ parameters: [{ name: 'duration', label: 'D', type: 'duration', defaultValue: '1'.repeat(256) }] }), NONE),
      'parameters[0].defaultValue',
    );
    expectRegistrationError(() => normalizeDescription(minimal({ kind: 'chaos' }), NONE), 'kind', /Invalid option/);
    expectRegistrationError(() => normalizeDescription(minimal({ widgets: [{ type: 'com.steadybit.widget.log', title: 'L' }] }), NONE), 'widgets[0].logType');
    expectRegistrationError(() => normalizeDescription(minimal({ widgets: [{ type: 'nope' }] }), NONE), 'widgets[0].type');
    expectRegistrationError(() => normalizeDescription(minimal({ additionalFlags: ['NOPE'] }), NONE), 'additionalFlags[0]');
    expectRegistrationError(() => normalizeDescription(minimal({ hint: { type: 'warning', content: 'x' } }), NONE), 'hint.type');
  });
});

describe('RegistrationError', () => {
  test('constructor takes the full message, then id and field; registrationError builds the prefix', () => {
    const direct = new RegistrationError('Action "a": id is registered twice', 'a', 'id');
    assert.equal(direct.message, 'Action "a": id is registered twice');
    assert.equal(direct.actionId, 'a');
    assert.equal(direct.field, 'id');
    assert.equal(direct.name, 'RegistrationError');
    assert.ok(direct instanceof Error);
    const built = registrationError(undefined, undefined, 'broken');
    assert.equal(built.message, 'Action <unknown id>: broken');
    assert.equal(built.actionId, undefined);
  });
});

describe('assertUniqueRoutes', () => {
  const a = (): ActionDescription => normalizeDescription(minimal({ id: 'com.example.a' }), STOP);
  const b = (overrides: Record<string, unknown> = {}): ActionDescription =>
    normalizeDescription(minimal({ id: 'com.example.b', ...overrides }), STOP);

  test('distinct actions pass', () => {
    assert.doesNotThrow(() => assertUniqueRoutes([a(), b()]));
    assert.doesNotThrow(() => assertUniqueRoutes([]));
  });

  test('duplicate id', () => {
    assert.throws(() => assertUniqueRoutes([a(), b(), a()]), (error: unknown) => {
      assert.ok(error instanceof RegistrationError);
      assert.equal(error.actionId, 'com.example.a');
      assert.equal(error.field, 'id');
      assert.match(error.message, /^Action "com\.example\.a": id: registered more than once/);
      return true;
    });
  });

  test('two actions claiming the same method and path', () => {
    assert.throws(() => assertUniqueRoutes([a(), b({ start: { path: '/com.example.a/stop' } })]), (error: unknown) => {
      assert.ok(error instanceof RegistrationError);
      assert.equal(error.actionId, 'com.example.b');
      assert.equal(error.field, 'start.path');
      assert.match(error.message, /route POST \/com\.example\.a\/stop is already claimed by stop of action "com\.example\.a"/);
      return true;
    });
    // Same path, different method: different routes.
    assert.doesNotThrow(() => assertUniqueRoutes([a(), b({ start: { path: '/com.example.a/stop', method: 'PUT' } })]));
  });

  test('express matches case-insensitively and ignores a trailing slash', () => {
    assert.throws(() => assertUniqueRoutes([a(), b({ prepare: { path: '/COM.EXAMPLE.A/start/' } })]), /already claimed by start of action "com\.example\.a"/);
  });

  test('two endpoints of the same action', () => {
    assert.throws(
      () => assertUniqueRoutes([normalizeDescription(minimal({ start: { path: `/${ID}/prepare` } }), STOP)]),
      /start\.path: route POST \/com\.example\.x\/prepare is already claimed by prepare of the same action/,
    );
  });
});

// -----------------------------------------------------------------------------------------------

describe('request bodies', () => {
  test('valid prepare: any-case UUID, properties null or missing normalised to {}', () => {
    const upper = UUID.toUpperCase();
    const parsed = PrepareActionRequestBodySchema.parse({
      executionId: upper,
      config: { duration: 1000 },
      target: { name: 'host-1', attributes: { 'host.hostname': ['host-1'] } },
      executionContext: {
        agentPid: 1,
        executionId: 42,
        restrictedEndpoints: [{ name: 'platform', url: 'https://p', cidr: '10.0.0.1/32', portMin: 0, portMax: 65535 }],
      },
      properties: null,
    });
    assert.equal(parsed.executionId, upper);
    assert.deepEqual(parsed.properties, {});
    assert.deepEqual(PrepareActionRequestBodySchema.parse({ executionId: UUID, config: {} }).properties, {});
    assert.deepEqual(PrepareActionRequestBodySchema.parse({ executionId: UUID, config: {}, properties: { a: 1 } }).properties, { a: 1 });
    // Non-v4 and nil UUIDs are well-formed too.
    assert.equal(PrepareActionRequestBodySchema.safeParse({ executionId: '00000000-0000-0000-0000-000000000000', config: {} }).success, true);
  });

  test('missing executionId', () => {
    for (const schema of [PrepareActionRequestBodySchema, StartActionRequestBodySchema, ActionStatusRequestBodySchema, StopActionRequestBodySchema]) {
      const { first } = failure(schema, { config: {}, state: {} });
      assert.match(first, /^executionId: Invalid input: expected UUID, received undefined$/);
    }
  });

  test('malformed executionId', () => {
    for (const bad of ['not-a-uuid', '5f0c6b9e8b1a4c2e9d3f0a1b2c3d4e5f', `{${UUID}}`, `${UUID}0`, 'g'.repeat(8) + UUID.slice(8)]) {
      assert.match(failure(StartActionRequestBodySchema, { executionId: bad, state: {} }).first, /^executionId: Invalid UUID/);
    }
    assert.match(failure(StartActionRequestBodySchema, { executionId: 42, state: {} }).first, /^executionId: Invalid input: expected UUID, received number/);
  });

  test('config: null or missing is {} (a Go map), anything but an object is refused', () => {
    assert.deepEqual(PrepareActionRequestBodySchema.parse({ executionId: UUID, config: null }).config, {});
    assert.deepEqual(PrepareActionRequestBodySchema.parse({ executionId: UUID }).config, {});
    assert.deepEqual(QueryMetricsRequestBodySchema.parse({ executionId: UUID, timestamp: '2024-01-01T00:00:00Z' }).config, {});
    assert.equal(failure(PrepareActionRequestBodySchema, { executionId: UUID, config: [] }).first, 'config: Invalid input: expected object, received array');
    assert.equal(failure(PrepareActionRequestBodySchema, { executionId: UUID, config: {}, properties: [] }).first, 'properties: Invalid input: expected object, received array');
    assert.equal(failure(QueryMetricsRequestBodySchema, { executionId: UUID, timestamp: '2024-01-01T00:00:00Z', config: 'x' }).first, 'config: Invalid input: expected object, received string');
  });

  test('state in start/status/stop: null or missing is {}, anything but an object is refused', () => {
    for (const schema of [StartActionRequestBodySchema, ActionStatusRequestBodySchema, StopActionRequestBodySchema]) {
      assert.deepEqual(schema.parse({ executionId: UUID }).state, {});
      assert.deepEqual(schema.parse({ executionId: UUID, state: null }).state, {});
      assert.equal(failure(schema, { executionId: UUID, state: [1] }).first, 'state: Invalid input: expected object, received array');
      assert.equal(failure(schema, { executionId: UUID, state: 'x' }).first, 'state: Invalid input: expected object, received string');
    }
  });

  test('state is passed through untouched (same object, own __proto__ key kept)', () => {
    const state = JSON.parse('{"__proto__": {"x": 1}, "n": 1}') as Record<string, unknown>;
    const parsed = StatusOf({ executionId: UUID, state });
    assert.equal(parsed.state, state);
    assert.deepEqual(Object.keys(parsed.state), ['__proto__', 'n']);
  });

  test('the whole body must be an object; all issues are reported', () => {
    assert.equal(failure(StopActionRequestBodySchema, []).first, 'Invalid input: expected object, received array');
    const { all } = failure(StopActionRequestBodySchema, { executionId: 'x', state: 1 });
    assert.equal(all.split('; ').length, 2);
    assert.match(all, /^executionId: .*; state: /);
  });

  test('query metrics: timestamp is an ISO date-time, null or missing is Go\'s zero time', () => {
    assert.equal(QueryMetricsRequestBodySchema.safeParse({ executionId: UUID, timestamp: '2024-01-01T00:00:00.123456789+02:00', config: {} }).success, true);
    assert.match(failure(QueryMetricsRequestBodySchema, { executionId: UUID, timestamp: 'yesterday', config: {} }).first, /^timestamp: /);
    assert.match(failure(QueryMetricsRequestBodySchema, { executionId: UUID, timestamp: 1_700_000_000, config: {} }).first, /^timestamp: /);
    assert.equal(QueryMetricsRequestBodySchema.parse({ executionId: UUID, config: {} }).timestamp, GO_ZERO_TIME);
    assert.equal(QueryMetricsRequestBodySchema.parse({ executionId: UUID, timestamp: null, config: {} }).timestamp, '0001-01-01T00:00:00Z');
  });

  test('target attributes are lists of strings (spec component and request alike)', () => {
    for (const schema of [TargetSchema, TargetInRequestSchema]) {
      assert.equal(
        failure(schema, { name: 't', attributes: { 'k8s.pod.name': 'x' } }).first,
        'attributes["k8s.pod.name"]: Invalid input: expected array, received string',
      );
    }
  });
});

describe('request bodies decode as Go does', () => {
  test('pointer fields: null is absent, never null', () => {
    const prepare = PrepareActionRequestBodySchema.parse({ executionId: UUID, config: {}, target: null, executionContext: null });
    assert.equal('target' in prepare, false);
    assert.equal('executionContext' in prepare, false);
    const query = QueryMetricsRequestBodySchema.parse({ executionId: UUID, config: {}, target: null });
    assert.equal('target' in query, false);
    const context = PrepareActionRequestBodySchema.parse({
      executionId: UUID,
      executionContext: { agentPid: null, agentAwsAccountId: null, restrictedEndpoints: null, experimentKey: null, experimentUri: null, executionId: null, executionUri: null },
    }).executionContext;
    assert.deepEqual(context, {});
  });

  test('non-pointer fields: null or missing is the zero value', () => {
    const parsed = PrepareActionRequestBodySchema.parse({
      executionId: UUID,
      target: { name: null, attributes: { a: null, b: ['x', null] } },
      executionContext: { restrictedEndpoints: [null, { cidr: null }] },
    });
    assert.deepEqual(parsed.target, { name: '', attributes: { a: [], b: ['x', ''] } });
    const zero = { name: '', url: '', cidr: '', portMin: 0, portMax: 0 };
    assert.deepEqual(parsed.executionContext?.restrictedEndpoints, [zero, zero]);
    assert.deepEqual(PrepareActionRequestBodySchema.parse({ executionId: UUID, target: { attributes: null } }).target, { name: '', attributes: {} });
  });

  test('restricted endpoints: any CIDR or host string, any integer port', () => {
    const endpoints = [
      { name: 'all v6', url: '', cidr: '::/0', portMin: 0, portMax: 65535 },
      { name: 'v6 host', url: 'https://[fd00::1]:8443', cidr: 'fd00::1/128', portMin: 8443, portMax: 8443 },
      { name: 'net', url: '', cidr: '10.0.0.0/8', portMin: 0, portMax: 0 },
      { name: 'host', url: 'https://platform.steadybit.com', cidr: 'platform.steadybit.com', portMin: -1, portMax: 100_000 },
    ];
    const parsed = RestrictedEndpointInRequestSchema.array().parse(endpoints);
    assert.deepEqual(parsed, endpoints);
    // The spec's own component keeps its IPv4 pattern: it describes what a conforming client sends.
    assert.match(failure(RestrictedEndpointSchema, endpoints[0]).first, /^cidr: Invalid CIDR/);
  });

  test('unknown keys are kept, at every level', () => {
    const parsed = PrepareActionRequestBodySchema.parse({
      executionId: UUID,
      config: {},
      future: 1,
      target: { name: 't', attributes: {}, extra: true },
      executionContext: { somethingNew: 'x', restrictedEndpoints: [{ cidr: '::/0', portMin: 0, portMax: 1, zone: 'eu' }] },
    }) as Record<string, unknown> & PrepareActionRequestBody;
    assert.equal(parsed['future'], 1);
    assert.equal(parsed.target?.['extra'], true);
    assert.equal(parsed.executionContext?.['somethingNew'], 'x');
    assert.equal(parsed.executionContext?.restrictedEndpoints?.[0]?.['zone'], 'eu');
  });

  test('a null pointer field is dropped from a copy: the received object is not changed', () => {
    const received = { executionId: UUID, config: {}, target: null };
    PrepareActionRequestBodySchema.parse(received);
    assert.deepEqual(received, { executionId: UUID, config: {}, target: null });
  });

  test('wrong JSON types stay errors, naming the field', () => {
    const at = (executionContext: unknown) => failure(PrepareActionRequestBodySchema, { executionId: UUID, config: {}, executionContext }).first;
    assert.equal(at({ restrictedEndpoints: [{ cidr: 5 }] }), 'executionContext.restrictedEndpoints[0].cidr: Invalid input: expected string, received number');
    assert.equal(at({ restrictedEndpoints: [{ portMin: 1.5 }] }), 'executionContext.restrictedEndpoints[0].portMin: Invalid input: expected int, received number');
    assert.equal(at({ restrictedEndpoints: [{ portMax: '80' }] }), 'executionContext.restrictedEndpoints[0].portMax: Invalid input: expected number, received string');
    assert.equal(at({ restrictedEndpoints: {} }), 'executionContext.restrictedEndpoints: Invalid input: expected array, received object');
    assert.equal(at({ agentPid: 'x' }), 'executionContext.agentPid: Invalid input: expected number, received string');
    assert.equal(at({ executionId: 1.5 }), 'executionContext.executionId: Invalid input: expected int, received number');
    assert.equal(at('x'), 'executionContext: Invalid input: expected object, received string');
    assert.equal(failure(PrepareActionRequestBodySchema, { executionId: UUID, target: { name: 1 } }).first, 'target.name: Invalid input: expected string, received number');
    assert.equal(failure(PrepareActionRequestBodySchema, { executionId: UUID, target: [] }).first, 'target: Invalid input: expected object, received array');
    assert.equal(failure(PrepareActionRequestBodySchema, { executionId: null, config: {} }).first, 'executionId: Invalid input: expected UUID, received null');
    assert.equal(failure(PrepareActionRequestBodySchema, null).first, 'Invalid input: expected object, received null');
  });
});

function StatusOf(body: unknown): z.infer<typeof ActionStatusRequestBodySchema> {
  return ActionStatusRequestBodySchema.parse(body);
}

describe('results', () => {
  const now = '2024-05-01T10:00:00Z';
  const extras = {
    error: { title: 'boom', status: 'failed', detail: 'd', type: 't', instance: 'i' },
    messages: [
      { message: 'hello' },
      { message: 'x', type: 'RESPONSES', level: 'warn', timestamp: now, timestampSource: 'external', fields: { url: 'http://x' } },
    ],
    artifacts: [{ label: 'report.tar.gz', data: 'aGVsbG8=' }],
    metrics: [{ timestamp: now, name: 'latency', metric: { url: 'http://x', __name__: 'latency' }, value: 12.5, timestampSource: 'extension' }],
    modifications: [
      { type: 'set_property_value', propertyKey: 'k', value: 'any string' },
      { type: 'add_value_to_list_property', propertyKey: 'list', value: { nested: [1, 2] } },
      { type: 'set_property_value', propertyKey: 'n', value: null },
    ],
    summary: { text: 'All good', level: 'info' },
  };

  test('results with messages, metrics, artifacts, summary and modifications pass', () => {
    assert.equal(PrepareResultSchema.safeParse({ state: { a: 1 }, ...extras }).success, true);
    assert.equal(StartResultSchema.safeParse({ ...extras }).success, true);
    assert.equal(StatusResultSchema.safeParse({ completed: false, state: {}, ...extras }).success, true);
    assert.equal(StopResultSchema.safeParse({ ...extras }).success, true);
    assert.equal(QueryMetricsResultSchema.safeParse({ messages: extras.messages, metrics: extras.metrics, artifacts: extras.artifacts }).success, true);
    assert.equal(StopResultSchema.safeParse({}).success, true);
  });

  test('PrepareResult requires state', () => {
    assert.equal(failure(PrepareResultSchema, { messages: [] }).first, 'state: Invalid input: expected object, received undefined');
    assert.equal(failure(PrepareResultSchema, { state: null }).first, 'state: Invalid input: expected object, received null');
  });

  test('StatusResult requires completed', () => {
    assert.equal(failure(StatusResultSchema, { state: {} }).first, 'completed: Invalid input: expected boolean, received undefined');
  });

  test('an error body alone is a valid response', () => {
    assert.equal(PrepareActionResponseSchema.safeParse({ title: 'Failed to prepare.', detail: 'x' }).success, true);
    assert.equal(PrepareActionResponseSchema.safeParse({ detail: 'x' }).success, false);
  });

  test('error, message, metric, artifact, summary and modification constraints', () => {
    assert.match(failure(PrepareResultSchema, { state: {}, error: { title: 'x', status: 'broken' } }).first, /^error\.status: Invalid option/);
    assert.match(failure(PrepareResultSchema, { state: {}, messages: [{ message: 'm', level: 'fatal' }] }).first, /^messages\[0\]\.level: /);
    assert.match(failure(PrepareResultSchema, { state: {}, messages: [{ level: 'info' }] }).first, /^messages\[0\]\.message: /);
    assert.match(failure(PrepareResultSchema, { state: {}, messages: [{ message: 'm', fields: { n: 1 } }] }).first, /^messages\[0\]\.fields\.n: /);
    assert.match(failure(MetricSchema, { timestamp: now, metric: {}, value: Number.NaN }).first, /^value: /);
    assert.match(failure(MetricSchema, { timestamp: now, metric: {}, value: Number.POSITIVE_INFINITY }).first, /^value: /);
    assert.match(failure(MetricSchema, { timestamp: now, metric: {}, value: '1' }).first, /^value: /);
    assert.match(failure(MetricSchema, { timestamp: 'now', metric: {}, value: 1 }).first, /^timestamp: /);
    assert.match(failure(MetricSchema, { timestamp: now, value: 1 }).first, /^metric: /);
    assert.match(failure(ArtifactSchema, { label: 'l'.repeat(257), data: '' }).first, /^label: Too big: expected string to have <=256 characters/);
    assert.match(failure(SummarySchema, { text: 't'.repeat(513), level: 'info' }).first, /^text: Too big/);
    assert.match(failure(SummarySchema, { text: 't', level: 'error' }).first, /^level: /);
    assert.match(failure(ExecutionModificationSchema, { type: 'set_property_value', propertyKey: 'k'.repeat(65), value: 1 }).first, /^propertyKey: Too big/);
    assert.match(failure(ExecutionModificationSchema, { type: 'set_property_value', propertyKey: 'k' }).first, /^value: /);
    assert.match(failure(ExecutionModificationSchema, { type: 'remove', propertyKey: 'k', value: 1 }).first, /^type: /);
  });
});

describe('spec schemas: limits', () => {
  test('parameter limits: acceptedFileTypes, durationUnits, options uniqueness', () => {
    const base = { name: 'p', label: 'P', type: 'file' };
    assert.equal(ActionParameterSchema.safeParse({ ...base, acceptedFileTypes: Array.from({ length: 32 }, (_, i) => `.t${i}`) }).success, true);
    assert.match(failure(ActionParameterSchema, { ...base, acceptedFileTypes: Array.from({ length: 33 }, (_, i) => `.t${i}`) }).first, /^acceptedFileTypes: Too big: expected array to have <=32 items/);
    assert.match(failure(ActionParameterSchema, { ...base, acceptedFileTypes: ['.a', '.a'] }).first, /^acceptedFileTypes\[1\]: Duplicate item/);
    assert.match(failure(ActionParameterSchema, { ...base, acceptedFileTypes: ['x'.repeat(129)] }).first, /^acceptedFileTypes\[0\]: Too big/);
    assert.match(failure(ActionParameterSchema, { ...base, type: 'duration', durationUnits: ['seconds', 'seconds'] }).first, /^durationUnits\[1\]: Duplicate item/);
    assert.match(failure(ActionParameterSchema, { ...base, type: 'duration', durationUnits: ['weeks'] }).first, /^durationUnits\[0\]: Invalid option/);
    // JSON-Schema equality ignores key order.
    assert.match(
      failure(ActionParameterSchema, { ...base, type: 'string', options: [{ label: 'a', value: 'b' }, { value: 'b', label: 'a' }] }).first,
      /^options\[1\]: Duplicate item: equal to item \[0\]/,
    );
    assert.match(failure(ActionParameterSchema, { ...base, minValue: 1.5 }).first, /^minValue: /);
  });

  test('a parameter option that matches no variant explains both', () => {
    const { first } = failure(ActionParameterSchema, { name: 'p', label: 'P', type: 'string', options: [{ label: 1 }] });
    assert.match(first, /^options\[0\]: Invalid input: matches none of the variants \(options\[0\]\.label: .* \| options\[0\]\.attribute: .*\)$/);
  });

  test('target selection limits', () => {
    assert.match(failure(TargetSelectionSchema, { targetType: 't', targetQuery: 'q'.repeat(1025) }).first, /^targetQuery: Too big/);
    assert.match(failure(TargetSelectionSchema, { targetType: 't', selectionTemplates: [{ label: 'l'.repeat(129), query: 'q' }] }).first, /^selectionTemplates\[0\]\.label: /);
    assert.match(failure(TargetSelectionSchema, { targetType: 't', quantityRestriction: 'some' }).first, /^quantityRestriction: /);
    assert.match(failure(TargetSelectionSchema, { targetType: 't', defaultBlastRadius: { mode: 'percentage', value: 0.5 } }).first, /^defaultBlastRadius\.value: /);
    assert.match(failure(TargetSelectionSchema, {}).first, /^targetType: /);
  });

  test('action list: GET references with absolute paths, unique', () => {
    assert.equal(ActionListSchema.safeParse({ actions: [] }).success, true);
    assert.equal(ActionListSchema.safeParse({ actions: [{ method: 'GET', path: '/a' }] }).success, true);
    assert.match(failure(ActionListSchema, { actions: null }).first, /^actions: /);
    assert.match(failure(ActionListSchema, { actions: [{ method: 'POST', path: '/a' }] }).first, /^actions\[0\]\.method: /);
    assert.match(failure(ActionListSchema, { actions: [{ method: 'GET', path: 'a' }] }).first, /^actions\[0\]\.path: /);
    assert.match(failure(ActionListSchema, { actions: [{ method: 'GET', path: '/a' }, { path: '/a', method: 'GET' }] }).first, /^actions\[1\]: Duplicate/);
  });

  test('the spec description schema requires prepare/start with uppercase methods', () => {
    const d = normalizeDescription(minimal(), STOP);
    assert.equal(ActionDescriptionSchema.safeParse(d).success, true);
    const { prepare: _prepare, ...withoutPrepare } = d;
    assert.match(failure(ActionDescriptionSchema, withoutPrepare).first, /^prepare: /);
    assert.match(failure(ActionDescriptionSchema, { ...d, start: { path: '/s', method: 'post' } }).first, /^start\.method: /);
    assert.match(failure(ActionDescriptionSchema, { ...d, status: { path: '/s', method: 'POST', callInterval: '1m30s' } }).first, /^status\.callInterval: /);
  });
});

describe('formatZodIssues', () => {
  test('renders path.to.field with [i] indices; first and all', () => {
    const { first, all } = failure(ActionDescriptionSchema.pick({ parameters: true }), {
      parameters: [
        { name: 'ok', label: 'L', type: 'string' },
        { name: 'n'.repeat(256), label: 'L', type: 'nope' },
      ],
    });
    assert.equal(first, 'parameters[1].name: Too big: expected string to have <=255 characters');
    assert.equal(all, `${first}; parameters[1].type: Invalid option: expected one of ${ALL_PARAMETER_TYPES.map((t) => JSON.stringify(t)).join('|')}`);
  });
});

describe('parseDurationMs', () => {
  const table: Array<[string, number]> = [
    ['0ms', 0],
    ['0ns', 0],
    ['1ns', 1],
    ['999999ns', 1],
    ['1000000ns', 1],
    ['1000001ns', 2],
    ['250ms', 250],
    ['5s', 5_000],
    ['15s', 15_000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    ['007s', 7_000],
  ];
  for (const [text, ms] of table) {
    test(`${text} → ${ms} ms`, () => assert.equal(parseDurationMs(text), ms));
  }
  for (const bad of ['', 's', '5', '1.5s', '-1s', '+1s', ' 5s', '5s ', '1m30s', '5S', '10us', '1w', '5 s', '99999999999999999999d']) {
    test(`rejects ${JSON.stringify(bad)}`, () => assert.throws(() => parseDurationMs(bad), RangeError));
  }
  test('rejects non-strings at run time', () => {
    assert.throws(() => parseDurationMs(5 as unknown as string), RangeError);
  });
});
