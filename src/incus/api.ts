import type { Readable } from 'node:stream';
import type { IncusClient, RequestOptions } from './client.js';
import { IncusError } from './errors.js';
import { refuseFullStaging, stagingDir, watchingStaging } from './staging.js';
import type { Instance, Project, StorageVolume } from './types.js';

const enc = encodeURIComponent;

/** Paths of the two kinds of resources that Incus backs up the same way. */
export type BackupSubject =
  | { kind: 'instance'; project: string; name: string }
  | { kind: 'volume'; project: string; pool: string; name: string };

/**
 * A config without `snapshots.schedule`: a temporary copy with one could be snapshotted by
 * Incus while it exists (a nightly run at midnight meets every `@daily` schedule), on the dir
 * driver a full copy more. The archive gets the source's schedule all the same.
 */
export function withoutSchedule(config: Record<string, string>): Record<string, string> {
  const { 'snapshots.schedule': _, ...rest } = config;
  return rest;
}

export function subjectPath(s: BackupSubject): string {
  return s.kind === 'instance'
    ? `/1.0/instances/${enc(s.name)}`
    : `/1.0/storage-pools/${enc(s.pool)}/volumes/custom/${enc(s.name)}`;
}

/** "instance PROJECT/NAME" or "volume PROJECT/POOL/NAME", for messages. */
export function subjectLabel(s: BackupSubject): string {
  return s.kind === 'instance' ? `instance ${s.project}/${s.name}` : `volume ${s.project}/${s.pool}/${s.name}`;
}

function names(urls: string[]): string[] {
  return urls.map((u) => decodeURIComponent(u.split('?')[0]!.split('/').pop()!));
}

export interface VolumeUser {
  instance: Instance;
  /** It has the volume through one of its profiles' devices. */
  viaProfile: boolean;
}

/**
 * Which of `instances` (a project's, listed with recursion) have custom volume `pool/name` as a
 * disk, through a device of their own or one of their profiles'. The volume's `used_by` is not
 * enough: it lists no instance that has the volume through a profile.
 */
export function volumeUsersIn(instances: Instance[], pool: string, name: string): VolumeUser[] {
  const uses = (d: Record<string, string> | undefined) => d?.type === 'disk' && d.pool === pool && d.source === name;
  const out: VolumeUser[] = [];
  for (const inst of instances) {
    const devices = Object.entries(inst.expanded_devices ?? inst.devices).filter(([, d]) => uses(d));
    if (devices.length) out.push({ instance: inst, viaProfile: devices.some(([dev]) => !uses(inst.devices[dev])) });
  }
  return out;
}

/**
 * Typed operations on top of the client. Everything that talks to Incus goes through
 * `IncusClient`; this file only knows paths and payloads.
 */
export class IncusApi {
  constructor(readonly client: IncusClient) {}

  exists(path: string, project: string): Promise<boolean> {
    return this.client.exists(path, { project });
  }

  // Projects
  listProjects(): Promise<Project[]> {
    return this.client.get<Project[]>('/1.0/projects', { query: { recursion: '1' } });
  }
  /** Every project's config, by name (one listing). */
  async projectConfigs(): Promise<Map<string, Record<string, string>>> {
    return new Map((await this.listProjects()).map((p) => [p.name, p.config ?? {}]));
  }
  getProject(name: string): Promise<Project> {
    return this.client.get<Project>(`/1.0/projects/${enc(name)}`);
  }
  projectExists(name: string): Promise<boolean> {
    return this.client.exists(`/1.0/projects/${enc(name)}`);
  }
  async createProject(name: string, config: Record<string, string> = {}, description = ''): Promise<void> {
    await this.client.run('POST', '/1.0/projects', { body: { name, config, description } });
  }
  async deleteProject(name: string): Promise<void> {
    await this.client.run('DELETE', `/1.0/projects/${enc(name)}`);
  }

