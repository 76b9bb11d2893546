import { hostname } from 'node:os';
import { pipeline } from 'node:stream/promises';
import { subjectLabel, subjectPath, withoutSchedule, type BackupSubject } from '../incus/api.js';
import type { Instance, StorageVolume } from '../incus/types.js';
import { ignoreNotFound, IncusError, streamFailure, VOLATILE_REFUSED } from '../incus/errors.js';
import { IbError, InterruptedError } from '../errors.js';
import type { ArchiveWriter, BackupEntry } from '../backends/types.js';
import { HashingStream } from './hashing.js';
import { identityKeys, safeVolatileKey, setCreatedAt, setInstanceConfig, setVolumeConfig } from './identity.js';
import { draftManifest, type Manifest } from './manifest.js';
import { Cleanup, type RunContext } from './run.js';
import { sleep } from './pool.js';
import { TarIndexCapture } from './tarindex.js';
import { TarYamlRewriter } from './tarrewrite.js';
import { isStaleAsideName, isStaleTmpName, liveOtherRun, tmpName } from './tmpnames.js';
import { journalOf, putBackKilledReplaces } from './replacejournal.js';
import { RenamedDuringBackupError, Whereabouts } from './renamed.js';
import { liveFreezer, markFrozen, thawAbandoned } from './freezemarks.js';
import type { Compression, ConsistencyMode, ResourceKey } from './types.js';

export interface BackupOptions {
  /** --no-snapshot: export the live resource (not point-in-time). */
  live: boolean;
  optimized: boolean;
  withSnapshots: boolean;
  compression: Compression;
  /** Called when the archive starts flowing into the backend (the target is open by then). */
  onStreaming?: () => void;
  /** Called once the archive has been handed over in full, before the backend commits it. */
  onStreamed?: () => void;
  /** The run this backup is part of (see Manifest.run). */
  run?: Manifest['run'];
  /** This try came after waiting (up to lockWaitMs) for another run that held the resource: no further turn. */
  lastTurn?: { lockWaitMs: number };
}

/** The backup's resource key of an instance or volume. */
export function subjectKey(subject: BackupSubject): ResourceKey {
  return subject.kind === 'instance'
    ? { type: 'instance', project: subject.project, name: subject.name }
    : { type: 'volume', project: subject.project, pool: subject.pool, name: subject.name };
}

const DAY = 24 * 3600 * 1000;

/**
 * An instance's disks whose data lives outside Incus's storage pools (a host path, a Ceph RBD
 * or CephFS source), so outside its backup; custom volumes are backed up on their own.
 */
export function externalDisks(inst: Pick<Instance, 'devices' | 'expanded_devices'>): string[] {
  return Object.entries(inst.expanded_devices ?? inst.devices)
    .filter(([, d]) => d.type === 'disk' && !d.pool && d.source && d.path !== '/')
    .map(([name, d]) => `${name} (${d.source})`);
}

/**
 * Backs up one instance or custom volume into the backend.
 *
 * Consistency: Incus 6.0 can only back up the live resource. For a running instance (or any
 * custom volume) we take a temporary snapshot, copy that snapshot to a temporary resource and
 * back the copy up, so the archive holds the filesystem at the snapshot instant and exactly one
 * copy of it. A stopped instance is already still and is backed up directly. With
 * --with-snapshots a running instance is frozen while the server stages the backup instead,
 * because a copy cannot carry the source's snapshots.
 */
