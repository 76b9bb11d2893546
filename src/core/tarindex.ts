import { Transform, type TransformCallback } from 'node:stream';
import { parse as parseYaml } from 'yaml';

const BLOCK = 512;
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
      const h = buf.subarray(off, off + BLOCK);
      if (h.every((b) => b === 0)) break;
      const size = parseInt(h.subarray(124, 136).toString('ascii').replace(/\0.*$/, '').trim() || '0', 8);
      const type = String.fromCharCode(h[156]!);
      const prefix = h.subarray(345, 500).toString('utf8').replace(/\0.*$/s, '');
      let name = h.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
      if (prefix) name = `${prefix}/${name}`;
      if (longName) {
        name = longName;
        longName = undefined;
      }
      const dataEnd = off + BLOCK + size;
      if (dataEnd > buf.length) break; // need more bytes
      const data = buf.subarray(off + BLOCK, dataEnd);
      if (type === 'L') longName = data.toString('utf8').replace(/\0.*$/s, '');
      else if (type === 'x') {
        const m = /\d+ path=([^\n]*)\n/.exec(data.toString('utf8'));
        if (m) longName = m[1];
      } else if (name.replace(/^\.\//, '') === 'backup/index.yaml') {
        try {
          this.index = parseYaml(data.toString('utf8')) as Record<string, unknown>;
        } catch {
          this.index = undefined;
        }
        this.finish();
        return;
      }
      off = dataEnd + ((BLOCK - (size % BLOCK)) % BLOCK);
    }
    if (final || this.headBytes > LIMIT) this.finish();
  }

  private finish(): void {
    this.done = true;
    this.head = [];
  }
}
