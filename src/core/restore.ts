import { randomUUID } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { PassThrough, type Readable, type Transform } from 'node:stream';
import { subjectLabel, subjectPath, volumeUsersIn, type BackupSubject } from '../incus/api.js';
import type { Instance } from '../incus/types.js';
import { IncusError, streamFailure } from '../incus/errors.js';
import { ExitCode, IbError, InterruptedError, UsageError } from '../errors.js';
import type { BackupEntry } from '../backends/types.js';
import { ChecksumMismatchError, VerifyingStream } from './hashing.js';
import { Cleanup, unbreakableStep, type RunContext, type Task } from './run.js';
import { addressClashes, attachedVolumesOf, fixedAddressesOf, mapName, optimizedFor, ownsFeature, rewritesInstance, sharedVolumes, type Mappings } from './preflight.js';
import { mapInstanceYaml, TarYamlRewriter } from './tarrewrite.js';
import { volatileLocked } from './identity.js';
import { asideName, tmpName } from './tmpnames.js';
import { disksAttaching, encodeJournal, JOURNAL_KEY, newJournal, withoutJournal, type DetachedDisk, type ReplaceJournal } from './replacejournal.js';

export type RestoreAction = 'create' | 'replace' | 'skip';

export interface RestorePlanItem {
  entry: BackupEntry;
  dest: BackupSubject;
  action: RestoreAction;
  /** Start the instance afterwards (it was running at backup time and --no-start is absent). */
  start: boolean;
  /** Instances this restore stops (and starts again afterwards). */
  stops: string[];
  /**
   * A replace: the snapshots of the resource being replaced. They are deleted with it (the
   * restored one has the backup's snapshots, if it was taken --with-snapshots, and no others).
   */
  dropsSnapshots: string[];
  /** A replace: every snapshot the resource had when the plan was made (see swapIn). */
  snapshotsAtPlan?: string[];
  /** Instances: import onto this pool instead of the archive's. */
  rootPool?: string;
  /** Instances: rename profiles, networks and pools in the archive's YAML on the way in. */
  maps?: Mappings;
  /** Why the plan refuses this item (see planRestore's `refusal`). */
  refused?: string;
  /**
   * Why an instance that ran is left stopped: a fixed address of its NICs (static IP, set MAC)
   * is another instance's on the same network (a copy beside the original), and Incus would
   * refuse to start it.
   */
  notStarted?: string;
  /**
   * restore all: the start (ISO time) of the newest run that backed up this kind of the project
   * whole and has no backup of this resource (see missedRun).
   */
  missedRun?: string;
}

export interface PlanOptions {
  targetName?: string;
  replace: boolean;
  skipExisting: boolean;
  noStart: boolean;
  /** --project-map / --pool-map: restore into a differently named project or pool. */
  maps?: Mappings;
  /** The command has --target-name: a conflict's hint offers it. */
  offerRename?: boolean;
  /** restore all --apply-config: the config of each project its config step writes, before the imports. */
  projectsAfterConfig?: Map<string, Record<string, string>>;
}

function destOf(entry: BackupEntry, targetName: string | undefined, maps: Mappings | undefined): BackupSubject {
  const m = entry.manifest;
  const name = targetName ?? m.name;
  const project = maps ? mapName(maps.project, m.project) : m.project;
  return m.type === 'volume'
    ? { kind: 'volume', project, pool: maps ? mapName(maps.pool, m.pool!) : m.pool!, name }
    : { kind: 'instance', project, name };
}

/** The root disk's pool after --pool-map, when it differs from the archive's (X-Incus-pool). */
function rootPoolOverride(entry: BackupEntry, maps: Mappings | undefined): string | undefined {
  const pool = (entry.manifest.index as { pool?: string } | undefined)?.pool;
  if (!maps || !pool) return undefined;
  const mapped = mapName(maps.pool, pool);
  return mapped !== pool ? mapped : undefined;
}

/**
 * Decides, per backup, what the restore will do, without changing anything. A plan that cannot
 * be carried out (a conflict, a protected instance...) comes back with its `refusal` and the
 * items concerned marked `refused`, so that a preview can show the whole plan before it refuses.
 */
