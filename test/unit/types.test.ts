/**
 * Compile-time checks of the public types: the build (`tsc`, strict) compiles this file, and
 * every `@ts-expect-error` line must be an error — one that stops being an error fails the build.
 * Nothing here runs but the last test; the checks live in functions that are never called.
 *
 * - State is JSON: a state holding a Date, Set, Map, function, class instance with methods, Buffer,
 *   bigint or undefined in an array does not compile; interfaces, optional members and tuples do.
 * - Body results are typed by the body's context: status and stop read them with that type.
 * - The testing API is typed by the action definition: config as the schema's input, state as
 *   the action's state; the forms by module and by id stay untyped.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineAction, z, type ActionDescriptionInput, type BodyContext, type Json, type JsonObject } from '../../src/action.js';
import { AgentClient, createActionHarness, runAction, type ConfigOf, type StateOf } from '../../src/testing/index.js';
import type primeCount from '../fixtures/prime-count.js';
import type { Tally } from '../fixtures/prime-count.js';

const description: ActionDescriptionInput = {
  id: 'types.check',
  label: 'Types',
  version: '1.0.0',
  description: 'Compile-time checks',
  kind: 'other',
  timeControl: 'external',
  parameters: [],
};

class WithMethods {
  x = 1;
  twice(): number {
    return this.x * 2;
  }
}

interface PlainState {
  name: string;
  count?: number;
  tags: readonly string[];
  pair: [number, string];
  nested: { at: string | null };
}

/** States that are JSON compile; those that are not do not, whatever the member's depth. */
export function jsonStates(): void {
  const plain: PlainState = { name: 'x', tags: [], pair: [1, 'a'], nested: { at: null } };
  defineAction({ description, prepare: () => ({ state: plain }) });
  defineAction({ description, prepare: () => ({ state: { a: 1, b: 'x', c: [true, null], d: { e: [{ f: 1.5 }] }, maybe: undefined as string | undefined } }) });

  // @ts-expect-error Date is not JSON
  defineAction({ description, prepare: () => ({ state: { when: new Date() } }) });
  // @ts-expect-error Set is not JSON
  defineAction({ description, prepare: () => ({ state: { ids: new Set<string>() } }) });
  // @ts-expect-error Map is not JSON
  defineAction({ description, prepare: () => ({ state: { byId: new Map<string, number>() } }) });
  // @ts-expect-error a function is not JSON
  defineAction({ description, prepare: () => ({ state: { fn: () => 1 } }) });
  // @ts-expect-error a class instance with methods is not JSON
  defineAction({ description, prepare: () => ({ state: { obj: new WithMethods() } }) });
  // @ts-expect-error a Buffer is not JSON
  defineAction({ description, prepare: () => ({ state: { buf: Buffer.from('x') } }) });
  // @ts-expect-error a bigint is not JSON
  defineAction({ description, prepare: () => ({ state: { big: 1n } }) });
  // @ts-expect-error undefined in an array is not JSON
  defineAction({ description, prepare: () => ({ state: { list: [1, undefined] } }) });
  // @ts-expect-error unknown is not known to be JSON
  defineAction({ description, prepare: () => ({ state: { anything: JSON.parse('1') as unknown } }) });
  // @ts-expect-error deep down, still not JSON
  defineAction({ description, prepare: async () => ({ state: { deep: { items: [{ when: new Date() }] } } }) });

  defineAction({
    description,
    prepare: () => ({ state: { when: '2024-01-01T00:00:00Z', count: 0 } }),
    start(state) {
      // @ts-expect-error the state's member is a string: a Date does not go in
      state.when = new Date();
      state.count++;
    },
  });
  defineAction({
    description,
    prepare: () => ({ state: {} as JsonObject }),
    start(state) {
      state['fine'] = [1, { two: 'three' }];
      // @ts-expect-error a JsonObject holds JSON only
      state['date'] = new Date();
    },
  });
}

