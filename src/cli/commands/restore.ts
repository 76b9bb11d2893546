import { Command, Option } from 'clipanion';
import { configNeedsHint, configRequirements, profileKey, type ConfigRequirements } from '../../core/config.js';
import { compareTimestamps, formatTimestamp } from '../../core/manifest.js';
import { planImageRestore, type ImageRestorePlan } from '../../core/images.js';
import { countDistinct, describeRequirement, mapName, missingRequirements, profilePathRequirements, requirementKey, requirementsOf, unusedMappings, type Devices, type Mappings, type Requirement } from '../../core/preflight.js';
import { sweepProjectLeftovers } from '../../core/backup.js';
import { planRestore, restoreItem, type RestorePlanItem } from '../../core/restore.js';
import type { RunContext } from '../../core/run.js';
import { SERVER_WIDE } from '../../core/types.js';
import type { BackupEntry } from '../../backends/types.js';
import { applyConfig, configPreviewColumns, configPreviewData, configPreviewRows, pickConfig, previewConfig, type ConfigPreview } from './config.js';
import type { ResourceType } from '../../core/types.js';
import { ExitCode, IbError, UsageError, type ExitCodeValue } from '../../errors.js';
import { humanBytes, type Column } from '../../output/format.js';
import { BaseCommand, checkName } from '../base.js';
import { checkVersion, damageReport, elsewhereHint, futureWarning, groupByResource, missedRun, newestWholeRuns, selectBackups, unusableWarning, type Unusable } from '../select.js';
import { applyAll, failedRow, settle, sizes, type ResultRow } from '../summary.js';
import { parseVolumeRef } from './backup.js';
import { imagePreviewColumns, imagePreviewData, restoreImages } from './images.js';

const previewColumns: Column<RestorePlanItem>[] = [
  { header: 'BACKUP', value: (i) => `${i.entry.manifest.type} ${i.entry.manifest.pool ? `${i.entry.manifest.pool}/` : ''}${i.entry.manifest.name}` },
  { header: 'VERSION', value: (i) => i.entry.manifest.timestamp },
  { header: 'SIZE', value: (i) => humanBytes(i.entry.manifest.archive.storedSize) },
  { header: 'DESTINATION', value: (i) => `${i.dest.project}/${i.dest.kind === 'volume' ? `${i.dest.pool}/` : ''}${i.dest.name}` },
  { header: 'ACTION', value: (i) => i.action },
  {
    header: 'SIDE EFFECTS',
    value: (i) =>
      i.refused
        ? `refused: ${i.refused}`
        : [
            i.missedRun ? `not in the newest backup of all ${i.dest.kind}s (run of ${formatTimestamp(new Date(i.missedRun))})` : '',
            // A volume's users run again once the restored volume is in place.
            i.stops.length ? `stops ${i.stops.join(', ')}${i.dest.kind === 'volume' ? `, then starts ${i.stops.length > 1 ? 'them' : 'it'} again as ${i.stops.length > 1 ? 'they were' : 'it was'}` : ''}` : '',
            i.start ? 'starts it afterwards' : (i.notStarted ?? ''),
            dropsText(i.dropsSnapshots),
          ]
            .filter(Boolean)
            .join('; '),
  },
];

/** "deletes its snapshots a, b, c and 4 more": what a replace takes away beside the data. */
function dropsText(names: string[]): string {
  if (!names.length) return '';
  const shown = names.slice(0, 3).join(', ');
  return `deletes its ${names.length === 1 ? 'snapshot' : 'snapshots'} ${shown}${names.length > 3 ? ` and ${names.length - 3} more` : ''}`;
}

function previewData(i: RestorePlanItem): Record<string, unknown> {
  const m = i.entry.manifest;
  return {
    type: m.type,
    project: m.project,
    name: m.name,
    ...(m.pool ? { pool: m.pool } : {}),
    timestamp: m.timestamp,
    ...sizes(m),
    destination: i.dest.name,
    destinationProject: i.dest.project,
    action: i.action,
    stops: i.stops,
    start: i.start,
    ...(i.notStarted ? { notStarted: i.notStarted } : {}),
    ...(i.missedRun ? { missedRun: i.missedRun } : {}),
    ...(i.refused ? { refused: i.refused } : {}),
    dropsSnapshots: i.dropsSnapshots,
  };
}