export async function planRestore(ctx: RunContext, entries: BackupEntry[], opts: PlanOptions): Promise<{ plan: RestorePlanItem[]; refusal?: UsageError }> {
  // An instance's plan and pre-flight read its archive's index (root pool, profiles, NICs, disks).
  await ctx.backend.loadIndexes?.(entries);
  const plan: RestorePlanItem[] = [];
  const conflicts: string[] = [];
  const protectedOnes: BackupSubject[] = [];
  const viaProfiles: string[] = [];
  /** Attached volumes a backup of the other content type would replace (Incus cannot re-attach it). */
  const otherContent: string[] = [];
  // Each project's instances are listed once, for the users of all its volumes.
  const listed = new Map<string, Promise<Instance[]>>();
  const instancesOf = (project: string) => listed.get(project) ?? listed.set(project, ctx.api.listInstances(project)).get(project)!;
  for (const entry of entries) {
    const dest = destOf(entry, opts.targetName, opts.maps);
    let exists = false;
    let refused: string | undefined;
    const stops: string[] = [];
    if (dest.kind === 'instance') {
      try {
        const cur = await ctx.api.getInstance(dest.project, dest.name);
        exists = true;
        if (cur.status !== 'Stopped') stops.push(dest.name);
        if (opts.replace && cur.config?.['security.protection.delete'] === 'true') {
          protectedOnes.push(dest);
          refused = 'protected against deletion';
        }
      } catch (e) {
        if (!(e instanceof IncusError && e.notFound)) throw e;
      }
    } else {
      try {
        const cur = await ctx.api.getVolume(dest.project, dest.pool, dest.name);
        exists = true;
        const users = volumeUsersIn(await instancesOf(dest.project), dest.pool, dest.name);
        for (const { instance, viaProfile } of users) {
          if (instance.status !== 'Stopped') stops.push(instance.name);
          if (viaProfile && opts.replace) {
            viaProfiles.push(`${subjectLabel(dest)} (${instance.name})`);
            refused = `attached through a profile (${instance.name})`;
          }
        }
        // A block volume cannot take a filesystem volume's place on its instances (nor the other
        // way round): Incus refuses the re-attach only after the users were stopped.
        const was = entry.manifest.source.contentType;
        if (opts.replace && !refused && users.length && was && cur.content_type && was !== cur.content_type) {
          otherContent.push(`${subjectLabel(dest)} (a ${cur.content_type} volume attached to ${users.map((u) => u.instance.name).join(', ')}; the backup is of a ${was} volume)`);
          refused = `a ${was} backup for an attached ${cur.content_type} volume`;
        }
      } catch (e) {
        if (!(e instanceof IncusError && e.notFound)) throw e;
      }
    }
    let action: RestoreAction = 'create';
    let dropsSnapshots: string[] = [];
    let snapshotsAtPlan: string[] | undefined;
    if (exists) {
      if (opts.replace) {
        action = 'replace';
        // Those the backup has (--with-snapshots) come back, as they were then.
        const brought = entry.manifest.index?.snapshots;
        const comesBack = new Set(Array.isArray(brought) ? brought.map(String) : []);
        snapshotsAtPlan = await ctx.api.listSnapshots(dest);
        dropsSnapshots = snapshotsAtPlan.filter((n) => !comesBack.has(n));
      } else if (opts.skipExisting) action = 'skip';
      else {
        conflicts.push(subjectLabel(dest));
        refused = 'already exists';
      }
    }
    // A skipped instance is left as it is: not started either.
    const start = action !== 'skip' && entry.manifest.type === 'instance' && entry.manifest.source.status === 'Running' && !opts.noStart;
    const rootPool = dest.kind === 'instance' ? rootPoolOverride(entry, opts.maps) : undefined;
    const maps = dest.kind === 'instance' && rewritesInstance(opts.maps) ? { maps: opts.maps! } : {};
    plan.push({ entry, dest, action, start, stops: action === 'replace' ? stops : [], dropsSnapshots, ...(snapshotsAtPlan ? { snapshotsAtPlan } : {}), ...(rootPool ? { rootPool } : {}), ...maps, ...(refused ? { refused } : {}) });
  }
  // One listing of the projects for the checks below that need it.
  let configs: Promise<Map<string, Record<string, string>>> | undefined;
  const projects = () => (configs ??= ctx.api.projectConfigs());
  const refusal = refusalOf(protectedOnes, viaProfiles, conflicts, opts) ?? contentRefusal(otherContent) ?? (await otherDrivers(ctx, plan)) ?? (await lockedProjects(plan, projects, opts.projectsAfterConfig));
  if (!refusal) await leaveClashingCopiesStopped(ctx, plan, opts.maps, projects);
  return { plan, ...(refusal ? { refusal } : {}) };
}

/** Attached volumes a backup of the other content type would replace. */
function contentRefusal(otherContent: string[]): UsageError | undefined {
  if (!otherContent.length) return undefined;
  return new UsageError(
    `a replace cannot swap in a volume of another content type where instances use it: ${otherContent.join(', ')}`,
    'restore it beside with --target-name NEW, or detach it from its instances first',
  );
}

/** Why the plan cannot be carried out, if it cannot: the first kind of refusal, naming every item of it. */
function refusalOf(protectedOnes: BackupSubject[], viaProfiles: string[], conflicts: string[], opts: PlanOptions): UsageError | undefined {
  // A replace deletes the current instance once the restored one runs: not one that the admin
  // protected against deletion, as `incus delete` would not.
  if (protectedOnes.length) {
    const [one] = protectedOnes;
    return new UsageError(
      `${protectedOnes.map((s) => subjectLabel(s)).join(', ')} ${protectedOnes.length === 1 ? 'is' : 'are'} protected against deletion (security.protection.delete=true), and a replace deletes the current instance once the restored one runs`,
      protectedOnes.length === 1
        ? `unset it first (\`incus config unset ${one!.name} security.protection.delete --project ${one!.project}\`), or restore beside it with --target-name NEW`
        : 'unset it first (`incus config unset NAME security.protection.delete --project PROJECT`), or restore beside them with --target-name NEW one by one',
    );
  }
  // Incus re-points the devices of profiles to a renamed volume, so a swap would leave the
  // profile (and every instance of it) on the original, set aside; it is not done.
  if (viaProfiles.length) {
    return new UsageError(
      `attached through a profile, which a replace cannot swap: ${viaProfiles.join(', ')}`,
      'restore it beside with --target-name NEW and point the profile at it, or move the disk device from the profile to the instances first',
    );
  }
  if (conflicts.length) {
    return new UsageError(
      `already exists: ${conflicts.join(', ')}`,
      conflicts.length === 1
        ? `pass --replace to replace it (the current one is kept until the restore succeeded)${opts.offerRename ? ', --skip-existing to leave it, or --target-name NEW' : ' or --skip-existing to leave it'}`
        : 'pass --replace to replace them (each current one is kept until its restore succeeded) or --skip-existing to leave them',
    );
  }
  return undefined;
}

