import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, promises as fs, readdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, join, normalize, resolve } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compressor, decompressor, EXTENSIONS } from '../../core/compression.js';
import { DIR_MODE, directoryHolds, exists, FILE_MODE, fsyncPath, mkdirPrivate, pathKind, pidAlive, writeFileAtomic } from '../../core/fsutil.js';
import { HashingStream } from '../../core/hashing.js';
import { formatTimestamp, ManifestError, parseManifest, compareManifests, type Manifest } from '../../core/manifest.js';
import { SERVER_WIDE, type ResourceKey } from '../../core/types.js';
import { IbError, UsageError } from '../../errors.js';
import { toolVersion } from '../../version.js';
import { ArchiveDigest, tarProblems } from '../../core/verify.js';
import type {
  ArchiveWriter,
  Backend,
  BackendFactory,
  BackupEntry,
  BrokenBackup,
  CheckOptions,
  EntryCheck,
  ListFilter,
  LockRequest,
  Problem,
  ProblemKind,
  WriteRequest,
} from '../types.js';
import { acquireLock, LOCK_FILE } from './lock.js';

const STAGING = '.staging';
const TRASH = '.trash';
/** What a target's root holds besides metadata.json. */
const BACKUP_TREES = new Set(['instances', 'volumes', 'images', 'config']);
const LAYOUT = new Set([...BACKUP_TREES, STAGING, TRASH, LOCK_FILE, `${LOCK_FILE}.takeover`]);
const TS_DIR = /^\d{8}T\d{6}Z(-\d+)?$/;


/**
 * Backups as plain files: one directory per backup, holding the archive, manifest.json and a
 * `sha256sum -c` compatible checksums.txt. A backup is assembled under .staging/ and appears
 * in the listed tree by a single directory rename, so a reader never sees half of one.
 */
export class DirBackend implements Backend {
  readonly kind = 'dir' as const;

  constructor(
    readonly root: string,
    readonly uri: string,
  ) {}

  resourceDir(k: ResourceKey): string {
    // Incus takes "." and ".." as volume (and pool) names: as path steps they would put the
    // backup where no listing finds it.
    for (const step of [k.project, k.pool, k.name]) {
      if (step === '.' || step === '..' || step === '') {
        throw new IbError(
          `a directory target cannot hold ${k.type} ${[k.project, k.pool, k.name].filter((x) => x !== undefined).join('/')}: "${step}" is a path step`,
          1,
          'rename it in Incus (`incus storage volume rename POOL OLD NEW`), or back it up into a restic target',
        );
      }
    }
    if (k.type === 'instance') return join(this.root, 'instances', k.project, k.name);
    if (k.type === 'volume') return join(this.root, 'volumes', k.project, k.pool!, k.name);
    if (k.type === 'image') return join(this.root, 'images', k.project, k.name);
    // The declarative config is server-wide: one series of versions, whatever the project.
    return join(this.root, 'config');
  }

  /** Whether a backup may write here: a target, or a new or empty directory (throws otherwise). */
  private writableHolds(): 'dir-target' | 'empty' {
    // What a target's root holds besides metadata.json counts as nothing: a target that lost it
    // is still one, and a first backup of another run may be writing it now (its temporary file).
    const holds = this.rootExists() ? this.notResticRepository((e) => LAYOUT.has(e) || /^\.[0-9a-f]{8}\.tmp$/.test(e)) : 'empty';
    if (holds === 'other') {
      // `dir:/srv` typed for `dir:/srv/backups` would scatter a backup tree among its files.
      throw new UsageError(
        `${this.uri} is not empty and is not a directory target (it has no metadata.json)`,
        `point --target at a new or empty directory, e.g. dir:${join(this.root, 'incus-backup')}`,
      );
    }
    return holds as 'dir-target' | 'empty';
  }

  async checkWritable(): Promise<string | undefined> {
    return this.writableHolds() === 'dir-target' ? undefined : `a backup initialises directory target ${this.root}`;
  }

  async prepareWrite(onNotice: (msg: string) => void): Promise<void> {
    const holds = this.writableHolds();
    if (holds !== 'dir-target') {
      await mkdirPrivate(this.root);
      await writeFileAtomic(
        join(this.root, 'metadata.json'),
        JSON.stringify({ format: 1, created: new Date().toISOString(), tool: `incus-backup ${toolVersion}` }, null, 2) + '\n',
      );
      onNotice(`initialised directory target ${this.root}`);
    }
    await mkdirPrivate(join(this.root, STAGING));
    const n = await this.sweepStaging();
    if (n) onNotice(leftoversNotice(n, this.root));
  }

