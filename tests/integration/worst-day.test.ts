import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, freshHost, incus, incusJson, instanceNames, parseJson, sh, state } from './helpers.js';

// The README's two commands on a restic repository: `backup all` every night, and on the worst
// day `restore all --dry-run`, then again with -y. A project with its own profiles and images
// loses an instance, its volume, a profile and an image; everything comes back, the instance as
// the same machine on its managed bridge (its MAC address). Last, the same project comes back
// on a second, freshly installed incusd, the old one gone.
const tag = randomBytes(3).toString('hex');
const P = `t-worst-${tag}`;
const NET = `ibw${tag}`;
const env = { RESTIC_PASSWORD: 'worst-day-pw' };
let work: string;
let uri: string;
let fp = '';
let dataSha = '';
let subnet = '';

const run = (...args: string[]) => cli([...args, '--project', P, '--target', uri], env);

interface Plan {
  config: { changes: { kind: string; name: string; action: string }[] } | null;
  images: { fingerprint: string; action: string }[];
  items: { type: string; name: string; action: string }[];
  missing: unknown[];
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ib-worst-'));
  uri = `restic:${join(work, 'repo')}`;
  await incus('project', 'create', P, '-c', 'features.images=true', '-c', 'features.profiles=true');
  await incus('profile', 'device', 'add', 'default', 'root', 'disk', 'path=/', 'pool=default', '--project', P);
  await incus('profile', 'create', 'app', '--project', P);
  await incus('profile', 'set', 'app', 'user.role', 'web', '--project', P);
  subnet = `10.${randomInt(100, 250)}.${randomInt(0, 250)}.1/24`;
  await incus('network', 'create', NET, `ipv4.address=${subnet}`, 'ipv4.nat=false', 'ipv4.firewall=false', 'ipv6.address=none');
  await incus('profile', 'device', 'add', 'app', 'eth0', 'nic', `network=${NET}`, 'name=eth0', '--project', P);
  await incus('image', 'export', 'ib-busybox', join(work, 'bb'));
  await incus('image', 'import', join(work, 'bb.tar'), '--project', P, '--alias', 'bb');
  fp = (await incusJson<{ fingerprint: string }[]>('/1.0/images?recursion=1', P))[0]!.fingerprint;
  await incus('storage', 'volume', 'create', 'default', 'vol', '--project', P);
  await incus('launch', 'bb', 'web', '--project', P, '-p', 'default', '-p', 'app');
  await incus('storage', 'volume', 'attach', 'default', 'vol', 'web', '/srv', '--project', P);
  dataSha = await sh(P, 'web', 'dd if=/dev/urandom of=/srv/blob bs=1M count=2 2>/dev/null; sha256sum /srv/blob | cut -d" " -f1');
});