/**
 * Incus 6.0 refuses every instance import into a project that refuses volatile keys (see
 * volatileLocked), after the whole upload: its last check (since the import validation of
 * 2026-03, in the Debian builds of 6.0.4 too) reads the imported instance's own UUID and
 * cloud-init instance-id. Said before, with what lets the import through, also for a project
 * that only the config step of `restore all --apply-config` gives its limits.
 */
async function lockedProjects(
  plan: RestorePlanItem[],
  projectConfigs: () => Promise<Map<string, Record<string, string>>>,
  afterConfig?: Map<string, Record<string, string>>,
): Promise<UsageError | undefined> {
  const instances = plan.filter((i) => i.dest.kind === 'instance' && i.action !== 'skip');
  if (!instances.length) return undefined;
  const projects = await projectConfigs();
  const now = new Set<string>();
  const byConfig = new Set<string>();
  for (const item of instances) {
    const p = item.dest.project;
    const type = item.entry.manifest.source.instanceType;
    // A project the config step writes ends up with the backup's config, whatever it has now.
    const later = afterConfig?.get(p);
    const config = later ?? projects.get(p);
    if (!config || !volatileLocked(config, type)) continue;
    (later ? byConfig : now).add(p);
    item.refused = `project ${p} refuses volatile keys`;
  }
  if (now.size) return lockedProjectError([...now]);
  if (byConfig.size) return lockedProjectError([...byConfig], 'config');
  return undefined;
}

/**
 * `when`: 'config', the config step of restore all would give the project its limits; 'run',
 * the project refuses the keys when the item's turn comes, though the plan saw no reason to
 * (its config changed meanwhile).
 */
function lockedProjectError(projects: string[], when?: 'config' | 'run'): UsageError {
  const one = projects.length === 1;
  const first = projects[0]!;
  const letThrough = `\`incus project set ${first} restricted.containers.lowlevel=allow\` (restricted.virtual-machines.lowlevel for VMs; unset it afterwards)`;
  return new UsageError(
    `Incus refuses to import instances into ${one ? 'project' : 'projects'} ${projects.join(', ')}: ${one ? 'it has' : 'they have'} limits or restrictions${when === 'config' ? ' once the config is restored' : ''}, and ${one ? 'does' : 'do'} not let instances carry volatile keys (their UUIDs, cloud-init instance-id, idmaps)`,
    when === 'config'
      ? `restore the config first (\`incus-backup restore config --apply\`), then ${letThrough}, then run restore all again without --apply-config; or restore into another project (--project-map)`
      : when === 'run'
        ? `${letThrough}, then run the restore again (--skip-existing leaves what is back already); or restore into another project (--project-map)`
        : `let ${one ? 'it' : 'them'} take volatile keys for the restore: ${letThrough}; or restore into another project (--project-map)`,
  );
}

/**
 * An optimized backup is the pool driver's own format (a btrfs send stream, a zfs send...):
 * Incus refuses it on a pool of another driver, after the upload has begun. Said before.
 */
async function otherDrivers(ctx: RunContext, plan: RestorePlanItem[]): Promise<UsageError | undefined> {
  const drivers = new Map<string, Promise<string | undefined>>();
  let firstNeeded: string | undefined;
  for (const item of plan) {
    const needs = optimizedFor(item);
    if (!needs || item.action === 'skip') continue;
    const index = item.entry.manifest.index as { pool?: string };
    const pool = item.dest.kind === 'volume' ? item.dest.pool : (item.rootPool ?? index.pool);
    if (!pool) continue;
    if (!drivers.has(pool)) drivers.set(pool, ctx.api.poolDriver(pool));
    const driver = await drivers.get(pool)!;
    // A pool that is not there is the pre-flight's to name.
    if (driver === undefined || driver === needs) continue;
    item.refused = `an optimized ${needs} backup; pool ${pool} is ${driver}`;
    firstNeeded ??= needs;
  }
  if (firstNeeded) {
    // Called only when nothing else was refused: every refused item is one of these.
    const wrong = plan.filter((i) => i.refused).map((i) => `${subjectLabel(i.dest)} (${i.refused})`);
    return new UsageError(
      `an optimized backup restores only onto a pool of the driver that made it: ${wrong.join(', ')}`,
      `restore onto a ${firstNeeded} pool (--pool-map OLD=POOL), or use a backup taken without --optimized`,
    );
  }
  return undefined;
}

/**
 * Instances restored beside others (another name, another project) keep the backup's static IPs
 * and set MACs, like `incus copy`; where another instance on the same network has one of them,
 * Incus refuses the start. Those are restored and left stopped, which the preview says, instead
 * of failing after the import. The instance a replace replaces does not count: its NICs are
 * masked first (so a replace under the backup's own name meets no clash, but one that replaces
 * another instance, --target-name OTHER --replace, may).
 */
