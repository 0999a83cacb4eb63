/**
 * Start-up cross-check of an action's `config` schema against its declared parameters: the agent
 * sends each parameter's value in the shape of its type (reference §4.3), so a schema that wants
 * another shape makes every prepare fail — found here, at start-up, instead of in front of the
 * agent.
 *
 * The schema is probed, not introspected: it is parsed (`safeParse`) with configs holding, for
 * every declared parameter, a value of the kind the agent sends for its type (the parameter's own
 * default first). Only a wrong *type* counts — `invalid_type`, an enum or literal of another type,
 * a union none of whose variants takes that type, a strict object refusing the key. A value the
 * schema refuses for its content (`min`, `url`, `regex`, refinements) is left to prepare, since
 * the probe cannot know which values the author allows. Whatever the schema is built of (pipes,
 * transforms, coercion, preprocess), what counts is what it does with the agent's kind of value.
 */
import type { z } from 'zod';
import { parseDurationMs, registrationError } from '../api/description.js';
import { formatZodPath, type ActionDescription, type ActionParameter, type ActionParameterType } from '../api/schemas.js';
import { jsonTypeName } from '../api/json-schema.js';

/** What the agent sends for a parameter type. */
interface AgentValue {
  /** In words, for messages. */
  sends: string;
  /** Values of that kind to probe with, most typical first. */
  samples: readonly unknown[];
  /** The value the agent sends for this `defaultValue`, or undefined if it cannot be read as one. */
  fromDefault(defaultValue: string): unknown;
}

const STRING_VALUE: AgentValue = { sends: 'a string', samples: ['example', '1'], fromDefault: (text) => text };

const NUMBER_VALUE: AgentValue = {
  sends: 'a number',
  samples: [1],
  fromDefault: (text) => (text.trim() !== '' && Number.isFinite(Number(text)) ? Number(text) : undefined),
};

const STRING_ARRAY_VALUE: AgentValue = {
  sends: 'an array of strings',
  samples: [['example'], ['1']],
  fromDefault: (text) => {
    const parsed = parseJson(text);
    return Array.isArray(parsed) && parsed.length > 0 && parsed.every((item) => typeof item === 'string') ? parsed : undefined;
  },
};

/**
 * What the agent sends in `config[name]` for each parameter type (reference §4.3,
 * `docs/parameter-types.md`); `undefined` for the types that carry no value (layout and target
 * selection). Exhaustive, so a type added to the spec's enum must be decided here.
 */
const AGENT_VALUES: Readonly<Record<ActionParameterType, AgentValue | undefined>> = {
  string: STRING_VALUE,
  textarea: STRING_VALUE,
  regex: STRING_VALUE,
  bitrate: { ...STRING_VALUE, samples: ['1mbit', '1'] },
  url: { ...STRING_VALUE, samples: ['https://example.com/', 'example'] },
  'string[]': STRING_ARRAY_VALUE,
  string_array: STRING_ARRAY_VALUE,
  integer: NUMBER_VALUE,
  'stressng-workers': NUMBER_VALUE,
  percentage: { ...NUMBER_VALUE, samples: [50] },
  duration: {
    sends: 'a number of milliseconds',
    samples: [30_000],
    fromDefault: (text) => {
      try {
        return parseDurationMs(text);
      } catch {
        return undefined;
      }
    },
  },
  boolean: { sends: 'a boolean', samples: [true, false], fromDefault: (text) => (text === 'true' ? true : text === 'false' ? false : undefined) },
  key_value: {
    sends: 'an array of {"key", "value"} objects (strings)',
    samples: [[{ key: 'key', value: 'value' }], [{ key: '1', value: '1' }]],
    fromDefault: (text) => {
      const parsed = parseJson(text);
      const isPair = (item: unknown): boolean =>
        typeof item === 'object' && item !== null && typeof (item as { key?: unknown }).key === 'string' && typeof (item as { value?: unknown }).value === 'string';
      return Array.isArray(parsed) && parsed.length > 0 && parsed.every(isPair) ? parsed : undefined;
    },
  },
  // The runtime replaces the upload by its absolute path before the schema runs.
  file: { sends: 'the absolute path of the uploaded file (a string)', samples: ['/tmp/steadybit/00000000-0000-4000-8000-000000000000/upload.txt'], fromDefault: () => undefined },
  separator: undefined,
  header: undefined,
  'target-selection': undefined,
};

