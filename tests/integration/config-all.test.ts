import { randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, incus, incusJson, instanceNames, parentInterface, parseJson, sh, state, tempTarget } from './helpers.js';

const tag = randomBytes(3).toString('hex');
const P = `t-cfg-${tag}`;
const P2 = `t-cfg2-${tag}`;
const NET = `ibmv${tag}`;
let target: ReturnType<typeof tempTarget>;

interface ConfigPreviewJson {
  changes: { kind: string; project?: string; name: string; action: string; disruptive: boolean; changes: { key: string; old?: string; new?: string }[] }[];
  kept: { kind: string; project?: string; name: string }[];
}

async function dropProject(name: string): Promise<void> {
  for (const i of await incusJson<string[]>('/1.0/instances', name).catch(() => [] as string[])) {
    await incus('delete', '-f', '--project', name, decodeURIComponent(i.split('/').pop()!.split('?')[0]!)).catch(() => undefined);
  }
  for (const v of await incusJson<{ name: string }[]>('/1.0/storage-pools/default/volumes/custom?recursion=1', name).catch(() => [])) {
    await incus('storage', 'volume', 'delete', 'default', v.name, '--project', name).catch(() => undefined);
  }
  for (const p of await incusJson<{ name: string }[]>('/1.0/profiles?recursion=1', name).catch(() => [])) {
    if (p.name !== 'default') await incus('profile', 'delete', p.name, '--project', name).catch(() => undefined);
  }
  await incus('project', 'delete', name).catch(() => undefined);
}

const run = (...args: string[]) => cli([...args, '--target', target.uri]);

beforeAll(async () => {
  target = tempTarget();
  // A project with its own profiles (so config restore has something project-scoped to do).
  await incus('project', 'create', P, '-c', 'features.images=false', '-c', 'features.profiles=true', '-c', 'user.owner=alice');
  await incus('profile', 'device', 'add', 'default', 'root', 'disk', 'path=/', 'pool=default', '--project', P);
  await incus('profile', 'set', 'default', 'raw.lxc', 'lxc.signal.halt = SIGUSR2', '--project', P);
  await incus('profile', 'create', 'web', '--project', P);
  await incus('profile', 'set', 'web', 'user.k=v1', '--project', P);
  await incus('network', 'create', NET, '--type=macvlan', `parent=${parentInterface()}`, 'mtu=1400');
});

afterAll(async () => {
  await dropProject(P);
  await dropProject(P2);
  await incus('network', 'delete', NET).catch(() => undefined);
  target?.dispose();
});