/** "old=new" pairs from repeatable --*-map options. */
function parseMap(what: string, pairs: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const p of pairs) {
    const [from, to, ...rest] = p.split('=');
    if (!from || !to || rest.length) throw new UsageError(`--${what}-map "${p}" is not OLD=NEW`, `e.g. --${what}-map default=staging`);
    m.set(checkName(what, from), checkName(what, to));
  }
  return m;
}

/** Options and steps every restore shares: plan, pre-flight, preview, confirm, execute. */
abstract class RestoreBase extends BaseCommand {
  replace = Option.Boolean('--replace', false, { description: 'Replace what exists (kept until the restore succeeded)' });
  skipExisting = Option.Boolean('--skip-existing', false, { description: 'Leave what exists alone' });
  noStart = Option.Boolean('--no-start', false, { description: 'Do not start instances that were running at backup time' });
  projectMap = Option.Array('--project-map', [], { description: 'Restore project OLD into NEW (repeatable)' });
  poolMap = Option.Array('--pool-map', [], { description: 'Restore onto pool NEW what was on pool OLD (repeatable)' });
  profileMap = Option.Array('--profile-map', [], { description: 'Give restored instances profile NEW where they had OLD (repeatable)' });
  networkMap = Option.Array('--network-map', [], { description: 'Attach NICs to network NEW where they used OLD (repeatable)' });

  protected checkCommon(version: string | undefined): void {
    if (this.replace && this.skipExisting) throw new UsageError('--replace and --skip-existing exclude each other', 'pick one');
    checkVersion(version);
  }

  protected maps(): Mappings {
    return {
      project: parseMap('project', this.projectMap ?? []),
      pool: parseMap('pool', this.poolMap ?? []),
      profile: parseMap('profile', this.profileMap ?? []),
      network: parseMap('network', this.networkMap ?? []),
    };
  }

  protected planOptions(targetName?: string, offerRename = false) {
    return { ...(targetName ? { targetName } : {}), replace: this.replace, skipExisting: this.skipExisting, noStart: this.noStart, maps: this.maps(), offerRename };
  }

  /**
   * Requirements of the instances in `plan` that are neither there nor created by this run or
   * by the `config` it applies first. That config may point a requirement elsewhere (the
   * profiles of a project it creates without its own are the default project's), and the
   * profiles it writes are the ones whose host paths count.
   */
  protected async preflight(ctx: RunContext, plan: RestorePlanItem[], config?: ConfigRequirements, extra: Requirement[] = []): Promise<Requirement[]> {
    const maps = this.maps();
    const willExist = new Set(config?.willExist);
    const resolve = config?.resolve ?? ((r: Requirement) => r);
    const work = plan.filter((i) => i.action !== 'skip');
    for (const i of work) if (i.dest.kind === 'volume') willExist.add(requirementKey('volume', i.dest.project, `${i.dest.pool}/${i.dest.name}`));
    const seen = new Map<string, Promise<Devices | undefined>>();
    const profileDevices = (project: string, name: string): Promise<Devices | undefined> => {
      const where = resolve({ what: 'profile', project, name, neededBy: '' }).project;
      const k = profileKey(where, name);
      if (!seen.has(k)) {
        const written = config?.profiles.get(k);
        seen.set(k, written ? Promise.resolve(written) : ctx.api.profile(where, name).then((p) => p && (config?.profiles.get(profileKey(p.project, name)) ?? p.devices ?? {})));
      }
      return seen.get(k)!;
    };
    const reqs = [...extra, ...work.flatMap((i) => requirementsOf(i, maps)), ...(await profilePathRequirements(ctx.api, work, maps, profileDevices))];
    return missingRequirements(ctx.api, reqs.map(resolve), willExist);
  }

