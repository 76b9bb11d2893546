import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, freePort, freshHost, incus, incusJson, parseJson, tempTarget } from './helpers.js';

const P = `t-img-${randomBytes(3).toString('hex')}`;
let target: ReturnType<typeof tempTarget>;
let fp = '';

interface ImageJson {
  fingerprint: string;
  aliases: { name: string }[];
  properties: Record<string, string>;
  profiles: string[];
  expires_at: string;
  filename: string;
}

beforeAll(async () => {
  target = tempTarget();
  // A project with its own images, holding a copy of the test image under its own alias.
  await incus('project', 'create', P, '-c', 'features.images=true', '-c', 'features.profiles=false');
  await incus('image', 'export', 'ib-busybox', join(target.dir, 'bb'));
  await incus('image', 'import', join(target.dir, 'bb.tar'), '--project', P, '--alias', 'bb-local');
  rmSync(join(target.dir, 'bb.tar'));
  const images = await incusJson<ImageJson[]>('/1.0/images?recursion=1', P);
  fp = images[0]!.fingerprint;
  // Launched without a profile by default (what `incus image edit` sets), and it expires.
  await incus('query', '-X', 'PUT', `/1.0/images/${fp}?project=${P}`, '-d', JSON.stringify({ properties: images[0]!.properties, public: false, auto_update: false, profiles: [], expires_at: '2031-05-05T00:00:00Z' }));
  await incus('image', 'set-property', fp, 'user.purpose', 'incus-backup test', '--project', P);
});

afterAll(async () => {
  for (const i of await incusJson<ImageJson[]>('/1.0/images?recursion=1', P).catch(() => [])) {
    await incus('image', 'delete', i.fingerprint, '--project', P).catch(() => undefined);
  }
  await incus('project', 'delete', P).catch(() => undefined);
  target?.dispose();
});

