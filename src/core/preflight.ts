import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { IncusApi } from '../incus/api.js';
import type { Instance } from '../incus/types.js';
import type { Manifest } from './manifest.js';
import type { RestorePlanItem } from './restore.js';

/** Something an instance needs in its destination before Incus can import it. */
export interface Requirement {
  what: 'project' | 'profile' | 'network' | 'storage-pool' | 'volume' | 'path';
  project: string;
  /** For volumes: POOL/NAME; for paths: the host path a disk device mounts. */
  name: string;
  neededBy: string;
}

interface IndexContainer {
  profiles?: string[];
  devices?: Record<string, Record<string, string>>;
}

/** What an instance backup's index says (root pool, profiles, devices); undefined when it has none. */
function instanceIndex(m: Pick<Manifest, 'type' | 'index'>): { pool?: string; container?: IndexContainer } | undefined {
  if (m.type !== 'instance' || !m.index) return undefined;
  const index = m.index as { pool?: string; config?: { container?: IndexContainer } };
  return { ...(index.pool ? { pool: index.pool } : {}), ...(index.config?.container ? { container: index.config.container } : {}) };
}

/** Name mappings for restoring into a different environment (--project-map, --pool-map, ...). */
export interface Mappings {
  project: Map<string, string>;
  pool: Map<string, string>;
  profile: Map<string, string>;
  network: Map<string, string>;
}

/** Whether restoring an instance under `maps` needs its backup YAML rewritten. */
export function rewritesInstance(maps: Mappings | undefined): boolean {
  return !!maps && (maps.pool.size > 0 || maps.profile.size > 0 || maps.network.size > 0);
}

export const mapName = (m: Map<string, string>, v: string) => m.get(v) ?? v;

/**
 * What the archive's own backup/index.yaml says the instance needs: its profiles, the networks
 * its NICs use, its root pool and the custom volumes its disks attach, after mappings.
 */
export function requirementsOf(item: RestorePlanItem, maps: Mappings): Requirement[] {
  const m = item.entry.manifest;
  const project = item.dest.project;
  const neededBy = `${item.dest.kind} ${project}/${item.dest.kind === 'volume' ? `${item.dest.pool}/` : ''}${item.dest.name}`;
  const needProject: Requirement = { what: 'project', project, name: project, neededBy };
  if (item.dest.kind === 'volume') return [needProject, { what: 'storage-pool', project, name: item.dest.pool, neededBy }];
  const index = instanceIndex(m);
  if (!index) return [needProject];
  const c = index.container ?? {};
  const out: Requirement[] = [needProject];
  if (index.pool) out.push({ what: 'storage-pool', project, name: mapName(maps.pool, index.pool), neededBy });
  for (const p of c.profiles ?? []) out.push({ what: 'profile', project, name: mapName(maps.profile, p), neededBy });
  for (const [device, d] of Object.entries(c.devices ?? {})) {
    if (d.type === 'nic' && d.network) out.push({ what: 'network', project, name: mapName(maps.network, d.network), neededBy });
    if (d.type === 'disk' && d.pool && d.source && !d.source.startsWith('/')) {
      out.push({ what: 'volume', project, name: `${mapName(maps.pool, d.pool)}/${d.source.split('/')[0]}`, neededBy });
    }
    const path = hostPathOf(d);
    if (path) out.push({ what: 'path', project, name: path, neededBy: `${neededBy} (disk ${device})` });
  }
  return out;
}

/**
 * The --*-map entries no backup of this restore uses, as "--pool-map fast=ssd: no backup in this
 * restore uses pool fast": a typo in a map would otherwise restore onto the old names without a
 * word. Pools, profiles and networks are only judged when every instance backup says what it
 * uses (restic listings of old backups may not).
 */
export function unusedMappings(maps: Mappings, manifests: Pick<Manifest, 'type' | 'project' | 'pool' | 'index'>[]): string[] {
  const used = { project: new Set<string>(), pool: new Set<string>(), profile: new Set<string>(), network: new Set<string>() };
  let known = true;
  for (const m of manifests) {
    used.project.add(m.project);
    if (m.pool) used.pool.add(m.pool);
    if (m.type !== 'instance') continue;
    const index = instanceIndex(m);
    if (!index?.container) {
      known = false;
      continue;
    }
    if (index.pool) used.pool.add(index.pool);
    const c = index.container;
    for (const p of c.profiles ?? []) used.profile.add(p);
    for (const d of Object.values(c.devices ?? {})) {
      if (d.type === 'nic' && d.network) used.network.add(d.network);
      if (d.type === 'disk' && d.pool) used.pool.add(d.pool);
    }
  }
  const out: string[] = [];
  for (const kind of ['project', 'pool', 'profile', 'network'] as const) {
    if (kind !== 'project' && !known) continue;
    for (const [from, to] of maps[kind]) if (!used[kind].has(from)) out.push(`--${kind}-map ${from}=${to}: no backup in this restore uses ${kind} ${from}`);
  }
  return out;
}

