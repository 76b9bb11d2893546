import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DirBackend } from '../../src/backends/dir/index.js';
import { draftManifest } from '../../src/core/manifest.js';
import type { ResourceKey } from '../../src/core/types.js';

let root: string;
afterEach(() => rmSync(root, { recursive: true, force: true }));

const key: ResourceKey = { type: 'instance', project: 'default', name: 'web' };

async function write(b: DirBackend, when: Date, data: Buffer) {
  const w = await b.createWriter({ key, when, archiveBase: 'export.tar', compression: 'none' });
  await new Promise<void>((resolve, reject) => w.stream.end(data, () => resolve()).once('error', reject));
  const sha256 = createHash('sha256').update(data).digest('hex');
  return w.commit(draftManifest(key, w.timestamp, '6.0.4', { size: data.length, sha256 }, { consistency: { mode: 'stopped', instant: when.toISOString() } }));
}

describe('directory backend', () => {
  it('gives two backups of one resource in the same second distinct versions', async () => {
    root = mkdtempSync(join(tmpdir(), 'ib-dir-'));
    const b = new DirBackend(root, `dir:${root}`);
    await b.prepareWrite(() => undefined);
    const when = new Date('2026-01-02T03:04:05.100Z');
    const [a, c] = await Promise.all([write(b, when, Buffer.from('first')), write(b, new Date('2026-01-02T03:04:05.900Z'), Buffer.from('second'))]);
    expect([a.manifest.timestamp, c.manifest.timestamp].sort()).toEqual(['20260102T030405Z', '20260102T030405Z-1']);
    const listed = await b.list();
    expect(listed.map((e) => e.manifest.timestamp)).toEqual(['20260102T030405Z', '20260102T030405Z-1']);
    // Each directory holds the manifest that names it, and nothing is left in staging.
    for (const e of listed) expect(e.location.endsWith(e.manifest.timestamp)).toBe(true);
    expect(readdirSync(join(root, '.staging'))).toEqual([]);
    expect(statSync(join(listed[0]!.location, 'export.tar')).mode & 0o777).toBe(0o600);
  });

  it("a backup's directory copied under another version is damage, not a second backup of the same version", async () => {
    root = mkdtempSync(join(tmpdir(), 'ib-dir-'));
    const b = new DirBackend(root, `dir:${root}`);
    await b.prepareWrite(() => undefined);
    const made = await write(b, new Date('2026-01-02T03:04:05Z'), Buffer.from('data'));
    const copy = join(made.location, '..', '20260103T000000Z');
    cpSync(made.location, copy, { recursive: true });
    const { entries, broken } = await b.scan();
    expect(entries.map((e) => e.location)).toEqual([made.location]);
    expect(broken).toEqual([expect.objectContaining({ location: copy, kind: 'manifest', problem: 'invalid manifest: manifest does not match its location: it is of version 20260102T030405Z' })]);
  });

  it('an aborted writer leaves nothing listed and nothing staged', async () => {
    root = mkdtempSync(join(tmpdir(), 'ib-dir-'));
    const b = new DirBackend(root, `dir:${root}`);
    await b.prepareWrite(() => undefined);
    const w = await b.createWriter({ key, when: new Date(), archiveBase: 'export.tar', compression: 'none' });
    w.stream.write(Buffer.alloc(1000));
    await w.abort();
    expect(await b.list()).toEqual([]);
    expect(readdirSync(join(root, '.staging'))).toEqual([]);
  });

  it('before a backup, removes what a killed run of this host left staged, and says so', async () => {
    root = mkdtempSync(join(tmpdir(), 'ib-dir-'));
    const b = new DirBackend(root, `dir:${root}`);
    await b.prepareWrite(() => undefined);
    // pid_max is at most 2^22: no process has this pid.
    const left = join(root, '.staging', `${hostname()}_${2 ** 22 + 7}_dddddddd`);
    mkdirSync(left, { recursive: true });
    writeFileSync(join(left, 'export.tar.partial'), Buffer.alloc(4096));
    const notices: string[] = [];
    await b.prepareWrite((m) => notices.push(m));
    expect(readdirSync(join(root, '.staging'))).toEqual([]);
    expect(notices).toEqual([`removed 1 leftover(s) of runs that never finished (partial backups, half-done deletions) from ${root}`]);
  });

  it('under the writer lock, removes what dead runs of any host left staged or half-deleted', async () => {
    root = mkdtempSync(join(tmpdir(), 'ib-dir-'));
    const b = new DirBackend(root, `dir:${root}`);
    await b.prepareWrite(() => undefined);
    // A host that died (or was renamed) during a backup and during a prune; and this host's
    // entry whose pid is alive again (reused): none of them can be judged by its pid.
    const left = [
      join(root, '.staging', 'oldhost_4242_aaaaaaaa'),
      join(root, '.staging', `${hostname()}_${process.ppid}_bbbbbbbb`),
      join(root, '.trash', 'oldhost_4243_cccccccc'),
    ];
    for (const d of left) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'export.tar.partial'), Buffer.alloc(4096));
    }
    // Without the lock only this host's dead runs are judged: these stay.
    await b.prepareWrite(() => undefined);
    expect(readdirSync(join(root, '.staging')).sort()).toEqual(['oldhost_4242_aaaaaaaa', `${hostname()}_${process.ppid}_bbbbbbbb`].sort());
    const notices: string[] = [];
    const release = await b.lock('backup', { waitMs: 0, onNotice: (m) => notices.push(m) });
    try {
      expect(readdirSync(join(root, '.staging'))).toEqual([]);
      expect(readdirSync(join(root, '.trash'))).toEqual([]);
      expect(notices).toEqual([`removed 3 leftover(s) of runs that never finished (partial backups, half-done deletions) from ${root}`]);
      // What this run stages under its lock is its own, and stays until it commits.
      const w = await b.createWriter({ key, when: new Date('2026-01-02T03:04:05Z'), archiveBase: 'export.tar', compression: 'none' });
      expect(readdirSync(join(root, '.staging'))).toHaveLength(1);
      await w.abort();
    } finally {
      await release();
    }
  });
});
