import { statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ExitCode, IbError } from '../errors.js';
import { humanBytes } from '../output/format.js';

/**
 * Incus's backups directory, where the server stages every backup as a whole file.
 *
 * Incus 6.0 (and later, as of 7.3) never ends a backup without compression whose file it cannot
 * write: the copy into the file stops with ENOSPC, and the goroutine writing the archive into it
 * blocks on a pipe nobody reads. The operation stays "Backing up instance" until incusd restarts,
 * and keeps the partial file open, so deleting the backup does not give its space back. The run
 * would wait forever. So while Incus stages a backup the run watches the free space there, and
 * refuses to start one when it is already (nearly) full.
 */

/**
 * Below this many free bytes the directory counts as full: ext4 refuses writes, root's included,
 * with up to 16 MiB still counted free (its reserved clusters).
 */
export const STAGING_FULL_BELOW = 32 * 1024 * 1024;
/** Staging counts as stuck once the free space stayed below the mark, without progress, this long. */
export const STUCK_AFTER_MS = 10_000;
const POLL_MS = 1000;

/** `backups` beside the socket: INCUS_DIR's layout (/var/lib/incus/unix.socket, …/backups). */
export function stagingDir(socketPath: string): string {
  return join(dirname(socketPath), 'backups');
}

/** Free bytes (root's view: incusd runs as root) of the file system holding `dir`, if it can be read. */
export async function freeBytes(dir: string): Promise<number | undefined> {
  try {
    const s = await statfs(dir);
    return s.bfree * s.bsize;
  } catch {
    // Another layout, another host's socket, no permission: nothing to watch.
    return undefined;
  }
}

/** Less than this drop of the free space is other programs' noise (logs), not staging. */
export const PROGRESS_BYTES = 1024 * 1024;

/**
 * Decides from successive samples of the free space whether staging is stuck: below the mark,
 * and for `after` ms no new low by at least PROGRESS_BYTES. A backup being written takes
 * megabytes a second; the rest of a busy host only moves the free space back and forth.
 */
export class StuckStaging {
  private since: number | undefined;
  private low: number | undefined;

  constructor(
    private readonly below = STAGING_FULL_BELOW,
    private readonly after = STUCK_AFTER_MS,
  ) {}

  sample(free: number | undefined, now: number): boolean {
    if (free === undefined || free >= this.below) {
      this.since = this.low = undefined;
      return false;
    }
    if (this.low === undefined || free <= this.low - PROGRESS_BYTES) {
      this.low = free;
      this.since = now;
      return false;
    }
    return now - this.since! >= this.after;
  }
}

const FIX =
  'free space there, or give Incus a bigger place (`incus config set storage.backups_volume POOL/VOLUME`)';
const RESTART =
  'restart incusd (`systemctl restart incus`; running instances keep running) to end the stuck backup and release its file';

/** The directory was (nearly) full before the backup started: nothing was asked of Incus. */
export function stagingFullBefore(dir: string, free: number): IbError {
  return new IbError(
    `Incus's backups directory ${dir} has only ${humanBytes(free)} free: Incus 6.0 never finishes a backup it cannot write there`,
    ExitCode.failed,
    `${FIX}; if an earlier backup filled it, ${RESTART}`,
  );
}

/** Staging filled the directory and stopped: Incus will not end the operation by itself. */
export function stagingFullDuring(dir: string, free: number, what: string): IbError {
  return new IbError(
    `Incus's backups directory ${dir} filled up (${humanBytes(free)} free) while staging ${what}, and Incus 6.0 never finishes a backup it cannot write`,
    ExitCode.failed,
    `${FIX}, then ${RESTART}; nothing half-done was kept`,
  );
}

/**
 * Polls the free space of `dir` once a second until stopped; calls `onStuck` once with the free
 * bytes when staging looks stuck. The timer does not keep the process alive.
 */
function watchStaging(dir: string, onStuck: (free: number) => void, detector = new StuckStaging()): () => void {
  let stopped = false;
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void freeBytes(dir).then((free) => {
      busy = false;
      if (stopped || !detector.sample(free, Date.now())) return;
      stop();
      onStuck(free!);
    });
  }, POLL_MS);
  timer.unref();
  const stop = (): void => {
    stopped = true;
    clearInterval(timer);
  };
  return stop;
}

/** Throws stagingFullBefore when `dir` is (nearly) full: a backup staged there would hang. */
export async function refuseFullStaging(dir: string): Promise<void> {
  const free = await freeBytes(dir);
  if (free !== undefined && free < STAGING_FULL_BELOW) throw stagingFullBefore(dir, free);
}

/**
 * Runs `stage` (asking Incus for a backup and waiting for it) with a signal that also fires when
 * staging in `dir` gets stuck, which then fails as stagingFullDuring; refuses at once (nothing
 * asked of Incus) when `dir` is already nearly full.
 */
export async function watchingStaging<T>(dir: string, what: string, signal: AbortSignal | undefined, stage: (signal: AbortSignal) => Promise<T>): Promise<T> {
  await refuseFullStaging(dir);
  const stuck = new AbortController();
  let freeWhenStuck = 0;
  const stop = watchStaging(dir, (bytes) => {
    freeWhenStuck = bytes;
    stuck.abort();
  });
  try {
    return await stage(signal ? AbortSignal.any([signal, stuck.signal]) : stuck.signal);
  } catch (e) {
    if (stuck.signal.aborted && !signal?.aborted) throw stagingFullDuring(dir, freeWhenStuck, what);
    throw e;
  } finally {
    stop();
  }
}
