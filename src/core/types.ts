/** What is backed up: an instance, a custom volume (pool-scoped) or the server's config. */
export type ResourceType = 'instance' | 'volume' | 'config' | 'image';

export interface ResourceKey {
  type: ResourceType;
  project: string;
  name: string;
  /** Custom volumes only. */
  pool?: string;
}

/** `immutable`: an image, which never changes once Incus has it (its fingerprint is its content's hash). */
export type ConsistencyMode = 'snapshot' | 'stopped' | 'freeze' | 'live' | 'immutable';
export type Compression = 'none' | 'gzip' | 'zstd' | 'xz';

export function keyLabel(k: ResourceKey): string {
  if (k.type === 'volume') return `${k.project}/${k.pool}/${k.name}`;
  return `${k.project}/${k.name}`;
}

/** The project recorded for server-wide resources (the declarative config). */
export const SERVER_WIDE = '*';

/** Log levels, least to most severe (--log-level, the config file's log.level, the JSON log). */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
