import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { parseLockWait } from '../../backends/dir/lock.js';
import type { Backend, ListFilter } from '../../backends/types.js';
import { leftoverRows, planPrune, pruneRows, reasonText, effectivePolicy, type PruneRow } from '../../core/prune.js';
import { policyIsEmpty, RetentionError, type RetentionPolicy } from '../../core/retention.js';
import type { Ui } from '../../core/run.js';
import type { ResourceKey, ResourceType } from '../../core/types.js';
import { readDataSubsetProblem, verifyBackups, verifyFailed, type VerifyItem } from '../../core/verify.js';
import { ExitCode, IbError, UsageError, type ExitCodeValue } from '../../errors.js';
import { humanBytes, humanDuration, type Column } from '../../output/format.js';
import { BaseCommand, checkName } from '../base.js';
import { checkVersion, elsewhereHint, holdsProject, pickVersion, KINDS, kindOption, type Kind } from '../select.js';
import { parseVolumeRef } from './backup.js';


/** --lock-wait for every command that writes a target; backup commands use it too. */
export const lockWaitOption = () =>
  Option.String('--lock-wait', '0', {
    description: 'How long to wait for another run: one writing the same dir: target, or (backups) one backing up the same resource; e.g. 30s, 10m (default 0: fail at once)',
  });

/**
 * Takes the target's writer lock if the backend has one (dir: yes; restic locks by itself).
 * Parse `lockWait` before doing anything else so a typo fails before any work.
 */
export async function lockTarget(backend: Backend, purpose: string, lockWait: string, ui: Ui, signal: AbortSignal): Promise<() => Promise<void>> {
  const waitMs = parseLockWait(lockWait);
  if (!backend.lock) return async () => undefined;
  return backend.lock(purpose, { waitMs, signal, onNotice: (m) => ui.warn(m) });
}

// The config backup is server-wide: "the config", not a project and name.
const label = (k: { type?: string; project?: string; pool?: string; name?: string }) =>
  k.type === 'config' ? 'the config' : `${k.type ?? '?'} ${[k.project, k.pool, k.name].filter(Boolean).join('/')}`;

/** What protect/unprotect name: every kind but `all`. */
const PROTECTABLE = (Object.keys(KINDS) as Kind[]).filter((k): k is Exclude<Kind, 'all'> => k !== 'all');

/** Each retention rule: its field in a policy (and prune's option), and its key in the config file. */
const RULES = [
  ['keepLast', 'keep_last'],
  ['keepHourly', 'keep_hourly'],
  ['keepDaily', 'keep_daily'],
  ['keepWeekly', 'keep_weekly'],
  ['keepMonthly', 'keep_monthly'],
  ['keepYearly', 'keep_yearly'],
  ['keepWithin', 'keep_within'],
] as const;

/**
 * Refuses a rule that keeps nothing by itself (restic reads 0 as "off"; it would leave prune to
 * another policy, or to none, without a word), named as it was written: `said` (`--keep-last 0`)
 * and `leaveOut` (`leave --keep-last out`).
 */
function refuseKeepsNothing(
  value: (field: (typeof RULES)[number][0], key: string) => number | string | undefined,
  said: (key: string, v: number | string) => string,
  leaveOut: (key: string) => string,
): void {
  for (const [field, key] of RULES) {
    const v = value(field, key);
    if (v === 0 || (field === 'keepWithin' && typeof v === 'string' && /^\s*(0+[ymwdh])+\s*$/.test(v))) {
      throw new UsageError(`${said(key, v)} keeps nothing by itself`, `give ${field === 'keepWithin' ? 'a duration such as 30d' : 'N >= 1, or -1 for all'}, or ${leaveOut(key)}`);
    }
  }
}

/** The rules that are set, as a policy; a bad rule becomes the error `bad` makes of it. */
function checkedPolicy(rules: (readonly [keyof RetentionPolicy, number | string | undefined])[], bad: (msg: string) => UsageError): RetentionPolicy {
  const p: Record<string, number | string> = {};
  for (const [field, v] of rules) if (v !== undefined) p[field] = v;
  try {
    policyIsEmpty(p as RetentionPolicy);
  } catch (e) {
    if (e instanceof RetentionError) throw bad(e.message);
    throw e;
  }
  return p as RetentionPolicy;
}

/** The common shape of verify and prune: [KIND] [NAME], scoped to --project or --all-projects. */
abstract class ScopedCommand extends BaseCommand {
  kind = kindOption(false);
  name = Option.String({ required: false, name: 'NAME' });

