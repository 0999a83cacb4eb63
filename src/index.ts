/**
 * `actionkit-runtime` — run Steadybit ActionKit extensions on Node.js with every execution on
 * worker threads and exactly-once stops coordinated through shared memory.
 *
 * @example
 * ```ts
 * import { createExtension } from 'actionkit-runtime';
 * const extension = await createExtension({ actions: [new URL('./actions/cpu-stress.js', import.meta.url)] });
 * await extension.listen();
 * ```
 */
export { createExtension, Extension, type ExtensionStats, type ListenInfo } from './extension.js';
export { ConfigError, ENVIRONMENT_VARIABLES, type ExtensionOptions, type ResolvedOptions } from './config.js';
export { RegistrationError } from './api/description.js';
export { ErrorCode, ExtensionError, RuntimeError, type ActionKitErrorBody, type ExtensionErrorOptions } from './errors.js';
export type { StopAllResult } from './runtime/lifecycle.js';
export type { HandledSignal } from './runtime/signals.js';
export { requestSignal } from './http/app.js';
export * as schemas from './api/schemas.js';
export type * from './api/schemas.js';
export * as discoverySchemas from './api/discovery.js';
export type * from './api/discovery.js';
export { IndexContributionsSchema, ExtensionIndexSchema, type IndexContributions, type ExtensionIndex, type EventListener } from './api/extension-index.js';
