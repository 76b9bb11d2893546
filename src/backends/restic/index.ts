import { join, resolve } from 'node:path';
import { readdirSync } from 'node:fs';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { directoryHolds, pathKind } from '../../core/fsutil.js';
import { formatTimestamp, ManifestError, parseManifest, type Manifest } from '../../core/manifest.js';
import { keyLabel, type ResourceKey } from '../../core/types.js';
import { ExitCode, IbError, UsageError } from '../../errors.js';
import type { ArchiveWriter, Backend, BackendFactory, BackupEntry, BrokenBackup, CheckOptions, EntryCheck, ListFilter, Problem, WriteRequest } from '../types.js';
import {
  archiveFileName,
  archiveTags,
  latestArchiveDumpArgs,
  latestArchiveSnapshot,
  manifestFileName,
  manifestTags,
  nextFreeVersion,
  pairSnapshots,
  resourceId,
  sameKey,
  SNAPSHOT_HOST,
  TAG_PROTECTED,
  tagArgs,
  versionsByResource,
  type ResticEntry,
  type SnapshotInfo,
} from './layout.js';
import {
  hasCredential,
  jsonLines,
  MIN_VERSION,
  parseVersion,
  prunedBytes,
  redactRepository,
  Restic,
  RESTIC_EXIT,
  ResticError,
  ResticLockError,
  versionBelow,
  type ResticConfig,
  type ResticRun,
  type ResticRunOptions,
} from './restic.js';
import { mapPool } from '../../core/pool.js';
import { streamCheck } from '../../core/verify.js';
import type { ProcessResult } from '../../core/process.js';

/**
 * Runs as restic's `--stdin-from-command`: copies our fd 3 (the tarball) to restic, then
 * succeeds only if fd 4 says "commit". restic saves no snapshot when the command fails, so
 * an archive we did not explicitly commit (error, abort, Ctrl-C, even incus-backup being
 * killed outright: fd 3 and 4 then just close) never becomes a snapshot. Plain `--stdin`
 * would instead save whatever arrived before the pipe closed.
 *
 * restic starts the command only once it has opened the repository and loaded its index; the
 * first line the command writes to stderr comes back on restic's as GATE_OPEN: the sign that
 * restic takes data now.
 */
const COMMIT_GATE = 'echo ib-gate-open >&2; cat <&3 3<&- || exit 1; read -r word <&4 || exit 1; [ "$word" = commit ]';
const GATE_OPEN = 'subprocess sh: ib-gate-open';

/**
 * How long restic may take to open the repository (key derivation, index, lock) before the user
 * is told why nothing moves: restic itself says nothing while it waits for a lock.
 */
const SLOW_OPEN_MS = 10_000;
/** At most one warning this often for restic's retries of the repository. */
const RETRY_WARN_MS = 15_000;

export interface ResticBackendOptions extends Partial<Omit<ResticConfig, 'repository'>> {
  /** Where warnings go (an old restic version, requests restic retries). */
  onWarning?: (msg: string) => void;
  /** Asked before going on with a restic older than 0.18; rejects to stop. */
  confirm?: (question: string) => Promise<void>;
}

/**
 * Backups in a restic repository; see layout.ts for how a backup maps to snapshots.
 * Nothing is visible to `list` until the manifest snapshot, written after the data
 * snapshot succeeded, exists.
 */
export class ResticBackend implements Backend {
  readonly kind = 'restic' as const;
  readonly restic: Restic;
  private readonly onWarning: (msg: string) => void;
  private readonly confirmOld?: (question: string) => Promise<void>;
  private readyPromise?: Promise<void>;
  /** The repository opened for writing (see openForWrite). */
  private opened?: Promise<OpenedRepository>;
  /** `opened` has resolved: the repository exists (it was listed, or created by this run). */
  isOpen = false;
  /** Manifests already completed with their index (see openArchive). */
  private readonly complete = new WeakSet<Manifest>();
  /** The last `restic snapshots` (which archive a read-ahead's `latest` picked). */
  private lastListing?: SnapshotInfo[];
  /** Dumps started by readAhead(), by resource id. */
  private readonly readAheads = new StartedAhead<string, PassThrough>();
  /** Per dump stream: whether restic gave its first byte (or ended well) rather than failing first. */
  private readonly firstBytes = new WeakMap<PassThrough, Promise<boolean>>();
  private readonly servedAhead = new WeakSet<BackupEntry>();
  /** Writers started by prewarm(), by resource id. */
  private readonly prewarmed = new StartedAhead<string, ResticWriter>();
  /** Resources whose writer was asked for: one started for them now would never be taken. */
  private readonly writing = new Set<string>();
  /** Dumps started by prefetch(). */
  private readonly prefetched = new StartedAhead<BackupEntry, PassThrough>();
  /** Manifest files read by prefetch(entry, { manifest: true }), by entry. */
  private readonly prefetchedManifests = new StartedAhead<BackupEntry, ProcessResult>();

  constructor(
    readonly repository: string,
    readonly uri: string,
    opts: ResticBackendOptions = {},
  ) {
    const env = opts.env ?? process.env;
    if (!hasCredential(env, opts.passwordFile)) {
      throw new UsageError(
        `no password set for restic repository ${redactRepository(repository)}`,
        'pass --password-file FILE, or set RESTIC_PASSWORD_FILE (or RESTIC_PASSWORD / RESTIC_PASSWORD_COMMAND), or restic.password_file in the configuration file',
      );
    }
    // restic says every retry (dozens a minute while a server is down): one warning per
    // RETRY_WARN_MS, counting those in between.
    let lastRetry = 0;
    let since = 0;
    const onRetry = (line: string) => {
      const now = Date.now();
      if (now - lastRetry < RETRY_WARN_MS) {
        since++;
        return;
      }
      this.onWarning(`restic: ${line}${since ? ` (and ${since} more retr${since === 1 ? 'y' : 'ies'} since the last such warning)` : ''}`);
      lastRetry = now;
      since = 0;
    };
    this.restic = new Restic({ ...opts, repository, env, onRetry });
    this.onWarning = opts.onWarning ?? ((m) => process.stderr.write(`Warning: ${m}\n`));
    this.confirmOld = opts.confirm;
  }

