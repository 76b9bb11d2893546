import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BackupEntry } from '../backends/types.js';
import { HashingStream, VerifyingStream } from './hashing.js';
import { draftManifest, type Manifest } from './manifest.js';
import type { RunContext } from './run.js';
import { SERVER_WIDE } from './types.js';
import { IbError } from '../errors.js';
import { CONFIG_KINDS, ConfigApi, configKindInfo, type ConfigKind } from '../incus/api.js';
import { IncusError } from '../incus/errors.js';
import type { Project } from '../incus/types.js';
import { hostPathOf, mapName, ownsFeature, requirementKey, type Devices, type Mappings, type Requirement } from './preflight.js';

/** One declarative object as stored in a config backup. */
export interface ConfigObject {
  kind: ConfigKind;
  /** Owning project for project-scoped kinds (profiles, networks, ACLs, zones). */
  project?: string;
  /** Nested kinds: the network (of a forward) or zone (of a record) the object lives in. */
  parent?: string;
  /** A forward's listen address; otherwise the object's name. */
  name: string;
  description: string;
  config: Record<string, string>;
  /** Profiles: devices. */
  devices?: Record<string, Record<string, string>>;
  /** Networks: type; storage pools: driver. Needed to create, not updatable. */
  type?: string;
  /** Network ACLs: rules. */
  ingress?: unknown[];
  egress?: unknown[];
  /** Network forwards: port rules. */
  ports?: unknown[];
  /** Network zone records: DNS entries. */
  entries?: unknown[];
}

export interface ConfigSnapshot {
  format: 1;
  capturedAt: string;
  /** The kinds captured; absent in backups made before forwards and zone records were (LEGACY_KINDS). */
  kinds?: ConfigKind[];
  objects: ConfigObject[];
  /** `kind/project/name key` of every value that was not written in clear. */
  redacted: string[];
}

export const REDACTED = '<redacted>';

/** What config backups captured before they had `kinds`: a restore of one leaves other kinds alone. */
const LEGACY_KINDS: readonly ConfigKind[] = ['project', 'storage-pool', 'network-acl', 'network-zone', 'network', 'profile'];

/** The kinds `backup` speaks for: only those are compared with the server (an old backup knows no forwards, so deletes none). */
function capturedKinds(backup: ConfigSnapshot): Set<ConfigKind> {
  return new Set(backup.kinds ?? LEGACY_KINDS);
}

/** Keys whose values are credentials: never written to a backup, never restored. */
const SECRET = /(password|secret|token|passphrase|private[._-]?key|\.key$)/i;

/** Keys Incus owns or that only make sense at creation: not compared, not restored. */
function ignoredKey(kind: ConfigKind, key: string): boolean {
  if (key.startsWith('volatile.')) return true;
  if (kind === 'storage-pool' && (key === 'source' || key === 'size' || /\.(pool_name|vg_name|thinpool_name)$/.test(key))) return true;
  return false;
}

const id = (o: Pick<ConfigObject, 'kind' | 'project' | 'parent' | 'name'>) => `${o.kind}/${o.project ?? ''}/${o.parent !== undefined ? `${o.parent}/` : ''}${o.name}`;

function projectsWithFeature(projects: Project[], feature: string | undefined): string[] {
  // The default project always has every feature; other projects only where enabled.
  return projects.filter((p) => p.name === 'default' || !feature || p.config[feature] === 'true').map((p) => p.name);
}

