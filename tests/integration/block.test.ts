import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, incus, tempTarget, testProject } from './helpers.js';

let project: { name: string; dispose: () => Promise<void> };
let target: ReturnType<typeof tempTarget>;
let P: string;

// On the dir driver a block volume is a raw file; the test reads it directly to compare contents.
const image = (name: string) => join(process.env.INCUS_DIR!, 'storage-pools/default/custom', `${P}_${name}`, 'root.img');
const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

beforeAll(async () => {
  project = await testProject('blk');
  P = project.name;
  target = tempTarget();
  await incus('storage', 'volume', 'create', 'default', 'raw', '--type=block', 'size=8MiB', '--project', P);
  await execa('dd', ['if=/dev/urandom', `of=${image('raw')}`, 'bs=1M', 'count=8', 'conv=notrunc'], { stdin: 'ignore' });
});

afterAll(async () => {
  await project?.dispose();
  target?.dispose();
});

describe('block custom volumes', () => {
  it('round-trips byte for byte', async () => {
    const before = sha(image('raw'));
    const b = await cli(['backup', 'volumes', 'default/raw', '--project', P, '--target', target.uri]);
    expect(b.exitCode, b.stderr).toBe(0);
    const r = await cli(['restore', 'volume', 'default/raw', '--target-name', 'raw2', '-y', '--project', P, '--target', target.uri]);
    expect(r.exitCode, r.stderr).toBe(0);
    const vol = JSON.parse(await incus('query', `/1.0/storage-pools/default/volumes/custom/raw2?project=${P}`)) as { content_type: string };
    expect(vol.content_type).toBe('block');
    expect(sha(image('raw2'))).toBe(before);
  });

  it('will not swap a block backup in for a filesystem volume a container uses, before stopping anything', async () => {
    await incus('storage', 'volume', 'create', 'default', 'fsv', '--project', P);
    await incus('launch', 'ib-busybox', 'user', '--project', P, '-s', 'default');
    await incus('storage', 'volume', 'attach', 'default', 'fsv', 'user', '/mnt/fsv', '--project', P);
    try {
      const r = await cli(['restore', 'volume', 'default/raw', '--target-name', 'fsv', '--replace', '--force', '--project', P, '--target', target.uri]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/^Error: a replace cannot swap in a volume of another content type where instances use it: volume \S+\/default\/fsv \(a filesystem volume attached to user; the backup is of a block volume\)$/m);
      expect(r.stdout).toMatch(/refused: a block backup for an attached filesystem volume/);
      expect(JSON.parse(await incus('query', `/1.0/instances/user?project=${P}`)).status).toBe('Running');
    } finally {
      await incus('delete', '-f', 'user', '--project', P).catch(() => undefined);
      await incus('storage', 'volume', 'delete', 'default', 'fsv', '--project', P).catch(() => undefined);
    }
  });
});