  /** Once per backend: restic is there and recent enough. */
  private ready(): Promise<void> {
    this.readyPromise ??= (async () => {
      const text = await this.restic.version();
      const v = parseVersion(text);
      if (!v || versionBelow(v, MIN_VERSION)) {
        const which = v ? `restic ${v.join('.')}` : `unrecognised restic version "${text}"`;
        this.onWarning(
          `${which} is older than ${MIN_VERSION.join('.')}: ` + 'errors may be reported less precisely and some commands may fail; please upgrade restic',
        );
        await this.confirmOld?.(`Go on with ${which}?`);
      }
    })();
    return this.readyPromise;
  }

  /** Every restic run of this backend: the version check (and old-restic prompt) comes first. */
  async run(args: string[], opts: ResticRunOptions = {}): Promise<ProcessResult> {
    await this.ready();
    return this.restic.run(args, opts);
  }

  /**
   * One `restic snapshots`, without a repository lock: a listing only reads snapshot files, and
   * taking a lock costs every call restic's fixed 200 ms wait before it re-checks for other
   * locks (on the critical path of `list` and of every restore's planning). Whatever then reads
   * or writes data (dump, backup, forget, check) still takes its lock. At worst a listing taken
   * during another client's prune names a backup that is gone by the time it is read: that read
   * fails with restic's message, and nothing is changed.
   */
  private async snapshots(): Promise<SnapshotInfo[]> {
    const r = await this.run(['snapshots', '--json', '--no-lock']);
    try {
      const v: unknown = JSON.parse(r.stdout || '[]');
      if (!Array.isArray(v)) throw new Error('not a list');
      this.lastListing = v as SnapshotInfo[];
      return this.lastListing;
    } catch (e) {
      throw new IbError(`restic snapshots printed something unreadable (${(e as Error).message})`, 1);
    }
  }

  /**
   * Lists the repository (creating it when there is none). Writers do not wait for it: they
   * start at once and wait only before their first byte (ready()), so the backup command lets
   * this run alongside the Incus side of the first backups.
   */
  async prepareWrite(onNotice: (msg: string) => void): Promise<void> {
    await this.openForWrite(onNotice);
  }

  /**
   * Once per backend: the versions in use per resource (one `restic snapshots`), or a new
   * repository when there is none yet. Our own commits add their versions to the sets.
   */
  private openForWrite(onNotice?: (msg: string) => void): Promise<OpenedRepository> {
    if (!this.opened) {
      this.opened = (async () => {
        try {
          return { versions: versionsByResource(await this.snapshots()), initialised: false };
        } catch (e) {
          if (!(e instanceof ResticError && e.resticCode === RESTIC_EXIT.noRepository)) throw e;
          await this.init();
          onNotice?.(`initialised restic repository ${this.restic.repoLabel}`);
          return { versions: new Map<string, Set<string>>(), initialised: true };
        }
      })();
      // Reported by whoever awaits it (a writer); a run that never writes must not crash on it.
      this.opened.then(
        () => (this.isOpen = true),
        () => undefined,
      );
    }
    return this.opened;
  }

  /** restic would initialise a repository among whatever the directory holds: refused. */
  private refuseBusyDirectory(): void {
    const local = localRepository(this.repository);
    // (What another run's `restic init` is creating there right now is fine: that init wins, this one fails.)
    if (local !== undefined && pathKind(local) === 'directory' && directoryHolds(local, (e) => RESTIC_LAYOUT.has(e)) === 'other') {
      throw new UsageError(`${this.uri} is not empty and is not a restic repository`, `point --target at a new or empty directory, e.g. restic:${join(local, 'restic')}`);
    }
  }

  /** The repository opens with the password (one listing), or would be created by a backup. */
  async checkWritable(): Promise<string | undefined> {
    try {
      await this.snapshots();
      return undefined;
    } catch (e) {
      if (!(e instanceof ResticError && e.resticCode === RESTIC_EXIT.noRepository)) throw e;
      this.refuseBusyDirectory();
      return `a backup initialises restic repository ${this.restic.repoLabel}`;
    }
  }

  private async init(): Promise<void> {
    this.refuseBusyDirectory();
    try {
      await this.run(['init', '--json']);
    } catch (e) {
      // Someone else initialised it in the meantime: fine, as long as we can open it now.
      await this.snapshots().catch(() => {
        throw e;
      });
    }
  }

  async list(filter: ListFilter = {}): Promise<BackupEntry[]> {
    return (await this.scan(filter)).entries;
  }

  /** One `restic snapshots` call, paired into backups (see layout.ts). */
  async scan(filter: ListFilter = {}): Promise<{ entries: ResticEntry[]; broken: BrokenBackup[] }> {
    return pairSnapshots(await this.snapshots(), filter);
  }

  /**
   * Starts `restic backup` at once, before the listing is back, so that its key derivation
   * overlaps the Incus side of the backup; the version is chosen at commit, once the listing
   * says which ones are taken.
   */
  async createWriter(req: WriteRequest): Promise<ArchiveWriter> {
    if (req.compression !== 'none') {
      throw new UsageError('--compression applies to directory targets only', 'restic compresses and deduplicates by itself');
    }
    await this.ready();
    this.writing.add(resourceId(req.key));
    const warm = await this.prewarmed.take(resourceId(req.key));
    if (warm?.fresh()) {
      warm.rebase(formatTimestamp(req.when));
      return warm;
    }
    await warm?.abort();
    return new ResticWriter(this, req.key, formatTimestamp(req.when), this.openForWrite());
  }

