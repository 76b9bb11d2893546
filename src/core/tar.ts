/** The little of the tar format that the streaming readers here need (ustar and GNU/pax). */
export const BLOCK = 512;

export interface TarHeader {
  /** The entry's path: ustar prefix and name joined (GNU `L` and pax `path` records override it). */
  name: string;
  size: number;
  /** The type flag: '0' or '\0' a file, 'x'/'g' pax records, 'L' a GNU long name, ... */
  type: string;
  /** The data's length rounded up to whole blocks: where the next header starts, after this one. */
  padded: number;
}

const text = (b: Buffer, off: number, len: number) => b.subarray(off, off + len).toString('utf8').replace(/\0.*$/s, '');

/** The header in block `h`, or undefined for a zero block (the end of the archive). */
export function parseHeader(h: Buffer): TarHeader | undefined {
  if (h.every((b) => b === 0)) return undefined;
  const size = parseInt(text(h, 124, 12).trim() || '0', 8);
  const name = text(h, 0, 100);
  const prefix = text(h, 345, 155);
  return { name: prefix ? `${prefix}/${name}` : name, size, type: String.fromCharCode(h[156]!), padded: size + ((BLOCK - (size % BLOCK)) % BLOCK) };
}

/** The name a GNU `L` record or a pax `x` record gives the next entry, if any. */
export function longNameOf(type: string, data: Buffer): string | undefined {
  if (type === 'L') return data.toString('utf8').replace(/\0.*$/s, '');
  if (type === 'x') return /\d+ path=([^\n]*)\n/.exec(data.toString('utf8'))?.[1];
  return undefined;
}