  /** `applyingConfig`: the run already restores the config (restore all --apply-config). */
  protected refuseMissing(missing: Requirement[], applyingConfig = false): void {
    if (!missing.length) return;
    for (const r of missing) this.context.stderr.write(`missing: ${describeRequirement(r)}\n`);
    // Said for what is missing: a volume comes from its own backup, a host path from the host,
    // the rest from the config backup.
    const volumes = [...new Set(missing.filter((r) => r.what === 'volume').map((r) => r.name))];
    const paths = missing.some((r) => r.what === 'path');
    const config = missing.some((r) => r.what !== 'volume' && r.what !== 'path');
    const hints = [
      ...(volumes.length ? [`restore the volume${volumes.length > 1 ? 's' : ''} first (restore volume, with the same maps; restore all restores volumes before instances) or create ${volumes.length > 1 ? 'them' : 'it'}`] : []),
      ...(paths ? ['create the host directories (or remove those disks from the instance later)'] : []),
      ...(config ? [applyingConfig ? configNeedsHint(missing, true) : 'restore the config first (restore all --apply-config) or create them'] : []),
    ];
    // The maps that can point at what exists instead, for what is missing.
    const mapFlag: Record<Requirement['what'], string | undefined> = { project: '--project-map', 'storage-pool': '--pool-map', volume: '--pool-map', profile: '--profile-map', network: '--network-map', path: undefined };
    const maps = [...new Set(missing.map((r) => mapFlag[r.what]).filter((f) => f !== undefined))];
    throw new IbError(
      `cannot restore: ${countDistinct(missing)} thing(s) the backups need do not exist in the destination`,
      ExitCode.failed,
      (config && applyingConfig) || !maps.length ? hints.join('; ') : `${hints.join('; ')}; or map names with ${maps.join('/')}`,
    );
  }

  /** Whether the plan stops running instances to replace a volume they use (needs --force or a person). */
  private stopsVolumeUsers(work: RestorePlanItem[]): boolean {
    return work.some((i) => i.dest.kind === 'volume' && i.stops.length > 0);
  }

  /** A dry run says everything the real run would refuse: here, a volume replace without --force. */
  protected dryRunNotes(work: RestorePlanItem[]): void {
    if (this.stopsVolumeUsers(work) && !this.force && this.format === 'table') {
      this.context.stderr.write(`note: replacing a volume stops the running instances that use it: the run needs --force${this.context.interactive ? ' (or an answer to its question)' : ''}\n`);
    }
  }

  /** Asks once for the whole plan; stopping the users of a volume needs --force or a person. */
  protected async confirmPlan(work: RestorePlanItem[], others: string[] = []): Promise<void> {
    const replacing = work.filter((i) => i.action === 'replace').length;
    const stopsVolumeUsers = this.stopsVolumeUsers(work);
    if (stopsVolumeUsers && !this.force) {
      if (!this.context.interactive) {
        throw new UsageError('replacing a volume stops the running instances that use it', 'pass --force to allow that without a prompt');
      }
    }
    const items = work.length ? `${work.length} item(s)${replacing ? ` (replacing ${replacing})` : ''}` : '';
    await this.confirm(`Restore ${[items, ...others].filter(Boolean).join(' and ')}?`, { forceOnly: stopsVolumeUsers });
  }

  /**
   * The resources left out because every backup of them is damaged: failed rows (the run is
   * not a success), and an error when nothing else is there to restore.
   */
  protected unusableRows(unusable: Unusable[], errors: unknown[]): ResultRow[] {
    return unusable.map((u) => {
      const e = new IbError(`every backup of ${u.label} is damaged (${u.problem}); it was not restored`, ExitCode.failed, '`incus-backup verify` says more');
      errors.push(e);
      return failedRow({ type: u.key.type, project: u.key.project, name: u.key.name, ...(u.key.pool ? { pool: u.key.pool } : {}), status: 'failed', ...(u.timestamp ? { timestamp: u.timestamp } : {}) }, e);
    });
  }

  protected onlyDamaged(unusable: Unusable[]): IbError {
    return new IbError(
      `nothing to restore: every backup of ${unusable.map((u) => u.label).join(', ')} is damaged`,
      ExitCode.failed,
      '`incus-backup verify` says what is wrong with each',
    );
  }

  /**
   * What killed runs left in the projects restored into, put right before the plan is made (not
   * in a dry run, which changes nothing): an original a killed replace had set aside is back
   * under its name, so the plan sees it as it is.
   */
  protected async sweepBeforePlanning(ctx: RunContext, projects: string[]): Promise<void> {
    if (!this.dryRun) await this.sweep(ctx, projects);
  }

