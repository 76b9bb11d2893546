import { describe, expect, it } from 'vitest';
import type { BackupEntry } from '../../src/backends/types.js';
import type { Manifest } from '../../src/core/manifest.js';
import type { ResourceKey } from '../../src/core/types.js';
import { damageReport, futureWarning, missedRun, newestWholeRuns, pickVersion } from '../../src/cli/select.js';
import type { BrokenBackup } from '../../src/backends/types.js';

const SHA = 'a'.repeat(64);

/** A backup made at `createdAt` by the run `run`. */
function entry(key: ResourceKey, createdAt: string, run?: Manifest['run']): BackupEntry {
  const manifest: Manifest = {
    format: 1,
    ...key,
    timestamp: createdAt.replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, ''),
    createdAt,
    tool: { name: 'incus-backup', version: 'test' },
    incus: { serverVersion: '6.0.4' },
    consistency: { mode: 'snapshot', instant: createdAt },
    options: { optimized: false, withSnapshots: false, compression: 'none' },
    archive: { file: 'export.tar', size: 1, sha256: SHA, storedSize: 1, storedSha256: SHA },
    source: {},
    ...(run ? { run } : {}),
  };
  return { manifest, location: `/t/${key.name}/${manifest.timestamp}` };
}

const inst = (name: string, project = 'p'): ResourceKey => ({ type: 'instance', project, name });
const vol = (name: string): ResourceKey => ({ type: 'volume', project: 'p', pool: 'default', name });
const config: ResourceKey = { type: 'config', project: '*', name: 'config' };
const night1 = '2026-11-01T02:00:00.000Z';
const night2 = '2026-11-02T02:00:00.000Z';
const at = (run: string, minutes: number) => new Date(Date.parse(run) + minutes * 60_000).toISOString();

describe('what the newest whole backup run no longer had', () => {
  it('marks a resource whose newest backup predates the newest whole run of its kind and project', () => {
    const entries = [
      entry(inst('web'), at(night1, 1), { startedAt: night1, whole: true }),
      entry(inst('old'), at(night1, 2), { startedAt: night1, whole: true }),
      entry(inst('web'), at(night2, 1), { startedAt: night2, whole: true }),
    ];
    const runs = newestWholeRuns(entries);
    expect(missedRun(entries[1]!, runs)).toBe(night2);
    expect(missedRun(entries[2]!, runs)).toBeUndefined();
  });

  it('does not count a run by name, and keeps kinds and projects apart', () => {
    const entries = [
      entry(inst('web'), at(night1, 1), { startedAt: night1, whole: true }),
      entry(inst('db'), at(night1, 2), { startedAt: night1, whole: true }),
      // Backed up by name the next day: not a whole run, so db is not "missing".
      entry(inst('web'), at(night2, 1), { startedAt: night2, whole: false }),
      // A whole run of another project, and of volumes, say nothing about p's instances.
      entry(inst('x', 'q'), at(night2, 3), { startedAt: night2, whole: true }),
      entry(vol('data'), at(night2, 4), { startedAt: night2, whole: true }),
    ];
    const runs = newestWholeRuns(entries);
    expect(missedRun(entries[1]!, runs)).toBeUndefined();
    expect(runs.get('instance\0p')).toBe(night1);
  });

  it("counts the config backup of backup all for each project it names, so a run that found no volumes still counts", () => {
    const entries = [
      entry(vol('data'), at(night1, 1), { startedAt: night1, whole: true }),
      entry(config, at(night2, 0), { startedAt: night2, whole: true, projects: ['p'] }),
    ];
    expect(missedRun(entries[0]!, newestWholeRuns(entries))).toBe(night2);
  });

  it('marks nothing in backups made before runs were recorded', () => {
    const entries = [entry(inst('web'), at(night1, 1)), entry(inst('web'), at(night2, 1))];
    expect(newestWholeRuns(entries).size).toBe(0);
    expect(missedRun(entries[0]!, newestWholeRuns(entries))).toBeUndefined();
  });
});

describe('damage in a restore of many', () => {
  const broken = (key: ResourceKey, timestamp: string, extra: Partial<BrokenBackup> = {}): BrokenBackup => ({ location: `/t/${key.name}/${timestamp}`, key: { ...key, timestamp }, problem: 'invalid manifest', ...extra });
  it('leaves out, by name, a resource with only damaged backups, and warns where the newest is damaged', () => {
    const a = entry(inst('a'), '2026-11-01T02:00:00.000Z');
    const b = entry(vol('b'), '2026-11-01T02:00:00.000Z');
    const report = damageReport(
      [a, b],
      [
        broken(inst('a'), '20261102T020000Z'),
        broken(inst('a'), '20261101T010000Z'),
        broken(inst('gone'), '20261101T020000Z'),
        broken(inst('gone'), '20261103T020000Z', { problem: 'archive missing' }),
        // Left by a killed run: nobody's backup, nothing to say.
        broken(inst('killed'), '20261101T020000Z', { leftover: true }),
      ],
    );
    expect(report.unusable).toEqual([{ key: { type: 'instance', project: 'p', pool: undefined, name: 'gone' }, label: 'instance p/gone', timestamp: '20261103T020000Z', problem: 'archive missing' }]);
    expect(report.warnings).toEqual(['instance p/a: the newest backup (20261102T020000Z) is damaged (invalid manifest); 20261101T020000Z is used instead']);
  });

  it('names a damaged version as damaged when it is asked for, or when nothing else is there', () => {
    const a = entry(inst('a'), '2026-11-01T02:00:00.000Z');
    const bad = [broken(inst('a'), '20261102T020000Z')];
    expect(() => pickVersion([a], 'instance p/a', '20261102T020000Z', bad)).toThrow(/^instance p\/a 20261102T020000Z is damaged \(invalid manifest\)$/);
    expect(() => pickVersion([], 'instance p/a', undefined, bad)).toThrow(/is damaged/);
    expect(pickVersion([a], 'instance p/a', undefined, bad)).toBe(a);
    expect(() => pickVersion([a], 'instance p/a', '20200101T000000Z', bad)).toThrow(/has no backup with version 20200101T000000Z/);
  });
});

describe('a chosen backup dated in the future', () => {
  it('is said (a clock that was wrong once), beyond a few minutes of skew', () => {
    const now = new Date('2026-11-23T00:00:00Z');
    expect(futureWarning(entry(inst('web'), '2027-06-01T02:00:00.000Z'), now)).toBe(
      'instance p/web: its newest backup, 20270601T020000Z, is dated in the future (the clock was wrong when it was taken?); --version picks another (`incus-backup list` shows them)',
    );
    expect(futureWarning(entry(inst('web'), '2026-11-23T00:03:00.000Z'), now)).toBeUndefined();
    expect(futureWarning(entry(inst('web'), '2026-11-22T23:00:00.000Z'), now)).toBeUndefined();
  });
});
