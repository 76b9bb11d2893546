import { Transform, type TransformCallback } from 'node:stream';
import { yaml } from './yaml.js';
import { BLOCK, longNameOf, parseHeader } from './tar.js';

const LIMIT = 4 << 20; // index.yaml is the first entry; never hold more than this looking for it

/**
 * Passes a tar stream through untouched while reading `backup/index.yaml` from its first
 * entries, so the manifest can carry it without a second read of the archive.
 */
export class TarIndexCapture extends Transform {
  private head: Buffer[] = [];
  private headBytes = 0;
  private done = false;
  index?: Record<string, unknown>;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (!this.done) {
      this.head.push(chunk);
      this.headBytes += chunk.length;
      this.tryParse(false);
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (!this.done) this.tryParse(true);
    cb();
  }

  private tryParse(final: boolean): void {
    const buf = Buffer.concat(this.head);
    let off = 0;
    let longName: string | undefined;
    while (off + BLOCK <= buf.length) {
      const h = parseHeader(buf.subarray(off, off + BLOCK));
      if (!h) break;
      const name = longName ?? h.name;
      longName = undefined;
      const dataEnd = off + BLOCK + h.size;
      if (dataEnd > buf.length) break; // need more bytes
      const data = buf.subarray(off + BLOCK, dataEnd);
      if (h.type === 'L' || h.type === 'x') longName = longNameOf(h.type, data);
      else if (name.replace(/^\.\//, '') === 'backup/index.yaml') {
        try {
          this.index = yaml().parse(data.toString('utf8')) as Record<string, unknown>;
        } catch {
          this.index = undefined;
        }
        this.finish();
        return;
      }
      off += BLOCK + h.padded;
    }
    if (final || this.headBytes > LIMIT) this.finish();
  }

  private finish(): void {
    this.done = true;
    this.head = [];
  }
}
