import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { backupResource, ISO_VOLUMES, ResourceBusyError, StartedDuringBackupError, subjectKey, sweepProjectLeftovers, waitForTurn } from '../../core/backup.js';
import { isAsideName, isTmpName } from '../../core/tmpnames.js';
import { RenamedDuringBackupError } from '../../core/renamed.js';
import { backupConfig } from '../../core/config.js';
import { SERVER_WIDE } from '../../core/types.js';
import { selectByPatterns } from '../../core/settings.js';
import { backupImage, imageLabel, irreplaceable } from '../../core/images.js';
import { ImageApi, type Image } from '../../incus/api.js';
import { mapPool, Semaphore } from '../../core/pool.js';
import type { Compression } from '../../core/types.js';
import { ExitCode, IbError, UsageError, type ExitCodeValue } from '../../errors.js';
import { subjectLabel, subjectPath, type BackupSubject, type IncusApi } from '../../incus/api.js';
import { IncusError } from '../../incus/errors.js';
import { incusAway } from '../../incus/client.js';
import { BaseCommand, checkName } from '../base.js';
import { failedRow, resultColumns, settle, sizes, type ResultRow } from '../summary.js';
import { parseLockWait } from '../../backends/dir/lock.js';
import { lockTarget, lockWaitOption } from './maintenance.js';

type Patterns = { include?: string[]; exclude?: string[] };

/**
 * What one backup run covers: instances, volumes, and (for `config` / `all`) the config, and
 * what it passes over, saying why (`skipped`).
 */
type BackupItem =
  | BackupSubject
  | { kind: 'config' }
  | { kind: 'image'; project: string; image: Image }
  | { kind: 'skipped'; subject: BackupSubject; why: string };

/**
 * Images of the projects (each once, under the project that owns it), optionally by fingerprint
 * prefix. A project without images of its own (features.images=false) lists the default
 * project's: those are that project's to back up, as with volumes; `say` is told so.
 */
async function imageItems(api: IncusApi, projects: string[], prefixes: string[], all: boolean, say: (msg: string) => void): Promise<BackupItem[]> {
  const images = new ImageApi(api.client);
  const seen = new Set<string>();
  const out: BackupItem[] = [];
  for (const project of projects) {
    const listed = await images.list(project);
    const pool = prefixes.length ? listed : irreplaceable(listed, all);
    for (const prefix of prefixes) {
      const list = `\`incus image list --project ${project}\` shows the fingerprints`;
      if (/^[0-9a-f]{1,3}$/.test(prefix)) throw new UsageError(`image fingerprint prefix "${prefix}" is too short`, `give at least 4 hex digits; ${list}`);
      if (!/^[0-9a-f]{4,64}$/.test(prefix)) throw new UsageError(`"${prefix}" is not an image fingerprint (aliases are not taken)`, `give a fingerprint or a prefix of one; ${list}`);
      const hits = listed.filter((i) => i.fingerprint.startsWith(prefix));
      if (hits.length > 1) throw new UsageError(`ambiguous image ${prefix} in project ${project}: ${hits.length} images start with it`, 'give more of the fingerprint');
      if (!hits.length) throw new UsageError(`no image ${prefix} in project ${project}`, list);
    }
    let others = 0;
    for (const image of pool) {
      if (prefixes.length && !prefixes.some((p) => image.fingerprint.startsWith(p))) continue;
      const owner = (image as Image & { project?: string }).project ?? project;
      if (owner !== project && !prefixes.length && !projects.includes(owner)) {
        others++;
        continue;
      }
      if (seen.has(`${owner}/${image.fingerprint}`)) continue;
      seen.add(`${owner}/${image.fingerprint}`);
      out.push({ kind: 'image', project: owner, image });
    }
    if (others) say(`project ${project} has no images of its own: the ${others} it sees are project default's to back up (--project default)`);
  }
  return out;
}

async function instanceSubjects(api: IncusApi, projects: string[], names: string[], patterns?: Patterns): Promise<BackupSubject[]> {
  const out: BackupSubject[] = [];
  for (const project of projects) {
    if (names.length) {
      // A name given twice is backed up once.
      for (const n of new Set(names)) out.push({ kind: 'instance', project, name: checkName('instance', n) });
    } else {
      const all = (await api.listInstances(project)).map((i) => i.name).filter((n) => !isTmpName(n) && !isAsideName(n));
      for (const name of selectByPatterns(all, patterns)) out.push({ kind: 'instance', project, name });
    }
  }
  return out;
}