async function leaveClashingCopiesStopped(
  ctx: RunContext,
  plan: RestorePlanItem[],
  maps: Mappings | undefined,
  projectConfigs: () => Promise<Map<string, Record<string, string>>>,
): Promise<void> {
  // Only a copy beside the original shares its volumes by accident: restored under its own
  // name and project, an instance shares them with whoever it shared them with before.
  const copy = (i: RestorePlanItem) => i.dest.name !== i.entry.manifest.name || i.dest.project !== i.entry.manifest.project;
  const candidates = plan
    .filter((i) => i.action !== 'skip' && i.dest.kind === 'instance' && i.start)
    .map((item) => ({ item, addresses: fixedAddressesOf(item, maps), volumes: copy(item) ? attachedVolumesOf(item, maps) : [] }))
    .filter((c) => c.addresses.length || c.volumes.length);
  if (!candidates.length) return;
  const [instances, projects] = await Promise.all([ctx.api.listAllInstances(), projectConfigs()]);
  const owner = (feature: 'networks' | 'storage.volumes') => {
    const own = new Set([...projects].filter(([, config]) => ownsFeature(config, feature)).map(([name]) => name));
    return (p: string) => (own.has(p) || p === 'default' ? p : 'default');
  };
  const networkProject = owner('networks');
  const volumeProject = owner('storage.volumes');
  for (const { item, addresses, volumes } of candidates) {
    const others = item.action === 'replace' ? instances.filter((i) => (i.project ?? 'default') !== item.dest.project || i.name !== item.dest.name) : instances;
    // A copy beside the original that shares its custom volumes would write into them at once.
    const clashes = [...addressClashes(addresses, item.dest.project, others, networkProject), ...sharedVolumes(volumes, item.dest.project, others, volumeProject)];
    if (!clashes.length) continue;
    item.start = false;
    item.notStarted = `not started: ${clashes.join(', ')}`;
  }
}

/**
 * Streams a backup's archive into `upload` (an Incus import), checked against its manifest on
 * the way (`transforms` go after the check). Whichever side fails first stops the other: a bad
 * checksum aborts the upload, a refused upload stops reading the archive.
 */
export async function uploadVerified<T>(
  ctx: Pick<RunContext, 'backend' | 'signal'>,
  entry: BackupEntry,
  label: string,
  onBytes: (n: number) => void,
  upload: (body: Readable) => Promise<T>,
  transforms: Transform[] = [],
): Promise<T> {
  const m = entry.manifest;
  const archive = await ctx.backend.openArchive(entry, ctx.signal);
  const verify = new VerifyingStream({ sha256: m.archive.sha256, size: m.archive.size, label }, onBytes);
  const body = new PassThrough({ highWaterMark: 1 << 20 });
  const flowing = new Promise<void>((resolve) => verify.once('data', () => resolve()));
  const feeding = pipeline([archive, verify, ...transforms, body], { signal: ctx.signal });
  // The import goes out only once the archive flows: an upload sends nothing before its first
  // body byte, and Incus drops a connection that stays idle for 30 s, which a restic dump
  // waiting for another client's lock, or loading a large index, easily outlasts.
  const flows = await Promise.race([flowing.then(() => true), feeding.then(() => true, () => false)]);
  const [fed, uploaded] = await Promise.allSettled([feeding, flows ? upload(body) : Promise.resolve(undefined as T)]);
  // When Incus refuses the upload half-way (its staging area full, say), its answer says why; the
  // feed then only broke off because nothing took its bytes any more.
  const feedBrokeOff = fed.status === 'rejected' && (fed.reason as NodeJS.ErrnoException)?.code === 'ERR_STREAM_PREMATURE_CLOSE';
  const order = uploaded.status === 'rejected' && (fed.status === 'fulfilled' || feedBrokeOff) ? [uploaded, fed] : [fed, uploaded];
  for (const r of order) if (r.status === 'rejected') {
    body.destroy();
    archive.destroy();
    throw r.reason;
  }
  return (uploaded as PromiseFulfilledResult<T>).value;
}

/**
 * Carries out one plan item. The backup is first imported under a temporary name while its
 * sha256 is checked on the way in; only a complete, verified import takes the destination's
 * name. For a replace the current resource is renamed aside first and is put back, as it was,
 * if anything after that fails.
 */
