import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** Passes bytes through unchanged while counting them and computing their sha256. */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  private hex?: string;

  constructor(private readonly onChunk?: (bytes: number) => void) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onChunk?.(this.bytes);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.hex = this.hash.digest('hex');
    cb();
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
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;

  constructor(
    private readonly expected: { sha256: string; size: number; label: string },
    private readonly onChunk?: (bytes: number) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onChunk?.(this.bytes);
    if (this.bytes > this.expected.size) {
      cb(new ChecksumMismatchError(`${this.expected.label}: archive is larger than its manifest says (${this.expected.size} bytes)`));
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const got = this.hash.digest('hex');
    if (this.bytes !== this.expected.size) {
      cb(new ChecksumMismatchError(`${this.expected.label}: archive has ${this.bytes} bytes, manifest says ${this.expected.size} (truncated?)`));
    } else if (got !== this.expected.sha256) {
      cb(new ChecksumMismatchError(`${this.expected.label}: sha256 mismatch (archive ${got.slice(0, 12)}…, manifest ${this.expected.sha256.slice(0, 12)}…)`));
    } else cb();
  }
}
