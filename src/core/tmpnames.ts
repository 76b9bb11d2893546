import { randomBytes } from 'node:crypto';
import { pidAlive } from './fsutil.js';

/**
 * Temporary snapshots, copies and server-side backups are named ibtmp-<pid>-<random>, so a
 * later run can recognise those of a run that was killed outright (its pid is gone) and
 * remove them, while never touching those of a run still in progress.
 */
const TMP = /^ibtmp-(\d+)-[a-z0-9]+$/;

export function tmpName(): string {
  return `ibtmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

export function isStaleTmpName(name: string): boolean {
  const m = TMP.exec(name);
  return !!m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
}

export function isTmpName(name: string): boolean {
  return TMP.test(name);
}

/** The pid of another run that is still alive, when `name` is one of its temporary names. */
export function liveOtherRun(name: string): number | undefined {
  const m = TMP.exec(name);
  if (!m) return undefined;
  const pid = Number(m[1]);
  return pid !== process.pid && pidAlive(pid) ? pid : undefined;
}
