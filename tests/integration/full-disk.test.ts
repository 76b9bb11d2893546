import { mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { cli, cliSpawn, incus, incusJson, instanceNames, launch, parseJson, serverBackupNames, sh, snapshotNames, tempTarget, testProject } from './helpers.js';

// A target on a 24 MiB tmpfs, and an instance with 100 MiB of data: the target fills up while
// most of the archive is still to come (restic still reading it is what used to hang).
let project: { name: string; dispose: () => Promise<void> };
let P: string;
let mnt: string;
const env = { RESTIC_PASSWORD: 'full-disk-test-pw' };

beforeAll(async () => {
  project = await testProject('full');
  P = project.name;
  await launch(P, 'c1');
  await sh(P, 'c1', 'dd if=/dev/urandom of=/data/f bs=1M count=100 2>/dev/null');
  mnt = mkdtempSync(join(tmpdir(), 'ib-full-'));
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0700', 'tmpfs', mnt]);
});

afterAll(async () => {
  if (mnt) {
    await execa('umount', [mnt]).catch(() => undefined);
    rmSync(mnt, { recursive: true, force: true });
  }
  await project?.dispose();
});

/** Nothing of the run is left on the Incus host: no temporary copy, snapshot or server-side backup. */
async function expectNothingOnHost(): Promise<void> {
  expect((await instanceNames(P)).filter((n) => n.startsWith('ibtmp-'))).toEqual([]);
  expect((await snapshotNames(P, 'c1')).filter((n) => n.startsWith('ibtmp-'))).toEqual([]);
  expect(await serverBackupNames(P, 'c1')).toEqual([]);
}

/** Bytes in use on the tmpfs. */
function used(): number {
  const s = statfsSync(mnt);
  return (s.blocks - s.bfree) * s.bsize;
}

describe('a target that runs out of space', () => {
  it('dir: the backup fails with one line and a hint, and keeps nothing', async () => {
    const target = `dir:${join(mnt, 'dir')}`;
    const r = await cli(['backup', 'instances', 'c1', '--project', P, '--target', target]);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^Error: target dir:\S+: no space left on the device$/m);
    expect(r.stderr).toMatch(/^Hint: free space there .*nothing half-done was kept$/m);
    expect(r.stderr).not.toMatch(/Bug:|at .*\.js:\d+/);
    // The partial archive is gone, and with it the space it took.
    expect(readdirSync(join(mnt, 'dir', '.staging'))).toEqual([]);
    expect(used()).toBeLessThan(1 << 20);
    const list = await cli(['list', '--project', P, '--target', target, '--output', 'json']);
    expect(parseJson<unknown[]>(list.stdout)).toEqual([]);
    await expectNothingOnHost();
    rmSync(join(mnt, 'dir'), { recursive: true, force: true });
  });

  it('restic: the backup fails as soon as restic cannot write, instead of waiting for it forever', async () => {
    const target = `restic:${join(mnt, 'repo')}`;
    // restic gives up on the write at once, but a `backup --stdin-from-command` then waits for
    // its command, which waits for restic to read on: without stopping it, this never ends.
    const run = cliSpawn(['backup', 'instances', 'c1', '--project', P, '--target', target], env);
    const timer = setTimeout(() => run.kill('SIGKILL'), 90_000);
    const r = await run;
    clearTimeout(timer);
    expect(r.signal, 'still running after 90 s').toBeUndefined();
    expect(r.exitCode, String(r.stderr)).toBe(1);
    expect(r.stderr).toMatch(/^Error: restic could not write to the repository \S+: no space left on device$/m);
    expect(r.stderr).toMatch(/^Hint: free space where the repository is stored .*nothing was kept$/m);
    // No restic of this run is left: their command lines name the project's archive files (the
    // repository travels in the environment, not in argv).
    expect((await execa('pgrep', ['-f', `restic .*incus_${P}_`], { reject: false })).stdout).toBe('');
    const list = await cli(['list', '--project', P, '--target', target, '--output', 'json'], env);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(parseJson<unknown[]>(list.stdout)).toEqual([]);
    await expectNothingOnHost();
  });

  it('a storage pool that fills up during a restore: one line and a hint, nothing left in the pool', async () => {
    const target = tempTarget();
    const pool = `t-full-${randomBytes(3).toString('hex')}`;
    const source = join(mnt, 'pool');
    try {
      const b = await cli(['backup', 'instances', 'c1', '--project', P, '--target', target.uri]);
      expect(b.exitCode, b.stderr).toBe(0);
      rmSync(join(mnt, 'dir'), { recursive: true, force: true });
      rmSync(join(mnt, 'repo'), { recursive: true, force: true });
      // A dir pool on the 24 MiB tmpfs, too small for the 100 MiB instance.
      mkdirSync(source);
      await incus('storage', 'create', pool, 'dir', `source=${source}`);
      const r = await cli(['restore', 'instance', 'c1', '--target-name', 'c1-full', '--pool-map', `default=${pool}`, '--no-start', '-y', '--project', P, '--target', target.uri]);
      expect(r.exitCode, r.stderr).toBe(1);
      // Incus answers with all of tar's complaints; the CLI shows the first, on one line.
      expect(r.stderr).toMatch(/^Error: Incus: .*tar failed: .*No space left on device$/m);
      expect(r.stderr).toMatch(/^Hint: a storage pool on the Incus host is full/m);
      expect(r.stderr).not.toMatch(/^tar: /m);
      expect(r.stderr).not.toMatch(/Bug:|at .*\.js:\d+/);
      expect((await instanceNames(P)).filter((n) => n !== 'c1')).toEqual([]);
      expect(await incusJson<unknown[]>(`/1.0/storage-pools/${pool}/volumes`, P)).toEqual([]);
    } finally {
      await incus('storage', 'delete', pool).catch(() => undefined);
      target.dispose();
    }
  });
});