async function volumeSubjects(api: IncusApi, projects: string[], refs: string[], patterns?: Patterns): Promise<BackupItem[]> {
  const out: BackupItem[] = [];
  for (const project of projects) {
    if (refs.length) {
      for (const ref of new Set(refs)) out.push({ kind: 'volume', project, ...parseVolumeRef(ref) });
      continue;
    }
    for (const v of await api.listVolumes(project)) {
      // Patterns match POOL/NAME, so `default/*` and `*/scratch` both work.
      if (isTmpName(v.name) || isAsideName(v.name) || v.name.includes('/') || !selectByPatterns([`${v.pool}/${v.name}`], patterns).length) continue;
      // A project without volumes of its own (features.storage.volumes=false) lists the default
      // project's: they are that project's to back up (with --all-projects, under it).
      const owner = v.project || project;
      const subject: BackupSubject = { kind: 'volume', project: owner, pool: v.pool!, name: v.name };
      if (owner !== project) {
        if (!projects.includes(owner)) out.push({ kind: 'skipped', subject, why: `project ${project} has no volumes of its own; back up project ${owner}'s with --project ${owner}` });
      } else out.push(v.content_type === 'iso' ? { kind: 'skipped', subject, why: ISO_VOLUMES.why } : subject);
    }
  }
  return out;
}

/**
 * Of the named instances and volumes, those Incus does not have (one listing per project and
 * kind). With --all-projects a name is looked for in every project: where it is not, it is
 * simply not there to back up (`dropped`); only a name found in no project is absent.
 */
async function absentSubjects(api: IncusApi, items: BackupItem[], allProjects: boolean): Promise<{ absent: BackupSubject[]; dropped: BackupSubject[] }> {
  const present = new Map<string, Set<string>>();
  const has = async (s: BackupSubject) => {
    const where = `${s.kind} ${s.project}`;
    if (!present.has(where)) {
      const names =
        s.kind === 'instance'
          ? await api.instanceNames(s.project)
          : (await api.listVolumes(s.project)).map((v) => `${v.pool}/${v.name}`);
      present.set(where, new Set(names));
    }
    return present.get(where)!.has(s.kind === 'volume' ? `${s.pool}/${s.name}` : s.name);
  };
  const missing: BackupSubject[] = [];
  for (const s of items) if ((s.kind === 'instance' || s.kind === 'volume') && !(await has(s))) missing.push(s);
  if (!allProjects) return { absent: missing, dropped: [] };
  const nameOf = (s: BackupSubject) => `${s.kind} ${s.kind === 'volume' ? `${s.pool}/` : ''}${s.name}`;
  const found = new Set(items.filter((s): s is BackupSubject => (s.kind === 'instance' || s.kind === 'volume') && !missing.includes(s)).map(nameOf));
  // A name in no project is reported once (under the first project), not once per project.
  const absent = missing.filter((s, i) => !found.has(nameOf(s)) && missing.findIndex((o) => nameOf(o) === nameOf(s)) === i);
  return { absent, dropped: missing.filter((s) => !absent.includes(s)) };
}

/** Where `incus` lists what a missing subject could have been called. */
function whereToLook(s: BackupSubject, allProjects = false): string {
  const scope = allProjects ? '--all-projects' : `--project ${s.project}`;
  return s.kind === 'volume' ? `\`incus storage volume list ${s.pool} ${scope}\` shows the volumes` : `\`incus list ${scope}\` shows the instances`;
}

function itemLabel(s: Exclude<BackupItem, { kind: 'skipped' }>): string {
  return s.kind === 'config' ? 'config' : s.kind === 'image' ? imageLabel(s.project, s.image.fingerprint) : subjectLabel(s);
}

/** `POOL/NAME` → parts, with a clear error when the pool is missing. */
export function parseVolumeRef(ref: string): { pool: string; name: string } {
  const parts = ref.split('/');
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new UsageError(`volume "${ref}" must be given as POOL/NAME`, 'e.g. default/data; `incus storage volume list` shows pools and names');
  }
  return { pool: checkName('pool', parts[0]), name: checkName('volume', parts[1]) };
}