/** A body's result is typed by its context; status and stop read it with that type. */
export function bodyResults(): void {
  defineAction({
    description,
    prepare: () => ({ state: { limit: 10 } }),
    body(state, ctx: BodyContext<Tally>) {
      ctx.publish({ limit: state.limit, checked: 0, primes: 0, largest: null, done: false });
      // @ts-expect-error primes is a number
      ctx.publish({ limit: state.limit, checked: 0, primes: 'none', largest: null, done: false });
    },
    status(_state, ctx) {
      const primes: number | undefined = ctx.body.result?.primes;
      // @ts-expect-error the result may be absent, and is a Tally when present
      const wrong: string = ctx.body.result?.primes;
      return { completed: primes !== undefined && wrong !== '' };
    },
    stop(_state, ctx) {
      const done: boolean | undefined = ctx.body.result?.done;
      void done;
    },
  });
  defineAction({
    description,
    prepare: () => ({ state: {} }),
    body(_state, ctx) {
      ctx.publish({ any: ['JSON', 1, null] });
      // @ts-expect-error without a type, a result is any JSON, and a Date is not
      ctx.publish(new Date());
    },
    status(_state, ctx) {
      const result: Json | undefined = ctx.body.result;
      return { completed: result === null };
    },
  });
  // The fixture's types come through its definition too.
  const tally: Tally | undefined = undefined as StatusResultOf<typeof primeCount>;
  void tally;
}

type StatusResultOf<A> = A extends { status?(state: never, ctx: infer X): unknown } ? (X extends { body: { result?: infer R } } ? R | undefined : never) : never;

/** The testing API, typed by the definition. */
export async function typedTesting(): Promise<void> {
  const action = defineAction({
    description,
    config: z.object({ duration: z.number().int(), load: z.number().default(100), note: z.string().optional() }),
    prepare: ({ config }) => ({ state: { load: config.load, startedAt: 0 } }),
    start(state) {
      state.startedAt = Date.now();
    },
  });
  const config: ConfigOf<typeof action> = { duration: 1000, note: null };
  const state: StateOf<typeof action> = { load: 1, startedAt: 0 };
  void config;
  void state;

  const harness = await createActionHarness(action);
  const executionId = 'f6d4c1c0-0000-4000-8000-000000000000';
  // @ts-expect-error the schema expects a number
  await harness.prepare({ executionId, config: { duration: 'not a number' } });
  // @ts-expect-error duration is required
  await harness.prepare({ executionId, config: { load: 50 } });
  const prepared = await harness.prepare({ executionId, config: { duration: 1000 } });
  const load: number = prepared.result.state.load;
  // @ts-expect-error the state has no such member
  void prepared.result.state.nope;
  await harness.start({ executionId, state: prepared.result.state });
  // @ts-expect-error a state of another shape
  await harness.start({ executionId, state: { load: 'high' } });

  const run = await harness.run({ config: { duration: 500, load } });
  const startedAt: number | undefined = run.state?.startedAt;
  void startedAt;
  // @ts-expect-error config is typed in runs too
  await harness.run({ config: { duration: '500ms' } });
  // @ts-expect-error and in runAction
  await runAction(action, { config: { duration: true } });
  const ran = await runAction(action, { config: { duration: 10 } });
  const ranLoad: number | undefined = ran.state?.load;
  void ranLoad;

  const client = new AgentClient({ baseUrl: 'http://127.0.0.1:1' });
  // @ts-expect-error the client's run is typed by the definition
  await client.run(action, { config: { duration: 'soon' } });
  const overHttp = await client.run(action, { config: { duration: 10 } });
  const httpLoad: number | undefined = overHttp.state?.load;
  void httpLoad;
  const endpoints = await client.endpointsOf(action);
  // @ts-expect-error typed endpoints
  await endpoints.prepare({ executionId, config: {} });

  // The untyped forms take any JSON object.
  const byModule = await createActionHarness(new URL('./x.js', import.meta.url));
  await byModule.prepare({ executionId, config: { duration: 'anything goes' } });
  await client.run('types.check', { config: { duration: 'anything goes' } });
}

test('the type checks above compiled (they are checked by the build, not run)', () => {
  assert.equal(typeof jsonStates, 'function');
  assert.equal(typeof bodyResults, 'function');
  assert.equal(typeof typedTesting, 'function');
});