  scope(): ListFilter {
    const type: ResourceType | undefined = KINDS[this.kind ?? 'all'];
    let name = this.name;
    let pool: string | undefined;
    if (name?.includes('/') && type === 'volume') [pool, name] = name.split('/') as [string, string];
    if (name) checkName('resource', name);
    if (pool) checkName('pool', pool);
    return {
      ...(type ? { type } : {}),
      ...(this.allProjects ? {} : { project: this.checkedProject() }),
      ...(name ? { name } : {}),
      ...(pool ? { pool } : {}),
    };
  }

  /** A named resource with no backups is a mistake worth saying, as for restore. */
  async nothingFound(backend: Backend, filter: ListFilter): Promise<UsageError> {
    const elsewhere = await elsewhereHint(backend, filter);
    return new UsageError(`no backups of ${this.kind ?? 'all'} ${this.name} in ${backend.uri}`, elsewhere ?? 'check the name, --project and --target; `incus-backup list` shows what is there');
  }

  /** A run that found nothing of its project: where the target's backups are instead, if anywhere. */
  async noteElsewhere(backend: Backend, filter: ListFilter, found: { project?: string | undefined }[]): Promise<void> {
    if (holdsProject(found)) return;
    const elsewhere = await elsewhereHint(backend, filter);
    if (elsewhere) this.context.stderr.write(`${elsewhere}\n`);
  }
}

const verifyColumns: Column<VerifyItem>[] = [
  { header: 'TYPE', value: (i) => i.type ?? '?' },
  { header: 'PROJECT', value: (i) => i.project ?? '' },
  { header: 'NAME', value: (i) => (i.pool ? `${i.pool}/${i.name}` : (i.name ?? '')) },
  { header: 'VERSION', value: (i) => i.timestamp ?? '' },
  { header: 'SIZE', value: (i) => (i.size !== undefined ? humanBytes(i.size) : '') },
  { header: 'STATUS', value: (i) => i.status },
  { header: 'PROBLEM', value: (i) => i.problems.map((p) => p.message).join('; ') },
];

export class VerifyCommand extends ScopedCommand {
  static override paths = [['verify']];
  static override usage = Command.Usage({
    category: 'Inspect',
    description: 'Check backups against their checksums and manifests; exit 3 if anything is damaged',
    details: `
      Reports every backup with its status and, for a bad one, why: checksum mismatch, missing file, unreadable or invalid manifest, truncated tar, size mismatch. Exit 0 when all is sound, 3 when anything is damaged or missing. Never locks the target and changes nothing.

      Directory targets: every verify reads all stored data once, re-hashing each archive against checksums.txt and manifest.json, decompressing compressed archives in the same pass and checking the tar inside (size, sha256, end-of-archive blocks). \`--read-data\`, \`--read-data-subset\` and \`--deep\` are accepted for restic targets and change nothing for directory targets.
    `,
    examples: [
      ['Verify everything of every project', '$0 verify all --all-projects --target dir:/srv/backups'],
      ['Verify the backups of one instance, as JSON', '$0 verify instances web1 --target dir:/srv/backups --output json'],
      ['Read back the one backup a restore would use', '$0 verify instances web1 --version 20260131T235959Z --deep --target restic:/srv/restic'],
    ],
  });
  readData = Option.Boolean('--read-data', false, { description: 'restic: read all pack data (dir targets always read all data)' });
  readDataSubset = Option.String('--read-data-subset', { description: 'restic: read a subset of the data: n/t, x% or a size such as 5G' });
  deep = Option.Boolean('--deep', false, { description: 'restic: stream every archive back and compare it with its manifest' });
  version = Option.String('--version', { description: 'Only this backup (YYYYMMDDThhmmssZ) of the named resource, e.g. the one a restore is about to use' });

