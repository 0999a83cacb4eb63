/**
 * The state size rule (`src/runtime/state-limit.ts`): a state's size as the reference client
 * sends it back, and the limit that follows from the request limit.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { agentStateBytes, REQUEST_ENVELOPE_BYTES, stateBytesOver, stateLimitFor } from '../../src/runtime/state-limit.js';
import { goJson, goRequest } from '../support/go-json.js';

const bytes = (text: string): number => Buffer.byteLength(text, 'utf8');

describe('state size as the agent sends it back', () => {
  const samples: Array<[string, unknown]> = [
    ['empty', {}],
    ['ascii', { a: 'plain text', n: [1, 2.5, -3e-7, 1e21] }],
    ['html characters in values and keys', { '<key&>': '<script>alert("x") && y</script>' }],
    ['line and paragraph separators', { s: 'a\u2028b\u2029c' }],
    ['multi-byte text', { s: 'Grüße, 日本語, עברית', emoji: '😀👩‍👩‍👧' }],
    ['escapes JSON.stringify and Go write alike', { s: 'quote " backslash \\ tab \t newline \n nul \u0000 backspace \b formfeed \f del \u007f' }],
    ['an escaped backslash before < (not an escape of <)', { s: '\\<\\>' }],
  ];
  for (const [label, value] of samples) {
    test(`${label}: exactly the bytes Go writes`, () => {
      assert.equal(agentStateBytes(JSON.stringify(value)), bytes(goJson(value)));
    });
  }

  test('a lone surrogate is counted as JSON.stringify writes it (6 bytes), never less than Go (U+FFFD, 3 bytes)', () => {
    assert.equal(agentStateBytes(JSON.stringify({ s: '\ud800' })), bytes(JSON.stringify({ s: '\ud800' })));
  });

  test('the envelope is what a request adds around the state, newline included', () => {
    const state = { any: 'state' };
    assert.equal(REQUEST_ENVELOPE_BYTES, bytes(goRequest(randomUUID(), state)) - bytes(goJson(state)));
    assert.equal(REQUEST_ENVELOPE_BYTES, 64);
    assert.deepEqual(stateLimitFor(5 * 1024 ** 2), { maxStateBytes: 5 * 1024 ** 2 - 64, maxBodyBytes: 5 * 1024 ** 2 });
    assert.deepEqual(stateLimitFor(10), { maxStateBytes: 0, maxBodyBytes: 10 });
  });

  test('stateBytesOver: undefined up to the limit, the size beyond it — also where the short cut ends', () => {
    const limit = 600;
    // 100 characters that Go writes as 6 bytes each: the most a 100-character text can become.
    const atLimit = '<'.repeat(100);
    assert.equal(stateBytesOver(atLimit, limit), undefined);
    assert.equal(stateBytesOver(`${atLimit}<`, limit), 606);
    assert.equal(stateBytesOver('x'.repeat(101), limit), undefined, 'past the short cut, counted and found to fit');
    assert.equal(stateBytesOver('x'.repeat(601), limit), 601);
    assert.equal(stateBytesOver('\u2028'.repeat(200), limit), 1200);
  });
});
