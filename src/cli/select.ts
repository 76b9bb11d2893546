import type { Backend, BackupEntry, BrokenBackup, ListFilter } from '../backends/types.js';
import { compareTimestamps, formatTimestamp } from '../core/manifest.js';
import { SERVER_WIDE, type ResourceType } from '../core/types.js';
import { Option } from 'clipanion';
import * as t from 'typanion';
import { UsageError } from '../errors.js';

/** The key of one resource's group in groupByResource. */
function groupKey(k: { type: string; project: string; pool?: string | undefined; name: string }): string {
  return `${k.type}\0${k.project}\0${k.pool ?? ''}\0${k.name}`;
}

/** Groups a backend listing by resource, each group oldest first. */
export function groupByResource(entries: BackupEntry[]): Map<string, BackupEntry[]> {
  const groups = new Map<string, BackupEntry[]>();
  for (const e of entries) {
    const k = groupKey(e.manifest);
    (groups.get(k) ?? groups.set(k, []).get(k)!).push(e);
  }
  return groups;
}

/**
 * For each kind (instance, volume) and project, the start of the newest run among `entries`
 * that backed that kind up whole (Manifest.run), by `${type}\0${project}`.
 */
export function newestWholeRuns(entries: BackupEntry[]): Map<string, string> {
  const out = new Map<string, string>();
  const note = (k: string, startedAt: string) => {
    const seen = out.get(k);
    if (seen === undefined || seen < startedAt) out.set(k, startedAt);
  };
  for (const { manifest: m } of entries) {
    if (!m.run?.whole) continue;
    if (m.type === 'config') for (const p of m.run.projects ?? []) for (const type of ['instance', 'volume']) note(`${type}\0${p}`, m.run.startedAt);
    else note(`${m.type}\0${m.project}`, m.run.startedAt);
  }
  return out;
}

/**
 * The start of the newest whole run of the entry's kind and project, when that run made no backup
 * of its resource (the entry, its newest, is older): deleted since, left out by an exclude
 * pattern, or its backup failed then.
 */
export function missedRun(entry: BackupEntry, runs: Map<string, string>): string | undefined {
  const m = entry.manifest;
  const started = runs.get(`${m.type}\0${m.project}`);
  return started !== undefined && m.createdAt < started ? started : undefined;
}

type ResourceRef = { type: string; project: string; pool?: string | undefined; name: string };

function resourceLabel(k: ResourceRef): string {
  return `${k.type} ${k.project}/${k.pool ? `${k.pool}/` : ''}${k.name}`;
}

/** A damaged backup's resource, when its key says enough (leftovers of killed runs aside). */
function damagedResource(b: BrokenBackup): ResourceRef | undefined {
  const k = b.key;
  if (b.leftover || !k.type || !k.project || !k.name) return undefined;
  return { type: k.type, project: k.project, pool: k.pool, name: k.name };
}

/** A damaged backup as people read it: "instance prod/web 20260101T000000Z" (what its key says). */
export function damagedLabel(b: BrokenBackup): string {
  const k = b.key;
  return [k.type, [k.project, k.pool, k.name].filter(Boolean).join('/'), k.timestamp].filter(Boolean).join(' ');
}

/** A resource a restore of many leaves out because every backup of it within reach is damaged. */
export interface Unusable {
  key: ResourceRef;
  label: string;
  /** The newest damaged backup's version and problem. */
  timestamp?: string;
  problem: string;
}

/**
 * What a restore of many resources must say about damage, given the backups it `chose` (one per
 * resource) and the damaged ones within reach (in scope, not newer than a --version): the
 * resources that have only damaged backups, which are not restored and must not pass for
 * success, and a warning for each chosen backup that is older than a damaged one (its newest).
 */