export type Devices = Record<string, Record<string, string>>;

/**
 * The host directory or file a disk device mounts into an instance: Incus refuses the whole
 * import when it is missing (unless the device says required=false), after the upload.
 */
export function hostPathOf(d: Record<string, string>): string | undefined {
  return d.type === 'disk' && !d.pool && d.source?.startsWith('/') && d.required !== 'false' ? d.source : undefined;
}

/**
 * The host paths that instances get from their profiles' disk devices. Incus accepts a profile
 * whose host path is missing, but refuses to import an instance that uses it, after the
 * upload. A device of the instance's own, or of a later profile, with the same name replaces
 * the profile's. `profileDevices` gives a profile's devices as the destination will have them
 * (as the config step writes them, or as they are now), undefined when it has none of that
 * name (the profile requirement reports that). Judged only on the Incus host (see onIncusHost).
 */
export async function profilePathRequirements(
  api: IncusApi,
  items: RestorePlanItem[],
  maps: Mappings,
  profileDevices: (project: string, name: string) => Promise<Devices | undefined>,
): Promise<Requirement[]> {
  if (!onIncusHost(api)) return [];
  const out: Requirement[] = [];
  for (const item of items) {
    const index = instanceIndex(item.entry.manifest);
    if (item.dest.kind !== 'instance' || !index) continue;
    const c = index.container ?? {};
    const fromProfiles = new Map<string, { profile: string; device: Record<string, string> }>();
    for (const p of c.profiles ?? []) {
      const name = mapName(maps.profile, p);
      for (const [device, d] of Object.entries((await profileDevices(item.dest.project, name)) ?? {})) fromProfiles.set(device, { profile: name, device: d });
    }
    for (const [device, { profile, device: d }] of fromProfiles) {
      const path = hostPathOf(d);
      if (!path || c.devices?.[device]) continue;
      out.push({ what: 'path', project: item.dest.project, name: path, neededBy: `instance ${item.dest.project}/${item.dest.name} (disk ${device} of profile ${profile})` });
    }
  }
  return out;
}

/**
 * A NIC's addresses that an admin fixed: Incus refuses to start a second NIC with one of them
 * on the same network.
 */
const FIXED_ADDRESS_KEYS = ['ipv4.address', 'ipv6.address', 'hwaddr'] as const;

/** One fixed address of a NIC on a managed network. */
export interface FixedAddress {
  device: string;
  network: string;
  value: string;
}

/**
 * The fixed addresses (static IPs, a set MAC) of the archive's own NICs, on their networks
 * after --network-map.
 */
export function fixedAddressesOf(item: RestorePlanItem, maps: Mappings | undefined): FixedAddress[] {
  const index = instanceIndex(item.entry.manifest);
  if (!index) return [];
  const c = index.container ?? {};
  const out: FixedAddress[] = [];
  for (const [device, d] of Object.entries(c.devices ?? {})) {
    if (d.type !== 'nic' || !d.network) continue;
    const network = maps ? mapName(maps.network, d.network) : d.network;
    for (const k of FIXED_ADDRESS_KEYS) if (d[k]) out.push({ device, network, value: d[k]! });
  }
  return out;
}

/** A custom volume an instance's own disk device attaches (pool mapped), by pool and name. */
export interface AttachedVolume {
  device: string;
  pool: string;
  name: string;
}

/** The custom volumes the backed-up instance attaches (disks with a pool and a volume source). */
export function attachedVolumesOf(item: RestorePlanItem, maps: Mappings | undefined): AttachedVolume[] {
  const c = instanceIndex(item.entry.manifest)?.container;
  return customVolumeDisks(c?.devices ?? {}).map(({ device, pool, name }) => ({ device, pool: maps ? mapName(maps.pool, pool) : pool, name }));
}

function customVolumeDisks(devices: Record<string, Record<string, string>>): AttachedVolume[] {
  const out: AttachedVolume[] = [];
  // A source without a slash on a pool is a custom volume (a path would be absolute).
  for (const [device, d] of Object.entries(devices)) if (d.type === 'disk' && d.pool && d.source && !d.source.startsWith('/') && d.path !== '/') out.push({ device, pool: d.pool, name: d.source });
  return out;
}

