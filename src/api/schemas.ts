/**
 * Zod schemas of every body in the ActionKit OpenAPI spec (`reference/actionkit-openapi.yml`).
 *
 * Written by hand from the spec, one schema per spec component, named after it with a `Schema`
 * suffix. Conventions, all taken from the spec so that whatever passes here also passes the agent's
 * own validation:
 * - objects accept additional properties (`z.looseObject`): the spec never sets
 *   `additionalProperties: false`, and the agent tolerates newer fields;
 * - the only closed maps are the ones the spec types with `additionalProperties: <schema>`
 *   (`MessageFields`, `Metric.metric`, `Target.attributes`);
 * - `maxLength` counts Unicode code points like JSON Schema does (zod's `.max()` counts UTF-16 code
 *   units, which would reject valid emoji-heavy labels);
 * - `uniqueItems` is checked with JSON-Schema equality (key order irrelevant) on the arrays of
 *   descriptions, which are small;
 * - defaults documented in the spec (`Message.level = info`, `ActionKitError.status = errored`, …)
 *   are NOT inserted: these schemas validate, they never rewrite what goes on the wire.
 *
 * Request bodies are decoded the way the reference's Go decoding does — `null` and missing optional
 * fields accepted and normalised after each field's Go type — see the table at "Request bodies".
 */
import { z } from 'zod';
import { jsonTypeName, maxChars, uniqueItems } from './json-schema.js';

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

/**
 * A JSON object (`type: object, additionalProperties: true`): not an array, not null.
 *
 * The value is passed through as is, not copied: `config`, `state` and `properties` belong to the
 * author and must round-trip exactly (zod's record/object parsers rebuild objects and silently drop
 * own `__proto__` keys), and state objects can be large.
 */
export const JsonObjectSchema = z.custom<Record<string, unknown>>(
  (value) => typeof value === 'object' && value !== null && !Array.isArray(value),
  { error: (issue) => `Invalid input: expected object, received ${jsonTypeName(issue.input)}` },
);
/** A JSON object. */
export type JsonObject = z.infer<typeof JsonObjectSchema>;

/** Any JSON value, but present (a required key whose value may be anything, `null` included). */
const AnyValueSchema = z.custom<unknown>((value) => value !== undefined, {
  error: 'Invalid input: expected any JSON value, received undefined',
});

/** An ISO 8601 / RFC 3339 `date-time` with `Z` or a numeric offset, any fractional precision (Go emits nanoseconds). */
const DateTimeSchema = z.iso.datetime({ offset: true });

/** The spec's `callInterval` pattern. Exported for the registration rules. */
export const CALL_INTERVAL_PATTERN = /^\d+(ns|ms|s|m|h|d)$/;

// ---------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------

/** `ActionKind`: what kind of action this is (used to classify actions in the UI). */
export const ActionKindSchema = z.enum(['attack', 'check', 'load_test', 'other']);
/** `ActionKind`. */
export type ActionKind = z.infer<typeof ActionKindSchema>;

/** `TimeControl`: instantaneous event, internally controlled duration, or user-specified duration. */
export const TimeControlSchema = z.enum(['instantaneous', 'internal', 'external']);
/** `TimeControl`. */
export type TimeControl = z.infer<typeof TimeControlSchema>;

/** `DurationUnit`: units accepted by a `duration` parameter. */
export const DurationUnitSchema = z.enum(['milliseconds', 'seconds', 'minutes', 'hours', 'days']);
/** `DurationUnit`. */
export type DurationUnit = z.infer<typeof DurationUnitSchema>;

/** `TimestampSource`: `extension` (the agent corrects clock skew using the `Date` header) or `external`. */
export const TimestampSourceSchema = z.enum(['extension', 'external']);
/** `TimestampSource`. */
export type TimestampSource = z.infer<typeof TimestampSourceSchema>;

/** `ReadHttpMethod`: the method of describing endpoints. */
export const ReadHttpMethodSchema = z.enum(['GET']);
/** `ReadHttpMethod`. */
export type ReadHttpMethod = z.infer<typeof ReadHttpMethodSchema>;

/** `MutatingHttpMethod`: methods of prepare/start/status/stop/query endpoints (uppercase on the wire). */
export const MutatingHttpMethodSchema = z.enum(['POST', 'PUT', 'DELETE']);
/** `MutatingHttpMethod`. */
export type MutatingHttpMethod = z.infer<typeof MutatingHttpMethodSchema>;

// ---------------------------------------------------------------------------------------------
// Errors, messages, artifacts, metrics, summary, modifications
// ---------------------------------------------------------------------------------------------

/** `ActionKitError`: RFC 7807-style error body; `status` defaults to `errored` on the agent side. */
export const ActionKitErrorSchema = z.looseObject({
  status: z.enum(['failed', 'errored']).optional(),
  type: z.string().optional(),
  title: z.string(),
  detail: z.string().optional(),
  instance: z.string().optional(),
});
/** `ActionKitError`. */
export type ActionKitError = z.infer<typeof ActionKitErrorSchema>;

/** `MessageFields`: string fields rendered in the tooltip of a LogWidget. */
export const MessageFieldsSchema = z.record(z.string(), z.string());
/** `MessageFields`. */
export type MessageFields = z.infer<typeof MessageFieldsSchema>;

