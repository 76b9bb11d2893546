import { hostname } from 'node:os';
import type { IncusApi } from '../incus/api.js';
import { IncusError } from '../incus/errors.js';
import type { Instance, StorageVolume } from '../incus/types.js';
import { pidAlive } from './fsutil.js';

/**
 * What a replace changes before the restored resource takes the original's place, written on
 * the original (a `user.` key) before the first change: which instances it stops (and whether
 * they were frozen or ephemeral), an instance's network devices and MAC addresses before they
 * are masked, and the disk devices that attach a volume before they are detached. A run that
 * is killed outright (kill -9, power loss) in the middle of the swap held all of that only in
 * memory; with the journal the next run that sweeps the project puts the original back as it
 * was (putBackKilledReplaces). The key goes with the original when the swap succeeds (the
 * original is deleted) and is removed when the swap is undone.
 */
export const JOURNAL_KEY = 'user.incus-backup.replacing';

export interface StoppedInstance {
  name: string;
  frozen: boolean;
  ephemeral: boolean;
}

export interface DetachedDisk {
  instance: string;
  device: string;
  config: Record<string, string>;
}

export interface ReplaceJournal {
  pid: number;
  host: string;
  /** When the swap began (ISO). */
  at: string;
  /** The original's name, which it goes back to. */
  name: string;
  stopped: StoppedInstance[];
  /** An instance: its own devices, its NICs' MAC addresses and its cloud-init instance-id, as they were. */
  nics?: { devices: Record<string, Record<string, string>>; volatile: Record<string, string> };
  /** A volume: the disk devices that attach it, as they were. */
  detached?: DetachedDisk[];
}

export function encodeJournal(j: ReplaceJournal): string {
  return JSON.stringify(j);
}

/** The journal in a config, if it holds a well-formed one. */
export function journalOf(config: Record<string, string> | undefined): ReplaceJournal | undefined {
  const raw = config?.[JOURNAL_KEY];
  if (!raw) return undefined;
  try {
    const j = JSON.parse(raw) as Partial<ReplaceJournal>;
    if (typeof j.pid !== 'number' || typeof j.host !== 'string' || typeof j.name !== 'string' || !Array.isArray(j.stopped)) return undefined;
    return j as ReplaceJournal;
  } catch {
    return undefined;
  }
}

/** A journal of a run that is surely over: of this host, and its process is gone. */
export function isAbandoned(j: ReplaceJournal): boolean {
  return j.host === hostname() && j.pid !== process.pid && !pidAlive(j.pid);
}

export function newJournal(name: string, stopped: StoppedInstance[], extra: Pick<ReplaceJournal, 'nics' | 'detached'>): ReplaceJournal {
  return { pid: process.pid, host: hostname(), at: new Date().toISOString(), name, stopped, ...extra };
}

/** The config without the journal. */
export function withoutJournal(config: Record<string, string>): Record<string, string> {
  const { [JOURNAL_KEY]: _, ...rest } = config;
  return rest;
}

/** The disk devices of instances in `project` that attach custom volume `pool/name`. */
export function disksAttaching(instances: Instance[], pool: string, name: string): DetachedDisk[] {
  return instances.flatMap((inst) =>
    Object.entries(inst.devices ?? {})
      .filter(([, d]) => d.type === 'disk' && d.pool === pool && d.source === name)
      .map(([device, config]) => ({ instance: inst.name, device, config })),
  );
}

type Warn = (msg: string) => void;

/**
 * Puts back what replaces killed outright left in `project` (see JOURNAL_KEY): the original
 * under its name, its network devices and MAC addresses, the disks that attach a volume, and
 * the instances that ran, running again. When the restored copy already holds the name, which
 * of the two to keep is the admin's call: said, with the commands for either.
 */
export async function putBackKilledReplaces(api: IncusApi, project: string, warn: Warn, instances?: Instance[], volumes?: StorageVolume[]): Promise<void> {
  const insts = instances ?? (await api.listInstances(project));
  for (const inst of insts) {
    const j = journalOf(inst.config);
    if (!j) continue;
    if (isAbandoned(j)) await putBackInstance(api, project, inst, j, insts, warn);
    else if (j.host !== hostname()) warn(`instance ${project}/${inst.name} is being replaced by incus-backup on ${j.host} (pid ${j.pid}, since ${j.at}); if that run is gone, run incus-backup there to put the original back`);
  }
  for (const vol of volumes ?? (await api.listVolumes(project))) {
    const j = journalOf(vol.config);
    if (!j) continue;
    if (isAbandoned(j)) await putBackVolume(api, project, vol, j, warn);
    else if (j.host !== hostname()) warn(`volume ${project}/${vol.pool}/${vol.name} is being replaced by incus-backup on ${j.host} (pid ${j.pid}, since ${j.at}); if that run is gone, run incus-backup there to put the original back`);
  }
}