/**
 * Which of `volumes` (attached by an instance of `project`) another instance attaches too, as
 * "volume default/data is attached to prod/db too": a copy started beside the original would
 * write into the original's filesystem. `volumeProject` says whose volumes a project uses.
 */
export function sharedVolumes(volumes: AttachedVolume[], project: string, instances: Instance[], volumeProject: (project: string) => string): string[] {
  const out: string[] = [];
  for (const v of volumes) {
    const holders = instances.filter(
      (i) => volumeProject(i.project ?? 'default') === volumeProject(project) && customVolumeDisks(i.expanded_devices ?? i.devices ?? {}).some((d) => d.pool === v.pool && d.name === v.name),
    );
    if (holders.length) out.push(`volume ${v.pool}/${v.name} is attached to ${holders.map((h) => `${h.project ?? 'default'}/${h.name}`).join(', ')} too`);
  }
  return out;
}

/**
 * Which of `addresses` (for an instance of `project`) a NIC of another instance already has on
 * the same network, as "eth0 10.0.0.5 is taken by prod/web on br0": Incus will not start the
 * second. `networkProject` says whose networks a project uses (its own with features.networks,
 * else the default project's).
 */
export function addressClashes(
  addresses: FixedAddress[],
  project: string,
  instances: Instance[],
  networkProject: (project: string) => string,
): string[] {
  const out: string[] = [];
  for (const a of addresses) {
    const holder = instances.find(
      (i) => networkProject(i.project ?? 'default') === networkProject(project) && nicAddresses(i, a.network).includes(a.value.toLowerCase()),
    );
    if (holder) out.push(`${a.device} ${a.value} is taken by ${holder.project ?? 'default'}/${holder.name} on ${a.network}`);
  }
  return out;
}

/** The addresses an instance's NICs on `network` have: fixed ones, and the MACs Incus gave them. */
function nicAddresses(i: Instance, network: string): string[] {
  const out: string[] = [];
  for (const [name, d] of Object.entries(i.expanded_devices ?? i.devices)) {
    if (d.type !== 'nic' || d.network !== network) continue;
    for (const v of [d['ipv4.address'], d['ipv6.address'], d.hwaddr ?? i.config[`volatile.${name}.hwaddr`]]) if (v) out.push(v.toLowerCase());
  }
  return out;
}

/**
 * The parts of an archive's backup/index.yaml that planning a restore reads: the root pool, the
 * profiles, the NICs' networks and fixed addresses, the disks' pools and sources
 * (requirementsOf), the cloud-init instance-id (kept across a restore), the snapshots' names and
 * expiry dates. Small enough to
 * travel in a restic snapshot tag, so a restore can be planned from the listing alone.
 */
export function planIndex(index: Record<string, unknown>): Record<string, unknown> {
  const optimized = optimizedIndex(index) ?? {};
  const i = index as { pool?: string; config?: { container?: IndexContainer & { config?: Record<string, string> } } };
  const c = i.config?.container ?? {};
  const devices: Record<string, Record<string, string>> = {};
  for (const [name, d] of Object.entries(c.devices ?? {})) {
    // A device of type none masks the profile device of its name (profilePathRequirements).
    if (d.type !== 'nic' && d.type !== 'disk' && d.type !== 'none') continue;
    const kept: Record<string, string> = { type: d.type };
    for (const k of ['network', 'pool', 'source', 'path', 'required', ...FIXED_ADDRESS_KEYS]) if (d[k] !== undefined) kept[k] = d[k]!;
    devices[name] = kept;
  }
  const cloudInitId = c.config?.['volatile.cloud-init.instance-id'];
  // The snapshots it brings (a replace's preview) and their expiry dates (kept across a restore).
  const names = (index as { snapshots?: unknown }).snapshots;
  const expiring = ((i.config as { snapshots?: { name?: unknown; expires_at?: unknown }[] } | undefined)?.snapshots ?? []).flatMap((sn) =>
    typeof sn.name === 'string' && typeof sn.expires_at === 'string' && Date.parse(sn.expires_at) > 0 ? [{ name: sn.name, expires_at: sn.expires_at }] : [],
  );
  return {
    ...(i.pool ? { pool: i.pool } : {}),
    ...optimized,
    ...(Array.isArray(names) && names.length ? { snapshots: names } : {}),
    config: {
      container: { profiles: c.profiles ?? [], devices, ...(cloudInitId ? { config: { 'volatile.cloud-init.instance-id': cloudInitId } } : {}) },
      ...(expiring.length ? { snapshots: expiring } : {}),
    },
  };
}

/**
 * An optimized archive's driver (it is the driver's own format, and restores only onto that
 * driver), as its index says; undefined for a plain tarball. All a volume's plan reads.
 */