  // Instances
  /** The names of the project's instances only (no recursion: one cheap request). */
  async instanceNames(project: string): Promise<string[]> {
    return names(await this.client.get<string[]>('/1.0/instances', { project }));
  }
  listInstances(project: string): Promise<Instance[]> {
    return this.client.get<Instance[]>('/1.0/instances', { project, query: { recursion: '1' } });
  }
  /** Every project's instances (each with its `project`). */
  listAllInstances(): Promise<Instance[]> {
    return this.client.get<Instance[]>('/1.0/instances', { query: { recursion: '1', 'all-projects': 'true' } });
  }
  /** The instances of the project that have custom volume `pool/name` as a disk (see volumeUsersIn). */
  async volumeUsers(project: string, pool: string, name: string): Promise<VolumeUser[]> {
    return volumeUsersIn(await this.listInstances(project), pool, name);
  }
  getInstance(project: string, name: string): Promise<Instance> {
    return this.client.get<Instance>(`/1.0/instances/${enc(name)}`, { project });
  }
  async setInstanceState(
    project: string,
    name: string,
    action: 'start' | 'stop' | 'freeze' | 'unfreeze',
    opts: { force?: boolean; timeout?: number } = {},
  ): Promise<void> {
    await this.client.run('PUT', `/1.0/instances/${enc(name)}/state`, {
      project,
      body: { action, force: opts.force ?? false, timeout: opts.timeout ?? 30 },
    });
  }
  async deleteInstance(project: string, name: string): Promise<void> {
    await this.client.run('DELETE', `/1.0/instances/${enc(name)}`, { project });
  }
  async renameInstance(project: string, name: string, newName: string): Promise<void> {
    await this.client.run('POST', `/1.0/instances/${enc(name)}`, { project, body: { name: newName } });
  }
  /**
   * PATCHes config keys with the current ETag, so a concurrent edit is refused, not lost. The
   * description goes along as it is: Incus 6.0 clears one a PATCH leaves out.
   */
  async patchInstanceConfig(project: string, name: string, config: Record<string, string>): Promise<void> {
    const path = `/1.0/instances/${enc(name)}`;
    const { value, etag } = await this.client.getWithEtag<Instance>(path, { project });
    await this.client.run('PATCH', path, { project, etag, body: { config, description: value.description } });
  }
  /** Reads the instance and PUTs what `mutate` makes of it, with its ETag; `mutate` returning the instance itself writes nothing. */
  async updateInstance(project: string, name: string, mutate: (i: Instance) => Instance): Promise<void> {
    const path = `/1.0/instances/${enc(name)}`;
    const { value, etag } = await this.client.getWithEtag<Instance>(path, { project });
    const next = mutate(value);
    if (next !== value) await this.client.run('PUT', path, { project, etag, body: next });
  }
  /** A full, independent copy of one snapshot of an instance (no snapshots of its own). */
  async copyInstanceFromSnapshot(
    project: string,
    source: string,
    snapshot: string,
    name: string,
    config: Record<string, string>,
  ): Promise<void> {
    await this.client.run('POST', '/1.0/instances', {
      project,
      body: { name, config, source: { type: 'copy', source: `${source}/${snapshot}` } },
    });
  }

  /** A storage pool's driver (dir, btrfs, zfs, lvm, ceph...); undefined when there is no such pool. */
  async poolDriver(pool: string): Promise<string | undefined> {
    return (await this.client.find<{ driver: string }>(`/1.0/storage-pools/${enc(pool)}`))?.driver;
  }

  /**
   * A profile as `project` sees it: Incus answers with the default project's for a project
   * without profiles of its own, and says so in `project`. Undefined when there is none.
   */
  profile(project: string, name: string): Promise<{ project: string; devices: Record<string, Record<string, string>> } | undefined> {
    return this.client.find(`/1.0/profiles/${enc(name)}`, { project });
  }

