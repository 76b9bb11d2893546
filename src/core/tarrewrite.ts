import { Transform, type TransformCallback } from 'node:stream';
import { yaml } from './yaml.js';
import { BLOCK, parseHeader } from './tar.js';

/** The YAML entries come first in an Incus backup; give up looking after this many bytes. */
const LIMIT = 16 << 20;

/** A copy of header `h` for `size` bytes of data, with its checksum recomputed. */
function withSize(h: Buffer, size: number): Buffer {
  const out = Buffer.from(h);
  out.write(size.toString(8).padStart(11, '0') + '\0', 124, 12, 'ascii');
  out.fill(' ', 148, 156);
  let sum = 0;
  for (const b of out) sum += b;
  out.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return out;
}

/**
 * Rewrites the small YAML files at the start of an Incus backup tarball (backup/index.yaml and
 * backup/<kind>/backup.yaml) on the fly, so a restore can rename profiles, networks or pools
 * the archive refers to, or give an instance its identity; everything after them passes
 * through untouched. A restore checks the archive's sha256 before this stream, on the stored
 * bytes; a backup hashes after it, what it stores.
 */
export class TarYamlRewriter extends Transform {
  private buf: Buffer = Buffer.alloc(0);
  private passThrough = false;
  private seen = 0;
  /** Bytes taken in (what comes out differs by the rewritten files' change in size). */
  bytesIn = 0;

  constructor(
    private readonly rewrite: (doc: Record<string, unknown>, name: string) => void,
    private readonly wanted: (name: string) => boolean = (n) => /^(\.\/)?backup\/(index\.yaml|[^/]+\/backup\.yaml)$/.test(n),
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytesIn += chunk.length;
    if (this.passThrough) return cb(null, chunk);
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    this.seen += chunk.length;
    try {
      this.drain();
    } catch (e) {
      return cb(e as Error);
    }
    if (!this.passThrough && this.seen > LIMIT) {
      this.passThrough = true;
      this.push(this.buf);
      this.buf = Buffer.alloc(0);
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    if (this.buf.length) this.push(this.buf);
    cb();
  }

  /** Emits whole entries from the buffer; stops at the first one that is not small YAML. */
  private drain(): void {
    while (this.buf.length >= BLOCK) {
      const h = this.buf.subarray(0, BLOCK);
      const header = parseHeader(h);
      if (!header) return this.finish();
      const { type, size, padded, name } = header;
      if (type === 'x' || type === 'g' || type === 'L') {
        // Extended headers may carry the next entry's size or name; keep it simple and safe.
        if (this.buf.length < BLOCK + padded) return;
        const body = this.buf.subarray(BLOCK, BLOCK + size).toString('utf8');
        if (/ size=/.test(body)) return this.finish();
        this.forward(BLOCK + padded);
        continue;
      }
      if (!this.wanted(name)) {
        if ((type === '0' || type === '\0') && size > 0) return this.finish();
        this.forward(BLOCK + padded);
        continue;
      }
      if (this.buf.length < BLOCK + padded) return;
      const doc = yaml().parse(this.buf.subarray(BLOCK, BLOCK + size).toString('utf8')) as Record<string, unknown>;
      this.rewrite(doc, name.replace(/^\.\//, ''));
      const data = Buffer.from(yaml().stringify(doc));
      const pad = Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK);
      this.push(Buffer.concat([withSize(h, data.length), data, pad]));
      this.buf = this.buf.subarray(BLOCK + padded);
    }
  }

  private forward(n: number): void {
    this.push(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
  }

  private finish(): void {
    this.passThrough = true;
    if (this.buf.length) this.push(this.buf);
    this.buf = Buffer.alloc(0);
  }
}

type Devices = Record<string, Record<string, string>>;

/**
 * Where an Incus backup YAML keeps the instance (`container`) and its profiles: at the top of
 * backup/<kind>/backup.yaml, under `config` in backup/index.yaml.
 */
export function yamlSections(doc: Record<string, unknown>): Record<string, unknown>[] {
  return [doc, (doc.config as Record<string, unknown> | undefined) ?? {}];
}

/** Renames, in an instance's backup YAML, what --profile-map/--network-map/--pool-map say. */
export function mapInstanceYaml(doc: Record<string, unknown>, maps: { profile: Map<string, string>; network: Map<string, string>; pool: Map<string, string> }): void {
  const m = (map: Map<string, string>, v: string) => map.get(v) ?? v;
  const fixDevices = (devices: Devices | undefined) => {
    for (const d of Object.values(devices ?? {})) {
      if (d.type === 'nic' && d.network) d.network = m(maps.network, d.network);
      if (d.type === 'disk' && d.pool) d.pool = m(maps.pool, d.pool);
    }
  };
  for (const s of yamlSections(doc)) {
    const c = s.container as { profiles?: string[]; devices?: Devices; expanded_devices?: Devices } | undefined;
    if (c) {
      // Mapped onto a profile it already has (--profile-map gone=default), it is listed once:
      // Incus refuses an instance that lists a profile twice, and only after the upload.
      if (Array.isArray(c.profiles)) c.profiles = [...new Set(c.profiles.map((p) => m(maps.profile, p)))];
      fixDevices(c.devices);
      fixDevices(c.expanded_devices);
    }
    const profiles = s.profiles as { name?: string; devices?: Devices }[] | undefined;
    if (Array.isArray(profiles)) {
      const seen = new Set<string>();
      s.profiles = profiles.filter((p) => {
        if (p.name) p.name = m(maps.profile, p.name);
        fixDevices(p.devices);
        if (p.name === undefined) return true;
        if (seen.has(p.name)) return false;
        seen.add(p.name);
        return true;
      });
    }
  }
}
