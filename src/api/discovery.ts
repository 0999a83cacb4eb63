/**
 * Zod schemas of the DiscoveryKit bodies (`reference/discoverykit-openapi.yml`): what an extension
 * serves so that the agent discovers targets. The runtime does not implement discoveries itself —
 * authors serve them from their own routers next to the actions (`routers` and `index` options of
 * `createExtension`) — but it types them, validates the index entries at start-up, and the testing
 * client and `actionkit check` validate every discovery answer against these schemas.
 *
 * Same conventions as the ActionKit schemas (`./schemas.ts`): objects accept additional properties,
 * `maxLength` counts code points, `uniqueItems` compares JSON values, nothing is rewritten.
 * DiscoveryKit's `Target` is named {@link DiscoveredTargetSchema} here, as ActionKit has a `Target`
 * of its own (the one an execution acts on).
 */
import { z } from 'zod';
import { maxChars, uniqueItems } from './json-schema.js';
import { CallIntervalSchema, DescribingEndpointReferenceSchema } from './schemas.js';

/** `DescribingEndpointReferenceWithCallInterval`: the `discover` endpoint, called every `callInterval`. */
export const DescribingEndpointReferenceWithCallIntervalSchema = DescribingEndpointReferenceSchema.extend({
  callInterval: CallIntervalSchema.optional(),
});
/** `DescribingEndpointReferenceWithCallInterval`. */
export type DescribingEndpointReferenceWithCallInterval = z.infer<typeof DescribingEndpointReferenceWithCallIntervalSchema>;

const references = uniqueItems(z.array(DescribingEndpointReferenceSchema));

/** `DiscoveryList`: the DiscoveryKit part of the index; all four lists are required (empty is `[]`). */
export const DiscoveryListSchema = z.looseObject({
  discoveries: references,
  targetTypes: references,
  targetAttributes: references,
  targetEnrichmentRules: references,
});
/** `DiscoveryList`. */
export type DiscoveryList = z.infer<typeof DiscoveryListSchema>;

/** `DiscoveryDescription`: a discovery's id and the endpoint the agent calls to discover. */
export const DiscoveryDescriptionSchema = z.looseObject({
  id: z.string(),
  discover: DescribingEndpointReferenceWithCallIntervalSchema,
});
/** `DiscoveryDescription`. */
export type DiscoveryDescription = z.infer<typeof DiscoveryDescriptionSchema>;

/** Attributes of a discovered target or enrichment data: each name maps to a list of values. */
const AttributesSchema = z.record(z.string(), z.array(z.string()));

/** DiscoveryKit `Target`: one discovered target; `id` is unique per target type. */
export const DiscoveredTargetSchema = z.looseObject({
  id: z.string(),
  label: z.string(),
  targetType: z.string(),
  attributes: AttributesSchema,
});
/** DiscoveryKit `Target`. */
export type DiscoveredTarget = z.infer<typeof DiscoveredTargetSchema>;

/** `EnrichmentData`: discovered data that enrichment rules copy onto matching targets. */
export const EnrichmentDataSchema = z.looseObject({
  id: z.string(),
  enrichmentDataType: z.string(),
  attributes: AttributesSchema,
});
/** `EnrichmentData`. */
export type EnrichmentData = z.infer<typeof EnrichmentDataSchema>;

/** `DiscoveryData`: the answer of a `discover` call. */
export const DiscoveryDataSchema = z.looseObject({
  targets: z.array(DiscoveredTargetSchema).optional(),
  enrichmentData: z.array(EnrichmentDataSchema).optional(),
});
/** `DiscoveryData`. */
export type DiscoveryData = z.infer<typeof DiscoveryDataSchema>;

/** `PluralLabel`: how the platform names one and several of something. */
export const PluralLabelSchema = z.looseObject({ one: z.string(), other: z.string() });
/** `PluralLabel`. */
export type PluralLabel = z.infer<typeof PluralLabelSchema>;

/** `AttributeDescription`: the label of a target attribute. */
export const AttributeDescriptionSchema = z.looseObject({ attribute: z.string(), label: PluralLabelSchema });
/** `AttributeDescription`. */
export type AttributeDescription = z.infer<typeof AttributeDescriptionSchema>;

/** `AttributeDescriptions`: the answer of a `targetAttributes` entry. */
export const AttributeDescriptionsSchema = z.looseObject({ attributes: z.array(AttributeDescriptionSchema) });
/** `AttributeDescriptions`. */
export type AttributeDescriptions = z.infer<typeof AttributeDescriptionsSchema>;

/** `Column` of a target table. */
export const ColumnSchema = z.looseObject({ attribute: z.string(), fallbackAttributes: z.array(z.string()).optional() });
/** `Column`. */
export type Column = z.infer<typeof ColumnSchema>;

/** `OrderBy` of a target table. */
export const OrderBySchema = z.looseObject({ attribute: z.string(), direction: z.enum(['ASC', 'DESC']) });
/** `OrderBy`. */
export type OrderBy = z.infer<typeof OrderBySchema>;

/** `Table`: how the platform lists targets of a type. */
export const TableSchema = z.looseObject({ columns: z.array(ColumnSchema), orderBy: z.array(OrderBySchema) });
/** `Table`. */
export type Table = z.infer<typeof TableSchema>;

/** `TargetDescription`: a target type (the answer of a `targetTypes` entry). */
export const TargetDescriptionSchema = z.looseObject({
  id: z.string(),
  version: z.string(),
  label: PluralLabelSchema,
  category: z.string().optional(),
  icon: maxChars(1_000_000)
    .regex(/^data:.*$/, { message: 'Invalid icon: must be a data URI (pattern ^data:.*$)' })
    .optional(),
  table: TableSchema,
});
/** `TargetDescription`. */
export type TargetDescription = z.infer<typeof TargetDescriptionSchema>;

/** `Attribute` matcher of an enrichment rule. */
export const EnrichmentAttributeSchema = z.looseObject({
  name: z.string(),
  matcher: z.enum(['equals', 'contains', 'starts_with', 'regex']),
});
/** `Attribute` of an enrichment rule. */
export type EnrichmentAttribute = z.infer<typeof EnrichmentAttributeSchema>;

/** `SourceOrDestination` of an enrichment rule: a target type and a label-selector-like map. */
export const SourceOrDestinationSchema = z.looseObject({
  type: z.string(),
  selector: z.record(z.string(), z.string()),
});
/** `SourceOrDestination`. */
export type SourceOrDestination = z.infer<typeof SourceOrDestinationSchema>;

/** `TargetEnrichmentRule`: the answer of a `targetEnrichmentRules` entry. */
export const TargetEnrichmentRuleSchema = z.looseObject({
  id: z.string(),
  version: z.string(),
  src: SourceOrDestinationSchema,
  dest: SourceOrDestinationSchema,
  attributes: uniqueItems(z.array(EnrichmentAttributeSchema)),
});
/** `TargetEnrichmentRule`. */
export type TargetEnrichmentRule = z.infer<typeof TargetEnrichmentRuleSchema>;
