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

  it('is still refused where Incus would refuse it, with one line and a hint', async () => {
    for (const bad of ['a_b', 'a b', '..', 'a/b']) {
      const r = await cli(['list', '--project', bad, '--target', dir.uri]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/^Error: invalid project name ".*"\nHint: project names cannot be/);
    }
  });
});
