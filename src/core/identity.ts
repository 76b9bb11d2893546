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

/** A backup YAML rewrite that gives the instance these identity keys (see backupResource). */
export function setIdentity(keys: Record<string, string>): (doc: Record<string, unknown>) => void {
  return (doc) => {
    for (const s of instanceSections(doc)) {
      if (s.config) Object.assign(s.config, keys);
      if (s.expanded_config) Object.assign(s.expanded_config, keys);
    }
  };
}
