/**
 * The DiscoveryKit schemas (`src/api/discovery.ts`) and the merged index
 * (`src/api/extension-index.ts`): what the runtime serves at the index and what the client and the
 * checker accept from discovery endpoints.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DiscoveryDataSchema, TargetDescriptionSchema, TargetEnrichmentRuleSchema } from '../../src/api/discovery.js';
import { buildIndex, ExtensionIndexSchema, IndexContributionsSchema } from '../../src/api/extension-index.js';
import { formatZodIssues } from '../../src/api/schemas.js';

const ACTIONS = [{ method: 'GET' as const, path: '/com.example.a' }];

function issues(result: { success: boolean; error?: Parameters<typeof formatZodIssues>[0] }): string {
  return result.success ? '' : formatZodIssues(result.error!).all;
}

describe('the merged index', () => {
  test('only actions: the ActionKit list alone', () => {
    assert.deepEqual(buildIndex(ACTIONS, {}), { actions: ACTIONS });
  });

  test('one DiscoveryKit list given: the other three are served empty, so the DiscoveryList is complete', () => {
    const index = buildIndex(ACTIONS, IndexContributionsSchema.parse({ discoveries: [{ method: 'GET', path: '/d' }] }));
    assert.deepEqual(index, { actions: ACTIONS, discoveries: [{ method: 'GET', path: '/d' }], targetTypes: [], targetAttributes: [], targetEnrichmentRules: [] });
    assert.equal(issues(ExtensionIndexSchema.safeParse(index)), '');
  });

  test('other kits stand alone: no DiscoveryKit lists added for advice, preflights or event listeners', () => {
    const contributions = {
      advice: [{ method: 'GET', path: '/advice' }],
      preflights: [{ method: 'GET', path: '/preflight' }],
      eventListeners: [{ method: 'post', path: '/events', listenTo: ['*'] }],
    };
    assert.deepEqual(buildIndex(ACTIONS, IndexContributionsSchema.parse(contributions)), { actions: ACTIONS, ...contributions });
  });

  test('an index with a partial DiscoveryList is invalid, naming the missing list', () => {
    const result = ExtensionIndexSchema.safeParse({ actions: ACTIONS, discoveries: [] });
    assert.match(issues(result), /targetTypes: .*\(DiscoveryList\)/);
  });

  test('contributions: DiscoveryKit references are GETs with absolute paths, unique; event listeners need listenTo', () => {
    assert.match(issues(IndexContributionsSchema.safeParse({ targetTypes: [{ method: 'GET', path: 'relative' }] })), /targetTypes\[0\]\.path: Invalid path/);
    assert.match(issues(IndexContributionsSchema.safeParse({ discoveries: [{ method: 'GET', path: '/d' }, { path: '/d', method: 'GET' }] })), /discoveries\[1\]: Duplicate item/);
    assert.match(issues(IndexContributionsSchema.safeParse({ eventListeners: [{ method: 'POST', path: '/e' }] })), /eventListeners\[0\]\.listenTo/);
    assert.match(issues(IndexContributionsSchema.safeParse({ eventListeners: [{ method: 'GET', path: '/e', listenTo: [] }] })), /expected POST, PUT or DELETE/);
    assert.match(issues(IndexContributionsSchema.safeParse({ actions: [] })), /actions/);
  });
});

describe('DiscoveryKit answers', () => {
  test('discovered targets need id, label, targetType and string-list attributes', () => {
    assert.equal(issues(DiscoveryDataSchema.safeParse({ targets: [{ id: 'a', label: 'A', targetType: 't', attributes: { k: ['v'] } }] })), '');
    assert.equal(issues(DiscoveryDataSchema.safeParse({})), '', 'both lists are optional');
    assert.match(issues(DiscoveryDataSchema.safeParse({ targets: [{ id: 'a', label: 'A', attributes: { k: 'v' } }] })), /targets\[0\]\.targetType.*targets\[0\]\.attributes\.k/);
  });

  test('a target type: table required, icon must be a data URI', () => {
    const type = { id: 't', version: '1', label: { one: 'T', other: 'Ts' }, table: { columns: [{ attribute: 'a' }], orderBy: [{ attribute: 'a', direction: 'ASC' }] } };
    assert.equal(issues(TargetDescriptionSchema.safeParse(type)), '');
    assert.match(issues(TargetDescriptionSchema.safeParse({ ...type, icon: 'https://x/icon.svg' })), /icon: Invalid icon/);
    assert.match(issues(TargetDescriptionSchema.safeParse({ ...type, table: { columns: [], orderBy: [{ attribute: 'a', direction: 'UP' }] } })), /table\.orderBy\[0\]\.direction/);
  });

  test('an enrichment rule: matchers from the spec, attributes unique', () => {
    const side = { type: 't', selector: { 'k8s.pod': '${dest.k8s.pod}' } };
    const rule = { id: 'r', version: '1', src: side, dest: side, attributes: [{ name: 'a', matcher: 'equals' }] };
    assert.equal(issues(TargetEnrichmentRuleSchema.safeParse(rule)), '');
    assert.match(issues(TargetEnrichmentRuleSchema.safeParse({ ...rule, attributes: [{ name: 'a', matcher: 'like' }] })), /attributes\[0\]\.matcher/);
    assert.match(issues(TargetEnrichmentRuleSchema.safeParse({ ...rule, attributes: [rule.attributes[0], rule.attributes[0]] })), /Duplicate item/);
  });
});