  // Custom volumes
  async listVolumes(project: string): Promise<StorageVolume[]> {
    const pools = await this.client.get<string[]>('/1.0/storage-pools');
    const out: StorageVolume[] = [];
    for (const pool of names(pools)) {
      const vols = await this.client.get<StorageVolume[]>(`/1.0/storage-pools/${enc(pool)}/volumes/custom`, {
        project,
        query: { recursion: '1' },
      });
      for (const v of vols) out.push({ ...v, pool });
    }
    return out;
  }
  /**
   * Every snapshot of the project's instances and custom volumes (in `onlyPool`, if given), with
   * what it belongs to: one request per storage pool (a pool's volume list names the snapshots too).
   */
  async listAllSnapshots(project: string, onlyPool?: string): Promise<{ of: BackupSubject; name: string }[]> {
    const out: { of: BackupSubject; name: string }[] = [];
    for (const pool of onlyPool !== undefined ? [onlyPool] : names(await this.client.get<string[]>('/1.0/storage-pools'))) {
      for (const url of await this.client.get<string[]>(`/1.0/storage-pools/${enc(pool)}/volumes`, { project })) {
        const m = /\/volumes\/(container|virtual-machine|custom)\/([^/?]+)\/snapshots\/([^/?]+)/.exec(url);
        if (!m) continue;
        const owner = decodeURIComponent(m[2]!);
        const of: BackupSubject = m[1] === 'custom' ? { kind: 'volume', project, pool, name: owner } : { kind: 'instance', project, name: owner };
        out.push({ of, name: decodeURIComponent(m[3]!) });
      }
    }
    return out;
  }
  getVolume(project: string, pool: string, name: string): Promise<StorageVolume> {
    return this.client.get<StorageVolume>(`/1.0/storage-pools/${enc(pool)}/volumes/custom/${enc(name)}`, { project });
  }
  async createVolume(
    project: string,
    pool: string,
    name: string,
    opts: { config?: Record<string, string>; contentType?: 'filesystem' | 'block' } = {},
  ): Promise<void> {
    await this.client.run('POST', `/1.0/storage-pools/${enc(pool)}/volumes/custom`, {
      project,
      body: { name, type: 'custom', content_type: opts.contentType ?? 'filesystem', config: opts.config ?? {} },
    });
  }
  async deleteVolume(project: string, pool: string, name: string): Promise<void> {
    await this.client.run('DELETE', `/1.0/storage-pools/${enc(pool)}/volumes/custom/${enc(name)}`, { project });
  }
  /**
   * Deletes what a run made or set aside (a temporary copy, a staged import, a replaced
   * original); one already gone is fine. A copy or an import of an instance that is protected
   * against deletion (`security.protection.delete`) is protected too: that is lifted first; a
   * copy that runs is stopped first.
   */
  async deleteOwn(s: BackupSubject): Promise<void> {
    try {
      if (s.kind === 'instance') await this.deleteInstance(s.project, s.name);
      else await this.deleteVolume(s.project, s.pool, s.name);
    } catch (e) {
      if (e instanceof IncusError && e.notFound) return;
      if (s.kind !== 'instance' || !(e instanceof IncusError)) throw e;
      if (/\bis protected\b/i.test(e.message)) await this.patchInstanceConfig(s.project, s.name, { 'security.protection.delete': 'false' });
      // A killed run's copy that a restarted daemon started (older backups did not stop that).
      else if (/\bis running\b/i.test(e.message)) await this.setInstanceState(s.project, s.name, 'stop', { force: true });
      else throw e;
      // An ephemeral one is gone once stopped.
      await this.deleteInstance(s.project, s.name).catch((again: unknown) => {
        if (!(again instanceof IncusError && again.notFound)) throw again;
      });
    }
  }
  async renameVolume(project: string, pool: string, name: string, newName: string): Promise<void> {
    await this.client.run('POST', `/1.0/storage-pools/${enc(pool)}/volumes/custom/${enc(name)}`, {
      project,
      body: { name: newName },
    });
  }
  /** As updateInstance, for a custom volume's config and description. */
  async updateVolume(project: string, pool: string, name: string, mutate: (v: StorageVolume) => StorageVolume): Promise<void> {
    const path = `/1.0/storage-pools/${enc(pool)}/volumes/custom/${enc(name)}`;
    const { value, etag } = await this.client.getWithEtag<StorageVolume>(path, { project });
    const v = mutate(value);
    if (v !== value) await this.client.run('PUT', path, { project, etag, body: { config: v.config, description: v.description } });
  }
  /** As patchInstanceConfig, for a volume (whose description a PATCH without one clears too). */
  async patchVolumeConfig(project: string, pool: string, name: string, config: Record<string, string>): Promise<void> {
    const path = `/1.0/storage-pools/${enc(pool)}/volumes/custom/${enc(name)}`;
    const { value, etag } = await this.client.getWithEtag<StorageVolume>(path, { project });
    await this.client.run('PATCH', path, { project, etag, body: { config, description: value.description } });
  }
  /**
   * A full, independent copy of one snapshot of a volume (no snapshots of its own). Incus copies
   * no config for a volume (unlike an instance): the copy gets the snapshot's, as `incus storage
   * volume copy` does, or it would lose its `user.*` and `snapshots.*` keys, a block volume's
   * size, and its `volatile.idmap.*` keys, which say how the files on it are shifted (without
   * them a container sees every owner as 1000000 + uid). All but its snapshot schedule (see
   * withoutSchedule); returns the whole config, for the archive.
   */
  async copyVolumeFromSnapshot(project: string, pool: string, source: StorageVolume, snapshot: string, name: string): Promise<Record<string, string>> {
    const snap = await this.client.get<{ config?: Record<string, string> }>(
      `/1.0/storage-pools/${enc(pool)}/volumes/custom/${enc(source.name)}/snapshots/${enc(snapshot)}`,
      { project },
    );
    const config = snap.config ?? {};
    await this.client.run('POST', `/1.0/storage-pools/${enc(pool)}/volumes/custom`, {
      project,
      body: {
        name,
        type: 'custom',
        config: withoutSchedule(config),
        description: source.description,
        content_type: source.content_type,
        source: { type: 'copy', pool, name: `${source.name}/${snapshot}`, volume_only: true },
      },
    });
    return config;
  }

