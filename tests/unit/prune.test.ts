import { describe, expect, it } from 'vitest';
import type { BackupEntry } from '../../src/backends/types.js';
import type { Manifest } from '../../src/core/manifest.js';
import { effectivePolicy, leftoverRows, planPrune, pruneRows, reasonText, versionTime } from '../../src/core/prune.js';
import { RetentionError, type RetentionPolicy } from '../../src/core/retention.js';
import type { ResourceKey } from '../../src/core/types.js';

const SHA = 'a'.repeat(64);

function entry(key: ResourceKey, timestamp: string, extra: Partial<Manifest> = {}): BackupEntry {
  const manifest: Manifest = {
    format: 1,
    ...key,
    timestamp,
    createdAt: '2026-01-01T00:00:00.000Z',
    tool: { name: 'incus-backup', version: 'test' },
    incus: { serverVersion: '6.0.4' },
    consistency: { mode: 'snapshot', instant: '2026-01-01T00:00:00.000Z' },
    options: { optimized: false, withSnapshots: false, compression: 'none' },
    archive: { file: 'export.tar', size: 1000, sha256: SHA, storedSize: 1000, storedSha256: SHA },
    source: {},
    ...extra,
  };
  return { manifest, location: `/t/${key.type}/${key.project}/${key.pool ?? ''}/${key.name}/${timestamp}` };
}

const web: ResourceKey = { type: 'instance', project: 'default', name: 'web' };
const db: ResourceKey = { type: 'instance', project: 'default', name: 'db' };
const webOther: ResourceKey = { type: 'instance', project: 'other', name: 'web' };
const vol: ResourceKey = { type: 'volume', project: 'default', pool: 'p1', name: 'web' };
const volP2: ResourceKey = { type: 'volume', project: 'default', pool: 'p2', name: 'web' };

const flags = (p: RetentionPolicy) => (k: ResourceKey) => effectivePolicy(k, p);
const summary = (entries: BackupEntry[], p: RetentionPolicy) =>
  pruneRows(planPrune(entries, flags(p))).map((r) => `${r.type}:${r.project}:${r.pool ?? '-'}:${r.name}:${r.timestamp}:${r.action}:${r.reasons.join('+')}`);

