import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, promises as fs, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DirBackend } from '../../src/backends/dir/index.js';
import type { Backend, BackupEntry, Problem } from '../../src/backends/types.js';
import { MANIFEST_FORMAT } from '../../src/core/manifest.js';
import type { Task, Ui } from '../../src/core/run.js';
import type { Compression, ResourceKey } from '../../src/core/types.js';
import { ArchiveDigest, readDataSubsetProblem, tarProblems, verifyBackups, verifyFailed } from '../../src/core/verify.js';

/** A stand-in tarball: data blocks, then the two zero blocks every complete tar ends with. */
function fakeTar(blocks = 40, trailer = true): Buffer {
  return Buffer.concat([randomBytes(512 * blocks), Buffer.alloc(trailer ? 1024 : 0)]);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const key: ResourceKey = { type: 'instance', project: 'default', name: 'web' };

const quietUi: Ui & { lines: string[] } = {
  lines: [],
  info() {},
  warn(m) {
    this.lines.push(m);
  },
  task(): Task {
    return { phase() {}, bytes() {}, end() {} };
  },
  wait: (_text, fn) => fn(),
};

let root: string;
let backend: DirBackend;
beforeEach(async () => {
  root = mkdtempSync(join(tmpdir(), 'ib-verify-'));
  backend = new DirBackend(root, `dir:${root}`);
  await backend.prepareWrite(() => undefined);
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

async function store(tar: Buffer, compression: Compression = 'none', when = new Date('2026-01-01T00:00:00Z'), k = key): Promise<BackupEntry> {
  const w = await backend.createWriter({ key: k, when, archiveBase: 'export.tar', compression });
  w.stream.end(tar);
  return w.commit({
    format: MANIFEST_FORMAT,
    ...k,
    timestamp: w.timestamp,
    createdAt: when.toISOString(),
    tool: { name: 'incus-backup', version: 'test' },
    incus: { serverVersion: '6.0.4' },
    consistency: { mode: 'stopped', instant: when.toISOString() },
    options: { optimized: false, withSnapshots: false, compression },
    archive: { size: tar.length, sha256: sha(tar) },
    source: {},
  });
}

async function flipByte(file: string, at: number): Promise<void> {
  const fh = await fs.open(file, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] = b[0]! ^ 0xff;
  await fh.write(b, 0, 1, at);
  await fh.close();
}

const kinds = (ps: Problem[]) => ps.map((p) => p.kind);
const archivePath = (e: BackupEntry) => join(e.location, e.manifest.archive.file);

describe('ArchiveDigest and tarProblems', () => {
  it('digests in chunks exactly like one hash of the whole, and sees the tar end blocks', () => {
    const tar = fakeTar(7);
    const d = new ArchiveDigest();
    for (let i = 0; i < tar.length; i += 100) d.update(tar.subarray(i, i + 100)); // chunks smaller than the trailer
    expect(d.bytes).toBe(tar.length);
    expect(d.sha256).toBe(sha(tar));
    expect(d.endsLikeTar).toBe(true);
  });

  it('reports a tar whose manifest agrees but which lacks the end-of-archive blocks as truncated', async () => {
    const e = await store(fakeTar(8, false));
    const d = new ArchiveDigest();
    d.update(readFileSync(archivePath(e)));
    expect(tarProblems(d, e.manifest)).toEqual([{ kind: 'truncated', message: expect.stringMatching(/end-of-archive/) as unknown as string }]);
  });

  it('expects the end-of-archive blocks of instance and volume exports only: a config backup is JSON, an image is stored as Incus exports it', async () => {
    const json = Buffer.from(JSON.stringify({ projects: [] }));
    const gz = gzipSync(randomBytes(3000));
    for (const [type, body] of [['config', json], ['image', gz], ['volume', fakeTar(8, false)]] as const) {
      const k: ResourceKey = type === 'volume' ? { type, project: 'default', pool: 'default', name: 'v' } : { type, project: type === 'config' ? '*' : 'default', name: 'x' };
      const e = await store(body, 'none', new Date('2026-01-01T00:00:00Z'), k);
      const d = new ArchiveDigest();
      d.update(body);
      expect(kinds(tarProblems(d, e.manifest)), type).toEqual(type === 'volume' ? ['truncated'] : []);
      expect(kinds((await backend.checkEntry(e, {})).problems), type).toEqual(type === 'volume' ? ['truncated'] : []);
    }
  });
});

describe('dir backend checkEntry', () => {
  it.each(['none', 'gzip', 'zstd', 'xz'] as const)('passes a sound %s archive and reads every stored byte once', async (c) => {
    const e = await store(fakeTar(), c);
    const r = await backend.checkEntry(e, {});
    expect(r.problems).toEqual([]);
    expect(r.bytesRead).toBe(e.manifest.archive.storedSize);
  });

  it('names a flipped byte in an uncompressed archive as a checksum mismatch', async () => {
    const e = await store(fakeTar());
    await flipByte(archivePath(e), 3000);
    const r = await backend.checkEntry(e, {});
    expect(kinds(r.problems)).toEqual(['checksum']);
    expect(r.problems[0]!.message).toMatch(/^checksum mismatch: export.tar sha256 /);
  });

  it('names a flipped byte in a gzip archive as a checksum mismatch of the stored file', async () => {
    const e = await store(fakeTar(), 'gzip');
    await flipByte(archivePath(e), Math.floor(e.manifest.archive.storedSize / 2));
    const r = await backend.checkEntry(e, {});
    expect(r.problems[0]).toMatchObject({ kind: 'checksum', message: expect.stringContaining('export.tar.gz') as unknown as string });
    expect(r.bytesRead).toBe(e.manifest.archive.storedSize);
  });

  it('checks the tar inside a compressed archive against the manifest', async () => {
    const e = await store(fakeTar(), 'gzip');
    // The stored file is intact, but the manifest's tar checksum is not what it holds.
    const m = JSON.parse(readFileSync(join(e.location, 'manifest.json'), 'utf8')) as { archive: { sha256: string } };
    const forged = { ...e, manifest: { ...e.manifest, archive: { ...e.manifest.archive, sha256: 'b'.repeat(64) } } };
    expect(m.archive.sha256).not.toBe('b'.repeat(64));
    const r = await backend.checkEntry(forged, {});
    expect(r.problems).toEqual([{ kind: 'checksum', message: expect.stringMatching(/^checksum mismatch: tar inside export.tar.gz/) as unknown as string }]);
  });

  it('reports a missing or disagreeing checksums.txt', async () => {
    const e = await store(fakeTar());
    await fs.writeFile(join(e.location, 'checksums.txt'), `${'c'.repeat(64)}  export.tar\n`);
    expect((await backend.checkEntry(e, {})).problems).toEqual([
      { kind: 'checksum', message: 'checksum mismatch: checksums.txt and manifest.json disagree on export.tar' },
    ]);
    await fs.rm(join(e.location, 'checksums.txt'));
    expect((await backend.checkEntry(e, {})).problems).toEqual([{ kind: 'missing', message: 'checksums.txt is missing' }]);
  });

  it('says "gone", not damaged, for a backup removed while verify ran', async () => {
    const e = await store(fakeTar());
    await backend.remove([e]);
    expect(await backend.checkEntry(e, {})).toEqual({ problems: [], bytesRead: 0, gone: true });
  });
});

describe('dir backend scan problems', () => {
  it('classifies a missing archive, a truncated one and a corrupt manifest', async () => {
    const a = await store(fakeTar(), 'none', new Date('2026-01-01T00:00:00Z'));
    const b = await store(fakeTar(), 'none', new Date('2026-01-02T00:00:00Z'));
    const c = await store(fakeTar(), 'none', new Date('2026-01-03T00:00:00Z'));
    const d = await store(fakeTar(), 'none', new Date('2026-01-04T00:00:00Z'));
    await fs.rm(archivePath(a));
    await fs.truncate(archivePath(b), 1000);
    await fs.writeFile(join(c.location, 'manifest.json'), '{"format": 1, "type": "inst');
    const { entries, broken } = await backend.scan();
    expect(entries.map((x) => x.manifest.timestamp)).toEqual([d.manifest.timestamp]);
    expect(broken.map((x) => [x.key.timestamp, x.kind, x.problem])).toEqual([
      ['20260101T000000Z', 'missing', 'archive export.tar is missing'],
      ['20260102T000000Z', 'truncated', `size mismatch: archive export.tar has 1000 bytes, manifest says ${b.manifest.archive.storedSize}`],
      ['20260103T000000Z', 'manifest', expect.stringMatching(/^invalid manifest: not valid JSON/)],
    ]);
  });
});

describe('dir backend setProtected', () => {
  it('rewrites manifest.json with protected: true, keeping every other field, and back', async () => {
    const e = await store(fakeTar());
    const path = join(e.location, 'manifest.json');
    const raw = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    await fs.writeFile(path, JSON.stringify({ ...raw, futureField: { x: 1 } }, null, 2) + '\n');
    const p = await backend.setProtected(e, true);
    expect(p.manifest.protected).toBe(true);
    const after = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    expect(after).toEqual({ ...raw, futureField: { x: 1 }, protected: true });
    expect((await backend.list())[0]!.manifest.protected).toBe(true);
    // checksums.txt covers the archive only: protection does not make the backup look damaged.
    expect((await backend.checkEntry(p, {})).problems).toEqual([]);
    const u = await backend.setProtected(p, false);
    expect(u.manifest.protected).toBeUndefined();
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({ ...raw, futureField: { x: 1 } });
    // No temporary files left next to the manifest.
    expect((await fs.readdir(e.location)).sort()).toEqual(['checksums.txt', 'export.tar', 'manifest.json']);
  });
});

describe('verifyBackups', () => {
  it('counts sound and damaged backups and the bytes read', async () => {
    const good = await store(fakeTar(), 'gzip', new Date('2026-01-01T00:00:00Z'));
    const bad = await store(fakeTar(), 'none', new Date('2026-01-02T00:00:00Z'));
    const broken = await store(fakeTar(), 'none', new Date('2026-01-03T00:00:00Z'));
    await flipByte(archivePath(bad), 100);
    await fs.rm(join(broken.location, 'manifest.json'));
    const r = await verifyBackups(backend, {}, { readData: false, deep: false, parallel: 2 }, quietUi, new AbortController().signal);
    expect(r.counts).toEqual({ ok: 1, damaged: 2, gone: 0, unknown: 0 });
    expect(r.items.map((i) => [i.timestamp, i.status, i.problems.map((p) => p.kind)])).toEqual([
      ['20260101T000000Z', 'ok', []],
      ['20260102T000000Z', 'damaged', ['checksum']],
      ['20260103T000000Z', 'damaged', ['missing']],
    ]);
    expect(r.bytesChecked).toBe(good.manifest.archive.storedSize + bad.manifest.archive.storedSize);
    expect(verifyFailed(r)).toBe(true);
  });

  it('uses a backend check() and, with --deep, streams archives of a backend without checkEntry', async () => {
    const e = await store(fakeTar());
    const calls: unknown[] = [];
    // What a restic backend would look like: no checkEntry, a repository check, openArchive.
    const restic: Backend = {
      kind: 'restic',
      uri: 'restic:/fake',
      prepareWrite: async () => undefined,
      list: async () => [e],
      scan: async () => ({ entries: [e], broken: [] }),
      createWriter: () => Promise.reject(new Error('unused')),
      openArchive: async () => Readable.from([readFileSync(archivePath(e)).subarray(0, 5000)]),
      remove: async () => ({}),
      close: async () => undefined,
      check: async (o) => {
        calls.push(o.readDataSubset);
        return { problems: [{ kind: 'repository', message: 'pack 1234 damaged' }] };
      },
    };
    const r = await verifyBackups(restic, {}, { readData: false, readDataSubset: '10%', deep: true, parallel: 1 }, quietUi, new AbortController().signal);
    expect(calls).toEqual(['10%']);
    expect(r.items.map((i) => [i.type, i.status, i.problems.map((p) => p.kind)])).toEqual([
      ['repository', 'damaged', ['repository']],
      ['instance', 'damaged', ['truncated']],
    ]);
    expect(r.repository).toHaveLength(1);
    // Without --deep only the repository check and the manifests count: with the repository
    // damaged, a backup whose own data was not read is not called sound.
    const shallow = await verifyBackups(restic, {}, { readData: false, deep: false, parallel: 1 }, quietUi, new AbortController().signal);
    expect(shallow.items.map((i) => i.status)).toEqual(['damaged', 'unknown']);
    expect(shallow.counts).toEqual({ ok: 0, damaged: 0, gone: 0, unknown: 1 });
  });

  it('lists while the repository check runs, and with --deep opens the next backup while the current one is checked', async () => {
    const entries = [
      await store(fakeTar(), 'none', new Date('2026-01-01T00:00:00Z')),
      await store(fakeTar(), 'none', new Date('2026-01-02T00:00:00Z')),
      await store(fakeTar(), 'none', new Date('2026-01-03T00:00:00Z')),
    ];
    const events: string[] = [];
    /** Notes its start and end around a moment's wait. */
    const step = async <T>(name: string, value: T, end = true): Promise<T> => {
      events.push(name);
      await new Promise((r) => setTimeout(r, 10));
      if (end) events.push(`${name} done`);
      return value;
    };
    const restic: Backend = {
      kind: 'restic',
      uri: 'restic:/fake',
      prepareWrite: async () => undefined,
      list: async () => entries,
      scan: () => step('scan', { entries, broken: [] }),
      createWriter: () => Promise.reject(new Error('unused')),
      openArchive: async () => Readable.from([]),
      remove: async () => ({}),
      close: async () => undefined,
      check: () => step('check', { problems: [] }),
      checkEntry: (e) => step(`entry ${entries.indexOf(e)}`, { problems: [], bytesRead: 0 }, false),
      prefetch: (e, _signal, opts) => events.push(`prefetch ${entries.indexOf(e)}${opts?.manifest ? ' with manifest' : ''}`),
    };
    const run = (deep: boolean, parallel: number) => {
      events.length = 0;
      return verifyBackups(restic, {}, { readData: false, deep, parallel }, quietUi, new AbortController().signal);
    };
    expect((await run(true, 1)).counts.ok).toBe(3);
    expect(events).toEqual([
      'scan',
      'check',
      'scan done',
      'check done',
      'prefetch 1 with manifest',
      'entry 0',
      'prefetch 2 with manifest',
      'entry 1',
      'entry 2',
    ]);
    // With two at a time, the third starts when the first ends: it is the one opened ahead.
    await run(true, 2);
    expect(events.filter((e) => e.startsWith('prefetch'))).toEqual(['prefetch 2 with manifest']);
    // Without --deep nothing is read per backup: nothing to open ahead.
    await run(false, 1);
    expect(events.filter((e) => e.startsWith('prefetch'))).toEqual([]);
  });
});

describe('--read-data-subset values', () => {
  it.each(['1/5', '5/5', '10%', '0.5%', '100%', '5G', '500m', '1024'])('takes %s', (v) => {
    expect(readDataSubsetProblem(v)).toBeUndefined();
  });
  it.each([
    ['0/5', /1 <= n <= t/],
    ['6/5', /1 <= n <= t/],
    ['0%', /0 < x <= 100/],
    ['150%', /0 < x <= 100/],
    ['0G', /above zero/],
    ['lots', /not n\/t, x% or a size/],
    ['-1', /not n\/t/],
  ])('refuses %s', (v, why) => {
    expect(readDataSubsetProblem(v)).toMatch(why);
  });
});
