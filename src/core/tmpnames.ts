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

/** The pid of the run that made `name` after `pattern` (not this one); undefined for other names. */
function otherRunPid(name: string, pattern = TMP): number | undefined {
  const m = pattern.exec(name);
  const pid = m ? Number(m[1]) : undefined;
  return pid === process.pid ? undefined : pid;
}

export function isStaleTmpName(name: string): boolean {
  const pid = otherRunPid(name);
  return pid !== undefined && !pidAlive(pid);
}

export function isTmpName(name: string): boolean {
  return TMP.test(name);
}

/** The pid of another run that is still alive, when `name` is one of its temporary names. */
export function liveOtherRun(name: string): number | undefined {
  const pid = otherRunPid(name);
  return pid !== undefined && pidAlive(pid) ? pid : undefined;
}

/**
 * The name a replace gives the current resource while the restored one takes its name:
 * ibold-<pid>-<random>. Only a run killed outright in the middle of that swap leaves one behind.
 */
const ASIDE = /^ibold-(\d+)-[a-z0-9]+$/;

export function asideName(): string {
  return `ibold-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** Whether `name` is what a replace set aside (ibold-…), in any run: never a resource to back up. */
export function isAsideName(name: string): boolean {
  return ASIDE.test(name);
}

/** Whether `name` is what a replace set aside, in a run that is gone. */
export function isStaleAsideName(name: string): boolean {
  const pid = otherRunPid(name, ASIDE);
  return pid !== undefined && !pidAlive(pid);
}
