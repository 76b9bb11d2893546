/**
 * How incus-backup lays its backups out in a restic repository. Pure: no restic, no I/O, so
 * every rule here is unit-tested.
 *
 * One backup = two snapshots, both with the same stable host and the resource's tags:
 *
 *  - the data snapshot (tag `ib-archive`): one file, the tarball exactly as Incus produced
 *    it, named `/incus_<project>_instance_<name>.tar` or `/incus_<project>_volume_<pool>_<name>.tar`
 *    (flat: restic 0.18.0 rejects a --stdin-filename with a directory). Its host, path and
 *    tags are the same for every backup of a resource, so `restic forget --group-by
 *    host,paths,tags` keeps one group per resource.
 *  - the manifest snapshot (tag `ib-manifest`), written only after the data snapshot exists:
 *    the full manifest.json as its one file, plus tags `ib-data=<data snapshot id>` (the link),
 *    `ib-version=<timestamp>` and `ib-summary=<the manifest without its index, base64url JSON>`.
 *
 * A backup counts once its manifest snapshot exists. The summary tag lets `list` build every
 * entry from a single `restic snapshots --json` call: each restic process pays about half a
 * second of key derivation, so reading one manifest file per backup would make listing a
 * repository of a few hundred backups take minutes. The full manifest (with the archive's
 * index.yaml, several KiB, too big for a tag) is read only by `verify --deep`, and by restores
 * of backups whose summary predates the plan's index fields (planIndex).
 *
 * The manifest snapshot's tags are unique per backup, so a raw `restic forget --keep-*` never
 * forgets a manifest: whichever data snapshots it keeps stay listed; manifests whose data it
 * removed show up as broken (for verify / prune to clean up).
 */
import { compareManifests, validateManifest, type Manifest } from '../../core/manifest.js';
import { optimizedIndex, planIndex } from '../../core/preflight.js';
import { SERVER_WIDE, type ResourceKey, type ResourceType } from '../../core/types.js';
import type { BackupEntry, BrokenBackup, ListFilter } from '../types.js';

/** The `--host` of every snapshot: stable across machines and hostname changes. */
export const SNAPSHOT_HOST = 'incus-backup';
export const TAG_ARCHIVE = 'ib-archive';
export const TAG_MANIFEST = 'ib-manifest';
/** On a manifest snapshot: prune must never remove this backup. */
export const TAG_PROTECTED = 'ib-protected';
const P_TYPE = 'ib-type=';
const P_PROJECT = 'ib-project=';
const P_POOL = 'ib-pool=';
const P_NAME = 'ib-name=';
const P_DATA = 'ib-data=';
const P_VERSION = 'ib-version=';
const P_SUMMARY = 'ib-summary=';

/**
 * Keeps letters, digits, `_`, `.` and `-` (every name Incus-backup accepts); anything else,
 * notably `,` (restic's tag separator) and `/`, becomes %XX.
 */
