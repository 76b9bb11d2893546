import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, cliSpawn, incus, incusJson, instanceNames, launch, parseJson, sendCountingProxy, sh, slowAnswerProxy, snapshotNames, spawnHeld, state, tempTarget, testProject } from './helpers.js';

// What a restore gives back, compared with what was backed up: the default (point-in-time) mode
// exports a temporary copy, and what the copy does not carry of its source must not be lost.

let project: { name: string; dispose: () => Promise<void> };
let target: ReturnType<typeof tempTarget>;
let P: string;

interface InstanceInfo {
  description: string;
  created_at: string;
  profiles: string[];
  config: Record<string, string>;
}
interface VolumeInfo {
  description: string;
  config: Record<string, string>;
}
const instance = (name: string) => incusJson<InstanceInfo>(`/1.0/instances/${name}`, P);
const volume = (name: string) => incusJson<VolumeInfo>(`/1.0/storage-pools/default/volumes/custom/${name}`, P);
const run = (...args: string[]) => cli([...args, '--project', P, '--target', target.uri]);

/** Backs `what` up in the default mode, which for a running instance or a volume is one instant. */
async function backUpAtOneInstant(...what: string[]): Promise<void> {
  const b = await run('backup', ...what, '--output', 'json');
  expect(b.exitCode, b.stderr).toBe(0);
  expect(parseJson<{ consistency: string }[]>(b.stdout)).toEqual([expect.objectContaining({ consistency: 'snapshot' })]);
}

beforeAll(async () => {
  project = await testProject('fid');
  P = project.name;
  target = tempTarget();
  await launch(P, 'app');
});

afterAll(async () => {
  await project?.dispose();
  target?.dispose();
});

describe('a point-in-time backup restores what the source was', () => {
  it('a volume: its config, description and the owners of its files as a container sees them', async () => {
    await incus('storage', 'volume', 'create', 'default', 'data', '--project', P, '--description', 'app data');
    // The schedule is kept off the temporary copy (Incus could snapshot it) and put in the archive.
    await incus('storage', 'volume', 'set', 'default', 'data', 'user.team=web', 'snapshots.expiry=2w', 'snapshots.schedule=@daily', '--project', P);
    await incus('storage', 'volume', 'attach', 'default', 'data', 'app', '/mnt/data', '--project', P);
    // Incus shifts the files of a volume a container uses; volatile.idmap.* say how.
    await sh(P, 'app', 'echo owned > /mnt/data/f; chown 42:42 /mnt/data/f; chmod 600 /mnt/data/f');

    await backUpAtOneInstant('volumes', 'default/data');
    const r = await run('restore', 'volume', 'default/data', '--target-name', 'data2', '-y');
    expect(r.exitCode, r.stderr).toBe(0);

    const restored = await volume('data2');
    expect(restored.description).toBe('app data');
    expect(restored.config).toMatchObject({ 'user.team': 'web', 'snapshots.expiry': '2w', 'snapshots.schedule': '@daily' });
    // Without its idmap keys, every owner would read 1000000 + uid inside the container.
    await incus('storage', 'volume', 'attach', 'default', 'data2', 'app', '/mnt/data2', '--project', P);
    expect(await sh(P, 'app', 'stat -c %u:%g /mnt/data2/f; cat /mnt/data2/f')).toBe('42:42\nowned');
    await incus('storage', 'volume', 'detach', 'default', 'data2', 'app', '--project', P);
  });

  it('an instance: its description and creation date; beside the original with UUIDs of its own, in place with its own', async () => {
    await launch(P, 'solo');
    await incus('query', '-X', 'PATCH', `/1.0/instances/solo?project=${P}`, '-d', '{"description":"the solo box","config":{"snapshots.schedule":"@daily"}}');
    const before = await instance('solo');
    await backUpAtOneInstant('instances', 'solo');

    const copy = await run('restore', 'instance', 'solo', '--target-name', 'solo2', '-y');
    expect(copy.exitCode, copy.stderr).toBe(0);
    const beside = await instance('solo2');
    expect(beside.description).toBe('the solo box');
    expect(beside.created_at).toBe(before.created_at);
    expect(beside.config['snapshots.schedule']).toBe('@daily');
    // A second machine, as `incus copy` makes one.
    for (const k of ['volatile.uuid', 'volatile.uuid.generation']) {
      expect(beside.config[k]).toMatch(/^[0-9a-f-]{36}$/);
      expect(beside.config[k]).not.toBe(before.config[k]);
    }
    await incus('delete', '-f', 'solo2', '--project', P);

    // In place: the same machine, and a PATCH along the way must not clear its description.
    const replaced = await run('restore', 'instance', 'solo', '--replace', '-y');
    expect(replaced.exitCode, replaced.stderr).toBe(0);
    const after = await instance('solo');
    expect(after.description).toBe('the solo box');
    expect(after.created_at).toBe(before.created_at);
    expect(after.config['volatile.uuid']).toBe(before.config['volatile.uuid']);
  });
});

