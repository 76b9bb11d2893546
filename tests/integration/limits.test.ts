import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, incus, incusJson, instanceNames, launch, snapshotNames, state, tempTarget, testProject } from './helpers.js';
import { yaml } from '../../src/core/yaml.js';

// Incus 6.0 refuses a client's volatile keys (an instance's UUIDs, cloud-init instance-id,
// idmaps) in every project with restrictions or any limits.* key, unless the project allows
// low-level options: on changing an instance, and on every import.
let project: Awaited<ReturnType<typeof testProject>>;
let P = '';
let target: ReturnType<typeof tempTarget>;

type Config = Record<string, string>;
const IDENTITY = ['volatile.uuid', 'volatile.uuid.generation', 'volatile.cloud-init.instance-id'];
const pick = (c: Config) => Object.fromEntries(IDENTITY.map((k) => [k, c[k]]));
const configOf = async (name: string) => (await incusJson<{ config: Config }>(`/1.0/instances/${name}`, P)).config;

/** The instance config in the stored archive's backup/index.yaml. */
async function archivedConfig(name: string): Promise<Config> {
  const dir = join(target.dir, 'instances', P, name);
  const [version] = readdirSync(dir).filter((v) => !v.startsWith('.'));
  const r = await execa('tar', ['-xOf', join(dir, version!, 'export.tar'), 'backup/index.yaml']);
  return (yaml().parse(r.stdout) as { config: { container: { config: Config } } }).config.container.config;
}

beforeAll(async () => {
  project = await testProject('lim');
  P = project.name;
  await incus('project', 'set', P, 'limits.instances=20');
  target = tempTarget();
  await launch(P, 'web');
}, 120_000);

afterAll(async () => {
  await project?.dispose();
  target?.dispose();
});

describe('a project with limits', () => {
  it('backs up a running instance point-in-time, keeping its identity, and leaves nothing on the host', async () => {
    const source = await configOf('web');
    const r = await cli(['backup', 'instances', 'web', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([expect.objectContaining({ name: 'web', status: 'ok', consistency: 'snapshot' })]);
    // The temporary copy could not take the source's identity: the archive got it on its way.
    const archived = await archivedConfig('web');
    expect(pick(archived)).toEqual(pick(source));
    expect(archived['volatile.uuid']).toMatch(/^[0-9a-f-]{36}$/);
    expect(await instanceNames(P)).toEqual(['web']);
    expect(await snapshotNames(P, 'web')).toEqual([]);
    // What was stored is what the manifest's checksum says.
    const v = await cli(['verify', '--project', P, '--target', target.uri]);
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
  });

  it('refuses to restore into it before any upload, naming what lets the import through', async () => {
    for (const extra of [['--dry-run'], ['-y']]) {
      const r = await cli(['restore', 'instance', 'web', '--project', P, '--target', target.uri, '--target-name', 'web2', ...extra]);
      expect(r.exitCode, r.stderr).toBe(2);
      expect(r.stderr).toContain(`Incus refuses to import instances into project ${P}`);
      expect(r.stderr).toContain(`incus project set ${P} restricted.containers.lowlevel=allow`);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    expect(await instanceNames(P)).toEqual(['web']);
  });

  it('restores the same machine once the project takes volatile keys, as the hint says', async () => {
    await incus('project', 'set', P, 'restricted.containers.lowlevel=allow');
    await incus('delete', '-f', 'web', '--project', P);
    const r = await cli(['restore', 'instance', 'web', '--project', P, '--target', target.uri, '-y']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(pick(await configOf('web'))).toEqual(pick(await archivedConfig('web')));
    expect(await state(P, 'web')).toBe('Running');
  });

  it('worst day: restore all --apply-config says before anything that the project it recreates will refuse the import, and its way through works', async () => {
    const gone = await testProject('limall');
    const all = tempTarget();
    try {
      await incus('project', 'set', gone.name, 'limits.instances=20');
      await launch(gone.name, 'app');
      const b = await cli(['backup', 'all', '--project', gone.name, '--target', all.uri]);
      expect(b.exitCode, b.stderr).toBe(0);
      await incus('delete', '-f', 'app', '--project', gone.name);
      await incus('project', 'delete', gone.name);

      const dry = await cli(['restore', 'all', '--apply-config', '--dry-run', '--project', gone.name, '--target', all.uri]);
      expect(dry.exitCode, dry.stderr).toBe(2);
      expect(dry.stdout).toContain(`refused: project ${gone.name} refuses volatile keys`);
      expect(dry.stderr).toContain('once the config is restored');
      expect(dry.stderr).toMatch(/^Hint: restore the config first/m);
      expect(await incusJson<string[]>('/1.0/projects')).not.toContain(`/1.0/projects/${gone.name}`);

      // The way the hint gives.
      const config = await cli(['restore', 'config', '--apply', '-y', '--project', gone.name, '--target', all.uri]);
      expect(config.exitCode, config.stderr).toBe(0);
      await incus('project', 'set', gone.name, 'restricted.containers.lowlevel=allow');
      const r = await cli(['restore', 'all', '-y', '--project', gone.name, '--target', all.uri]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(await state(gone.name, 'app')).toBe('Running');
    } finally {
      await gone.dispose();
      all.dispose();
    }
  });
});
