/**
 * `actionkit-runtime/testing` — test ActionKit actions and extensions the way the Steadybit agent
 * drives them.
 *
 * - {@link AgentClient}: an agent over HTTP for any extension (list → describe → prepare → start →
 *   status at callInterval → stop, metric queries, files, `Request-Timeout`), validating every
 *   answer against the ActionKit schemas.
 * - {@link createActionHarness} / {@link runAction}: an action's handlers on real worker threads,
 *   through the runtime's lifecycle, without HTTP.
 *
 * Given the action definition itself (the module's default export), the harness, `runAction`,
 * `client.run` and `client.endpointsOf` are typed by it: a config its schema would refuse does
 * not compile, and states have the action's state type.
 * - {@link checkExtension}: the conformance check behind `actionkit check`.
 *
 * @example
 * ```ts
 * import { test } from 'node:test';
 * import assert from 'node:assert/strict';
 * import { runAction } from 'actionkit-runtime/testing';
 * import cpuStress from '../actions/cpu-stress.js';
 *
 * test('cpu stress runs and stops cleanly', async () => {
 *   const run = await runAction(cpuStress, { config: { duration: 500, cpuLoad: 50 } });
 *   assert.deepEqual(run.errors, []);
 * });
 * ```
 */
export { AgentClient, interpretAnswer, type AgentClientOptions, type ExchangeOptions, type FetchDispatcher, type RawAnswer } from './client.js';
export {
  runExecution,
  type AnsweredWith,
  type AnyDefinedAction,
  type ConfigOf,
  type ExecutionEndpoints,
  type Exchange,
  type FileSource,
  type Phase,
  type PhaseRecord,
  type PreparedWith,
  type PrepareRequest,
  type QueryRequest,
  type RunEnd,
  type RunError,
  type RunOptions,
  type RunResult,
  type StateOf,
  type StateRequest,
} from './run.js';
export { createActionHarness, runAction, type ActionHarness, type ActionHarnessOptions, type ModuleReference, type TypedHarnessOptions } from './in-process.js';
export { checkExtension, type CheckOptions, type CheckReport, type CheckRow, type CheckStatus } from './check.js';
export { defaultConfig, type DefaultConfig } from './defaults.js';
export { nodeTransport, type NodeTransportOptions } from './node-transport.js';
export { AgentClientError, ErrorAnswer, ProtocolError, SchemaViolation, TransportError, describeActionKitError, type SchemaIssue } from './errors.js';
export { schemaIssues, validateWire, type AnswerOf, type AnswerSchemaName } from './validate.js';
