/**
 * The JSON rule at run time (`src/json.ts`): every value that would not come back from
 * `JSON.parse(JSON.stringify(value))` unchanged is named with its path and what to store instead;
 * JSON values pass and give exactly `JSON.stringify`'s text.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assertJson, checkedJsonText, NotJsonError } from '../../src/json.js';

class Foo {
  x = 1;
}

function problem(value: unknown, root = 'state'): string {
  try {
    checkedJsonText(value, root);
  } catch (error) {
    assert.ok(error instanceof NotJsonError, String(error));
    assert.ok(error instanceof TypeError);
    return error.message;
  }
  assert.fail(`${JSON.stringify(value)} passed`);
}

describe('checkedJsonText', () => {
  test('JSON values pass and give JSON.stringify text, own __proto__ keys and null-prototype objects included', () => {
    const values: unknown[] = [
      {},
      { a: 1, b: 'x', c: [1, [2, { d: null }]], e: true, f: -0, g: 1e308 },
      JSON.parse('{"__proto__":{"x":1}}'),
      Object.assign(Object.create(null) as object, { a: 1 }),
      [],
      'text',
      null,
    ];
    for (const value of values) assert.equal(checkedJsonText(value, 'state'), JSON.stringify(value));
  });

  test('an undefined object member is dropped as JSON drops it; undefined itself gives undefined', () => {
    assert.equal(checkedJsonText({ a: undefined, b: 1 }, 'state'), '{"b":1}');
    assert.equal(checkedJsonText(undefined, 'state'), undefined);
  });

  const cases: Array<[string, unknown, string]> = [
    ['Date', { when: new Date() }, 'state.when: Date is not JSON; store an ISO string'],
    ['Set', { ids: new Set() }, 'state.ids: Set is not JSON; store an array'],
    ['Map', { m: new Map() }, 'state.m: Map is not JSON; store an object or an array of entries'],
    ['NaN', { ratio: Number.NaN }, 'state.ratio: NaN is not JSON'],
    ['-Infinity', { r: Number.NEGATIVE_INFINITY }, 'state.r: -Infinity is not JSON'],
    ['Buffer', { buf: Buffer.from('x') }, 'state.buf: Buffer is not JSON; store base64'],
    ['Uint8Array', { bytes: new Uint8Array(2) }, 'state.bytes: Uint8Array is not JSON; store base64 or an array of numbers'],
    ['ArrayBuffer', { raw: new ArrayBuffer(2) }, 'state.raw: ArrayBuffer is not JSON; store base64'],
    ['function', { fn: () => 1 }, 'state.fn: a function is not JSON'],
    ['class instance', { obj: new Foo() }, 'state.obj: class Foo is not JSON; store its fields'],
    ['anonymous class instance', { obj: new (class {})() }, 'state.obj: an object with a prototype is not JSON; store its fields'],
    ['bigint', { n: 1n }, 'state.n: a bigint is not JSON; store a string'],
    ['symbol', { s: Symbol('x') }, 'state.s: a symbol is not JSON'],
    ['RegExp', { re: /x/ }, 'state.re: RegExp is not JSON; store its source'],
    ['Error', { err: new RangeError('x') }, 'state.err: RangeError is not JSON; store its message'],
    ['Promise', { p: Promise.resolve(1) }, 'state.p: a Promise is not JSON; await it'],
    ['boxed string', { s: new String('x') }, 'state.s: a String object is not JSON; store the primitive string'],
    ['undefined in an array', { list: [1, undefined] }, 'state.list[1]: undefined in an array is not JSON (it would come back as null)'],
    ['a hole in an array', { list: [1, , 3] }, 'state.list[1]: undefined in an array is not JSON (it would come back as null)'],
    ['a deep path with odd keys', { a: [{ 'b c': { '': [new Date()] } }] }, 'state.a[0]["b c"][""][0]: Date is not JSON; store an ISO string'],
    ['a value that is not JSON at the root', new Date(), 'state: Date is not JSON; store an ISO string'],
  ];
  for (const [label, value, message] of cases) {
    test(`${label}: named with its path`, () => {
      assert.equal(problem(value), message);
    });
  }

  test('a cycle is named where it closes', () => {
    const loop: Record<string, unknown> = { a: { b: {} } };
    (loop['a'] as { b: Record<string, unknown> }).b['back'] = loop;
    assert.equal(problem(loop), 'state.a.b.back: a circular reference is not JSON');
  });

  test('a value met twice (not a cycle) is fine', () => {
    const shared = { x: 1 };
    assert.equal(checkedJsonText({ a: shared, b: [shared, shared] }, 'state'), '{"a":{"x":1},"b":[{"x":1},{"x":1}]}');
  });

  test('the first problem is reported, and with an empty root the path starts at the first key', () => {
    assert.throws(() => assertJson({ metrics: [{ value: Number.NaN }], when: new Date() }, ''), { message: 'metrics[0].value: NaN is not JSON' });
    assert.throws(() => assertJson(Number.NaN, ''), { message: 'the value: NaN is not JSON' });
  });

  test('a state nested 1,000 levels deep is checked; 30,000 levels are refused as not JSON, without a stack overflow', () => {
    const nest = (levels: number): unknown => {
      let deep: unknown = 'bottom';
      for (let i = 0; i < levels; i++) deep = i % 2 === 0 ? [deep] : { d: deep };
      return deep;
    };
    const fits = nest(1_000);
    assert.equal(checkedJsonText({ deep: fits }, 'state'), JSON.stringify({ deep: fits }));
    assert.throws(() => checkedJsonText({ deep: nest(30_000) }, 'state'), (error: Error) => error instanceof NotJsonError && /nesting deeper than 1024 levels is not JSON/.test(error.message));
  });
});