/** Reads the whole server's declarative state (all projects), with secrets redacted. */
export async function captureConfig(api: ConfigApi): Promise<ConfigSnapshot> {
  const projects = await api.list<Project>('project');
  const objects: ConfigObject[] = [];
  const redacted: string[] = [];
  for (const kind of CONFIG_KINDS) {
    const info = configKindInfo(kind);
    const scopes = info.projectScoped ? projectsWithFeature(projects, info.feature) : [undefined];
    for (const project of scopes) {
      // Nested kinds are read inside each object of their parent's kind captured already.
      const parents = info.parent ? objects.filter((o) => o.kind === info.parent && o.project === project).map((o) => o.name) : [undefined];
      const raw: { r: Record<string, unknown>; parent?: string }[] = [];
      for (const parent of parents) {
        try {
          for (const r of await api.list<Record<string, unknown>>(kind, project, parent)) raw.push({ r, ...(parent !== undefined ? { parent } : {}) });
        } catch (e) {
          // Zones and ACLs are absent on servers without the extension; a network of a type
          // without forwards (macvlan, physical...) says it does not support them: nothing to back up.
          if (kind === 'network-zone' || kind === 'network-acl') continue;
          if (kind === 'network-forward' && e instanceof IncusError && /does not support/i.test(e.serverMessage)) continue;
          throw e;
        }
      }
      for (const { r, parent } of raw) {
        if (kind === 'network' && r.managed === false) continue;
        const o = toObject(kind, r, project, parent);
        for (const [k, v] of Object.entries(o.config)) {
          if (SECRET.test(k) && v !== '') {
            o.config[k] = REDACTED;
            redacted.push(`${id(o)} ${k}`);
          }
        }
        objects.push(o);
      }
    }
  }
  return { format: 1, capturedAt: new Date().toISOString(), kinds: [...CONFIG_KINDS], objects, redacted };
}

function toObject(kind: ConfigKind, r: Record<string, unknown>, project: string | undefined, parent?: string): ConfigObject {
  const o: ConfigObject = {
    kind,
    ...(project ? { project } : {}),
    ...(parent !== undefined ? { parent } : {}),
    name: String(r[configKindInfo(kind).nameField ?? 'name']),
    description: String(r.description ?? ''),
    config: { ...((r.config as Record<string, string>) ?? {}) },
  };
  if (kind === 'profile') o.devices = (r.devices as ConfigObject['devices']) ?? {};
  if (kind === 'network') o.type = String(r.type ?? '');
  if (kind === 'storage-pool') o.type = String(r.driver ?? '');
  if (kind === 'network-acl') {
    o.ingress = (r.ingress as unknown[]) ?? [];
    o.egress = (r.egress as unknown[]) ?? [];
  }
  if (kind === 'network-forward') o.ports = (r.ports as unknown[]) ?? [];
  if (kind === 'network-zone-record') o.entries = (r.entries as unknown[]) ?? [];
  return o;
}

/** The lists of rules an object carries beside its config (compared and written whole). */
const RULES: Partial<Record<ConfigKind, readonly ('ingress' | 'egress' | 'ports' | 'entries')[]>> = {
  'network-acl': ['ingress', 'egress'],
  'network-forward': ['ports'],
  'network-zone-record': ['entries'],
};
const rulesOf = (kind: ConfigKind) => RULES[kind] ?? [];

/**
 * The config backup as restore all --apply-config applies it under the restore's maps. A mapped
 * project is moved: it and the objects it owns are created (or updated) under the new name. A
 * mapped profile, network or storage pool is substituted: the existing one the map names is used
 * instead, so the backup's object is left out and nothing is changed on the substitute, and
 * profile devices point at the substitutes, like the instances restored with them.
 */
export function mapConfig(snapshot: ConfigSnapshot, maps: Mappings): ConfigSnapshot {
  // A substituted network's forwards go with it: nothing is changed on the substitute.
  const substituted = (o: ConfigObject) =>
    (o.kind === 'profile' && maps.profile.has(o.name)) ||
    (o.kind === 'network' && maps.network.has(o.name)) ||
    (o.kind === 'network-forward' && maps.network.has(o.parent ?? '')) ||
    (o.kind === 'storage-pool' && maps.pool.has(o.name));
  const objects = snapshot.objects.filter((o) => !substituted(o)).map((o): ConfigObject => {
    const out: ConfigObject = { ...o, config: { ...o.config } };
    if (o.project !== undefined) out.project = mapName(maps.project, o.project);
    // The description Incus gives a project's default profile names the project.
    if (o.kind === 'profile' && o.name === 'default' && o.project !== undefined && o.description === `Default Incus profile for project ${o.project}`) {
      out.description = `Default Incus profile for project ${out.project}`;
    }
    if (o.kind === 'project') out.name = mapName(maps.project, o.name);
    if (o.devices) {
      out.devices = Object.fromEntries(
        Object.entries(o.devices).map(([name, d]) => {
          const dev = { ...d };
          if (dev.type === 'disk' && dev.pool) dev.pool = mapName(maps.pool, dev.pool);
          if (dev.type === 'nic' && dev.network) dev.network = mapName(maps.network, dev.network);
          return [name, dev];
        }),
      );
    }
    return out;
  });
  return { ...snapshot, objects };
}

