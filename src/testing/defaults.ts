/**
 * A `config` from a description's parameter `defaultValue`s, converted the way the platform sends
 * parameter values (durations in milliseconds, numbers as numbers, booleans as booleans), so an
 * action can be run "as the user would with every default".
 */
import { parseDurationMs } from '../api/description.js';
import type { ActionDescription, ActionParameter, JsonObject } from '../api/schemas.js';

/** Parameter types that carry no value (layout only). */
const LAYOUT_TYPES: ReadonlySet<string> = new Set(['separator', 'header']);
const NUMBER_TYPES: ReadonlySet<string> = new Set(['integer', 'percentage', 'stressng-workers']);
const LIST_TYPES: ReadonlySet<string> = new Set(['string[]', 'string_array', 'key_value']);

/** The defaults of a description, and the required parameters that have none. */
export interface DefaultConfig {
  /** Parameter name → converted default value. */
  config: JsonObject;
  /** Required parameters without a default value (files included): the caller must provide them. */
  missing: string[];
}

/**
 * Build the config of `description.parameters` from their `defaultValue`s.
 *
 * Conversion by type: `duration` `"30s"` → `30000` (ms; a bare number is taken as ms);
 * `integer`/`percentage`/`stressng-workers` → number; `boolean` → `true`/`false`;
 * `string[]`/`string_array`/`key_value` → the JSON array the default holds (a plain string becomes
 * a one-element list); everything else stays a string. A default that cannot be converted is
 * kept as the string, so the extension's own validation reports it.
 */
export function defaultConfig(description: ActionDescription): DefaultConfig {
  const config: JsonObject = {};
  const missing: string[] = [];
  for (const parameter of description.parameters) {
    if (LAYOUT_TYPES.has(parameter.type)) continue;
    if (parameter.defaultValue === undefined || parameter.type === 'file') {
      if (parameter.required === true) missing.push(parameter.name);
      continue;
    }
    config[parameter.name] = convert(parameter, parameter.defaultValue);
  }
  return { config, missing };
}

function convert(parameter: ActionParameter, value: string): unknown {
  const text = value.trim();
  if (parameter.type === 'duration') {
    if (/^\d+$/.test(text)) return Number(text);
    try {
      return parseDurationMs(text);
    } catch {
      return value;
    }
  }
  if (NUMBER_TYPES.has(parameter.type)) {
    const number = Number(text);
    return text !== '' && Number.isFinite(number) ? number : value;
  }
  if (parameter.type === 'boolean') return text === 'true' ? true : text === 'false' ? false : value;
  if (LIST_TYPES.has(parameter.type)) {
    try {
      const parsed = JSON.parse(text) as unknown;
      if (Array.isArray(parsed)) return parsed;
    } catch {
      // not JSON: a single value
    }
    return text === '' ? [] : [value];
  }
  return value;
}