  /**
   * Removes what killed runs left in .staging/ and .trash/: before the writer lock, those of
   * this host whose pid is gone. Under the lock (`all`), every other run's: only a lock holder
   * writes there, so they are all dead, including those of a host that died or was renamed,
   * whose pids cannot be checked (a backup of a few GiB each, otherwise there for good).
   * Returns how many went.
   */
  private async sweepStaging(all = false): Promise<number> {
    const mine = `${hostname()}_${process.pid}_`;
    let removed = 0;
    for (const area of [STAGING, TRASH]) {
      const dir = join(this.root, area);
      let entries: string[] = [];
      try {
        entries = await fs.readdir(dir);
      } catch {
        continue;
      }
      for (const e of entries) {
        const [host, pid] = e.split('_');
        const dead = all ? !e.startsWith(mine) : host === hostname() && !pidAlive(Number(pid));
        if (!dead) continue;
        await fs.rm(join(dir, e), { recursive: true, force: true });
        removed++;
      }
    }
    return removed;
  }

  private async ensureExists(): Promise<void> {
    if (!this.rootExists()) {
      throw new UsageError(`target ${this.uri} does not exist`, 'check the path, or run a backup to create it');
    }
    // An empty directory is what an unmounted backup disk looks like: reading it as a target
    // with no backups would let a weekly verify pass. One that lost metadata.json but has the
    // layout is still a target.
    const holds = this.notResticRepository();
    if (holds === 'dir-target') return;
    if (!readdirSync(this.root).some((e) => BACKUP_TREES.has(e))) {
      throw new UsageError(
        `${this.uri} is not a directory target (${holds === 'empty' ? 'it is empty' : 'it has no metadata.json and no backups'})`,
        'is the backup disk mounted? check the path; a directory target is made by its first backup',
      );
    }
  }

  /** Refuses a restic repository given as dir: (its `config` file is no config backup). */
  private notResticRepository(alsoEmpty?: (entry: string) => boolean): ReturnType<typeof directoryHolds> {
    const holds = directoryHolds(this.root, alsoEmpty);
    if (holds === 'restic') throw new UsageError(`${this.uri} is a restic repository, not a directory target`, `use --target restic:${this.root}`);
    return holds;
  }

  /** Whether the target exists; a file (or anything but a directory) there is bad input. */
  private rootExists(): boolean {
    const kind = pathKind(this.root);
    if (kind === 'other') throw new UsageError(`target ${this.uri} is not a directory`, 'point --target at a directory (a backup creates one that does not exist yet)');
    return kind === 'directory';
  }

