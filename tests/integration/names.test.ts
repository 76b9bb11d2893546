import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, incus, instanceNames, launch, parseJson, sh, state, tempTarget, testProject } from './helpers.js';

// Incus takes project names with commas, "=" and letters beyond ASCII (it refuses "/", spaces,
// "_" and quotes); --all-projects backs such projects up, so --project must name them too.
const env = { RESTIC_PASSWORD: 'names-test-pw' };
let project: Awaited<ReturnType<typeof testProject>>;
let P = '';
let dir: ReturnType<typeof tempTarget>;
let repoDir = '';

beforeAll(async () => {
  project = await testProject('n,x=ü');
  P = project.name;
  dir = tempTarget();
  repoDir = mkdtempSync(join(tmpdir(), 'ib-names-'));
  await execa('restic', ['init', '--quiet'], { env: { ...env, RESTIC_REPOSITORY: join(repoDir, 'repo') } });
  await launch(P, 'web');
  await sh(P, 'web', 'echo first > /data.txt');
}, 120_000);

afterAll(async () => {
  await project?.dispose();
  dir?.dispose();
  if (repoDir) rmSync(repoDir, { recursive: true, force: true });
});

describe('a project named with a comma, "=" and a non-ASCII letter', () => {
  for (const kind of ['dir', 'restic'] as const) {
    it(`is backed up, listed and restored through --project (${kind})`, async () => {
      const uri = kind === 'dir' ? dir.uri : `restic:${join(repoDir, 'repo')}`;
      const b = await cli(['backup', 'instances', 'web', '--project', P, '--target', uri], env);
      expect(b.exitCode, b.stderr).toBe(0);
      const list = await cli(['list', '--project', P, '--target', uri, '--output', 'json'], env);
      expect(list.exitCode, list.stderr).toBe(0);
      expect(parseJson<{ project: string; name: string }[]>(list.stdout)).toEqual([expect.objectContaining({ project: P, name: 'web' })]);
      await incus('delete', '-f', 'web', '--project', P);
      const r = await cli(['restore', 'instance', 'web', '--project', P, '--target', uri, '-y'], env);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(await instanceNames(P)).toEqual(['web']);
      expect(await state(P, 'web')).toBe('Running');
      expect(await sh(P, 'web', 'cat /data.txt')).toBe('first');
    });
  }

  it('backs up and restores a volume named with a comma and a non-ASCII letter, by name', async () => {
    await incus('storage', 'volume', 'create', 'default', 'data,ü', 'size=8MiB', '--project', P);
    const b = await cli(['backup', 'volumes', 'default/data,ü', '--project', P, '--target', dir.uri]);
    expect(b.exitCode, b.stderr).toBe(0);
    await incus('storage', 'volume', 'delete', 'default', 'data,ü', '--project', P);
    const r = await cli(['restore', 'volume', 'default/data,ü', '--project', P, '--target', dir.uri, '-y']);
    expect(r.exitCode, r.stderr).toBe(0);
    const vols = JSON.parse(await incus('query', `/1.0/storage-pools/default/volumes/custom?project=${encodeURIComponent(P)}`)) as string[];
    expect(vols.map((u) => decodeURIComponent(u.split('/').pop()!.split('?')[0]!))).toContain('data,ü');
  });

  it('says that a directory target cannot hold a volume Incus let be named "..", and backs up the others', async () => {
    await incus('storage', 'volume', 'create', 'default', '..', 'size=8MiB', '--project', P);
    try {
      const r = await cli(['backup', 'volumes', '--project', P, '--target', dir.uri, '--output', 'json']);
      expect(r.exitCode).toBe(3);
      const rows = parseJson<{ name: string; status: string; error?: string; hint?: string }[]>(r.stdout);
      expect(rows.find((x) => x.name === '..')).toMatchObject({ status: 'failed', error: expect.stringContaining('".." is a path step'), hint: expect.stringContaining('restic target') });
      expect(rows.find((x) => x.name === 'data,ü')).toMatchObject({ status: 'ok' });
      // Nothing of it landed anywhere in the layout.
      const list = await cli(['list', 'volumes', '--project', P, '--target', dir.uri, '--output', 'json']);
      expect(parseJson<{ name: string }[]>(list.stdout).map((x) => x.name)).toEqual(['data,ü', 'data,ü']);
    } finally {
      await incus('storage', 'volume', 'delete', 'default', '..', '--project', P).catch(() => undefined);
    }
  });

  it('is still refused where Incus would refuse it, with one line and a hint', async () => {
    for (const bad of ['a_b', 'a b', '..', 'a/b']) {
      const r = await cli(['list', '--project', bad, '--target', dir.uri]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/^Error: invalid project name ".*"\nHint: project names cannot be/);
    }
  });
});