  async run(): Promise<ExitCodeValue> {
    const subsetProblem = this.readDataSubset === undefined ? undefined : readDataSubsetProblem(this.readDataSubset);
    if (subsetProblem) throw new UsageError(`--read-data-subset "${this.readDataSubset}": ${subsetProblem}`, 'e.g. 1/5, 10% or 5G');
    checkVersion(this.version);
    const type = KINDS[this.kind ?? 'all'];
    if (this.version && (!type || (type !== 'config' && !this.name))) {
      throw new UsageError('--version picks one backup of one resource', 'give its kind and name, e.g. incus-backup verify instances web1 --version 20260131T235959Z');
    }
    const backend = this.openTarget();
    const filter = this.scope();
    const ui = this.ui();
    let report;
    try {
      // A version that is not there is said before the repository check, which can take long.
      const scanned = this.version ? await backend.scan(filter) : undefined;
      if (scanned && this.version && ![...scanned.entries.map((e) => e.manifest.timestamp), ...scanned.broken.map((b) => b.key.timestamp)].includes(this.version)) {
        if (scanned.entries.length === 0 && scanned.broken.length === 0) throw await this.nothingFound(backend, filter);
        pickVersion(scanned.entries, label({ ...filter, name: filter.name ?? 'config' }), this.version);
      }
      report = await verifyBackups(
        backend,
        filter,
        {
          readData: this.readData,
          deep: this.deep,
          parallel: this.parallel,
          ...(this.readDataSubset ? { readDataSubset: this.readDataSubset } : {}),
          ...(this.version && scanned ? { version: this.version, scanned } : {}),
        },
        ui,
        this.context.signal,
      );
    } finally {
      ui.stop();
    }
    if (this.name && report.items.length === 0) throw await this.nothingFound(backend, filter);
    this.logResults(report.items.map((i) => ({ ...i, ...(i.problems.length ? { error: i.problems.map((p) => p.message).join('; ') } : {}) })));
    // --quiet (a weekly job): what is damaged, and the totals line.
    const shown = this.quiet && this.format === 'table' ? report.items.filter((i) => i.status === 'damaged' || i.status === 'unknown') : report.items;
    if (shown.length || !this.quiet) this.print(shown, verifyColumns);
    const { ok, damaged, gone, unknown } = report.counts;
    const backups = ok + damaged + gone + unknown;
    // restic's check reads the repository's data with --read-data but says nothing of how much.
    // Without either, restic checks the repository's structure (every pack there, the trees
    // whole), not the bytes: said, since "ok" on a dir: target means every byte was read.
    const structureOnly = backend.kind === 'restic' && !(this.readData || this.readDataSubset || this.deep);
    const checked = structureOnly
      ? "the repository's structure checked, its data not read (--read-data reads it, --deep each backup's)"
      : report.bytesChecked > 0 || !(this.readData || this.readDataSubset)
        ? `${humanBytes(report.bytesChecked)} checked`
        : this.readDataSubset && !this.readData
          ? `${this.readDataSubset} of the data read by restic check`
          : 'data read by restic check';
    this.context.stderr.write(
      `verified ${backups} backup(s) in ${backend.uri}: ${ok} ok, ${damaged} damaged${unknown ? `, ${unknown} not known to be sound` : ''}${gone ? `, ${gone} removed meanwhile` : ''}` +
        `${report.repository.length ? '; the repository itself is damaged' : ''}; ${checked} in ${humanDuration(report.durationMs)}\n`,
    );
    if (unknown) {
      this.context.stderr.write(
        `Hint: the repository check found damage that may touch ${unknown} backup(s) marked unknown: \`incus-backup verify --deep\` reads each one to tell which; \`restic repair index\` and \`restic repair snapshots\` (see restic's docs) mend the repository, and backups taken before it is mended may share its damage\n`,
      );
    }
    await this.noteElsewhere(backend, filter, report.items);
    return verifyFailed(report) ? ExitCode.partial : ExitCode.ok;
  }
}

const count = (flag: string, what: string) =>
  Option.String(flag, { description: what, validator: t.cascade(t.isNumber(), [t.isInteger(), t.isAtLeast(-1)]) });

const pruneColumns: Column<PruneRow>[] = [
  { header: 'TYPE', value: (r) => r.type },
  { header: 'PROJECT', value: (r) => r.project },
  { header: 'NAME', value: (r) => (r.pool ? `${r.pool}/${r.name}` : r.name) },
  { header: 'VERSION', value: (r) => r.timestamp },
  { header: 'SIZE', value: (r) => humanBytes(r.size) },
  { header: 'ACTION', value: (r) => r.action },
  { header: 'REASON', value: reasonText },
];