  /**
   * Starts the `restic backup` of `key` ahead of its turn (see Backend.prewarm), once the
   * repository is known to be open for writing (a first backup's writer decides whether it
   * must be created).
   */
  prewarm(key: ResourceKey): void {
    const opened = this.opened;
    // With --parallel, the resource may have got its turn (and its writer) already.
    if (opened && !this.writing.has(resourceId(key))) this.prewarmed.start(resourceId(key), () => opened.then(() => new ResticWriter(this, key, '', opened)));
  }

  /**
   * Streams the tarball out of its data snapshot (or takes it from readAhead). A restore needs
   * no more of the manifest than the listing's summary: it carries the sha256 and size checked
   * on the way and the index fields the restore reads (planIndex). Only a summary from before
   * those fields has its manifest file read (restore plans do that earlier, in loadIndexes).
   */
  async openArchive(entry: BackupEntry, signal?: AbortSignal): Promise<Readable> {
    await this.ready();
    const out = (await this.prefetched.take(entry)) ?? (await this.takeReadAhead(entry)) ?? this.dump(archiveDumpArgs(entry), signal);
    try {
      await this.loadIndexes([entry]);
    } catch (e) {
      out.destroy();
      throw e;
    }
    if (out.errored) throw out.errored;
    return out;
  }

  /**
   * `verify` of one backup: with --deep, its archive streamed back and checked against the
   * manifest, and its manifest file read and compared with the listing's summary; without,
   * nothing beyond the repository check (`restic check`).
   */
  async checkEntry(entry: BackupEntry, opts: CheckOptions): Promise<EntryCheck> {
    if (!opts.deep) return { problems: [], bytesRead: 0 };
    const [manifest, archive] = await Promise.allSettled([this.completeManifest(entry, { force: true }), streamCheck(this, entry, opts)]);
    if (archive.status === 'rejected') throw archive.reason;
    const r = archive.value;
    if (manifest.status === 'rejected') r.problems.unshift({ kind: 'manifest', message: (manifest.reason as Error).message });
    // A prune that ran meanwhile removed it: not damage (as on a dir: target).
    if (r.problems.length && !opts.signal?.aborted && (await this.removedMeanwhile(entry))) return { problems: [], bytesRead: r.bytesRead, gone: true };
    return r;
  }

  /** Whether the backup's data and manifest snapshots are both gone from a fresh listing. */
  private async removedMeanwhile(entry: BackupEntry): Promise<boolean> {
    const listed = await this.snapshots().catch(() => undefined);
    if (!listed) return false;
    const ids = new Set(listed.map((sn) => sn.id));
    const manifests = await this.manifestIds([entry], true).catch(() => [] as string[]);
    return !ids.has(entry.location) && manifests.every((id) => ![...ids].some((x) => x.startsWith(id) || id.startsWith(x)));
  }

  /**
   * Starts `restic dump latest` of the resource's archive now, so that its key derivation
   * overlaps the listing's. openArchive() takes it only if the listing shows that restic's pick
   * is the entry being restored; a newer archive landing between the two listings is caught by
   * the entry's sha256 (see wasReadAhead).
   */
  readAhead(key: ResourceKey, signal?: AbortSignal): void {
    this.readAheads.start(resourceId(key), () => this.ready().then(() => this.dump(latestArchiveDumpArgs(key), signal)));
  }

  wasReadAhead(entry: BackupEntry): boolean {
    return this.servedAhead.has(entry);
  }

  /**
   * Starts `restic dump` of the entry's archive by its snapshot id, and with `manifest` the
   * dump of its manifest file too; see Backend.prefetch.
   */
  prefetch(entry: BackupEntry, signal?: AbortSignal, opts: { manifest?: boolean } = {}): void {
    this.prefetched.start(entry, () => this.ready().then(() => this.dump(archiveDumpArgs(entry), signal)));
    if (opts.manifest) this.prefetchedManifests.start(entry, () => this.readManifestFile(entry, signal));
  }

  /** The read-ahead for the entry's resource, if it is surely the entry's archive; any other is stopped. */
  private async takeReadAhead(entry: BackupEntry): Promise<PassThrough | undefined> {
    const out = await this.readAheads.take(resourceId(entry.manifest));
    if (!out) return undefined;
    // `latest` makes restic load every snapshot, so one unreadable snapshot file, of any
    // backup, fails it: it is used once it gives its first byte, and otherwise the plain dump
    // by id (which reads only its own snapshot) goes ahead. The restore waits for that byte anyway.
    if (latestArchiveSnapshot(this.lastListing ?? [], entry.manifest) !== entry.location || !(await this.firstBytes.get(out)) || out.errored || out.destroyed) {
      out.destroy();
      return undefined;
    }
    this.servedAhead.add(entry);
    return out;
  }

  /**
   * Warns when restic `command` has not opened the repository (`opened` has not settled)
   * SLOW_OPEN_MS after it started: it is loading a large index, or waiting for a lock that
   * another restic process holds, and says nothing about either.
   */
  watchOpening(command: string, opened: Promise<unknown>): void {
    const timer = setTimeout(
      () =>
        this.onWarning(
          `restic ${command} has not opened ${this.restic.repoLabel} after ${SLOW_OPEN_MS / 1000} s: it is loading the repository's index, or waiting (up to ${this.restic.retryLock}) for a lock another restic process holds`,
        ),
      SLOW_OPEN_MS,
    );
    timer.unref();
    opened.then(
      () => clearTimeout(timer),
      () => clearTimeout(timer),
    );
  }