abstract class BackupCommand extends BaseCommand {
  noSnapshot = Option.Boolean('--no-snapshot', false, { description: 'Export the live resource (not point-in-time; prints a warning)' });
  optimized = Option.Boolean('--optimized', false, { description: 'Storage-driver-optimized format: restores ONLY onto a pool of the same driver' });
  withSnapshots = Option.Boolean('--with-snapshots', false, { description: "Also ship the resource's existing snapshots" });
  compression = Option.String('--compression', 'none', {
    description: 'Directory targets only: none, gzip, zstd or xz',
    validator: t.isEnum(['none', 'gzip', 'zstd', 'xz'] as const),
  });
  lockWait = lockWaitOption();

  abstract subjects(api: IncusApi, projects: string[]): Promise<BackupItem[]>;

  /** Whether the run covers its kinds whole in each project (no names given): see Manifest.run. */
  protected coversWhole(): boolean {
    return false;
  }

  /** Whether it backs up instances or volumes, so that what killed runs left in their projects is swept first. */
  protected sweepsProjects(): boolean {
    return true;
  }

  /** How it stores what it backs up, when that is not an export of an instance or volume (which the export options shape). */
  protected storedAs(): string | undefined {
    return undefined;
  }

  /** The options it takes that only instances and volumes have a use for (the config and images: none). */
  private unusedOptions(): string[] {
    if (this.storedAs() === undefined) return [];
    return [
      ...(this.noSnapshot ? ['--no-snapshot'] : []),
      ...(this.optimized ? ['--optimized'] : []),
      ...(this.withSnapshots ? ['--with-snapshots'] : []),
      ...(this.compression !== 'none' ? [`--compression ${this.compression}`] : []),
    ];
  }

