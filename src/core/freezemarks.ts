import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncusApi } from '../incus/api.js';
import type { Instance } from '../incus/types.js';
import { IncusError } from '../incus/errors.js';
import { pidAlive } from './fsutil.js';

/**
 * Instances a run has frozen, written down on this host before it freezes them: a run killed
 * outright (kill -9, OOM killer) while they are frozen cannot thaw them, and a frozen instance
 * stays so until someone notices (its workload stopped, the nightly run "ok"). The next run
 * that sweeps their project thaws those that are still frozen (thawAbandoned). One file per
 * freeze, removed once thawed; in /run (or the user's runtime directory), which a reboot empties
 * as it thaws everything.
 */
interface FreezeMark {
  pid: number;
  project: string;
  /** Each with its volatile.uuid: a mark is only ever applied to the very instance it names (not to one of another daemon, or made since under the same name). */
  instances: { name: string; uuid: string }[];
  at: string;
}

function marksDir(): string {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/incus-backup/frozen';
  return join(process.env.XDG_RUNTIME_DIR || tmpdir(), `incus-backup-${uid}`, 'frozen');
}

/** Writes down that this run freezes `instances` of `project`; returns what removes the mark. */
export function markFrozen(project: string, instances: Instance[]): () => void {
  const dir = marksDir();
  const file = join(dir, `${process.pid}-${randomBytes(4).toString('hex')}.json`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const mark: FreezeMark = { pid: process.pid, project, instances: instances.map((i) => ({ name: i.name, uuid: i.config['volatile.uuid'] ?? '' })), at: new Date().toISOString() };
    writeFileSync(file, JSON.stringify(mark), { mode: 0o600 });
  } catch {
    // Without a place to write it down the freeze still happens (and is thawed in-process).
    return () => undefined;
  }
  return () => {
    try {
      unlinkSync(file);
    } catch {
      // already gone
    }
  };
}

/** The marks of other runs of this host: each with its file, those of runs still alive or not. */
function otherRunsMarks(): { file: string; mark: FreezeMark; alive: boolean }[] {
  const dir = marksDir();
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return [];
  }
  const out: { file: string; mark: FreezeMark; alive: boolean }[] = [];
  for (const f of files) {
    try {
      const mark = JSON.parse(readFileSync(join(dir, f), 'utf8')) as FreezeMark;
      if (mark.pid !== process.pid) out.push({ file: join(dir, f), mark, alive: pidAlive(mark.pid) });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return out;
}

/** Thaws what runs killed while they had instances of `project` frozen left frozen, and says so. */
export async function thawAbandoned(api: IncusApi, project: string, warn: (msg: string) => void): Promise<void> {
  for (const { file, mark, alive } of otherRunsMarks()) {
    if (mark.project !== project || alive) continue;
    // The marks of another daemon's run stay for that daemon's next run.
    let ofThisDaemon = false;
    for (const { name, uuid } of mark.instances) {
      const inst = await api.getInstance(project, name).catch((e: unknown) => {
        if (e instanceof IncusError && e.notFound) return undefined;
        throw e;
      });
      if (!inst || !uuid || inst.config['volatile.uuid'] !== uuid) continue;
      ofThisDaemon = true;
      if (inst.status !== 'Frozen') continue;
      await api.setInstanceState(project, name, 'unfreeze');
      warn(`instance ${project}/${name}: thawed; a backup run (pid ${mark.pid}, ${mark.at}) froze it and was killed before it could thaw it`);
    }
    if (!ofThisDaemon) continue;
    try {
      unlinkSync(file);
    } catch {
      // another run took it
    }
  }
}

/**
 * The pid of another live run that has frozen (or is about to freeze) instance `name` of
 * `project`, if any: that run holds the instance right now, before its snapshot shows it.
 */
export function liveFreezer(project: string, name: string): number | undefined {
  return otherRunsMarks().find(({ mark, alive }) => alive && mark.project === project && mark.instances.some((i) => i.name === name))?.mark.pid;
}
