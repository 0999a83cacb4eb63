/**
 * Unit tests of the start-up checks of what an author wrote: fields the spec does not have
 * (`assertKnownFields`, and the exact description type that makes them compile errors) and the
 * cross-check of the `config` schema against the declared parameters
 * (`src/runtime/config-check.ts`), also through the registry.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { defineAction, z, type ActionDescriptionInput } from '../../src/action.js';
import { assertKnownFields, normalizeDescription, RegistrationError, type ImplementedHandlers } from '../../src/api/description.js';
import type { ActionParameter } from '../../src/api/schemas.js';
import { checkConfigFitsParameters } from '../../src/runtime/config-check.js';
import { ActionRegistry } from '../../src/runtime/registry.js';

const ID = 'com.example.checked';
const NONE: ImplementedHandlers = { status: false, stop: false, query: false, body: false };

/** A description using most nested objects of the spec, each field spelt right. */
function broad(): ActionDescriptionInput {
  return {
    id: ID,
    label: 'Checked',
    version: '1.0.0',
    description: 'Uses most fields of the spec',
    kind: 'check',
    category: 'network',
    technology: 'Node.js',
    icon: 'data:image/svg+xml;base64,PHN2Zy8+',
    targetSelection: { targetType: 'host', selectionTemplates: [{ label: 'All', query: 'host.hostname=*' }], defaultBlastRadius: { mode: 'maximum', value: 1 } },
    timeControl: 'internal',
    parameters: [
      { name: 'mode', label: 'Mode', type: 'string', options: [{ label: 'Fast', value: 'fast' }, { attribute: 'host.hostname' }], hint: { type: 'hint_info', content: 'x' } },
      { name: 'wait', label: 'Wait', type: 'duration', minValue: 0, durationUnits: ['seconds'] },
    ],
    widgets: [
      { type: 'com.steadybit.widget.log', title: 'Log', logType: 'RESPONSES' },
      {
        type: 'com.steadybit.widget.line_chart',
        title: 'Latency',
        identity: { metricName: 'latency', from: 'url', mode: 'com.steadybit.widget.line_chart.identity_mode.widget-per-value' },
        grouping: { showSummary: true, groups: [{ title: 'ok', color: 'success', matcher: { type: 'com.steadybit.widget.line_chart.group_matcher_fallback' } }] },
      },
    ],
    metrics: { query: { endpoint: { callInterval: '1s' }, parameters: [{ name: 'threshold', label: 'Threshold', type: 'integer' }] } },
    status: { callInterval: '2s' },
  };
}

/** `broad()` with `change` applied to a JSON copy (so tests can add what the type forbids). */
function broadWith(change: (description: Record<string, any>) => void): unknown {
  const description = JSON.parse(JSON.stringify(broad())) as Record<string, any>;
  change(description);
  return description;
}

function expectRefusal(run: () => void, field: string | undefined, message: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof RegistrationError, String(error));
    assert.equal(error.field, field);
    assert.match(error.message, message);
    return true;
  });
}

