import { Transform, type TransformCallback } from 'node:stream';
import { Sha256 } from './sha256.js';

/**
 * Feeds `chunk` to `hash` and passes it on at once; waits only when the hashing thread is
 * behind by its whole ring (see sha256.ts).
 */
function hashThrough(hash: Sha256, chunk: Buffer, cb: TransformCallback): void {
  const wait = hash.update(chunk);
  if (!wait) return cb(null, chunk);
  wait.then(
    () => cb(null, chunk),
    (e: unknown) => cb(e as Error),
  );
}

/** Passes bytes through unchanged while counting them and computing their sha256. */
export class HashingStream extends Transform {
  // Inline: a backup's pace is set by Incus or restic (see sha256.ts).
  private readonly hash = new Sha256({ offThread: false });
  bytes = 0;
  private hex?: string;

  constructor(private readonly onChunk?: (bytes: number) => void) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.onChunk?.(this.bytes);
    hashThrough(this.hash, chunk, cb);
  }

  override _flush(cb: TransformCallback): void {
    this.hash.digest().then(
      (hex) => {
        this.hex = hex;
        cb();
      },
      (e: unknown) => cb(e as Error),
    );
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.hash.dispose();
    cb(err);
  }

  /** Available once the stream has ended. */
  get sha256(): string {
    if (!this.hex) throw new Error('sha256 read before the stream ended');
    return this.hex;
  }
}

export class ChecksumMismatchError extends Error {}

/**
 * Like HashingStream, but fails the stream at its end when the bytes do not match what the
 * manifest promised, so that a consumer (an Incus import) sees an error instead of EOF and
 * discards what it received.
 */
export class VerifyingStream extends Transform {
  // On the helper thread: a restore's pace is set by this process's main thread.
  private readonly hash = new Sha256();
  bytes = 0;

  constructor(
    private readonly expected: { sha256: string; size: number; label: string },
    private readonly onChunk?: (bytes: number) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.onChunk?.(this.bytes);
    if (this.bytes > this.expected.size) {
      cb(new ChecksumMismatchError(`${this.expected.label}: archive is larger than its manifest says (${this.expected.size} bytes)`));
      return;
    }
    hashThrough(this.hash, chunk, cb);
  }

  override _flush(cb: TransformCallback): void {
    this.hash.digest().then(
      (got) => {
        if (this.bytes !== this.expected.size) {
          cb(new ChecksumMismatchError(`${this.expected.label}: archive has ${this.bytes} bytes, manifest says ${this.expected.size} (truncated?)`));
        } else if (got !== this.expected.sha256) {
          cb(new ChecksumMismatchError(`${this.expected.label}: sha256 mismatch (archive ${got.slice(0, 12)}…, manifest ${this.expected.sha256.slice(0, 12)}…)`));
        } else cb();
      },
      (e: unknown) => cb(e as Error),
    );
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.hash.dispose();
    cb(err);
  }
}
