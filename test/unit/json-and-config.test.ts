/**
 * The JSON check (`src/json.ts`) against what JSON.stringify / JSON.parse really do, and the
 * start-up config/parameter cross-check against valid actions it must not refuse (found by review).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { defineAction, z, type ActionDescriptionInput } from '../../src/action.js';
import { assertJson, NotJsonError } from '../../src/json.js';
import { ActionRegistry } from '../../src/runtime/registry.js';

/** Deep equality that JSON must preserve: same own enumerable string keys (arrays included), Object.is on leaves. */
function same(a: unknown, b: unknown): boolean {
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return Object.is(a, b);
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keysA = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const keysB = Object.keys(b);
  if (keysA.length !== keysB.length) return false;
  return keysA.every((k) => Object.hasOwn(b, k) && same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

function nest(depth: number): unknown {
  let value: unknown = {};
  for (let i = 0; i < depth; i++) value = { a: value };
  return value;
}

describe('the JSON check passes only what JSON returns unchanged', () => {
  const hiddenToJson = { value: 1 };
  Object.defineProperty(hiddenToJson, 'toJSON', { value: () => 'replaced', enumerable: false });
  const cases: Array<[string, unknown]> = [
    ['a RegExp match array (index, input, groups)', /(\d+)/.exec('id 42')],
    ['an array with an own toJSON', Object.assign([1, 2], { toJSON: () => 'replaced' })],
    ['a plain object with a non-enumerable toJSON', hiddenToJson],
  ];
  for (const [what, value] of cases) {
    test(what, () => {
      let refused = false;
      try {
        assertJson({ value }, 'state');
      } catch (error) {
        assert.ok(error instanceof NotJsonError, String(error));
        refused = true;
      }
      if (!refused) {
        const back = JSON.parse(JSON.stringify({ value })) as { value: unknown };
        assert.ok(same(value, back.value), `accepted, but JSON gives back ${JSON.stringify(back.value)}`);
      }
    });
  }

  test('a value nested deeper than the stack is refused with a NotJsonError, not a RangeError (handler threads)', () => {
    assert.throws(() => assertJson({ deep: nest(30_000) }, 'state'), NotJsonError);
  });
});

describe('the config cross-check accepts valid actions', () => {
  function register(parameters: ActionDescriptionInput['parameters'], config: z.ZodType): void {
    const action = defineAction({
      description: { id: 'com.example.config-check', label: 'Config check', version: '1.0.0', description: 'x', kind: 'attack', timeControl: 'internal', parameters, status: { callInterval: '1s' } },
      config,
      prepare: () => ({ state: {} }),
      status: () => ({ completed: false }),
      stop: () => undefined,
    });
    new ActionRegistry().register([action as never], 5_000);
  }

  test('key_value whose values are numbers in text (coerced): the agent sends [{"key":"a","value":"5"}], which parses', () => {
    const schema = z.object({ weights: z.array(z.object({ key: z.string(), value: z.coerce.number() })) });
    assert.equal(schema.safeParse({ weights: [{ key: 'eu', value: '5' }] }).success, true, 'what the agent sends is taken');
    register([{ name: 'weights', label: 'Weights', type: 'key_value', required: true }], schema);
  });

  test('a required JSON textarea parsed by a transform: valid JSON text parses', () => {
    const schema = z.object({ headers: z.string().transform((text) => JSON.parse(text) as unknown).pipe(z.record(z.string(), z.string())) });
    assert.equal(schema.safeParse({ headers: '{"Accept":"text/plain"}' }).success, true, 'what the agent sends is taken');
    register([{ name: 'headers', label: 'Headers (JSON)', type: 'textarea', required: true }], schema);
  });

  test('a strict union of optional parameter groups: the agent sends null for the empty group and prepare drops nulls', () => {
    const schema = z.union([z.strictObject({ cpuLoad: z.number() }), z.strictObject({ memoryMb: z.number() })]);
    // What prepare parses when the user filled in only the CPU group (`withoutNulls` in workers/handlers.ts):
    assert.equal(schema.safeParse({ cpuLoad: 50 }).success, true);
    register(
      [
        { name: 'cpuLoad', label: 'CPU load', type: 'percentage' },
        { name: 'memoryMb', label: 'Memory', type: 'integer' },
      ],
      schema,
    );
  });
});