  /** Projects already swept in this run. */
  private readonly swept = new Set<string>();

  private async sweep(ctx: RunContext, projects: Iterable<string>): Promise<void> {
    for (const p of projects) {
      if (this.swept.has(p)) continue;
      this.swept.add(p);
      await sweepProjectLeftovers(ctx, p).catch((e: unknown) => ctx.ui.warn(`could not look for leftovers of killed runs in project ${p}: ${(e as Error).message}`));
    }
  }

  protected async restoreItems(ctx: RunContext, work: RestorePlanItem[], errors: unknown[]): Promise<ResultRow[]> {
    // What killed runs left in the destination projects goes first, as a backup run does it: a
    // host that is only ever restored to must not collect staged imports of killed restores.
    await this.sweep(ctx, new Set(work.map((i) => i.dest.project)));
    return applyAll(
      work,
      this.parallel,
      ctx.signal,
      (item, i) => {
        // The item that starts when this one (or another running one) ends begins opening its
        // archive now: with restic that is ~0.7 s of key derivation and lock wait per item,
        // which then overlaps this item's stream instead of following it.
        const next = work[i + this.parallel];
        if (next) ctx.backend.prefetch?.(next.entry, ctx.signal);
        return restoreItem(ctx, item);
      },
      (item): ResultRow => ({
        type: item.entry.manifest.type,
        project: item.dest.project,
        name: item.dest.name,
        ...(item.dest.kind === 'volume' ? { pool: item.dest.pool } : {}),
        status: 'ok',
        action: item.action,
        timestamp: item.entry.manifest.timestamp,
        ...sizes(item.entry.manifest),
        detail: item.notStarted ? `${item.action}; ${item.notStarted}` : item.action,
      }),
      errors,
    );
  }

  protected finish(ctx: RunContext & { ui: { stop(): void } }, rows: ResultRow[], errors: unknown[]): ExitCodeValue {
    ctx.ui.stop();
    if (!this.quiet || errors.length) this.context.stderr.write('\n');
    this.printSummary('restore', rows);
    return settle(rows, errors);
  }
}

abstract class RestoreCommand extends RestoreBase {
  version = Option.String('--version', { description: 'Backup version (YYYYMMDDThhmmssZ); default: the newest complete one' });

  abstract readonly type: ResourceType;
  abstract refs(): { name: string; pool?: string }[];
  /** --target-name, which only the one-resource commands have (they set offersTargetName). */
  declare targetName?: string;
  protected readonly offersTargetName: boolean = false;

  async run(): Promise<ExitCodeValue> {
    this.checkCommon(this.version);
    const targetName = this.targetName;
    if (targetName !== undefined) checkName(this.type, targetName);
    // Bad options (a malformed --*-map) are refused before the target is read.
    const opts = this.planOptions(targetName, this.offersTargetName);
    const backend = this.openTarget();
    const refs = this.refs();
    const projects = this.allProjects ? undefined : [this.checkedProject()];
    const api = this.incus();
    const ctx = this.runContext(api, backend);
    await this.sweepBeforePlanning(ctx, projects ?? (await this.projects(api)));
    // One resource, its newest backup, no question to wait for: start reading it already.
    const [ref] = refs;
    if (!this.dryRun && (this.yes || this.force) && !this.version && refs.length === 1 && projects && ref) {
      backend.readAhead?.({ type: this.type, project: projects[0]!, name: ref.name, ...(ref.pool ? { pool: ref.pool } : {}) }, ctx.signal);
    }
    const said: string[] = [];
    const { plan, refusal, missing, unusable } = await ctx.ui.wait('reading the target and planning', async () => {
      const { entries, unusable } = await selectBackups(backend, this.type, projects ?? (await this.projects(api)), refs, this.version, (m) => said.push(m));
      said.push(...unusable.map(unusableWarning), ...unusedMappings(opts.maps, entries.map((e) => e.manifest)));
      if (entries.length === 0 && unusable.length) throw this.onlyDamaged(unusable);
      if (entries.length === 0) {
        const elsewhere = projects?.length === 1 ? await elsewhereHint(backend, { type: this.type, project: projects[0]! }) : undefined;
        throw new UsageError(`no ${this.type} backups found in ${backend.uri}`, elsewhere ?? 'check --project and --target; `incus-backup list` shows what is there');
      }
      const { plan, refusal } = await planRestore(ctx, entries, opts);
      return { plan, refusal, missing: refusal ? [] : await this.preflight(ctx, plan), unusable };
    }).catch((e: unknown) => {
      for (const m of said) ctx.ui.warn(m);
      throw e;
    });
    for (const m of said) ctx.ui.warn(m);
    const work = plan.filter((i) => i.action !== 'skip');
    // One document with --output json|yaml: the plan when the run stops here, else the results
    // (which a resource left out for damage makes, even with nothing else to do).
    const stopsHere = this.dryRun || missing.length > 0 || (work.length === 0 && !unusable.length) || !!refusal;
    if (this.showsPlan(stopsHere)) this.print(plan, previewColumns, previewData);
    this.planForQuestion(stopsHere || !work.length, () => this.print(plan, previewColumns, previewData));
    if (refusal) throw refusal;
    this.refuseMissing(missing);
    if (this.dryRun) {
      this.dryRunNotes(work);
      if (this.format === 'table') this.context.stderr.write('dry run: nothing was changed\n');
      return 0;
    }
    if (work.length === 0 && !unusable.length) return 0;
    if (work.length) await this.confirmPlan(work);
    const errors: unknown[] = [];
    const rows = [...(await this.restoreItems(ctx, work, errors)), ...this.unusableRows(unusable, errors)];
    return this.finish(ctx, rows, errors);
  }
}

