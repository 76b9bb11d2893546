import { createHash, type Hash } from 'node:crypto';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Backend, BackupEntry, CheckOptions, EntryCheck, ListFilter, Problem } from '../backends/types.js';
import { InterruptedError } from '../errors.js';
import { mapPool } from './pool.js';
import { compareTimestamps, type Manifest } from './manifest.js';
import type { Ui } from './run.js';
import type { ResourceKey } from './types.js';

const BLOCK = 512;
const TRAILER = 2 * BLOCK;

/**
 * sha256, length and the last 1 KiB of a byte stream, fed chunk by chunk so that an archive
 * of any size is checked in bounded memory.
 */
export class ArchiveDigest {
  private readonly hash: Hash = createHash('sha256');
  private tail: Buffer = Buffer.alloc(0);
  private hex?: string;
  bytes = 0;

  update(chunk: Buffer): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    // A copy, so the tail does not pin a whole 1 MiB read buffer.
    this.tail = Buffer.from(chunk.length >= TRAILER ? chunk.subarray(chunk.length - TRAILER) : Buffer.concat([this.tail, chunk]).subarray(-TRAILER));
  }

  get sha256(): string {
    this.hex ??= this.hash.digest('hex');
    return this.hex;
  }

  /**
   * A complete tar ends with two zero blocks (possibly more, as record padding). Not proof of
   * completeness, but a tar cut off at a block boundary lacks it even when the cut copy was
   * hashed into the manifest.
   */
  get endsLikeTar(): boolean {
    return this.bytes >= TRAILER && this.bytes % BLOCK === 0 && this.tail.length === TRAILER && this.tail.every((b) => b === 0);
  }

  /** A sink that digests whatever is piped into it. */
  sink(onBytes?: (done: number) => void): Writable {
    return new Writable({
      highWaterMark: 1 << 20,
      write: (chunk: Buffer, _enc, cb) => {
        this.update(chunk);
        onBytes?.(this.bytes);
        cb();
      },
    });
  }
}

function short(sha: string): string {
  return `${sha.slice(0, 12)}…`;
}

/**
 * Whether the archive is a tar that must end with the end-of-archive blocks: an Incus export of
 * an instance or volume. A config backup is JSON, and an image is stored as Incus exports it
 * (often compressed, or a multipart body for split images).
 */
function endsWithTarBlocks(m: Manifest): boolean {
  return m.type === 'instance' || m.type === 'volume';
}

/** The uncompressed archive against the manifest: length, sha256, and for tars the end-of-archive blocks. */
export function tarProblems(tar: ArchiveDigest, m: Manifest, what = 'tar'): Problem[] {
  const out: Problem[] = [];
  if (tar.bytes < m.archive.size) {
    out.push({ kind: 'truncated', message: `truncated ${what}: ${tar.bytes} of ${m.archive.size} bytes` });
  } else if (tar.bytes > m.archive.size) {
    out.push({ kind: 'size', message: `size mismatch: ${what} has ${tar.bytes} bytes, manifest says ${m.archive.size}` });
  } else if (tar.sha256 !== m.archive.sha256) {
    out.push({ kind: 'checksum', message: `checksum mismatch: ${what} sha256 ${short(tar.sha256)}, manifest says ${short(m.archive.sha256)}` });
  }
  if (out.length === 0 && endsWithTarBlocks(m) && !tar.endsLikeTar) {
    out.push({ kind: 'truncated', message: `truncated tar: ${what} does not end with the tar end-of-archive blocks` });
  }
  return out;
}

/**
 * The backend-neutral check: stream the archive back through openArchive and compare it with
 * the manifest. Used with --deep for backends without their own checkEntry, and by the restic
 * backend's checkEntry.
 */
export async function streamCheck(backend: Backend, entry: BackupEntry, opts: CheckOptions): Promise<EntryCheck> {
  const tar = new ArchiveDigest();
  try {
    const src = await backend.openArchive(entry, opts.signal);
    await pipeline(src, tar.sink(opts.onBytes), ...(opts.signal ? [{ signal: opts.signal }] : []));
  } catch (e) {
    if (opts.signal?.aborted) throw e;
    return { problems: [{ kind: 'unreadable', message: `archive cannot be read: ${(e as Error).message}` }], bytesRead: tar.bytes };
  }
  return { problems: tarProblems(tar, entry.manifest), bytesRead: tar.bytes };
}

