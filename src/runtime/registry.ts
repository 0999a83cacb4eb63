/**
 * The registered actions: descriptions with the reference defaults applied and validated at
 * registration, what each action implements, its heartbeat parameters, and the index revision the
 * agent caches by ETag.
 */
import { randomBytes } from 'node:crypto';
import type { DefinedAction } from '../action.js';
import type { ActionDescription } from '../api/schemas.js';
import { assertKnownFields, assertUniqueRoutes, normalizeDescription, parseDurationMs, RegistrationError } from '../api/description.js';
import { checkConfigFitsParameters } from './config-check.js';
import { heartbeatExpiryMs } from '../config.js';
import type { BodyKind } from './protocol.js';

/** One action as the runtime serves it. */
export interface RegisteredAction {
  readonly id: string;
  /** The description served by `GET /<id>`: defaults applied, validated, frozen. */
  readonly description: ActionDescription;
  /** The stop endpoint exists (author `stop` or a `body`): executions get a control block. */
  readonly stoppable: boolean;
  readonly hasStatusHandler: boolean;
  readonly hasStopHandler: boolean;
  readonly hasQueryHandler: boolean;
  readonly hasBody: boolean;
  /** Where its body runs (`cpu` by default); undefined without a body. */
  readonly bodyKind: BodyKind | undefined;
  /** Names of top-level parameters of type `file`. */
  readonly fileParameters: ReadonlySet<string>;
  /** What start-up logs about the action at `warn`: doubts that do not stop it (`./config-check.ts`). */
  readonly warnings: readonly string[];
  /** Silence after which the watchdog stops an execution; 0 = no heartbeat (not stoppable). */
  readonly heartbeatExpiryMs: number;
}

/** The set of registered actions, fixed at start-up. */
export class ActionRegistry {
  private readonly byId = new Map<string, RegisteredAction>();
  private revisionCounter = 0;
  /** A per-process nonce, so a restarted extension never reuses an ETag of its predecessor. */
  private readonly nonce = randomBytes(6).toString('hex');

  /**
   * Validate and add actions; throws {@link RegistrationError} naming the action and field: a field
   * the spec does not have, a description breaking a rule, a config schema refusing what the agent
   * sends for a declared parameter (`./config-check.ts`), a route taken twice.
   */
  register(actions: readonly DefinedAction[], heartbeatMinIntervalMs: number): void {
    const added: RegisteredAction[] = [];
    for (const definition of actions) {
      const implemented = {
        status: definition.status !== undefined,
        stop: definition.stop !== undefined,
        query: definition.query !== undefined,
        body: definition.body !== undefined,
      };
      assertKnownFields(definition.description);
      const description = normalizeDescription(definition.description, implemented);
      const warnings = checkConfigFitsParameters(description, definition.config);
      const stoppable = description.stop !== undefined;
      const callInterval = description.status?.callInterval;
      added.push(
        Object.freeze({
          id: description.id,
          description,
          stoppable,
          hasStatusHandler: implemented.status,
          hasStopHandler: implemented.stop,
          hasQueryHandler: implemented.query,
          hasBody: implemented.body,
          bodyKind: implemented.body ? (definition.bodyKind ?? 'cpu') : undefined,
          fileParameters: new Set(description.parameters.filter((p) => p.type === 'file').map((p) => p.name)),
          warnings,
          heartbeatExpiryMs:
            stoppable && callInterval !== undefined ? heartbeatExpiryMs(parseDurationMs(callInterval), heartbeatMinIntervalMs) : 0,
        }),
      );
    }
    assertUniqueRoutes([...this.byId.values(), ...added].map((action) => action.description));
    for (const action of added) {
      if (this.byId.has(action.id)) throw new RegistrationError(`Action "${action.id}": id is registered twice`, action.id, 'id');
      this.byId.set(action.id, action);
    }
    this.revisionCounter++;
  }

  /** The action with this id, if registered. */
  get(id: string): RegisteredAction | undefined {
    return this.byId.get(id);
  }

  /** Every action, in registration order. */
  all(): RegisteredAction[] {
    return [...this.byId.values()];
  }

  /** The index ETag: changes with every registration (reference `BumpRevision`). */
  get revision(): string {
    return `"${this.nonce}-${this.revisionCounter}"`;
  }
}