  /**
   * `restic dump ARGS` as a stream that ends only once restic said it succeeded: a dump that
   * dies half-way must not look like a short archive but fail with restic's own reason.
   */
  private dump(args: string[], signal?: AbortSignal): PassThrough {
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    // restic may fail before the caller has attached to the stream: keep that error for it
    // (openArchive) instead of letting it escape as an unhandled 'error' event.
    out.on('error', () => undefined);
    let settleFirst!: (flowed: boolean) => void;
    this.firstBytes.set(out, new Promise((resolve) => (settleFirst = resolve)));
    const attempt = (again: boolean) => {
      const run = this.restic.start(['dump', ...args], { streamStdout: true, read: true, ...(signal ? { signal } : {}) });
      const flowing = new Promise((resolve) => run.child.stdout.once('data', resolve));
      void flowing.then(() => settleFirst(true));
      this.watchOpening('dump', Promise.race([flowing, run.result]));
      run.child.stdout.pipe(out, { end: false });
      const stdoutDone = new Promise<void>((resolve) => run.child.stdout.once('end', resolve).once('close', resolve));
      const stop = () => run.child.kill();
      out.once('close', stop);
      run.result.then(
        async () => {
          settleFirst(true);
          await stdoutDone;
          out.end();
        },
        (e: unknown) => {
          // A refused lock comes before any byte: the same dump again, without a lock.
          if (again && run.child.stdout.readableDidRead === false && this.lockRefused(e) && !out.destroyed) {
            run.child.stdout.unpipe(out);
            out.off('close', stop);
            attempt(false);
          } else {
            settleFirst(false);
            out.destroy(e as Error);
          }
        },
      );
    };
    attempt(true);
    return out;
  }

  /** A restic run that only reads (a dump, a check): without a lock once the repository refused one. */
  private async runReading(args: string[], opts: ResticRunOptions = {}): Promise<ProcessResult> {
    try {
      return await this.run(args, { ...opts, read: true });
    } catch (e) {
      if (!this.lockRefused(e)) throw e;
      return this.run(args, { ...opts, read: true });
    }
  }

  /**
   * Whether `e` is restic's refused lock (read-only storage, no write permission, a full disk),
   * which a read can do without: the first one switches this run's reads to --no-lock, and says so.
   */
  private lockRefused(e: unknown): boolean {
    if (!(e instanceof ResticLockError)) return false;
    if (!this.restic.lockless) {
      this.restic.lockless = true;
      this.onWarning(`${e.message}; reading it without a lock (do not prune it from elsewhere meanwhile)`);
    }
    return true;
  }