afterAll(async () => {
  for (const i of await instanceNames(P).catch(() => [] as string[])) await incus('delete', '-f', i, '--project', P).catch(() => undefined);
  await incus('storage', 'volume', 'delete', 'default', 'vol', '--project', P).catch(() => undefined);
  for (const i of await incusJson<{ fingerprint: string }[]>('/1.0/images?recursion=1', P).catch(() => [])) {
    await incus('image', 'delete', i.fingerprint, '--project', P).catch(() => undefined);
  }
  await incus('profile', 'delete', 'app', '--project', P).catch(() => undefined);
  await incus('project', 'delete', P).catch(() => undefined);
  await incus('network', 'delete', NET).catch(() => undefined);
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the worst day, on a restic repository', () => {
  it('backup all --with-images, lose everything, restore all --dry-run changes nothing, -y brings it all back', async () => {
    const mac = await incus('config', 'get', 'web', 'volatile.eth0.hwaddr', '--project', P);
    expect(mac).toMatch(/^[0-9a-f:]{17}$/);
    const b = await run('backup', 'all', '--with-images', '--output', 'json');
    expect(b.exitCode, b.stderr).toBe(0);
    expect(parseJson<{ type: string; status: string }[]>(b.stdout).map((r) => `${r.type}:${r.status}`)).toEqual([
      'config:ok',
      'image:ok',
      'volume:ok',
      'instance:ok',
    ]);
    // The night's set reads back sound, every archive streamed and re-hashed (the config
    // backup is JSON, not a tar).
    const v = await run('verify', '--deep', '--output', 'json');
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
    expect(parseJson<{ type: string; status: string }[]>(v.stdout).map((i) => `${i.type}:${i.status}`).sort()).toEqual(['config:ok', 'image:ok', 'instance:ok', 'volume:ok']);

    // The server-wide config backup is listed in the project's scope, as on a directory target.
    const listed = await run('list', '--output', 'json');
    expect(listed.exitCode, listed.stderr).toBe(0);
    expect(parseJson<{ type: string }[]>(listed.stdout).map((r) => r.type).sort()).toEqual(['config', 'image', 'instance', 'volume']);

    await incus('delete', '-f', 'web', '--project', P);
    await incus('storage', 'volume', 'delete', 'default', 'vol', '--project', P);
    await incus('image', 'delete', fp, '--project', P);
    await incus('profile', 'delete', 'app', '--project', P);

    const dry = await run('restore', 'all', '--apply-config', '--dry-run', '--output', 'json');
    expect(dry.exitCode, dry.stderr).toBe(0);
    const plan = parseJson<Plan>(dry.stdout);
    expect(plan.config?.changes.map((c) => `${c.action} ${c.kind} ${c.name}`)).toContain('create profile app');
    expect(plan.images.map((i) => `${i.action} ${i.fingerprint}`)).toEqual([`create ${fp}`]);
    expect(plan.items.map((i) => `${i.action} ${i.type} ${i.name}`)).toEqual(['create volume vol', 'create instance web']);
    expect(plan.missing).toEqual([]);
    expect(await instanceNames(P)).toEqual([]);
    expect(await incusJson<unknown[]>('/1.0/images', P)).toEqual([]);

    // Without the config, the pre-flight names the profile the archive needs (read from restic).
    const refused = await run('restore', 'all', '-y');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/missing: profile app/);
    expect(await instanceNames(P)).toEqual([]);

    const r = await run('restore', 'all', '--apply-config', '-y');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await incus('profile', 'get', 'app', 'user.role', '--project', P)).toBe('web');
    expect((await incusJson<{ aliases: { name: string }[] }>(`/1.0/images/${fp}`, P)).aliases.map((a) => a.name)).toEqual(['bb']);
    expect(await instanceNames(P)).toEqual(['web']);
    expect(await state(P, 'web')).toBe('Running');
    expect(await sh(P, 'web', 'sha256sum /srv/blob | cut -d" " -f1')).toBe(dataSha);
    expect(await incus('config', 'get', 'web', 'volatile.eth0.hwaddr', '--project', P)).toBe(mac);

    // Run again: nothing left to do.
    const again = await run('restore', 'all', '--apply-config', '--skip-existing', '--dry-run', '--output', 'json');
    expect(again.exitCode, again.stderr).toBe(0);
    const nothing = parseJson<Plan>(again.stdout);
    expect(nothing.images.map((i) => i.action)).toEqual(['skip']);
    expect(nothing.items.map((i) => i.action)).toEqual(['skip', 'skip']);
  });

  it('refuses, changing nothing, when the network a restored profile names is gone too (it belongs to the default project)', async () => {
    // The project has no networks of its own: its profile's NIC uses the default project's
    // network, which `restore all --project P` does not bring back. Incus would refuse the
    // profile, and the instance would come back without its NIC.
    await incus('delete', '-f', 'web', '--project', P);
    await incus('profile', 'device', 'remove', 'app', 'eth0', '--project', P);
    await incus('network', 'delete', NET);
    const r = await run('restore', 'all', '--apply-config', '--skip-existing', '-y');
    expect(r.exitCode).toBe(1);
    // Named where it would have to be created: the project uses the default project's networks.
    expect(r.stderr).toContain(`missing: network ${NET} (project default), needed by profile ${P}/app`);
    expect(r.stderr).toMatch(/^Hint: the config this restore applies does not create them: .*restore config --apply --project default/m);
    expect(await instanceNames(P)).toEqual([]);
    expect(Object.keys((await incusJson<{ devices: Record<string, unknown> }>('/1.0/profiles/app', P)).devices)).toEqual([]);
    await incus('network', 'create', NET, `ipv4.address=${subnet}`, 'ipv4.nat=false', 'ipv4.firewall=false', 'ipv6.address=none');
    const again = await run('restore', 'all', '--apply-config', '--skip-existing', '-y');
    expect(again.exitCode, again.stderr).toBe(0);
    expect(await state(P, 'web')).toBe('Running');
    expect(await incus('config', 'get', 'web', 'volatile.eth0.hwaddr', '--project', P)).toMatch(/^[0-9a-f:]{17}$/);
  });

  it('on a freshly installed host: the default project\'s config first, then restore all brings the project back, the same machine', async () => {
    // The old host is gone, its disks with it; the repository survived. The new host is what
    // `incus admin init` leaves: a pool, a bridge of its own, a default profile using it.
    const mac = await incus('config', 'get', 'web', 'volatile.eth0.hwaddr', '--project', P);
    await incus('delete', '-f', 'web', '--project', P);
    await incus('storage', 'volume', 'delete', 'default', 'vol', '--project', P);
    await incus('image', 'delete', fp, '--project', P);
    await incus('profile', 'delete', 'app', '--project', P);
    await incus('project', 'delete', P);
    await incus('network', 'delete', NET);
    const host = await freshHost();
    try {
      const there = (...args: string[]) => cli([...args, '--project', P, '--target', uri], { ...env, ...host.env });
      const projects = async () => (JSON.parse(await host.incus('query', '/1.0/projects')) as string[]).map((u) => u.split('/').pop());

      // The project's profile uses the default project's bridge: restore all names it, and
      // says where it lives, changing nothing.
      const dry = await there('restore', 'all', '--apply-config', '--dry-run');
      expect(dry.exitCode, dry.stderr).toBe(1);
      // (The project is not there yet: its config says it uses the default project's networks.)
      expect(dry.stderr).toContain(`missing: network ${NET} (project default), needed by profile ${P}/app`);
      expect(dry.stderr).toMatch(/^Hint: .*restore config --apply --project default/m);
      expect(await projects()).toEqual(['default']);
      // So does the project's own config restore, before it creates anything.
      const own = await there('restore', 'config', '--apply', '-y');
      expect(own.exitCode, own.stderr).toBe(1);
      expect(own.stderr).toContain(`missing: network ${NET} (project default), needed by profile ${P}/app`);
      expect(own.stderr).toMatch(/^Error: cannot apply the config: 1 thing\(s\) its profiles need do not exist in the destination$/m);
      expect(own.stderr).toMatch(/^Hint: .*restore config --apply --project default/m);
      expect(await projects()).toEqual(['default']);

      const config = await cli(['restore', 'config', '--apply', '--project', 'default', '-y', '--target', uri], { ...env, ...host.env });
      expect(config.exitCode, config.stderr).toBe(0);
      expect(await host.incus('network', 'get', NET, 'ipv4.address')).toBe(subnet);

      const r = await there('restore', 'all', '--apply-config', '-y', '--output', 'json');
      expect(r.exitCode, r.stderr).toBe(0);
      expect(parseJson<{ type: string; status: string }[]>(r.stdout).map((i) => `${i.type}:${i.status}`)).toEqual(['config:ok', 'image:ok', 'volume:ok', 'instance:ok']);
      expect(await projects()).toEqual(['default', P]);
      expect(await host.incus('list', '--project', P, '-c', 'ns', '-f', 'csv')).toBe('web,RUNNING');
      expect(await host.incus('exec', 'web', '--project', P, '--', 'sh', '-c', 'sha256sum /srv/blob | cut -d" " -f1')).toBe(dataSha);
      expect(await host.incus('config', 'get', 'web', 'volatile.eth0.hwaddr', '--project', P)).toBe(mac);
      expect(await host.incus('profile', 'get', 'app', 'user.role', '--project', P)).toBe('web');
      expect(JSON.parse(await host.incus('query', `/1.0/images/${fp}?project=${P}`))).toMatchObject({ aliases: [{ name: 'bb' }] });
    } finally {
      await host.dispose();
    }
  });
});