  async run(): Promise<ExitCodeValue> {
    const run = { startedAt: new Date().toISOString(), whole: this.coversWhole() };
    const lockWaitMs = parseLockWait(this.lockWait);
    const backend = this.openTarget();
    if (this.compression !== 'none' && backend.kind !== 'dir') {
      throw new UsageError('--compression applies to directory targets only', 'restic compresses and deduplicates by itself');
    }
    const unused = this.unusedOptions();
    if (unused.length) {
      this.ui().warn(`${unused.join(', ')} ${unused.length > 1 ? 'apply' : 'applies'} to instances and volumes only: ${this.storedAs()}, uncompressed`);
    }
    const api = this.incus();
    const projects = await this.projects(api);
    // Incus lists nothing in a project that does not exist: a typo would back up nothing, "ok".
    if (!this.allProjects && !(await api.projectExists(projects[0]!))) {
      throw new UsageError(`project "${projects[0]}" does not exist on this Incus server`, 'check --project (or project: in the configuration file); `incus project list` shows them');
    }
    // What killed runs left goes first (not in a dry run, which changes nothing): an original that
    // a killed replace had set aside is put back under its name, and so is backed up tonight.
    if (!this.dryRun && this.sweepsProjects()) {
      const sweeping = this.runContext(api, backend);
      for (const p of projects) await sweepProjectLeftovers(sweeping, p);
    }
    let subjects = await this.subjects(api, projects);
    // A named resource Incus does not have (a typo, a rename) is said so before anything else
    // happens: the run stops (exit 2) when nothing named is there, and otherwise backs up the
    // others and reports it as failed (exit 3), so a nightly job does not lose every backup.
    const { absent, dropped } = this.coversWhole() ? { absent: [], dropped: [] } : await absentSubjects(api, subjects, this.allProjects);
    subjects = subjects.filter((s) => !dropped.includes(s as BackupSubject));
    // A volume named in a pool that is not there: the pool is what is missing.
    const noPool = new Set<string>();
    for (const a of absent) if (a.kind === 'volume' && !noPool.has(a.pool) && (await api.poolDriver(a.pool)) === undefined) noPool.add(a.pool);
    const absentError = (of: BackupSubject[]) => {
      const pools = [...new Set(of.flatMap((a) => (a.kind === 'volume' && noPool.has(a.pool) ? [a.pool] : [])))];
      if (pools.length && of.every((a) => a.kind === 'volume' && noPool.has(a.pool))) {
        return new IbError(`storage pool ${pools.join(', ')} ${pools.length === 1 ? 'does' : 'do'} not exist (named for ${of.map((a) => subjectLabel(a)).join(', ')})`, ExitCode.usage, '`incus storage list` shows the pools');
      }
      const names = of.map((a) => (this.allProjects ? `${a.kind} ${a.kind === 'volume' ? `${a.pool}/` : ''}${a.name}` : subjectLabel(a))).join(', ');
      const what = this.allProjects ? `no project has ${names}` : `${names} ${of.length === 1 ? 'does' : 'do'} not exist`;
      return new IbError(what, ExitCode.usage, whereToLook(of[0]!, this.allProjects));
    };
    if (absent.length && absent.length === subjects.length) throw absentError(absent);
    const subjectRow = (s: BackupSubject): ResultRow => ({ type: s.kind, project: s.project, name: s.name, ...(s.kind === 'volume' ? { pool: s.pool } : {}), status: 'planned' });
    const row = (s: BackupItem): ResultRow =>
      s.kind === 'config'
        ? { type: 'config', project: SERVER_WIDE, name: 'config', status: 'planned' }
        : s.kind === 'image'
          ? { type: 'image', project: s.project, name: s.image.fingerprint.slice(0, 12), status: 'planned' }
          : s.kind === 'skipped'
            ? { ...subjectRow(s.subject), status: 'skipped', detail: s.why }
            : subjectRow(s);
    // Nothing to back up (an empty project, or filters that leave nothing) is said out loud, and
    // the target is not touched: no repository or directory is created for nothing.
    if (subjects.every((s) => s.kind === 'skipped')) {
      const ui = this.ui();
      ui.warn(`nothing to back up${this.allProjects ? '' : ` in project ${projects[0]}`}`);
      ui.stop();
      if (!this.dryRun) {
        this.printSummary('backup', subjects.map(row));
        return ExitCode.ok;
      }
    }
    if (this.dryRun) {
      // The target as the run would find it (a directory of the wrong kind, a wrong password),
      // without creating it.
      const note = await backend.checkWritable?.();
      if (note) this.ui().info(note);
      // A named resource that does not exist is shown as the run would report it.
      this.print(subjects.map((s) => (absent.includes(s as BackupSubject) ? failedRow(row(s), absentError([s as BackupSubject])) : row(s))), resultColumns);
      return ExitCode.ok;
    }
    // The run stops on Ctrl-C, and also when the target turns out unusable (wrong password,
    // unreachable): the target gets ready (restic: lists the repository, creating it on first
    // use) while the first resources are snapshotted and staged. A target with a writer lock is
    // prepared first.
    const stop = new AbortController();
    const outer = this.context.signal;
    if (outer.aborted) stop.abort(outer.reason);
    else outer.addEventListener('abort', () => stop.abort(outer.reason), { once: true });
    const ctx = { ...this.runContext(api, backend), signal: stop.signal };
    const prepared = backend.prepareWrite((m) => ctx.ui.info(m));
    prepared.catch((e: unknown) => stop.abort(e));
    if (backend.lock) {
      await prepared;
      this.onCleanup(await lockTarget(backend, 'backup', this.lockWait, ctx.ui, outer));
    }
    const live = this.noSnapshot || this.settings().values.consistency === 'live';
    const opts = { live, optimized: this.optimized, withSnapshots: this.withSnapshots, compression: this.compression as Compression, run };
    const errors: unknown[] = [];
    // --parallel resources stream at once; one more may be finishing its commit (restic writes
    // the manifest snapshot, ~0.7 s) while the next one already snapshots and streams. After
    // Ctrl-C (or a failed target) the rest is not even started: no snapshot, no copy.
    const streaming = new Semaphore(this.parallel);
    // While a resource streams, the one that streams after it opens its writer (restic: key
    // derivation and lock wait, ~0.7 s), instead of doing so once it gets its turn.
    const prewarmAfter = (i: number) => () => {
      const next = subjects[i + this.parallel];
      if ((next?.kind === 'instance' || next?.kind === 'volume') && !absent.includes(next)) backend.prewarm?.(subjectKey(next));
    };
    const backUp = async (s: BackupItem, i: number, firstTurn: boolean) => {
      if (s.kind === 'skipped') return undefined;
      if (absent.includes(s as BackupSubject)) throw absentError([s as BackupSubject]);
      const once = async () => {
        const item = s;
        if (item.kind === 'skipped') return undefined;
        const release = await streaming.acquire(ctx.signal);
        try {
          const started = Date.now();
          const entry =
            item.kind === 'config'
              ? await backupConfig(ctx, run.whole ? { ...run, projects } : run)
              : item.kind === 'image'
                ? await backupImage(ctx, item.project, item.image)
                : await backupResource(ctx, item, { ...opts, ...(firstTurn ? { onStreaming: prewarmAfter(i) } : { lastTurn: { lockWaitMs } }), onStreamed: release });
          return { entry, ms: Date.now() - started };
        } finally {
          release();
        }
      };
      try {
        return await once();
      } catch (e) {
        // Deleted by someone while the run went on: in a run over whole projects, not there to
        // back up any more (as if the listing had come later), not a failed backup.
        if (this.coversWhole() && (s.kind === 'instance' || s.kind === 'volume') && !ctx.signal.aborted && e instanceof IncusError && e.notFound && !(await api.exists(subjectPath(s), s.project).catch(() => true))) {
          subjects[i] = { kind: 'skipped', subject: s, why: 'deleted during the run' };
          ctx.ui.warn(`${itemLabel(s)}: deleted during the run; skipped`);
          return undefined;
        }
        // Renamed by an admin meanwhile: in a run over whole projects, backed up under its new
        // name (as if the listing had come later), unless the run has that name already.
        if (this.coversWhole() && e instanceof RenamedDuringBackupError && !ctx.signal.aborted) {
          const moved: BackupSubject = { ...e.subject, name: e.newName };
          if (!subjects.some((o) => (o.kind === 'instance' || o.kind === 'volume') && subjectLabel(o) === subjectLabel(moved))) {
            ctx.ui.warn(`${itemLabel(s)}: renamed to ${e.newName} during the run; backing it up under its new name`);
            s = subjects[i] = moved;
            return await once();
          }
        }
        // Started while staged as a stopped instance: once more, now at one instant.
        if (e instanceof StartedDuringBackupError && !ctx.signal.aborted) {
          ctx.ui.warn(`${e.message.replace(/; nothing was kept$/, '')}; backing it up once more`);
          return await once();
        }
        // incusd restarted under it (a package upgrade in the nightly window): its cleanup
        // waited for the daemon; once it is back, the resource gets one more try.
        if (ctx.signal.aborted || !incusAway(e) || !(await api.client.waitBack())) throw e;
        ctx.ui.warn(`${itemLabel(s)}: Incus went away during its backup and is back; backing it up once more`);
        return await once();
      }
    };
    const settled = await mapPool(subjects, this.parallel + 1, (s, i) => backUp(s, i, true), ctx.signal);
    // Resources another run held (a nightly job into another target, say) get their turn after
    // the others, once that run is done with them, waiting for it up to --lock-wait.
    const held = settled.flatMap((r, i) => (r.status === 'rejected' && r.reason instanceof ResourceBusyError ? [i] : []));
    if (held.length) {
      const deadline = Date.now() + lockWaitMs;
      const again = await mapPool(
        held,
        this.parallel,
        async (i) => {
          await waitForTurn(ctx, subjects[i] as BackupSubject, deadline);
          return backUp(subjects[i]!, i, false);
        },
        ctx.signal,
      );
      again.forEach((r, j) => (settled[held[j]!] = r));
    }
    // The target's own failure is the run's one error, not a failure of each resource; once the
    // run is interrupted, what the target's restic says of being stopped is not that failure.
    await prepared.catch((e: unknown) => {
      if (!outer.aborted) throw e;
    });
    const rows = settled.map((r, i): ResultRow => {
      if (r.status === 'fulfilled') {
        if (!r.value) return row(subjects[i]!); // skipped
        const m = r.value.entry.manifest;
        const added = r.value.entry.dataAdded;
        return {
          ...row(subjects[i]!),
          status: 'ok',
          timestamp: m.timestamp,
          ...sizes(m),
          durationMs: r.value.ms,
          consistency: m.consistency.mode,
          ...(added !== undefined ? { dataAdded: added } : {}),
        };
      }
      errors.push(r.reason);
      return failedRow(row(subjects[i]!), r.reason);
    });
    ctx.ui.stop();
    this.printSummary('backup', rows);
    return settle(rows, errors);
  }
}

