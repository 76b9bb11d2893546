import type { Duplex } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import { filterProcess } from './process.js';
import type { Compression } from './types.js';

export const EXTENSIONS: Record<Compression, string> = { none: '', gzip: '.gz', zstd: '.zst', xz: '.xz' };

// zstd and xz are not in Node 20's zlib: the system tools stream just as well.
const TOOLS: Record<'zstd' | 'xz', { compress: string[]; decompress: string[] }> = {
  zstd: { compress: ['zstd', '-q', '-c', '-T0', '-3'], decompress: ['zstd', '-q', '-d', '-c'] },
  xz: { compress: ['xz', '-c', '-T0', '-3'], decompress: ['xz', '-d', '-c'] },
};

function tool(argv: string[]): Promise<Duplex> {
  const [file, ...args] = argv;
  return filterProcess(file!, args);
}

/** A compressing transform for `c`, or undefined for none. */
export async function compressor(c: Compression): Promise<Duplex | undefined> {
  if (c === 'none') return undefined;
  if (c === 'gzip') return createGzip({ level: 6 });
  return tool(TOOLS[c].compress);
}

export async function decompressor(c: Compression): Promise<Duplex | undefined> {
  if (c === 'none') return undefined;
  if (c === 'gzip') return createGunzip();
  return tool(TOOLS[c].decompress);
}

export function compressionFromFile(file: string): Compression {
  for (const [c, ext] of Object.entries(EXTENSIONS) as [Compression, string][]) {
    if (ext && file.endsWith(ext)) return c;
  }
  return 'none';
}