describe('unknown description fields', () => {
  test('a description with every field spelt right passes, and is what normalizeDescription takes', () => {
    assertKnownFields(broad());
    assert.equal(normalizeDescription(broad(), { ...NONE, status: true, query: true }).id, ID);
  });

  test('a misspelt top-level field is refused, naming the action, the field and what it probably means', () => {
    expectRefusal(
      () => assertKnownFields(broadWith((d) => (d['categroy'] = 'network'))),
      'categroy',
      /^Action "com\.example\.checked": unknown field "categroy" \(did you mean "category"\?\): the ActionKit spec has no such field$/,
    );
    expectRefusal(() => assertKnownFields(broadWith((d) => (d['icn'] = 'data:,'))), 'icn', /unknown field "icn" \(did you mean "icon"\?\)/);
  });

  test('misspelt fields inside parameters, options, hints, endpoints, target selection and widgets are refused with their path', () => {
    // [path, change, the guess expected (undefined: whatever is closest)]
    const cases: Array<[string, (d: Record<string, any>) => void, RegExp | undefined]> = [
      ['parameters[1].requried', (d) => (d['parameters'][1]['requried'] = true), /did you mean "required"/],
      ['parameters[0].options[0].valeu', (d) => (d['parameters'][0]['options'][0]['valeu'] = 'x'), /did you mean "value"/],
      ['parameters[0].hint.contnet', (d) => (d['parameters'][0]['hint']['contnet'] = 'y'), /did you mean "content"/],
      ['status.callIntervall', (d) => (d['status']['callIntervall'] = '1s'), /did you mean "callInterval"/],
      ['targetSelection.defaultBlastRadius.mdoe', (d) => (d['targetSelection']['defaultBlastRadius']['mdoe'] = 'x'), /did you mean "mode"/],
      ['widgets[0].logtype', (d) => (d['widgets'][0]['logtype'] = 'x'), /did you mean "logType"/],
      ['widgets[1].grouping.showSumary', (d) => (d['widgets'][1]['grouping']['showSumary'] = true), /did you mean "showSummary"/],
      ['widgets[1].grouping.groups[0].matcher.key', (d) => (d['widgets'][1]['grouping']['groups'][0]['matcher']['key'] = 'k'), undefined], // a fallback matcher has no key
      ['metrics.query.parameters[0].lable', (d) => (d['metrics']['query']['parameters'][0]['lable'] = 'T'), /did you mean "label"/],
    ];
    for (const [path, change, suggestion] of cases) {
      expectRefusal(() => assertKnownFields(broadWith(change)), path, new RegExp(`unknown field ${JSON.stringify(path).replace(/[.[\]]/g, '\\$&')}`));
      if (suggestion !== undefined) assert.throws(() => assertKnownFields(broadWith(change)), suggestion);
    }
  });

  test('every unknown field is named in one message; one far from every known field gets no guess', () => {
    expectRefusal(
      () => assertKnownFields(broadWith((d) => Object.assign(d, { categroy: 'x', somethingElse: 1 }))),
      'categroy',
      /unknown field "categroy" \(did you mean "category"\?\); unknown field "somethingElse": the ActionKit spec has no such fields$/,
    );
  });

  test('an unknown field whose value JSON drops never reaches the agent and is not refused', () => {
    assertKnownFields({ ...broad(), icn: undefined });
  });

  test('the registry refuses an action with an unknown field at start-up', () => {
    const action = defineAction({ description: broadWith((d) => (d['categroy'] = 'x')) as ActionDescriptionInput, prepare: () => ({ state: {} }), status: () => ({ completed: true }), query: () => ({}) });
    expectRefusal(() => new ActionRegistry().register([action], 5_000), 'categroy', /^Action "com\.example\.checked": unknown field "categroy"/);
  });

  test('a misspelt field in a description literal is a compile error (checked by building these tests)', () => {
    const topLevel = defineAction({
      description: {
        id: 'com.example.typo',
        label: 'Typo',
        version: '1.0.0',
        description: 'A misspelt field',
        kind: 'other',
        timeControl: 'instantaneous',
        // @ts-expect-error -- `categroy` is not a field of the spec
        categroy: 'x',
        parameters: [],
      },
      prepare: () => ({ state: {} }),
    });
    expectRefusal(() => new ActionRegistry().register([topLevel], 5_000), 'categroy', /unknown field "categroy"/);

    const nested = defineAction({
      description: {
        id: 'com.example.typo',
        label: 'Typo',
        version: '1.0.0',
        description: 'A misspelt parameter field',
        kind: 'other',
        timeControl: 'instantaneous',
        parameters: [
          {
            name: 'mode',
            label: 'Mode',
            type: 'string',
            // @ts-expect-error -- `requried` is not a field of ActionParameter
            requried: true,
          },
        ],
      },
      prepare: () => ({ state: {} }),
    });
    expectRefusal(() => new ActionRegistry().register([nested], 5_000), 'parameters[0].requried', /unknown field "parameters\[0\]\.requried" \(did you mean "required"\?\)/);
  });
});

// -----------------------------------------------------------------------------------------------

/** A normalised description with these parameters. */
function withParameters(...parameters: ActionParameter[]) {
  return normalizeDescription(
    { id: ID, label: 'Checked', version: '1.0.0', description: 'x', kind: 'attack', timeControl: 'external', parameters },
    { ...NONE, stop: true },
  );
}