export class BackupInstancesCommand extends BackupCommand {
  // The singular too, as `restore instance` has it: `backup instance web` is what people type.
  static override paths = [['backup', 'instances'], ['backup', 'instance']];
  static override usage = Command.Usage({
    category: 'Backup',
    description: 'Back up instances (all of the project when no names are given)',
    details: 'Running instances are captured at one instant via a temporary snapshot; the snapshot and its temporary copy are removed afterwards.',
    examples: [
      ['Back up every instance of the default project', '$0 backup instances --target dir:/srv/backups'],
      ['Back up two instances into restic', '$0 backup instances web1 db1 --target restic:/srv/restic'],
    ],
  });
  names = Option.Rest({ name: 'NAME' });

  protected override coversWhole(): boolean {
    return this.names.length === 0;
  }

  subjects(api: IncusApi, projects: string[]): Promise<BackupItem[]> {
    return instanceSubjects(api, projects, this.names, this.settings().values.instances);
  }
}

export class BackupVolumesCommand extends BackupCommand {
  static override paths = [['backup', 'volumes'], ['backup', 'volume']];
  static override usage = Command.Usage({
    category: 'Backup',
    description: 'Back up custom storage volumes (all of the project when none are given)',
    examples: [
      ['Back up every custom volume', '$0 backup volumes --target dir:/srv/backups'],
      ['Back up one volume', '$0 backup volumes default/data --target dir:/srv/backups'],
    ],
  });
  names = Option.Rest({ name: 'POOL/NAME' });

