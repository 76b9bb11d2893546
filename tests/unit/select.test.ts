import { describe, expect, it } from 'vitest';
import type { BackupEntry } from '../../src/backends/types.js';
import type { Manifest } from '../../src/core/manifest.js';
import type { ResourceKey } from '../../src/core/types.js';
import { missedRun, newestWholeRuns } from '../../src/cli/select.js';

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