/** `Message`: a log message passed to the platform; `type` (default `AGENT`) routes it to a widget. */
export const MessageSchema = z.looseObject({
  message: z.string(),
  type: z.string().optional(),
  level: z.enum(['debug', 'info', 'warn', 'error']).optional(),
  timestamp: DateTimeSchema.optional(),
  timestampSource: TimestampSourceSchema.optional(),
  fields: MessageFieldsSchema.optional(),
});
/** `Message`. */
export type Message = z.infer<typeof MessageSchema>;

/** `Messages`. */
export const MessagesSchema = z.array(MessageSchema);
/** `Messages`. */
export type Messages = z.infer<typeof MessagesSchema>;

/** `Artifact`: a file (base64 `data`, at most 5 MiB raw) attached to the execution. */
export const ArtifactSchema = z.looseObject({
  label: maxChars(256),
  // 5 MiB * 133 % for the base64 overhead, as in the spec.
  data: maxChars(6_973_030),
});
/** `Artifact`. */
export type Artifact = z.infer<typeof ArtifactSchema>;

/** `Artifacts`. */
export const ArtifactsSchema = z.array(ArtifactSchema);
/** `Artifacts`. */
export type Artifacts = z.infer<typeof ArtifactsSchema>;

/** `Metric`: one observed value with Prometheus-style labels (`metric`, name optionally as `__name__`). */
export const MetricSchema = z.looseObject({
  timestamp: DateTimeSchema,
  timestampSource: TimestampSourceSchema.optional(),
  name: z.string().optional(),
  metric: z.record(z.string(), z.string()),
  // z.number() already rejects NaN and ±Infinity, which JSON cannot carry (they would become null).
  value: z.number(),
});
/** `Metric`. */
export type Metric = z.infer<typeof MetricSchema>;

/** `Metrics`. */
export const MetricsSchema = z.array(MetricSchema);
/** `Metrics`. */
export type Metrics = z.infer<typeof MetricsSchema>;

/** `Summary`: short text shown in the execution details. */
export const SummarySchema = z.looseObject({
  text: maxChars(512),
  level: z.enum(['info', 'warning']),
});
/** `Summary`. */
export type Summary = z.infer<typeof SummarySchema>;

/**
 * `ExecutionModificationSetPropertyValue`. `value` is typed `object` in the spec but is any JSON value
 * in practice (reference §4.7), so anything present is accepted.
 */
export const ExecutionModificationSetPropertyValueSchema = z.looseObject({
  type: z.literal('set_property_value'),
  propertyKey: maxChars(64),
  value: AnyValueSchema,
});
/** `ExecutionModificationSetPropertyValue`. */
export type ExecutionModificationSetPropertyValue = z.infer<typeof ExecutionModificationSetPropertyValueSchema>;

/** `ExecutionModificationAddValueToListProperty` (`value`: any JSON value, see above). */
export const ExecutionModificationAddValueToListPropertySchema = z.looseObject({
  type: z.literal('add_value_to_list_property'),
  propertyKey: maxChars(64),
  value: AnyValueSchema,
});
/** `ExecutionModificationAddValueToListProperty`. */
export type ExecutionModificationAddValueToListProperty = z.infer<typeof ExecutionModificationAddValueToListPropertySchema>;

/**
 * `ExecutionModification` (spec: anyOf). Each variant requires its own `type` literal, so a
 * discriminated union accepts exactly the same documents and gives sharper error messages.
 */
export const ExecutionModificationSchema = z.discriminatedUnion('type', [
  ExecutionModificationSetPropertyValueSchema,
  ExecutionModificationAddValueToListPropertySchema,
]);
/** `ExecutionModification`. */
export type ExecutionModification = z.infer<typeof ExecutionModificationSchema>;

/** `ExecutionModifications`. */
export const ExecutionModificationsSchema = z.array(ExecutionModificationSchema);
/** `ExecutionModifications`. */
export type ExecutionModifications = z.infer<typeof ExecutionModificationsSchema>;

// ---------------------------------------------------------------------------------------------
// Targeting
// ---------------------------------------------------------------------------------------------

/** `TargetSelectionTemplate`: a named query that helps users select targets. */
export const TargetSelectionTemplateSchema = z.looseObject({
  label: maxChars(128),
  description: maxChars(1024).optional(),
  query: maxChars(1024),
});
/** `TargetSelectionTemplate`. */
export type TargetSelectionTemplate = z.infer<typeof TargetSelectionTemplateSchema>;

/** `TargetSelectionTemplates`. */
export const TargetSelectionTemplatesSchema = z.array(TargetSelectionTemplateSchema);
/** `TargetSelectionTemplates`. */
export type TargetSelectionTemplates = z.infer<typeof TargetSelectionTemplatesSchema>;

/** `DefaultBlastRadius`: percentage or maximum number of targets picked by default. */
export const DefaultBlastRadiusSchema = z.looseObject({
  mode: z.enum(['percentage', 'maximum']),
  value: z.number().int(),
});
/** `DefaultBlastRadius`. */
export type DefaultBlastRadius = z.infer<typeof DefaultBlastRadiusSchema>;

/** `TargetSelection`: target type the action is offered for, plus query/template/quantity options. */
export const TargetSelectionSchema = z.looseObject({
  targetType: z.string(),
  targetQuery: maxChars(1024).optional(),
  selectionTemplates: TargetSelectionTemplatesSchema.optional(),
  quantityRestriction: z.enum(['exactly_one', 'all', 'none']).optional(),
  defaultBlastRadius: DefaultBlastRadiusSchema.optional(),
  missingQuerySelection: z.enum(['include_all', 'include_none']).optional(),
});
/** `TargetSelection`. */
export type TargetSelection = z.infer<typeof TargetSelectionSchema>;