export interface KeyChange {
  key: string;
  old?: string;
  new?: string;
}

export interface ConfigChange {
  object: ConfigObject;
  action: 'create' | 'update' | 'delete';
  changes: KeyChange[];
  /** Changing managed networks or storage pools can cut off running instances. */
  disruptive: boolean;
  /** A delete of a profile or network: what uses it now (Incus refuses to delete it then). */
  usedBy?: string[];
  /** A create Incus would refuse, and why: not applied (said in the preview and as a failure). */
  refused?: string;
}

/**
 * Creates Incus refuses whatever the order, as a restore drill into another project meets them:
 * a network other than OVN outside the default project, a zone whose name another project has
 * (zone names are server-wide), and what lives in either.
 */
function markRefusedCreates(changes: ConfigChange[], current: ConfigSnapshot): void {
  const refused = new Set<string>();
  for (const c of changes) {
    const o = c.object;
    if (c.action !== 'create') continue;
    if (o.kind === 'network' && o.project !== undefined && o.project !== 'default' && o.type !== 'ovn') {
      c.refused = `Incus creates ${o.type || 'such'} networks in the default project only`;
    }
    if (o.kind === 'network-zone') {
      const other = current.objects.find((h) => h.kind === 'network-zone' && h.name === o.name && h.project !== o.project);
      if (other) c.refused = `zone names are server-wide, and project ${other.project ?? 'default'} has ${o.name}`;
    }
    const parent = configKindInfo(o.kind).parent;
    if (parent && refused.has(id({ kind: parent, project: o.project, name: o.parent ?? '' }))) c.refused = `its ${parentNoun(o.kind)} ${o.parent} cannot be created`;
    if (c.refused) refused.add(id(o));
  }
}

/** `/1.0/instances/web?project=prod` → `instance prod/web` (a profile's or network's used_by: instances and profiles). */
export function describeUser(url: string): string {
  const [path = '', query = ''] = url.split('?', 2);
  const [, collection = '?', ...name] = path.split('/').filter(Boolean).map(decodeURIComponent);
  const project = new URLSearchParams(query).get('project') ?? 'default';
  return `${collection.replace(/s$/, '')} ${project}/${name.join('/')}`;
}

/** Marks each delete of a profile or network with what uses it now (see ConfigChange.usedBy). */
export async function markUsers(api: ConfigApi, changes: ConfigChange[]): Promise<void> {
  for (const c of changes) {
    const o = c.object;
    if (c.action !== 'delete' || (o.kind !== 'profile' && o.kind !== 'network')) continue;
    const users = await api.usedBy(o.kind, o.name, o.project).catch((): string[] => []);
    if (users.length) c.usedBy = users.map(describeUser);
  }
}

export interface ConfigScope {
  /** undefined = every project and the server-wide objects (storage pools). */
  project?: string;
}

function inScope(o: ConfigObject, scope: ConfigScope): boolean {
  if (scope.project === undefined) return true;
  if (o.kind === 'project') return o.name === scope.project;
  if (o.kind === 'storage-pool') return false;
  return o.project === scope.project;
}

function stable(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) =>
    val && typeof val === 'object' && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
      : val,
  );
}