describe('prune planner', () => {
  it('applies the policy to each resource separately: type, project, pool and name all count', () => {
    const entries = [
      entry(web, '20260101T000000Z'),
      entry(web, '20260102T000000Z'),
      entry(web, '20260103T000000Z'),
      entry(db, '20260101T000000Z'),
      entry(db, '20260102T000000Z'),
      entry(webOther, '20260101T000000Z'),
      entry(vol, '20260101T000000Z'),
      entry(vol, '20260102T000000Z'),
      entry(volP2, '20260101T000000Z'),
    ];
    const plan = planPrune(entries, flags({ keepLast: 1 }));
    expect(plan.resources).toBe(5);
    expect(plan.remove.map((e) => e.location).sort()).toEqual([
      '/t/instance/default//db/20260101T000000Z',
      '/t/instance/default//web/20260101T000000Z',
      '/t/instance/default//web/20260102T000000Z',
      '/t/volume/default/p1/web/20260101T000000Z',
    ]);
    expect(plan.bytesFreed).toBe(4000);
    // Every backup appears once in the preview, grouped by resource, oldest first within it.
    expect(summary(entries, { keepLast: 1 })).toEqual([
      'instance:default:-:db:20260101T000000Z:remove:',
      'instance:default:-:db:20260102T000000Z:keep:last',
      'instance:default:-:web:20260101T000000Z:remove:',
      'instance:default:-:web:20260102T000000Z:remove:',
      'instance:default:-:web:20260103T000000Z:keep:last',
      'instance:other:-:web:20260101T000000Z:keep:last',
      'volume:default:p1:web:20260101T000000Z:remove:',
      'volume:default:p1:web:20260102T000000Z:keep:last',
      'volume:default:p2:web:20260101T000000Z:keep:last',
    ]);
  });

  it('lists every rule that keeps a backup', () => {
    // Jan 1 (two), Jan 2 (one): daily keeps the newest of each day; last 2 keeps Jan 2 and Jan 1
    // 12:00; daily still has counts left at the oldest, which restic (0.17+) then keeps too.
    const entries = [entry(web, '20260101T060000Z'), entry(web, '20260101T120000Z'), entry(web, '20260102T060000Z')];
    expect(summary(entries, { keepLast: 2, keepDaily: 7 })).toEqual([
      'instance:default:-:web:20260101T060000Z:keep:oldest',
      'instance:default:-:web:20260101T120000Z:keep:last+daily',
      'instance:default:-:web:20260102T060000Z:keep:last+daily',
    ]);
    // With the daily count used up before the oldest, it goes.
    expect(summary(entries, { keepLast: 2, keepDaily: 2 })[0]).toBe('instance:default:-:web:20260101T060000Z:remove:');
  });

  it('never removes a protected backup and says why it stays', () => {
    const entries = [entry(web, '20260101T000000Z', { protected: true }), entry(web, '20260102T000000Z'), entry(web, '20260103T000000Z')];
    const plan = planPrune(entries, flags({ keepLast: 1 }));
    const rows = pruneRows(plan);
    expect(rows.map((r) => [r.timestamp, r.action, r.protected, reasonText(r)])).toEqual([
      ['20260101T000000Z', 'keep', true, 'protected'],
      ['20260102T000000Z', 'remove', false, 'no rule keeps it'],
      ['20260103T000000Z', 'keep', false, 'last'],
    ]);
    expect(plan.remove.map((e) => e.manifest.timestamp)).toEqual(['20260102T000000Z']);
  });

  it('measures --keep-within from the newest backup of each resource, not from the clock', () => {
    // Both resources stopped being backed up long ago: each keeps what lies within 1h of its
    // own newest backup, so a stalled job does not age everything out.
    const entries = [
      entry(web, '20200101T000000Z'),
      entry(web, '20200101T023000Z'),
      entry(web, '20200101T030000Z'),
      entry(db, '20210101T000000Z'),
    ];
    expect(summary(entries, { keepWithin: '1h' })).toEqual([
      'instance:default:-:db:20210101T000000Z:keep:within',
      'instance:default:-:web:20200101T000000Z:remove:',
      'instance:default:-:web:20200101T023000Z:keep:within',
      'instance:default:-:web:20200101T030000Z:keep:within',
    ]);
  });

  it('orders versions of the same second by their -N suffix (the -N one is newer)', () => {
    expect(versionTime('20260101T000000Z-2').getTime()).toBe(Date.UTC(2026, 0, 1) + 2);
    const entries = [entry(web, '20260101T000000Z-1'), entry(web, '20260101T000000Z'), entry(web, '20260101T000000Z-10')];
    expect(summary(entries, { keepLast: 1 })).toEqual([
      'instance:default:-:web:20260101T000000Z:remove:',
      'instance:default:-:web:20260101T000000Z-1:remove:',
      'instance:default:-:web:20260101T000000Z-10:keep:last',
    ]);
  });

  it('keeps everything of a resource without a policy (defaults hook), labelled no-policy', () => {
    const entries = [entry(web, '20260101T000000Z'), entry(web, '20260102T000000Z'), entry(db, '20260101T000000Z'), entry(db, '20260102T000000Z')];
    // Defaults only for db: web has none, so nothing of web is touched.
    const defaults = (k: ResourceKey) => (k.name === 'db' ? { keepLast: 1 } : undefined);
    const plan = planPrune(entries, (k) => effectivePolicy(k, {}, defaults));
    expect(pruneRows(plan).map((r) => `${r.name}:${r.timestamp}:${r.action}:${reasonText(r)}`)).toEqual([
      'db:20260101T000000Z:remove:no rule keeps it',
      'db:20260102T000000Z:keep:last',
      'web:20260101T000000Z:keep:no policy for it',
      'web:20260102T000000Z:keep:no policy for it',
    ]);
  });

  it('lets command-line flags replace configured defaults as a whole', () => {
    const defaults = () => ({ keepDaily: 7 });
    expect(effectivePolicy(web, { keepLast: 1 }, defaults)).toEqual({ keepLast: 1 });
    expect(effectivePolicy(web, {}, defaults)).toEqual({ keepDaily: 7 });
    expect(effectivePolicy(web, {})).toBeUndefined();
    expect(effectivePolicy(web, { keepWithin: '0d' })).toBeUndefined(); // a zero duration is no policy
    expect(() => effectivePolicy(web, { keepWithin: '3x' })).toThrow(RetentionError);
  });

  it('plans nothing for nothing', () => {
    const plan = planPrune([], flags({ keepLast: 1 }));
    expect(plan).toEqual({ decisions: [], resources: 0, remove: [], bytesFreed: 0 });
  });
});

describe('leftovers of runs that never completed', () => {
  it('are preview rows to remove, saying whose and why', () => {
    const rows = leftoverRows([
      { location: 'ea096dd0'.padEnd(64, '0'), key: { type: 'instance', project: 'default', name: 'web1' }, problem: 'p', leftover: true, size: 4096 },
      { location: 'ffffffff'.padEnd(64, '0'), key: {}, problem: 'p', leftover: true },
    ]);
    expect(rows).toEqual([
      { type: 'instance', project: 'default', name: 'web1', timestamp: '-', size: 4096, action: 'remove', reasons: ['leftover'], protected: false, location: 'ea096dd0'.padEnd(64, '0') },
      { type: '?', project: '?', name: '?', timestamp: '-', size: 0, action: 'remove', reasons: ['leftover'], protected: false, location: 'ffffffff'.padEnd(64, '0') },
    ]);
    expect(reasonText(rows[0]!)).toBe('left by a run that never completed (ea096dd0)');
  });
});
