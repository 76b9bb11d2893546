import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, incus, incusJson, instanceNames, parentInterface, parseJson, sh, state, tempTarget } from './helpers.js';

const tag = randomBytes(3).toString('hex');
const P = `t-map-${tag}`;
const POOL2 = `p2${tag}`;
const NET1 = `ibn1${tag}`;
const NET2 = `ibn2${tag}`;
/** Where a restore drill rebuilds P. */
const P2 = `t-map2-${tag}`;
let target: ReturnType<typeof tempTarget>;
let sha = '';

const run = (...args: string[]) => cli([...args, '--project', P, '--target', target.uri]);
const RESTIC_ENV = { RESTIC_PASSWORD: 'mapping-test-pw' };
const resticUri = () => `restic:${target.dir}-restic`;

interface InstanceJson {
  profiles: string[];
  devices: Record<string, Record<string, string>>;
  expanded_devices: Record<string, Record<string, string>>;
}

beforeAll(async () => {
  target = tempTarget();
  await incus('storage', 'create', POOL2, 'dir');
  await incus('project', 'create', P, '-c', 'features.images=false', '-c', 'features.profiles=true');
  await incus('profile', 'device', 'add', 'default', 'root', 'disk', 'path=/', 'pool=default', '--project', P);
  await incus('profile', 'set', 'default', 'raw.lxc', 'lxc.signal.halt = SIGUSR2', '--project', P);
  await incus('profile', 'create', 'web', '--project', P);
  await incus('profile', 'create', 'web2', '--project', P);
  await incus('profile', 'set', 'web2', 'user.flavour', 'mapped', '--project', P);
  await incus('storage', 'volume', 'create', 'default', 'data', '--project', P);
  await incus('launch', 'ib-busybox', 'app', '--project', P, '-p', 'default', '-p', 'web');
  await incus('storage', 'volume', 'attach', 'default', 'data', 'app', '/srv', '--project', P);
  sha = await sh(P, 'app', 'dd if=/dev/urandom of=/srv/blob bs=1M count=1 2>/dev/null; sha256sum /srv/blob | cut -d" " -f1');
  // A stopped instance with a NIC on a managed network, for --network-map.
  for (const n of [NET1, NET2]) await incus('network', 'create', n, '--type=macvlan', `parent=${parentInterface()}`);
  await incus('init', 'ib-busybox', 'nic', '--project', P);
  await incus('config', 'device', 'add', 'nic', 'lan', 'nic', `network=${NET1}`, 'name=eth1', '--project', P);
  const b = await run('backup', 'all');
  expect(b.exitCode, b.stderr).toBe(0);
  const rb = await cli(['backup', 'instances', 'app', '--project', P, '--target', resticUri()], RESTIC_ENV);
  expect(rb.exitCode, rb.stderr).toBe(0);
});

/** Deletes project `p` with its instances, custom volumes and profiles. */
async function dropProject(p: string): Promise<void> {
  for (const i of await instanceNames(p).catch(() => [] as string[])) await incus('delete', '-f', i, '--project', p).catch(() => undefined);
  for (const pool of ['default', POOL2]) {
    for (const v of await incusJson<{ name: string }[]>(`/1.0/storage-pools/${pool}/volumes/custom?recursion=1`, p).catch(() => [])) {
      await incus('storage', 'volume', 'delete', pool, v.name, '--project', p).catch(() => undefined);
    }
  }
  for (const prof of ['web', 'web2']) await incus('profile', 'delete', prof, '--project', p).catch(() => undefined);
  await incus('project', 'delete', p).catch(() => undefined);
}

afterAll(async () => {
  await dropProject(P2);
  await dropProject(P);
  await incus('storage', 'delete', POOL2).catch(() => undefined);
  for (const n of [NET1, NET2]) await incus('network', 'delete', n).catch(() => undefined);
  if (target) rmSync(`${target.dir}-restic`, { recursive: true, force: true });
  target?.dispose();
});