  protected override coversWhole(): boolean {
    return this.names.length === 0;
  }

  subjects(api: IncusApi, projects: string[]): Promise<BackupItem[]> {
    return volumeSubjects(api, projects, this.names, this.settings().values.volumes);
  }
}

export class BackupConfigCommand extends BackupCommand {
  static override paths = [['backup', 'config']];
  static override usage = Command.Usage({
    category: 'Backup',
    description: 'Back up the declarative config of the whole server: projects, storage pools, networks, ACLs, zones, profiles',
    details: 'Secret values (keys containing password, secret, token, passphrase or private key) are not stored.',
    examples: [['Back up the config', '$0 backup config --target dir:/srv/backups']],
  });

  protected override sweepsProjects(): boolean {
    return false;
  }

  protected override storedAs(): string {
    return 'the config is stored as JSON';
  }

  async subjects(): Promise<BackupItem[]> {
    return [{ kind: 'config' }];
  }
}

export class BackupAllCommand extends BackupCommand {
  static override paths = [['backup', 'all']];
  static override usage = Command.Usage({
    category: 'Backup',
    description: 'Back up the config, then all custom volumes, then all instances of the selected project(s)',
    examples: [
      ['The nightly job', '$0 backup all --target restic:/srv/restic'],
      ['Every project, two at a time', '$0 backup all --all-projects --parallel 2 --target dir:/srv/backups'],
    ],
  });

  withImages = Option.Boolean('--with-images', false, { description: 'Also back up local images that cannot be fetched again' });

  protected override coversWhole(): boolean {
    return true;
  }

  async subjects(api: IncusApi, projects: string[]): Promise<BackupItem[]> {
    const f = this.settings().values;
    return [
      { kind: 'config' },
      ...(this.withImages ? await imageItems(api, projects, [], false, (m) => this.ui().info(m)) : []),
      ...(await volumeSubjects(api, projects, [], f.volumes)),
      ...(await instanceSubjects(api, projects, [], f.instances)),
    ];
  }
}

export class BackupImagesCommand extends BackupCommand {
  static override paths = [['backup', 'images']];
  static override usage = Command.Usage({
    category: 'Backup',
    description: 'Back up local images (by default those not cached from an image server)',
    details: 'Images are stored as Incus exports them, with their aliases and properties in the manifest.',
    examples: [
      ['Images that could not be downloaded again', '$0 backup images --target dir:/srv/backups'],
      ['One image by fingerprint prefix', '$0 backup images 128be537f07c --target dir:/srv/backups'],
    ],
  });
  fingerprints = Option.Rest({ name: 'FINGERPRINT' });
  allImages = Option.Boolean('--all-images', false, { description: 'Every image, also those cached from an image server' });

  protected override sweepsProjects(): boolean {
    return false;
  }

  protected override storedAs(): string {
    return 'the images are stored as Incus exports them';
  }

  subjects(api: IncusApi, projects: string[]): Promise<BackupItem[]> {
    return imageItems(api, projects, this.fingerprints, this.allImages, (m) => this.ui().info(m));
  }
}