describe('restore previews and maps', () => {
  it.each(['dir', 'restic'])('a replace with a --with-snapshots backup (%s) does not say it deletes the snapshots the backup brings back, which keep their expiry', async (kind) => {
    const uri = kind === 'dir' ? target.uri : `restic:${join(target.dir, 'restic-repo')}`;
    const env = { RESTIC_PASSWORD: 'fidelity-test-pw' };
    const go = (...args: string[]) => cli([...args, '--project', P, '--target', uri], env);
    for (const sn of ['kept', 'later']) await incus('snapshot', 'delete', 'solo', sn, '--project', P).catch(() => undefined);
    await incus('snapshot', 'create', 'solo', 'kept', '--project', P);
    await incus('query', '-X', 'PUT', `/1.0/instances/solo/snapshots/kept?project=${P}`, '-d', '{"expires_at":"2031-02-03T04:05:06Z"}');
    const b = await go('backup', 'instances', 'solo', '--with-snapshots');
    expect(b.exitCode, b.stderr).toBe(0);
    await incus('snapshot', 'create', 'solo', 'later', '--project', P);
    const dry = await go('restore', 'instance', 'solo', '--replace', '--dry-run', '--output', 'json');
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(parseJson(dry.stdout)).toEqual([expect.objectContaining({ action: 'replace', dropsSnapshots: ['later'] })]);
    // Incus imports snapshots without their expiry: it is given back.
    const r = await go('restore', 'instance', 'solo', '--replace', '-y');
    expect(r.exitCode, r.stderr).toBe(0);
    const snap = await incusJson<{ expires_at: string }>(`/1.0/instances/solo/snapshots/kept`, P);
    expect(new Date(snap.expires_at).toISOString()).toBe('2031-02-03T04:05:06.000Z');
  });

  it('--profile-map onto a profile the instance already has lists it once (Incus refuses duplicates after the upload)', async () => {
    // The project shares the default project's profiles: a name of its own.
    const extra = `x${P}`;
    await incus('profile', 'create', extra, '--project', P);
    await incus('launch', 'ib-busybox', 'two', '--project', P, '-p', 'default', '-p', extra);
    try {
      const b = await run('backup', 'instances', 'two');
      expect(b.exitCode, b.stderr).toBe(0);
      const r = await run('restore', 'instance', 'two', '--target-name', 'two2', '--profile-map', `${extra}=default`, '-y');
      expect(r.exitCode, r.stderr).toBe(0);
      expect((await instance('two2')).profiles).toEqual(['default']);
    } finally {
      for (const i of ['two', 'two2']) await incus('delete', '-f', i, '--project', P).catch(() => undefined);
      await incus('profile', 'delete', extra, '--project', P).catch(() => undefined);
    }
  });
});