export function damageReport(chosen: BackupEntry[], broken: BrokenBackup[]): { unusable: Unusable[]; warnings: string[] } {
  const byResource = new Map<string, { key: ResourceRef; newest: BrokenBackup }>();
  for (const b of broken) {
    const key = damagedResource(b);
    if (!key) continue;
    const k = groupKey(key);
    const seen = byResource.get(k);
    if (!seen || compareTimestamps(b.key.timestamp ?? '', seen.newest.key.timestamp ?? '') > 0) byResource.set(k, { key, newest: b });
  }
  const picked = new Map(chosen.map((e) => [groupKey(e.manifest), e]));
  const unusable: Unusable[] = [];
  const warnings: string[] = [];
  for (const [k, { key, newest }] of byResource) {
    const label = resourceLabel(key);
    const entry = picked.get(k);
    if (!entry) {
      unusable.push({ key, label, ...(newest.key.timestamp ? { timestamp: newest.key.timestamp } : {}), problem: newest.problem });
    } else if (newest.key.timestamp && compareTimestamps(newest.key.timestamp, entry.manifest.timestamp) > 0) {
      warnings.push(`${label}: the newest backup (${newest.key.timestamp}) is damaged (${newest.problem}); ${entry.manifest.timestamp} is used instead`);
    }
  }
  return { unusable, warnings };
}

/**
 * A warning for a chosen backup dated in the future (by more than a few minutes): a clock that
 * was wrong when it was taken makes it "the newest" for as long as its date is ahead.
 */
export function futureWarning(e: BackupEntry, now = new Date()): string | undefined {
  const m = e.manifest;
  if (compareTimestamps(m.timestamp, formatTimestamp(new Date(now.getTime() + 5 * 60_000))) <= 0) return undefined;
  return `${resourceLabel(m)}: its newest backup, ${m.timestamp}, is dated in the future (the clock was wrong when it was taken?); --version picks another (\`incus-backup list\` shows them)`;
}

/** What is said for a resource left out by damageReport, at planning time. */
export function unusableWarning(u: Unusable): string {
  return `${u.label}: every backup is damaged (${u.timestamp ? `${u.timestamp}: ` : ''}${u.problem}); it is not restored (\`incus-backup verify\` says more)`;
}

/** A --version must look like one; say so before anything is listed. */
export function checkVersion(version: string | undefined): void {
  if (version !== undefined && !/^\d{8}T\d{6}Z(-\d+)?$/.test(version)) {
    throw new UsageError(`--version "${version}" is not a backup version`, 'versions look like 20260131T235959Z; see `incus-backup list`');
  }
}

/** Picks one version of one resource: an exact --version, or the newest complete backup. */
export function pickVersion(versions: BackupEntry[], label: string, version?: string, damaged: BrokenBackup[] = [], listArgs = ''): BackupEntry {
  const list = `\`incus-backup list${listArgs}\``;
  // A version that is there but cannot be used is named as such, not as missing.
  // The newest damaged one, or the asked-for version.
  const bad = [...damaged].sort((a, b) => compareTimestamps(b.key.timestamp ?? '', a.key.timestamp ?? '')).find((b) => !version || b.key.timestamp === version);
  if (bad && (version || versions.length === 0)) {
    throw new UsageError(
      `${label}${bad.key.timestamp ? ` ${bad.key.timestamp}` : ''} is damaged (${bad.problem})`,
      versions.length ? `\`incus-backup verify\` says more; pick another version with --version (${list} shows them)` : '`incus-backup verify` says more',
    );
  }
  if (versions.length === 0) throw new UsageError(`no backup of ${label} in the target`, `${list} shows what the target holds`);
  if (!version) return versions[versions.length - 1]!;
  const hit = versions.find((v) => v.manifest.timestamp === version);
  if (!hit) {
    const have = versions.slice(-5).map((v) => v.manifest.timestamp).join(', ');
    const older = versions.length > 5 ? ` (and ${versions.length - 5} older: \`incus-backup list\`)` : '';
    throw new UsageError(`${label} has no backup with version ${version}`, `available (newest last): ${have}${older}`);
  }
  return hit;
}

/**
 * Backups to restore: for each named resource (or each backed-up one) the chosen version. The
 * target is listed once, whatever the number of names and projects (a restic listing costs a
 * key derivation, ~0.5 s).
 */