/** One declared parameter with a value, and the values it is probed with. */
interface Probe {
  parameter: ActionParameter;
  index: number;
  agentValue: AgentValue;
  candidates: unknown[];
}

/**
 * Throws a {@link RegistrationError} when the action's `config` schema refuses the type of value
 * the agent sends for one of its declared parameters, or is no object schema at all. Returns warnings for start-up to log: keys
 * the schema requires that no declared parameter supplies (the agent never sends them, but a test
 * may), and a schema that refuses a config holding every parameter at once (the agent leaves
 * empty ones out). Does nothing without a schema, and for a schema that cannot be probed
 * synchronously (async refinements, a transform that throws on a probe value). A refusal of a
 * value that a transform or pipe produced from the sent one is the author's own, not counted.
 *
 * @throws RegistrationError e.g. `Action "com.acme.burn": parameters[0] "duration" is of type
 *   "duration", for which the agent sends a number of milliseconds (e.g. 30000), but the config
 *   schema refuses that at duration: Invalid input: expected string, received number`
 */
export function checkConfigFitsParameters(description: ActionDescription, schema: z.ZodType | undefined): string[] {
  if (schema === undefined) return [];
  const id = description.id;
  const probes: Probe[] = [];
  description.parameters.forEach((parameter, index) => {
    const agentValue = AGENT_VALUES[parameter.type];
    if (agentValue !== undefined) probes.push({ parameter, index, agentValue, candidates: candidatesOf(parameter, agentValue) });
  });

  // Round r gives every parameter its r-th candidate (its last when it has fewer): a parameter
  // fits if some round shows no type problem at its key.
  const rounds = Math.max(1, ...probes.map((probe) => probe.candidates.length));
  const fits = new Set<string>();
  const firstProblem = new Map<string, string>();
  const undeclared = new Map<string, string>();
  let rootProblem: string | undefined;
  let rootUnionProblem: string | undefined;
  for (let round = 0; round < rounds; round++) {
    const config: Record<string, unknown> = {};
    for (const probe of probes) config[probe.parameter.name] = probe.candidates[Math.min(round, probe.candidates.length - 1)];
    const issues = issuesOf(schema, config);
    // A schema that throws on an agent-shaped value (a transform that parses it) cannot be judged
    // by probing: refusing it on the other rounds' evidence would stop a working action.
    if (issues === undefined) return [];
    const problems = new Map<string, string>();
    for (const issue of issues) {
      const head = issue.path[0];
      if (head === undefined) {
        if (issue.code === 'unrecognized_keys') {
          for (const key of issue.keys) if (!problems.has(key)) problems.set(key, `the schema does not accept the key ${JSON.stringify(key)} (a strict object without it)`);
        } else if (issue.code === 'invalid_type') {
          // Not an object schema at all: no config the agent sends can pass.
          rootProblem ??= issue.message;
        } else if (isTypeProblem(issue, config)) {
          rootUnionProblem ??= issue.message;
        }
        continue;
      }
      const key = String(head);
      if (!Object.hasOwn(config, key)) {
        if (round === 0 && issue.code === 'invalid_type' && issue.path.length === 1) undeclared.set(key, issue.message);
        continue;
      }
      const sent = valueAt(config, issue.path);
      // The value the schema refused is not the one sent: a transform or pipe changed it first,
      // so the refusal is about the author's own output, not the agent's type.
      if ('input' in issue && issue.input !== sent) continue;
      if (!problems.has(key) && isTypeProblem(issue, sent)) problems.set(key, `${formatZodPath(issue.path)}: ${describeIssue(issue)}`);
    }
    for (const probe of probes) {
      const name = probe.parameter.name;
      const problem = problems.get(name);
      if (problem === undefined) fits.add(name);
      else if (!firstProblem.has(name)) firstProblem.set(name, problem);
    }
  }

  for (const { parameter, index, agentValue, candidates } of probes) {
    const problem = firstProblem.get(parameter.name);
    if (fits.has(parameter.name) || problem === undefined) continue;
    throw registrationError(
      id,
      `parameters[${index}].type`,
      `parameters[${index}] ${JSON.stringify(parameter.name)} is of type ${JSON.stringify(parameter.type)}, for which the agent sends ` +
        `${agentValue.sends} (e.g. ${JSON.stringify(candidates[0])}), but the config schema refuses that at ${problem}`,
    );
  }
  if (rootProblem !== undefined) {
    throw registrationError(id, undefined, `the config schema refuses every config object (the agent always sends a JSON object): ${rootProblem}`);
  }
  // Not a refusal: the probe sends every parameter at once, the agent leaves empty ones out (a
  // strict union of parameter groups refuses the first, takes the second).
  const warnings =
    rootUnionProblem === undefined
      ? []
      : [`Action ${JSON.stringify(id)}: the config schema refused a config holding a value for every declared parameter (${rootUnionProblem}); if the agent can send such a config, its prepares will fail`];
  return [...warnings, ...[...undeclared].map(
    ([key, message]) =>
      `Action ${JSON.stringify(id)}: the config schema requires ${JSON.stringify(key)} (${message}), but no parameter of that name with a value is declared: ` +
      'the agent never sends it, so its prepares will fail (declare the parameter, or make the key optional with .optional() or .default(…))',
  )];
}

