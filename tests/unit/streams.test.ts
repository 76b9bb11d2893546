import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { ChecksumMismatchError, HashingStream, VerifyingStream } from '../../src/core/hashing.js';
import { TarIndexCapture } from '../../src/core/tarindex.js';
import { mapPool, Semaphore } from '../../src/core/pool.js';
import { InterruptedError } from '../../src/errors.js';
import { mapInstanceYaml, TarYamlRewriter } from '../../src/core/tarrewrite.js';

/** A minimal ustar archive built by hand: header blocks, data padded to 512, two zero blocks. */
function tar(entries: { name: string; data: Buffer }[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 'utf8');
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(e.data.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write('0', 156);
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(h, e.data, Buffer.alloc((512 - (e.data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

const sink = () => new Writable({ write: (_c, _e, cb) => cb() });

/** Feeds `buf` in small chunks, as a socket would. */
function chunked(buf: Buffer, size = 100): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts);
}

describe('streaming helpers', () => {
  it('HashingStream counts and hashes what passes through', async () => {
    const data = Buffer.from('x'.repeat(100_000));
    const h = new HashingStream();
    await pipeline(chunked(data), h, sink());
    expect(h.bytes).toBe(100_000);
    expect(h.sha256).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('VerifyingStream passes matching bytes and fails on a flipped byte, a short or a long stream', async () => {
    const data = Buffer.from('hello world'.repeat(1000));
    const expected = { sha256: createHash('sha256').update(data).digest('hex'), size: data.length, label: 't' };
    await expect(pipeline(chunked(data), new VerifyingStream(expected), sink())).resolves.toBeUndefined();
    const flipped = Buffer.from(data);
    flipped[5000] = flipped[5000]! ^ 1;
    await expect(pipeline(chunked(flipped), new VerifyingStream(expected), sink())).rejects.toThrow(/sha256 mismatch/);
    await expect(pipeline(chunked(data.subarray(0, 100)), new VerifyingStream(expected), sink())).rejects.toThrow(/truncated/);
    await expect(pipeline(chunked(Buffer.concat([data, data])), new VerifyingStream(expected), sink())).rejects.toBeInstanceOf(ChecksumMismatchError);
  });

  it('TarIndexCapture reads backup/index.yaml from the first entries, across chunk borders', async () => {
    const archive = tar([
      { name: 'backup/index.yaml', data: Buffer.from('name: web\npool: default\nsnapshots: []\n') },
      { name: 'backup/container/rootfs/x', data: Buffer.alloc(3000, 7) },
    ]);
    const cap = new TarIndexCapture();
    await pipeline(chunked(archive, 37), cap, sink());
    expect(cap.index).toEqual({ name: 'web', pool: 'default', snapshots: [] });
  });

  it('TarIndexCapture finds nothing in an archive without an index', async () => {
    const cap = new TarIndexCapture();
    await pipeline(chunked(tar([{ name: 'other', data: Buffer.from('x') }])), cap, sink());
    expect(cap.index).toBeUndefined();
  });

  it('mapPool keeps order, limits concurrency and isolates failures', async () => {
    let running = 0;
    let peak = 0;
    const out = await mapPool([5, 1, 3, 2], 2, async (n) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, n * 5));
      running--;
      if (n === 3) throw new Error('three');
      return n * 10;
    });
    expect(peak).toBe(2);
    expect(out.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).toEqual([50, 10, 'three', 20]);
  });

  it('Semaphore admits n holders, first come first served, and a release counts once', async () => {
    const sem = new Semaphore(2);
    const order: string[] = [];
    const r1 = await sem.acquire();
    const r2 = await sem.acquire();
    const third = sem.acquire().then((r) => (order.push('third'), r));
    const fourth = sem.acquire().then((r) => (order.push('fourth'), r));
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual([]);
    r1();
    r1(); // a second call must not let two more in
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual(['third']);
    r2();
    const [r3, r4] = await Promise.all([third, fourth]);
    expect(order).toEqual(['third', 'fourth']);
    r3();
    r4();
    // Both places are free again: two immediate acquisitions, the third waits.
    await sem.acquire();
    await sem.acquire();
    let waited = true;
    void sem.acquire().then(() => (waited = false));
    await new Promise((r) => setTimeout(r, 5));
    expect(waited).toBe(true);

    // Aborted while waiting: fails like an item never started, and gives its place back.
    const one = new Semaphore(1);
    const held = await one.acquire();
    const stop = new AbortController();
    const late = one.acquire(stop.signal);
    stop.abort();
    held();
    await expect(late).rejects.toBeInstanceOf(InterruptedError);
    let got = false;
    void one.acquire().then(() => (got = true));
    await new Promise((r) => setTimeout(r, 5));
    expect(got).toBe(true);
  });

  it('mapPool starts nothing more once its signal is aborted', async () => {
    const stop = new AbortController();
    const started: number[] = [];
    const out = await mapPool(
      [1, 2, 3, 4],
      1,
      async (n) => {
        started.push(n);
        if (n === 2) stop.abort();
        return n;
      },
      stop.signal,
    );
    expect(started).toEqual([1, 2]);
    expect(out.slice(0, 2).map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
    for (const r of out.slice(2)) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(InterruptedError);
    }
  });
});

describe('TarYamlRewriter', () => {
  const collect = () => {
    const chunks: Buffer[] = [];
    const w = new Writable({ write: (c: Buffer, _e, cb) => (chunks.push(c), cb()) });
    return { w, data: () => Buffer.concat(chunks) };
  };

  it('renames profiles, networks and pools in the backup YAML and leaves the rest byte for byte', async () => {
    const rootfs = Buffer.alloc(5000, 9);
    const yamlDoc = 'container:\n  profiles: [default, web]\n  devices:\n    eth0: {type: nic, network: lan}\n    data: {type: disk, pool: fast, source: data, path: /srv}\nprofiles:\n  - name: web\n    devices: {}\n';
    const archive = tar([
      { name: 'backup/index.yaml', data: Buffer.from(`name: app\npool: fast\nconfig:\n${yamlDoc.replace(/^/gm, '  ')}`) },
      { name: 'backup/container/backup.yaml', data: Buffer.from(yamlDoc) },
      { name: 'backup/container/rootfs/f', data: rootfs },
    ]);
    const out = collect();
    const maps = { profile: new Map([['web', 'web-staging']]), network: new Map([['lan', 'lan2']]), pool: new Map([['fast', 'slow']]) };
    await pipeline(chunked(archive, 333), new TarYamlRewriter((doc) => mapInstanceYaml(doc, maps)), out.w);
    const cap = new TarIndexCapture();
    await pipeline(chunked(out.data()), cap, sink());
    const c = (cap.index!.config as { container: { profiles: string[]; devices: Record<string, Record<string, string>> } }).container;
    expect(c.profiles).toEqual(['default', 'web-staging']);
    expect(c.devices.eth0!.network).toBe('lan2');
    expect(c.devices.data!.pool).toBe('slow');
    // The rootfs entry (and the end-of-archive blocks) are untouched at the end of the stream.
    expect(out.data().includes(rootfs)).toBe(true);
    expect(out.data().length % 512).toBe(0);
    const text = out.data().toString('latin1');
    expect(text).toContain('web-staging');
    expect(text).not.toMatch(/network: lan\n/);
  });
});