/** `Target`: the discovered target an execution acts on; attributes map to lists of strings. */
export const TargetSchema = z.looseObject({
  name: z.string(),
  attributes: z.record(z.string(), z.array(z.string())),
});
/** `Target`. */
export type Target = z.infer<typeof TargetSchema>;

// ---------------------------------------------------------------------------------------------
// Widgets
// ---------------------------------------------------------------------------------------------

/** `StateOverTimeWidgetIdentityConfig`. */
export const StateOverTimeWidgetIdentityConfigSchema = z.looseObject({ from: z.string() });
/** `StateOverTimeWidgetIdentityConfig`. */
export type StateOverTimeWidgetIdentityConfig = z.infer<typeof StateOverTimeWidgetIdentityConfigSchema>;

/** `StateOverTimeWidgetLabelConfig`. */
export const StateOverTimeWidgetLabelConfigSchema = z.looseObject({ from: z.string() });
/** `StateOverTimeWidgetLabelConfig`. */
export type StateOverTimeWidgetLabelConfig = z.infer<typeof StateOverTimeWidgetLabelConfigSchema>;

/** `StateOverTimeWidgetTooltipConfig`. */
export const StateOverTimeWidgetTooltipConfigSchema = z.looseObject({ from: z.string() });
/** `StateOverTimeWidgetTooltipConfig`. */
export type StateOverTimeWidgetTooltipConfig = z.infer<typeof StateOverTimeWidgetTooltipConfigSchema>;

/** `StateOverTimeWidgetUrlConfig`. */
export const StateOverTimeWidgetUrlConfigSchema = z.looseObject({ from: z.string().optional() });
/** `StateOverTimeWidgetUrlConfig`. */
export type StateOverTimeWidgetUrlConfig = z.infer<typeof StateOverTimeWidgetUrlConfigSchema>;

/** `StateOverTimeWidgetStateConfig`. */
export const StateOverTimeWidgetStateConfigSchema = z.looseObject({ from: z.string() });
/** `StateOverTimeWidgetStateConfig`. */
export type StateOverTimeWidgetStateConfig = z.infer<typeof StateOverTimeWidgetStateConfigSchema>;

/** `StateOverTimeWidgetValueConfig`. */
export const StateOverTimeWidgetValueConfigSchema = z.looseObject({ hide: z.boolean().optional() });
/** `StateOverTimeWidgetValueConfig`. */
export type StateOverTimeWidgetValueConfig = z.infer<typeof StateOverTimeWidgetValueConfigSchema>;

/** `StateOverTimeWidget`: rows of states over time, fed by metric fields. */
export const StateOverTimeWidgetSchema = z.looseObject({
  type: z.literal('com.steadybit.widget.state_over_time'),
  title: maxChars(128),
  identity: StateOverTimeWidgetIdentityConfigSchema,
  label: StateOverTimeWidgetLabelConfigSchema,
  tooltip: StateOverTimeWidgetTooltipConfigSchema,
  url: StateOverTimeWidgetUrlConfigSchema.optional(),
  state: StateOverTimeWidgetStateConfigSchema,
  value: StateOverTimeWidgetValueConfigSchema.optional(),
});
/** `StateOverTimeWidget`. */
export type StateOverTimeWidget = z.infer<typeof StateOverTimeWidgetSchema>;

/** `LogWidget`: shows messages whose `type` equals `logType`. */
export const LogWidgetSchema = z.looseObject({
  type: z.literal('com.steadybit.widget.log'),
  title: maxChars(128),
  logType: maxChars(128),
});
/** `LogWidget`. */
export type LogWidget = z.infer<typeof LogWidgetSchema>;

/** `MarkdownWidget`: renders messages whose `type` equals `messageType` as Markdown. */
export const MarkdownWidgetSchema = z.looseObject({
  type: z.literal('com.steadybit.widget.markdown'),
  title: maxChars(128),
  messageType: maxChars(128),
  append: z.boolean(),
});
/** `MarkdownWidget`. */
export type MarkdownWidget = z.infer<typeof MarkdownWidgetSchema>;

/** `PredefinedWidget`: one of the platform's hand-crafted widgets. */
export const PredefinedWidgetSchema = z.looseObject({
  type: z.literal('com.steadybit.widget.predefined'),
  predefinedWidgetId: maxChars(128),
});
/** `PredefinedWidget`. */
export type PredefinedWidget = z.infer<typeof PredefinedWidgetSchema>;

/** `LineChartWidgetIdentityConfig`: which metric feeds the chart and how lines are identified. */
export const LineChartWidgetIdentityConfigSchema = z.looseObject({
  metricName: z.string(),
  from: z.string(),
  mode: z.enum([
    'com.steadybit.widget.line_chart.identity_mode.select',
    'com.steadybit.widget.line_chart.identity_mode.widget-per-value',
  ]),
});
/** `LineChartWidgetIdentityConfig`. */
export type LineChartWidgetIdentityConfig = z.infer<typeof LineChartWidgetIdentityConfigSchema>;

/** `LineChartWidgetGroupMatcherFallback`: matches data points no other group matched. */
export const LineChartWidgetGroupMatcherFallbackSchema = z.looseObject({
  type: z.literal('com.steadybit.widget.line_chart.group_matcher_fallback'),
});
/** `LineChartWidgetGroupMatcherFallback`. */
export type LineChartWidgetGroupMatcherFallback = z.infer<typeof LineChartWidgetGroupMatcherFallbackSchema>;