export interface VerifyOptions {
  readData: boolean;
  readDataSubset?: string;
  deep: boolean;
  parallel: number;
  /** Only the backups with this version (timestamp). */
  version?: string;
  /** The target's listing, if the caller has it already (a backend.scan(filter)). */
  scanned?: Awaited<ReturnType<Backend['scan']>>;
}

/** One verified (or unusable) backup: the same object for the table and for json/yaml. */
export interface VerifyItem {
  type?: string;
  project?: string;
  pool?: string;
  name?: string;
  timestamp?: string;
  location: string;
  /**
   * 'gone': removed by a concurrent prune while verify ran; not damage. 'unknown': nothing of
   * its own was read (restic without --deep) and the repository check found damage, so it may
   * be affected: only --deep tells.
   */
  status: 'ok' | 'damaged' | 'gone' | 'unknown';
  problems: Problem[];
  /** Stored bytes, as the manifest says (when it could be read). */
  size?: number;
  bytesChecked: number;
}

export interface VerifyReport {
  items: VerifyItem[];
  /** From a whole-repository check (restic); empty for dir targets. */
  repository: Problem[];
  bytesChecked: number;
  durationMs: number;
  counts: { ok: number; damaged: number; gone: number; unknown: number };
}

/**
 * Why a `--read-data-subset` value is not one restic takes (n/t with 1 <= n <= t, x% with
 * 0 < x <= 100, or a size above zero such as 5G), or undefined when it is: checked before
 * restic runs, so that bad input is a usage error (exit 2), not "damage" found by the check.
 */
export function readDataSubsetProblem(v: string): string | undefined {
  const nt = /^(\d+)\/(\d+)$/.exec(v);
  if (nt) return Number(nt[1]) >= 1 && Number(nt[1]) <= Number(nt[2]) ? undefined : 'n/t needs 1 <= n <= t';
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(v);
  if (pct) return Number(pct[1]) > 0 && Number(pct[1]) <= 100 ? undefined : 'x% needs 0 < x <= 100';
  const size = /^(\d+)[KMGT]?$/i.exec(v);
  if (size) return Number(size[1]) > 0 ? undefined : 'a size must be above zero';
  return 'it is not n/t, x% or a size';
}

function itemLabel(k: Partial<ResourceKey> & { timestamp?: string }): string {
  const where = [k.project, k.pool, k.name].filter(Boolean).join('/');
  return `${k.type ?? 'backup'} ${where}${k.timestamp ? ` ${k.timestamp}` : ''}`;
}

/**
 * Verifies every backup the filter selects. Unusable ones (bad manifest, missing archive) come
 * from the backend's scan; the others are re-read by the backend's own checkEntry (dir: always
 * all data), or streamed back when --deep is given, or left to the repository check.
 */
