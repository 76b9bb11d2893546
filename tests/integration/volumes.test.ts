import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, cliSpawn, freePort, incus, incusJson, launch, parseJson, sh, slowAnswerProxy, state, tempTarget, testProject } from './helpers.js';

let project: { name: string; dispose: () => Promise<void> };
let target: ReturnType<typeof tempTarget>;
let P: string;
let sha: string;

async function volumeNames(): Promise<string[]> {
  const vols = await incusJson<{ name: string }[]>('/1.0/storage-pools/default/volumes/custom?recursion=1', P);
  return vols.map((v) => v.name).sort();
}

beforeAll(async () => {
  project = await testProject('vol');
  P = project.name;
  target = tempTarget();
  await incus('storage', 'volume', 'create', 'default', 'data', '--project', P);
  await launch(P, 'app');
  await incus('storage', 'volume', 'attach', 'default', 'data', 'app', '/mnt/data', '--project', P);
  sha = await sh(P, 'app', 'dd if=/dev/urandom of=/mnt/data/blob bs=1M count=3 2>/dev/null; sha256sum /mnt/data/blob | cut -d" " -f1');
});

afterAll(async () => {
  await project?.dispose();
  target?.dispose();
});

describe('custom volumes on a directory target', () => {
  it('backs up every volume of the project while it is in use', async () => {
    const r = await cli(['backup', 'volumes', '--project', P, '--target', target.uri]);
    expect(r.exitCode, r.stderr).toBe(0);
    const list = await cli(['list', 'volumes', '--project', P, '--target', target.uri, '--output', 'json']);
    const rows = parseJson<{ type: string; pool: string; name: string; consistency: string; size: number }[]>(list.stdout);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ type: 'volume', pool: 'default', name: 'data', consistency: 'snapshot' });
    expect(rows[0]!.size).toBeGreaterThan(3 << 20);
    expect(await state(P, 'app')).toBe('Running');
    expect(await volumeNames()).toEqual(['data']);
    expect(await incusJson<string[]>('/1.0/storage-pools/default/volumes/custom/data/snapshots', P)).toEqual([]);
  });

  it('asks for POOL/NAME', async () => {
    const r = await cli(['restore', 'volume', 'data', '-y', '--project', P, '--target', target.uri]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/POOL\/NAME/);
    // A pool that is not there is named as what is missing.
    const pool = await cli(['backup', 'volume', 'nopool/data', '--project', P, '--target', target.uri]);
    expect(pool.exitCode).toBe(2);
    expect(pool.stderr).toMatch(new RegExp(`^Error: storage pool nopool does not exist \\(named for volume ${P}/nopool/data\\)$`, 'm'));
    expect(pool.stderr).toMatch(/^Hint: `incus storage list` shows the pools$/m);
    // A backup not there: the listing that shows what is, for this project and target.
    const none = await cli(['restore', 'volume', 'default/never', '-y', '--project', P, '--target', target.uri]);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toContain(`Hint: \`incus-backup list volumes --project ${P} --target ${target.uri}\` shows what the target holds`);
  });

  it('restores under a new name with identical data', async () => {
    const r = await cli(['restore', 'volume', 'default/data', '--target-name', 'data2', '-y', '--project', P, '--target', target.uri]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await volumeNames()).toEqual(['data', 'data2']);
    await incus('storage', 'volume', 'attach', 'default', 'data2', 'app', '/mnt/data2', '--project', P);
    expect(await sh(P, 'app', 'sha256sum /mnt/data2/blob | cut -d" " -f1')).toBe(sha);
    await incus('storage', 'volume', 'detach', 'default', 'data2', 'app', '--project', P);
    await incus('storage', 'volume', 'delete', 'default', 'data2', '--project', P);
  });

  it('restore volumes brings back every backed-up volume of the project, or the ones named, after one preview', async () => {
    await incus('storage', 'volume', 'create', 'default', 'spare', '--project', P);
    try {
      const b = await cli(['backup', 'volumes', 'default/spare', '--project', P, '--target', target.uri]);
      expect(b.exitCode, b.stderr).toBe(0);
      await incus('storage', 'volume', 'delete', 'default', 'spare', '--project', P);
      const args = ['restore', 'volumes', '--project', P, '--target', target.uri];
      // Both backed-up volumes: data exists (a conflict) and is left alone, spare comes back.
      const dry = await cli([...args, '--skip-existing', '--dry-run', '--output', 'json']);
      expect(dry.exitCode, dry.stderr).toBe(0);
      expect(parseJson<{ name: string; action: string }[]>(dry.stdout).map((i) => `${i.action} ${i.name}`)).toEqual(['skip data', 'create spare']);
      const conflict = await cli([...args, '-y']);
      expect(conflict.exitCode).toBe(2);
      expect(conflict.stderr).toMatch(/already exists: volume \S+\/default\/data/);
      const r = await cli([...args, '--skip-existing', '-y']);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(await volumeNames()).toEqual(['data', 'spare']);
      // Named: only that one.
      await incus('storage', 'volume', 'delete', 'default', 'spare', '--project', P);
      const named = await cli(['restore', 'volumes', 'default/spare', '-y', '--project', P, '--target', target.uri, '--output', 'json']);
      expect(named.exitCode, named.stderr).toBe(0);
      expect(parseJson<{ pool: string; name: string }[]>(named.stdout).map((i) => `${i.pool}/${i.name}`)).toEqual(['default/spare']);
      expect(await volumeNames()).toEqual(['data', 'spare']);
    } finally {
      await incus('storage', 'volume', 'delete', 'default', 'spare', '--project', P).catch(() => undefined);
    }
  });

  it('replacing a volume used by a running instance needs --force without a terminal', async () => {
    await sh(P, 'app', 'echo drift > /mnt/data/blob');
    const r = await cli(['restore', 'volume', 'default/data', '--replace', '-y', '--project', P, '--target', target.uri]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/stops the running instances/);
    expect(r.stdout).toMatch(/stops app, then starts it again as it was/);
    expect(await sh(P, 'app', 'cat /mnt/data/blob')).toBe('drift');
    // Its dry run says so too (exit 0: it changes nothing).
    const dry = await cli(['restore', 'volume', 'default/data', '--replace', '-y', '--dry-run', '--project', P, '--target', target.uri]);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stderr).toContain('note: replacing a volume stops the running instances that use it: the run needs --force');
  });

  it('--replace --force swaps the data in, re-attaches it and restarts its users; one the admin paused is paused again', async () => {
    await incus('pause', 'app', '--project', P);
    const r = await cli(['restore', 'volume', 'default/data', '--replace', '--force', '--project', P, '--target', target.uri]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await state(P, 'app')).toBe('Frozen');
    await incus('resume', 'app', '--project', P);
    expect(await state(P, 'app')).toBe('Running');
    expect(await sh(P, 'app', 'sha256sum /mnt/data/blob | cut -d" " -f1')).toBe(sha);
    const dev = await incusJson<{ devices: Record<string, Record<string, string>> }>('/1.0/instances/app', P);
    expect(Object.values(dev.devices).find((d) => d.path === '/mnt/data')?.source).toBe('data');
    expect(await volumeNames()).toEqual(['data']);
  });

  it('a user that does not start with the restored volume gets the original back, running as before', async () => {
    // app gets a proxy device on a host port. Incus's answers to renaming `data` and to deleting
    // it are held back 1.5 s each: during the rename (the original going aside, app already
    // stopped) the port is taken, so app cannot start with the restored volume; during the delete
    // (the restored volume removed again) it is given back, so app starts with the original.
    const port = await freePort();
    await incus('config', 'device', 'add', 'app', 'px', 'proxy', `listen=tcp:127.0.0.1:${port}`, 'connect=tcp:127.0.0.1:1', '--project', P);
    await sh(P, 'app', 'echo drift > /mnt/data/blob');
    const proxy = await slowAnswerProxy(/^(POST|DELETE) \/1\.0\/storage-pools\/default\/volumes\/custom\/data\?/, 1500);
    const blocker = createServer();
    try {
      const child = cliSpawn(['restore', 'volume', 'default/data', '--replace', '--force', '--project', P, '--target', target.uri], { INCUS_SOCKET: proxy.socket });
      let exited = false;
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      void child.finally(() => (exited = true)).catch(() => undefined);
      const held = async (n: number) => {
        const deadline = Date.now() + 60_000;
        while (proxy.held() < n && !exited && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        expect(proxy.held(), `Incus's answer #${n} about data was never held; the run said:\n${stderr}`).toBe(n);
      };
      await held(1);
      await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
      await held(2);
      await new Promise((resolve) => blocker.close(resolve));
      const r = await child;
      expect(r.exitCode, String(r.stderr)).toBe(1);
      expect(String(r.stderr)).toMatch(
        /^Error: app did not start with the restored data \(Incus: Error occurred when starting proxy device: .*\); the original data is back in place and app runs with it$/m,
      );
    } finally {
      if (blocker.listening) await new Promise((resolve) => blocker.close(resolve));
      await proxy.close();
    }
    expect(await state(P, 'app')).toBe('Running');
    expect(await sh(P, 'app', 'cat /mnt/data/blob')).toBe('drift');
    expect(await volumeNames()).toEqual(['data']);
    await incus('config', 'device', 'remove', 'app', 'px', '--project', P);
  });

  it('passes over ISO volumes, which Incus cannot back up, and says so', async () => {
    const iso = join(tmpdir(), `ib-${P}.iso`);
    writeFileSync(iso, Buffer.alloc(1 << 20, 7));
    await incus('storage', 'volume', 'import', 'default', iso, 'media', '--type=iso', '--project', P);
    rmSync(iso);
    try {
      const r = await cli(['backup', 'volumes', '--project', P, '--target', target.uri, '--output', 'json']);
      expect(r.exitCode, r.stderr).toBe(0);
      const rows = parseJson<{ name: string; status: string; detail?: string }[]>(r.stdout);
      expect(rows.map((x) => [x.name, x.status])).toEqual([['data', 'ok'], ['media', 'skipped']]);
      expect(rows[1]!.detail).toBe('Incus cannot back up ISO volumes');
      const named = await cli(['backup', 'volume', 'default/media', '--project', P, '--target', target.uri]);
      expect(named.exitCode).toBe(1);
      expect(named.stderr).toMatch(/^Error: volume \S+\/default\/media is an ISO volume: Incus cannot back up ISO volumes$/m);
      expect(named.stderr).toMatch(/^Hint: keep the \.iso file it was imported from/m);
      const list = parseJson<{ name: string }[]>((await cli(['list', 'volumes', '--project', P, '--target', target.uri, '--output', 'json'])).stdout);
      expect(list.map((x) => x.name)).not.toContain('media');
    } finally {
      await incus('storage', 'volume', 'delete', 'default', 'media', '--project', P);
    }
  });

  it('leaves the default project\'s volumes to it when a project has none of its own', async () => {
    // features.storage.volumes=false: Incus lists the default project's volumes in this project.
    const shared = `${P}-nv`;
    const vol = `${P}-shared`;
    await incus('project', 'create', shared, '-c', 'features.storage.volumes=false', '-c', 'features.images=false', '-c', 'features.profiles=false');
    await incus('storage', 'volume', 'create', 'default', vol);
    try {
      const r = await cli(['backup', 'volumes', '--project', shared, '--target', target.uri, '--output', 'json']);
      expect(r.exitCode, r.stderr).toBe(0);
      const rows = parseJson<{ project: string; name: string; status: string; detail?: string }[]>(r.stdout);
      expect(rows.find((x) => x.name === vol)).toEqual({
        type: 'volume',
        project: 'default',
        pool: 'default',
        name: vol,
        status: 'skipped',
        detail: `project ${shared} has no volumes of its own; back up project default's with --project default`,
      });
      expect(rows.every((x) => x.status === 'skipped' && x.project === 'default')).toBe(true);
      const list = await cli(['list', 'volumes', '--all-projects', '--target', target.uri, '--output', 'json']);
      expect(parseJson<{ name: string }[]>(list.stdout).map((x) => x.name)).not.toContain(vol);
    } finally {
      await incus('storage', 'volume', 'delete', 'default', vol);
      await incus('project', 'delete', shared);
    }
  });

  it('freezes the instances that have a volume through a profile, and will not swap such a volume', async () => {
    // The volume's used_by lists no instance that has it through a profile.
    const prof = `${P}-vp`;
    await incus('storage', 'volume', 'create', 'default', 'pdata', '--project', P);
    await incus('profile', 'create', prof);
    await incus('profile', 'device', 'add', prof, 'pdata', 'disk', 'pool=default', 'source=pdata', 'path=/mnt/p');
    await incus('launch', 'ib-busybox', 'puser', '--project', P, '-p', 'default', '-p', prof);
    try {
      const b = await cli(['backup', 'volume', 'default/pdata', '--project', P, '--target', target.uri, '--log-level', 'debug']);
      expect(b.exitCode, b.stderr).toBe(0);
      // Frozen for the snapshot, then thawed.
      expect(b.stderr.match(/incus PUT \/1\.0\/instances\/puser\/state\?/g)).toHaveLength(2);
      const r = await cli(['restore', 'volume', 'default/pdata', '--replace', '--force', '--project', P, '--target', target.uri]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/^Error: attached through a profile, which a replace cannot swap: volume \S+\/default\/pdata \(puser\)$/m);
      expect(r.stderr).toMatch(/^Hint: restore it beside with --target-name NEW/m);
      expect(await state(P, 'puser')).toBe('Running');
      expect((await volumeNames()).filter((n) => n.startsWith('ib'))).toEqual([]);
    } finally {
      await incus('delete', '-f', 'puser', '--project', P);
      await incus('profile', 'delete', prof);
      await incus('storage', 'volume', 'delete', 'default', 'pdata', '--project', P);
    }
  });

  it('replaces a volume whose user is ephemeral (Incus deletes one that stops): the user runs again, ephemeral, on the restored data', async () => {
    await incus('storage', 'volume', 'create', 'default', 'edata', '--project', P);
    await incus('launch', 'ib-busybox', 'euser', '--ephemeral', '--project', P);
    try {
      await incus('storage', 'volume', 'attach', 'default', 'edata', 'euser', '/mnt/e', '--project', P);
      await sh(P, 'euser', 'echo before > /mnt/e/mark');
      const b = await cli(['backup', 'volume', 'default/edata', '--project', P, '--target', target.uri]);
      expect(b.exitCode, b.stderr).toBe(0);
      await sh(P, 'euser', 'echo after > /mnt/e/mark');
      const r = await cli(['restore', 'volume', 'default/edata', '--replace', '--force', '--project', P, '--target', target.uri]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(await state(P, 'euser')).toBe('Running');
      expect(await sh(P, 'euser', 'cat /mnt/e/mark')).toBe('before');
      expect((await incusJson<{ ephemeral: boolean }>('/1.0/instances/euser', P)).ephemeral).toBe(true);
    } finally {
      await incus('delete', '-f', 'euser', '--project', P).catch(() => undefined);
      await incus('storage', 'volume', 'delete', 'default', 'edata', '--project', P).catch(() => undefined);
    }
  });
});