async function putBackInstance(api: IncusApi, project: string, inst: Instance, j: ReplaceJournal, all: Instance[], warn: Warn): Promise<void> {
  const where = `--project ${project}`;
  if (inst.name !== j.name && all.some((i) => i.name === j.name)) {
    warn(
      `instance ${project}/${j.name}: a restore --replace was killed after the restored copy took its name; the original is kept, stopped, as ${inst.name}. ` +
        `To keep the restored one: \`incus delete ${inst.name} ${where}\`; to go back to the original: \`incus delete -f ${j.name} ${where}\`, and the next incus-backup run puts it back`,
    );
    return;
  }
  // A killed replace leaves the original stopped while set aside: one that runs there was started
  // by someone since, and is left to them.
  if (inst.status !== 'Stopped' && inst.name !== j.name) {
    warn(`instance ${project}/${inst.name} is the original of ${j.name}, set aside by a restore --replace that was killed, and runs: stop it, and the next incus-backup run puts it back`);
    return;
  }
  // Its devices first, then its name, then its MAC addresses (Incus drops a masked NIC's) and
  // cloud-init instance-id (a rename changes it).
  await api.updateInstance(project, inst.name, (i) => ({ ...i, devices: j.nics?.devices ?? i.devices }));
  if (inst.name !== j.name) await api.renameInstance(project, inst.name, j.name);
  if (j.nics && Object.keys(j.nics.volatile).length) await api.patchInstanceConfig(project, j.name, j.nics.volatile);
  const restarted = await restartStopped(api, project, j.stopped, warn);
  await api.updateInstance(project, j.name, (i) => ({ ...i, config: withoutJournal(i.config) }));
  warn(`instance ${project}/${j.name}: put back as it was before a restore --replace that was killed (pid ${j.pid}, ${j.at})${restarted.length ? `; started again: ${restarted.join(', ')}` : ''}`);
}

async function putBackVolume(api: IncusApi, project: string, vol: StorageVolume, j: ReplaceJournal, warn: Warn): Promise<void> {
  const pool = vol.pool!;
  const label = `volume ${project}/${pool}/${j.name}`;
  const where = `--project ${project}`;
  if (vol.name !== j.name) {
    const taken = await api.getVolume(project, pool, j.name).then(
      () => true,
      (e: unknown) => {
        if (e instanceof IncusError && e.notFound) return false;
        throw e;
      },
    );
    if (taken) {
      warn(
        `${label}: a restore --replace was killed after the restored copy took its name; the original is kept as ${vol.name}, and ${(j.detached ?? []).map((d) => d.instance).join(', ') || 'no instance'} may be left without it. ` +
          `To keep the restored one: \`incus storage volume delete ${pool} ${vol.name} ${where}\`; to go back to the original: detach and delete ${j.name} (\`incus storage volume delete ${pool} ${j.name} ${where}\`), and the next incus-backup run puts it back`,
      );
      return;
    }
    await api.renameVolume(project, pool, vol.name, j.name);
  }
  const current = await api.listInstances(project);
  for (const d of j.detached ?? []) {
    const inst = current.find((i) => i.name === d.instance);
    if (!inst || inst.devices?.[d.device]) continue;
    await api.updateInstance(project, d.instance, (i) => ({ ...i, devices: { ...i.devices, [d.device]: d.config } }));
  }
  const restarted = await restartStopped(api, project, j.stopped, warn);
  await api.updateVolume(project, pool, j.name, (v) => ({ ...v, config: withoutJournal(v.config) }));
  warn(`${label}: put back as it was before a restore --replace that was killed (pid ${j.pid}, ${j.at})${restarted.length ? `; started again: ${restarted.join(', ')}` : ''}`);
}

/** Starts again what the killed swap stopped (frozen and ephemeral again where they were); names those started. */
async function restartStopped(api: IncusApi, project: string, stopped: StoppedInstance[], warn: Warn): Promise<string[]> {
  const started: string[] = [];
  for (const s of stopped) {
    try {
      const inst = await api.getInstance(project, s.name);
      if (inst.status === 'Stopped') {
        await api.setInstanceState(project, s.name, 'start');
        started.push(s.name);
      }
      if (s.frozen) await api.setInstanceState(project, s.name, 'freeze');
      if (s.ephemeral && !inst.ephemeral) await api.updateInstance(project, s.name, (i) => ({ ...i, ephemeral: true }));
    } catch (e) {
      warn(`instance ${project}/${s.name} ran before a killed restore --replace stopped it, and could not be started again (${(e as Error).message}); \`incus start ${s.name} --project ${project}\``);
    }
  }
  return started;
}