  // Snapshots, server-side backups, import: the same API shape for instances and volumes
  async createSnapshot(s: BackupSubject, name: string, expiresAt: Date): Promise<void> {
    await this.client.run('POST', `${subjectPath(s)}/snapshots`, {
      project: s.project,
      body: { name, stateful: false, expires_at: expiresAt.toISOString() },
    });
  }
  async listSnapshots(s: BackupSubject): Promise<string[]> {
    return names(await this.client.get<string[]>(`${subjectPath(s)}/snapshots`, { project: s.project }));
  }
  /** Sets when a snapshot expires (Incus deletes it then). */
  async setSnapshotExpiry(s: BackupSubject, name: string, expiresAt: string): Promise<void> {
    await this.client.run('PUT', `${subjectPath(s)}/snapshots/${enc(name)}`, { project: s.project, body: { expires_at: expiresAt } });
  }
  async deleteSnapshot(s: BackupSubject, name: string): Promise<void> {
    await this.client.run('DELETE', `${subjectPath(s)}/snapshots/${enc(name)}`, { project: s.project });
  }
  async createServerBackup(
    s: BackupSubject,
    name: string,
    opts: { withSnapshots: boolean; optimized: boolean; expiresAt: Date; /** What is backed up (`s` may be its temporary copy). */ label?: string },
    signal?: AbortSignal,
  ): Promise<void> {
    const only = s.kind === 'instance' ? { instance_only: !opts.withSnapshots } : { volume_only: !opts.withSnapshots };
    // A full backups directory makes Incus 6.0 hang the backup (see staging.ts).
    await watchingStaging(stagingDir(this.client.socketPath), opts.label ?? subjectLabel(s), signal, (watched) =>
      this.client.run('POST', `${subjectPath(s)}/backups`, {
        project: s.project,
        signal: watched,
        body: {
          name,
          ...only,
          optimized_storage: opts.optimized,
          compression_algorithm: 'none',
          expires_at: opts.expiresAt.toISOString(),
        },
      }),
    );
  }
  /**
   * Refuses when Incus's backups directory is already (nearly) full: before a backup makes its
   * snapshot and temporary copy, which on a dir pool can take as long as the export.
   */
  checkStagingRoom(): Promise<void> {
    return refuseFullStaging(stagingDir(this.client.socketPath));
  }
  async listServerBackups(s: BackupSubject): Promise<string[]> {
    return names(await this.client.get<string[]>(`${subjectPath(s)}/backups`, { project: s.project }));
  }
  downloadServerBackup(s: BackupSubject, name: string, signal?: AbortSignal): Promise<{ stream: Readable; size?: number }> {
    return this.client.download(`${subjectPath(s)}/backups/${enc(name)}/export`, { project: s.project, signal });
  }
  async deleteServerBackup(s: BackupSubject, name: string): Promise<void> {
    await this.client.run('DELETE', `${subjectPath(s)}/backups/${enc(name)}`, { project: s.project });
  }