describe('images', () => {
  it('backs up local images with aliases and properties, and lists them', async () => {
    const r = await cli(['backup', 'images', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(parseJson<{ type: string; name: string; status: string }[]>(r.stdout)).toEqual([
      expect.objectContaining({ type: 'image', name: fp.slice(0, 12), status: 'ok' }),
    ]);
    const list = parseJson<{ type: string; name: string; sha256: string }[]>((await cli(['list', 'images', '--project', P, '--target', target.uri, '--output', 'json'])).stdout);
    expect(list).toHaveLength(1);
    // A unified image's fingerprint is the sha256 of its tarball: what we stored is the image.
    // An image never changes, so its backup is neither of a stopped nor of a live source.
    expect(list[0]).toMatchObject({ type: 'image', name: fp, sha256: fp, consistency: 'immutable' });
  });

  it('restores a deleted image with its alias and properties', async () => {
    await incus('image', 'delete', fp, '--project', P);
    const dry = await cli(['restore', 'images', '--dry-run', '--project', P, '--target', target.uri]);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/create .*bb-local/);
    expect(await incusJson<unknown[]>('/1.0/images', P)).toEqual([]);
    const r = await cli(['restore', 'images', '-y', '--project', P, '--target', target.uri]);
    expect(r.exitCode, r.stderr).toBe(0);
    const img = await incusJson<ImageJson>(`/1.0/images/${fp}`, P);
    expect(img.aliases.map((a) => a.name)).toEqual(['bb-local']);
    expect(img.properties['user.purpose']).toBe('incus-backup test');
    // Incus would give it ["default"], no expiry and no file name.
    expect(img.profiles).toEqual([]);
    expect(new Date(img.expires_at).toISOString()).toBe('2031-05-05T00:00:00.000Z');
    expect(img.filename).toBe('bb.tar');
    // A second restore has nothing to do.
    const again = await cli(['restore', 'images', '-y', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(parseJson<{ action: string }[]>(again.stdout)[0]!.action).toBe('skip');
    // Changed since: left as it is, which the plan says.
    await incus('image', 'set-property', fp, 'user.purpose', 'changed', '--project', P);
    const differs = await cli(['restore', 'images', '--dry-run', '--project', P, '--target', target.uri]);
    expect(differs.stdout).toMatch(/there already; its properties differ from the backup's and are left as they are/);
    expect((await incusJson<ImageJson>(`/1.0/images/${fp}`, P)).properties['user.purpose']).toBe('changed');
    await incus('image', 'set-property', fp, 'user.purpose', 'incus-backup test', '--project', P);
  });

  it('restore all brings images back with the rest of the set, and a second run has nothing to do', async () => {
    const b = await cli(['backup', 'all', '--with-images', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(b.exitCode, b.stderr).toBe(0);
    expect(parseJson<{ type: string }[]>(b.stdout).map((r) => r.type)).toContain('image');
    await incus('image', 'delete', fp, '--project', P);

    const dry = await cli(['restore', 'all', '--dry-run', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    const plan = parseJson<{ images: { fingerprint: string; project: string; action: string; aliases: string[] }[] }>(dry.stdout);
    expect(plan.images).toEqual([expect.objectContaining({ fingerprint: fp, project: P, action: 'create', aliases: ['bb-local'] })]);
    expect(await incusJson<unknown[]>('/1.0/images', P)).toEqual([]);

    const r = await cli(['restore', 'all', '-y', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(parseJson<{ type: string; status: string; action: string }[]>(r.stdout)).toEqual([expect.objectContaining({ type: 'image', status: 'ok', action: 'create' })]);
    const img = await incusJson<ImageJson>(`/1.0/images/${fp}`, P);
    expect(img.aliases.map((a) => a.name)).toEqual(['bb-local']);
    expect(img.properties['user.purpose']).toBe('incus-backup test');

    // Present again: an alias that was removed is given back, the image is not imported twice.
    await incus('image', 'alias', 'delete', 'bb-local', '--project', P);
    const aliasOnly = await cli(['restore', 'all', '--dry-run', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(parseJson<{ images: { action: string }[] }>(aliasOnly.stdout).images.map((i) => i.action)).toEqual(['aliases']);
    const again = await cli(['restore', 'all', '-y', '--project', P, '--target', target.uri]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect((await incusJson<ImageJson>(`/1.0/images/${fp}`, P)).aliases.map((a) => a.name)).toEqual(['bb-local']);
    const nothing = await cli(['restore', 'all', '--dry-run', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(parseJson<{ images: { action: string }[] }>(nothing.stdout).images.map((i) => i.action)).toEqual(['skip']);
  });

  it("leaves a project without images of its own to the default project's images, backing up and restoring", async () => {
    const shared = `${P}-shared`;
    await incus('project', 'create', shared, '-c', 'features.images=false');
    try {
      // It sees the default project's images (ib-busybox): not its to back up.
      const dry = await cli(['backup', 'images', '--project', shared, '--target', target.uri, '--dry-run', '--output', 'json']);
      expect(dry.exitCode, dry.stderr).toBe(0);
      expect(parseJson<unknown[]>(dry.stdout)).toEqual([]);
      expect(dry.stderr).toMatch(new RegExp(`project ${shared} has no images of its own: the \\d+ it sees are project default's to back up \\(--project default\\)`));
      // Restored into it, an image goes where Incus puts it: the default project, as the plan says.
      const plan = await cli(['restore', 'all', '--dry-run', '--project', P, '--project-map', `${P}=${shared}`, '--target', target.uri, '--output', 'json']);
      expect(parseJson<{ images: { fingerprint: string; project: string }[] }>(plan.stdout).images).toEqual([expect.objectContaining({ fingerprint: fp, project: 'default' })]);
    } finally {
      await incus('project', 'delete', shared).catch(() => undefined);
    }
  });

  it('leaves out an image cached from an image server (it can be fetched again) unless --all-images, and restores it', async () => {
    // The image server: a second incusd serving a public image over HTTPS. The sandbox daemon
    // caches it when an instance is created from it, as from images.linuxcontainers.org.
    const server = await freshHost();
    const conf = mkdtempSync(join(tmpdir(), 'ib-remotes-')); // the incus client's remotes, not the user's
    const own = { INCUS_CONF: conf };
    try {
      const port = await freePort();
      await server.incus('config', 'set', 'core.https_address', `127.0.0.1:${port}`);
      await incus('image', 'export', 'ib-busybox', join(conf, 'bb'));
      await server.incus('image', 'import', join(conf, 'bb.tar'), '--alias', 'bb');
      // Published from an instance: an image of its own (another fingerprint than ib-busybox's).
      await server.incus('create', 'bb', 'c', '--storage', 'default', '--no-profiles');
      await server.incus('publish', 'c', '--public', '--alias', 'served');
      await execa('incus', ['remote', 'add', 'srv', `https://127.0.0.1:${port}`, '--public', '--accept-certificate'], { env: own, stdin: 'ignore' });
      await execa('incus', ['create', 'srv:served', 'fromsrv', '--project', P, '--storage', 'default', '--no-profiles'], { env: own, stdin: 'ignore' });
      await incus('delete', 'fromsrv', '--project', P);
      const cached = (await incusJson<(ImageJson & { cached: boolean })[]>('/1.0/images?recursion=1', P)).find((i) => i.cached);
      expect(cached, 'the sandbox cached the served image').toBeDefined();

      const names = async (...extra: string[]) => {
        const r = await cli(['backup', 'images', '--project', P, '--target', target.uri, '--output', 'json', ...extra]);
        expect(r.exitCode, r.stderr).toBe(0);
        return parseJson<{ name: string; status: string }[]>(r.stdout).map((x) => `${x.name}:${x.status}`);
      };
      expect(await names()).toEqual([`${fp.slice(0, 12)}:ok`]);
      expect((await names('--all-images')).sort()).toEqual([`${cached!.fingerprint.slice(0, 12)}:ok`, `${fp.slice(0, 12)}:ok`].sort());

      await incus('image', 'delete', cached!.fingerprint, '--project', P);
      const r = await cli(['restore', 'images', cached!.fingerprint.slice(0, 12), '-y', '--project', P, '--target', target.uri]);
      expect(r.exitCode, r.stderr).toBe(0);
      const back = await incusJson<ImageJson & { cached: boolean }>(`/1.0/images/${cached!.fingerprint}`, P);
      expect(back.fingerprint).toBe(cached!.fingerprint);
    } finally {
      await incus('delete', '-f', 'fromsrv', '--project', P).catch(() => undefined);
      await server.dispose();
      rmSync(conf, { recursive: true, force: true });
    }
  });

  it('refuses an unknown fingerprint', async () => {
    const r = await cli(['backup', 'images', 'deadbeef', '--project', P, '--target', target.uri]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/no image deadbeef/);
    expect(r.stderr).toMatch(new RegExp(`^Hint: \`incus image list --project ${P}\` shows the fingerprints$`, 'm'));
    const short = await cli(['backup', 'images', fp.slice(0, 3), '--project', P, '--target', target.uri]);
    expect(short.exitCode).toBe(2);
    expect(short.stderr).toMatch(/^Error: image fingerprint prefix "[0-9a-f]{3}" is too short$/m);
  });
});
