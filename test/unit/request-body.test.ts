/**
 * The start/status/stop body accepted without zod (`src/api/request-body.ts`,
 * `acceptedStateRequest`) gives the answers the schema gives: the same value for every body the
 * schema accepts, a 400 for every body it refuses. Bodies are generated from a seeded random mix
 * of right and wrong parts, sent through JSON text as the agent's are.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validateBody } from '../../src/api/request-body.js';
import { ActionStatusRequestBodySchema, StartActionRequestBodySchema, StopActionRequestBodySchema } from '../../src/api/schemas.js';
import { RuntimeError } from '../../src/errors.js';
import { mulberry32, type Rng } from '../stress/stress-support.js';

const SEED = Number(process.env['TEST_SEED'] ?? 20261130);

const EXECUTION_IDS: unknown[] = [
  '3f0c8c55-2b0e-4c1f-9a0e-1e5d1b7f0a11',
  '3F0C8C55-2B0E-4C1F-9A0E-1E5D1B7F0A11',
  '00000000-0000-0000-0000-000000000000',
  '3f0c8c55-2b0e-4c1f-9a0e-1e5d1b7f0a1', // one digit short
  '3f0c8c55-2b0e-4c1f-9a0e-1e5d1b7f0a111', // one too many
  '3f0c8c552b0e4c1f9a0e1e5d1b7f0a11', // no dashes
  '3f0c8c55-2b0e-4c1f-9a0e-1e5d1b7f0a1g', // not hex
  '{3f0c8c55-2b0e-4c1f-9a0e-1e5d1b7f0a11}',
  ' 3f0c8c55-2b0e-4c1f-9a0e-1e5d1b7f0a11',
  '3f0c8c55-2b0e-4c1f-9a0e-1e5d1b7f0a11\n',
  '',
  42,
  null,
  true,
  ['3f0c8c55-2b0e-4c1f-9a0e-1e5d1b7f0a11'],
  { id: '3f0c8c55-2b0e-4c1f-9a0e-1e5d1b7f0a11' },
];
const STATES: unknown[] = [{}, { burn: true, dutyPct: 100 }, { nested: { list: [1, 'two', null] } }, null, [], [{}], 'state', 0, false];
/** Further keys, as [key, value] pairs: `__proto__` becomes an own key of the parsed body, as the agent's JSON can make it. */
const EXTRAS: [string, unknown][][] = [[], [['extra', 1]], [['__proto__', { polluted: true }]], [['constructor', 'x'], ['toString', null]]];

/** A body as JSON text: mostly objects with right and wrong `executionId`s and `state`s, keys in either order. */
function randomBody(rng: Rng): string {
  if (rng.chance(0.05)) return JSON.stringify(rng.pick([null, [], 'body', 7, [{ executionId: EXECUTION_IDS[0], state: {} }]]));
  const fields: [string, unknown][] = [];
  // Half the time one of the right ones (the first three of each list), else any.
  if (!rng.chance(0.1)) fields.push(['executionId', rng.pick(rng.chance(0.5) ? EXECUTION_IDS.slice(0, 3) : EXECUTION_IDS)]);
  if (!rng.chance(0.1)) fields.push(['state', rng.pick(rng.chance(0.5) ? STATES.slice(0, 3) : STATES)]);
  fields.push(...rng.pick(EXTRAS));
  if (rng.chance(0.5)) fields.reverse();
  return `{${fields.map(([key, value]) => `${JSON.stringify(key)}:${JSON.stringify(value)}`).join(',')}}`;
}

test('start, status and stop bodies: the fast acceptance and the schema agree on 20,000 seeded random bodies', () => {
  const rng = mulberry32(SEED);
  const schemas = [StartActionRequestBodySchema, ActionStatusRequestBodySchema, StopActionRequestBodySchema];
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    const text = randomBody(rng);
    const schema = schemas[i % schemas.length]!;
    const expected = schema.safeParse(JSON.parse(text));
    let actual: unknown;
    try {
      actual = validateBody(JSON.parse(text), schema);
    } catch (error) {
      assert.ok(error instanceof RuntimeError, `${text}: ${String(error)}`);
      assert.equal(expected.success, false, `${text} refused (${error.detail ?? error.message}), the schema accepts it`);
      assert.equal(error.httpStatus, 400);
      continue;
    }
    assert.equal(expected.success, true, `${text} accepted, the schema refuses it (seed ${SEED})`);
    assert.deepStrictEqual(actual, expected.data, `${text} (seed ${SEED})`);
    assert.equal(Object.getPrototypeOf(actual), Object.prototype, `${text}: a plain object`);
    accepted++;
  }
  // Both kinds were exercised: a mix that only refused (or only accepted) would prove nothing.
  assert.ok(accepted > 2_000 && accepted < 18_000, `${accepted} of 20,000 accepted`);
});