export class RestoreInstanceCommand extends RestoreCommand {
  static override paths = [['restore', 'instance']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore one instance (preview, confirm, then import)',
    examples: [
      ['Preview a restore under a new name', '$0 restore instance web1 --target dir:/srv/backups --target-name web1-restored --dry-run'],
      ['Replace web1 with its backup of a given time', '$0 restore instance web1 --target dir:/srv/backups --version 20260101T020000Z --replace -y'],
    ],
  });
  readonly type = 'instance' as const;
  name = Option.String({ name: 'NAME' });
  override targetName = Option.String('--target-name', { description: 'Restore under this name instead' });
  protected override readonly offersTargetName = true;
  refs() {
    return [{ name: checkName('instance', this.name) }];
  }
}

export class RestoreInstancesCommand extends RestoreCommand {
  static override paths = [['restore', 'instances']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore several instances (all backed-up ones of the project when no names are given), after one preview',
    examples: [['Bring back what is missing', '$0 restore instances --target dir:/srv/backups --skip-existing -y']],
  });
  readonly type = 'instance' as const;
  names = Option.Rest({ name: 'NAME' });
  refs() {
    return this.names.map((n) => ({ name: checkName('instance', n) }));
  }
}

export class RestoreVolumeCommand extends RestoreCommand {
  static override paths = [['restore', 'volume']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore one custom volume',
    examples: [['Restore a volume under a new name', '$0 restore volume default/data --target dir:/srv/backups --target-name data-old -y']],
  });
  readonly type = 'volume' as const;
  name = Option.String({ name: 'POOL/NAME' });
  override targetName = Option.String('--target-name', { description: 'Restore under this name instead' });
  protected override readonly offersTargetName = true;
  refs() {
    return [parseVolumeRef(this.name)];
  }
}

export class RestoreVolumesCommand extends RestoreCommand {
  static override paths = [['restore', 'volumes']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore several custom volumes (all backed-up ones of the project when none are given)',
    examples: [['Restore every backed-up volume that is missing', '$0 restore volumes --target dir:/srv/backups --skip-existing -y']],
  });
  readonly type = 'volume' as const;
  names = Option.Rest({ name: 'POOL/NAME' });
  refs() {
    return this.names.map(parseVolumeRef);
  }
}