/** `LineChartWidgetGroupMatcherKeyEqualsValue`: matches data points whose `key` equals `value`. */
export const LineChartWidgetGroupMatcherKeyEqualsValueSchema = z.looseObject({
  type: z.literal('com.steadybit.widget.line_chart.group_matcher_key_equals_value'),
  key: z.string(),
  value: z.string(),
});
/** `LineChartWidgetGroupMatcherKeyEqualsValue`. */
export type LineChartWidgetGroupMatcherKeyEqualsValue = z.infer<typeof LineChartWidgetGroupMatcherKeyEqualsValueSchema>;

/** `LineChartWidgetGroupMatcherNotEmpty`: matches data points whose `key` is not empty. */
export const LineChartWidgetGroupMatcherNotEmptySchema = z.looseObject({
  type: z.literal('com.steadybit.widget.line_chart.group_matcher_not_empty'),
  key: z.string(),
});
/** `LineChartWidgetGroupMatcherNotEmpty`. */
export type LineChartWidgetGroupMatcherNotEmpty = z.infer<typeof LineChartWidgetGroupMatcherNotEmptySchema>;

/** `LineChartWidgetGroupMatcher` (spec: anyOf; each variant has its own required `type` literal). */
export const LineChartWidgetGroupMatcherSchema = z.discriminatedUnion('type', [
  LineChartWidgetGroupMatcherFallbackSchema,
  LineChartWidgetGroupMatcherKeyEqualsValueSchema,
  LineChartWidgetGroupMatcherNotEmptySchema,
]);
/** `LineChartWidgetGroupMatcher`. */
export type LineChartWidgetGroupMatcher = z.infer<typeof LineChartWidgetGroupMatcherSchema>;

/** `LineChartWidgetGroup`: a coloured group of data points. `color` has the spec's free-form `format: color`. */
export const LineChartWidgetGroupSchema = z.looseObject({
  title: z.string(),
  color: z.string(),
  matcher: LineChartWidgetGroupMatcherSchema,
});
/** `LineChartWidgetGroup`. */
export type LineChartWidgetGroup = z.infer<typeof LineChartWidgetGroupSchema>;

/** `LineChartWidgetGroupingConfig`. */
export const LineChartWidgetGroupingConfigSchema = z.looseObject({
  showSummary: z.boolean().optional(),
  groups: z.array(LineChartWidgetGroupSchema),
});
/** `LineChartWidgetGroupingConfig`. */
export type LineChartWidgetGroupingConfig = z.infer<typeof LineChartWidgetGroupingConfigSchema>;

/** `LineChartWidgetTooltipContent`. */
export const LineChartWidgetTooltipContentSchema = z.looseObject({
  title: z.string(),
  from: z.string(),
  unit: z.string().optional(),
});
/** `LineChartWidgetTooltipContent`. */
export type LineChartWidgetTooltipContent = z.infer<typeof LineChartWidgetTooltipContentSchema>;

/** `LineChartWidgetTooltipConfig`. */
export const LineChartWidgetTooltipConfigSchema = z.looseObject({
  metricValueUnit: z.string().optional(),
  metricValueTitle: z.string().optional(),
  additionalContent: z.array(LineChartWidgetTooltipContentSchema),
});
/** `LineChartWidgetTooltipConfig`. */
export type LineChartWidgetTooltipConfig = z.infer<typeof LineChartWidgetTooltipConfigSchema>;

/** `LineChartWidget`: a line chart of a metric. */
export const LineChartWidgetSchema = z.looseObject({
  type: z.literal('com.steadybit.widget.line_chart'),
  title: maxChars(128),
  identity: LineChartWidgetIdentityConfigSchema,
  grouping: LineChartWidgetGroupingConfigSchema.optional(),
  tooltip: LineChartWidgetTooltipConfigSchema.optional(),
});
/** `LineChartWidget`. */
export type LineChartWidget = z.infer<typeof LineChartWidgetSchema>;

/** `Widget` (spec: anyOf of the five widgets, each with its own required `type` literal). */
export const WidgetSchema = z.discriminatedUnion('type', [
  StateOverTimeWidgetSchema,
  LogWidgetSchema,
  MarkdownWidgetSchema,
  PredefinedWidgetSchema,
  LineChartWidgetSchema,
]);
/** `Widget`. */
export type Widget = z.infer<typeof WidgetSchema>;

/** `Widgets`: rendered in the experiment result view. */
export const WidgetsSchema = z.array(WidgetSchema);
/** `Widgets`. */
export type Widgets = z.infer<typeof WidgetsSchema>;

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/** `ExplicitParameterOption`: a fixed option with a label and the value passed in `config`. */
export const ExplicitParameterOptionSchema = z.looseObject({
  label: maxChars(255),
  value: maxChars(255),
});
/** `ExplicitParameterOption`. */
export type ExplicitParameterOption = z.infer<typeof ExplicitParameterOptionSchema>;

/** `ParameterOptionsFromTargetAttribute`: all values of a target attribute as options. */
export const ParameterOptionsFromTargetAttributeSchema = z.looseObject({
  attribute: maxChars(255),
});
/** `ParameterOptionsFromTargetAttribute`. */
export type ParameterOptionsFromTargetAttribute = z.infer<typeof ParameterOptionsFromTargetAttributeSchema>;

/** `ParameterOption` (spec: anyOf without discriminator, hence a plain union). */
export const ParameterOptionSchema = z.union([ExplicitParameterOptionSchema, ParameterOptionsFromTargetAttributeSchema]);
/** `ParameterOption`. */
export type ParameterOption = z.infer<typeof ParameterOptionSchema>;