export async function backupResource(ctx: RunContext, subject: BackupSubject, opts: BackupOptions): Promise<BackupEntry> {
  const { api, backend, ui, signal } = ctx;
  const label = subjectLabel(subject);
  const task = ui.task(label);
  const cleanup = new Cleanup(api.client);
  // An admin may rename the resource meanwhile: its temporary snapshot and server-side backup go with it.
  const where = new Whereabouts(api, subject);
  const server = await api.client.server();
  let writer: ArchiveWriter | undefined;
  try {
    const key = subjectKey(subject);
    // The writer first: a restic target then opens its repository (half a second of key
    // derivation) while Incus snapshots and stages; ready() is awaited before the download.
    writer = await backend.createWriter({
      key,
      when: new Date(),
      archiveBase: subject.kind === 'instance' ? 'export.tar' : 'volume.tar',
      compression: opts.compression,
    });
    await sweepResourceLeftovers(ctx, subject, label, opts.lastTurn?.lockWaitMs);
    await api.checkStagingRoom();
    let source: Manifest['source'];
    let running = false;
    let srcVol: StorageVolume | undefined;
    let before: Instance | undefined;
    if (subject.kind === 'instance') {
      const inst: Instance = (before = await api.getInstance(subject.project, subject.name));
      where.uuid = inst.config['volatile.uuid'];
      running = inst.status !== 'Stopped';
      source = { status: inst.status, instanceType: inst.type };
      // Said on the first turn only: a resource put off (held by another run) is tried again.
      const outside = opts.lastTurn ? [] : externalDisks(inst);
      if (outside.length) {
        ui.warn(`${label}: not in its backup, since Incus backs up an instance's own volume only: disk ${outside.join(', ')}; back ${outside.length === 1 ? 'it' : 'them'} up separately`);
      }
    } else {
      const vol = (srcVol = await api.getVolume(subject.project, subject.pool, subject.name));
      if (vol.content_type === 'iso') throw new IbError(`${label} is an ISO volume: ${ISO_VOLUMES.why}`, 1, ISO_VOLUMES.hint);
      source = { contentType: vol.content_type };
    }
    let mode: ConsistencyMode;
    // A stopped instance is still either way: --no-snapshot changes nothing for it.
    if (subject.kind === 'instance' && !running) mode = 'stopped';
    else if (opts.live) mode = 'live';
    else if (opts.withSnapshots && subject.kind === 'instance') mode = 'freeze';
    else if (opts.withSnapshots) {
      mode = 'live';
      ui.warn(`${label}: --with-snapshots ships the volume's snapshots with the live volume; its current state is not point-in-time`);
    } else mode = 'snapshot';
    if (opts.live && mode === 'live') ui.warn(`${label}: --no-snapshot exports the live filesystem; files may be inconsistent with each other`);

    const expires = new Date(Date.now() + DAY);
    let exportFrom: BackupSubject = subject;
    let instant = new Date();
    let frozenMs: number | undefined;
    // What the archive's YAML must say of the source rather than of the temporary copy exported.
    const inStream: ((doc: Record<string, unknown>) => void)[] = [];
    if (mode === 'snapshot') {
      const snap = tmpName();
      task.phase('snapshot');
      // Snapshots are atomic only on copy-on-write drivers; on `dir` a snapshot is a file-by-file
      // copy. Freezing the writers for its duration makes it one instant on every driver (on
      // CoW drivers the freeze lasts milliseconds).
      const thawAll = await freezeWriters(ctx, subject, cleanup);
      instant = new Date();
      const deleteSnap = () => where.onSubject((s) => api.deleteSnapshot(s, snap));
      where.snapshot = snap;
      const dropSnap = cleanup.push(`delete temporary snapshot ${snap}`, deleteSnap);
      await api.createSnapshot(subject, snap, expires);
      frozenMs = await thawAll();
      const copy = tmpName();
      // Interrupted meanwhile: no copy (minutes on the dir driver) is started to be thrown away.
      signal.throwIfAborted();
      task.phase('copying snapshot');
      if (subject.kind === 'instance') {
        const srcInst = await api.getInstance(subject.project, subject.name);
        cleanup.push(`delete temporary copy ${copy}`, () => api.deleteOwn({ ...subject, name: copy }));
        await api.copyInstanceFromSnapshot(subject.project, subject.name, snap, copy, {});
        // The copy got a new identity; give it the source's so the restore is the same machine.
        // Nor may Incus start it on its own, beside the original, should the daemon restart
        // meanwhile (boot.autostart, or a running source's last state): the manifest keeps the
        // source's setting for the restore.
        const identity = identityKeys(srcInst.config);
        const settle = (keys: Record<string, string>) =>
          api.updateInstance(subject.project, copy, (i) => {
            const config: Record<string, string> = { ...withoutSchedule(i.config), ...keys, 'boot.autostart': 'false' };
            delete config['volatile.apply_template'];
            // A copy is never ephemeral, nor has it a description; the archive must say what
            // the source is.
            return { ...i, config, ephemeral: srcInst.ephemeral, description: srcInst.description };
          });
        try {
          await settle(identity);
        } catch (e) {
          if (!(e instanceof IncusError && VOLATILE_REFUSED.test(e.serverMessage))) throw e;
          // The project refuses the keys (limits.* or restrictions, see volatileLocked): the
          // copy keeps its own, and the archive gets the source's on its way to the target.
          await settle(Object.fromEntries(Object.entries(identity).filter(([k]) => safeVolatileKey(k))));
          inStream.push(setInstanceConfig(identity));
        }
        const schedule = srcInst.config['snapshots.schedule'];
        if (schedule !== undefined) inStream.push(setInstanceConfig({ 'snapshots.schedule': schedule }));
        if (srcInst.created_at) inStream.push(setCreatedAt(srcInst.created_at));
        source = { ...source, bootAutostart: srcInst.config['boot.autostart'] ?? '' };
      } else {
        cleanup.push(`delete temporary copy ${copy}`, () => api.deleteOwn({ ...subject, name: copy }));
        const config = await api.copyVolumeFromSnapshot(subject.project, subject.pool, srcVol!, snap, copy);
        const schedule = config['snapshots.schedule'];
        if (schedule !== undefined) inStream.push(setVolumeConfig({ 'snapshots.schedule': schedule }));
        if (srcVol!.created_at) inStream.push(setCreatedAt(srcVol!.created_at));
      }
      // The source carries the snapshot only as long as the copy takes. One Incus cannot
      // delete yet (its dir driver keeps a snapshot of a volume with a space in its name
      // mounted after a copy) does not cost the backup: the cleanup tries again, and warns.
      await cleanup.runNow(dropSnap, deleteSnap).catch((e: unknown) => {
        if (!(e instanceof IncusError)) throw e;
      });
      exportFrom = { ...subject, name: copy };
    }

    const bname = tmpName();
    signal.throwIfAborted();
    task.phase('staging on the server');
    // --with-snapshots: the instance stays frozen while the server stages it (see freezeWriters).
    const thawAll = mode === 'freeze' ? await freezeWriters(ctx, subject, cleanup) : undefined;
    if (mode !== 'snapshot') instant = new Date();
    const stagedOn = exportFrom;
    if (stagedOn === subject) where.backup = bname;
    cleanup.push(`delete server-side backup ${bname}`, () =>
      stagedOn === subject ? where.onSubject((s) => api.deleteServerBackup(s, bname)) : api.deleteServerBackup(stagedOn, bname).catch(ignoreNotFound),
    );
    await api.createServerBackup(exportFrom, bname, { withSnapshots: opts.withSnapshots, optimized: opts.optimized, expiresAt: expires, label }, signal);
    if (thawAll) frozenMs = await thawAll();
    // Incus lets an instance start while it stages its backup: staged as a stopped one, it may
    // then hold files of different instants. Started since (its last use moved) means that.
    if (mode === 'stopped' && before) {
      const now = await api.getInstance(subject.project, subject.name);
      if (now.status !== 'Stopped' || now.last_used_at !== before.last_used_at) throw new StartedDuringBackupError(label);
    }

    await writer.ready();
    opts.onStreaming?.();
    const dl = await api.downloadServerBackup(exportFrom, bname, signal);
    const index = new TarIndexCapture();
    const hash = new HashingStream((n) => task.bytes(n, dl.size));
    const identityInStream = inStream.length ? new TarYamlRewriter((doc) => inStream.forEach((f) => f(doc))) : undefined;
    await pipeline([dl.stream, ...(identityInStream ? [identityInStream] : []), index, hash, writer.stream], { signal });
    // An interrupt that lands after the last byte must still keep nothing.
    signal.throwIfAborted();
    const received = identityInStream?.bytesIn ?? hash.bytes;
    if (dl.size !== undefined && received !== dl.size) {
      throw new IncusError(0, `export of ${label} was cut short (${received} of ${dl.size} bytes)`, 'GET', subjectPath(exportFrom));
    }
    opts.onStreamed?.();
    // Drivers without an optimized format (dir, lvm...) export a plain tarball even when asked
    // for an optimized one: the manifest says what Incus made (its index.yaml).
    const optimized = opts.optimized && index.index?.optimized !== false;
    if (opts.optimized && !optimized) ui.warn(`${label}: its pool's driver (${String(index.index?.backend ?? '?')}) has no optimized format; Incus exported a plain tarball`);
    const committing = writer.commit(
      draftManifest(key, writer.timestamp, server.environment.server_version, { size: hash.bytes, sha256: hash.sha256 }, {
        consistency: { mode, instant: instant.toISOString(), ...(frozenMs !== undefined ? { frozenMs } : {}) },
        options: { optimized, withSnapshots: opts.withSnapshots, compression: opts.compression },
        source: { ...source, host: hostname() },
        ...(index.index ? { index: index.index } : {}),
        ...(opts.run ? { run: opts.run } : {}),
      }),
    );
    // The server-side backup and the temporary copy have served: remove them while the
    // backend commits (restic writes the manifest snapshot meanwhile).
    const [committed] = await Promise.allSettled([committing, cleanup.run(ui.warn.bind(ui))]);
    if (committed.status === 'rejected') throw committed.reason;
    const entry = committed.value;
    task.end(true, `${entry.manifest.timestamp}`);
    if (where.renamed) ui.warn(`${label} was renamed to ${where.renamed} during its backup; this backup is listed under ${subject.name}`);
    return entry;
  } catch (e) {
    await writer?.abort().catch(() => undefined);
    // Not found because an admin renamed it meanwhile: said with its new name.
    if (!signal.aborted && e instanceof IncusError && e.notFound) {
      const now = await where.renamedTo().catch(() => undefined);
      if (now) {
        task.end(false);
        throw new RenamedDuringBackupError(subject, now);
      }
    }
    // Incus refuses to snapshot or copy one instance for two runs at once: a failure while
    // another run holds the resource is that run's turn, as when it was found held.
    // Its last turn reports what happened: the other run's hold, or its own error.
    const held =
      signal.aborted || opts.lastTurn
        ? undefined
        : e instanceof ResourceBusyError
          ? e
          : await otherRunOn(ctx, subject).then((h) => h && new ResourceBusyError(label, h, e), () => undefined);
    if (held) {
      task.end('later', `held by incus-backup run ${held.holder.pid}`);
      throw held;
    }
    task.end(false);
    if (signal.aborted) throw new InterruptedError(`interrupted while backing up ${label}; nothing was kept`);
    throw streamFailure(e, `the backup of ${label}`, `target ${backend.uri}`);
  } finally {
    await cleanup.run(ui.warn.bind(ui));
  }
}