export async function restoreItem(ctx: RunContext, item: RestorePlanItem, again = false): Promise<void> {
  if (item.action === 'skip') return;
  const { api, ui, signal } = ctx;
  const label = subjectLabel(item.dest);
  const task = ui.task(label);
  const cleanup = new Cleanup(api.client);
  const m = item.entry.manifest;
  const staged: BackupSubject = { ...item.dest, name: tmpName() };
  try {
    task.phase('importing');
    let swapped = false;
    let importing: string | undefined;
    cleanup.push(`delete partly restored ${staged.name}`, async () => {
      if (swapped) return;
      // Incus goes on creating it from a whole upload after the run stopped waiting (Ctrl-C),
      // and refuses to delete it meanwhile ("busy running a create operation").
      if (importing) await api.client.settle(importing, () => ui.info(`waiting for Incus to finish importing ${staged.name}, to remove it (Ctrl-C again quits; the next run removes it then)`));
      await api.deleteOwn(staged);
    });
    const maps = item.maps;
    // The project as it is now, in case its config changed since the plan.
    if (staged.kind === 'instance' && volatileLocked((await api.getProject(staged.project)).config ?? {}, m.source.instanceType)) {
      throw lockedProjectError([staged.project], 'run');
    }
    await uploadVerified(
      ctx,
      item.entry,
      `${m.name} ${m.timestamp}`,
      (n) => task.bytes(n, m.archive.size),
      (body) => api.importBackup(staged, body, { signal, onOperation: (op) => (importing = op), ...(item.rootPool ? { pool: item.rootPool } : {}) }),
      maps ? [new TarYamlRewriter((doc) => mapInstanceYaml(doc, maps))] : [],
    );
    // Deleted by someone while the archive uploaded: there is nothing to replace any more, and
    // the restore takes the free name, as a create would.
    const replacing = item.action === 'replace' && (await api.exists(subjectPath(item.dest), item.dest.project).catch(() => true));
    if (item.action === 'replace' && !replacing) ui.warn(`${label}: deleted during the restore; restored under its name all the same`);
    task.phase(replacing ? 'swapping in' : 'renaming into place');
    if (replacing) {
      // The restored instance must start before the original goes: one that does not (a device
      // or network the host lacks now) gives way to the original again.
      await unbreakableStep(`replacing ${label}`, () => swapIn(ctx, item, staged, task));
      swapped = true;
    } else {
      await settleStagedConfig(ctx, item, staged);
      await rename(ctx, staged, item.dest.name);
      swapped = true; // the staged resource is now the destination
      await keepCloudInitIdentity(ctx, item);
      await startIfItRan(ctx, item, task).catch((e: unknown) => {
        // It is restored, and stays: what failed is its start, which the message must say (a
        // second run would only meet "already exists").
        const where = `--project ${item.dest.project}`;
        throw new IbError(
          `${label} was restored but did not start (${(e as Error).message}); it is left stopped`,
          ExitCode.failed,
          `\`incus info --show-log ${item.dest.name} ${where}\` says why; start it once that is fixed (\`incus start ${item.dest.name} ${where}\`)`,
        );
      });
    }
    if (item.notStarted) ui.warn(`${label}: ${item.notStarted}; it is left stopped, with boot.autostart off: change that before starting it`);
    task.end(true, `${m.timestamp} → ${item.dest.name}${item.notStarted ? `; ${item.notStarted}` : ''}`);
  } catch (e) {
    task.end(false);
    const cleaned = await cleanup.run(ui.warn.bind(ui));
    if (signal.aborted) {
      if (e instanceof UndoIncompleteError) throw e;
      throw new InterruptedError(`interrupted while restoring ${label}; ${cleaned ? 'nothing was changed' : `the destination is untouched, but ${staged.name} is left (the warning above says why); the next run removes it`}`);
    }
    if (!again && e instanceof ChecksumMismatchError && ctx.backend.wasReadAhead?.(item.entry)) {
      // What was read ahead was a newer backup that landed after the listing, not this one.
      ui.warn(`${label}: the read-ahead of ${m.timestamp} met a newer backup; reading ${m.timestamp} again`);
      return restoreItem(ctx, item, true);
    }
    throw streamFailure(e, `the restore of ${label}`, `target ${ctx.backend.uri}`);
  }
}

async function rename(ctx: RunContext, s: BackupSubject, to: string): Promise<void> {
  if (s.kind === 'instance') await ctx.api.renameInstance(s.project, s.name, to);
  else await ctx.api.renameVolume(s.project, s.pool, s.name, to);
}

/** Starts the restored instance if it was running at backup time (and no --no-start). */
async function startIfItRan(ctx: RunContext, item: RestorePlanItem, task: Task): Promise<void> {
  if (!item.start) return;
  task.phase('starting');
  await ctx.api.setInstanceState(item.dest.project, item.dest.name, 'start');
}

/**
 * Replaces the destination with the staged import: stop what must stop, rename the current
 * resource aside, rename the staged one in, start what ran (the restored instance, or the users
 * of a restored volume), then delete the old one. Any failure before the delete, a start that
 * fails included, puts the old one back under its name and restarts what was stopped.
 */