export class PruneCommand extends ScopedCommand {
  static override paths = [['prune']];
  static override usage = Command.Usage({
    category: 'Maintenance',
    description: 'Remove old backups according to a retention policy (preview first)',
    details: `
      The policy applies to each resource (instance, volume, project config) separately, with restic's \`forget\` rules: a backup stays if any rule keeps it. Counts of -1 mean unlimited (write it as --keep-daily=-1); \`--keep-within\` takes durations such as 30d, 2w, 1y6m (measured from the newest backup). The newest backup of every resource (and the newest not dated in the future) and protected backups (see \`protect\`) always stay. Without any --keep option prune refuses to run.

      A preview lists every backup with keep or remove and the rules that keep it; \`--dry-run\` stops there, otherwise prune asks for confirmation (\`-y\` to skip). On a dir: target, prune holds the target's writer lock from planning to removal.

      On a restic: target, prune also removes what a run killed between its data and its manifest snapshot left (a data snapshot that nothing lists), once that run is surely over: a later backup of the resource has completed, or a day has passed. They show in the preview as "left by a run that never completed".
    `,
    examples: [
      ['Keep 7 daily and 4 weekly backups of everything', '$0 prune all --keep-daily 7 --keep-weekly 4 --target dir:/srv/backups -y'],
      ['Preview keeping only the last backup of web1', '$0 prune instances web1 --keep-last 1 --target dir:/srv/backups --dry-run'],
    ],
  });
  keepLast = count('--keep-last', 'Keep the N newest backups');
  keep = count('--keep', 'Alias of --keep-last');
  keepHourly = count('--keep-hourly', 'Keep the newest backup of each of the last N hours that have one');
  keepDaily = count('--keep-daily', 'Keep the newest backup of each of the last N days that have one');
  keepWeekly = count('--keep-weekly', 'Keep the newest backup of each of the last N ISO weeks that have one');
  keepMonthly = count('--keep-monthly', 'Keep the newest backup of each of the last N months that have one');
  keepYearly = count('--keep-yearly', 'Keep the newest backup of each of the last N years that have one');
  keepWithin = Option.String('--keep-within', { description: 'Keep backups this recent relative to the newest one not dated in the future, e.g. 30d, 2w, 1y6m' });
  lockWait = lockWaitOption();

  /** The policy the flags give (empty when none is given), checked before anything is read. */
  flagPolicy(): RetentionPolicy {
    if (this.keep !== undefined && this.keepLast !== undefined && this.keep !== this.keepLast) {
      throw new UsageError('--keep and --keep-last disagree', '--keep is an alias of --keep-last: give one of them');
    }
    const value = (field: (typeof RULES)[number][0]) => (field === 'keepLast' ? (this.keepLast ?? this.keep) : this[field]);
    const flag = (key: string) => `--${key.replace(/_/g, '-')}`;
    refuseKeepsNothing(value, (key, v) => `${flag(key)} ${String(v)}`, (key) => `leave ${flag(key)} out`);
    return checkedPolicy(RULES.map(([field]) => [field, value(field)]), (msg) => new UsageError(msg, 'see `incus-backup prune --help` for the --keep-* options'));
  }

  /**
   * Before removing anything from a repository that has a check of its own (restic): its
   * structure must be sound. Prune decides on dates and manifests; with a pack missing, the
   * newest backup of a resource may be the damaged one, and removing the older, sound ones
   * would leave nothing to restore (restic's own prune finds the damage only after the
   * snapshots are forgotten).
   */
  private async refuseOnDamage(backend: Backend, ui: Ui): Promise<void> {
    if (!backend.check) return;
    const task = ui.task('checking the repository before removing anything');
    const { problems } = await backend.check({ signal: this.context.signal }).catch((e: unknown) => {
      task.end(false);
      throw e;
    });
    task.end(problems.length === 0);
    if (!problems.length) return;
    throw new IbError(
      `prune refused: ${backend.uri} is damaged (${problems.map((p) => p.message).join('; ')}); nothing was removed`,
      ExitCode.failed,
      '`incus-backup verify --deep` names the backups the damage touches; mend the repository (`restic repair index`, `restic repair packs`, `restic repair snapshots`), then prune again',
    );
  }

  /** `retention:` from the configuration file (empty when it sets no rule). */
  filePolicy(): RetentionPolicy {
    const r = this.settings().values.retention ?? {};
    refuseKeepsNothing((_, key) => r[key as keyof typeof r], (key, v) => `${this.settings().file}: retention: ${key}: ${String(v)}`, (key) => `remove ${key}`);
    return checkedPolicy(RULES.map(([field, key]) => [field, r[key]]), (msg) => new UsageError(`${this.settings().file}: retention: ${msg}`, 'fix the file'));
  }