function diffObject(want: ConfigObject, have: ConfigObject): KeyChange[] {
  const out: KeyChange[] = [];
  const keys = new Set([...Object.keys(want.config), ...Object.keys(have.config)]);
  for (const k of [...keys].sort()) {
    if (ignoredKey(want.kind, k)) continue;
    // A secret is not in the backup: what is set now stays. One missing now cannot be put back
    // by the tool, and is said (not "matches"): it has to be set by hand.
    if (want.config[k] === REDACTED) {
      if (have.config[k] === undefined) out.push({ key: k, new: REDACTED });
      continue;
    }
    if (want.config[k] !== have.config[k]) {
      out.push({ key: k, ...(have.config[k] !== undefined ? { old: have.config[k] } : {}), ...(want.config[k] !== undefined ? { new: want.config[k] } : {}) });
    }
  }
  if (want.description !== have.description) out.push({ key: 'description', old: have.description, new: want.description });
  if (want.kind === 'profile') {
    const names = new Set([...Object.keys(want.devices ?? {}), ...Object.keys(have.devices ?? {})]);
    for (const d of [...names].sort()) {
      const a = have.devices?.[d];
      const b = want.devices?.[d];
      if (stable(a) === stable(b)) continue;
      // A device on both sides: what changed in it, property by property (`devices.eth0.network`).
      if (a && b) {
        for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
          if (a[k] !== b[k]) out.push({ key: `devices.${d}.${k}`, ...(a[k] !== undefined ? { old: a[k] } : {}), ...(b[k] !== undefined ? { new: b[k] } : {}) });
        }
      } else out.push({ key: `devices.${d}`, ...(a ? { old: stable(a) } : {}), ...(b ? { new: stable(b) } : {}) });
    }
  }
  for (const k of rulesOf(want.kind)) {
    // A forward's ports and a record's entries are sets: the same ones in another order are no drift.
    const asSet = k === 'ports' || k === 'entries' ? (l: unknown[]) => l.map(stable).sort().join('\n') : stable;
    if (asSet(want[k] ?? []) !== asSet(have[k] ?? [])) out.push({ key: k, old: stable(have[k] ?? []), new: stable(want[k] ?? []) });
  }
  return out;
}

/**
 * What applying `backup` would change in `current`, within `scope`, in dependency order
 * (creates and updates: projects → pools → ACLs → zones → networks → profiles; deletes in the
 * reverse order). Deletes are listed only with `withDeletes` (--force); the default project and
 * the default profiles are never deleted.
 */
export function diffConfig(backup: ConfigSnapshot, current: ConfigSnapshot, scope: ConfigScope, withDeletes: boolean): ConfigChange[] {
  const want = backup.objects.filter((o) => inScope(o, scope));
  const kinds = capturedKinds(backup);
  const have = new Map(current.objects.filter((o) => inScope(o, scope) && kinds.has(o.kind)).map((o) => [id(o), o]));
  // A project created with its own profiles comes with an empty `default` profile: the
  // backup's default profile (root disk, NICs) is then an update of that one, not a create.
  for (const p of want) {
    if (p.kind !== 'project' || have.has(id(p)) || !ownsFeature(p.config, 'profiles', true)) continue;
    const empty: ConfigObject = { kind: 'profile', project: p.name, name: 'default', description: `Default Incus profile for project ${p.name}`, config: {}, devices: {} };
    if (!have.has(id(empty))) have.set(id(empty), empty);
  }
  const wantIds = new Set(want.map(id));
  const order = (k: ConfigKind) => CONFIG_KINDS.indexOf(k);
  const disruptive = (o: ConfigObject) => o.kind === 'network' || o.kind === 'network-forward' || o.kind === 'storage-pool';
  const out: ConfigChange[] = [];
  for (const w of [...want].sort((a, b) => order(a.kind) - order(b.kind))) {
    const h = have.get(id(w));
    if (!h) {
      // A create is shown as a diff against nothing, devices and rules included.
      const nothing: ConfigObject = { kind: w.kind, name: w.name, description: w.description, config: {}, devices: {}, ingress: [], egress: [], ports: [], entries: [] };
      out.push({ object: w, action: 'create', changes: diffObject(w, nothing), disruptive: false });
      continue;
    }
    const changes = diffObject(w, h);
    if (changes.length) out.push({ object: w, action: 'update', changes, disruptive: disruptive(w) });
  }
  markRefusedCreates(out, current);
  if (withDeletes) {
    const extra = [...have.values()].filter((h) => !wantIds.has(id(h)));
    for (const h of extra.sort((a, b) => order(b.kind) - order(a.kind))) {
      if ((h.kind === 'project' || h.kind === 'profile') && h.name === 'default') continue;
      out.push({ object: h, action: 'delete', changes: [], disruptive: disruptive(h) });
    }
  }
  return out;
}