describe('restoring into a different environment', () => {
  it('pre-flight names the volume the mapped pool lacks, and changes nothing', async () => {
    const r = await run('restore', 'instance', 'app', '--target-name', 'app2', '--pool-map', `default=${POOL2}`, '-y');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`missing: volume ${POOL2}/data`);
    // A missing volume comes from its own backup, not from the config.
    expect(r.stderr).toMatch(/^Hint: restore the volume first \(restore volume, with the same maps; restore all restores volumes before instances\) or create it; or map names with --pool-map$/m);
    expect(await instanceNames(P)).toEqual(['app', 'nic']);
  });

  it('says which map no backup uses (a typo would restore onto the old names without a word)', async () => {
    const r = await run('restore', 'instance', 'app', '--target-name', 'app9', '--pool-map', `defualt=${POOL2}`, '--profile-map', 'web=web2', '--dry-run');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain(`warning: --pool-map defualt=${POOL2}: no backup in this restore uses pool defualt`);
    expect(r.stderr).not.toContain('--profile-map');
  });

  it('pre-flight reads what the archive needs from a restic target too, and changes nothing', async () => {
    // restic lists manifests without the archive's index; the plan must read it before the pre-flight.
    const r = await cli(['restore', 'instance', 'app', '--target-name', 'app3', '--pool-map', `default=${POOL2}`, '--profile-map', `web=nope${tag}`, '-y', '--project', P, '--target', resticUri()], RESTIC_ENV);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`missing: volume ${POOL2}/data`);
    expect(r.stderr).toContain(`missing: profile nope${tag}`);
    expect(await instanceNames(P)).toEqual(['app', 'nic']);
  });

  /**
   * The host-path pre-flight, on a dir and a restic target of its own (the drill below restores
   * everything in the shared one): `setup(gone, host)` makes instance `name`, one of whose disks
   * (its own or a profile's) mounts `gone`. After its backups the instance and `gone` go; each
   * restore is refused before the upload with `missing: host path GONE, needed by …` as
   * `neededBy(gone)` says, and never names `unnamed`; with `gone` back, the restore from the
   * target `okFrom` goes through.
   */
  async function hostPathDrill(opts: {
    name: string;
    setup: (gone: string, host: string) => Promise<void>;
    neededBy: string;
    unnamed: RegExp;
    okFrom: 'dir' | 'restic';
    cleanup: () => Promise<void>;
  }): Promise<void> {
    const { name } = opts;
    const host = mkdtempSync(join(tmpdir(), 'ib-hostpath-'));
    const targets = { dir: [`dir:${join(host, 'dir')}`, {}], restic: [`restic:${join(host, 'repo')}`, RESTIC_ENV] } as const;
    const gone = join(host, 'media');
    mkdirSync(gone);
    try {
      await opts.setup(gone, host);
      for (const [uri, env] of Object.values(targets)) {
        const b = await cli(['backup', 'instances', name, '--project', P, '--target', uri], env);
        expect(b.exitCode, b.stderr).toBe(0);
      }
      await incus('delete', name, '--project', P);
      rmSync(gone, { recursive: true });
      for (const [uri, env] of Object.values(targets)) {
        const r = await cli(['restore', 'instance', name, '-y', '--project', P, '--target', uri], env);
        expect(r.exitCode, r.stderr).toBe(1);
        expect(r.stderr).toContain(`missing: host path ${gone}, needed by ${opts.neededBy}\n`);
        expect(r.stderr).not.toMatch(opts.unnamed);
        expect(r.stderr).not.toMatch(/importing/);
      }
      expect(await instanceNames(P)).toEqual(['app', 'nic']);
      mkdirSync(gone);
      const [uri, env] = targets[opts.okFrom];
      const r = await cli(['restore', 'instance', name, '-y', '--project', P, '--target', uri], env);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(await instanceNames(P)).toEqual(['app', name, 'nic'].sort());
    } finally {
      await incus('delete', '-f', name, '--project', P).catch(() => undefined);
      await opts.cleanup();
      rmSync(host, { recursive: true, force: true });
    }
  }

  it('pre-flight names a host directory a disk mounts that this host lacks (Incus refuses the import), on dir and restic targets', async () => {
    await hostPathDrill({
      name: 'hp',
      setup: async (gone, host) => {
        await incus('create', 'ib-busybox', 'hp', '--project', P);
        await incus('config', 'device', 'add', 'hp', 'media', 'disk', `source=${gone}`, 'path=/media', '--project', P);
        // An optional one (required=false) needs nothing.
        await incus('config', 'device', 'add', 'hp', 'opt', 'disk', `source=${join(host, 'optional')}`, 'path=/opt', 'required=false', '--project', P);
      },
      neededBy: `instance ${P}/hp (disk media)`,
      unnamed: /optional/,
      okFrom: 'dir',
      cleanup: async () => undefined,
    });
  });

  it('pre-flight names a host directory that a profile of the instance mounts, unless the instance masks that device', async () => {
    // Incus takes a profile whose host path is missing, then refuses to import each instance
    // that uses it, after the upload.
    await hostPathDrill({
      name: 'hq',
      setup: async (gone, host) => {
        await incus('profile', 'create', 'hpp', '--project', P);
        await incus('profile', 'device', 'add', 'hpp', 'media', 'disk', `source=${gone}`, 'path=/media', '--project', P);
        await incus('create', 'ib-busybox', 'hq', '--project', P, '-p', 'default', '-p', 'hpp');
        // The instance masks the profile's `shadow` disk, whose directory never exists anywhere.
        await incus('config', 'device', 'add', 'hq', 'shadow', 'none', '--project', P);
        await incus('profile', 'device', 'add', 'hpp', 'shadow', 'disk', `source=${join(host, 'never')}`, 'path=/never', '--project', P);
      },
      neededBy: `instance ${P}/hq (disk media of profile hpp)`,
      unnamed: /never/,
      // From restic, whose listing carries the masking device: the import goes through.
      okFrom: 'restic',
      cleanup: () => incus('profile', 'delete', 'hpp', '--project', P).then(() => undefined, () => undefined),
    });
  });

  it('pre-flight refuses a restore into a project that does not exist', async () => {
    const r = await run('restore', 'all', '--project-map', `${P}=nowhere-${tag}`, '-y');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`missing: project nowhere-${tag}`);
    expect(r.stderr).toMatch(/^Hint: restore the config first \(restore all --apply-config\) or create them; or map names with --project-map\/--profile-map\/--network-map$/m);
  });

  it('restore all --apply-config --project-map builds the project anew under its new name (a restore drill)', async () => {
    // The mapped project does not exist: the config step creates it with the backed-up project's
    // config and profiles. A project with its own profiles comes with an empty `default` profile,
    // which must then get the backup's root disk (it used to fail as "already exists").
    try {
      // web is substituted by web2 (from the same backup): web itself is not restored.
      const drill = ['restore', 'all', '--apply-config', '--project-map', `${P}=${P2}`, '--profile-map', 'web=web2'];
      const dry = await run(...drill, '--dry-run');
      expect(dry.exitCode, dry.stderr).toBe(0);
      expect(dry.stdout).toMatch(new RegExp(`create +│ project ${P2} `));
      expect(dry.stdout).toMatch(new RegExp(`update +│ profile ${P2}/default +│ devices\\.root`));
      expect(dry.stdout).toMatch(new RegExp(`create +│ profile ${P2}/web2 `));
      expect(dry.stdout).not.toMatch(new RegExp(`profile ${P2}/web `));
      expect(await incus('project', 'list', '-f', 'csv')).not.toContain(P2);
      const r = await run(...drill, '-y');
      expect(r.exitCode, r.stderr).toBe(0);
      const profile = await incusJson<{ config: Record<string, string>; devices: Record<string, Record<string, string>> }>('/1.0/profiles/default', P2);
      expect(profile.devices.root).toMatchObject({ type: 'disk', path: '/', pool: 'default' });
      expect(profile.config['raw.lxc']).toBe('lxc.signal.halt = SIGUSR2');
      expect((await instanceNames(P2)).sort()).toEqual(['app', 'nic']);
      expect(await state(P2, 'app')).toBe('Running');
      expect(await sh(P2, 'app', 'sha256sum /srv/blob | cut -d" " -f1')).toBe(sha);
      expect((await incusJson<InstanceJson>('/1.0/instances/app', P2)).profiles).toEqual(['default', 'web2']);
      expect((await incusJson<{ name: string }[]>('/1.0/profiles?recursion=1', P2)).map((p) => p.name).sort()).toEqual(['default', 'web2']);
    } finally {
      await dropProject(P2);
    }
  });

  it('maps networks: pre-flight names a missing one, a mapped NIC lands on the new network', async () => {
    const bad = await run('restore', 'instance', 'nic', '--target-name', 'nic2', '--network-map', `${NET1}=nonet${tag}`, '-y');
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain(`missing: network nonet${tag}`);
    const r = await run('restore', 'instance', 'nic', '--target-name', 'nic2', '--network-map', `${NET1}=${NET2}`, '-y');
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await incusJson<InstanceJson>('/1.0/instances/nic2', P)).devices.lan).toMatchObject({ type: 'nic', network: NET2, name: 'eth1' });
    // The original keeps its network, and the restored one was stopped like it.
    expect((await incusJson<InstanceJson>('/1.0/instances/nic', P)).devices.lan).toMatchObject({ network: NET1 });
    expect(await state(P, 'nic2')).toBe('Stopped');
  });

  it('maps pools and profiles in the archive on the way in', async () => {
    const vol = await run('restore', 'volume', 'default/data', '--pool-map', `default=${POOL2}`, '-y');
    expect(vol.exitCode, vol.stderr).toBe(0);
    const r = await run('restore', 'instance', 'app', '--target-name', 'app2', '--pool-map', `default=${POOL2}`, '--profile-map', 'web=web2', '-y');
    expect(r.exitCode, r.stderr).toBe(0);
    const inst = await incusJson<InstanceJson>('/1.0/instances/app2', P);
    expect(inst.profiles).toEqual(['default', 'web2']);
    expect(inst.devices.data).toMatchObject({ pool: POOL2, source: 'data' });
    expect(await state(P, 'app2')).toBe('Running');
    expect(await sh(P, 'app2', 'sha256sum /srv/blob | cut -d" " -f1')).toBe(sha);
    // The root volume went to the mapped pool too.
    const vols = await incusJson<{ name: string; type: string }[]>(`/1.0/storage-pools/${POOL2}/volumes?recursion=1`, P);
    expect(vols.map((v) => `${v.type}/${v.name}`).sort()).toEqual(['container/app2', 'custom/data']);
  });

  it('a copy beside the original that would share its custom volume is restored and left stopped, as the preview says', async () => {
    const why = `not started: volume default/data is attached to ${P}/app too`;
    const args = ['restore', 'instance', 'app', '--target-name', 'app3'];
    const preview = await run(...args, '--dry-run', '--output', 'json');
    expect(preview.exitCode, preview.stderr).toBe(0);
    expect(parseJson<unknown[]>(preview.stdout)).toEqual([expect.objectContaining({ destination: 'app3', start: false, notStarted: why })]);
    const r = await run(...args, '-y');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain(`warning: instance ${P}/app3: ${why}; it is left stopped`);
    expect(await state(P, 'app3')).toBe('Stopped');
    expect(await state(P, 'app')).toBe('Running');
    // Under its own name, app shares data as it did before (here with app3): it runs again.
    const own = await run('restore', 'instance', 'app', '--replace', '-y');
    expect(own.exitCode, own.stderr).toBe(0);
    expect(own.stderr).not.toContain('not started');
    expect(await state(P, 'app')).toBe('Running');
    await incus('delete', 'app3', '--project', P);
  });
});
