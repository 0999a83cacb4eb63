/** Checks shared by the tests that drive `test/fixtures/http-state.ts`. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Answer } from './harness.js';

type Json = Record<string, unknown>;

/** The state an answer carries; fails the test if there is none. */
export function stateOf(answer: Answer): Json {
  const state = answer.body['state'];
  assert.ok(typeof state === 'object' && state !== null, `no state in ${JSON.stringify(answer.body).slice(0, 300)}`);
  return state as Json;
}

/** Assert an answer is a 200 without `error`; `what` names the call in the failure. */
export function ok(answer: Answer, what: string): void {
  assert.equal(answer.status, 200, `${what}: ${JSON.stringify(answer.body).slice(0, 500)}`);
  assert.equal(answer.body['error'], undefined, `${what}: ${JSON.stringify(answer.body['error'])}`);
}

/** The states the fixture's stop handler received, one per line of its `stopLog` file, in order. */
export function stopLogLines(file: string): Json[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Json);
}