/** Objects present now but not in the backup, which only --force would delete. */
export function extraObjects(backup: ConfigSnapshot, current: ConfigSnapshot, scope: ConfigScope): ConfigObject[] {
  const wantIds = new Set(backup.objects.filter((o) => inScope(o, scope)).map(id));
  const kinds = capturedKinds(backup);
  return current.objects.filter((o) => inScope(o, scope) && kinds.has(o.kind) && !wantIds.has(id(o)) && !(o.name === 'default' && (o.kind === 'project' || o.kind === 'profile')));
}

/** Applies one change; the caller collects failures (an object in use, say) and goes on. */
export async function applyChange(api: ConfigApi, c: ConfigChange): Promise<void> {
  const o = c.object;
  if (c.action === 'delete') return api.delete(o.kind, o.name, o.project, o.parent);
  const rules = Object.fromEntries(rulesOf(o.kind).map((k) => [k, o[k] ?? []]));
  if (c.action === 'create') {
    const config = Object.fromEntries(Object.entries(o.config).filter(([k, v]) => !k.startsWith('volatile.') && v !== REDACTED));
    const body: Record<string, unknown> = { [configKindInfo(o.kind).nameField ?? 'name']: o.name, description: o.description, config, ...rules };
    if (o.kind === 'profile') body.devices = o.devices ?? {};
    if (o.kind === 'network') body.type = o.type;
    if (o.kind === 'storage-pool') body.driver = o.type;
    return api.create(o.kind, body, o.project, o.parent);
  }
  await api.update(
    o.kind,
    o.name,
    (cur) => {
      const curConfig = (cur.config as Record<string, string>) ?? {};
      // Keep what Incus owns, what is creation-only and what was redacted; set the rest.
      const config: Record<string, string> = {};
      for (const [k, v] of Object.entries(curConfig)) if (ignoredKey(o.kind, k) || o.config[k] === REDACTED) config[k] = v;
      for (const [k, v] of Object.entries(o.config)) if (!ignoredKey(o.kind, k) && v !== REDACTED) config[k] = v;
      const body: Record<string, unknown> = { config, description: o.description, ...rules };
      if (o.kind === 'profile') body.devices = o.devices ?? {};
      return body;
    },
    o.project,
    o.parent,
  );
}

/** What a nested object's parent is called: a forward's `network`, a record's `zone`. */
function parentNoun(kind: ConfigKind): string {
  return configKindInfo(kind).parent === 'network' ? 'network' : 'zone';
}

/** A nested object's parent for documents: `{ network }` of a forward, `{ zone }` of a record. */
export function parentField(o: Pick<ConfigObject, 'kind' | 'parent'>): Record<string, string> {
  return o.parent === undefined ? {} : { [parentNoun(o.kind)]: o.parent };
}

export function objectLabel(o: Pick<ConfigObject, 'kind' | 'project' | 'parent' | 'name'>): string {
  const path = [o.project, o.parent, o.name].filter((p) => p !== undefined).join('/');
  return `${o.kind} ${path}`;
}

// --- storing and loading a config backup through any backend -------------------------------


export function configApi(ctx: RunContext): ConfigApi {
  return new ConfigApi(ctx.api.client);
}