const DURATION: ActionParameter = { name: 'duration', label: 'Duration', type: 'duration', defaultValue: '30s', required: true };

function param(name: string, type: ActionParameter['type'], extra: Partial<ActionParameter> = {}): ActionParameter {
  return { name, label: name, type, ...extra };
}

describe('config schema against the declared parameters', () => {
  test('schemas that take what the agent sends pass', () => {
    const fitting: Array<[ActionParameter, z.ZodType]> = [
      [param('n', 'integer'), z.number().int().min(5)],
      [param('p', 'percentage', { minValue: 1, maxValue: 100 }), z.number().min(1).max(100)],
      [param('w', 'stressng-workers'), z.number().int().nonnegative()],
      [param('on', 'boolean'), z.boolean()],
      [param('s', 'string'), z.string().min(20)],
      [param('u', 'url'), z.url()],
      [param('t', 'textarea'), z.string()],
      [param('r', 'regex'), z.string()],
      [param('b', 'bitrate'), z.string()],
      [param('m', 'string', { options: [{ label: 'GET', value: 'GET' }] }), z.enum(['GET', 'POST'])],
      [param('m2', 'string'), z.union([z.literal('a'), z.literal('b')])],
      [param('numeric', 'string', { defaultValue: '42' }), z.coerce.number()],
      [param('numeric2', 'string'), z.coerce.number()],
      [param('tags', 'string[]'), z.array(z.string()).min(1)],
      [param('tags2', 'string_array'), z.array(z.enum(['a', 'b']))],
      [param('kv', 'key_value'), z.array(z.object({ key: z.string(), value: z.string() }))],
      [param('f', 'file'), z.string()],
      [param('any', 'integer'), z.any()],
      [param('either', 'boolean'), z.union([z.string(), z.boolean()])],
      [param('sep', 'separator'), z.never().optional()],
    ];
    for (const [parameter, schema] of fitting) {
      const warnings = checkConfigFitsParameters(withParameters(DURATION, parameter), z.object({ duration: z.number().int().positive(), [parameter.name]: schema }));
      assert.deepEqual(warnings, [], `${parameter.type} with ${schema.def.type}`);
    }
  });

  test('the design example passes: keys without a parameter are fine when optional or defaulted', () => {
    const schema = z.object({ duration: z.number().int().positive(), load: z.number().min(1).max(100).default(100), note: z.string().optional() });
    assert.deepEqual(checkConfigFitsParameters(withParameters(DURATION), schema), []);
  });

  test('a schema wanting another type is refused, naming the action, the parameter, what the agent sends and what the schema expected', () => {
    expectRefusal(
      () => checkConfigFitsParameters(withParameters(DURATION), z.object({ duration: z.string() })),
      'parameters[0].type',
      /^Action "com\.example\.checked": parameters\[0\] "duration" is of type "duration", for which the agent sends a number of milliseconds \(e\.g\. 30000\), but the config schema refuses that at duration: Invalid input: expected string, received number$/,
    );
    const refused: Array<[ActionParameter, z.ZodType, RegExp]> = [
      [param('n', 'integer'), z.string(), /"n" is of type "integer", for which the agent sends a number \(e\.g\. 1\).*expected string, received number/],
      [param('p', 'percentage'), z.string(), /"p" is of type "percentage".*expected string/],
      [param('on', 'boolean'), z.enum(['yes', 'no']), /"on" is of type "boolean", for which the agent sends a boolean.*expected one of "yes"\|"no"/],
      [param('s', 'string'), z.number(), /"s" is of type "string", for which the agent sends a string \(e\.g\. "example"\).*expected number, received string/],
      [param('tags', 'string[]'), z.string(), /"tags" is of type "string\[\]", for which the agent sends an array of strings.*expected string, received array/],
      [param('tags', 'string_array'), z.array(z.number()), /at tags\[0\]: Invalid input: expected number, received string/],
      [param('kv', 'key_value'), z.record(z.string(), z.string()), /"kv" is of type "key_value".*expected record, received array/],
      [param('kv', 'key_value'), z.array(z.object({ name: z.string(), value: z.string() })), /at kv\[0\]\.name: Invalid input: expected string, received undefined/],
      [param('f', 'file'), z.number(), /"f" is of type "file", for which the agent sends the absolute path of the uploaded file/],
      [param('d', 'duration'), z.string().transform((text) => text.length), /"d" is of type "duration".*expected string, received number/],
      [param('u', 'integer'), z.union([z.string(), z.boolean()]), /no variant of the union accepts it \(Invalid input: expected string, received number \| Invalid input: expected boolean, received number\)/],
    ];
    for (const [parameter, schema, message] of refused) {
      expectRefusal(() => checkConfigFitsParameters(withParameters(DURATION, parameter), z.object({ duration: z.number(), [parameter.name]: schema })), 'parameters[1].type', message);
    }
  });

  test('the parameter default is tried first and named in the message', () => {
    expectRefusal(
      () => checkConfigFitsParameters(withParameters(DURATION, param('n', 'integer', { defaultValue: '7' })), z.object({ duration: z.number(), n: z.string() })),
      'parameters[1].type',
      /for which the agent sends a number \(e\.g\. 7\)/,
    );
  });

  test('a strict schema without a key for a declared parameter is refused', () => {
    expectRefusal(
      () => checkConfigFitsParameters(withParameters(DURATION, param('extra', 'string')), z.strictObject({ duration: z.number() })),
      'parameters[1].type',
      /"extra" is of type "string".*the schema does not accept the key "extra"/,
    );
  });

  test('a schema requiring a key that no parameter supplies gets a warning (a test may send it; the agent never does)', () => {
    const warnings = checkConfigFitsParameters(withParameters(DURATION, param('sep', 'separator')), z.object({ duration: z.number(), load: z.number(), sep: z.string() }));
    assert.deepEqual(warnings, [
      'Action "com.example.checked": the config schema requires "load" (Invalid input: expected number, received undefined), but no parameter of that name with a value is declared: ' +
        'the agent never sends it, so its prepares will fail (declare the parameter, or make the key optional with .optional() or .default(…))',
      'Action "com.example.checked": the config schema requires "sep" (Invalid input: expected string, received undefined), but no parameter of that name with a value is declared: ' +
        'the agent never sends it, so its prepares will fail (declare the parameter, or make the key optional with .optional() or .default(…))',
    ]);
    assert.deepEqual(checkConfigFitsParameters(withParameters(DURATION), z.object({ duration: z.number(), load: z.number().default(1) })), []);
  });

  test('a schema refusing every object is refused', () => {
    expectRefusal(() => checkConfigFitsParameters(withParameters(DURATION), z.array(z.string())), undefined, /refuses every config object.*expected array, received object/);
  });

  test('schemas that cannot be probed synchronously are left to prepare', () => {
    checkConfigFitsParameters(
      withParameters(DURATION),
      z.object({ duration: z.number() }).refine(async () => true),
    );
    checkConfigFitsParameters(
      withParameters(DURATION),
      z.object({ duration: z.number() }).transform(() => {
        throw new Error('throws on every value');
      }),
    );
  });

  test('refinements of the content (min, url, custom) are not type problems', () => {
    checkConfigFitsParameters(
      withParameters(DURATION, param('u', 'url')),
      z.object({ duration: z.number().min(10_000_000), u: z.url({ protocol: /^ftp$/ }) }).refine(() => false, 'never valid as a whole'),
    );
  });

  test('the registry refuses an action whose config schema does not fit its parameters (the issue\'s case)', () => {
    const action = defineAction({
      description: {
        id: ID,
        label: 'Load',
        version: '1.0.0',
        description: 'x',
        kind: 'attack',
        timeControl: 'external',
        parameters: [DURATION, param('requestsPerSecond', 'integer', { defaultValue: '10' })],
      },
      config: z.object({ duration: z.string(), requestsPerSecond: z.string() }),
      prepare: () => ({ state: {} }),
      stop: () => undefined,
    });
    expectRefusal(() => new ActionRegistry().register([action], 5_000), 'parameters[0].type', /^Action "com\.example\.checked": parameters\[0\] "duration" is of type "duration"/);
  });
});