  /**
   * Instances backed up since the summary carries the plan's index fields need nothing; for
   * older ones the manifest files are read, a few restic processes at a time. So are optimized
   * volume backups from before their summary said which driver made them.
   */
  async loadIndexes(entries: BackupEntry[]): Promise<void> {
    const lacks = (m: Manifest) => m.index === undefined && (m.type === 'instance' || (m.type === 'volume' && m.options.optimized));
    const lacking = entries.filter((e) => lacks(e.manifest));
    const settled = await mapPool(lacking, 4, (e) => this.completeManifest(e));
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Reads the backup's manifest file, checks it against the listing's summary and puts its
   * index into the entry; once per manifest unless `force` (verify reads it again).
   */
  private async completeManifest(entry: BackupEntry, opts: { force?: boolean } = {}): Promise<void> {
    const m = entry.manifest;
    if (this.complete.has(m) && !opts.force) return;
    // One that was prefetched and failed is read again here, so that its failure is reported.
    const r = (await this.prefetchedManifests.take(entry)) ?? (await this.readManifestFile(entry));
    let full: Manifest;
    try {
      full = parseManifest(r.stdout);
    } catch (e) {
      throw new IbError(`manifest of ${label(m)} ${m.timestamp} is unreadable: ${(e as ManifestError).message}`, 1);
    }
    // A backup the listing renamed (assignVersions) carries its first version in the file.
    const stored = (entry as Partial<ResticEntry>).storedVersion ?? m.timestamp;
    if (!sameKey(full, m) || full.timestamp !== stored || full.archive.sha256 !== m.archive.sha256 || full.archive.size !== m.archive.size) {
      throw new IbError(`manifest of ${label(m)} ${m.timestamp} does not match its snapshot tags`, 1, 'run `incus-backup verify` on this target');
    }
    if (full.index !== undefined) m.index = full.index;
    this.complete.add(m);
  }

  /** `restic dump` of the backup's manifest file. */
  private async readManifestFile(entry: BackupEntry, signal?: AbortSignal): Promise<ProcessResult> {
    const [manifestId] = await this.manifestIds([entry]);
    return this.runReading(['dump', manifestId!, `/${manifestFileName(entry.manifest)}`], signal ? { signal } : {});
  }

  /**
   * The manifest snapshot of each backup: from the listing that produced the entry, or, for an
   * entry made elsewhere, from one new listing for all of them. With `all`, each backup's copies
   * too (ResticEntry.otherManifests), after its own.
   */
  private async manifestIds(entries: BackupEntry[], all = false): Promise<string[]> {
    const known = (e: BackupEntry): ResticEntry | undefined => ((e as Partial<ResticEntry>).manifestSnapshot ? (e as ResticEntry) : undefined);
    const listed = entries.every(known) ? undefined : new Map((await this.scan()).entries.map((e) => [e.location, e]));
    return entries.flatMap((e) => {
      const r = known(e) ?? listed?.get(e.location);
      if (!r) throw new IbError(`restic snapshot ${e.location.slice(0, 8)} is not a complete backup any more`, 1);
      return all ? [r.manifestSnapshot, ...(r.otherManifests ?? [])] : [r.manifestSnapshot];
    });
  }

  /**
   * Forgets exactly these backups' snapshots, manifests named first (an interruption then
   * tends to leave an unlisted orphan rather than a dangling manifest; neither ever lists),
   * and the leftovers' data snapshots, and prunes once for the whole batch, in the same restic
   * process (one key derivation).
   */
  async remove(entries: BackupEntry[], leftovers: BrokenBackup[] = []): Promise<{ reclaimed?: number }> {
    if (entries.length === 0 && leftovers.length === 0) return {};
    const ids = [...(await this.manifestIds(entries, true)), ...entries.map((e) => e.location), ...leftovers.filter((b) => b.leftover).map((b) => b.location)];
    const reclaimed = prunedBytes(await this.forget(ids, { prune: true }));
    return reclaimed === undefined ? {} : { reclaimed };
  }

  /**
   * `restic forget` of exact snapshot ids (`prune`: then `--prune` the data only they used);
   * restic reports a refused delete only on stderr.
   */
  async forget(ids: string[], opts: { prune?: boolean } = {}): Promise<string> {
    const step = opts.prune ? 'forget --prune' : 'forget';
    let r;
    try {
      r = await this.pastStaleLocks(() => this.run(['forget', ...(opts.prune ? ['--prune'] : []), ...ids]));
    } catch (e) {
      if (e instanceof IbError && DELETE_REFUSED.test(e.message)) throw appendOnlyError(step);
      if (opts.prune && e instanceof IbError) throw await this.pruneFailure(ids, e);
      throw e;
    }
    if (DELETE_REFUSED.test(r.stderr)) throw appendOnlyError(step);
    const refused = r.stderr.split('\n').find((l) => /unable to remove/i.test(l));
    if (refused) throw new IbError(`restic forget could not remove every snapshot: ${refused.trim()}`, 1);
    return r.stdout;
  }

  /**
   * What a failed `forget --prune` did: when the snapshots are gone, only reclaiming their space
   * failed (a repository missing packs, typically), which running prune again cannot finish:
   * its next run has nothing to forget. Said so, with what mends it.
   */
  private async pruneFailure(ids: string[], e: IbError): Promise<IbError> {
    // Ctrl-C stays an interrupt (exit 130), whatever restic got done.
    if (e.exitCode === ExitCode.interrupted) return e;
    const listed = await this.snapshots().catch(() => undefined);
    if (!listed || ids.some((id) => listed.some((sn) => sn.id.startsWith(id) || id.startsWith(sn.id)))) return e;
    const cause = e.message.replace(/^restic forget failed:\s*/, '');
    const damaged = /missing|does not exist|not found|damaged|invalid/i.test(cause);
    return new IbError(
      `the backups were removed from ${this.uri}, but restic could not reclaim their space: ${cause}`,
      ExitCode.failed,
      damaged
        ? 'the repository is damaged: `incus-backup verify` (then --deep) tells which backups it touches; `restic repair index` mends it, and then `restic prune` reclaims the space'
        : '`restic prune` reclaims the space once that is fixed; running incus-backup prune again finds nothing to remove',
    );
  }

  /**
   * `restic check` for the repository's structure, with --read-data or --read-data-subset to
   * also read the packs back. Damage is reported as problems (verify exits 3); a repository
   * that cannot be opened at all is an error like anywhere else.
   */
  async check(opts: CheckOptions): Promise<{ problems: Problem[] }> {
    const args = ['check'];
    if (opts.readDataSubset) args.push(`--read-data-subset=${opts.readDataSubset}`);
    else if (opts.readData) args.push('--read-data');
    try {
      await this.pastStaleLocks(() => this.runReading(args, opts.signal ? { signal: opts.signal } : {}));
      return { problems: [] };
    } catch (e) {
      if (!(e instanceof ResticError) || e.resticCode !== 1) throw e;
      return { problems: [{ kind: 'repository', message: e.message }] };
    }
  }

  /**
   * Runs a command that takes restic's exclusive lock (check, forget), past the locks that
   * restic processes of this host left when they were killed (kill -9 of a run, or of restic):
   * an exclusive lock waits for every other lock, stale or not, so each later prune and verify
   * would wait --retry-lock's 2 minutes and fail, every night, until someone ran `restic
   * unlock`. That is done here, which removes only stale locks (of this host's dead processes,
   * or older than 30 minutes) and leaves live ones alone: before the command, on a local
   * repository when it holds any lock, elsewhere always (its locks cannot be seen without a
   * restic process, and restic names a stale holder only after waiting out --retry-lock, two
   * silent minutes); and once more should restic still name a dead process of this host.
   */
  private async pastStaleLocks<T>(run: () => Promise<T>): Promise<T> {
    const local = localRepository(this.repository);
    if (local === undefined || holdsLocks(local)) await this.removeStaleLocks();
    try {
      return await run();
    } catch (e) {
      if (!(e instanceof ResticError && STALE_HOLDER.test(e.message))) throw e;
      this.onWarning(`${e.message}; removing the stale lock (restic unlock) and trying again`);
      await this.removeStaleLocks();
      return run();
    }
  }

  /** `restic unlock`: only stale locks go; says how many did. */
  private async removeStaleLocks(): Promise<void> {
    const r = await this.run(['unlock', '--verbose']);
    const n = Number(/successfully removed (\d+) locks?/.exec(r.stdout + r.stderr)?.[1] ?? 0);
    if (n > 0) this.onWarning(`removed ${n} stale restic lock(s) from ${this.uri}: left by restic processes of this host that were killed`);
  }

  /**
   * Adds or removes the protection tag on the backup's manifest snapshot (and its copies, see
   * ResticEntry.otherManifests). restic re-tags by writing a new snapshot and deleting the old;
   * where it may not delete (an append-only rest-server) it says so and still exits 0, so what
   * counts is the listing afterwards: a protect holds there (the new copy is protected), an
   * unprotect cannot (the old, protected copy stays), and is refused as such.
   */
  async setProtected(entry: BackupEntry, value: boolean): Promise<BackupEntry> {
    const ids = await this.manifestIds([entry], true);
    const r = await this.run(['tag', value ? '--add' : '--remove', TAG_PROTECTED, ...ids]);
    const again = (await this.list({ type: entry.manifest.type, project: entry.manifest.project, name: entry.manifest.name }))
      .find((e) => e.location === entry.location);
    if (!again) throw new IbError(`backup ${entry.manifest.timestamp} disappeared while it was being ${value ? 'protected' : 'unprotected'}`, 1);
    if ((again.manifest.protected === true) !== value) {
      const refused = DELETE_REFUSED.test(r.stderr) || /unable to modify/i.test(r.stderr);
      throw new IbError(
        `backup ${entry.manifest.timestamp} is still protected: restic could not delete its protected snapshot${refused ? ' (the repository refused to delete: probably an append-only rest-server)' : ''}`,
        ExitCode.failed,
        'unprotect it through a server that allows deleting (the same repository without --append-only)',
      );
    }
    return again;
  }

  async close(): Promise<void> {
    await this.restic.killAll();
  }

  interrupt(): void {
    // restic stops on SIGTERM as on Ctrl-C: it removes its lock and saves nothing more.
    void this.restic.interruptAll();
  }
}

/** Whether a local repository has lock files (of live processes or not). */
function holdsLocks(repository: string): boolean {
  try {
    return readdirSync(join(repository, 'locks')).length > 0;
  } catch {
    return false;
  }
}

/** resticFailure's words for a lock held by a dead restic process of this host. */
const STALE_HOLDER = /of this host, which is no longer running/;

/** How restic reports a delete that the server refused (an append-only rest-server: HTTP 403). */
const DELETE_REFUSED = /\b403\b|forbidden|append-only/i;

function appendOnlyError(step: string): IbError {
  return new IbError(
    `the restic repository refused to delete data (${step}: HTTP 403); it is probably served by an append-only rest-server`,
    1,
    'remove old backups where deleting is allowed, e.g. with a rest-server started without --append-only, or on the repository host',
  );
}

function label(k: ResourceKey): string {
  return `${k.type} ${keyLabel(k)}`;
}

interface OpenedRepository {
  /** Versions in use per resource id. */
  versions: Map<string, Set<string>>;
  /** The repository did not exist and was created by this run. */
  initialised: boolean;
}

/**
 * One backup being written: a running `restic backup --stdin-from-command` fed through fd 3,
 * held at the commit gate until commit() (see COMMIT_GATE).
 *
 * restic is started before the repository is known to exist (see createWriter). Nothing is
 * handed to it before ready(): if the repository had to be created meanwhile, that first
 * restic may have found none, so it is replaced by a fresh one, which is safe while it holds
 * no data.
 */
class ResticWriter implements ArchiveWriter {
  readonly stream: Writable;
  private run!: ResticRun;
  private data!: Writable;
  private gate!: Writable;
  /** Resolves once restic has started the gate command (see COMMIT_GATE). */
  private gateOpen!: Promise<void>;
  /** Bumped when restic is replaced, so that the old one's end is not taken as a failure. */
  private generation = 0;
  private pendingWrite?: (e?: Error | null) => void;
  /** Why the archive can no longer be committed (restic ended early, the stream was destroyed). */
  private failure?: Error;
  private isReady = false;
  /** restic found no repository before ready(); see prepare(). */
  private missedRepository?: Error;
  private readonly readyPromise: Promise<void>;
  private gateOpened = false;
  private committed = false;
  private dataSnapshot?: string;
  private aborting?: Promise<void>;
  private version: string;
  /** Started after the repository was open for writing (see prepare). */
  private readonly afterOpen: boolean;

