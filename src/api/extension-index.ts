/**
 * The index an extension serves (at `/` by default): one JSON object with the ActionKit `actions`
 * list and, side by side, what the extension's other kits list — the reference scaffold's merged
 * index (reference §9). The runtime builds `actions` from the registered actions; everything else
 * is the author's {@link IndexContributions}, validated here at start-up so a typo in an entry is a
 * start-up error, not an agent that silently ignores a discovery.
 *
 * Kits whose fields are absent are not used. When any DiscoveryKit list is given, the other three
 * are served as `[]`: the agent reads the DiscoveryKit part as a `DiscoveryList`, whose four lists
 * are all required.
 */
import { z } from 'zod';
import { DiscoveryListSchema } from './discovery.js';
import { uniqueItems } from './json-schema.js';
import { ActionListSchema, DescribingEndpointReferenceSchema, EndpointPathSchema, type DescribingEndpointReference } from './schemas.js';

/** EventKit `EventListener`: the endpoint the agent sends the named events to. */
export const EventListenerSchema = z.looseObject({
  path: EndpointPathSchema,
  // The EventKit spec spells its methods in lower case; agents and SDKs send them upper case.
  method: z.string().regex(/^(post|put|delete)$/i, { message: 'Invalid method: expected POST, PUT or DELETE' }),
  listenTo: z.array(z.string()),
});
/** EventKit `EventListener`. */
export type EventListener = z.infer<typeof EventListenerSchema>;

const references = uniqueItems(z.array(DescribingEndpointReferenceSchema)).optional();

/**
 * What an extension lists in its index besides its actions: the fields of the other kits, each a
 * list of endpoint references served by the author's own routers on the same server.
 */
export const IndexContributionsSchema = z.strictObject({
  /** DiscoveryKit: `GET` references to discovery descriptions. */
  discoveries: references,
  /** DiscoveryKit: `GET` references to target type descriptions. */
  targetTypes: references,
  /** DiscoveryKit: `GET` references to target attribute descriptions. */
  targetAttributes: references,
  /** DiscoveryKit: `GET` references to target enrichment rules. */
  targetEnrichmentRules: references,
  /** AdviceKit: `GET` references to advice descriptions. */
  advice: references,
  /** EventKit: the endpoints that receive events. */
  eventListeners: uniqueItems(z.array(EventListenerSchema)).optional(),
  /** PreflightKit: `GET` references to preflight descriptions. */
  preflights: references,
});
/** What an extension lists in its index besides its actions (see {@link IndexContributionsSchema}). */
export type IndexContributions = z.input<typeof IndexContributionsSchema>;

/** The index as served: the action list plus the contributions, every kit's part valid on its own. */
export const ExtensionIndexSchema = ActionListSchema.extend(IndexContributionsSchema.shape).superRefine((index, ctx) => {
  if (DISCOVERY_FIELDS.some((field) => index[field] !== undefined)) {
    const discovery = DiscoveryListSchema.safeParse(index);
    for (const issue of discovery.success ? [] : discovery.error.issues) ctx.addIssue({ code: 'custom', path: issue.path, message: `${issue.message} (DiscoveryList)` });
  }
});
/** The index as served. */
export type ExtensionIndex = z.infer<typeof ExtensionIndexSchema>;

const DISCOVERY_FIELDS = ['discoveries', 'targetTypes', 'targetAttributes', 'targetEnrichmentRules'] as const;

/** The index body: `actions` first, then the contributed kits' fields (DiscoveryKit's complete when any is used). */
export function buildIndex(actions: readonly DescribingEndpointReference[], contributions: z.output<typeof IndexContributionsSchema>): ExtensionIndex {
  const index: ExtensionIndex = { actions: [...actions] };
  const usesDiscovery = DISCOVERY_FIELDS.some((field) => contributions[field] !== undefined);
  for (const [field, entries] of Object.entries(contributions) as [keyof IndexContributions, unknown[] | undefined][]) {
    if (entries !== undefined) (index as Record<string, unknown>)[field] = entries;
  }
  if (usesDiscovery) for (const field of DISCOVERY_FIELDS) index[field] ??= [];
  return index;
}

/** Every path the index lists (for the start-up check that no two routes collide). */
export function indexedPaths(contributions: z.output<typeof IndexContributionsSchema>): Array<{ field: string; method: string; path: string }> {
  return Object.entries(contributions).flatMap(([field, entries]) =>
    ((entries ?? []) as Array<{ method: string; path: string }>).map((entry) => ({ field, method: entry.method.toUpperCase(), path: entry.path })),
  );
}