export function encodePart(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, (c) =>
    [...Buffer.from(c, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
}

export function decodePart(s: string): string {
  return decodeURIComponent(s);
}

function flatBase(k: ResourceKey): string {
  const parts = ['incus', k.project, k.type];
  if (k.type === 'volume') parts.push(k.pool ?? '');
  parts.push(k.name);
  return parts.map(encodePart).join('_');
}

/** File name of the tarball inside its data snapshot (no directory, see above). */
export function archiveFileName(k: ResourceKey): string {
  return `${flatBase(k)}.tar`;
}

export function manifestFileName(k: ResourceKey): string {
  return `${flatBase(k)}_manifest.json`;
}

export function resourceTags(k: ResourceKey): string[] {
  const tags = [P_TYPE + k.type, P_PROJECT + encodePart(k.project)];
  if (k.type === 'volume') tags.push(P_POOL + encodePart(k.pool ?? ''));
  tags.push(P_NAME + encodePart(k.name));
  return tags;
}

export function archiveTags(k: ResourceKey): string[] {
  return [TAG_ARCHIVE, ...resourceTags(k)];
}

export function manifestTags(m: Manifest, dataId: string): string[] {
  return [TAG_MANIFEST, ...resourceTags(m), P_DATA + dataId, P_VERSION + m.timestamp, P_SUMMARY + encodeSummary(m)];
}

/** restic's `--tag a,b` means "a and b"; one flag per tag keeps each one literal. */
export function tagArgs(tags: string[]): string[] {
  return tags.flatMap((t) => ['--tag', t]);
}

/**
 * The manifest for the listing's tag: without the archive's full index (that lives in the
 * manifest file), but with the few index fields a restore plan reads (planIndex), so that
 * planning needs no restic process per backup.
 */
export function encodeSummary(m: Manifest): string {
  const { index, ...rest } = m;
  const kept = !index ? undefined : m.type === 'instance' ? planIndex(index) : m.type === 'volume' ? optimizedIndex(index) : undefined;
  const summary = kept ? { ...rest, index: kept } : rest;
  return Buffer.from(JSON.stringify(summary), 'utf8').toString('base64url');
}

/** The summary as a manifest (its `index` only planIndex's fields, if any); throws ManifestError if it is not one. */
export function decodeSummary(s: string): Manifest {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
  } catch {
    v = undefined;
  }
  return validateManifest(v);
}

/** A snapshot as `restic snapshots --json` prints it (the fields used here). */
export interface SnapshotInfo {
  id: string;
  short_id?: string;
  time: string;
  paths?: string[];
  hostname?: string;
  tags?: string[] | null;
  summary?: { data_added?: number; total_bytes_processed?: number; backup_end?: string };
}

function tagValue(tags: readonly string[], prefix: string): string | undefined {
  const t = tags.find((x) => x.startsWith(prefix));
  return t === undefined ? undefined : t.slice(prefix.length);
}

/** The resource a snapshot's tags name, if they name one completely. */
export function keyFromTags(tags: readonly string[]): ResourceKey | undefined {
  const type = tagValue(tags, P_TYPE) as ResourceType | undefined;
  const project = tagValue(tags, P_PROJECT);
  const name = tagValue(tags, P_NAME);
  const pool = tagValue(tags, P_POOL);
  if (!type || !project || !name || !/^[a-z]+$/.test(type)) return undefined;
  if (type === 'volume' && !pool) return undefined;
  try {
    return type === 'volume'
      ? { type, project: decodePart(project), pool: decodePart(pool!), name: decodePart(name) }
      : { type, project: decodePart(project), name: decodePart(name) };
  } catch {
    return undefined;
  }
}

export function sameKey(a: ResourceKey, b: ResourceKey): boolean {
  return a.type === b.type && a.project === b.project && a.name === b.name && (a.type !== 'volume' || a.pool === b.pool);
}

/** Whether a backup is in the filter's scope; server-wide backups (the config) are in every project's. */
export function matchesFilter(k: ResourceKey, f: ListFilter): boolean {
  return (
    (!f.type || k.type === f.type) &&
    (!f.project || k.project === f.project || k.project === SERVER_WIDE) &&
    (!f.name || k.name === f.name) &&
    (!f.pool || k.pool === f.pool)
  );
}

/**
 * `restic dump` arguments for the newest data snapshot of a resource: our host, the tags every
 * such snapshot has (`--tag a,b` means all of them), its one path, then `latest FILE`.
 */
export function latestArchiveDumpArgs(k: ResourceKey): string[] {
  const path = `/${archiveFileName(k)}`;
  return ['--host', SNAPSHOT_HOST, '--tag', archiveTags(k).join(','), '--path', path, 'latest', path];
}

/**
 * The data snapshot that latestArchiveDumpArgs(k) makes restic pick from this listing: the
 * newest one that matches. undefined when none does, or when two share the newest time
 * (restic's pick between them is not ours to guess).
 */
export function latestArchiveSnapshot(snaps: readonly SnapshotInfo[], k: ResourceKey): string | undefined {
  const tags = archiveTags(k);
  const path = `/${archiveFileName(k)}`;
  let best: { id: string; time: number } | undefined;
  let tie = false;
  for (const s of snaps) {
    const have = s.tags ?? [];
    if (s.hostname !== SNAPSHOT_HOST || !tags.every((t) => have.includes(t)) || !(s.paths ?? []).includes(path)) continue;
    const time = Date.parse(s.time);
    if (!Number.isFinite(time)) return undefined;
    if (!best || time > best.time) {
      best = { id: s.id, time };
      tie = false;
    } else if (time === best.time) tie = true;
  }
  return tie ? undefined : best?.id;
}

/** A listed restic backup: the data snapshot is its location; the manifest snapshot is kept for removal. */
export interface ResticEntry extends BackupEntry {
  manifestSnapshot: string;
  /**
   * Copies of the manifest snapshot with the same summary (see pairSnapshots): what `restic tag`
   * leaves where it may add but not delete (an append-only rest-server). Removed and re-tagged
   * with it.
   */
  otherManifests?: string[];
  /** The version its tags and manifest file carry, when the listing had to rename it (see assignVersions). */
  storedVersion?: string;
}

/** Oldest first, as restic saved them; the id breaks a tie. */
function bySaveTime(a: SnapshotInfo, b: SnapshotInfo): number {
  return a.time.localeCompare(b.time) || a.id.localeCompare(b.id);
}

/**
 * The version each manifest snapshot is listed under. Two runs that back up one resource into
 * one repository within the same second each pick a free version from their own listing, so
 * both can save the same one. Then the one saved first keeps it and each later one is listed
 * under the next version that no manifest of the resource carries (`-1`, `-2`, ...), so that
 * `--version` names exactly one backup. A writer reserves these names too (versionsByResource).
 * Should the first one go (prune), the next is listed under the plain version again.
 */
export function assignVersions(snaps: readonly SnapshotInfo[]): Map<string, string> {
  const byResource = new Map<string, SnapshotInfo[]>();
  for (const s of snaps) {
    const tags = s.tags ?? [];
    if (!tags.includes(TAG_MANIFEST)) continue;
    const key = keyFromTags(tags);
    if (!key || !tagValue(tags, P_VERSION)) continue;
    const rid = resourceId(key);
    (byResource.get(rid) ?? byResource.set(rid, []).get(rid)!).push(s);
  }
  const out = new Map<string, string>();
  for (const group of byResource.values()) {
    const stored = new Set(group.map((s) => tagValue(s.tags ?? [], P_VERSION)!));
    const given = new Set<string>();
    for (const s of [...group].sort(bySaveTime)) {
      const v = tagValue(s.tags ?? [], P_VERSION)!;
      const listed = given.has(v) ? nextFreeVersion(v, new Set([...stored, ...given])) : v;
      given.add(listed);
      out.set(s.id, listed);
    }
  }
  return out;
}

/** How long a data snapshot without a manifest may still be a backup completing right now. */
export const LEFTOVER_AFTER_MS = 24 * 3600 * 1000;

/**
 * Pairs data snapshots with the manifest snapshots that name them. Complete pairs become
 * entries (sorted like the dir backend: by resource, then oldest first); everything else
 * of ours is broken. Snapshots without our role tags (other users of the repository) are ignored.
 *
 * A data snapshot without a manifest is a `leftover` (prune removes it) once its run is surely
 * over: a run writes its manifest within seconds of its data (at most restic's lock wait, 2
 * minutes, later), so one whose data was saved over a day ago, or before a later backup of the
 * same resource had even begun, was killed between the two (SIGKILL, power loss). Runs of one
 * resource do not overlap (a backup refuses a resource that a live run is snapshotting).
 */
export function pairSnapshots(
  snaps: SnapshotInfo[],
  filter: ListFilter = {},
  now = Date.now(),
): { entries: ResticEntry[]; broken: BrokenBackup[] } {
  const data = new Map<string, SnapshotInfo>();
  const manifests: SnapshotInfo[] = [];
  for (const s of snaps) {
    const tags = s.tags ?? [];
    if (tags.includes(TAG_ARCHIVE)) data.set(s.id, s);
    else if (tags.includes(TAG_MANIFEST)) manifests.push(s);
  }
  const entries: ResticEntry[] = [];
  const broken: BrokenBackup[] = [];
  const used = new Set<string>();
  const short = (id: string) => id.slice(0, 8);
  // `restic tag` (protect, unprotect) writes the re-tagged snapshot, then deletes the old one;
  // where it may not delete (an append-only rest-server) both stay: same data, same summary.
  // That is one backup, listed once, protected if any copy says so (prune must never take what
  // was meant to be kept); the later copies go with it (ResticEntry.otherManifests).
  const copiesOf = new Map<string, SnapshotInfo[]>();
  const firstOf = new Map<string, SnapshotInfo>();
  for (const ms of [...manifests].sort(bySaveTime)) {
    const tags = ms.tags ?? [];
    const dataId = tagValue(tags, P_DATA);
    const summary = tagValue(tags, P_SUMMARY);
    if (!dataId || !summary) continue;
    const first = firstOf.get(`${dataId} ${summary}`);
    if (!first) firstOf.set(`${dataId} ${summary}`, ms);
    else copiesOf.set(first.id, [...(copiesOf.get(first.id) ?? []), ms]);
  }
  const copies = new Set([...copiesOf.values()].flat().map((c) => c.id));
  const originals = manifests.filter((m) => !copies.has(m.id));
  const versions = assignVersions(originals);
  for (const ms of [...originals].sort(bySaveTime)) {
    const tags = ms.tags ?? [];
    const tagKey = keyFromTags(tags);
    const version = tagValue(tags, P_VERSION);
    const dataId = tagValue(tags, P_DATA);
    const brokenKey = { ...(tagKey ?? {}), ...(version ? { timestamp: version } : {}) };
    if (tagKey && !matchesFilter(tagKey, filter)) continue;
    const fail = (problem: string) => broken.push({ location: ms.id, key: brokenKey, problem });
    let manifest: Manifest;
    try {
      manifest = decodeSummary(tagValue(tags, P_SUMMARY) ?? '');
    } catch (e) {
      fail(`manifest snapshot ${short(ms.id)} has no valid summary: ${(e as Error).message}`);
      continue;
    }
    if (!tagKey || !sameKey(tagKey, manifest) || manifest.timestamp !== version) {
      fail(`manifest snapshot ${short(ms.id)}: its tags do not match its manifest`);
      continue;
    }
    const ds = dataId ? data.get(dataId) : undefined;
    if (!dataId || !ds) {
      fail(`data snapshot ${dataId ? short(dataId) : '(none)'} of manifest snapshot ${short(ms.id)} is gone (forgotten outside incus-backup?)`);
      continue;
    }
    if (used.has(ds.id)) {
      fail(`manifest snapshot ${short(ms.id)} is a second manifest for data snapshot ${short(ds.id)}`);
      continue;
    }
    const dataKey = keyFromTags(ds.tags ?? []);
    if (!dataKey || !sameKey(dataKey, manifest)) {
      fail(`data snapshot ${short(ds.id)} belongs to another resource than its manifest`);
      continue;
    }
    const stored = ds.summary?.total_bytes_processed;
    if (stored !== undefined && stored !== manifest.archive.storedSize) {
      used.add(ds.id);
      fail(`data snapshot ${short(ds.id)} holds ${stored} bytes, the manifest says ${manifest.archive.storedSize}`);
      continue;
    }
    used.add(ds.id);
    const dataAdded = ds.summary?.data_added;
    // Protection is a tag on the manifest snapshot, so it can change without rewriting the summary.
    const others = copiesOf.get(ms.id) ?? [];
    if ([ms, ...others].some((m) => (m.tags ?? []).includes(TAG_PROTECTED))) manifest.protected = true;
    const listed = versions.get(ms.id) ?? manifest.timestamp;
    const renamed = listed !== manifest.timestamp ? { storedVersion: manifest.timestamp } : {};
    manifest.timestamp = listed;
    entries.push({
      manifest,
      location: ds.id,
      manifestSnapshot: ms.id,
      ...(others.length ? { otherManifests: others.map((o) => o.id) } : {}),
      ...renamed,
      ...(dataAdded !== undefined ? { dataAdded } : {}),
    });
  }
  // The newest start of a complete backup, per resource.
  const lastStart = new Map<string, number>();
  for (const e of entries) {
    const rid = resourceId(e.manifest);
    lastStart.set(rid, Math.max(lastStart.get(rid) ?? -Infinity, Date.parse(data.get(e.location)!.time)));
  }
  for (const ds of data.values()) {
    if (used.has(ds.id)) continue;
    const key = keyFromTags(ds.tags ?? []);
    if (key && !matchesFilter(key, filter)) continue;
    const saved = ds.summary?.backup_end ?? ds.time;
    const end = Date.parse(saved);
    const since =
      key && (lastStart.get(resourceId(key)) ?? -Infinity) > end
        ? 'a later backup of it has completed since'
        : now - end > LEFTOVER_AFTER_MS
          ? 'it was saved over a day ago'
          : undefined;
    const size = ds.summary?.total_bytes_processed;
    broken.push({
      location: ds.id,
      key: key ?? {},
      problem: since
        ? `data snapshot ${short(ds.id)} (${saved}) has no manifest: a run killed before writing it left it, or the manifest snapshot was lost (${since}); \`incus-backup prune\` removes it`
        : `data snapshot ${short(ds.id)} (${saved}) has no manifest: its backup never completed, or is completing right now`,
      ...(since ? { leftover: true } : {}),
      ...(size !== undefined ? { size } : {}),
    });
  }
  entries.sort((a, b) => compareManifests(a.manifest, b.manifest));
  return { entries, broken };
}

/** `base`, or `base-1`, `base-2`, ... : the first version id not yet taken. */
export function nextFreeVersion(base: string, taken: ReadonlySet<string>): string {
  if (!taken.has(base)) return base;
  for (let n = 1; ; n++) if (!taken.has(`${base}-${n}`)) return `${base}-${n}`;
}

/** Versions already used per resource: those of manifest snapshot tags (valid or not), and those they are listed under (assignVersions). */
export function versionsByResource(snaps: SnapshotInfo[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const listed = assignVersions(snaps);
  for (const s of snaps) {
    const tags = s.tags ?? [];
    if (!tags.includes(TAG_MANIFEST)) continue;
    const key = keyFromTags(tags);
    const v = tagValue(tags, P_VERSION);
    if (!key || !v) continue;
    const id = resourceId(key);
    const set = out.get(id) ?? out.set(id, new Set()).get(id)!;
    set.add(v).add(listed.get(s.id) ?? v);
  }
  return out;
}

export function resourceId(k: ResourceKey): string {
  return resourceTags(k).join(',');
}
