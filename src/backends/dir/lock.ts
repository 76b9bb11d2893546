import { randomBytes } from 'node:crypto';
import { promises as fs, readFileSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { FILE_MODE, pidAlive } from '../../core/fsutil.js';
import { sleep } from '../../core/pool.js';
import { IbError, InterruptedError, UsageError } from '../../errors.js';

/**
 * One writer at a time per directory target. The lock is `<root>/.lock`, a small JSON file
 * naming its holder. It is written under a temporary name and hard-linked into place: link(2)
 * fails with EEXIST when the lock exists, like O_EXCL, but the file never appears empty or
 * half-written to a second writer reading it.
 *
 * Readers (list, verify, restore) never take it: every write to the tree is already a rename
 * of a complete directory or file, so readers cannot see half-written state anyway. The lock
 * only keeps two writers from deciding on the same state (prune planning while a backup adds
 * a version, two protects rewriting one manifest).
 */
export const LOCK_FILE = '.lock';
const TAKEOVER_FILE = '.lock.takeover';

export interface LockHolder {
  host: string;
  pid: number;
  /** ISO time the holder took the lock. */
  startedAt: string;
  /** What the holder is doing: backup, prune, protect... */
  command: string;
  /** Random per acquisition, so a holder only ever removes its own lock. */
  token: string;
}

export interface LockOptions {
  /** What this run is doing, shown to a run that finds the lock taken. */
  purpose: string;
  /** How long to wait for a held lock; 0 fails at once. */
  waitMs: number;
  signal?: AbortSignal;
  /** Taking over a stale lock, waiting for a held one. */
  onNotice?: (msg: string) => void;
  /** Between attempts while waiting; tests shorten it. */
  pollMs?: number;
}

export type ReleaseLock = () => Promise<void>;

/** Failing to get the lock is the environment's state, not a bug: exit 1 with a hint. */
export class LockedError extends IbError {
  constructor(
    readonly holder: LockHolder | undefined,
    readonly path: string,
    waitedMs: number,
  ) {
    super(
      `target is locked by ${describeHolder(holder)}${waitedMs > 0 ? ` (waited ${Math.round(waitedMs / 1000)} s)` : ''}`,
      1,
      `wait for that run to finish or pass --lock-wait (e.g. --lock-wait 10m); if no such process runs any more, remove ${path}`,
    );
    this.name = 'LockedError';
  }
}

export function describeHolder(h: LockHolder | undefined): string {
  if (!h) return 'an unknown holder (unreadable lock file)';
  return `${h.command} (pid ${h.pid} on host ${h.host}, since ${h.startedAt})`;
}

/** Reads the lock file; undefined when it is absent, `null` when it exists but is not ours to parse. */
export async function readLock(path: string): Promise<LockHolder | null | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const v = JSON.parse(text) as Partial<LockHolder>;
    if (typeof v.host === 'string' && Number.isInteger(v.pid) && typeof v.token === 'string') {
      return { host: v.host, pid: v.pid!, startedAt: String(v.startedAt ?? '?'), command: String(v.command ?? '?'), token: v.token };
    }
  } catch {
    // fall through: someone else's or damaged file
  }
  return null;
}

/** A lock of a process that no longer exists. Only decidable for this host's processes. */
function isStale(h: LockHolder): boolean {
  return h.host === hostname() && h.pid !== process.pid && !pidAlive(h.pid);
}

