import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { HashingStream, VerifyingStream } from '../../src/core/hashing.js';
import { Sha256 } from '../../src/core/sha256.js';

const MiB = 1 << 20;

function inline(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Feeds `data` in chunks of the given sizes (cycled), waiting whenever update() asks to. */
async function hashInChunks(data: Buffer, sizes: number[], offThread = true): Promise<{ hex: string; waits: number }> {
  const h = new Sha256({ offThread });
  let waits = 0;
  for (let off = 0, i = 0; off < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, data.length - off);
    const wait = h.update(data.subarray(off, off + n));
    if (wait) {
      waits++;
      await wait;
    }
    off += n;
  }
  return { hex: await h.digest(), waits };
}

describe('Sha256 on the helper thread', () => {
  // Sizes around the 1 MiB slot and the 4-slot ring, in chunkings that straddle slot borders.
  const sizes = [0, 1, MiB - 1, MiB, MiB + 1, 4 * MiB, 4 * MiB + 7, Math.round(9.5 * MiB)];
  for (const size of sizes) {
    it(`matches node:crypto for ${size} bytes`, async () => {
      const data = randomBytes(size);
      for (const chunks of [[size || 1], [65536], [1000, 70000, 3 * MiB], [5 * MiB]]) {
        expect((await hashInChunks(data, chunks)).hex, `chunks ${chunks.join(',')}`).toBe(inline(data));
      }
      expect((await hashInChunks(data, [65536], false)).hex, 'inline').toBe(inline(data));
    });
  }

  it('makes a fast producer wait instead of queueing without bound, and runs hashes side by side', async () => {
    const a = randomBytes(12 * MiB);
    const b = randomBytes(7 * MiB + 3);
    const [ra, rb] = await Promise.all([hashInChunks(a, [3 * MiB]), hashInChunks(b, [MiB / 2])]);
    expect(ra.hex).toBe(inline(a));
    expect(rb.hex).toBe(inline(b));
    // 12 MiB through a 4 MiB ring in 3 MiB pieces cannot go through without waiting.
    expect(ra.waits).toBeGreaterThan(0);
  });

  it('copies the bytes: the caller may overwrite its buffer right after update()', async () => {
    const data = randomBytes(3 * MiB);
    const h = new Sha256();
    const scratch = Buffer.alloc(64 * 1024);
    for (let off = 0; off < data.length; off += scratch.length) {
      data.copy(scratch, 0, off, off + scratch.length);
      const wait = h.update(scratch);
      scratch.fill(0xaa);
      if (wait) await wait;
    }
    expect(await h.digest()).toBe(inline(data));
  });

  it('refuses updates after digest() and stays usable for new hashes after a dispose()', async () => {
    const h = new Sha256();
    await h.update(randomBytes(2 * MiB));
    const dropped = new Sha256();
    await dropped.update(randomBytes(2 * MiB));
    dropped.dispose();
    await h.digest();
    expect(() => h.update(Buffer.from('x'))).toThrow(/after digest/);
    const again = randomBytes(MiB + 5);
    expect((await hashInChunks(again, [MiB])).hex).toBe(inline(again));
  });

  it('HashingStream (inline) and VerifyingStream (on the helper) give the answers of node:crypto', async () => {
    const data = randomBytes(5 * MiB + 123);
    const hs = new HashingStream();
    await pipeline(Readable.from([data.subarray(0, 100), data.subarray(100)]), hs, new Writable({ write: (_c, _e, cb) => cb() }));
    expect(hs.sha256).toBe(inline(data));
    expect(hs.bytes).toBe(data.length);

    const ok = new VerifyingStream({ sha256: inline(data), size: data.length, label: 'x' });
    await pipeline(Readable.from([data]), ok, new Writable({ write: (_c, _e, cb) => cb() }));
    const flipped = Buffer.from(data);
    flipped[3 * MiB] = flipped[3 * MiB]! ^ 1;
    const bad = new VerifyingStream({ sha256: inline(data), size: data.length, label: 'x' });
    await expect(pipeline(Readable.from([flipped]), bad, new Writable({ write: (_c, _e, cb) => cb() }))).rejects.toThrow(/sha256 mismatch/);
  });
});
