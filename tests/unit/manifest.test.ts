import { describe, expect, it } from 'vitest';
import { compareTimestamps, formatTimestamp, ManifestError, parseManifest, timestampToDate, validateManifest } from '../../src/core/manifest.js';

const sha = 'a'.repeat(64);
const good = {
  format: 1,
  type: 'instance',
  project: 'default',
  name: 'web',
  timestamp: '20260102T030405Z',
  createdAt: '2026-01-02T03:04:06.000Z',
  tool: { name: 'incus-backup', version: '0.1.0' },
  incus: { serverVersion: '6.0.4' },
  consistency: { mode: 'snapshot', instant: '2026-01-02T03:04:05.000Z' },
  options: { optimized: false, withSnapshots: false, compression: 'none' },
  archive: { file: 'export.tar', size: 10, sha256: sha, storedSize: 10, storedSha256: sha },
  source: { status: 'Running' },
};

describe('manifest validation', () => {
  it('accepts a complete manifest', () => {
    expect(validateManifest(structuredClone(good)).name).toBe('web');
  });

  it.each([
    ['format', { format: 2 }, /unsupported format 2/],
    ['type', { type: 'vm' }, /bad type vm/],
    ['project', { project: '' }, /missing project/],
    ['timestamp', { timestamp: '2026-01-02' }, /bad timestamp/],
    ['volume pool', { type: 'volume' }, /volume without pool/],
    ['sha', { archive: { ...good.archive, sha256: 'xyz' } }, /bad archive sha256/],
    ['size', { archive: { ...good.archive, size: -1 } }, /bad archive size/],
    ['file with slash', { archive: { ...good.archive, file: '../x' } }, /bad archive file name/],
  ])('rejects a bad %s', (_what, patch, msg) => {
    expect(() => validateManifest({ ...structuredClone(good), ...patch })).toThrow(msg);
  });

  it('rejects non-JSON and non-objects with a ManifestError', () => {
    expect(() => parseManifest('{not json')).toThrow(ManifestError);
    expect(() => parseManifest('[]')).toThrow(/not a JSON object/);
  });
});

describe('timestamps', () => {
  it('formats UTC to the second and parses back', () => {
    const d = new Date('2026-11-21T21:04:37.123Z');
    expect(formatTimestamp(d)).toBe('20261121T210437Z');
    expect(timestampToDate('20261121T210437Z').toISOString()).toBe('2026-11-21T21:04:37.000Z');
    expect(timestampToDate('20261121T210437Z-2').toISOString()).toBe('2026-11-21T21:04:37.000Z');
  });

  it('orders same-second versions by their suffix', () => {
    const v = ['20260101T000001Z-2', '20260101T000001Z', '20251231T235959Z', '20260101T000001Z-10', '20260101T000001Z-1'];
    expect([...v].sort(compareTimestamps)).toEqual([
      '20251231T235959Z',
      '20260101T000001Z',
      '20260101T000001Z-1',
      '20260101T000001Z-2',
      '20260101T000001Z-10',
    ]);
  });
});