describe('config backup and restore', () => {
  it('previews exactly the drift, changes nothing, applies it, and deletes extras only with --force', async () => {
    const b = await run('backup', 'config');
    expect(b.exitCode, b.stderr).toBe(0);
    // Drift: a profile key, a project key, a network key, and a new profile.
    await incus('profile', 'set', 'web', 'user.k=v2', '--project', P);
    await incus('project', 'set', P, 'user.owner=bob');
    await incus('network', 'set', NET, 'mtu=1300');
    await incus('profile', 'create', 'extra', '--project', P);

    const pv = await run('restore', 'config', '--all-projects', '--output', 'json');
    expect(pv.exitCode, pv.stderr).toBe(0);
    const preview = parseJson<ConfigPreviewJson>(pv.stdout);
    const summary = preview.changes.map((c) => `${c.action} ${c.kind} ${c.project ?? ''}/${c.name} ${c.changes.map((k) => `${k.key}:${k.old}->${k.new}`).join(',')}${c.disruptive ? ' !' : ''}`);
    expect(summary.sort()).toEqual(
      [
        `update network default/${NET} mtu:1300->1400 !`,
        `update profile ${P}/web user.k:v2->v1`,
        `update project /${P} user.owner:bob->alice`,
      ].sort(),
    );
    expect(preview.kept).toContainEqual({ kind: 'profile', project: P, name: 'extra' });
    // The preview changed nothing.
    expect(await incus('profile', 'get', 'web', 'user.k', '--project', P)).toBe('v2');
    expect(await incus('network', 'get', NET, 'mtu')).toBe('1300');

    const noTty = await run('restore', 'config', '--all-projects', '--apply', '--output', 'json');
    expect(noTty.exitCode).toBe(2);
    // Refused: the preview is the document.
    expect(parseJson<ConfigPreviewJson>(noTty.stdout).changes).toHaveLength(3);
    expect(await incus('profile', 'get', 'web', 'user.k', '--project', P)).toBe('v2');
    const dry = await run('restore', 'config', '--all-projects', '--apply', '--dry-run', '-y');
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`update +│ profile ${P}/web +│ user\\.k +│ v2 +│ v1`));
    expect(dry.stderr).toMatch(/^dry run: nothing was changed$/m);
    expect(dry.stderr).not.toContain('preview only');
    expect(await incus('profile', 'get', 'web', 'user.k', '--project', P)).toBe('v2');

    const apply = await run('restore', 'config', '--all-projects', '--apply', '-y', '--output', 'json');
    expect(apply.exitCode, apply.stderr).toBe(0);
    // The document is what happened: every change, with how it went.
    const applied = parseJson<{ changes: { kind: string; name: string; status: string; error?: string }[] }>(apply.stdout);
    expect(applied.changes.map((c) => `${c.kind} ${c.name} ${c.status}`).sort()).toEqual([`network ${NET} ok`, `profile web ok`, `project ${P} ok`].sort());
    expect(await incus('profile', 'get', 'web', 'user.k', '--project', P)).toBe('v1');
    expect(await incus('project', 'get', P, 'user.owner')).toBe('alice');
    expect(await incus('network', 'get', NET, 'mtu')).toBe('1400');
    expect(await incus('profile', 'list', '--project', P, '--format', 'csv')).toMatch(/^extra,/m);

    const force = await run('restore', 'config', '--project', P, '--apply', '--force', '-y');
    expect(force.exitCode, force.stderr).toBe(0);
    expect(await incus('profile', 'list', '--project', P, '--format', 'csv')).not.toMatch(/^extra,/m);
    expect(await incus('profile', 'list', '--project', P, '--format', 'csv')).toMatch(/^web,/m);
  });

  it('brings back network forwards with their ports and zone records with their entries, as drift and on a host without them', async () => {
    const BR = `ibfw${tag}`;
    const ZONE = `ib${tag}.example`;
    const subnet = `10.${randomInt(100, 250)}.${randomInt(0, 250)}`;
    const LA = `192.0.2.${randomInt(2, 250)}`;
    const forward = () => incusJson<{ description: string; ports: { protocol: string; listen_port: string; target_address: string; target_port: string }[] }>(`/1.0/networks/${BR}/forwards/${LA}`);
    const record = () => incusJson<{ entries: { type: string; value: string; ttl: number }[] }>(`/1.0/network-zones/${ZONE}/records/www`);
    const dropAll = async () => {
      await incus('network', 'forward', 'delete', BR, LA).catch(() => undefined);
      await incus('network', 'delete', BR).catch(() => undefined);
      await incus('network', 'zone', 'record', 'delete', ZONE, 'www').catch(() => undefined);
      await incus('network', 'zone', 'delete', ZONE).catch(() => undefined);
    };
    await incus('network', 'create', BR, `ipv4.address=${subnet}.1/24`, 'ipv4.nat=false', 'ipv4.firewall=false', 'ipv6.address=none');
    try {
      await incus('network', 'forward', 'create', BR, LA);
      await incus('network', 'forward', 'set', BR, LA, '--property', 'description=web front');
      await incus('network', 'forward', 'port', 'add', BR, LA, 'tcp', '80', `${subnet}.5`, '8080');
      await incus('network', 'zone', 'create', ZONE);
      await incus('network', 'zone', 'record', 'create', ZONE, 'www');
      await incus('network', 'zone', 'record', 'entry', 'add', ZONE, 'www', 'A', `${subnet}.5`, '--ttl', '300');
      const b = await run('backup', 'config');
      expect(b.exitCode, b.stderr).toBe(0);
      expect(b.stderr).not.toContain('not in the config backup');

      // Drift: the port now goes elsewhere, the record is gone.
      await incus('network', 'forward', 'port', 'remove', BR, LA, 'tcp', '80');
      await incus('network', 'forward', 'port', 'add', BR, LA, 'tcp', '80', `${subnet}.6`, '8080');
      await incus('network', 'zone', 'record', 'delete', ZONE, 'www');
      const pv = await run('restore', 'config', '--all-projects', '--output', 'json');
      expect(pv.exitCode, pv.stderr).toBe(0);
      const changes = parseJson<{ changes: { kind: string; network?: string; zone?: string; name: string; action: string; disruptive: boolean; changes: { key: string; old?: string; new?: string }[] }[] }>(pv.stdout).changes;
      const fwd = changes.find((c) => c.kind === 'network-forward');
      expect(fwd).toMatchObject({ action: 'update', network: BR, name: LA, disruptive: true });
      expect(fwd!.changes.map((k) => k.key)).toEqual(['ports']);
      expect(fwd!.changes[0]!.new).toContain(`"target_address":"${subnet}.5"`);
      expect(changes.find((c) => c.kind === 'network-zone-record')).toMatchObject({ action: 'create', zone: ZONE, name: 'www' });
      const apply = await run('restore', 'config', '--all-projects', '--apply', '-y');
      expect(apply.exitCode, apply.stderr).toBe(0);
      expect((await forward()).ports).toEqual([{ description: '', protocol: 'tcp', listen_port: '80', target_address: `${subnet}.5`, target_port: '8080' }]);
      expect((await record()).entries).toEqual([{ type: 'A', value: `${subnet}.5`, ttl: 300 }]);

      // A host that lost all of it: the network and zone come first, then what lives in them.
      await dropAll();
      const again = await run('restore', 'config', '--all-projects', '--apply', '-y');
      expect(again.exitCode, again.stderr).toBe(0);
      expect(await incus('network', 'get', BR, 'ipv4.address')).toBe(`${subnet}.1/24`);
      expect(await forward()).toMatchObject({ description: 'web front', ports: [expect.objectContaining({ listen_port: '80', target_address: `${subnet}.5` })] });
      expect((await record()).entries).toEqual([{ type: 'A', value: `${subnet}.5`, ttl: 300 }]);
    } finally {
      await dropAll();
    }
  });

  it("marks a zone whose name another project has taken since as refused, and does not ask Incus for it", async () => {
    const PZ = `t-cfgz-${tag}`;
    const ZONE = `ibz${tag}.example`;
    await incus('project', 'create', PZ, '-c', 'features.networks=true', '-c', 'features.networks.zones=true', '-c', 'features.images=false');
    try {
      await incus('network', 'zone', 'create', ZONE, '--project', PZ);
      await incus('network', 'zone', 'record', 'create', ZONE, 'www', '--project', PZ);
      const b = await run('backup', 'config');
      expect(b.exitCode, b.stderr).toBe(0);
      // The zone moves to the default project: its name is taken for PZ now.
      await incus('network', 'zone', 'record', 'delete', ZONE, 'www', '--project', PZ);
      await incus('network', 'zone', 'delete', ZONE, '--project', PZ);
      await incus('network', 'zone', 'create', ZONE);
      const pv = await run('restore', 'config', '--project', PZ, '--output', 'json');
      expect(pv.exitCode, pv.stderr).toBe(0);
      const changes = parseJson<{ changes: { kind: string; action: string; refused?: string }[] }>(pv.stdout).changes;
      expect(changes.map((c) => `${c.action} ${c.kind}: ${c.refused ?? ''}`)).toEqual([
        `create network-zone: zone names are server-wide, and project default has ${ZONE}`,
        `create network-zone-record: its zone ${ZONE} cannot be created`,
      ]);
      const apply = await run('restore', 'config', '--project', PZ, '--apply', '-y');
      expect(apply.exitCode).toBe(1);
      expect(apply.stderr).toContain(`warning: config: could not create network-zone ${PZ}/${ZONE}: not applied: zone names are server-wide`);
    } finally {
      await incus('network', 'zone', 'delete', ZONE).catch(() => undefined);
      await incus('network', 'zone', 'record', 'delete', ZONE, 'www', '--project', PZ).catch(() => undefined);
      await incus('network', 'zone', 'delete', ZONE, '--project', PZ).catch(() => undefined);
      await incus('project', 'delete', PZ).catch(() => undefined);
    }
  });

  it('says which secret it cannot bring back rather than "matches", and refuses a project it does not know', async () => {
    await incus('profile', 'set', 'web', 'user.db_password=hunter2', '--project', P);
    try {
      const b = await run('backup', 'config');
      expect(b.exitCode, b.stderr).toBe(0);
      expect(b.stderr).toMatch(/warning: config: 1 secret value\(s\) were not stored/);
      await incus('profile', 'unset', 'web', 'user.db_password', '--project', P);
      // A key set since: the apply removes it, which the table says (not an empty value).
      await incus('profile', 'set', 'web', 'user.since=1', '--project', P);
      const pv = await run('restore', 'config', '--project', P);
      expect(pv.exitCode, pv.stderr).toBe(0);
      expect(pv.stdout).toMatch(new RegExp(`update +│ profile ${P}/web +│ user\\.since +│ 1 +│ \\(unset\\)`));
      expect(pv.stdout).toMatch(new RegExp(`update +│ profile ${P}/web +│ user\\.db_password +│ +│ <redacted> +│ secret, not in the backup: set it by hand`));
      expect(pv.stderr).not.toContain('config matches');
      const apply = await run('restore', 'config', '--project', P, '--apply', '-y');
      expect(apply.exitCode, apply.stderr).toBe(0);
      expect(apply.stderr).toContain(`warning: config: profile ${P}/web: user.db_password is a secret the backup does not hold: set it by hand`);
      // A mistyped project is neither here nor in the backup: not "matches".
      const typo = await run('restore', 'config', '--project', `${P}-typo`);
      expect(typo.exitCode).toBe(2);
      expect(typo.stderr).toMatch(new RegExp(`^Error: project "${P}-typo" is neither on this Incus server nor in the config backup of \\d{8}T\\d{6}Z`, 'm'));
    } finally {
      await incus('profile', 'unset', 'web', 'user.db_password', '--project', P).catch(() => undefined);
    }
  });

  it('names what uses a profile that --force would delete, in the preview and when Incus refuses it', async () => {
    const b = await run('backup', 'config');
    expect(b.exitCode, b.stderr).toBe(0);
    await incus('profile', 'create', 'inuse', '--project', P);
    await incus('init', 'ib-busybox', 'user1', '--project', P, '-p', 'default', '-p', 'inuse');
    try {
      // Without --force it is kept, which "matches" must not hide.
      const kept = await run('restore', 'config', '--project', P);
      expect(kept.exitCode, kept.stderr).toBe(0);
      expect(kept.stderr).toMatch(/^config matches the backup of \d{8}T\d{6}Z, but for 1 object\(s\) not in it \(kept; --force deletes them\)$/m);
      const pv = await run('restore', 'config', '--project', P, '--force', '--output', 'json');
      expect(pv.exitCode, pv.stderr).toBe(0);
      const del = parseJson<{ changes: { kind: string; name: string; action: string; usedBy?: string[] }[] }>(pv.stdout).changes.find((c) => c.name === 'inuse');
      expect(del).toMatchObject({ kind: 'profile', action: 'delete', usedBy: [`instance ${P}/user1`] });
      const apply = await run('restore', 'config', '--project', P, '--apply', '--force', '-y');
      expect(apply.exitCode).toBe(1);
      expect(apply.stdout).toMatch(new RegExp(`delete +│ profile ${P}/inuse +│.*in use by instance ${P}/user1`));
      expect(apply.stderr).toContain(`warning: config: could not delete profile ${P}/inuse: `);
      expect(apply.stderr).toContain(`(in use by instance ${P}/user1: Incus refuses to delete it until they no longer use it)`);
      expect(await incus('profile', 'list', '--project', P, '--format', 'csv')).toMatch(/^inuse,/m);
    } finally {
      await incus('delete', '-f', 'user1', '--project', P).catch(() => undefined);
      await incus('profile', 'delete', 'inuse', '--project', P).catch(() => undefined);
    }
  });

  it("applies a project's lowered limit after the profile that lowers its instances' usage, in one run", async () => {
    // Incus checks a project's limits.memory against what its instances' profiles set now.
    await incus('profile', 'set', 'web', 'limits.memory=256MiB', '--project', P);
    await incus('project', 'set', P, 'limits.memory=1GiB');
    await incus('init', 'ib-busybox', 'lim', '--project', P, '-p', 'default', '-p', 'web');
    try {
      const b = await run('backup', 'config');
      expect(b.exitCode, b.stderr).toBe(0);
      await incus('project', 'set', P, 'limits.memory=4GiB');
      await incus('profile', 'set', 'web', 'limits.memory=2GiB', '--project', P);
      const apply = await run('restore', 'config', '--project', P, '--apply', '-y');
      expect(apply.exitCode, apply.stderr).toBe(0);
      expect(await incus('project', 'get', P, 'limits.memory')).toBe('1GiB');
      expect(await incus('profile', 'get', 'web', 'limits.memory', '--project', P)).toBe('256MiB');
    } finally {
      await incus('delete', '-f', 'lim', '--project', P).catch(() => undefined);
      await incus('project', 'unset', P, 'limits.memory').catch(() => undefined);
      await incus('profile', 'unset', 'web', 'limits.memory', '--project', P).catch(() => undefined);
    }
  });

  it('warns, without refusing, when a profile it writes attaches a custom volume that is not there', async () => {
    const vol = `ibv${tag}`;
    await incus('storage', 'volume', 'create', 'default', vol, '--project', P);
    await incus('profile', 'device', 'add', 'web', 'data', 'disk', 'pool=default', `source=${vol}`, 'path=/srv/data', '--project', P);
    try {
      const b = await run('backup', 'config');
      expect(b.exitCode, b.stderr).toBe(0);
      await incus('profile', 'device', 'remove', 'web', 'data', '--project', P);
      await incus('storage', 'volume', 'delete', 'default', vol, '--project', P);
      const apply = await run('restore', 'config', '--project', P, '--apply', '-y');
      expect(apply.exitCode, apply.stderr).toBe(0);
      expect(apply.stderr).toContain(`warning: profile ${P}/web (disk data) attaches volume default/${vol}, which does not exist: instances using the profile will not start until it is restored (restore volume default/${vol})`);
    } finally {
      await incus('profile', 'device', 'remove', 'web', 'data', '--project', P).catch(() => undefined);
      await incus('storage', 'volume', 'delete', 'default', vol, '--project', P).catch(() => undefined);
    }
  });

  it('refuses to apply a profile whose host directory this host lacks (Incus would save it and break its instances), until it exists', async () => {
    const media = mkdtempSync(join(tmpdir(), 'ib-media-'));
    try {
      await incus('profile', 'device', 'add', 'web', 'media', 'disk', `source=${media}`, 'path=/media', '--project', P);
      const b = await run('backup', 'config');
      expect(b.exitCode, b.stderr).toBe(0);
      await incus('profile', 'device', 'remove', 'web', 'media', '--project', P);
      rmSync(media, { recursive: true });
      const r = await run('restore', 'config', '--project', P, '--apply', '-y');
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`missing: host path ${media}, needed by profile ${P}/web (disk media)\n`);
      expect(r.stderr).toMatch(/^Error: cannot apply the config: 1 thing\(s\) its profiles need do not exist in the destination$/m);
      expect(await incus('profile', 'device', 'list', 'web', '--project', P)).not.toContain('media');
      mkdirSync(media);
      const ok = await run('restore', 'config', '--project', P, '--apply', '-y');
      expect(ok.exitCode, ok.stderr).toBe(0);
      expect(await incus('profile', 'device', 'get', 'web', 'media', 'source', '--project', P)).toBe(media);
    } finally {
      await incus('profile', 'device', 'remove', 'web', 'media', '--project', P).catch(() => undefined);
      rmSync(media, { recursive: true, force: true });
    }
  });
});

