import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { loadUndiciClient } from '../../src/incus/client.js';

const require = createRequire(import.meta.url);

describe('loading undici', () => {
  it('loads only the HTTP/1 client and its request API, not the package entry point', () => {
    const Client = loadUndiciClient();
    for (const m of ['request', 'stream', 'pipeline']) expect(typeof (Client.prototype as unknown as Record<string, unknown>)[m]).toBe('function');
    // Fails when an undici upgrade moves the files: the client would then fall back to the
    // whole package (~30 ms more per command); update the paths in src/incus/client.ts.
    const loaded = Object.keys(require.cache);
    expect(loaded.some((f) => f.endsWith('/undici/lib/dispatcher/client.js'))).toBe(true);
    expect(loaded.some((f) => f.endsWith('/undici/index.js'))).toBe(false);
    expect(loaded.some((f) => f.includes('/undici/lib/web/'))).toBe(false);
  });
});
