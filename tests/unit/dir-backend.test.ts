import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
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
});
