import type { BackupEntry, BrokenBackup } from '../backends/types.js';
import { timestampToDate } from './manifest.js';
import { applyRetention, policyIsEmpty, type KeepReason, type RetentionItem, type RetentionPolicy } from './retention.js';
import type { ResourceKey } from './types.js';

/**
 * Retention defaults by resource, e.g. from the configuration file (a later issue). Returns
 * undefined when nothing is configured for that resource.
 */
export type PolicyDefaults = (key: ResourceKey) => RetentionPolicy | undefined;

export const NO_DEFAULTS: PolicyDefaults = () => undefined;

/**
 * The policy one resource is pruned with. Flags given on the command line replace the
 * defaults as a whole rather than being merged rule by rule: `--keep-last 1` must mean "keep
 * the last one", not "the last one plus whatever the config file adds". This is the hook for
 * configured defaults: pass them as `defaults`.
 */
export function effectivePolicy(key: ResourceKey, flags: RetentionPolicy, defaults: PolicyDefaults = NO_DEFAULTS): RetentionPolicy | undefined {
  if (!policyIsEmpty(flags)) return flags;
  const d = defaults(key);
  return d && !policyIsEmpty(d) ? d : undefined;
}

/**
 * 'no-policy': nothing applies to this resource, so all of it stays. 'leftover': what a run
 * that never completed left (BrokenBackup.leftover), removed whatever the policy.
 */
export type PruneReason = KeepReason | 'no-policy' | 'leftover';

export interface PruneDecision {
  entry: BackupEntry;
  keep: boolean;
  reasons: PruneReason[];
}

export interface PrunePlan {
  /** Per resource, oldest first (as `list` shows them). */
  decisions: PruneDecision[];
  resources: number;
  remove: BackupEntry[];
  /** Stored bytes that removing would free. */
  bytesFreed: number;
}

/** Identity of a resource across versions; a policy applies to each separately. */
export function resourceId(k: ResourceKey): string {
  return [k.type, k.project, k.pool ?? '', k.name].join('\0');
}

/**
 * The instant of a version id. Versions of the same second ("-1", "-2"...) get that many
 * extra milliseconds, so they order as they were made without moving to another bucket.
 */
export function versionTime(timestamp: string): Date {
  const n = Number(/-(\d+)$/.exec(timestamp)?.[1] ?? 0);
  return new Date(timestampToDate(timestamp).getTime() + n);
}

interface Item extends RetentionItem {
  entry: BackupEntry;
}

/**
 * Decides for every backup whether it stays, per resource. Pure: the same plan feeds the
 * preview, --dry-run and the removal, so what is shown is exactly what is done.
 */
export function planPrune(entries: BackupEntry[], policyFor: (key: ResourceKey) => RetentionPolicy | undefined, now = new Date()): PrunePlan {
  const groups = new Map<string, BackupEntry[]>();
  for (const e of entries) {
    const k = resourceId(e.manifest);
    (groups.get(k) ?? groups.set(k, []).get(k)!).push(e);
  }
  const decisions: PruneDecision[] = [];
  for (const group of [...groups.keys()].sort().map((k) => groups.get(k)!)) {
    const policy = policyFor(group[0]!.manifest);
    let ds: PruneDecision[];
    if (!policy) {
      ds = group.map((entry) => ({ entry, keep: true, reasons: ['no-policy'] }));
    } else {
      const items: Item[] = group.map((entry) => ({
        id: entry.manifest.timestamp,
        time: versionTime(entry.manifest.timestamp),
        protected: entry.manifest.protected === true,
        entry,
      }));
      ds = applyRetention(items, policy, now).map((d) => ({ entry: d.item.entry, keep: d.keep, reasons: d.reasons }));
    }
    // retention.ts answers newest first; show oldest first like `list`.
    decisions.push(...ds.sort((a, b) => versionTime(a.entry.manifest.timestamp).getTime() - versionTime(b.entry.manifest.timestamp).getTime()));
  }
  const remove = decisions.filter((d) => !d.keep).map((d) => d.entry);
  return {
    decisions,
    resources: groups.size,
    remove,
    bytesFreed: remove.reduce((n, e) => n + e.manifest.archive.storedSize, 0),
  };
}

/** One preview line: the same object for the table and for json/yaml. */
export interface PruneRow {
  type: string;
  project: string;
  pool?: string;
  name: string;
  timestamp: string;
  size: number;
  /** `removed` only in the document of a prune that removed it (json/yaml). */
  action: 'keep' | 'remove' | 'removed';
  /** Why it stays; when it goes, empty (no rule keeps it) or ['leftover']. */
  reasons: PruneReason[];
  protected: boolean;
  /** A leftover's location (restic: its data snapshot). */
  location?: string;
}

export function pruneRows(plan: PrunePlan): PruneRow[] {
  return plan.decisions.map(({ entry: { manifest: m }, keep, reasons }) => ({
    type: m.type,
    project: m.project,
    ...(m.pool ? { pool: m.pool } : {}),
    name: m.name,
    timestamp: m.timestamp,
    size: m.archive.storedSize,
    action: keep ? 'keep' : 'remove',
    reasons,
    protected: m.protected === true,
  }));
}

/** Preview lines for the leftovers prune removes along with what the policy drops. */
export function leftoverRows(leftovers: BrokenBackup[]): PruneRow[] {
  return leftovers.map(({ key, size, location }) => ({
    type: key.type ?? '?',
    project: key.project ?? '?',
    ...(key.pool ? { pool: key.pool } : {}),
    name: key.name ?? '?',
    timestamp: key.timestamp ?? '-',
    size: size ?? 0,
    action: 'remove',
    reasons: ['leftover'],
    protected: false,
    location,
  }));
}

const REASON_TEXT: Partial<Record<PruneReason, string>> = {
  newest: 'newest (always kept)',
  'newest-not-future': 'newest not dated in the future (always kept)',
  oldest: 'oldest (a rule has counts left, as in restic)',
  'no-policy': 'no policy for it',
};

/** Human text for the REASON column: the rules that keep it, or why it goes. */
export function reasonText(r: PruneRow): string {
  if (r.reasons.includes('leftover')) return `left by a run that never completed (${(r.location ?? '').slice(0, 8)})`;
  if (r.action !== 'keep') return 'no rule keeps it';
  return r.reasons.map((x) => REASON_TEXT[x] ?? x).join(', ');
}
