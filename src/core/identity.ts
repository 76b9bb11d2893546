import { yamlSections } from './tarrewrite.js';

/**
 * An instance's identity: what makes a restore the same machine rather than a copy of it (its
 * UUIDs, the instance-id cloud-init keys its first-boot work on, its NICs' MACs).
 */
export function identityKeys(config: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(config)) {
    if (k === 'volatile.uuid' || k === 'volatile.uuid.generation' || k === 'volatile.cloud-init.instance-id' || /^volatile\.[^.]+\.hwaddr$/.test(k)) out[k] = v;
  }
  return out;
}

/**
 * The volatile keys Incus lets a client set in a project that refuses the others (see
 * volatileLocked): the same list as Incus 6.0's own (internal/server/project/permissions.go).
 */
export function safeVolatileKey(k: string): boolean {
  return (
    ['volatile.apply_template', 'volatile.base_image', 'volatile.last_state.power', 'volatile.selinux.context'].includes(k) ||
    /^volatile\.[^.]+\.(apply_quota|hwaddr)$/.test(k)
  );
}

function isTrue(v: string | undefined): boolean {
  return ['true', '1', 'yes', 'on'].includes((v ?? '').toLowerCase());
}

/**
 * Whether Incus refuses a client's volatile keys (other than the safe ones) on `type`
 * instances of a project with this config: on creating them (an import) and on changing them.
 * Incus 6.0 checks this in every project with restrictions or with any `limits.*` key, unless
 * the project allows low-level options for the type.
 */
export function volatileLocked(config: Record<string, string>, type: string | undefined): boolean {
  const checked = isTrue(config.restricted) || Object.keys(config).some((k) => k.startsWith('limits.'));
  const lowLevel = type === 'virtual-machine' ? 'restricted.virtual-machines.lowlevel' : 'restricted.containers.lowlevel';
  return checked && config[lowLevel] !== 'allow';
}

type Section = { config?: Record<string, string>; expanded_config?: Record<string, string> };

/** The instance's config maps in a backup YAML (see yamlSections). */
function instanceSections(doc: Record<string, unknown>): Section[] {
  return yamlSections(doc).flatMap((s) => (s.container && typeof s.container === 'object' ? [s.container as Section] : []));
}

/**
 * A backup YAML rewrite that gives the instance these config keys (its identity, or what the
 * temporary copy was not given; see backupResource).
 */
export function setInstanceConfig(keys: Record<string, string>): (doc: Record<string, unknown>) => void {
  return (doc) => {
    for (const s of instanceSections(doc)) {
      if (s.config) Object.assign(s.config, keys);
      if (s.expanded_config) Object.assign(s.expanded_config, keys);
    }
  };
}

/** The same for a custom volume's backup YAML (index.yaml). */
export function setVolumeConfig(keys: Record<string, string>): (doc: Record<string, unknown>) => void {
  return (doc) => {
    for (const s of yamlSections(doc)) {
      const v = s.volume as { config?: Record<string, string> } | undefined;
      if (v && typeof v === 'object') v.config = { ...(v.config ?? {}), ...keys };
    }
  };
}

/**
 * A backup YAML rewrite that dates the instance (and its root volume) or the volume as its
 * source, not as the temporary copy that was exported: Incus's import takes `created_at` from
 * the archive.
 */
export function setCreatedAt(createdAt: string): (doc: Record<string, unknown>) => void {
  return (doc) => {
    for (const s of yamlSections(doc)) {
      for (const key of ['container', 'volume']) {
        const o = s[key] as { created_at?: unknown } | undefined;
        if (o && typeof o === 'object' && 'created_at' in o) o.created_at = createdAt;
      }
    }
  };
}
