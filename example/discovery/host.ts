/**
 * A DiscoveryKit discovery served next to the actions: the host this extension runs on, as one
 * target of the type `com.example.actionkit.host` — the type the CPU stress attack targets.
 *
 * It is an ordinary express router plus the index entries that point at it; the runtime serves
 * both on the extension's own port (same TLS, Request-Id, access log, metrics, Request-Timeout and
 * shutdown as the actions). It runs on the HTTP thread, so it only does cheap synchronous reads
 * of the `os` module; a discovery that calls remote APIs should pass `requestSignal(res)` to them.
 */
import * as os from 'node:os';
import express from 'express';
import { HOST_ATTRIBUTES, HOST_TARGET_TYPE } from '../lib/host.js';
import type { AttributeDescriptions, DiscoveredTarget, DiscoveryData, DiscoveryDescription, IndexContributions, TargetDescription } from 'actionkit-runtime';

const PATHS = {
  discovery: '/discovery/host',
  discover: '/discovery/host/targets',
  targetType: '/discovery/host/target-type',
  attributes: '/discovery/host/attributes',
} as const;

/** A monitor outline, as the platform shows next to host targets. */
const ICON = `data:image/svg+xml;base64,${Buffer.from(
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><rect x="2" y="3" width="20" height="14" rx="2"/><path d="M8 21h8M12 17v4"/></svg>',
).toString('base64')}`;

/** The host, now: discovered on every call, so a changed address shows at the next discovery run. */
function discoverHost(): DiscoveredTarget {
  const hostname = os.hostname();
  const ipv4 = Object.values(os.networkInterfaces())
    .flat()
    .filter((address) => address !== undefined && address.family === 'IPv4' && !address.internal)
    .map((address) => address!.address);
  return {
    id: hostname,
    label: hostname,
    targetType: HOST_TARGET_TYPE,
    attributes: {
      [HOST_ATTRIBUTES.name]: [hostname],
      [HOST_ATTRIBUTES.os]: [`${os.type()} ${os.release()}`],
      [HOST_ATTRIBUTES.cores]: [String(os.availableParallelism())],
      [HOST_ATTRIBUTES.ipv4]: ipv4,
    },
  };
}

const discovery: DiscoveryDescription = {
  id: 'com.example.actionkit.host-discovery',
  discover: { method: 'GET', path: PATHS.discover, callInterval: '1m' },
};

const targetType: TargetDescription = {
  id: HOST_TARGET_TYPE,
  version: '1.0.0',
  label: { one: 'Example host', other: 'Example hosts' },
  category: 'basic',
  icon: ICON,
  table: {
    columns: [{ attribute: HOST_ATTRIBUTES.name }, { attribute: HOST_ATTRIBUTES.os }, { attribute: HOST_ATTRIBUTES.cores }],
    orderBy: [{ attribute: HOST_ATTRIBUTES.name, direction: 'ASC' }],
  },
};

const attributes: AttributeDescriptions = {
  attributes: [
    { attribute: HOST_ATTRIBUTES.name, label: { one: 'Host name', other: 'Host names' } },
    { attribute: HOST_ATTRIBUTES.os, label: { one: 'Operating system', other: 'Operating systems' } },
    { attribute: HOST_ATTRIBUTES.cores, label: { one: 'CPU cores', other: 'CPU cores' } },
    { attribute: HOST_ATTRIBUTES.ipv4, label: { one: 'IPv4 address', other: 'IPv4 addresses' } },
  ],
};

/** The router serving the discovery's four endpoints. */
const router = express.Router();
router.get(PATHS.discovery, (_req, res) => void res.json(discovery));
router.get(PATHS.discover, (_req, res) => void res.json({ targets: [discoverHost()] } satisfies DiscoveryData));
router.get(PATHS.targetType, (_req, res) => void res.json(targetType));
router.get(PATHS.attributes, (_req, res) => void res.json(attributes));

/** The host discovery: pass `index` and `router` to `createExtension` (options `index` and `routers`). */
export const hostDiscovery: { index: IndexContributions; router: express.Router } = {
  index: {
    discoveries: [{ method: 'GET', path: PATHS.discovery }],
    targetTypes: [{ method: 'GET', path: PATHS.targetType }],
    targetAttributes: [{ method: 'GET', path: PATHS.attributes }],
  },
  router,
};