  async run(): Promise<ExitCodeValue> {
    // Flags replace the file's rules as a whole (effectivePolicy); with neither, an empty policy
    // is a mistake, never "delete everything".
    const flags = this.flagPolicy();
    const fromFile = policyIsEmpty(flags) ? this.filePolicy() : {};
    if (policyIsEmpty(flags) && policyIsEmpty(fromFile)) {
      throw new UsageError(
        'no retention policy given: prune would not know what to keep',
        'pass at least one --keep-* option, e.g. --keep-last 7 or --keep-daily 7 --keep-weekly 4, or set `retention:` in the configuration file',
      );
    }
    parseLockWait(this.lockWait);
    const backend = this.openTarget();
    const filter = this.scope();
    const ui = this.ui();
    let release = async () => undefined as void;
    try {
      // Planned under the lock, so no backup or protect can change what the plan was made on.
      if (!this.dryRun) release = await lockTarget(backend, 'prune', this.lockWait, ui, this.context.signal);
      const { entries, broken } = await backend.scan(filter);
      // What runs that never completed left goes too; damage stays for a person to look at.
      const leftovers = broken.filter((b) => b.leftover);
      const damaged = broken.length - leftovers.length;
      if (damaged) ui.warn(`${damaged} damaged backup(s) are left alone; \`incus-backup verify\` names them`);
      if (this.name && entries.length === 0) throw await this.nothingFound(backend, filter);
      const plan = planPrune(entries, (k: ResourceKey) => effectivePolicy(k, flags, () => fromFile));
      const rows = [...pruneRows(plan), ...leftoverRows(leftovers)];
      // A table shows the plan before the question (a quiet cron job gets the totals only). With
      // --output json|yaml the document is the plan when the run stops at it (a dry run, or
      // refused for want of a terminal), otherwise what was removed, printed once it was: a
      // script must not read "remove" for a removal that then failed.
      const nothingToDo = plan.remove.length === 0 && leftovers.length === 0;
      if (this.showsPlan(this.dryRun) || (this.format !== 'table' && nothingToDo)) this.print(rows, pruneColumns);
      else this.planForQuestion(false, () => this.print(rows, pruneColumns));
      const err = this.context.stderr;
      const leftoverBytes = leftovers.reduce((n, b) => n + (b.size ?? 0), 0);
      const andN = leftovers.length ? ` and ${leftovers.length} leftover(s)` : '';
      const andLeftovers = andN && `${andN} of runs that never completed (${humanBytes(leftoverBytes)})`;
      err.write(
        `${entries.length} backup(s) of ${plan.resources} resource(s): ${entries.length - plan.remove.length} to keep, ` +
          `${plan.remove.length} to remove (${humanBytes(plan.bytesFreed)})${andLeftovers}\n`,
      );
      await this.noteElsewhere(backend, filter, entries.map((e) => e.manifest));
      // A dry run checks as the run would: its plan must not promise removals the run refuses.
      if (!nothingToDo) await this.refuseOnDamage(backend, ui);
      if (this.dryRun) {
        err.write('dry run: nothing was changed\n');
        return ExitCode.ok;
      }
      if (nothingToDo) return ExitCode.ok;
      await this.confirm(`Remove ${plan.remove.length} backup(s) (${humanBytes(plan.bytesFreed)})${andLeftovers} from ${backend.uri}?`);
      const task = ui.task(`removing ${plan.remove.length} backup(s)${andN}`);
      let removed;
      try {
        removed = await backend.remove(plan.remove, leftovers);
      } catch (e) {
        task.end(false);
        // The cause's own hint (a read-only or append-only repository) says more than a retry would.
        const hint = (e instanceof IbError && e.hint) || '`incus-backup list` shows what is left; run prune again to finish';
        throw new IbError(`prune failed while removing backups: ${(e as Error).message}`, ExitCode.failed, hint);
      }
      task.end(true);
      ui.stop();
      if (this.format !== 'table') this.print(rows.map((r) => (r.action === 'remove' ? { ...r, action: 'removed' as const } : r)), pruneColumns);
      this.logResults(plan.remove.map((e) => ({ ...e.manifest, status: 'removed', size: e.manifest.archive.storedSize })));
      // restic keeps whatever other backups share: what it gave back can be far less.
      const freed = removed.reclaimed === undefined ? `freed ${humanBytes(plan.bytesFreed + leftoverBytes)}` : `restic reclaimed ${humanBytes(removed.reclaimed)} (it keeps the data other backups share)`;
      err.write(`removed ${plan.remove.length} backup(s)${andN}, ${freed}\n`);
      return ExitCode.ok;
    } finally {
      ui.stop();
      await release();
    }
  }
}