describe('an admin at work while a run goes on', () => {
  /** Runs the CLI through a proxy that holds back Incus's answer to `request`; `during` runs while it is held. */
  async function whileHeld(request: RegExp, args: string[], during: () => Promise<void>) {
    const proxy = await slowAnswerProxy(request, 4000);
    try {
      const { child } = await spawnHeld(proxy, [...args, '--project', P, '--target', target.uri]);
      await during();
      return await child;
    } finally {
      await proxy.close();
    }
  }

  it('a replace keeps the original, under a name of its own, when it got a snapshot after the preview', async () => {
    // A NIC of its own, masked during the swap: the original kept gets it back.
    await incus('config', 'device', 'add', 'solo', 'eth9', 'nic', 'nictype=p2p', '--project', P);
    const b = await run('backup', 'instances', 'solo');
    expect(b.exitCode, b.stderr).toBe(0);
    for (const sn of await snapshotNames(P, 'solo')) await incus('snapshot', 'delete', 'solo', sn, '--project', P);
    // The import's answer is held back: the admin snapshots the original meanwhile.
    const r = await whileHeld(/^POST \/1\.0\/instances\?/, ['restore', 'instance', 'solo', '--replace', '-y'], () => incus('snapshot', 'create', 'solo', 'admin-snap', '--project', P).then(() => undefined));
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr)).toContain(`the replaced solo is kept, stopped, as solo-pre-restore: it has a snapshot taken since the preview (admin-snap), which deleting it would lose; \`incus delete solo-pre-restore --project ${P}\``);
    expect(await snapshotNames(P, 'solo-pre-restore')).toEqual(['admin-snap']);
    expect(await incus('config', 'device', 'get', 'solo-pre-restore', 'eth9', 'nictype', '--project', P)).toBe('p2p');
    expect(await incus('config', 'get', 'solo-pre-restore', 'user.incus-backup.replacing', '--project', P)).toBe('');
    expect(await state(P, 'solo')).toBe('Running');
    // Once more, that name taken: the next free one, not a temporary name that every later run
    // would call the leftover of a killed restore.
    for (const sn of await snapshotNames(P, 'solo')) await incus('snapshot', 'delete', 'solo', sn, '--project', P);
    const again = await whileHeld(/^POST \/1\.0\/instances\?/, ['restore', 'instance', 'solo', '--replace', '-y'], () => incus('snapshot', 'create', 'solo', 'admin-snap2', '--project', P).then(() => undefined));
    expect(again.exitCode, String(again.stderr)).toBe(0);
    expect(String(again.stderr)).toContain('the replaced solo is kept, stopped, as solo-pre-restore-2');
    expect(await snapshotNames(P, 'solo-pre-restore-2')).toEqual(['admin-snap2']);
    const next = await run('backup', 'instances', 'solo');
    expect(next.stderr).not.toContain('killed before putting back');
    for (const n of ['solo-pre-restore', 'solo-pre-restore-2']) await incus('delete', '-f', n, '--project', P);
    await incus('config', 'device', 'remove', 'solo', 'eth9', '--project', P);
  });

  it('a replace whose original was deleted while the archive uploaded restores it under its name all the same', async () => {
    const b = await run('backup', 'instances', 'solo');
    expect(b.exitCode, b.stderr).toBe(0);
    const r = await whileHeld(/^POST \/1\.0\/instances\?/, ['restore', 'instance', 'solo', '--replace', '-y'], () => incus('delete', '-f', 'solo', '--project', P).then(() => undefined));
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr)).toMatch(/warning: instance \S+\/solo: deleted during the restore; restored under its name all the same/);
    expect(String(r.stderr)).not.toContain('putting the original back');
    expect(await state(P, 'solo')).toBe('Running');
    expect((await instanceNames(P)).filter((n) => n.startsWith('ibtmp-') || n.startsWith('ibold-'))).toEqual([]);
  });

  it('an admin restarting the instance while it is frozen for its snapshot does not fail the backup', async () => {
    // The freeze's answer is held back (the instance is frozen), and the admin restarts it:
    // Incus then answers the thaw with "already running".
    const r = await whileHeld(/^PUT \/1\.0\/instances\/solo\/state\?/, ['backup', 'instances', 'solo'], async () => {
      const deadline = Date.now() + 20_000;
      while ((await state(P, 'solo')) !== 'Frozen' && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      await incus('restart', '-f', 'solo', '--project', P);
    });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await state(P, 'solo')).toBe('Running');
    expect(await snapshotNames(P, 'solo')).toEqual([]);
  });

  it('an instance deleted during a run over the whole project is skipped, not failed', async () => {
    await launch(P, 'victim');
    const r = await whileHeld(/^GET \/1\.0\/instances\/victim\?/, ['backup', 'instances', '--output', 'json'], () => incus('delete', '-f', 'victim', '--project', P).then(() => undefined));
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr)).toMatch(/warning: instance \S+\/victim: deleted during the run; skipped/);
    const rows = parseJson<{ name: string; status: string }[]>(String(r.stdout));
    expect(rows.find((x) => x.name === 'victim')?.status).toBe('skipped');
    expect(rows.filter((x) => x.name !== 'victim').every((x) => x.status === 'ok')).toBe(true);
  });

  /** The server-side backups and ibtmp- snapshots on an instance. */
  const leftOn = async (name: string) => [...(await incusJson<string[]>(`/1.0/instances/${name}/backups`, P)), ...(await snapshotNames(P, name))];

  it('a stopped instance renamed while Incus stages its backup: a named run fails with its new name and leaves nothing under it', async () => {
    await incus('init', 'ib-busybox', 'mover', '--project', P);
    try {
      const r = await whileHeld(/^POST \/1\.0\/instances\/mover\/backups\?/, ['backup', 'instances', 'mover'], () => incus('rename', 'mover', 'moved', '--project', P).then(() => undefined));
      expect(r.exitCode, String(r.stderr)).toBe(1);
      expect(String(r.stderr)).toContain(`instance ${P}/mover was renamed to moved during its backup; nothing was kept`);
      expect(String(r.stderr)).toContain('incus-backup backup instances moved');
      expect(await leftOn('moved')).toEqual([]);
    } finally {
      for (const n of ['mover', 'moved']) await incus('delete', '-f', n, '--project', P).catch(() => undefined);
    }
  });

  it('an instance renamed during a run over the whole project is backed up under its new name', async () => {
    await incus('init', 'ib-busybox', 'mover', '--project', P);
    try {
      const r = await whileHeld(/^POST \/1\.0\/instances\/mover\/backups\?/, ['backup', 'instances', '--output', 'json'], () => incus('rename', 'mover', 'moved', '--project', P).then(() => undefined));
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(String(r.stderr)).toMatch(/warning: instance \S+\/mover: renamed to moved during the run; backing it up under its new name/);
      const rows = parseJson<{ name: string; status: string }[]>(String(r.stdout));
      expect(rows.find((x) => x.name === 'moved')?.status).toBe('ok');
      expect(rows.map((x) => x.name)).not.toContain('mover');
      expect(await leftOn('moved')).toEqual([]);
      const l = await run('list', 'instances', '--output', 'json');
      expect(parseJson<{ name: string }[]>(l.stdout).map((x) => x.name)).toContain('moved');
    } finally {
      for (const n of ['mover', 'moved']) await incus('delete', '-f', n, '--project', P).catch(() => undefined);
    }
  });

  it('a volume renamed while its temporary snapshot is taken loses no snapshot to the run', async () => {
    const vols = (n: string) => incusJson<string[]>(`/1.0/storage-pools/default/volumes/custom/${n}/snapshots`, P);
    await incus('storage', 'volume', 'create', 'default', 'vmove', '--project', P);
    try {
      const r = await whileHeld(/^POST \/1\.0\/storage-pools\/default\/volumes\/custom\/vmove\/snapshots\?/, ['backup', 'volumes', 'default/vmove'], () =>
        incus('storage', 'volume', 'rename', 'default', 'vmove', 'vmoved', '--project', P).then(() => undefined),
      );
      expect(r.exitCode, String(r.stderr)).toBe(1);
      expect(String(r.stderr)).toContain(`volume ${P}/default/vmove was renamed to vmoved during its backup; nothing was kept`);
      expect(String(r.stderr)).toContain('incus-backup backup volumes default/vmoved');
      expect(await vols('vmoved')).toEqual([]);
    } finally {
      for (const n of ['vmove', 'vmoved']) await incus('storage', 'volume', 'delete', 'default', n, '--project', P).catch(() => undefined);
    }
  });

  it('an instance stopped and renamed while its snapshot is copied keeps no temporary snapshot', async () => {
    await launch(P, 'runner');
    try {
      const r = await whileHeld(/^POST \/1\.0\/instances\?/, ['backup', 'instances', 'runner'], async () => {
        await incus('stop', '-f', 'runner', '--project', P);
        await incus('rename', 'runner', 'runner2', '--project', P);
      });
      // The copy (of a small instance) is done before the admin is: the backup is of the
      // instance at its snapshot instant, listed under the name it had then.
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(String(r.stderr)).toContain(`instance ${P}/runner was renamed to runner2 during its backup; this backup is listed under runner`);
      expect(await leftOn('runner2')).toEqual([]);
      expect(await instanceNames(P)).not.toContainEqual(expect.stringMatching(/^ibtmp-/));
      // Nothing of the run (a snapshot left mounted, on the dir driver) stands in its deletion's way.
      await incus('delete', '-f', 'runner2', '--project', P);
    } finally {
      for (const n of ['runner', 'runner2']) await incus('delete', '-f', n, '--project', P).catch(() => undefined);
    }
  });

  it('Ctrl-C while Incus creates the restored instance from a whole upload leaves nothing: the clean-up waits for Incus', async () => {
    await launch(P, 'big');
    try {
      // Big enough that Incus is still unpacking it when the run is interrupted.
      await sh(P, 'big', 'dd if=/dev/urandom of=/big bs=1M count=150 2>/dev/null');
      const b = await run('backup', 'instances', 'big');
      expect(b.exitCode, b.stderr).toBe(0);
      const dir = join(target.dir, 'instances', P, 'big');
      const size = statSync(join(dir, readdirSync(dir)[0]!, 'export.tar')).size;
      const running = async () => Object.values(await incusJson<Record<string, { status: string }[] | null>>('/1.0/operations?recursion=1', P)).flatMap((l) => l ?? []).filter((o) => o.status === 'Running');
      // Ctrl-C once the whole archive went to Incus, which then creates the instance from it. The
      // attempt counts only if Incus's import is still running right after the interrupt (else
      // the window was missed: the run may have finished, and is tried again).
      let hits = 0;
      for (let attempt = 0; attempt < 4 && hits === 0; attempt++) {
        const proxy = await sendCountingProxy();
        try {
          const child = cliSpawn(['restore', 'instance', 'big', '--target-name', 'big2', '-y', '--project', P, '--target', target.uri], { INCUS_SOCKET: proxy.socket });
          const deadline = Date.now() + 60_000;
          // The archive and the chunked encoding's framing have gone, and nothing more comes.
          let last = -1;
          while ((proxy.sent() < size || proxy.sent() !== last) && Date.now() < deadline) {
            last = proxy.sent();
            await new Promise((res) => setTimeout(res, 30));
          }
          child.kill('SIGINT');
          const hit = (await running()).length > 0;
          const r = await child;
          // Whatever Incus was still doing for the run is over before the host is looked at.
          while ((await running()).length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
          if (!hit) {
            await incus('delete', '-f', 'big2', '--project', P).catch(() => undefined);
            continue;
          }
          hits++;
          expect(r.exitCode, String(r.stderr)).toBe(130);
          expect(String(r.stderr)).toMatch(/interrupted while restoring instance \S+\/big2; nothing was changed/);
          expect(String(r.stderr)).not.toContain('cleanup failed');
        } finally {
          await proxy.close();
        }
      }
      expect(hits, 'an interrupt landed while Incus created the copy').toBe(1);
      expect((await instanceNames(P)).filter((n) => n.startsWith('ibtmp-') || n === 'big2')).toEqual([]);
    } finally {
      await incus('delete', '-f', 'big', '--project', P).catch(() => undefined);
    }
  });

  it('a stopped instance started while Incus stages its backup is backed up again, at one instant', async () => {
    await incus('init', 'ib-busybox', 'idle', '--project', P);
    try {
      const r = await whileHeld(/^POST \/1\.0\/instances\/idle\/backups\?/, ['backup', 'instances', 'idle', '--output', 'json'], () => incus('start', 'idle', '--project', P).then(() => undefined));
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(String(r.stderr)).toMatch(/warning: instance \S+\/idle was started while Incus staged its backup as a stopped instance: the archive could hold files of different instants; backing it up once more/);
      expect(parseJson<{ consistency: string }[]>(String(r.stdout))).toEqual([expect.objectContaining({ consistency: 'snapshot' })]);
      expect(await instanceNames(P)).not.toContainEqual(expect.stringMatching(/^ibtmp-/));
    } finally {
      await incus('delete', '-f', 'idle', '--project', P).catch(() => undefined);
    }
  });
});