export async function verifyBackups(backend: Backend, filter: ListFilter, opts: VerifyOptions, ui: Ui, signal: AbortSignal): Promise<VerifyReport> {
  const started = Date.now();
  const check: CheckOptions = { readData: opts.readData, deep: opts.deep, signal, ...(opts.readDataSubset ? { readDataSubset: opts.readDataSubset } : {}) };
  const repository: Problem[] = [];
  let bytesChecked = 0;
  // The listing and the repository check at once (restic: a listing takes no lock, so it does
  // not wait for the check's exclusive one, and the two key derivations overlap).
  const version = opts.version;
  const scanned = (opts.scanned ? Promise.resolve(opts.scanned) : backend.scan(filter)).then(({ entries, broken }) =>
    version === undefined ? { entries, broken } : { entries: entries.filter((e) => e.manifest.timestamp === version), broken: broken.filter((b) => b.key.timestamp === version) },
  );
  if (backend.check) {
    const task = ui.task(`repository ${backend.uri}`);
    const [r] = await Promise.all([backend.check(check), scanned]);
    repository.push(...r.problems);
    bytesChecked += r.bytesRead ?? 0;
    task.end(r.problems.length === 0, r.problems[0]?.message);
  }
  const { entries, broken } = await scanned;

  const items: VerifyItem[] = broken.map((b) => ({
    ...(b.key as Partial<ResourceKey>),
    ...(b.key.timestamp ? { timestamp: b.key.timestamp } : {}),
    location: b.location,
    status: 'damaged',
    problems: [{ kind: b.kind ?? 'manifest', message: b.problem }],
    bytesChecked: 0,
  }));
  for (const b of broken) ui.warn(`${itemLabel(b.key)}: ${b.problem}`);

  const settled = await mapPool(entries, opts.parallel, async (entry, i): Promise<EntryCheck> => {
    // With --deep, the backup checked when this one (or another running one) ends starts
    // reading now: with restic that is ~0.7 s of key derivation and lock wait for its archive
    // and its manifest, which then overlaps this one's stream instead of following it.
    const next = opts.deep ? entries[i + opts.parallel] : undefined;
    if (next) backend.prefetch?.(next, signal, { manifest: true });
    const m = entry.manifest;
    const task = ui.task(itemLabel(m));
    const onBytes = (n: number) => task.bytes(n, m.archive.storedSize);
    let r: EntryCheck;
    try {
      if (backend.checkEntry) r = await backend.checkEntry(entry, { ...check, onBytes });
      else if (opts.deep) r = await streamCheck(backend, entry, { ...check, onBytes: (n) => task.bytes(n, m.archive.size) });
      else r = { problems: [], bytesRead: 0 };
    } catch (e) {
      if (signal.aborted) {
        task.end(false);
        throw new InterruptedError('interrupted while verifying');
      }
      r = { problems: [{ kind: 'unreadable', message: `cannot be read: ${(e as Error).message}` }], bytesRead: 0 };
    }
    if (r.gone) task.end(true, 'removed meanwhile');
    else task.end(r.problems.length === 0, r.problems.map((p) => p.message).join('; ') || undefined);
    return r;
  }, signal);
  const interrupted = settled.find((s) => s.status === 'rejected');
  if (interrupted) throw (interrupted as PromiseRejectedResult).reason;

  settled.forEach((s, i) => {
    const r = (s as PromiseFulfilledResult<EntryCheck>).value;
    const m = entries[i]!.manifest;
    bytesChecked += r.bytesRead;
    items.push({
      type: m.type,
      project: m.project,
      ...(m.pool ? { pool: m.pool } : {}),
      name: m.name,
      timestamp: m.timestamp,
      location: entries[i]!.location,
      // Nothing of its own read (restic without --deep) while the repository is damaged: unknown.
      status: r.gone ? 'gone' : r.problems.length ? 'damaged' : repository.length && r.bytesRead === 0 ? 'unknown' : 'ok',
      problems: r.problems,
      size: m.archive.storedSize,
      bytesChecked: r.bytesRead,
    });
  });
  items.sort(
    (a, b) =>
      (a.type ?? '').localeCompare(b.type ?? '') ||
      (a.project ?? '').localeCompare(b.project ?? '') ||
      (a.pool ?? '').localeCompare(b.pool ?? '') ||
      (a.name ?? '').localeCompare(b.name ?? '') ||
      (a.timestamp && b.timestamp ? compareTimestamps(a.timestamp, b.timestamp) : 0) ||
      a.location.localeCompare(b.location),
  );
  if (repository.length) {
    items.unshift({ type: 'repository', location: backend.uri, status: 'damaged', problems: repository, bytesChecked: 0 });
  }
  // The counts are of backups; the repository's own row is reported apart.
  const count = (s: VerifyItem['status']) => items.filter((i) => i.status === s && i.type !== 'repository').length;
  return {
    items,
    repository,
    bytesChecked,
    durationMs: Date.now() - started,
    counts: { ok: count('ok'), damaged: count('damaged'), gone: count('gone'), unknown: count('unknown') },
  };
}

/** Whether the report found anything wrong (exit 3). */
export function verifyFailed(r: VerifyReport): boolean {
  return r.counts.damaged > 0 || r.repository.length > 0;
}