async function swapIn(ctx: RunContext, item: RestorePlanItem, staged: BackupSubject, task: Task): Promise<void> {
  const { api, ui } = ctx;
  const dest = item.dest;
  const aside: BackupSubject = { ...dest, name: asideName() };
  const undo = new Cleanup(api.client);
  let notStarted: { error: Error; user?: string } | undefined;
  /** Gives the original set aside its network devices and MACs back (see maskNics). */
  let unmaskAside: (() => Promise<void>) | undefined;
  const ephemeral: string[] = [];
  // Ctrl-C (or SIGTERM) during the swap puts the original back, like any failure before the
  // original is deleted: "stopping and cleaning up" must not end with the original gone.
  const stillWanted = () => {
    if (ctx.signal.aborted) throw new InterruptedError(`interrupted while replacing ${dest.name}`);
  };
  try {
    // What the swap changes is written on the original first (see replacejournal.ts): a run
    // killed outright from here on leaves the next run what it needs to put the original back.
    const stopping = await Promise.all(item.stops.map((name) => api.getInstance(dest.project, name)));
    const original = dest.kind === 'instance' ? await api.getInstance(dest.project, dest.name) : undefined;
    const attaching = dest.kind === 'volume' ? disksAttaching(await api.listInstances(dest.project), dest.pool, dest.name) : [];
    const journal = newJournal(
      dest.name,
      stopping.map((i) => ({ name: i.name, frozen: i.status === 'Frozen', ephemeral: i.ephemeral })),
      // The MAC addresses are what Incus drops with a masked NIC; the other volatile keys of a
      // NIC belong to a running instance and go when it stops. The cloud-init instance-id is
      // what Incus changes on a rename (there and back).
      original ? { nics: { devices: original.devices, volatile: { ...nicVolatile(original, /\.hwaddr$/), ...cloudInitId(original) } } } : { detached: attaching },
    );
    await writeJournal(ctx, dest, journal);
    // Undone last: the original is back under its name by then.
    undo.push(`clear the replace's journal on ${dest.name}`, () => clearJournal(ctx, dest));
    for (const current of stopping) {
      const name = current.name;
      // Incus deletes an ephemeral instance that stops: it is an ordinary one until it runs again.
      if (current.ephemeral) {
        await api.updateInstance(dest.project, name, (i) => ({ ...i, ephemeral: false }));
        ephemeral.push(name);
        undo.push(`make ${name} ephemeral again`, () => api.updateInstance(dest.project, name, (i) => ({ ...i, ephemeral: true })));
      }
      // A frozen instance cannot shut down cleanly (its processes do not run): waiting for it
      // would only take the 30 s timeout. It is stopped at once and, on failure, frozen again.
      const frozen = current.status === 'Frozen';
      if (frozen) await api.setInstanceState(dest.project, name, 'stop', { force: true });
      else {
        await api.setInstanceState(dest.project, name, 'stop', { timeout: 30 }).catch(() =>
          api.setInstanceState(dest.project, name, 'stop', { force: true }),
        );
      }
      // Restarted on failure; on success the restored instance's own start rule applies.
      undo.push(`start ${name}${frozen ? ' and freeze it again' : ''}`, async () => {
        await api.setInstanceState(dest.project, name, 'start');
        if (frozen) await api.setInstanceState(dest.project, name, 'freeze');
      });
    }
    // Detach a volume's disk devices first: Incus takes ~30 s to rename an attached volume, and
    // re-pointing devices by hand afterwards is what a rename would do anyway. Re-attaching
    // them is both the success path and the undo.
    stillWanted();
    const detached = dest.kind === 'volume' ? await detachDisks(ctx, dest.project, attaching) : [];
    undo.push(`re-attach ${dest.name}`, () => reattachUsers(ctx, dest.project, detached));
    await rename(ctx, dest, aside.name);
    undo.push(`put ${dest.name} back`, async () => {
      await rename(ctx, aside, dest.name);
      // Renamed there and back, it would boot as a new machine to cloud-init.
      if (original && Object.keys(cloudInitId(original)).length) await api.patchInstanceConfig(dest.project, dest.name, cloudInitId(original));
    });
    if (aside.kind === 'instance') {
      const unmask = (unmaskAside = await maskNics(ctx, aside));
      undo.push(`give ${dest.name} its network devices back`, unmask);
    }
    await settleStagedConfig(ctx, item, staged);
    stillWanted();
    await rename(ctx, staged, dest.name);
    undo.push(`remove the restored copy`, async () => {
      // A start that failed half-way can leave it running or frozen: it must be stopped first.
      // Removed rather than moved aside: on a bridge it would keep the original from starting.
      if (dest.kind === 'instance') await api.setInstanceState(dest.project, dest.name, 'stop', { force: true }).catch(() => undefined);
      await api.deleteOwn(dest);
    });
    const users = dest.kind === 'volume' ? item.stops : [];
    if (dest.kind === 'volume') {
      // Users that started with the restored volume stop again (the undo above restarts them
      // with the original) and let go of it, so that it can be moved away.
      undo.push(`detach the restored ${dest.name}`, async () => {
        for (const name of users) await api.setInstanceState(dest.project, name, 'stop', { force: true }).catch(() => undefined);
        await detachDisks(ctx, dest.project, disksAttaching(await api.listInstances(dest.project), dest.pool, dest.name));
      });
    }
    await reattachUsers(ctx, dest.project, detached);
    await keepCloudInitIdentity(ctx, item);
    stillWanted();
    await startIfItRan(ctx, item, task).catch((e: unknown) => {
      notStarted = { error: e as Error };
      throw e;
    });
    // The users of a volume run again before the original goes, like a restored instance; one
    // the admin had paused (frozen) is paused again, as the undo would leave it.
    const paused = new Set(stopping.filter((i) => i.status === 'Frozen').map((i) => i.name));
    for (const name of users) {
      await api.setInstanceState(dest.project, name, 'start').catch((e: unknown) => {
        notStarted = { error: e as Error, user: name };
        throw e;
      });
      if (paused.has(name)) await api.setInstanceState(dest.project, name, 'freeze');
    }
    stillWanted();
  } catch (e) {
    ui.warn(`replacing ${dest.name} failed (${(e as Error).message}); putting the original back`);
    const putBack = await undo.run(ui.warn.bind(ui));
    if (notStarted && putBack) throw notStartedError(dest.name, notStarted.error, notStarted.user);
    if (e instanceof InterruptedError && !putBack) throw new UndoIncompleteError(`interrupted while replacing ${dest.name}; putting the original back did not complete (the warnings above say what is left)`);
    // What failed, and that nothing is lost: the error line is what a person reads last.
    // (An IncusError is an IbError too.)
    if (putBack && !(e instanceof InterruptedError) && e instanceof IbError) {
      throw new IbError(`replacing ${dest.name} failed (${e.message}); the original is back in place`, e.exitCode, e.hint, { cause: e });
    }
    throw e;
  }
  // Snapshots taken since the preview (by the admin, or a schedule) are in no backup and were
  // not shown as going: the replaced one is kept with them, and said so.
  const known = new Set(item.snapshotsAtPlan ?? []);
  const taken = item.snapshotsAtPlan ? (await api.listSnapshots(aside).catch(() => [] as string[])).filter((n) => !known.has(n)) : [];
  if (taken.length) {
    await clearJournal(ctx, aside).catch(() => undefined);
    // As it was (its NICs and MACs; it stays stopped, so it clashes with nothing).
    await unmaskAside?.().catch((e: unknown) => ui.warn(`${aside.name} could not get its network devices back (${(e as Error).message})`));
    // Under a name of its own (an ibold-… one would read as what a killed run left), the first
    // free one of NAME-pre-restore, NAME-pre-restore-2, …
    let kept = aside.name;
    for (let n = 1; n <= 20 && kept === aside.name; n++) {
      const keptAs = `${dest.name.slice(0, 48)}-pre-restore${n > 1 ? `-${n}` : ''}`;
      kept = await rename(ctx, aside, keptAs).then(() => keptAs, () => aside.name);
    }
    const noun = dest.kind === 'volume' ? `storage volume delete ${dest.pool}` : 'delete';
    ui.warn(
      `the replaced ${dest.name} is kept${dest.kind === 'instance' ? ', stopped,' : ''} as ${kept}: it has ${taken.length === 1 ? 'a snapshot' : 'snapshots'} taken since the preview (${taken.join(', ')}), which deleting it would lose; ` +
        `\`incus ${noun} ${kept} --project ${dest.project}\` once ${taken.length === 1 ? 'it is' : 'they are'} no longer needed`,
    );
  } else {
    // The swap is done; failing to delete the old copy loses nothing, so it is only a warning.
    await api.deleteOwn(aside).catch(async (e: unknown) => {
      ui.warn(`the replaced ${dest.name} is kept as ${aside.name}: deleting it failed (${(e as Error).message})`);
      // Not an original to put back: the swap is done.
      await clearJournal(ctx, aside).catch(() => undefined);
    });
  }
  // The users of a volume that were ephemeral, running again, are so again.
  for (const name of ephemeral) {
    if (dest.kind === 'instance' && name === dest.name) continue;
    await api.updateInstance(dest.project, name, (i) => ({ ...i, ephemeral: true })).catch((e: unknown) =>
      ui.warn(`${name} could not be made ephemeral again (${(e as Error).message}); \`incus config edit ${name}\` sets it`),
    );
  }
}