export async function selectBackups(
  backend: Backend,
  type: ResourceType,
  projects: string[],
  refs: { name: string; pool?: string }[],
  version?: string,
  warn?: (msg: string) => void,
): Promise<{ entries: BackupEntry[]; unusable: Unusable[] }> {
  // Narrowed where that is one resource or one project: a directory target then reads only those.
  const [one] = refs.length === 1 ? refs : [];
  const filter: ListFilter = {
    type,
    ...(projects.length === 1 ? { project: projects[0]! } : {}),
    ...(one ? { name: one.name, ...(one.pool ? { pool: one.pool } : {}) } : {}),
  };
  const { entries, broken } = await backend.scan(filter);
  const groups = groupByResource(entries.filter((e) => projects.includes(e.manifest.project)));
  const damagedOf = (k: ResourceRef) =>
    broken.filter((b) => {
      const of = damagedResource(b);
      return of !== undefined && groupKey(of) === groupKey(k);
    });
  const out: BackupEntry[] = [];
  for (const project of projects) {
    if (refs.length) {
      for (const r of refs) {
        const label = `${type} ${project}/${r.pool ? `${r.pool}/` : ''}${r.name}`;
        const versions = groups.get(groupKey({ type, project, ...r })) ?? [];
        const damaged = damagedOf({ type, project, ...r });
        const elsewhere = versions.length || damaged.length || projects.length > 1 ? undefined : await elsewhereHint(backend, { type, project, name: r.name, ...(r.pool ? { pool: r.pool } : {}) });
        if (elsewhere) throw new UsageError(`no backup of ${label} in the target`, elsewhere);
        const picked = pickVersion(versions, label, version, damaged, ` ${type}s --project ${project} --target ${backend.uri}`);
        // The newest is damaged: an older one is restored, which must not go unsaid.
        if (!version) for (const w of [...damageReport([picked], damaged).warnings, futureWarning(picked)]) if (w) warn?.(w);
        out.push(picked);
      }
    } else {
      for (const versions of groups.values()) {
        const m = versions[0]!.manifest;
        if (m.project === project) out.push(pickVersion(versions, `${type} ${project}/${m.pool ? `${m.pool}/` : ''}${m.name}`, version));
      }
    }
  }
  if (refs.length) return { entries: out, unusable: [] };
  // Every backed-up resource: one with only damaged backups is left out, which is said.
  const inScope = broken.filter((b) => b.key.project !== undefined && projects.includes(b.key.project) && (!version || b.key.timestamp === version));
  const { unusable, warnings } = damageReport(out, inScope);
  for (const w of [...warnings, ...(version ? [] : out.map((e) => futureWarning(e)))]) if (w) warn?.(w);
  return { entries: out, unusable };
}

/**
 * For a listing scoped to one project that found nothing of that project: the other projects
 * whose backups match the rest of the filter, as a hint, e.g. `the target holds backups of other
 * projects: prod (3 backups), web (1 backup); pass --project NAME or --all-projects`. An admin
 * who forgot --project on the worst day must not be left with "no backups". One more listing,
 * made only on that path.
 */
export async function elsewhereHint(backend: Backend, filter: ListFilter): Promise<string | undefined> {
  if (!filter.project) return undefined;
  const { project, ...rest } = filter;
  const counts = new Map<string, number>();
  for (const e of await backend.list(rest)) {
    const p = e.manifest.project;
    if (p !== project && p !== SERVER_WIDE) counts.set(p, (counts.get(p) ?? 0) + 1);
  }
  if (!counts.size) return undefined;
  const found = [...counts].sort(([a], [b]) => a.localeCompare(b));
  const which = found.map(([p, n]) => `${p} (${n} backup${n === 1 ? '' : 's'})`).join(', ');
  return `the target holds backups of other projects: ${which}; pass --project ${found.length === 1 ? found[0]![0] : 'NAME'} or --all-projects`;
}

/** Whether what a run scoped to a project found (manifests, verify items) holds anything of the project itself (not just the server-wide config). */
export function holdsProject(found: { project?: string | undefined }[]): boolean {
  return found.some((f) => f.project !== undefined && f.project !== SERVER_WIDE);
}

/** The resource words of `list`, `verify`, `prune`, `protect`, and the type each stands for. */
const PLURAL = { all: undefined, instances: 'instance', volumes: 'volume', config: 'config', images: 'image' } as const;
/** The kinds, plural as in the usage line, and singular too (`list instance web`, as `backup instance web`). */
export const KINDS = { ...PLURAL, instance: 'instance', volume: 'volume', image: 'image' } as const;
export type Kind = keyof typeof KINDS;

/** The positional `all|instances|volumes|config|images` argument. */
export const kindOption = (required: boolean) =>
  Option.String({ required, name: Object.keys(PLURAL).join('|'), validator: t.isEnum(Object.keys(KINDS) as Kind[]) });
