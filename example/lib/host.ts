/**
 * The host target type: discovered by `../discovery/host.ts` (main thread), targeted by the CPU
 * stress attack (worker threads) — kept here so the action modules need not load the router.
 */

/** The target type of the discovered host. */
export const HOST_TARGET_TYPE = 'com.example.actionkit.host';

/** The attributes every host target carries. */
export const HOST_ATTRIBUTES = {
  name: 'example.host.name',
  os: 'example.host.os',
  cores: 'example.host.cores',
  ipv4: 'example.host.ipv4',
} as const;