/** Captures the server's declarative config and stores it as one checksummed JSON document. */
export async function backupConfig(ctx: RunContext, run?: Manifest['run']): Promise<BackupEntry> {
  const task = ctx.ui.task('config');
  task.phase('reading');
  const snapshot = await captureConfig(configApi(ctx));
  const body = Buffer.from(JSON.stringify(snapshot, null, 2) + '\n');
  const key = { type: 'config' as const, project: SERVER_WIDE, name: 'config' };
  const writer = await ctx.backend.createWriter({ key, when: new Date(), archiveBase: 'config.json', compression: 'none' });
  try {
    const hash = new HashingStream();
    await pipeline(Readable.from([body]), hash, writer.stream, { signal: ctx.signal });
    const server = await ctx.api.client.server();
    const entry = await writer.commit(
      draftManifest(key, writer.timestamp, server.environment.server_version, { size: hash.bytes, sha256: hash.sha256 }, {
        consistency: { mode: 'live', instant: snapshot.capturedAt },
        ...(run ? { run } : {}),
      }),
    );
    task.end(true, `${snapshot.objects.length} objects`);
    if (snapshot.redacted.length) ctx.ui.warn(`config: ${snapshot.redacted.length} secret value(s) were not stored (see README: secrets)`);
    const uncovered = await notCovered(configApi(ctx), snapshot);
    if (uncovered.length) ctx.ui.warn(`config: not in the config backup (this version does not capture them): ${uncovered.join(', ')}; keep their definitions elsewhere`);
    return entry;
  } catch (e) {
    await writer.abort().catch(() => undefined);
    task.end(false);
    throw e;
  }
}

/**
 * What the server has that the config backup does not capture, by kind and count: network load
 * balancers and peers (OVN networks only). Said at every config backup, so that their loss on a
 * rebuilt host is no surprise. A network whose type has neither answers with an error: none.
 */
async function notCovered(api: ConfigApi, snapshot: ConfigSnapshot): Promise<string[]> {
  const count = async (path: string, project?: string) =>
    (await api.client.get<unknown[]>(path, project ? { project } : {}).catch(() => [])).length;
  let balancers = 0;
  let peers = 0;
  for (const o of snapshot.objects) {
    if (o.kind !== 'network') continue;
    balancers += await count(`/1.0/networks/${encodeURIComponent(o.name)}/load-balancers`, o.project);
    peers += await count(`/1.0/networks/${encodeURIComponent(o.name)}/peers`, o.project);
  }
  return [...(balancers ? [`${balancers} network load balancer(s)`] : []), ...(peers ? [`${peers} network peer(s)`] : [])];
}

/**
 * The custom volumes that profiles this config writes attach and that do not exist (in the
 * profile's project, as Incus resolves it). Incus takes such a profile; an instance that uses
 * it does not start until the volume is there. Not a refusal: the worst day's `restore config
 * --apply` comes before the volumes are restored.
 */
export async function absentProfileVolumes(api: ConfigApi, changes: ConfigChange[]): Promise<string[]> {
  const out: string[] = [];
  for (const c of changes) {
    const o = c.object;
    if (c.action === 'delete' || o.kind !== 'profile') continue;
    for (const [device, d] of Object.entries(o.devices ?? {})) {
      if (d.type !== 'disk' || !d.pool || !d.source || d.source.startsWith('/')) continue;
      const volume = d.source.split('/')[0]!;
      const found = await api.client
        .get(`/1.0/storage-pools/${encodeURIComponent(d.pool)}/volumes/custom/${encodeURIComponent(volume)}`, o.project ? { project: o.project } : {})
        .then(
          () => true,
          (e: unknown) => !(e instanceof IncusError && e.notFound),
        );
      if (!found) out.push(`profile ${o.project ?? 'default'}/${o.name} (disk ${device}) attaches volume ${d.pool}/${volume}, which does not exist: instances using the profile will not start until it is restored (restore volume ${d.pool}/${volume})`);
    }
  }
  return out;
}

/** Reads a config backup back, checking its sha256 against the manifest. */
export async function loadConfig(ctx: Pick<RunContext, 'backend' | 'signal'>, entry: BackupEntry): Promise<ConfigSnapshot> {
  const m = entry.manifest;
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  await pipeline(await ctx.backend.openArchive(entry, ctx.signal), new VerifyingStream({ sha256: m.archive.sha256, size: m.archive.size, label: `config ${m.timestamp}` }), sink, { signal: ctx.signal });
  const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ConfigSnapshot;
  if (parsed.format !== 1 || !Array.isArray(parsed.objects)) throw new IbError(`config backup ${m.timestamp} is not in a format this version understands`);
  return parsed;
}

