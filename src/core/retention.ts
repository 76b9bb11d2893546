/**
 * Retention policy evaluation, modelled on restic's `forget --keep-*` semantics so that a
 * policy means the same thing whether the target is a restic repository or a plain directory.
 *
 * Pure and dependency-free on purpose: deciding what to delete is the most dangerous thing
 * this tool does, so it must be exhaustively unit-testable without Incus, restic or a clock.
 */

/**
 * Counts follow restic: unset or 0 disables a rule, -1 means "unlimited". All rules are
 * OR-ed: an item survives if any rule wants it.
 */
export interface RetentionPolicy {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  /** Duration such as "30d", "1y2m" or "2w3d12h", see {@link parseDuration}. */
  keepWithin?: string;
}

/**
 * The minimum the policy needs to know about a backup. `protected` lets the caller pin
 * backups (e.g. ones a user marked as precious) without encoding that into the policy.
 */
export interface RetentionItem {
  id: string;
  time: Date;
  protected?: boolean;
}

/**
 * Why an item survives; shown to users in dry runs so they can trust a policy before it
 * deletes anything. 'newest' is only reported when no other rule kept the newest item.
 */
export type KeepReason =
  | 'last'
  | 'hourly'
  | 'daily'
  | 'weekly'
  | 'monthly'
  | 'yearly'
  | 'within'
  | 'oldest'
  | 'newest'
  | 'newest-not-future'
  | 'protected';

/** Generic over the item so callers get their own richer backup records back untouched. */
export interface RetentionDecision<T extends RetentionItem> {
  item: T;
  keep: boolean;
  reasons: KeepReason[];
}

/**
 * A distinct class so callers can map policy mistakes to a usage error (exit 2) instead of
 * treating them as a crash.
 */
export class RetentionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RetentionError';
  }
}

type Duration = { years: number; months: number; days: number; hours: number };
type CountField = 'keepLast' | 'keepHourly' | 'keepDaily' | 'keepWeekly' | 'keepMonthly' | 'keepYearly';

/**
 * Parses restic-style durations. Stricter than restic on purpose: an empty string, a sign, a
 * repeated unit or a number without unit is rejected rather than silently read as zero or
 * "last one wins", because a misread duration here means deleted backups. Weeks ("w", not in
 * restic) are folded into days so the arithmetic stays restic's.
 */
export function parseDuration(s: string): Duration {
  const src = s.trim();
  if (src === '') throw new RetentionError('empty duration');
  const out: Duration = { years: 0, months: 0, days: 0, hours: 0 };
  const seen = new Set<string>();
  const part = /(\d+)([ymwdh])/y; // sticky: every character must belong to a <number><unit> pair
  while (part.lastIndex < src.length) {
    const m = part.exec(src);
    if (!m) {
      throw new RetentionError(
        `invalid duration "${s}": expected <number><unit> pairs with units y, m, w, d, h (e.g. "1y2m", "30d")`,
      );
    }
    const [, digits = '', unit = ''] = m;
    if (seen.has(unit)) throw new RetentionError(`invalid duration "${s}": unit "${unit}" given twice`);
    seen.add(unit);
    const n = Number(digits);
    if (!Number.isSafeInteger(n)) throw new RetentionError(`invalid duration "${s}": ${digits} is too large`);
    if (unit === 'y') out.years = n;
    else if (unit === 'm') out.months = n;
    else if (unit === 'w') out.days += 7 * n;
    else if (unit === 'd') out.days += n;
    else out.hours = n;
  }
  return out;
}

const COUNT_FIELDS: readonly CountField[] = ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly'];

/** Validates the whole policy once, so no rule can be half-applied before an error surfaces. */
function validate(p: RetentionPolicy): Duration | undefined {
  for (const f of COUNT_FIELDS) {
    const v = p[f];
    if (v !== undefined && !(Number.isInteger(v) && v >= -1)) {
      throw new RetentionError(`${f} must be an integer >= -1 (-1 = unlimited), got ${String(v)}`);
    }
  }
  if (p.keepWithin === undefined) return undefined;
  const d = parseDuration(p.keepWithin);
  return d.years || d.months || d.days || d.hours ? d : undefined;
}

/**
 * Lets the CLI refuse to run `forget`/`prune` without a policy before touching anything.
 * A zero duration ("0d") counts as empty, as in restic. Throws {@link RetentionError} on a
 * malformed policy: such a policy is neither safely empty nor safely non-empty.
 */
export function policyIsEmpty(p: RetentionPolicy): boolean {
  const within = validate(p);
  return within === undefined && COUNT_FIELDS.every((f) => !p[f]);
}

/** ISO-8601 week as YYYYWW: weeks start on Monday and belong to the year of their Thursday. */
function isoWeekKey(t: Date): number {
  const dow = t.getUTCDay() || 7;
  const thu = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate() + 4 - dow));
  const jan1 = Date.UTC(thu.getUTCFullYear(), 0, 1);
  return thu.getUTCFullYear() * 100 + Math.floor((thu.getTime() - jan1) / 86_400_000 / 7) + 1;
}

