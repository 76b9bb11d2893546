import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, incus, instanceNames, launch, parseJson, serverBackupNames, sh, snapshotNames, tempTarget, testProject } from './helpers.js';

// The backup disk on the worst day, mounted read-only: both kinds of target are written through
// their own path, then used through a read-only bind mount of it.
let project: { name: string; dispose: () => Promise<void> };
let tmp: ReturnType<typeof tempTarget>;
let P: string;
const env = { RESTIC_PASSWORD: 'read-only-test-pw' };
const mounts: string[] = [];

/** A read-only view of `dir` (a bind mount, then remounted read-only). */
async function readOnlyView(dir: string, name: string): Promise<string> {
  const view = join(tmp.dir, name);
  mkdirSync(view);
  await execa('mount', ['--bind', dir, view]);
  mounts.push(view);
  await execa('mount', ['-o', 'remount,ro,bind', view]);
  return view;
}

let dirRo: string;
let resticRo: string;

beforeAll(async () => {
  project = await testProject('ro');
  P = project.name;
  tmp = tempTarget();
  await launch(P, 'c1');
  await sh(P, 'c1', 'echo kept-on-the-backup-disk > /data/marker');
  for (const target of [`dir:${join(tmp.dir, 'dir')}`, `restic:${join(tmp.dir, 'repo')}`]) {
    const r = await cli(['backup', 'instances', 'c1', '--project', P, '--target', target], env);
    expect(r.exitCode, r.stderr).toBe(0);
  }
  dirRo = await readOnlyView(join(tmp.dir, 'dir'), 'dir-ro');
  resticRo = await readOnlyView(join(tmp.dir, 'repo'), 'repo-ro');
});

afterAll(async () => {
  for (const m of mounts.reverse()) await execa('umount', [m]).catch(() => undefined);
  await project?.dispose();
  tmp?.dispose();
});

async function expectNothingOnHost(): Promise<void> {
  expect((await instanceNames(P)).filter((n) => n.startsWith('ibtmp-'))).toEqual([]);
  expect((await snapshotNames(P, 'c1')).filter((n) => n.startsWith('ibtmp-'))).toEqual([]);
  expect(await serverBackupNames(P, 'c1')).toEqual([]);
}

describe.each([
  { kind: 'restic', target: () => `restic:${resticRo}` },
  { kind: 'dir', target: () => `dir:${dirRo}` },
])('a $kind target mounted read-only', ({ kind, target }) => {
  const run = (args: string[]) => cli([...args, '--project', P, '--target', target()], env);
  // restic cannot create its lock file there: reads go on without one, and say so once.
  const lockless = /^\S+ warning: restic cannot lock the repository \S+: read-only file system; reading it without a lock/gm;

  it('lists, verifies (deep) and restores', async () => {
    const list = await run(['list', '--output', 'json']);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(parseJson<unknown[]>(list.stdout)).toHaveLength(1);
    const verify = await run(['verify', '--deep']);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(verify.stderr).toMatch(/1 ok, 0 damaged/);
    const name = `c1-${kind}`;
    try {
      const started = Date.now();
      const restore = await run(['restore', 'instance', 'c1', '--target-name', name, '-y']);
      expect(restore.exitCode, restore.stderr).toBe(0);
      // Without giving up on the lock at once, restic would retry it for minutes.
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(await sh(P, name, 'cat /data/marker')).toBe('kept-on-the-backup-disk');
      for (const r of [verify, restore]) expect(r.stderr.match(lockless) ?? []).toHaveLength(kind === 'restic' ? 1 : 0);
    } finally {
      await incus('delete', '-f', name, '--project', P).catch(() => undefined);
    }
  });

  it('refuses a backup at once, with one line and a hint, and leaves nothing behind', async () => {
    const started = Date.now();
    const r = await run(['backup', 'instances', 'c1']);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).toMatch(
      kind === 'restic' ? /^Error: restic cannot lock the repository \S+: read-only file system$/m : /^Error: the file system is read-only \(\S+\)$/m,
    );
    expect(r.stderr).toMatch(kind === 'restic' ? /^Hint: backing up, pruning and protecting need a repository restic can write to/m : /^Hint: remount it read-write/m);
    expect(r.stderr).not.toMatch(/Bug:|at .*\.js:\d+/);
    // No restic of this run is left: their command lines name the project's archive files (the
    // repository travels in the environment, not in argv).
    expect((await execa('pgrep', ['-f', `restic .*incus_${P}_`], { reject: false })).stdout).toBe('');
    await expectNothingOnHost();
    const list = await run(['list', '--output', 'json']);
    expect(parseJson<unknown[]>(list.stdout)).toHaveLength(1);
  });
});