/** The parameter's own default (as the agent sends it), its first option's value (string types), then the type's samples; no duplicates. */
function candidatesOf(parameter: ActionParameter, agentValue: AgentValue): unknown[] {
  const candidates: unknown[] = [];
  const add = (value: unknown): void => {
    if (value !== undefined && !candidates.some((seen) => JSON.stringify(seen) === JSON.stringify(value))) candidates.push(value);
  };
  if (parameter.defaultValue !== undefined && parameter.defaultValue !== '') add(agentValue.fromDefault(parameter.defaultValue));
  if (agentValue === STRING_VALUE || agentValue === STRING_ARRAY_VALUE) {
    const option = parameter.options?.find((entry): entry is { label: string; value: string } => typeof (entry as { value?: unknown }).value === 'string');
    if (option !== undefined) add(agentValue === STRING_ARRAY_VALUE ? [option.value] : option.value);
  }
  for (const sample of agentValue.samples) add(sample);
  return candidates;
}

/** The issues of parsing `config`; undefined when the schema cannot be probed synchronously. */
function issuesOf(schema: z.ZodType, config: Record<string, unknown>): z.core.$ZodIssue[] | undefined {
  try {
    const result = schema.safeParse(config, { reportInput: true });
    return result.success ? [] : result.error.issues;
  } catch {
    // An async refinement or transform, or a transform that throws on this value: prepare will tell.
    return undefined;
  }
}

/**
 * Whether `issue` says the value has the wrong type (not a wrong content): `value` is the value at
 * the issue's path.
 */
function isTypeProblem(issue: z.core.$ZodIssue, value: unknown): boolean {
  switch (issue.code) {
    case 'invalid_type':
    case 'unrecognized_keys':
      return true;
    case 'invalid_value':
      // An enum or literal: a type problem only when none of its values has the value's type.
      return !issue.values.some((allowed) => jsonTypeName(allowed) === jsonTypeName(value));
    case 'invalid_union':
      // Every variant refused the type (a discriminated union without a matching variant has none).
      return issue.errors.every((variant) => variant.some((inner) => isTypeProblem(inner, valueAt(value, inner.path))));
    default:
      return false;
  }
}

/** What the schema wanted, in words: a union lists what each variant wanted. */
function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code !== 'invalid_union' || issue.errors.length === 0) return issue.message;
  return `no variant of the union accepts it (${issue.errors.map((variant) => (variant[0] === undefined ? 'Invalid input' : describeIssue(variant[0]))).join(' | ')})`;
}

/** The value at `path` inside `value` (undefined where there is none). */
function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