export interface ConfigRequirements {
  willExist: Set<string>;
  needs: Requirement[];
  resolve: (r: Requirement) => Requirement;
  /** The devices of each profile it writes, by profileKey(project, name). */
  profiles: Map<string, Devices>;
}

/**
 * What applying config `changes` brings into being (keys for missingRequirements) and what the
 * profiles it writes need: Incus refuses a profile whose NIC names a network that is neither
 * there nor created, and its instances would come back without it. `projects`: further projects
 * whose storage pools count (a pool is server-wide, but requirements carry a project).
 * `resolve` moves a requirement of a project that this config creates without profiles or
 * networks of its own to the default project, as Incus resolves them for an existing project.
 */
export function configRequirements(
  changes: ConfigChange[],
  projects: string[] = [],
): ConfigRequirements {
  const willExist = new Set<string>();
  const profiles = new Map<string, Devices>();
  const created = new Map<string, ConfigObject>();
  const needs: Requirement[] = [];
  const pools: string[] = [];
  const seenProjects = new Set(projects);
  for (const c of changes) {
    const o = c.object;
    if (c.action === 'delete' || c.refused) continue;
    if (o.kind === 'project' && c.action === 'create') created.set(o.name, o);
    if (o.kind === 'project') willExist.add(requirementKey('project', o.name, o.name));
    if (o.kind === 'profile' || o.kind === 'network') willExist.add(requirementKey(o.kind, o.project ?? 'default', o.name));
    if (o.kind === 'storage-pool') pools.push(o.name);
    if (o.kind !== 'profile') continue;
    const p = o.project ?? 'default';
    seenProjects.add(p);
    profiles.set(profileKey(p, o.name), o.devices ?? {});
    for (const [device, d] of Object.entries(o.devices ?? {})) {
      if (d.type === 'nic' && d.network) needs.push({ what: 'network', project: p, name: d.network, neededBy: `profile ${p}/${o.name}` });
      if (d.type === 'disk' && d.pool) needs.push({ what: 'storage-pool', project: p, name: d.pool, neededBy: `profile ${p}/${o.name}` });
      // Incus saves such a profile, then fails to update each instance that uses it (they will
      // not start), and refuses to import one.
      const path = hostPathOf(d);
      if (path) needs.push({ what: 'path', project: p, name: path, neededBy: `profile ${p}/${o.name} (disk ${device})` });
    }
  }
  for (const pool of pools) for (const p of seenProjects) willExist.add(requirementKey('storage-pool', p, pool));
  const resolve = (r: Requirement): Requirement => {
    const p = created.get(r.project);
    const feature = r.what === 'profile' ? 'profiles' : r.what === 'network' ? 'networks' : undefined;
    return p && feature && !ownsFeature(p.config, feature, true) ? { ...r, project: 'default' } : r;
  };
  return { willExist, needs, resolve, profiles };
}

export const profileKey = (project: string, name: string) => `${project}\0${name}`;

/**
 * Where the missing requirements of a config restore live, and how to bring them; `withMaps`:
 * the command takes the --*-map options (restore all).
 */
export function configNeedsHint(missing: Requirement[], withMaps: boolean): string {
  const kinds = new Set(missing.map((r) => r.what));
  const ways = ['the config this restore applies does not create them: create them first'];
  if (kinds.has('network') || kinds.has('profile')) {
    ways.push("restore them from the config backup where they live (the default project's networks and profiles serve projects without their own: `restore config --apply --project default`)");
  }
  if (kinds.has('storage-pool')) ways.push('storage pools are server-wide: `restore config --all-projects --apply` restores them, with the whole server\'s config');
  const maps = withMaps ? [...new Set(missing.flatMap((r) => ({ 'storage-pool': ['--pool-map'], network: ['--network-map'], profile: ['--profile-map'], project: ['--project-map'] })[r.what as string] ?? []))] : [];
  return maps.length ? `${ways.join(', ')}, or map names with ${maps.join('/')}` : ways.join(', or ');
}