/** `ActionHint`: an info or warning hint shown while configuring the action (Markdown). */
export const ActionHintSchema = z.looseObject({
  type: z.enum(['hint_info', 'hint_warning']),
  content: z.string(),
});
/** `ActionHint`. */
export type ActionHint = z.infer<typeof ActionHintSchema>;

/** The `ActionParameter.type` enum (inline in the spec). */
export const ActionParameterTypeSchema = z.enum([
  'string',
  'string[]',
  'string_array',
  'integer',
  'boolean',
  'percentage',
  'duration',
  'file',
  'key_value',
  'url',
  'textarea',
  'separator',
  'header',
  'bitrate',
  'stressng-workers',
  'regex',
  'target-selection',
]);
/** The `ActionParameter.type` enum. */
export type ActionParameterType = z.infer<typeof ActionParameterTypeSchema>;

/** `ActionParameter`: one input of the action; its value arrives in `config[name]`. */
export const ActionParameterSchema = z.looseObject({
  label: maxChars(255),
  name: maxChars(255),
  description: maxChars(2000).optional(),
  type: ActionParameterTypeSchema,
  required: z.boolean().optional(),
  advanced: z.boolean().optional(),
  /** Deprecated in the spec (list position decides the order) but still accepted on the wire. */
  order: z.number().int().optional(),
  minValue: z.number().int().optional(),
  maxValue: z.number().int().optional(),
  defaultValue: maxChars(255).optional(),
  optionsOnly: z.boolean().optional(),
  options: uniqueItems(z.array(ParameterOptionSchema)).optional(),
  acceptedFileTypes: uniqueItems(z.array(maxChars(128)).max(32)).optional(),
  durationUnits: uniqueItems(z.array(DurationUnitSchema).max(10)).optional(),
  hint: ActionHintSchema.optional(),
  deprecated: z.boolean().optional(),
  deprecationMessage: z.string().optional(),
});
/** `ActionParameter`. */
export type ActionParameter = z.infer<typeof ActionParameterSchema>;

// ---------------------------------------------------------------------------------------------
// Endpoint references, metrics configuration, description, list
// ---------------------------------------------------------------------------------------------

/** The spec's endpoint path pattern `^/.*$` (absolute path, single line). */
export const EndpointPathSchema = z.string().regex(/^\/.*$/, { message: 'Invalid path: must start with "/" (pattern ^/.*$)' });

/** A `callInterval`: how often the agent calls an endpoint, e.g. `500ms`, `10s`, `1m`. */
export const CallIntervalSchema = z
  .string()
  .regex(CALL_INTERVAL_PATTERN, { message: 'Invalid duration: expected <integer><unit> with unit ns, ms, s, m, h or d (pattern ^\\d+(ns|ms|s|m|h|d)$)' });

/** `DescribingEndpointReference`: `GET <path>` of a description (entries of the action list). */
export const DescribingEndpointReferenceSchema = z.looseObject({
  path: EndpointPathSchema,
  method: ReadHttpMethodSchema,
});
/** `DescribingEndpointReference`. */
export type DescribingEndpointReference = z.infer<typeof DescribingEndpointReferenceSchema>;

/** `MutatingEndpointReference`: path and uppercase method of prepare/start/stop. */
export const MutatingEndpointReferenceSchema = z.looseObject({
  path: EndpointPathSchema,
  method: MutatingHttpMethodSchema,
});
/** `MutatingEndpointReference`. */
export type MutatingEndpointReference = z.infer<typeof MutatingEndpointReferenceSchema>;

/** `MutatingEndpointReferenceWithCallInterval`: status and metric-query endpoints, polled every `callInterval`. */
export const MutatingEndpointReferenceWithCallIntervalSchema = MutatingEndpointReferenceSchema.extend({
  callInterval: CallIntervalSchema.optional(),
});
/** `MutatingEndpointReferenceWithCallInterval`. */
export type MutatingEndpointReferenceWithCallInterval = z.infer<typeof MutatingEndpointReferenceWithCallIntervalSchema>;

/** `MetricsQueryConfiguration`: endpoint and parameters of the action's metric query. */
export const MetricsQueryConfigurationSchema = z.looseObject({
  endpoint: MutatingEndpointReferenceWithCallIntervalSchema,
  parameters: uniqueItems(z.array(ActionParameterSchema)),
});
/** `MetricsQueryConfiguration`. */
export type MetricsQueryConfiguration = z.infer<typeof MetricsQueryConfigurationSchema>;

/** `MetricsConfiguration`. */
export const MetricsConfigurationSchema = z.looseObject({
  query: MetricsQueryConfigurationSchema.optional(),
});
/** `MetricsConfiguration`. */
export type MetricsConfiguration = z.infer<typeof MetricsConfigurationSchema>;