  constructor(
    private readonly backend: ResticBackend,
    private readonly key: ResourceKey,
    base: string,
    private readonly opened: Promise<OpenedRepository>,
  ) {
    this.version = base;
    this.afterOpen = backend.isOpen;
    this.stream = new Writable({
      highWaterMark: 1 << 20,
      write: (chunk: Buffer, _enc, cb) => {
        if (this.isReady) return this.push(chunk, cb);
        this.readyPromise.then(
          () => this.push(chunk, cb),
          (e: unknown) => cb(e as Error),
        );
      },
      final: (cb) => {
        this.readyPromise.then(
          () => {
            if (this.failure) return cb(this.failure);
            // Ending fd 3 only ends the copy: restic still waits at the gate for commit().
            this.data.end(() => cb());
          },
          (e: unknown) => cb(e as Error),
        );
      },
      destroy: (err, cb) => {
        // Destroyed before the whole archive was handed over: it must never be saved.
        if (err || !this.stream.writableFinished) this.stop(err ?? new IbError('archive stream destroyed before its end', 1));
        cb(err);
      },
    });
    // Failures are reported by write callbacks, commit() and abort(); an 'error' event nobody
    // listens to (e.g. restic failing before the caller piped anything in) must not crash us.
    this.stream.on('error', () => undefined);
    this.start();
    this.readyPromise = this.prepare();
    this.readyPromise.catch(() => undefined);
  }

  get timestamp(): string {
    return this.version;
  }

  /** Nothing written, nothing failed: a prewarmed writer can still be handed out. */
  fresh(): boolean {
    return !this.failure && !this.aborting && !this.gateOpened && this.stream.writableLength === 0 && !this.stream.destroyed;
  }

  /** The version's starting point, for a writer started before its backup began (prewarm). */
  rebase(base: string): void {
    this.version = base;
  }

  ready(): Promise<void> {
    return this.readyPromise;
  }

