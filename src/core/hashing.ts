import { Transform, type TransformCallback } from 'node:stream';
import { Reclaimer } from './reclaim.js';
import { Sha256 } from './sha256.js';
import { ExitCode, IbError } from '../errors.js';

/**
 * Passes bytes through unchanged while counting them and computing their sha256. Backups hash
 * inline: their pace is set by Incus or restic (see sha256.ts).
 */
export class HashingStream extends Transform {
  bytes = 0;
  private hex?: string;
  private readonly reclaimer = new Reclaimer();

  constructor(
    private readonly onChunk?: (bytes: number) => void,
    private readonly hash: Sha256 = new Sha256({ offThread: false }),
  ) {
    super();
  }

  /** Why to fail as soon as the byte count is wrong (see VerifyingStream). */
  protected tooLong(): Error | undefined {
    return undefined;
  }

  /** Why to fail at the end, given the digest (see VerifyingStream). */
  protected mismatch(_hex: string): Error | undefined {
    return undefined;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.reclaimer.add(chunk.length);
    this.onChunk?.(this.bytes);
    const bad = this.tooLong();
    if (bad) return cb(bad);
    // Passed on at once; waits only when the hashing thread is behind by its whole ring.
    const wait = this.hash.update(chunk);
    if (!wait) return cb(null, chunk);
    wait.then(
      () => cb(null, chunk),
      (e: unknown) => cb(e as Error),
    );
  }

  override _flush(cb: TransformCallback): void {
    this.hash.digest().then(
      (hex) => {
        this.hex = hex;
        cb(this.mismatch(hex));
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

/** The bytes read back are not those the manifest promised: the backup is damaged. */
export class ChecksumMismatchError extends IbError {
  constructor(message: string) {
    super(message, ExitCode.failed, 'the backup is damaged: `incus-backup verify` says more; an older one is restored with --version (`incus-backup list` shows them)');
    this.name = 'ChecksumMismatchError';
  }
}

/**
 * Like HashingStream, but fails the stream at its end when the bytes do not match what the
 * manifest promised, so that a consumer (an Incus import) sees an error instead of EOF and
 * discards what it received. Hashes on the helper thread: a restore's pace is set by this
 * process's main thread.
 */
export class VerifyingStream extends HashingStream {
  constructor(
    private readonly expected: { sha256: string; size: number; label: string },
    onChunk?: (bytes: number) => void,
  ) {
    super(onChunk, new Sha256());
  }

  protected override tooLong(): Error | undefined {
    if (this.bytes <= this.expected.size) return undefined;
    return new ChecksumMismatchError(`${this.expected.label}: archive is larger than its manifest says (${this.expected.size} bytes)`);
  }

  protected override mismatch(got: string): Error | undefined {
    const e = this.expected;
    if (this.bytes !== e.size) return new ChecksumMismatchError(`${e.label}: archive has ${this.bytes} bytes, manifest says ${e.size} (truncated?)`);
    if (got !== e.sha256) return new ChecksumMismatchError(`${e.label}: sha256 mismatch (archive ${got.slice(0, 12)}…, manifest ${e.sha256.slice(0, 12)}…)`);
    return undefined;
  }
}