describe('backup all / restore all', () => {
  let dataSha = '';

  it('backs up config, volumes and instances as one set', async () => {
    await incus('storage', 'volume', 'create', 'default', 'shared', '--project', P);
    await incus('launch', 'ib-busybox', 'app', '--project', P, '-p', 'default', '-p', 'web');
    await incus('storage', 'volume', 'attach', 'default', 'shared', 'app', '/srv', '--project', P);
    dataSha = await sh(P, 'app', 'dd if=/dev/urandom of=/srv/blob bs=1M count=2 2>/dev/null; sha256sum /srv/blob | cut -d" " -f1');
    await incus('launch', 'ib-busybox', 'idle', '--project', P);
    await incus('stop', 'idle', '--project', P);
    const r = await run('backup', 'all', '--project', P, '--output', 'json');
    expect(r.exitCode, r.stderr).toBe(0);
    const rows = parseJson<{ type: string; name: string; status: string }[]>(r.stdout);
    expect(rows.map((x) => `${x.type}:${x.name}:${x.status}`)).toEqual(['config:config:ok', 'volume:shared:ok', 'instance:app:ok', 'instance:idle:ok']);
    // The set verifies sound, the config backup (JSON, not a tar) included.
    const v = await run('verify', '--project', P, '--output', 'json');
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
    const items = parseJson<{ type: string; status: string }[]>(v.stdout);
    const configs = items.filter((i) => i.type === 'config');
    expect(configs.length).toBeGreaterThan(0);
    expect(items.filter((i) => i.status !== 'ok')).toEqual([]);
  });

  it('names every existing volume and instance at once when restore all meets them', async () => {
    const r = await run('restore', 'all', '--project', P, '--dry-run');
    expect(r.exitCode).toBe(2);
    const [error, hint] = r.stderr.trim().split('\n');
    expect(error).toBe(`Error: already exists: volume ${P}/default/shared, instance ${P}/app, instance ${P}/idle`);
    // restore all has no --target-name: the hint offers only what it has.
    expect(hint).toBe('Hint: pass --replace to replace them (each current one is kept until its restore succeeded) or --skip-existing to leave them');
    // The dry run still shows the whole plan, the refused rows marked.
    expect(r.stdout.match(/refused: already exists/g)).toHaveLength(3);
  });

  it('brings deleted instances and volumes back, attached, with their data and power state', async () => {
    await incus('delete', '-f', 'app', '--project', P);
    await incus('delete', '-f', 'idle', '--project', P);
    await incus('storage', 'volume', 'delete', 'default', 'shared', '--project', P);
    const dry = await run('restore', 'all', '--project', P, '--dry-run');
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/volume default\/shared/);
    expect(await instanceNames(P)).toEqual([]);
    const r = await run('restore', 'all', '--project', P, '-y');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await instanceNames(P)).toEqual(['app', 'idle']);
    expect(await state(P, 'app')).toBe('Running');
    expect(await state(P, 'idle')).toBe('Stopped');
    expect(await sh(P, 'app', 'sha256sum /srv/blob | cut -d" " -f1')).toBe(dataSha);
  });

  it('refuses before changing anything when a profile the archive needs is missing', async () => {
    await incus('delete', '-f', 'app', '--project', P);
    await incus('profile', 'delete', 'web', '--project', P);
    const r = await run('restore', 'instance', 'app', '--project', P, '-y');
    expect(r.exitCode).toBe(1);
    // The project has profiles of its own: it is named as the place to create this one.
    expect(r.stderr).toContain(`missing: profile web (project ${P}), needed by instance ${P}/app`);
    expect(await instanceNames(P)).toEqual(['idle']);
    // With the config applied first, the same restore goes through.
    const all = await run('restore', 'all', '--project', P, '--apply-config', '--skip-existing', '-y');
    expect(all.exitCode, all.stderr).toBe(0);
    expect(await instanceNames(P)).toEqual(['app', 'idle']);
    expect(await incus('profile', 'get', 'web', 'user.k', '--project', P)).toBe('v1');
  });

  it('restores into another project with --project-map', async () => {
    await incus('project', 'create', P2, '-c', 'features.images=false', '-c', 'features.profiles=false');
    await incus('profile', 'create', 'web').catch(() => undefined); // P2 uses the default project's profiles
    try {
      const r = await run('restore', 'all', '--project', P, '--project-map', `${P}=${P2}`, '-y');
      expect(r.exitCode, r.stderr).toBe(0);
      expect(await instanceNames(P2)).toEqual(['app', 'idle']);
      expect(await sh(P2, 'app', 'sha256sum /srv/blob | cut -d" " -f1')).toBe(dataSha);
      // The source project is untouched.
      expect(await state(P, 'app')).toBe('Running');
    } finally {
      await dropProject(P2);
      await incus('profile', 'delete', 'web').catch(() => undefined);
    }
  });
});