export function optimizedIndex(index: Record<string, unknown>): { optimized: true; backend: string | undefined } | undefined {
  const o = index as { optimized?: boolean; backend?: string };
  return o.optimized ? { optimized: true, backend: o.backend } : undefined;
}

/**
 * Whether a project has profiles (or networks) of its own rather than the default project's,
 * given its config. An existing project has them when it says true. One being `creating` gets
 * `features.profiles` (images, storage volumes, buckets) unless its config says false, and
 * `features.networks` only when it says true.
 */
export function ownsFeature(config: Record<string, string> | undefined, feature: 'profiles' | 'networks' | 'storage.volumes', creating = false): boolean {
  const v = config?.[`features.${feature}`];
  return creating && feature === 'profiles' ? v !== 'false' : v === 'true';
}

/** One thing needed: a host path is the host's, whichever project's instance or profile needs it. */
const key = (r: Pick<Requirement, 'what' | 'project' | 'name'>) => `${r.what}\0${r.what === 'path' ? '' : r.project}\0${r.name}`;

/**
 * The requirements that exist neither in Incus now nor among what this same restore creates
 * (`willExist`, keys built with `requirementKey`). Incus resolves a project's profiles and
 * networks to the default project's when the project does not have its own: a missing one is
 * named where it would have to be created (`network br0 (project default)`).
 */
export async function missingRequirements(api: IncusApi, reqs: Requirement[], willExist: Set<string>): Promise<Requirement[]> {
  const seen = new Map<string, boolean>();
  const missing: Requirement[] = [];
  let projects: Promise<Map<string, Record<string, string>>> | undefined;
  const where = async (r: Requirement): Promise<Requirement> => {
    if ((r.what !== 'network' && r.what !== 'profile') || r.project === 'default') return r;
    projects ??= api.projectConfigs();
    const config = (await projects).get(r.project);
    return config && !ownsFeature(config, r.what === 'network' ? 'networks' : 'profiles') ? { ...r, project: 'default' } : r;
  };
  for (const r of reqs) {
    const k = key(r);
    if (willExist.has(k)) continue;
    if (!seen.has(k)) seen.set(k, await exists(api, r));
    if (!seen.get(k)) missing.push(await where(r));
  }
  return missing;
}

export function requirementKey(what: Requirement['what'], project: string, name: string): string {
  return key({ what, project, name });
}

/** How many different things `reqs` name (one host path needed by a profile and its instance is one). */
export function countDistinct(reqs: Requirement[]): number {
  return new Set(reqs.map(key)).size;
}

/**
 * Whether this process sees the Incus host's files: Incus's own directory beside the socket.
 * A container given only the socket sees other files, and must not judge host paths.
 */
function onIncusHost(api: IncusApi): boolean {
  return existsSync(join(dirname(api.client.socketPath), 'storage-pools'));
}

function exists(api: IncusApi, r: Requirement): Promise<boolean> {
  if (r.what === 'path') return Promise.resolve(!onIncusHost(api) || existsSync(r.name));
  if (r.what === 'project') return api.projectExists(r.name);
  const enc = encodeURIComponent;
  let path: string;
  if (r.what === 'profile') path = `/1.0/profiles/${enc(r.name)}`;
  else if (r.what === 'network') path = `/1.0/networks/${enc(r.name)}`;
  else if (r.what === 'storage-pool') path = `/1.0/storage-pools/${enc(r.name)}`;
  else {
    const [pool, vol] = r.name.split('/') as [string, string];
    path = `/1.0/storage-pools/${enc(pool)}/volumes/custom/${enc(vol)}`;
  }
  return api.client.exists(path, r.what === 'storage-pool' ? {} : { project: r.project });
}

export function describeRequirement(r: Requirement): string {
  if (r.what === 'path') return `host path ${r.name}, needed by ${r.neededBy}`;
  // Server-wide: no project of its own.
  if (r.what === 'storage-pool') return `storage-pool ${r.name}, needed by ${r.neededBy}`;
  if (r.what === 'project') return `project ${r.name}, needed by ${r.neededBy}`;
  return `${r.what} ${r.name} (project ${r.project}), needed by ${r.neededBy}`;
}

/**
 * The driver an optimized archive needs (the pool driver that wrote it, from its index.yaml),
 * or undefined for a plain tarball, which restores onto any pool.
 */
export function optimizedFor(item: RestorePlanItem): string | undefined {
  const index = item.entry.manifest.index as { optimized?: boolean; backend?: string } | undefined;
  return index?.optimized && index.backend ? index.backend : undefined;
}