/** `ActionDescription`: everything the platform needs to offer, configure and drive an action. */
export const ActionDescriptionSchema = z.looseObject({
  id: maxChars(255),
  label: maxChars(255),
  icon: maxChars(1_000_000)
    .regex(/^data:.*$/, { message: 'Invalid icon: must be a data URI (pattern ^data:.*$)' })
    .optional(),
  version: maxChars(64),
  description: maxChars(2000),
  kind: ActionKindSchema,
  technology: maxChars(255).optional(),
  category: maxChars(255).optional(),
  targetSelection: TargetSelectionSchema.optional(),
  /** Deprecated: use `targetSelection.targetType`. */
  targetType: z.string().optional(),
  /** Deprecated: use `targetSelection.selectionTemplates`. */
  targetSelectionTemplates: TargetSelectionTemplatesSchema.optional(),
  timeControl: TimeControlSchema,
  parameters: uniqueItems(z.array(ActionParameterSchema).max(64)),
  additionalFlags: z.array(z.enum(['DISABLE_HEARTBEAT'])).optional(),
  hint: ActionHintSchema.optional(),
  widgets: WidgetsSchema.optional(),
  metrics: MetricsConfigurationSchema.optional(),
  prepare: MutatingEndpointReferenceSchema,
  start: MutatingEndpointReferenceSchema,
  status: MutatingEndpointReferenceWithCallIntervalSchema.optional(),
  stop: MutatingEndpointReferenceSchema.optional(),
});
/** `ActionDescription`. */
export type ActionDescription = z.infer<typeof ActionDescriptionSchema>;

/** `ActionList`: the index, one `GET /<id>` reference per action (an empty list is `[]`, never null). */
export const ActionListSchema = z.looseObject({
  actions: uniqueItems(z.array(DescribingEndpointReferenceSchema)),
});
/** `ActionList`. */
export type ActionList = z.infer<typeof ActionListSchema>;

// ---------------------------------------------------------------------------------------------
// Execution context and state
// ---------------------------------------------------------------------------------------------

/** `RestrictedEndpoint`: agent/platform traffic that attacks must not disturb. */
export const RestrictedEndpointSchema = z.looseObject({
  name: z.string(),
  url: z.string(),
  cidr: z.string().regex(/^([0-9]{1,3}\.){3}[0-9]{1,3}(\/[0-9]{1,2})?$/, {
    message: 'Invalid CIDR: expected an IPv4 address with optional /prefix',
  }),
  portMin: z.number().int().min(0).max(65535),
  portMax: z.number().int().min(0).max(65535),
});
/** `RestrictedEndpoint`. */
export type RestrictedEndpoint = z.infer<typeof RestrictedEndpointSchema>;

/**
 * `ExecutionContext`. Note `executionId` here is the platform's integer execution number, not the
 * UUID `executionId` of the request bodies.
 */
export const ExecutionContextSchema = z.looseObject({
  agentPid: z.number().int().optional(),
  agentAwsAccountId: z.string().optional(),
  restrictedEndpoints: z.array(RestrictedEndpointSchema).optional(),
  experimentKey: z.string().optional(),
  experimentUri: z.string().optional(),
  executionId: z.number().int().optional(),
  executionUri: z.string().optional(),
});
/** `ExecutionContext`. */
export type ExecutionContext = z.infer<typeof ExecutionContextSchema>;

/** `ActionState`: the author's JSON object state, handed from one endpoint call to the next. */
export const ActionStateSchema = JsonObjectSchema;
/** `ActionState`. */
export type ActionState = z.infer<typeof ActionStateSchema>;

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------
//
// What the agent sends is decoded by the reference with Go's `encoding/json` into the generated
// types of `action_kit_api`, so the agent (and Steadybit's Go test client) send whatever that
// decoding accepts: `null` in optional places, missing objects, IPv6 CIDRs the spec's IPv4 pattern
// does not allow. These schemas accept what Go accepts and normalise it the way Go does, field by
// field after its Go type, so the types an author sees stay true:
//
// | Go type of the field | JSON `null` or key missing | wrong JSON type |
// |---|---|---|
// | pointer (`*Target`, `*ExecutionContext`, `*string`, `*int`, `*[]RestrictedEndpoint`) | absent (never `null`) | 400 |
// | `string` / `int` | `""` / `0` | 400 (also a non-integer for `int`) |
// | map (`config`, `properties`, `state`, `Target.attributes`) | `{}` | 400 |
// | slice (an attribute's list of values) | `[]` | 400 |
// | struct value (an element of `restrictedEndpoints`) | every field its zero value | 400 |
// | `time.Time` (`timestamp` of a metric query) | `0001-01-01T00:00:00Z`, Go's zero time | 400 (not RFC 3339) |
//
// Unknown keys are kept (Go ignores them; the spec allows additional properties). Deliberately
// stricter than Go: `executionId` is required and must be a UUID (see {@link ExecutionIdSchema}),
// and a request body that is not a JSON object is a 400 (Go decodes `null` into zero values).
// Deliberately more lenient: integers are JSON numbers without a fraction once parsed (`1.0` and
// `1e2` pass; Go's `int` refuses both) within JavaScript's safe range (Go: int64).
//
// The spec's components above ({@link TargetSchema}, {@link ExecutionContextSchema},
// {@link RestrictedEndpointSchema}) stay as strict as the spec: they describe what a conforming
// client sends, and are what `actionkit-runtime/testing` sends; only the request bodies the runtime
// receives use the lenient forms below.

/** Go's zero `time.Time` as RFC 3339: what the reference's handler sees for a missing `timestamp`. */
export const GO_ZERO_TIME = '0001-01-01T00:00:00Z';

/**
 * A Go non-pointer field: JSON `null` or a missing key decode to the type's zero value; anything
 * else must match `schema`.
 */
function orZero<T extends z.ZodType>(schema: T, zero: () => z.output<T>) {
  return schema.nullish().transform((value): z.output<T> => value ?? zero());
}

/**
 * A Go struct: an object whose pointer fields (`pointerKeys`, declared `.optional()` in `shape`)
 * decode JSON `null` to nil — here: the key is removed before validation, so it is absent from the
 * result rather than `null`. Unknown keys pass through. Anything but an object is left to the
 * object schema to reject.
 */