abstract class ProtectionCommand extends BaseCommand {
  kind = Option.String({ name: PROTECTABLE.join('|'), validator: t.isEnum(PROTECTABLE) });
  name = Option.String({ required: false, name: 'NAME' });
  version = Option.String('--version', { description: 'Backup version (YYYYMMDDThhmmssZ); default: the newest complete one' });
  lockWait = lockWaitOption();
  abstract readonly value: boolean;

  async run(): Promise<ExitCodeValue> {
    checkVersion(this.version);
    if (this.allProjects) throw new UsageError(`${this.path[0]} works on one backup`, 'give its project with --project');
    const project = this.checkedProject();
    const type = KINDS[this.kind];
    let ref: { name: string; pool?: string };
    if (type === 'config') {
      if (this.name) throw new UsageError('config backups have no NAME', `e.g. incus-backup ${this.path[0]} config --version 20260131T235959Z`);
      ref = { name: 'config' };
    } else if (!this.name) {
      throw new UsageError(`which ${type}?`, `e.g. incus-backup ${this.path[0]} ${this.kind} ${type === 'volume' ? 'default/data' : 'web1'} --version 20260131T235959Z`);
    } else ref = type === 'volume' ? parseVolumeRef(this.name) : { name: checkName('instance', this.name) };
    parseLockWait(this.lockWait);

    const backend = this.openTarget();
    if (!backend.setProtected) throw new IbError(`${backend.kind} targets cannot protect backups yet`, ExitCode.failed);
    const ui = this.ui();
    const release = this.dryRun ? async () => undefined : await lockTarget(backend, this.path[0]!, this.lockWait, ui, this.context.signal);
    try {
      const versions = await backend.list({ type, project, name: ref.name, ...(ref.pool ? { pool: ref.pool } : {}) });
      const wanted = { type, project, name: ref.name, ...(ref.pool ? { pool: ref.pool } : {}) };
      const entry = pickVersion(versions, label(wanted), this.version);
      const was = entry.manifest.protected === true;
      const after = this.dryRun ? entry : await backend.setProtected(entry, this.value);
      const m = after.manifest;
      const row = { type: m.type, project: m.project, ...(m.pool ? { pool: m.pool } : {}), name: m.name, timestamp: m.timestamp, protected: this.dryRun ? this.value : m.protected === true };
      this.print([row], [
        { header: 'TYPE', value: (r) => r.type },
        { header: 'PROJECT', value: (r) => r.project },
        { header: 'NAME', value: (r) => (r.pool ? `${r.pool}/${r.name}` : r.name) },
        { header: 'VERSION', value: (r) => r.timestamp },
        { header: 'PROTECTED', value: (r) => (r.protected ? 'yes' : '') },
      ]);
      const state = this.value ? 'protected' : 'unprotected';
      if (!this.dryRun) this.logResults([{ ...m, status: was === this.value ? `already ${state}` : state }]);
      this.context.stderr.write(
        `${label(m)} ${m.timestamp}: ${was === this.value ? `already ${state}` : this.dryRun ? `would be ${state} (dry run)` : state}\n`,
      );
      return ExitCode.ok;
    } finally {
      ui.stop();
      await release();
    }
  }
}

export class ProtectCommand extends ProtectionCommand {
  static override paths = [['protect']];
  static override usage = Command.Usage({
    category: 'Maintenance',
    description: 'Pin one backup so that prune never removes it',
    details:
      'Names a backup as `list` and `restore` do: KIND, NAME (POOL/NAME for volumes, none for config), --project and --version (default: the newest). Prune shows protected backups as kept for reason "protected". On a dir: target the flag is stored in the backup\'s manifest.json, rewritten atomically.',
    examples: [
      ['Keep the backup taken before an upgrade', '$0 protect instances web1 --version 20260131T235959Z --target dir:/srv/backups'],
      ['Pin the newest backup of a volume', '$0 protect volumes default/data --target dir:/srv/backups'],
    ],
  });
  readonly value = true;
}

export class UnprotectCommand extends ProtectionCommand {
  static override paths = [['unprotect']];
  static override usage = Command.Usage({
    category: 'Maintenance',
    description: 'Let prune remove a backup that was protected',
    examples: [['Release a pinned backup', '$0 unprotect instances web1 --version 20260131T235959Z --target dir:/srv/backups']],
  });
  readonly value = false;
}