  /** Streams a backup tarball into Incus as a new instance or volume and waits for the import. */
  /** `onOperation`: the import's operation, once Incus has the whole upload (it goes on with it if the run stops waiting). */
  async importBackup(s: BackupSubject, body: Readable, opts: RequestOptions & { pool?: string; onOperation?: (op: string) => void } = {}): Promise<void> {
    const path = s.kind === 'instance' ? '/1.0/instances' : `/1.0/storage-pools/${enc(s.pool)}/volumes/custom`;
    const headers: Record<string, string> = { 'x-incus-name': s.name };
    if (opts.pool) headers['x-incus-pool'] = opts.pool;
    const { onOperation, ...request } = opts;
    const op = await this.client.upload(path, body, headers, { ...request, project: s.project });
    onOperation?.(op);
    await this.client.wait(op, opts.signal);
  }

  async createInstanceFromImage(project: string, name: string, alias: string, start: boolean): Promise<void> {
    await this.client.run('POST', '/1.0/instances', {
      project,
      body: { name, source: { type: 'image', alias }, start },
    });
  }
}

/**
 * Kinds of declarative objects, in the order they must be created (dependencies first): a
 * network names its ACLs (`security.acls`) and zones (`dns.zone.*`), which Incus checks; a zone
 * record lives in its zone, a forward in its network.
 */
export const CONFIG_KINDS = ['project', 'storage-pool', 'network-acl', 'network-zone', 'network-zone-record', 'network', 'network-forward', 'profile'] as const;
export type ConfigKind = (typeof CONFIG_KINDS)[number];

interface ConfigCollection {
  /** Top-level: the collection's path; nested: the path below the parent object. */
  path: string;
  projectScoped: boolean;
  feature?: string;
  /** Objects that live inside another (a forward in its network): that one's kind. */
  parent?: ConfigKind;
  /** The field that names an object, when it is not `name` (a forward's listen address). */
  nameField?: string;
}

const CONFIG_COLLECTION: Record<ConfigKind, ConfigCollection> = {
  project: { path: '/1.0/projects', projectScoped: false },
  'storage-pool': { path: '/1.0/storage-pools', projectScoped: false },
  network: { path: '/1.0/networks', projectScoped: true, feature: 'features.networks' },
  'network-forward': { path: 'forwards', parent: 'network', nameField: 'listen_address', projectScoped: true, feature: 'features.networks' },
  'network-acl': { path: '/1.0/network-acls', projectScoped: true, feature: 'features.networks' },
  'network-zone': { path: '/1.0/network-zones', projectScoped: true, feature: 'features.networks.zones' },
  'network-zone-record': { path: 'records', parent: 'network-zone', projectScoped: true, feature: 'features.networks.zones' },
  profile: { path: '/1.0/profiles', projectScoped: true, feature: 'features.profiles' },
};

export function configKindInfo(kind: ConfigKind): ConfigCollection {
  return CONFIG_COLLECTION[kind];
}

/** Generic access to declarative objects (projects, pools, networks and their forwards, ACLs, zones and their records, profiles). */
export class ConfigApi {
  constructor(readonly client: IncusClient) {}

  /** The collection of `kind`, inside `parent` (the network or zone's name) for nested kinds. */
  private where(kind: ConfigKind, project?: string, parent?: string): { path: string; opts: { project?: string } } {
    const c = CONFIG_COLLECTION[kind];
    const path = c.parent ? `${CONFIG_COLLECTION[c.parent].path}/${enc(parent ?? '')}/${c.path}` : c.path;
    return { path, opts: c.projectScoped && project ? { project } : {} };
  }

  list<T>(kind: ConfigKind, project?: string, parent?: string): Promise<T[]> {
    const { path, opts } = this.where(kind, project, parent);
    return this.client.get<T[]>(path, { query: { recursion: '1' }, ...opts });
  }

  async create(kind: ConfigKind, body: Record<string, unknown>, project?: string, parent?: string): Promise<void> {
    const { path, opts } = this.where(kind, project, parent);
    await this.client.run('POST', path, { body, ...opts });
  }