/**
 * Buckets are computed in UTC, not local time (restic uses the snapshot's zone), so the same
 * backups give the same decision on every host regardless of TZ or DST.
 */
const RULES: ReadonlyArray<[KeepReason, CountField, (t: Date, index: number) => number]> = [
  ['last', 'keepLast', (_t, i) => i],
  ['hourly', 'keepHourly', (t) => ((t.getUTCFullYear() * 100 + t.getUTCMonth()) * 100 + t.getUTCDate()) * 100 + t.getUTCHours()],
  ['daily', 'keepDaily', (t) => (t.getUTCFullYear() * 100 + t.getUTCMonth()) * 100 + t.getUTCDate()],
  ['weekly', 'keepWeekly', isoWeekKey],
  ['monthly', 'keepMonthly', (t) => t.getUTCFullYear() * 100 + t.getUTCMonth()],
  ['yearly', 'keepYearly', (t) => t.getUTCFullYear()],
];

/**
 * Go's AddDate semantics (what restic uses): years, months and days are subtracted in one
 * step and then normalised, so 1m before Mar 31 is "Feb 31" = Mar 3 (Mar 2 in leap years).
 * setUTCFullYear is used rather than Date.UTC, which maps years 0-99 to 1900-1999.
 */
function subtract(from: Date, d: Duration): number {
  const t = new Date(from.getTime());
  t.setUTCFullYear(t.getUTCFullYear() - d.years, t.getUTCMonth() - d.months, t.getUTCDate() - d.days);
  const ms = t.getTime() - d.hours * 3_600_000;
  return Number.isNaN(ms) ? -Infinity : ms; // beyond Date's range: everything is "within"
}

/**
 * Decides, for every item, whether the policy keeps it and why; deleting is left to the
 * caller so a dry run and a real run share exactly the same decisions.
 *
 * Items are ordered newest first; equal times are ordered by id (ascending, code-unit order
 * rather than locale order) so that repeated runs over the same set always agree. Bucket rules
 * keep the newest item of each of the N most recent buckets that contain items, so gaps never
 * use up a count; as in restic (0.17+), a rule that still has counts left when it reaches the
 * oldest item keeps that one too ('oldest'), which keeps the longest history a policy allows
 * (a new setup does not lose its first backup to a monthly rule). keepWithin is measured from
 * the newest item that is not in the future, as restic does: not from the clock, so a backup
 * job that stopped running does not age every backup out of the window, and not from a backup
 * dated ahead by a clock that was wrong once, which would push every real one out of it.
 *
 * Unlike restic, an empty policy throws instead of keeping everything (so that a caller bug
 * cannot be mistaken for a policy), and the newest item is always kept, and so is the newest
 * that is not in the future.
 *
 * @param now What "the future" is measured against (keepWithin, and the newest kept).
 */
export function applyRetention<T extends RetentionItem>(
  items: T[],
  policy: RetentionPolicy,
  now: Date,
): RetentionDecision<T>[] {
  const within = validate(policy);
  if (within === undefined && COUNT_FIELDS.every((f) => !policy[f])) throw new RetentionError('no retention policy given');
  for (const it of items) {
    if (!(it.time instanceof Date) || Number.isNaN(it.time.getTime())) {
      throw new RetentionError(`item ${it.id} has an invalid time`);
    }
  }
  const sorted = [...items].sort(
    (a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
  const rules = RULES.map(([reason, field, key]) => ({ reason, key, left: policy[field] ?? 0, last: NaN }));
  // Items all in the future leave no reference: the window then holds them all (restic: zero time).
  const latest = sorted.find((it) => it.time.getTime() < now.getTime());
  const cutoff = !within ? Infinity : latest ? subtract(latest.time, within) : -Infinity;

  return sorted.map((item, index) => {
    const reasons: KeepReason[] = [];
    const oldest = index === sorted.length - 1;
    for (const r of rules) {
      if (r.left === 0) continue;
      const k = r.key(item.time, index);
      if (k === r.last && !oldest) continue;
      const sameBucket = k === r.last;
      r.last = k;
      if (r.left > 0) r.left--;
      const reason = sameBucket ? 'oldest' : r.reason;
      if (!reasons.includes(reason)) reasons.push(reason);
    }
    if (item.time.getTime() >= cutoff) reasons.push('within');
    if (item.protected === true) reasons.push('protected');
    if (index === 0 && reasons.length === 0) reasons.push('newest');
    // One dated ahead by a clock that was wrong once would otherwise take 'newest' from the
    // real newest every night (--keep-last 1 removing the backup just made).
    if (item === latest && reasons.length === 0) reasons.push('newest-not-future');
    return { item, keep: reasons.length > 0, reasons };
  });
}