function goStruct<S extends z.core.$ZodLooseShape>(shape: S, pointerKeys: readonly (keyof S & string)[]) {
  return z.preprocess((input) => {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) return input;
    const record = input as Record<string, unknown>;
    if (!pointerKeys.some((key) => record[key] === null)) return input;
    // A shallow copy (own keys, `__proto__` included, stay own keys): the agent's object is not changed.
    const copy: Record<string, unknown> = { ...record };
    for (const key of pointerKeys) if (copy[key] === null) delete copy[key];
    return copy;
  }, z.looseObject(shape));
}

/** A Go `string` field. */
const goString = () => orZero(z.string(), () => '');
/** A Go `int` field: any integer (the spec's port bounds are not Go's, and not checked by the reference). */
const goInt = () => orZero(z.number().int(), () => 0);
/** A Go `map[string]interface{}` field. */
const goMap = () => orZero(JsonObjectSchema, () => ({}));

/**
 * `Target` as received: `name` and `attributes` are Go non-pointer fields (missing → `""` / `{}`),
 * an attribute's `null` list is `[]` and a `null` item in a list is `""`.
 */
export const TargetInRequestSchema = goStruct(
  {
    name: goString(),
    attributes: orZero(z.record(z.string(), orZero(z.array(goString()), () => [])), () => ({})),
  },
  [],
);

/**
 * `RestrictedEndpoint` as received: every field a Go non-pointer (`""` / `0` when null or
 * missing); `cidr` is any string (IPv6 such as `::/0`, a host name, anything the agent knows about),
 * ports any integer. A `null` array element is an endpoint of zero values, as Go decodes it.
 */
export const RestrictedEndpointInRequestSchema = z.preprocess(
  (input) => (input === null ? {} : input),
  goStruct({ name: goString(), url: goString(), cidr: goString(), portMin: goInt(), portMax: goInt() }, []),
);

/** The spec's `ExecutionContext` fields, with restricted endpoints as received. */
const executionContextInRequestShape = { ...ExecutionContextSchema.shape, restrictedEndpoints: z.array(RestrictedEndpointInRequestSchema).optional() };

/** `ExecutionContext` as received: every field a Go pointer (`null` → absent). */
export const ExecutionContextInRequestSchema = goStruct(
  executionContextInRequestShape,
  Object.keys(executionContextInRequestShape) as (keyof typeof executionContextInRequestShape)[],
);

// What authors are told they receive must be what these produce.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const targetTypesAgree: Same<z.output<typeof TargetInRequestSchema>, Target> = true;
const contextTypesAgree: Same<z.output<typeof ExecutionContextInRequestSchema>, ExecutionContext> = true;
void targetTypesAgree;
void contextTypesAgree;

/**
 * The `executionId` of request bodies: a UUID in 8-4-4-4-12 hex form, any case, any version
 * (agents and test clients send arbitrary well-formed UUIDs). Required: the reference SDK silently
 * decoded a missing id as the zero UUID, which makes unrelated executions share state; we reject.
 */
export const ExecutionIdSchema = z.guid({
  error: (issue) =>
    typeof issue.input === 'string'
      ? 'Invalid UUID: expected 8-4-4-4-12 hex digits'
      : `Invalid input: expected UUID, received ${issue.input === undefined ? 'undefined' : jsonTypeName(issue.input)}`,
});
/** A request `executionId`. */
export type ExecutionId = z.infer<typeof ExecutionIdSchema>;

/**
 * `PrepareActionRequestBody`, decoded as Go does (see the table above): `config` and `properties`
 * (required by the spec; the Go test client sends `null` or leaves them out) become `{}` when null
 * or missing; `target` and `executionContext` are absent when null or missing.
 */
export const PrepareActionRequestBodySchema = goStruct(
  {
    executionId: ExecutionIdSchema,
    config: goMap(),
    target: TargetInRequestSchema.optional(),
    executionContext: ExecutionContextInRequestSchema.optional(),
    properties: goMap(),
  },
  ['target', 'executionContext'],
);
/** `PrepareActionRequestBody` after normalisation (`config` and `properties` always present). */
export type PrepareActionRequestBody = z.infer<typeof PrepareActionRequestBodySchema>;

/** The body of start, status and stop: the execution and the latest state (`{}` when null or missing). */
const stateRequestShape = { executionId: ExecutionIdSchema, state: orZero(ActionStateSchema, () => ({})) };

/** `StartActionRequestBody`: `state` as returned by prepare. */
export const StartActionRequestBodySchema = goStruct(stateRequestShape, []);
/** `StartActionRequestBody`. */
export type StartActionRequestBody = z.infer<typeof StartActionRequestBodySchema>;

/** `ActionStatusRequestBody`: the latest state. */
export const ActionStatusRequestBodySchema = goStruct(stateRequestShape, []);
/** `ActionStatusRequestBody`. */
export type ActionStatusRequestBody = z.infer<typeof ActionStatusRequestBodySchema>;

/** `StopActionRequestBody`: the latest state. */
export const StopActionRequestBodySchema = goStruct(stateRequestShape, []);
/** `StopActionRequestBody`. */
export type StopActionRequestBody = z.infer<typeof StopActionRequestBodySchema>;

/**
 * `QueryMetricsRequestBody`: a metric query for one timestamp of an execution; a null or missing
 * `timestamp` is Go's zero time ({@link GO_ZERO_TIME}), `config` `{}`, `target` absent.
 */