/** An interrupted swap whose undo did not finish: "nothing was changed" would not be true. */
class UndoIncompleteError extends InterruptedError {}

/** What a replace says when the restored instance, or a user of the restored volume, did not start. */
function notStartedError(dest: string, error: Error, user?: string): IbError {
  if (!user) {
    return new IbError(
      `the restored ${dest} did not start (${error.message}); the original is back in place`,
      ExitCode.failed,
      'restore it with --no-start (or --target-name NEW) to look at it, or give it what it needs (a device, a network) and run again',
    );
  }
  return new IbError(
    `${user} did not start with the restored ${dest} (${error.message}); the original ${dest} is back in place and ${user} runs with it`,
    ExitCode.failed,
    `restore it with --target-name NEW to look at it, or give ${user} what it needs (a device, a network) and run again`,
  );
}

/**
 * Masks the network devices of a stopped instance (its own and its profiles'), so that it does
 * not stand in the way of another instance with the same NICs: Incus refuses to start an
 * instance whose NIC has the MAC address or static IP of any other instance's NIC on the same
 * bridge, stopped ones included. A restored instance has the original's MACs and addresses, so
 * the original, set aside until the restored one runs, is masked meanwhile. Returns what gives
 * the devices back as they were, with the volatile keys (MAC addresses) Incus drops with a
 * masked NIC.
 */
async function maskNics(ctx: RunContext, s: BackupSubject & { kind: 'instance' }): Promise<() => Promise<void>> {
  const inst = await ctx.api.getInstance(s.project, s.name);
  const nics = nicNames(inst);
  if (nics.length === 0) return async () => undefined;
  const devices = inst.devices;
  const volatile = nicVolatile(inst);
  await ctx.api.updateInstance(s.project, s.name, (i) => ({ ...i, devices: { ...i.devices, ...Object.fromEntries(nics.map((n) => [n, { type: 'none' }])) } }));
  return async () => {
    await ctx.api.updateInstance(s.project, s.name, (i) => ({ ...i, devices }));
    if (Object.keys(volatile).length) await ctx.api.patchInstanceConfig(s.project, s.name, volatile);
  };
}

/** The instance's NICs, its own and its profiles'. */
function nicNames(inst: Instance): string[] {
  return Object.entries(inst.expanded_devices ?? inst.devices).filter(([, d]) => d.type === 'nic').map(([name]) => name);
}

/** The volatile keys (MAC addresses and the like) of the instance's NICs; `only` those whose name matches. */
function nicVolatile(inst: Instance, only?: RegExp): Record<string, string> {
  const nics = nicNames(inst);
  return Object.fromEntries(Object.entries(inst.config).filter(([k]) => nics.some((n) => k.startsWith(`volatile.${n}.`)) && (!only || only.test(k))));
}

/** Removes these disk devices (from stopped instances); gives them back for reattachUsers. */
async function detachDisks(ctx: RunContext, project: string, disks: DetachedDisk[]): Promise<DetachedDisk[]> {
  for (const inst of new Set(disks.map((d) => d.instance))) {
    await ctx.api.updateInstance(project, inst, (i) => {
      const devices = { ...i.devices };
      for (const d of disks) if (d.instance === inst) delete devices[d.device];
      return { ...i, devices };
    });
  }
  return disks;
}

