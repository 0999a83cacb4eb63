/**
 * Validation of answers against the runtime's own wire schemas (`src/api/schemas.ts`, DiscoveryKit's
 * in `src/api/discovery.ts`): the same
 * zod schemas the runtime serves with, so the client and the server can never disagree on what the
 * spec allows. A failure becomes a {@link SchemaViolation} listing every offending path and value.
 */
import { z } from 'zod';
import {
  ActionDescriptionSchema,
  ActionKitErrorSchema,
  ActionListSchema,
  formatZodIssues,
  formatZodPath,
  PrepareResultSchema,
  QueryMetricsResultSchema,
  StartResultSchema,
  StatusResultSchema,
  StopResultSchema,
} from '../api/schemas.js';
import {
  AttributeDescriptionsSchema,
  DiscoveryDataSchema,
  DiscoveryDescriptionSchema,
  TargetDescriptionSchema,
  TargetEnrichmentRuleSchema,
} from '../api/discovery.js';
import { ExtensionIndexSchema } from '../api/extension-index.js';
import { SchemaViolation, type SchemaIssue } from './errors.js';

/** The schemas an agent applies to answers, by spec name. */
export const ANSWER_SCHEMAS = {
  ActionList: ActionListSchema,
  ActionDescription: ActionDescriptionSchema,
  PrepareResult: PrepareResultSchema,
  StartResult: StartResultSchema,
  StatusResult: StatusResultSchema,
  StopResult: StopResultSchema,
  QueryMetricsResult: QueryMetricsResultSchema,
  ActionKitError: ActionKitErrorSchema,
  /** The whole index: `ActionList` plus the other kits' lists (`DiscoveryList` complete when used). */
  ExtensionIndex: ExtensionIndexSchema,
  DiscoveryDescription: DiscoveryDescriptionSchema,
  DiscoveryData: DiscoveryDataSchema,
  TargetDescription: TargetDescriptionSchema,
  AttributeDescriptions: AttributeDescriptionsSchema,
  TargetEnrichmentRule: TargetEnrichmentRuleSchema,
} as const;

/** Spec name of an answer schema. */
export type AnswerSchemaName = keyof typeof ANSWER_SCHEMAS;
/** The parsed type of an answer schema. */
export type AnswerOf<N extends AnswerSchemaName> = z.output<(typeof ANSWER_SCHEMAS)[N]>;

/**
 * The issues of `body` against schema `name`, with the offending values; empty when it validates.
 */
export function schemaIssues(name: AnswerSchemaName, body: unknown): SchemaIssue[] {
  const parsed = ANSWER_SCHEMAS[name].safeParse(body);
  if (parsed.success) return [];
  return parsed.error.issues.map((issue) => ({
    path: formatZodPath(issue.path),
    // formatZodIssues renders union variants helpfully; render one issue at a time and drop its path prefix.
    message: stripPath(formatZodIssues(new z.ZodError([issue])).first, formatZodPath(issue.path)),
    value: valueAt(body, issue.path),
  }));
}

/**
 * Parse `body` with schema `name`, or throw a {@link SchemaViolation} for `request` naming every
 * offending path and the value found there.
 */
export function validateWire<N extends AnswerSchemaName>(name: N, body: unknown, request: string, httpStatus: number): AnswerOf<N> {
  const parsed = ANSWER_SCHEMAS[name].safeParse(body);
  if (parsed.success) return parsed.data as AnswerOf<N>;
  throw new SchemaViolation(request, httpStatus, name, schemaIssues(name, body), body);
}

function stripPath(rendered: string, path: string): string {
  return path !== '' && rendered.startsWith(`${path}: `) ? rendered.slice(path.length + 2) : rendered;
}

/** The value at a zod issue path inside `root` (undefined when the path leaves the document). */
function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let value = root;
  for (const key of path) {
    if (typeof value !== 'object' || value === null || typeof key === 'symbol') return undefined;
    value = (value as Record<string | number, unknown>)[key];
  }
  return value;
}