export const QueryMetricsRequestBodySchema = goStruct(
  {
    executionId: ExecutionIdSchema,
    timestamp: orZero(DateTimeSchema, () => GO_ZERO_TIME),
    config: goMap(),
    target: TargetInRequestSchema.optional(),
  },
  ['target'],
);
/** `QueryMetricsRequestBody`. */
export type QueryMetricsRequestBody = z.infer<typeof QueryMetricsRequestBodySchema>;

// ---------------------------------------------------------------------------------------------
// Results and responses
// ---------------------------------------------------------------------------------------------

/** Fields every lifecycle result may carry besides `state`/`completed`. */
const resultExtras = {
  error: ActionKitErrorSchema.optional(),
  messages: MessagesSchema.optional(),
  artifacts: ArtifactsSchema.optional(),
  metrics: MetricsSchema.optional(),
  modifications: ExecutionModificationsSchema.optional(),
  summary: SummarySchema.optional(),
};

/** `PrepareResult`: `state` is required (a null state fails the agent's validation). */
export const PrepareResultSchema = z.looseObject({ state: ActionStateSchema, ...resultExtras });
/** `PrepareResult`. */
export type PrepareResult = z.infer<typeof PrepareResultSchema>;

/** `StartResult`. */
export const StartResultSchema = z.looseObject({ state: ActionStateSchema.optional(), ...resultExtras });
/** `StartResult`. */
export type StartResult = z.infer<typeof StartResultSchema>;

/** `StatusResult`: the agent keeps polling while `completed` is false and no `error` is set. */
export const StatusResultSchema = z.looseObject({
  completed: z.boolean(),
  state: ActionStateSchema.optional(),
  ...resultExtras,
});
/** `StatusResult`. */
export type StatusResult = z.infer<typeof StatusResultSchema>;

/** `StopResult` (no state: the execution is over). */
export const StopResultSchema = z.looseObject({ ...resultExtras });
/** `StopResult`. */
export type StopResult = z.infer<typeof StopResultSchema>;

/** `QueryMetricsResult` (no `error` field: query failures are non-200 responses). */
export const QueryMetricsResultSchema = z.looseObject({
  messages: MessagesSchema.optional(),
  artifacts: ArtifactsSchema.optional(),
  metrics: MetricsSchema.optional(),
});
/** `QueryMetricsResult`. */
export type QueryMetricsResult = z.infer<typeof QueryMetricsResultSchema>;

/** `ActionListResponse`: the list or an error. */
export const ActionListResponseSchema = z.union([ActionListSchema, ActionKitErrorSchema]);
/** `DescribeActionResponse`: the description or an error. */
export const DescribeActionResponseSchema = z.union([ActionDescriptionSchema, ActionKitErrorSchema]);
/** `PrepareActionResponse`: the result or an error. */
export const PrepareActionResponseSchema = z.union([PrepareResultSchema, ActionKitErrorSchema]);
/** `StartActionResponse`: the result or an error. */
export const StartActionResponseSchema = z.union([StartResultSchema, ActionKitErrorSchema]);
/** `ActionStatusResponse`: the result or an error. */
export const ActionStatusResponseSchema = z.union([StatusResultSchema, ActionKitErrorSchema]);
/** `StopActionResponse`: the result or an error. */
export const StopActionResponseSchema = z.union([StopResultSchema, ActionKitErrorSchema]);
/** `QueryMetricsResponse`: the result or an error. */
export const QueryMetricsResponseSchema = z.union([QueryMetricsResultSchema, ActionKitErrorSchema]);

// ---------------------------------------------------------------------------------------------
// Issue formatting
// ---------------------------------------------------------------------------------------------

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/**
 * Render a zod issue path as `a.b[0].c`; keys that are not identifiers are quoted
 * (`target.attributes["k8s.pod"]`). An empty path renders as the empty string.
 */
export function formatZodPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && IDENTIFIER.test(key)) out += out === '' ? key : `.${key}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

function renderIssue(issue: z.core.$ZodIssue, prefix: readonly PropertyKey[]): string {
  const path = [...prefix, ...issue.path];
  const where = formatZodPath(path);
  let message = issue.message;
  // A plain union only says "Invalid input"; say what each variant wanted instead (first issue of
  // each), which is what an author needs to fix e.g. a parameter option.
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    const variants = issue.errors.map((branch) => {
      const first = branch[0];
      return first === undefined ? 'Invalid input' : renderIssue(first, path);
    });
    message = `${message}: matches none of the variants (${variants.join(' | ')})`;
  }
  return where === '' ? message : `${where}: ${message}`;
}

/** Issues rendered in a detail at most; a body with thousands of bad values gets a bounded answer. */
const MAX_RENDERED_ISSUES = 20;

/**
 * Render zod issues as `path.to.field: message` (array indices as `[i]`).
 *
 * @returns `first`: the first issue (used in the 400 title `Invalid request body: <first>` and in
 *   registration errors); `all`: the first {@link MAX_RENDERED_ISSUES} issues joined with `; `, and
 *   how many more there were (used as detail).
 */
export function formatZodIssues(error: z.ZodError): { first: string; all: string } {
  const rendered = error.issues.slice(0, MAX_RENDERED_ISSUES).map((issue) => renderIssue(issue, []));
  const more = error.issues.length - rendered.length;
  return { first: rendered[0] ?? 'Invalid input', all: more > 0 ? `${rendered.join('; ')}; … and ${more} more` : rendered.join('; ') };
}