async function writeJournal(ctx: RunContext, s: BackupSubject, j: ReplaceJournal): Promise<void> {
  if (s.kind === 'instance') await ctx.api.patchInstanceConfig(s.project, s.name, { [JOURNAL_KEY]: encodeJournal(j) });
  else if (s.kind === 'volume') await ctx.api.patchVolumeConfig(s.project, s.pool, s.name, { [JOURNAL_KEY]: encodeJournal(j) });
}

async function clearJournal(ctx: RunContext, s: BackupSubject): Promise<void> {
  if (s.kind === 'instance') await ctx.api.updateInstance(s.project, s.name, (i) => ({ ...i, config: withoutJournal(i.config) }));
  else if (s.kind === 'volume') await ctx.api.updateVolume(s.project, s.pool, s.name, (v) => ({ ...v, config: withoutJournal(v.config) }));
}

async function reattachUsers(ctx: RunContext, project: string, disks: DetachedDisk[]): Promise<void> {
  for (const d of disks) {
    await ctx.api.updateInstance(project, d.instance, (i) => ({ ...i, devices: { ...i.devices, [d.device]: d.config } }));
  }
}

/**
 * The config a staged instance takes its name with, set in one update:
 *  - The source's boot.autostart, which the archive of a temporary copy does not hold
 *    (Manifest.source.bootAutostart).
 *  - Restored under another name or into another project, it is a second machine beside the
 *    first, not the same one: like `incus copy`, it gets new MAC addresses (Incus makes them at
 *    its first start). With the original's it would not even start next to it on the same
 *    bridge (Incus refuses a MAC that another NIC there has), and in another project it would
 *    share the original's MAC on the wire.
 *  - Without a replace's journal (replacejournal.ts) that a backup taken during a replace
 *    holds: the next run would take the restored resource for that replace's original. A
 *    staged volume is cleared of it too.
 */
async function settleStagedConfig(ctx: RunContext, item: RestorePlanItem, staged: BackupSubject): Promise<void> {
  if (staged.kind === 'volume') {
    // A backup taken while a replace of it was under way holds that replace's journal, which
    // must not make the next run "put back" the restored volume.
    await ctx.api.updateVolume(staged.project, staged.pool, staged.name, (v) => (JOURNAL_KEY in (v.config ?? {}) ? { ...v, config: withoutJournal(v.config) } : v));
    return;
  }
  if (staged.kind !== 'instance') return;
  await keepSnapshotExpiry(ctx, item, staged);
  const m = item.entry.manifest;
  const autostart = m.source.bootAutostart;
  const copy = item.dest.name !== m.name || item.dest.project !== m.project;
  // One read, and one write with its ETag only when something changes (a PATCH would read the
  // instance a second time).
  await ctx.api.updateInstance(staged.project, staged.name, (i) => {
    if (autostart === undefined && !copy && !item.notStarted && !(JOURNAL_KEY in (i.config ?? {}))) return i;
    const config = withoutJournal(i.config);
    if (autostart === '') delete config['boot.autostart'];
    else if (autostart !== undefined) config['boot.autostart'] = autostart;
    if (copy) {
      // A second machine beside the first, as `incus copy` makes one: its own MACs and UUIDs.
      for (const k of Object.keys(config)) if (/^volatile\.[^.]+\.hwaddr$/.test(k)) delete config[k];
      for (const k of ['volatile.uuid', 'volatile.uuid.generation']) if (k in config) config[k] = randomUUID();
    }
    // Left stopped because it would share another's volumes or addresses: nor may Incus start
    // it on its own when the host boots.
    if (item.notStarted) config['boot.autostart'] = 'false';
    return { ...i, config };
  });
}

/**
 * Incus 6.0 imports an instance's snapshots without their expiry dates (a volume's keep
 * theirs): each one that had a date still ahead gets it back, so that it goes when it would
 * have gone. One whose date has passed is kept, with none: deleting restored data is not the
 * restore's to do.
 */
async function keepSnapshotExpiry(ctx: RunContext, item: RestorePlanItem, staged: BackupSubject): Promise<void> {
  const snaps = (item.entry.manifest.index?.config as { snapshots?: { name?: unknown; expires_at?: unknown }[] } | undefined)?.snapshots;
  for (const s of Array.isArray(snaps) ? snaps : []) {
    if (typeof s.name !== 'string' || typeof s.expires_at !== 'string' || !(Date.parse(s.expires_at) > Date.now())) continue;
    await ctx.api.setSnapshotExpiry(staged, s.name, s.expires_at);
  }
}

/** The instance's cloud-init instance-id key, if it has one (see keepCloudInitIdentity). */
function cloudInitId(i: Instance): Record<string, string> {
  const id = i.config['volatile.cloud-init.instance-id'];
  return id ? { 'volatile.cloud-init.instance-id': id } : {};
}

/**
 * Incus gives a renamed instance a new cloud-init instance-id, which would make cloud-init
 * run again on first boot. A restore under the original name is the same machine: keep its id.
 */
async function keepCloudInitIdentity(ctx: RunContext, item: RestorePlanItem): Promise<void> {
  const m = item.entry.manifest;
  if (item.dest.kind !== 'instance' || item.dest.name !== m.name) return;
  const config = (m.index?.config as { container?: { config?: Record<string, string> } } | undefined)?.container?.config;
  const id = config?.['volatile.cloud-init.instance-id'];
  if (id) await ctx.api.patchInstanceConfig(item.dest.project, item.dest.name, { 'volatile.cloud-init.instance-id': id });
}