  private start(): void {
    const generation = ++this.generation;
    let gateOpen!: () => void;
    this.gateOpen = new Promise<void>((resolve) => (gateOpen = resolve));
    this.run = this.backend.restic.start(
      [
        'backup',
        // No parent to compare with (the archive is read whole either way): restic would load
        // every snapshot to look for one, and one unreadable snapshot file would stop every
        // backup into the repository.
        '--force',
        '--stdin-from-command',
        '--stdin-filename',
        archiveFileName(this.key),
        '--host',
        SNAPSHOT_HOST,
        ...tagArgs(archiveTags(this.key)),
        '--json',
        '--quiet',
        '--',
        'sh',
        '-c',
        COMMIT_GATE,
      ],
      { extraInputs: 2, onStderrLine: (line) => line === GATE_OPEN && gateOpen() },
    );
    [this.data, this.gate] = this.run.child.inputs as [Writable, Writable];
    this.backend.watchOpening('backup', Promise.race([this.gateOpen, this.run.result]));
    // restic ending before commit is always a failure: report restic's reason, not EPIPE.
    void this.run.result.then(
      () => new IbError('restic backup ended before the archive was complete', 1),
      (e: unknown) => e as Error,
    ).then((e) => {
      if (this.gateOpened || generation !== this.generation) return;
      if (!this.isReady && e instanceof ResticError && e.resticCode === RESTIC_EXIT.noRepository) {
        // Started before the repository was created: prepare() decides once the listing is back.
        this.missedRepository = e;
        return;
      }
      this.failure ??= e;
      const cb = this.pendingWrite;
      this.pendingWrite = undefined;
      if (cb) cb(this.failure);
      else this.stream.destroy(this.failure);
    });
  }

  /**
   * restic may now get data: it has opened the repository (its gate is open), or the listing
   * is back and says the repository existed, or was created by this run (restic is then
   * replaced if it may have started too early). The listing is waited for at commit anyway.
   */
  private async prepare(): Promise<void> {
    const repo = this.afterOpen ? undefined : await Promise.race([this.gateOpen.then(() => undefined), this.opened]);
    if (this.failure) throw this.failure;
    // No `repo`: the repository was known to exist when restic started, or restic has opened it
    // by itself; either way there is nothing to replace.
    if (repo && !repo.initialised && this.missedRepository) this.failure = this.missedRepository;
    else if (repo?.initialised) {
      // Started before the repository existed: it may have given up already. Replace it.
      const old = this.run;
      this.generation++;
      this.gate.destroy();
      this.data.destroy();
      old.child.kill();
      await old.result.catch(() => undefined);
      if (this.failure) throw this.failure;
      this.start();
    }
    if (this.failure) throw this.failure;
    this.isReady = true;
  }

  private push(chunk: Buffer, cb: (e?: Error | null) => void): void {
    if (this.failure) return cb(this.failure);
    if (this.data.write(chunk)) return cb();
    this.pendingWrite = cb;
    this.data.once('drain', () => {
      if (this.pendingWrite !== cb) return;
      this.pendingWrite = undefined;
      cb();
    });
  }

  /** Closes the gate for good and stops restic; it then saves no snapshot. */
  private stop(why: Error): void {
    if (this.gateOpened) return;
    this.failure ??= why;
    this.gate.destroy();
    this.data.destroy();
    this.run.child.kill();
  }

  commit: ArchiveWriter['commit'] = async (m) => {
    if (this.failure) throw this.failure;
    if (!this.stream.writableFinished) throw new Error('commit() before the archive stream finished');
    this.gateOpened = true;
    this.gate.end('commit\n');
    // The snapshot id is taken even from a failed run (restic's exit 3 still saves a
    // snapshot) so that abort() can forget it.
    const raw = await this.run.child.done.catch(() => undefined);
    const summary = raw ? jsonLines(raw.stdout).find((l) => l.message_type === 'summary') : undefined;
    const id = typeof summary?.snapshot_id === 'string' ? summary.snapshot_id : undefined;
    this.dataSnapshot = id;
    await this.run.result;
    if (!id) throw new IbError('restic backup reported no snapshot id', 1);
    const stored = Number(summary?.total_bytes_processed);
    if (stored !== m.archive.size) {
      throw new IbError(`restic stored ${stored} bytes of ${label(this.key)}, expected ${m.archive.size}`, 1);
    }
    // The version: the first free one, now that the listing is surely back (ready() waited for it).
    const { versions } = await this.opened;
    const rid = resourceId(this.key);
    const taken = versions.get(rid) ?? versions.set(rid, new Set()).get(rid)!;
    this.version = nextFreeVersion(this.version, taken);
    taken.add(this.version);
    const manifest: Manifest = {
      ...m,
      timestamp: this.version,
      archive: { file: archiveFileName(this.key), size: m.archive.size, sha256: m.archive.sha256, storedSize: m.archive.size, storedSha256: m.archive.sha256 },
    };
    await this.backend.run(
      ['backup', '--force', '--stdin', '--stdin-filename', manifestFileName(this.key), '--host', SNAPSHOT_HOST, ...tagArgs(manifestTags(manifest, id)), '--json', '--quiet'],
      { input: JSON.stringify(manifest, null, 2) + '\n' },
    );
    this.committed = true;
    const dataAdded = Number(summary?.data_added);
    return { manifest, location: id, ...(Number.isFinite(dataAdded) ? { dataAdded } : {}) };
  };

  abort(): Promise<void> {
    this.aborting ??= this.doAbort();
    return this.aborting;
  }