  async createWriter(req: WriteRequest): Promise<ArchiveWriter> {
    const staging = join(this.root, STAGING, `${hostname()}_${process.pid}_${randomBytes(4).toString('hex')}`);
    await fs.mkdir(staging, { mode: DIR_MODE });
    const file = req.archiveBase + EXTENSIONS[req.compression];
    const partial = join(staging, `${file}.partial`);
    const out = createWriteStream(partial, { flags: 'wx', mode: FILE_MODE, highWaterMark: 1 << 20 });
    const input = new PassThrough({ highWaterMark: 1 << 20 });
    const comp = await compressor(req.compression);
    const stored = comp ? new HashingStream() : undefined;
    const done = (comp ? pipeline(input, comp, stored!, out) : pipeline(input, out)).then(
      () => undefined,
      (e: unknown) => e,
    );
    const timestamp = formatTimestamp(req.when);
    const finalParent = this.resourceDir(req.key);
    let finished = false;

    const abort = async (): Promise<void> => {
      if (finished) return;
      input.destroy();
      out.destroy();
      await done;
      await fs.rm(staging, { recursive: true, force: true });
    };

    const commit: ArchiveWriter['commit'] = async (m) => {
      const err = await done;
      if (err) throw err;
      await fsyncPath(partial);
      await fs.rename(partial, join(staging, file));
      const st = await fs.stat(join(staging, file));
      const manifest: Manifest = {
        ...m,
        archive: {
          file,
          size: m.archive.size,
          sha256: m.archive.sha256,
          storedSize: st.size,
          storedSha256: stored ? stored.sha256 : m.archive.sha256,
        },
      };
      await writeFileAtomic(join(staging, 'checksums.txt'), `${manifest.archive.storedSha256}  ${file}\n`);
      // The manifest goes last: its presence is what makes the directory a backup.
      await writeFileAtomic(join(staging, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
      await mkdirPrivate(finalParent);
      for (let n = 0; ; n++) {
        const ts = n === 0 ? timestamp : `${timestamp}-${n}`;
        const dest = join(finalParent, ts);
        manifest.timestamp = ts;
        if (n > 0) await writeFileAtomic(join(staging, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
        try {
          await fs.rename(staging, dest);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if ((code === 'ENOTEMPTY' || code === 'EEXIST') && n < 1000) continue;
          throw e;
        }
        await fsyncPath(finalParent);
        finished = true;
        return { manifest, location: dest };
      }
    };

    return { stream: input, timestamp, ready: () => Promise.resolve(), commit, abort };
  }

  async list(filter: ListFilter = {}): Promise<BackupEntry[]> {
    return (await this.scan(filter)).entries;
  }

  /** Every backup directory under the layout, split into usable entries and broken ones. */
  async scan(filter: ListFilter = {}): Promise<{ entries: BackupEntry[]; broken: BrokenBackup[] }> {
    await this.ensureExists();
    const entries: BackupEntry[] = [];
    const broken: BrokenBackup[] = [];
    const dirs = await this.candidateDirs(filter);
    for (const { dir, key } of dirs) {
      for (const ts of (await readdirSafe(dir)).filter((d) => TS_DIR.test(d))) {
        const location = join(dir, ts);
        try {
          const manifest = parseManifest(await fs.readFile(join(location, 'manifest.json'), 'utf8'));
          if (manifest.type !== key.type || manifest.name !== key.name || manifest.project !== key.project || (key.pool !== undefined && manifest.pool !== key.pool)) {
            throw new ManifestError('manifest does not match its location');
          }
          // A copy of a backup's directory under another name would list twice as one version,
          // and --version would no longer name exactly one backup.
          if (manifest.timestamp !== ts) throw new ManifestError(`manifest does not match its location: it is of version ${manifest.timestamp}`);
          const st = await fs.stat(join(location, manifest.archive.file)).catch(() => undefined);
          if (!st) throw new DamageError('missing', `archive ${manifest.archive.file} is missing`);
          if (st.size !== manifest.archive.storedSize) {
            throw new DamageError(
              st.size < manifest.archive.storedSize ? 'truncated' : 'size',
              `size mismatch: archive ${manifest.archive.file} has ${st.size} bytes, manifest says ${manifest.archive.storedSize}`,
            );
          }
          entries.push({ manifest, location });
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          const [kind, problem]: [ProblemKind, string] =
            e instanceof DamageError
              ? [e.kind, e.message]
              : code === 'ENOENT'
                ? ['missing', 'manifest.json is missing']
                : code
                  ? ['unreadable', `manifest.json cannot be read: ${(e as Error).message}`]
                  : ['manifest', `invalid manifest: ${(e as Error).message}`];
          broken.push({ location, key: { ...key, timestamp: ts }, problem, kind });
        }
      }
    }
    entries.sort((a, b) => compareManifests(a.manifest, b.manifest));
    return { entries, broken };
  }

  private async candidateDirs(f: ListFilter): Promise<{ dir: string; key: ResourceKey }[]> {
    const out: { dir: string; key: ResourceKey }[] = [];
    const pick = (want: string | undefined, all: string[]) => (want ? all.filter((x) => x === want) : all);
    for (const [type, folder] of [['instance', 'instances'], ['image', 'images']] as const) {
      if (f.type && f.type !== type) continue;
      const base = join(this.root, folder);
      for (const project of pick(f.project, await readdirSafe(base)))
        for (const name of pick(f.name, await readdirSafe(join(base, project))))
          out.push({ dir: join(base, project, name), key: { type, project, name } });
    }
    if (!f.type || f.type === 'volume') {
      const base = join(this.root, 'volumes');
      for (const project of pick(f.project, await readdirSafe(base)))
        for (const pool of pick(f.pool, await readdirSafe(join(base, project))))
          for (const name of pick(f.name, await readdirSafe(join(base, project, pool))))
            out.push({ dir: join(base, project, pool, name), key: { type: 'volume', project, pool, name } });
    }
    if (!f.type || f.type === 'config') {
      out.push({ dir: join(this.root, 'config'), key: { type: 'config', project: SERVER_WIDE, name: 'config' } });
    }
    return out;
  }

  async openArchive(entry: BackupEntry): Promise<Readable> {
    const file = join(entry.location, entry.manifest.archive.file);
    const raw = createReadStream(file, { highWaterMark: 1 << 20 });
    await new Promise<void>((resolve, reject) => {
      raw.once('open', () => resolve());
      raw.once('error', reject);
    });
    const dec = await decompressor(entry.manifest.options.compression);
    if (!dec) return raw;
    raw.on('error', (e) => dec.destroy(e));
    return raw.pipe(dec);
  }

  async remove(entries: BackupEntry[]): Promise<{ reclaimed?: number }> {
    // Out of the listed tree first (one rename), then delete: a crash in between leaves only
    // trash that the next writer sweeps, never a half-deleted backup that still lists.
    const trash = join(this.root, TRASH);
    await mkdirPrivate(trash);
    for (const entry of entries) {
      const dest = join(trash, `${hostname()}_${process.pid}_${randomBytes(4).toString('hex')}`);
      await fs.rename(entry.location, dest);
      await fs.rm(dest, { recursive: true, force: true });
    }
    return {};
  }

  async close(): Promise<void> {}

  /**
   * Reads the stored archive once: its bytes are hashed as stored and, when compressed, fed
   * to the decompressor whose output (the tar) is hashed too, so a compressed backup costs one
   * read. A decompressor failure does not stop the read: the stored checksum still gets its
   * verdict, which is the more useful message (bit rot rather than "bad gzip").
   */
  async checkEntry(entry: BackupEntry, opts: CheckOptions): Promise<EntryCheck> {
    const m = entry.manifest;
    const file = m.archive.file;
    const problems: Problem[] = [];
    if (!(await exists(entry.location))) return { problems, bytesRead: 0, gone: true };
    problems.push(...(await this.checksumFileProblems(entry)));
    if (m.options.compression === 'none' && (m.archive.size !== m.archive.storedSize || m.archive.sha256 !== m.archive.storedSha256)) {
      problems.push({ kind: 'manifest', message: 'invalid manifest: uncompressed archive with differing stored and tar checksums' });
    }

    const stored = new ArchiveDigest();
    const dec = await decompressor(m.options.compression);
    const tar = dec ? new ArchiveDigest() : stored;
    let decError: Error | undefined;
    // Errors reach decError through the pipeline; the listener only keeps a late one (a write
    // racing the failure) from becoming an uncaught exception.
    dec?.on('error', () => undefined);
    const decDone = dec
      ? pipeline(dec, tar.sink()).catch((e: unknown) => {
          decError ??= e as Error;
        })
      : Promise.resolve();
    const feeding = () => dec && !decError && !dec.destroyed && !dec.writableEnded;
    try {
      const raw = createReadStream(join(entry.location, file), { highWaterMark: 1 << 20, ...(opts.signal ? { signal: opts.signal } : {}) });
      for await (const chunk of raw as AsyncIterable<Buffer>) {
        stored.update(chunk);
        opts.onBytes?.(stored.bytes);
        if (feeding() && !dec!.write(chunk)) {
          await Promise.race([once(dec!, 'drain'), decDone]).catch((e: unknown) => {
            decError ??= e as Error;
          });
        }
      }
      if (feeding()) dec!.end();
      await decDone;
    } catch (e) {
      dec?.destroy();
      if (opts.signal?.aborted) throw e;
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        if (!(await exists(entry.location))) return { problems: [], bytesRead: stored.bytes, gone: true };
        problems.push({ kind: 'missing', message: `archive ${file} is missing` });
      } else problems.push({ kind: 'unreadable', message: `archive ${file} cannot be read: ${(e as Error).message}` });
      return { problems, bytesRead: stored.bytes };
    }

    let storedOk = true;
    if (stored.bytes !== m.archive.storedSize) {
      storedOk = false;
      problems.push({
        kind: stored.bytes < m.archive.storedSize ? 'truncated' : 'size',
        message: `size mismatch: ${file} has ${stored.bytes} bytes, manifest says ${m.archive.storedSize}`,
      });
    } else if (stored.sha256 !== m.archive.storedSha256) {
      storedOk = false;
      problems.push({
        kind: 'checksum',
        message: `checksum mismatch: ${file} sha256 ${stored.sha256.slice(0, 12)}…, manifest says ${m.archive.storedSha256.slice(0, 12)}…`,
      });
    }
    if (dec && decError) {
      problems.push({ kind: 'unreadable', message: `${file} cannot be decompressed: ${decError.message}` });
    } else if (storedOk) {
      // With a damaged stored file the tar's own mismatch is a consequence: say it once.
      problems.push(...tarProblems(tar, m, dec ? `tar inside ${file}` : file));
    }
    return { problems, bytesRead: stored.bytes };
  }

  /** checksums.txt (for `sha256sum -c`) must exist and agree with the manifest. */
  private async checksumFileProblems(entry: BackupEntry): Promise<Problem[]> {
    const file = entry.manifest.archive.file;
    let text: string;
    try {
      text = await fs.readFile(join(entry.location, 'checksums.txt'), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [{ kind: 'missing', message: 'checksums.txt is missing' }];
      return [{ kind: 'unreadable', message: `checksums.txt cannot be read: ${(e as Error).message}` }];
    }
    const line = text
      .split('\n')
      .map((l) => /^([0-9a-f]{64}) [ *](.+)$/.exec(l))
      .find((x) => x?.[2] === file);
    if (!line) return [{ kind: 'checksum', message: `checksums.txt has no line for ${file}` }];
    if (line[1] !== entry.manifest.archive.storedSha256) {
      return [{ kind: 'checksum', message: `checksum mismatch: checksums.txt and manifest.json disagree on ${file}` }];
    }
    return [];
  }

  /**
   * Protection lives in manifest.json (`"protected": true`), rewritten atomically: the manifest
   * is already what list, restore and prune read, it travels with the backup when the tree is
   * copied elsewhere, and writeFileAtomic means a crash leaves the old manifest or the new one.
   * The file is edited as raw JSON so fields a newer version wrote are kept. The caller holds
   * the target lock, so two protects cannot interleave their read and write.
   */
  async setProtected(entry: BackupEntry, value: boolean): Promise<BackupEntry> {
    const path = join(entry.location, 'manifest.json');
    const text = await fs.readFile(path, 'utf8');
    const manifest = parseManifest(text);
    if ((manifest.protected === true) === value) return { manifest, location: entry.location };
    const raw = JSON.parse(text) as Record<string, unknown>;
    if (value) raw.protected = true;
    else delete raw.protected;
    const next = JSON.stringify(raw, null, 2) + '\n';
    await writeFileAtomic(path, next);
    return { manifest: parseManifest(next), location: entry.location };
  }

  /** The writer lock: see lock.ts. The target must exist (prepareWrite creates it). */
  async lock(purpose: string, req: LockRequest): Promise<() => Promise<void>> {
    await this.ensureExists();
    const release = await acquireLock(this.root, { purpose, waitMs: req.waitMs, ...(req.signal ? { signal: req.signal } : {}), ...(req.onNotice ? { onNotice: req.onNotice } : {}) });
    try {
      const n = await this.sweepStaging(true);
      if (n) req.onNotice?.(leftoversNotice(n, this.root));
    } catch (e) {
      await release();
      throw e;
    }
    return release;
  }
}

/** A backup whose manifest is fine but whose data is not where or what it says. */
class DamageError extends Error {
  constructor(
    readonly kind: ProblemKind,
    message: string,
  ) {
    super(message);
  }
}

async function readdirSafe(dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  } catch (e) {
    // Missing, or a file where a directory was expected (nothing of ours is there).
    if (['ENOENT', 'ENOTDIR'].includes((e as NodeJS.ErrnoException).code ?? '')) return [];
    throw e;
  }
}

export const dirBackendFactory: BackendFactory = {
  scheme: 'dir',
  example: 'dir:/srv/backups',
  create(rest, uri) {
    if (!rest) throw new UsageError('dir: target needs a path', 'e.g. --target dir:/srv/backups');
    if (!isAbsolute(rest)) {
      throw new UsageError(`directory target "${rest}" is not an absolute path`, `use e.g. dir:${resolve(rest)} (cron and systemd start elsewhere)`);
    }
    return new DirBackend(normalize(rest).replace(/(.)\/+$/, '$1'), uri);
  },
};


function leftoversNotice(n: number, root: string): string {
  return `removed ${n} leftover(s) of runs that never finished (partial backups, half-done deletions) from ${root}`;
}
