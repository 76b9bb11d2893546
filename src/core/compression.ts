import type { Duplex } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import type { Compression } from './types.js';

export const EXTENSIONS: Record<Compression, string> = { none: '', gzip: '.gz', zstd: '.zst', xz: '.xz' };

// zstd and xz are not in Node 20's zlib: the system tools stream just as well.
const TOOLS: Record<'zstd' | 'xz', { compress: string[]; decompress: string[] }> = {
  zstd: { compress: ['zstd', '-q', '-c', '-T0', '-3'], decompress: ['zstd', '-q', '-d', '-c'] },
  xz: { compress: ['xz', '-c', '-T0', '-3'], decompress: ['xz', '-d', '-c'] },
};

async function tool(argv: string[]): Promise<Duplex> {
  const [file, ...args] = argv;
  // Loaded here, not at start-up: most runs never start a child process (see process.ts).
  const { execa } = await import('execa');
  return execa(file!, args, { buffer: false, stderr: 'ignore' }).duplex();
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
