import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cli,
  cliSpawn,
  cuttingProxy,
  incus,
  instanceNames,
  launch,
  parseJson,
  restServer,
  serverBackupNames,
  sh,
  snapshotNames,
  state,
  stopRestServers,
  testProject,
} from './helpers.js';

/**
 * One set of scenarios, run against every kind of target: a directory, a local restic
 * repository and a restic repository behind a real rest-server.
 */
const kinds = ['dir', 'restic-local', 'restic-rest'] as const;
const env = { RESTIC_PASSWORD: 'contract-suite-pw' };

afterAll(() => stopRestServers());

describe.each(kinds)('contract: %s target', (kind) => {
  let project: { name: string; dispose: () => Promise<void> };
  let P: string;
  let work: string;
  let target: string;
  let sha: string;

  const run = (args: string[], extraEnv: Record<string, string> = {}) => cli([...args, '--project', P, '--target', target], { ...env, ...extraEnv });
  const versions = async (type: 'instances' | 'volumes') =>
    parseJson<{ timestamp: string; size: number }[]>((await run(['list', type, '--output', 'json'])).stdout);

  async function expectNoLeftovers(): Promise<void> {
    expect((await instanceNames(P)).filter((n) => /^ib(tmp|old)-/.test(n))).toEqual([]);
    expect(await snapshotNames(P, 'c')).toEqual([]);
    expect(await serverBackupNames(P, 'c')).toEqual([]);
  }

  beforeAll(async () => {
    project = await testProject(`ct-${kind}`);
    P = project.name;
    work = mkdtempSync(join(tmpdir(), 'ib-contract-'));
    target = kind === 'dir' ? `dir:${work}` : kind === 'restic-local' ? `restic:${work}/repo` : `restic:${await restServer(work)}`;
    await launch(P, 'c');
    sha = await sh(P, 'c', 'dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null; sha256sum /data/blob | cut -d" " -f1');
    await incus('storage', 'volume', 'create', 'default', 'v', '--project', P);
    await incus('storage', 'volume', 'attach', 'default', 'v', 'c', '/mnt/v', '--project', P);
    await sh(P, 'c', 'echo volume-data > /mnt/v/file');
  });

  afterAll(async () => {
    await project?.dispose();
    rmSync(work, { recursive: true, force: true });
  });

  /**
   * `list` never shows a half-written backup by design, so comparing it proves little: verify
   * also reports what the target holds without a complete manifest (a restic data snapshot
   * saved without its manifest, a dir backup without manifest.json).
   */
  async function expectNothingHalfDone(): Promise<void> {
    const v = await run(['verify']);
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
  }

  it('round-trips an instance under a new name', async () => {
    const b = await run(['backup', 'instances', 'c']);
    expect(b.exitCode, b.stderr).toBe(0);
    try {
      const r = await run(['restore', 'instance', 'c', '--target-name', 'c2', '-y']);
      expect(r.exitCode, r.stderr).toBe(0);
      // c2 attaches c's volume v too: started, it would write into c's data; it is left stopped.
      expect(r.stderr).toContain(`not started: volume default/v is attached to ${P}/c too`);
      expect(await state(P, 'c2')).toBe('Stopped');
      await incus('config', 'device', 'remove', 'c2', 'v', '--project', P);
      await incus('start', 'c2', '--project', P);
      expect(await sh(P, 'c2', 'sha256sum /data/blob | cut -d" " -f1')).toBe(sha);
    } finally {
      await incus('delete', '-f', 'c2', '--project', P).catch(() => undefined);
    }
    await expectNoLeftovers();
  });

  it('round-trips a custom volume under a new name', async () => {
    const b = await run(['backup', 'volumes', 'default/v']);
    expect(b.exitCode, b.stderr).toBe(0);
    const r = await run(['restore', 'volume', 'default/v', '--target-name', 'v2', '-y']);
    expect(r.exitCode, r.stderr).toBe(0);
    await incus('storage', 'volume', 'attach', 'default', 'v2', 'c', '/mnt/v2', '--project', P);
    expect(await sh(P, 'c', 'cat /mnt/v2/file')).toBe('volume-data');
    await incus('storage', 'volume', 'detach', 'default', 'v2', 'c', '--project', P);
    await incus('storage', 'volume', 'delete', 'default', 'v2', '--project', P);
  });

  it('previews without changing, skips existing, and replaces', async () => {
    await sh(P, 'c', 'echo drift > /data/marker');
    const dry = await run(['restore', 'instance', 'c', '--replace', '--dry-run']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/replace/);
    const skip = await run(['restore', 'instances', 'c', '--skip-existing', '-y']);
    expect(skip.exitCode, skip.stderr).toBe(0);
    expect(await sh(P, 'c', 'cat /data/marker')).toBe('drift');
    const replace = await run(['restore', 'instance', 'c', '--replace', '-y']);
    expect(replace.exitCode, replace.stderr).toBe(0);
    expect(await state(P, 'c')).toBe('Running');
    expect(await sh(P, 'c', 'cat /data/marker 2>&1 || true')).toMatch(/No such file/);
    expect(await sh(P, 'c', 'sha256sum /data/blob | cut -d" " -f1')).toBe(sha);
    await expectNoLeftovers();
  });

  it('keeps nothing when the export breaks in the middle of the stream', async () => {
    const before = await versions('instances');
    const proxy = await cuttingProxy('download', 3 << 20);
    try {
      const r = await run(['backup', 'instances', 'c'], { INCUS_SOCKET: proxy.socket });
      expect(proxy.cuts()).toBeGreaterThan(0);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toMatch(/^Error: /m);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    } finally {
      await proxy.close();
    }
    expect(await versions('instances')).toEqual(before);
    await expectNothingHalfDone();
    await expectNoLeftovers();
    expect(await state(P, 'c')).toBe('Running');
  });

  it('leaves the original in place when the import breaks in the middle of the stream', async () => {
    await sh(P, 'c', 'echo keep-me > /data/marker');
    const proxy = await cuttingProxy('upload', 3 << 20);
    try {
      const r = await run(['restore', 'instance', 'c', '--replace', '-y'], { INCUS_SOCKET: proxy.socket });
      expect(proxy.cuts()).toBeGreaterThan(0);
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/^Error: /m);
    } finally {
      await proxy.close();
    }
    expect(await state(P, 'c')).toBe('Running');
    expect(await sh(P, 'c', 'cat /data/marker')).toBe('keep-me');
    await expectNoLeftovers();
  });

  it('keeps nothing when interrupted, and exits 130', async () => {
    const before = await versions('instances');
    const child = cliSpawn(['backup', 'instances', 'c', '--project', P, '--target', target], env);
    let err = '';
    await new Promise<void>((resolve) => {
      child.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        if (/c: (copying snapshot|staging)/.test(err)) resolve();
      });
    });
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(130);
    expect(await versions('instances')).toEqual(before);
    await expectNothingHalfDone();
    await expectNoLeftovers();
  });

  if (kind !== 'dir') {
    it('adds almost nothing for a second unchanged backup', async () => {
      await incus('stop', 'c', '--project', P);
      try {
        const runs = [];
        for (let i = 0; i < 2; i++) runs.push(parseJson<{ size: number; dataAdded?: number }[]>((await run(['backup', 'instances', 'c', '--output', 'json'])).stdout)[0]!);
        // restic cuts chunks of 0.5-8 MiB: on an 8 MiB archive "almost nothing" is a chunk or
        // two, where a full re-upload would add the whole archive. (The benchmark measures the
        // share on 1 GiB.)
        expect(runs[0]!.size).toBeGreaterThan(8 << 20);
        expect(runs[1]!.dataAdded).toBeDefined();
        expect(runs[1]!.dataAdded!).toBeLessThan(2 << 20);
      } finally {
        await incus('start', 'c', '--project', P);
      }
    });

    it('says "wrong password" in one line, without the password', async () => {
      const r = await run(['list'], { RESTIC_PASSWORD: 'not-the-password-123' });
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/^Error: wrong password/m);
      expect(r.stderr + r.stdout).not.toContain('not-the-password-123');
      expect(r.stderr + r.stdout).not.toContain(env.RESTIC_PASSWORD);
    });
  }
});