  private async doAbort(): Promise<void> {
    if (this.committed) return;
    this.stop(new IbError('backup aborted', 1));
    this.stream.destroy();
    // A replacement restic may be starting right now (prepare): let it settle, then stop it too.
    await this.readyPromise.catch(() => undefined);
    this.stop(new IbError('backup aborted', 1));
    await this.run.result.catch(() => undefined);
    // Only after a failed commit: the data snapshot exists but no manifest names it.
    if (this.dataSnapshot) await this.backend.forget([this.dataSnapshot]);
  }
}

export const resticBackendFactory: BackendFactory = {
  scheme: 'restic',
  example: 'restic:/srv/restic',
  create(rest, uri, opts = {}) {
    return createResticBackend(rest, uri, {
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.passwordFile ? { passwordFile: opts.passwordFile } : {}),
      ...(opts.passwordSource ? { passwordSource: opts.passwordSource } : {}),
      ...(opts.warn ? { onWarning: opts.warn } : {}),
      ...(opts.confirm ? { confirm: opts.confirm } : {}),
    });
  },
};

/**
 * Work started before anyone asks for it (a read-ahead or prefetched dump, a prewarmed restic
 * backup), by key, and taken at most once. What is never taken needs no clean-up of its own: its
 * restic is stopped with all the others when the backend closes, before saving anything.
 */
class StartedAhead<K, V> {
  private readonly started = new Map<K, Promise<V>>();

  start(key: K, begin: () => Promise<V>): void {
    if (this.started.has(key)) return;
    const p = begin();
    // A start that failed is left to the plain way to report (see take).
    p.catch(() => undefined);
    this.started.set(key, p);
  }

  /** What was started for `key`, once: undefined if nothing was, or if it failed to start. */
  async take(key: K): Promise<V | undefined> {
    const p = this.started.get(key);
    if (!p) return undefined;
    this.started.delete(key);
    return p.catch(() => undefined);
  }
}

/** `restic dump` arguments for a backup's archive, by its data snapshot's id. */
function archiveDumpArgs(entry: BackupEntry): string[] {
  return [entry.location, `/${archiveFileName(entry.manifest)}`];
}

/** restic's repository backends other than a local directory (`local:` is a path too). */
const RESTIC_REMOTE = /^(sftp|rest|s3|b2|azure|gs|swift|rclone):/;
/** What a local restic repository holds, complete or being created. */
const RESTIC_LAYOUT = new Set(['config', 'data', 'index', 'keys', 'locks', 'snapshots']);

/** The directory of a repository on a local path; undefined for a remote one. */
function localRepository(repository: string): string | undefined {
  return RESTIC_REMOTE.test(repository) ? undefined : repository.replace(/^local:/, '');
}

/**
 * Mistakes in a remote repository's address, said before restic sees it: restic's own words
 * would be a URL parser's, and for a password with an unencoded `@` they show the rest of it.
 */
function checkRemote(rest: string): void {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(rest)?.[1];
  if (!scheme || scheme === 'local') return;
  const shown = redactRepository(rest);
  if (!RESTIC_REMOTE.test(rest)) {
    if (/^https?$/i.test(scheme)) throw new UsageError(`${shown} is a URL: restic reaches a rest-server's repository as rest:URL`, `use --target restic:rest:${shown}`);
    if (RESTIC_REMOTE.test(`${scheme.toLowerCase()}:`)) throw new UsageError(`restic's backend names are lower case, not "${scheme}:"`, `use --target restic:${scheme.toLowerCase()}:${shown.slice(scheme.length + 1)}`);
    throw new UsageError(`"${scheme}:" is not a restic backend`, 'restic takes a local path (restic:/srv/restic), or sftp:, rest:, s3:, b2:, azure:, gs:, swift: or rclone: (see restic\'s documentation)');
  }
  if (scheme !== 'rest') return;
  const url = rest.slice('rest:'.length);
  if (!/^https?:\/\/[^/]/.test(url)) {
    throw new UsageError(`restic's rest: repository needs an http:// or https:// URL, not "${redactRepository(url)}"`, `e.g. --target restic:rest:http://${redactRepository(url).replace(/^([a-z][a-z0-9+.-]*:)?\/\//i, '')}`);
  }
  // user:password@host: an `@` (or `/`) in the password must be percent-encoded, else the URL
  // parser takes part of the password for the host.
  if ((url.match(/@/g) ?? []).length > 1) {
    throw new UsageError('the user name or password in the restic repository URL has an "@" that is not percent-encoded', 'write @ as %40, : as %3A and / as %2F there (p@ss becomes p%40ss)');
  }
}

/** The factory with the options the CLI may add later (e.g. --password-file). */
export function createResticBackend(rest: string, uri: string, opts: ResticBackendOptions = {}): ResticBackend {
  if (!rest) throw new UsageError('restic: target needs a repository', 'e.g. --target restic:/srv/restic or restic:rest:http://host:8000/repo');
  checkRemote(rest);
  // restic reads a string without a backend prefix as a local path, relative to wherever the
  // command runs: a nightly job started from another directory would write somewhere else.
  const local = localRepository(rest);
  if (local !== undefined && !local.startsWith('/')) {
    throw new UsageError(`restic repository "${local}" is not an absolute path`, `use e.g. restic:${resolve(local)} (cron and systemd start elsewhere), or a backend such as restic:rest:http://host:8000/repo`);
  }
  // restic would retry a repository it cannot open for many minutes, even a file.
  const kind = local === undefined ? 'missing' : pathKind(local);
  if (kind === 'other') {
    throw new UsageError(`restic repository ${local} is not a directory`, 'point --target at the repository directory (a backup creates one that does not exist yet)');
  }
  // A directory target is no repository: restic would call it one with a wrong password (its
  // `config/` looks like restic's config) or initialise a repository among its backups.
  if (kind === 'directory' && directoryHolds(local!) === 'dir-target') {
    throw new UsageError(`${uri} is a directory target, not a restic repository`, `use --target dir:${local}`);
  }
  // The target as shown in messages: a rest-server password in the URL stays out of them.
  return new ResticBackend(rest, uri.startsWith('restic:') ? `restic:${redactRepository(rest)}` : uri, opts);
}