/**
 * Incus 6.0 refuses to snapshot or back up custom volumes of content type `iso` (install media
 * imported with `incus storage volume import --type=iso`). A bulk backup skips them, saying so.
 */
export const ISO_VOLUMES = {
  why: 'Incus cannot back up ISO volumes',
  hint: 'keep the .iso file it was imported from; `incus storage volume import POOL FILE NAME --type=iso` brings it back',
};

/**
 * Freezes the running instances that write to `subject` (the instance itself, or the users of
 * a volume); returns a function that thaws them. Thawing is also registered as cleanup so an
 * error or interrupt never leaves an instance frozen.
 */
async function freezeWriters(ctx: RunContext, subject: BackupSubject, cleanup: Cleanup): Promise<() => Promise<number>> {
  const users =
    subject.kind === 'instance'
      ? [await ctx.api.getInstance(subject.project, subject.name)]
      : (await ctx.api.volumeUsers(subject.project, subject.pool, subject.name)).map((u) => u.instance);
  const thaws: { name: string; remove: () => void }[] = [];
  const running = users.filter((u) => u.status === 'Running');
  // Written down first, for the next run to thaw if this one is killed outright meanwhile.
  const unmark = running.length ? markFrozen(subject.project, running) : () => undefined;
  const dropMark = cleanup.push('forget the freeze', async () => unmark());
  // An admin's `incus restart`, `stop -f` or `resume` meanwhile thawed it already: Incus then
  // answers the unfreeze with "already running" or "isn't running", which is the goal reached,
  // not a failed backup (the snapshot was taken frozen).
  const unfreeze = (name: string) =>
    ctx.api.setInstanceState(subject.project, name, 'unfreeze').catch((e: unknown) => {
      if (!(e instanceof IncusError && /already running|isn't running|is not running|not frozen/i.test(e.serverMessage))) throw e;
    });
  for (const { name } of running) {
    await ctx.api.setInstanceState(subject.project, name, 'freeze');
    thaws.push({ name, remove: cleanup.push(`unfreeze ${name}`, () => unfreeze(name)) });
  }
  const frozenAt = Date.now();
  return async () => {
    for (const t of thaws) await cleanup.runNow(t.remove, () => unfreeze(t.name));
    await cleanup.runNow(dropMark, async () => unmark());
    return thaws.length ? Date.now() - frozenAt : 0;
  };
}


/** A stopped instance was started while Incus staged its backup (see backupResource). */
export class StartedDuringBackupError extends IbError {
  constructor(label: string) {
    super(`${label} was started while Incus staged its backup as a stopped instance: the archive could hold files of different instants; nothing was kept`, 1, 'back it up again: a running instance is backed up at one instant');
    this.name = 'StartedDuringBackupError';
  }
}

/**
 * Another incus-backup run that is alive holds the resource: its temporary snapshot or
 * server-side backup is on it. Incus cannot snapshot and copy one instance for two runs at once
 * ("snapshot record count doesn't match ..."), so this run waits its turn (see the backup
 * command: after its other resources, then up to --lock-wait).
 */
export class ResourceBusyError extends IbError {
  /** `waitedMs`: how long this run waited for the other (its --lock-wait), if at all. */
  constructor(
    label: string,
    readonly holder: { pid: number; temporary: string },
    cause?: unknown,
    waitedMs = 0,
  ) {
    super(
      `${label} is being backed up by another incus-backup run right now (pid ${holder.pid}, ${holder.temporary === 'freeze' ? 'which has it frozen' : `temporary ${holder.temporary}`})`,
      1,
      waitedMs > 0
        ? `that run held it longer than --lock-wait (${Math.ceil(waitedMs / 1000)} s): wait longer, or back it up again once that run has finished`
        : 'pass --lock-wait (e.g. --lock-wait 30m) to wait for that run, or back it up again once it has finished',
      cause === undefined ? undefined : { cause },
    );
    this.name = 'ResourceBusyError';
  }
}

/**
 * The live other run that holds `subject`, from the temporaries on it (`names`): the first of a
 * live other run, or, for an instance, that run's freeze for a snapshot not there yet (Incus:
 * "already frozen").
 */
function liveHolder(subject: BackupSubject, names: string[]): { pid: number; temporary: string } | undefined {
  for (const temporary of names) {
    const pid = liveOtherRun(temporary);
    if (pid !== undefined) return { pid, temporary };
  }
  const freezer = subject.kind === 'instance' ? liveFreezer(subject.project, subject.name) : undefined;
  return freezer === undefined ? undefined : { pid: freezer, temporary: 'freeze' };
}

/** The snapshots and server-side backups on `subject`: where runs keep their temporaries. */
async function temporariesOn(ctx: RunContext, subject: BackupSubject): Promise<{ snapshots: string[]; serverBackups: string[] }> {
  const [snapshots, serverBackups] = await Promise.all([ctx.api.listSnapshots(subject), ctx.api.listServerBackups(subject)]);
  return { snapshots, serverBackups };
}

/** The live other run that holds `subject` right now (see ResourceBusyError), if any. */
export async function otherRunOn(ctx: RunContext, subject: BackupSubject): Promise<{ pid: number; temporary: string } | undefined> {
  const { snapshots, serverBackups } = await temporariesOn(ctx, subject);
  return liveHolder(subject, [...snapshots, ...serverBackups]);
}

/**
 * Waits until no other live run holds `subject` (see ResourceBusyError), polling every second,
 * or until `deadline` (ms since the epoch) or an abort; says once that it waits. An Incus that
 * does not answer ends the wait: the backup that follows meets it and says so.
 */
export async function waitForTurn(ctx: RunContext, subject: BackupSubject, deadline: number): Promise<void> {
  let said = false;
  while (!ctx.signal.aborted) {
    const holder = await otherRunOn(ctx, subject).catch(() => undefined);
    const left = deadline - Date.now();
    if (!holder || left <= 0) return;
    if (!said) {
      said = true;
      ctx.ui.info(`${subjectLabel(subject)}: waiting up to ${Math.ceil(left / 1000)} s for incus-backup run ${holder.pid}, which is backing it up`);
    }
    await sleep(Math.min(1000, left), ctx.signal);
  }
}

/**
 * Removes the temporary snapshots and server-side backups of killed runs on this resource, and
 * refuses to start while another run holds it (ResourceBusyError).
 */
async function sweepResourceLeftovers(ctx: RunContext, subject: BackupSubject, label: string, waitedMs = 0): Promise<void> {
  const { snapshots, serverBackups } = await temporariesOn(ctx, subject);
  const holder = liveHolder(subject, [...snapshots, ...serverBackups]);
  if (holder) throw new ResourceBusyError(label, holder, undefined, waitedMs);
  const stuck = (what: string) => leftAsIs(ctx, label, what);
  for (const snap of snapshots.filter(isStaleTmpName)) {
    ctx.ui.warn(`removing temporary snapshot ${snap} left by an interrupted run`);
    await ctx.api.deleteSnapshot(subject, snap).catch(stuck(`temporary snapshot ${snap}`));
  }
  for (const b of serverBackups.filter(isStaleTmpName)) {
    ctx.ui.warn(`removing server-side backup ${b} left by an interrupted run`);
    await ctx.api.deleteServerBackup(subject, b).catch(stuck(`server-side backup ${b}`));
  }
}

/**
 * Puts back what replaces killed outright left in `project` (putBackKilledReplaces), then
 * removes the temporary copies (instances, volumes) of killed runs. An original set aside
 * (ibold-…) without a journal to put it back by (made by an older incus-backup) is the user's
 * data: it is only pointed out.
 */
export async function sweepProjectLeftovers(ctx: RunContext, project: string): Promise<void> {
  const warn = ctx.ui.warn.bind(ctx.ui);
  const setAside = (what: string, how: string) =>
    ctx.ui.warn(`${what} is an original that a restore --replace set aside and was killed before putting back: check it, then rename it back (${how}) or delete it`);
  await thawAbandoned(ctx.api, project, warn);
  await putBackKilledReplaces(ctx.api, project, warn);
  for (const i of await ctx.api.listInstances(project)) {
    if (isStaleTmpName(i.name)) {
      ctx.ui.warn(`removing temporary copy ${project}/${i.name} left by an interrupted run`);
      await ctx.api.deleteOwn({ kind: 'instance', project, name: i.name });
    } else if (isStaleAsideName(i.name) && !journalOf(i.config)) setAside(`instance ${project}/${i.name}`, `incus rename ${i.name} NAME --project ${project}`);
  }
  for (const v of await ctx.api.listVolumes(project)) {
    if (v.name.includes('/')) continue;
    if (isStaleTmpName(v.name)) {
      ctx.ui.warn(`removing temporary copy ${project}/${v.pool}/${v.name} left by an interrupted run`);
      await ctx.api.deleteOwn({ kind: 'volume', project, pool: v.pool!, name: v.name });
    } else if (isStaleAsideName(v.name) && !journalOf(v.config)) setAside(`volume ${project}/${v.pool}/${v.name}`, `incus storage volume rename ${v.pool} ${v.name} NAME --project ${project}`);
  }
  // A killed backup's temporary snapshot, on whatever it was backing up: not left for that
  // resource's own next backup, which may never come (excluded, renamed, backed up elsewhere).
  for (const { of, name } of await ctx.api.listAllSnapshots(project)) {
    if (!isStaleTmpName(name)) continue;
    ctx.ui.warn(`removing temporary snapshot ${name} of ${subjectLabel(of)} left by an interrupted run`);
    await ctx.api.deleteSnapshot(of, name).catch(leftAsIs(ctx, subjectLabel(of), `temporary snapshot ${name}`));
  }
}

/**
 * For `.catch()` of a leftover's removal: one that Incus cannot remove is said and left (it does
 * not stand in this backup's way); one already gone is fine.
 */
function leftAsIs(ctx: RunContext, label: string, what: string): (e: unknown) => void {
  return (e) => {
    if (!(e instanceof IncusError)) throw e;
    if (!e.notFound) ctx.ui.warn(`${label}: could not remove ${what} (${e.message}); it stays until Incus can remove it`);
  };
}