describe("Incus's backups directory runs out of space", () => {
  // Incus 6.0 never ends a backup whose staging file it cannot write (see src/incus/staging.ts):
  // the run must stop waiting, clean up and say why, and the next run must not start another.
  it('a restore fails at once; a backup fails with one line and a hint instead of waiting forever, and the next one refuses at once', async () => {
    const staging = mkdtempSync(join(tmpdir(), 'ib-staging-'));
    const pool = `t-stage-${randomBytes(3).toString('hex')}`;
    const target = tempTarget();
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=40m,mode=0711', 'tmpfs', staging]);
    try {
      // A backup to restore from, taken while there is room.
      const b = await cli(['backup', 'instances', 'c1', '--project', P, '--target', target.uri, '--output', 'json']);
      expect(b.exitCode, b.stderr).toBe(0);
      const versions = parseJson<{ timestamp: string }[]>(b.stdout).map((r) => r.timestamp);
      mkdirSync(join(staging, 'pool'));
      await incus('storage', 'create', pool, 'dir', `source=${join(staging, 'pool')}`);
      await incus('storage', 'volume', 'create', pool, 'bk');
      await incus('config', 'set', 'storage.backups_volume', `${pool}/bk`);
      const free = () => statfsSync(staging).bfree * statfsSync(staging).bsize;
      const room = free();

      // A restore: Incus spools the upload there and says at once that it cannot.
      const restore = await cli(['restore', 'instance', 'c1', '--target-name', 'c1-back', '-y', '--project', P, '--target', target.uri]);
      expect(restore.exitCode, restore.stderr).toBe(1);
      expect(restore.stderr).toMatch(/^Error: Incus: write \S+\/backups\/\S+: no space left on device$/m);
      expect(restore.stderr).toMatch(/^Hint: the Incus host's backups directory is full: .*storage\.backups_volume POOL\/VOLUME/m);
      expect(await instanceNames(P)).toEqual(['c1']);
      expect(free()).toBe(room);

      const started = Date.now();
      const run = cliSpawn(['backup', 'instances', 'c1', '--project', P, '--target', target.uri]);
      const timer = setTimeout(() => run.kill('SIGKILL'), 120_000);
      const r = await run;
      clearTimeout(timer);
      expect(r.signal, 'still running after 120 s').toBeUndefined();
      expect(r.exitCode, String(r.stderr)).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(`^Error: Incus's backups directory \\S+/backups filled up \\(.+ free\\) while staging instance ${P}/c1, and Incus 6.0 never finishes a backup it cannot write$`, 'm'),
      );
      expect(r.stderr).toMatch(/^Hint: free space there, .*storage\.backups_volume.*, then restart incusd .*; nothing half-done was kept$/m);
      expect(r.stderr).not.toMatch(/Bug:|at .*\.js:\d+/);
      // Nothing was added to the target but the backup taken before.
      const list = await cli(['list', '--project', P, '--target', target.uri, '--output', 'json']);
      expect(parseJson<{ timestamp: string }[]>(list.stdout).map((r) => r.timestamp)).toEqual(versions);
      await expectNothingOnHost();
      // Incus still holds the stuck backup's file open: the space stays taken, and another
      // backup there would hang too. The next run says so before asking Incus for anything.
      expect(Date.now() - started).toBeLessThan(60_000);
      const again = await cli(['backup', 'instances', 'c1', '--project', P, '--target', target.uri]);
      expect(again.exitCode, again.stderr).toBe(1);
      expect(again.stderr).toMatch(/^Error: Incus's backups directory \S+ has only .+ free: Incus 6.0 never finishes a backup it cannot write there$/m);
      expect(again.stderr).toMatch(/^Hint: .*if an earlier backup filled it, restart incusd/m);
      // Before the snapshot and the temporary copy, which on a dir pool cost as much as the export.
      expect(again.stderr).not.toMatch(/c1: (snapshot|copying snapshot|staging)/);
      await expectNothingOnHost();
    } finally {
      await incus('config', 'unset', 'storage.backups_volume').catch(() => undefined);
      await incus('storage', 'volume', 'delete', pool, 'bk').catch(() => undefined);
      await incus('storage', 'delete', pool).catch(() => undefined);
      // The stuck operation keeps a file open there until incusd stops: detach the mount now.
      await execa('umount', ['-l', staging]).catch(() => undefined);
      rmSync(staging, { recursive: true, force: true });
      target.dispose();
    }
  });
});