  /** Read-modify-write with the ETag, so a concurrent edit is refused rather than lost. */
  async update(kind: ConfigKind, name: string, mutate: (cur: Record<string, unknown>) => Record<string, unknown>, project?: string, parent?: string): Promise<void> {
    const { path: base, opts } = this.where(kind, project, parent);
    const path = `${base}/${enc(name)}`;
    const { value, etag } = await this.client.getWithEtag<Record<string, unknown>>(path, opts);
    await this.client.run('PUT', path, { ...opts, etag, body: mutate(value) });
  }

  /** What uses the object now (Incus's `used_by`: instance and profile URLs). */
  async usedBy(kind: ConfigKind, name: string, project?: string, parent?: string): Promise<string[]> {
    const { path, opts } = this.where(kind, project, parent);
    return (await this.client.get<{ used_by?: string[] }>(`${path}/${enc(name)}`, opts)).used_by ?? [];
  }

  async delete(kind: ConfigKind, name: string, project?: string, parent?: string): Promise<void> {
    const { path, opts } = this.where(kind, project, parent);
    await this.client.run('DELETE', `${path}/${enc(name)}`, opts);
  }
}

export interface Image {
  fingerprint: string;
  aliases: { name: string; description: string }[];
  properties: Record<string, string>;
  public: boolean;
  auto_update: boolean;
  cached: boolean;
  update_source?: { server: string; alias: string } | null;
  type: string;
  filename: string;
  size: number;
  architecture: string;
  profiles?: string[];
  /** Go's zero time (0001-01-01…) when it never expires. */
  expires_at?: string;
}

/** An image's settings that `incus image edit` changes (Incus's ImagePut). */
export interface ImageSettings {
  properties: Record<string, string>;
  public: boolean;
  auto_update: boolean;
  /** Incus gives an image ["default"] when a PUT leaves them out. */
  profiles: string[];
  /** Left as it is when absent (Incus ignores a zero time). */
  expires_at?: string;
}

/** Images: listing, streaming export and import, aliases. */
export class ImageApi {
  constructor(readonly client: IncusClient) {}

  list(project: string): Promise<Image[]> {
    return this.client.get<Image[]>('/1.0/images', { project, query: { recursion: '1' } });
  }

  get(project: string, fingerprint: string): Promise<Image> {
    return this.client.get<Image>(`/1.0/images/${enc(fingerprint)}`, { project });
  }

  /** The image file(s) as Incus serves them: a tarball, or multipart for split images. */
  async download(project: string, fingerprint: string, signal?: AbortSignal): Promise<{ stream: Readable; size?: number; contentType: string }> {
    return this.client.download(`/1.0/images/${enc(fingerprint)}/export`, { project, ...(signal ? { signal } : {}) });
  }

  /** Uploads what `download` gave (same content type), waits, returns the new fingerprint. */
  async import(project: string, body: Readable, contentType: string, opts: { public: boolean; filename?: string; signal?: AbortSignal }): Promise<string> {
    // The original file name (a unified image's; a split one's comes from its parts).
    const headers: Record<string, string> = { 'content-type': contentType, 'x-incus-public': opts.public ? '1' : '0', ...(opts.filename ? { 'x-incus-filename': opts.filename } : {}) };
    const op = await this.client.upload('/1.0/images', body, headers, { project, ...(opts.signal ? { signal: opts.signal } : {}) });
    const done = await this.client.wait(op, opts.signal);
    return String((done.metadata as { fingerprint?: string } | null)?.fingerprint ?? '');
  }

  async update(project: string, fingerprint: string, props: ImageSettings): Promise<void> {
    const path = `/1.0/images/${enc(fingerprint)}`;
    const { etag } = await this.client.getWithEtag(path, { project });
    await this.client.run('PUT', path, { project, etag, body: props });
  }

  async aliasTarget(project: string, name: string): Promise<string | undefined> {
    return (await this.client.find<{ target: string }>(`/1.0/images/aliases/${enc(name)}`, { project }))?.target;
  }

  async createAlias(project: string, name: string, target: string, description: string): Promise<void> {
    await this.client.run('POST', '/1.0/images/aliases', { project, body: { name, target, description } });
  }
}