/** Puts `content` at `path` only if nothing is there; false when something is. */
async function createExclusive(dir: string, path: string, content: string): Promise<boolean> {
  const tmp = join(dir, `.lock.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, 'wx', FILE_MODE);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.link(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

/**
 * Removes a stale lock without ever removing a live one. Two runs may judge the same lock
 * stale; a plain unlink by the slower one could delete the lock the faster one has just taken.
 * So takeovers go through a second exclusive file, and the lock is re-read under it: it is
 * only removed if it is still the one judged stale (same token).
 */
async function removeStale(root: string, stale: LockHolder, onNotice?: (msg: string) => void): Promise<boolean> {
  const takeover = join(root, TAKEOVER_FILE);
  const me: LockHolder = { host: hostname(), pid: process.pid, startedAt: new Date().toISOString(), command: 'lock takeover', token: randomBytes(8).toString('hex') };
  if (!(await createExclusive(root, takeover, JSON.stringify(me)))) {
    // Another run is taking over right now; or one died doing so (a double crash): clear that.
    const other = await readLock(takeover);
    if (other && isStale(other)) await fs.rm(takeover, { force: true });
    return false;
  }
  try {
    const now = await readLock(join(root, LOCK_FILE));
    if (now && now.token === stale.token) {
      await fs.rm(join(root, LOCK_FILE), { force: true });
      onNotice?.(`took over a stale lock of ${describeHolder(stale)}: that process no longer runs`);
    }
    return true;
  } finally {
    await fs.rm(takeover, { force: true });
  }
}

/** Locks held by this process, released on exit even if the run never reaches its finally. */
const held = new Map<string, string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [path, token] of held) {
      try {
        if (readFileSync(path, 'utf8').includes(`"${token}"`)) unlinkSync(path);
      } catch {
        // already gone
      }
    }
  });
}

/**
 * Takes the writer lock of the directory target at `root` (which must exist). Waits up to
 * `waitMs` for a held lock, takes over a stale one (dead pid on this host) with a notice, and
 * otherwise fails with a {@link LockedError} naming the holder. Returns the release function;
 * releasing twice is harmless.
 */
export async function acquireLock(root: string, opts: LockOptions): Promise<ReleaseLock> {
  const path = join(root, LOCK_FILE);
  const me: LockHolder = {
    host: hostname(),
    pid: process.pid,
    startedAt: new Date().toISOString(),
    command: opts.purpose,
    token: randomBytes(8).toString('hex'),
  };
  const started = Date.now();
  let pollMs = opts.pollMs ?? 250;
  let announced = false;
  let busyTakeovers = 0;
  for (;;) {
    if (opts.signal?.aborted) throw new InterruptedError(announced ? 'interrupted while waiting for the target lock' : 'interrupted before the run started; nothing was changed');
    if (await createExclusive(root, path, JSON.stringify(me, null, 2) + '\n')) break;
    const holder = await readLock(path);
    if (holder === undefined) continue; // released between our attempt and the read
    if (holder && isStale(holder)) {
      if (await removeStale(root, holder, opts.onNotice)) continue;
      // Someone else is clearing it; give them a moment, but never spin forever.
      if (++busyTakeovers > 100) throw new LockedError(holder, path, Date.now() - started);
      await sleep(20, opts.signal);
      continue;
    }
    const waited = Date.now() - started;
    if (waited >= opts.waitMs) throw new LockedError(holder ?? undefined, path, waited);
    if (!announced) {
      announced = true;
      opts.onNotice?.(`waiting up to ${Math.round(opts.waitMs / 1000)} s for the lock held by ${describeHolder(holder ?? undefined)}`);
    }
    await sleep(Math.min(pollMs, opts.waitMs - waited), opts.signal);
    pollMs = Math.min(pollMs * 2, 2000);
  }
  held.set(path, me.token);
  installExitHook();
  return async () => {
    if (held.get(path) !== me.token) return;
    held.delete(path);
    const now = await readLock(path);
    // Only our own lock: if it was (wrongly) taken over, the new holder's lock stays.
    if (now && now.token === me.token) await fs.rm(path, { force: true });
  };
}

const WAIT_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses --lock-wait: "0", "30s", "10m", "1h30m", "500ms" (Go-style units, as restic's
 * --retry-lock; here "m" is minutes, unlike retention durations where it is months).
 * A bare number other than 0 is rejected: seconds or minutes would both be plausible.
 */
export function parseLockWait(s: string): number {
  const src = s.trim();
  if (src === '0') return 0;
  if (src === '') throw new UsageError('--lock-wait is empty', 'e.g. --lock-wait 30s, 10m or 1h');
  const part = /(\d+)(ms|s|m|h)/y;
  const seen = new Set<string>();
  let total = 0;
  while (part.lastIndex < src.length) {
    const m = part.exec(src);
    if (!m) throw new UsageError(`--lock-wait "${s}" is not a duration`, 'use <number><unit> pairs with units h, m, s, ms, e.g. 30s, 10m, 1h30m (0 = do not wait)');
    const unit = m[2]!;
    if (seen.has(unit)) throw new UsageError(`--lock-wait "${s}" gives unit "${unit}" twice`, 'e.g. 1h30m');
    seen.add(unit);
    total += Number(m[1]) * WAIT_UNITS[unit]!;
  }
  if (!Number.isSafeInteger(total)) throw new UsageError(`--lock-wait "${s}" is too large`, 'e.g. 24h');
  return total;
}