export class RestoreAllCommand extends RestoreBase {
  static override paths = [['restore', 'all']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore config (with --apply-config), then images, volumes and instances from one backup set, after one preview',
    details:
      'For every backed-up resource of the selected project(s) the newest backup is used, or with --version TS the newest not newer than TS. Before anything changes, each instance archive is checked for the profiles, networks, pools and volumes it needs; if any is missing the restore refuses to start. Images in the set (backup all --with-images) are imported unless their fingerprint is already there, in which case only their free aliases are given back.',
    examples: [
      ['The worst day, first step', '$0 restore all --target restic:/srv/restic --dry-run'],
      ['Then for real, config included', '$0 restore all --target restic:/srv/restic --apply-config --skip-existing -y'],
    ],
  });
  version = Option.String('--version', { description: 'Use, per resource, the newest backup not newer than this version' });
  applyConfig = Option.Boolean('--apply-config', false, { description: 'Also apply the config backup (projects, pools, networks, profiles) first' });

  /** The three parts of the plan, for people. */
  private printAllPlan(config: ConfigPreview | undefined, images: ImageRestorePlan[], plan: RestorePlanItem[]): void {
    if (config) {
      this.out.write(`Config (version ${config.entry.manifest.timestamp}):\n`);
      if (config.changes.length || config.kept.length) this.print(configPreviewRows(config), configPreviewColumns);
      else this.out.write('  no changes\n');
    }
    if (images.length) {
      this.out.write('Images:\n');
      this.print(images, imagePreviewColumns);
    }
    this.out.write('Volumes and instances:\n');
    if (plan.length) this.print(plan, previewColumns);
    else this.out.write('  none\n');
  }

  async run(): Promise<ExitCodeValue> {
    this.checkCommon(this.version);
    const opts = this.planOptions();
    const backend = this.openTarget();
    const api = this.incus();
    const ctx = this.runContext(api, backend);
    const project = this.allProjects ? undefined : this.checkedProject();
    await this.sweepBeforePlanning(ctx, project ? [project] : await this.projects(api));
    const { entries: all, broken } = await backend.scan(project ? { project } : {});
    const inReach = (timestamp: string | undefined) => !this.version || !timestamp || compareTimestamps(timestamp, this.version) <= 0;
    const eligible = all.filter((v) => inReach(v.manifest.timestamp));
    const chosen: BackupEntry[] = [];
    for (const [, versions] of groupByResource(eligible.filter((e) => e.manifest.type !== 'config'))) chosen.push(versions[versions.length - 1]!);
    // A resource whose every backup is damaged is left out, and said; so is a newest one that is.
    const { unusable, warnings } = damageReport(chosen, broken.filter((b) => b.key.type !== 'config' && inReach(b.key.timestamp)));
    // Without the config step (which maps the config's names too), a map no backup uses is a typo.
    const unused = this.applyConfig ? [] : unusedMappings(opts.maps, chosen.map((e) => e.manifest));
    const ahead = chosen.map((e) => futureWarning(e)).filter((w): w is string => !!w);
    for (const m of [...warnings, ...unusable.map(unusableWarning), ...unused, ...ahead]) ctx.ui.warn(m);
    // The config follows the mappings, like the volumes and instances restored with it.
    const configScope = project ? { project: mapName(opts.maps.project, project) } : {};
    const config = this.applyConfig ? await previewConfig(ctx, await pickConfig(backend, undefined, this.version), configScope, this.force, opts.maps) : undefined;
    if (!chosen.length && !config && unusable.length) throw this.onlyDamaged(unusable);
    if (!chosen.length && !config) {
      const older = all.filter((e) => e.manifest.type !== 'config').map((e) => e.manifest.timestamp).sort(compareTimestamps);
      if (this.version && older.length) {
        throw new UsageError(
          `no backup in ${backend.uri}${project ? ` for project ${project}` : ''} is from --version ${this.version} or before`,
          `the oldest is ${older[0]}; \`incus-backup list\` shows them all`,
        );
      }
      const elsewhere = project ? await elsewhereHint(backend, { project }) : undefined;
      throw new UsageError(`no backups found in ${backend.uri}${project ? ` for project ${project}` : ''}`, elsewhere ?? 'check --project and --target');
    }
    const images: ImageRestorePlan[] = [];
    for (const e of chosen.filter((x) => x.manifest.type === 'image')) images.push(await planImageRestore(ctx, e, mapName(opts.maps.project, e.manifest.project)));
    // Volumes first (instances may use them); one call, so that a conflict names all of them.
    const byType = (type: string) => chosen.filter((e) => e.manifest.type === type);
    const projectsAfterConfig = new Map(
      (config?.changes ?? []).filter((c) => c.object.kind === 'project' && c.action !== 'delete').map((c) => [c.object.name, c.object.config]),
    );
    const { plan, refusal } = await planRestore(ctx, [...byType('volume'), ...byType('instance')], { ...opts, projectsAfterConfig });
    // What the newest nightly run no longer had is brought back too, but said: it may have been
    // deleted on purpose (or its backup failed that night, and this is the one left).
    const runs = newestWholeRuns(eligible);
    for (const i of plan) {
      const missed = missedRun(i.entry, runs);
      if (missed) i.missedRun = missed;
    }
    // What the config step will create counts as present for the pre-flight, and what the
    // profiles it writes need is checked with the rest.
    const configReqs = configRequirements(config?.changes ?? [], plan.map((i) => i.dest.project));
    const imageWork = images.filter((i) => i.action !== 'skip');
    const imageNeeds = imageWork.map((i): Requirement => ({ what: 'project', project: i.project, name: i.project, neededBy: `image ${i.project}/${i.entry.manifest.name.slice(0, 12)}` }));
    const missing = refusal ? [] : await this.preflight(ctx, plan, configReqs, [...imageNeeds, ...configReqs.needs]);
    const work = plan.filter((i) => i.action !== 'skip');
    const configWork = config?.changes.length ?? 0;
    const nothingToDo = !work.length && !configWork && !imageWork.length;
    const stopsHere = this.dryRun || missing.length > 0 || (nothingToDo && !unusable.length) || !!refusal;
    if (this.format === 'table') {
      if (this.showsPlan(stopsHere)) this.printAllPlan(config, images, plan);
    } else if (this.showsPlan(stopsHere)) {
      this.printData({ config: config ? configPreviewData(config) : null, images: images.map(imagePreviewData), items: plan.map(previewData), missing });
    }
    this.planForQuestion(stopsHere || nothingToDo, () => this.printAllPlan(config, images, plan));
    const missed = plan.filter((i) => i.missedRun && i.action !== 'skip');
    if (missed.length && this.format === 'table' && this.showsPlan(stopsHere)) {
      this.context.stderr.write(
        missed.length === 1
          ? 'note: 1 resource has no backup from the newest run over all of its kind (deleted since, left out by a pattern, or its backup failed then) and comes back from an older one; to leave it out, restore the others by name (restore instances/volumes NAME...)\n'
          : `note: ${missed.length} resources have no backup from the newest run over all of their kind (deleted since, left out by a pattern, or their backups failed then) and come back from older ones; to leave them out, restore the others by name (restore instances/volumes NAME...)\n`,
      );
    }
    if (refusal) throw refusal;
    this.refuseMissing(missing, this.applyConfig);
    if (this.dryRun) {
      this.dryRunNotes(work);
      if (this.format === 'table') this.context.stderr.write('dry run: nothing was changed\n');
      return 0;
    }
    if (nothingToDo && !unusable.length) return 0;
    if (!nothingToDo) await this.confirmPlan(work, [configWork ? `${configWork} config change(s)` : '', imageWork.length ? `${imageWork.length} image(s)` : '']);
    const errors: unknown[] = [];
    const rows: ResultRow[] = [];
    if (config && configWork) {
      const started = Date.now();
      const { failed } = await applyConfig(ctx, config);
      for (const f of failed) errors.push(new IbError(`config: ${f.label}: ${f.error}`));
      rows.push({
        type: 'config',
        project: SERVER_WIDE,
        name: 'config',
        status: failed.length ? 'failed' : 'ok',
        timestamp: config.entry.manifest.timestamp,
        durationMs: Date.now() - started,
        detail: `${configWork - failed.length} of ${configWork} change(s) applied`,
        ...(failed.length ? { error: failed.map((f) => f.label).join('; ') } : {}),
      });
    }
    // Images need only their project; then volumes, which the instances that attach them need.
    rows.push(...(await restoreImages(ctx, imageWork, this.parallel, errors)));
    rows.push(...(await this.restoreItems(ctx, work.filter((i) => i.dest.kind === 'volume'), errors)));
    rows.push(...(await this.restoreItems(ctx, work.filter((i) => i.dest.kind === 'instance'), errors)));
    rows.push(...this.unusableRows(unusable, errors));
    return this.finish(ctx, rows, errors);
  }
}