describe('restore all and what the newest nightly run no longer had', () => {
  const P3 = `t-cfg3-${tag}`;

  afterAll(() => dropProject(P3));

  interface PlanJson {
    items: { type: string; name: string; action: string; missedRun?: string }[];
  }

  it('marks a deleted instance and volume (older backup, restored all the same), not one backed up by name since; on dir and restic', async () => {
    await incus('project', 'create', P3, '-c', 'features.images=false', '-c', 'features.profiles=false');
    await incus('create', 'ib-busybox', 'keep', '--project', P3);
    await incus('create', 'ib-busybox', 'gone', '--project', P3);
    await incus('storage', 'volume', 'create', 'default', 'vol', '--project', P3);
    const t = tempTarget();
    const targets = [[t.uri, {}], [`restic:${t.dir}/repo`, { RESTIC_PASSWORD: 'missed-run-pw' }]] as const;
    try {
      const at = (uri: string, env: Record<string, string>, ...args: string[]) => cli([...args, '--project', P3, '--target', uri], env);
      for (const [uri, env] of targets) expect((await at(uri, env, 'backup', 'all')).exitCode).toBe(0);
      const first = Object.fromEntries(
        await Promise.all(targets.map(async ([uri, env]) => [uri, parseJson<{ timestamp: string }[]>((await at(uri, env, 'list', '--output', 'json')).stdout).map((e) => e.timestamp).sort().at(-1)!])),
      );
      await incus('delete', 'gone', '--project', P3);
      await incus('storage', 'volume', 'delete', 'default', 'vol', '--project', P3);
      for (const [uri, env] of targets) {
        const before = new Date().toISOString();
        expect((await at(uri, env, 'backup', 'all')).exitCode).toBe(0);
        const after = new Date().toISOString();
        // A backup by name afterwards is no whole run: it marks nothing.
        expect((await at(uri, env, 'backup', 'instances', 'keep')).exitCode).toBe(0);
        const dry = await at(uri, env, 'restore', 'all', '--skip-existing', '--dry-run', '--output', 'json');
        expect(dry.exitCode, dry.stderr).toBe(0);
        const items = parseJson<PlanJson>(dry.stdout).items.map((i) => ({ name: i.name, action: i.action, missed: !!i.missedRun }));
        expect(items, uri).toEqual([
          { name: 'vol', action: 'create', missed: true },
          { name: 'gone', action: 'create', missed: true },
          { name: 'keep', action: 'skip', missed: false },
        ]);
        const missed = parseJson<PlanJson>(dry.stdout).items.find((i) => i.name === 'gone')!.missedRun!;
        expect(missed >= before && missed <= after, `${missed} within ${before}..${after}`).toBe(true);
        const table = await at(uri, env, 'restore', 'all', '--skip-existing', '--dry-run');
        expect(table.stdout).toMatch(/instance gone .*│ not in the newest backup of all instances \(run of \d{8}T\d{6}Z\)/);
        expect(table.stdout).toMatch(/volume default\/vol .*│ not in the newest backup of all volumes/);
        expect(table.stderr).toContain('note: 2 resources have no backup from the newest run over all of their kind');
        // As of the first night, nothing was missing yet.
        const asOf = await at(uri, env, 'restore', 'all', '--skip-existing', '--dry-run', '--output', 'json', '--version', first[uri]!);
        expect(asOf.exitCode, asOf.stderr).toBe(0);
        expect(parseJson<PlanJson>(asOf.stdout).items.filter((i) => i.missedRun)).toEqual([]);
      }
      // They are restored all the same: the mark is a note, not a filter.
      const r = await at(targets[1][0], targets[1][1], 'restore', 'all', '--skip-existing', '-y');
      expect(r.exitCode, r.stderr).toBe(0);
      expect(await instanceNames(P3)).toEqual(['gone', 'keep']);
      expect(await incus('storage', 'volume', 'list', 'default', '--project', P3, '-c', 'n', '-f', 'csv')).toContain('vol');
    } finally {
      t.dispose();
    }
  });
});
