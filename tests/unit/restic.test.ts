import { hostname } from 'node:os';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ResticBackend } from '../../src/backends/restic/index.js';
import {
  archiveFileName,
  archiveTags,
  decodeSummary,
  encodePart,
  encodeSummary,
  keyFromTags,
  latestArchiveDumpArgs,
  latestArchiveSnapshot,
  manifestFileName,
  manifestTags,
  matchesFilter,
  nextFreeVersion,
  assignVersions,
  pairSnapshots,
  resourceId,
  SNAPSHOT_HOST,
  TAG_PROTECTED,
  tagArgs,
  versionsByResource,
  type ResticEntry,
  type SnapshotInfo,
} from '../../src/backends/restic/layout.js';
import {
  hasCredential,
  isFailedSave,
  isLockRefused,
  isNetworkRetry,
  isUnreachableRetry,
  OutageClock,
  parseVersion,
  prunedBytes,
  redactRepository,
  resticEnv,
  resticFailure,
  resticMessage,
  ResticError,
  ResticLockError,
  versionBelow,
} from '../../src/backends/restic/restic.js';
import { InterruptedError, UsageError } from '../../src/errors.js';
import type { Manifest } from '../../src/core/manifest.js';
import type { ResourceKey } from '../../src/core/types.js';
import { fixedAddressesOf, planIndex, requirementsOf } from '../../src/core/preflight.js';
import type { RestorePlanItem } from '../../src/core/restore.js';

const web1: ResourceKey = { type: 'instance', project: 'default', name: 'web1' };
const data: ResourceKey = { type: 'volume', project: 'p2', pool: 'default', name: 'data' };

function manifest(key: ResourceKey, timestamp: string, extra: Partial<Manifest> = {}): Manifest {
  return {
    format: 1,
    ...key,
    timestamp,
    createdAt: '2026-01-02T03:04:05.000Z',
    tool: { name: 'incus-backup', version: '0.1.0' },
    incus: { serverVersion: '6.0.4' },
    consistency: { mode: 'snapshot', instant: '2026-01-02T03:04:04.000Z' },
    options: { optimized: false, withSnapshots: false, compression: 'none' },
    archive: { file: archiveFileName(key), size: 7, sha256: 'a'.repeat(64), storedSize: 7, storedSha256: 'a'.repeat(64) },
    source: { status: 'Running', instanceType: 'container', host: 'h1' },
    ...extra,
  };
}

/**
 * `restic snapshots --json` of a repository made once with restic 0.18.0 (fields this code does
 * not read trimmed). It holds: two complete backups of instance default/web1 in the same second
 * (versions ...Z and ...Z-1), a third web1 data snapshot without a manifest (an interrupted
 * commit), a complete backup of volume p2/default/data, a manifest of that volume whose data
 * snapshot (ffff...) is gone, and one snapshot that is not incus-backup's at all.
 */
const SAMPLE = JSON.parse(readFileSync(new URL('../fixtures/restic-0.18-snapshots.json', import.meta.url), 'utf8')) as SnapshotInfo[];

describe('snapshot naming', () => {
  it('uses one flat file name per resource, without directories', () => {
    expect(archiveFileName(web1)).toBe('incus_default_instance_web1.tar');
    expect(manifestFileName(web1)).toBe('incus_default_instance_web1_manifest.json');
    expect(archiveFileName(data)).toBe('incus_p2_volume_default_data.tar');
    expect(manifestFileName(data)).toBe('incus_p2_volume_default_data_manifest.json');
  });

  it('escapes what would be a directory or a tag separator', () => {
    expect(encodePart('a/b,c d%')).toBe('a%2Fb%2Cc%20d%25');
    expect(encodePart('ok_name-1.2')).toBe('ok_name-1.2');
    const odd: ResourceKey = { type: 'instance', project: 'x,y', name: 'ü/1' };
    expect(archiveFileName(odd)).not.toMatch(/[/,]/);
    expect(keyFromTags(archiveTags(odd))).toEqual(odd);
  });
});

describe('tags', () => {
  it('gives every data snapshot of a resource the same tags (one restic forget group)', () => {
    expect(archiveTags(web1)).toEqual(['ib-archive', 'ib-type=instance', 'ib-project=default', 'ib-name=web1']);
    expect(archiveTags(data)).toEqual(['ib-archive', 'ib-type=volume', 'ib-project=p2', 'ib-pool=default', 'ib-name=data']);
    expect(SNAPSHOT_HOST).toBe('incus-backup');
  });

  it('links the manifest snapshot to its data snapshot and carries the summary', () => {
    const m = manifest(web1, '20260102T030405Z', { index: { big: 'x'.repeat(5000) } });
    const tags = manifestTags(m, 'd'.repeat(64));
    expect(tags.slice(0, 7)).toEqual([
      'ib-manifest',
      'ib-type=instance',
      'ib-project=default',
      'ib-name=web1',
      `ib-data=${'d'.repeat(64)}`,
      'ib-version=20260102T030405Z',
      expect.stringMatching(/^ib-summary=[A-Za-z0-9_-]+$/),
    ]);
    expect(tags).toHaveLength(7);
    // The full index stays out of the tag (it lives in the manifest file); what a restore plan
    // reads of it comes along.
    expect(tags[6]!.length).toBeLessThan(1500);
    const back = decodeSummary(tags[6]!.slice('ib-summary='.length));
    expect(back.index).toEqual({ config: { container: { profiles: [], devices: {} } } });
    expect(back).toEqual({ ...m, index: planIndex(m.index!) });
  });

  it("keeps of a volume's index only which driver made an optimized archive", () => {
    const summaryIndex = (index: Record<string, unknown>) => {
      const tags = manifestTags(manifest(data, '20260102T030405Z', { index }), 'd'.repeat(64));
      return decodeSummary(tags[tags.length - 1]!.slice('ib-summary='.length)).index;
    };
    expect(summaryIndex({ name: 'data', backend: 'btrfs', optimized: true, config: { volume: { name: 'data' } } })).toEqual({ optimized: true, backend: 'btrfs' });
    expect(summaryIndex({ name: 'data', backend: 'dir', optimized: false, config: { volume: { name: 'data' } } })).toBeUndefined();
  });

  it('keeps in the summary the index fields a restore plan reads, and only those', () => {
    const index = {
      name: 'web1',
      pool: 'fast',
      snapshots: ['s1', 's2'],
      config: {
        container: {
          profiles: ['default', 'web'],
          config: { 'volatile.cloud-init.instance-id': 'abc', 'volatile.eth0.hwaddr': '00:16:3e:00:00:01', 'limits.cpu': '2' },
          devices: {
            eth1: { type: 'nic', network: 'lan', name: 'eth1', hwaddr: 'x' },
            data: { type: 'disk', pool: 'fast', source: 'data', path: '/srv' },
            gpu: { type: 'gpu', id: '0' },
          },
        },
        snapshots: [{ name: 's1', config: { big: 'x'.repeat(3000) } }, { name: 's2', expires_at: '2031-01-01T00:00:00Z', config: { big: 'y'.repeat(3000) } }],
      },
    };
    const m = manifest(web1, '20260102T030405Z', { index });
    const back = decodeSummary(manifestTags(m, 'd'.repeat(64))[6]!.slice('ib-summary='.length));
    // The snapshots' names and expiry dates (a replace's preview, a restore), not their config.
    expect(back.index).toEqual({
      pool: 'fast',
      snapshots: ['s1', 's2'],
      config: {
        container: {
          profiles: ['default', 'web'],
          devices: { eth1: { type: 'nic', network: 'lan', hwaddr: 'x' }, data: { type: 'disk', pool: 'fast', source: 'data', path: '/srv' } },
          config: { 'volatile.cloud-init.instance-id': 'abc' },
        },
        snapshots: [{ name: 's2', expires_at: '2031-01-01T00:00:00Z' }],
      },
    });
    // The plan derives the same requirements from the summary as from the full index.
    const item = (idx: Record<string, unknown>) =>
      ({ entry: { manifest: { ...m, index: idx } }, dest: { kind: 'instance', project: 'default', name: 'web1' } }) as unknown as RestorePlanItem;
    const maps = { project: new Map(), pool: new Map(), profile: new Map(), network: new Map() };
    expect(requirementsOf(item(back.index!), maps)).toEqual(requirementsOf(item(index), maps));
    expect(fixedAddressesOf(item(back.index!), maps)).toEqual([{ device: 'eth1', network: 'lan', value: 'x' }]);
    // A volume's summary carries no index at all.
    const vol = manifest({ type: 'volume', project: 'default', pool: 'fast', name: 'data' }, '20260102T030405Z', { index });
    const volSummary = manifestTags(vol, 'd'.repeat(64)).find((t) => t.startsWith('ib-summary='))!;
    expect(decodeSummary(volSummary.slice('ib-summary='.length)).index).toBeUndefined();
  });

  it('passes each tag with its own --tag flag', () => {
    expect(tagArgs(['a', 'b=c'])).toEqual(['--tag', 'a', '--tag', 'b=c']);
  });

  it('rejects a summary that is not a manifest', () => {
    expect(() => decodeSummary('not-base64-json')).toThrow(/not a JSON object/);
    expect(() => decodeSummary(encodeSummary({ ...manifest(web1, 'bad') }))).toThrow(/bad timestamp/);
  });
});

describe('pairing snapshots into backups', () => {
  // The sample was made on 2026-11-21 at 21:33 UTC; an hour later nothing in it is a day old.
  const { entries, broken } = pairSnapshots(SAMPLE, {}, Date.parse('2026-11-21T22:33:00Z'));

  it('lists complete pairs only, per resource oldest first, with data_added', () => {
    expect(entries.map((e) => [e.manifest.type, e.manifest.name, e.manifest.timestamp, e.location.slice(0, 8), e.manifestSnapshot.slice(0, 8)])).toEqual([
      ['instance', 'web1', '20260102T030405Z', '47ee9968', '4033a128'],
      ['instance', 'web1', '20260102T030405Z-1', '8b383335', 'a4a95eaa'],
      ['volume', 'data', '20260103T000000Z', '8d9202c7', 'c8cdda40'],
    ]);
    expect(entries[2]!.manifest.pool).toBe('default');
    expect(entries[0]!.manifest.archive.storedSize).toBe(7);
    expect(entries.map((e) => e.dataAdded)).toEqual([314, 314, 319]);
  });

  it('reports the orphan data snapshot and the manifest without data as broken', () => {
    expect(broken.map((b) => [b.location.slice(0, 8), b.key])).toEqual([
      ['65e8fae3', { ...data, timestamp: '20260104T000000Z' }],
      ['ea096dd0', web1],
    ]);
    expect(broken[0]!.problem).toMatch(/data snapshot ffffffff .* is gone/);
    expect(broken[1]!.problem).toMatch(/has no manifest/);
  });

  it('names a data snapshot without a manifest as a backup that may be completing right now', () => {
    expect(broken[1]!.problem).toMatch(/^data snapshot ea096dd0 \(2026-11-21T21:33:23.300096693Z\) has no manifest: its backup never completed, or is completing right now$/);
    expect(broken.some((b) => b.leftover)).toBe(false);
  });

  const orphan = (snaps: SnapshotInfo[], now: string) => pairSnapshots(snaps, {}, Date.parse(now)).broken.find((b) => b.location.startsWith('ea096dd0'))!;

  it('calls it a leftover (prune removes it) once it was saved over a day ago', () => {
    expect(orphan(SAMPLE, '2026-11-22T21:33:00Z').leftover).toBeUndefined();
    const b = orphan(SAMPLE, '2026-11-22T21:34:00Z');
    expect(b.leftover).toBe(true);
    expect(b.problem).toMatch(/a run killed before writing it left it, or the manifest snapshot was lost \(it was saved over a day ago\); `incus-backup prune` removes it$/);
  });

  /** A complete backup of `key` whose data snapshot restic started at `time`. */
  const completed = (key: ResourceKey, id: string, time: string): SnapshotInfo[] => [
    { id: id.repeat(64 / id.length), time, tags: archiveTags(key) },
    { id: `m${id}`.repeat(64 / (id.length + 1)), time, tags: manifestTags(manifest(key, '20260105T000000Z'), id.repeat(64 / id.length)) },
  ];

  it('calls it a leftover as soon as a later backup of the same resource has begun after it was saved, and completed', () => {
    // ea096dd0 was saved at 21:33:23.3 (no summary: its time counts).
    expect(orphan([...SAMPLE, ...completed(web1, 'b', '2026-11-21T21:33:23.200Z')], '2026-11-21T21:40:00Z').leftover).toBeUndefined();
    const b = orphan([...SAMPLE, ...completed(web1, 'b', '2026-11-21T21:33:24.000Z')], '2026-11-21T21:40:00Z');
    expect(b.leftover).toBe(true);
    expect(b.problem).toMatch(/\(a later backup of it has completed since\)/);
    // Another resource's backup says nothing about this one's run.
    expect(orphan([...SAMPLE, ...completed(data, 'c', '2026-11-21T21:35:00Z')], '2026-11-21T21:40:00Z').leftover).toBeUndefined();
  });

  it('counts from the end of its save (restic\'s backup_end), not its start: a long backup still committing is no leftover', () => {
    const long = SAMPLE.map((s) => (s.id.startsWith('ea096dd0') ? { ...s, summary: { backup_end: '2026-11-21T23:00:00Z', total_bytes_processed: 1234 } } : s));
    expect(orphan([...long, ...completed(web1, 'b', '2026-11-21T22:00:00Z')], '2026-11-21T23:00:05Z').leftover).toBeUndefined();
    const b = orphan([...long, ...completed(web1, 'b', '2026-11-21T23:00:01Z')], '2026-11-21T23:05:00Z');
    expect(b).toMatchObject({ leftover: true, size: 1234 });
    expect(orphan(long, '2026-11-22T22:59:00Z').leftover).toBeUndefined();
    expect(orphan(long, '2026-11-22T23:01:00Z').leftover).toBe(true);
  });

  it('filters by type, project, pool and name', () => {
    expect(pairSnapshots(SAMPLE, { type: 'volume' }).entries).toHaveLength(1);
    expect(pairSnapshots(SAMPLE, { project: 'default' }).entries).toHaveLength(2);
    expect(pairSnapshots(SAMPLE, { project: 'default' }).broken.map((b) => b.location.slice(0, 8))).toEqual(['ea096dd0']);
    expect(pairSnapshots(SAMPLE, { name: 'web1', type: 'volume' }).entries).toHaveLength(0);
    expect(pairSnapshots(SAMPLE, { pool: 'other' }).entries.filter((e) => e.manifest.type === 'volume')).toHaveLength(0);
  });

  it('puts the server-wide config in every project\'s scope, as the directory backend does', () => {
    const config: ResourceKey = { type: 'config', project: '*', name: 'config' };
    expect(matchesFilter(config, { project: 'default' })).toBe(true);
    expect(matchesFilter(config, { project: 'web', type: 'config' })).toBe(true);
    expect(matchesFilter(config, { project: 'default', type: 'instance' })).toBe(false);
    expect(matchesFilter({ type: 'instance', project: 'web', name: 'a' }, { project: 'default' })).toBe(false);
  });

  it('does not list a backup whose data snapshot holds a different number of bytes', () => {
    const changed = SAMPLE.map((s) => (s.id.startsWith('8d9202c7') ? { ...s, summary: { ...s.summary, total_bytes_processed: 9 } } : s));
    const r = pairSnapshots(changed, { type: 'volume' });
    expect(r.entries).toHaveLength(0);
    expect(r.broken.map((b) => b.problem)).toContainEqual(expect.stringMatching(/holds 9 bytes, the manifest says 10/));
  });

  it('does not list a manifest whose summary was tampered with', () => {
    const changed = SAMPLE.map((s) =>
      s.id.startsWith('c8cdda40') ? { ...s, tags: s.tags!.map((t) => (t.startsWith('ib-summary=') ? 'ib-summary=AAAA' : t)) } : s,
    );
    const r = pairSnapshots(changed, { type: 'volume' });
    expect(r.entries).toHaveLength(0);
    expect(r.broken.map((b) => b.location.slice(0, 8))).toContain('c8cdda40');
  });

  it('collects the versions in use per resource', () => {
    const v = versionsByResource(SAMPLE);
    expect([...v.get(resourceId(web1))!].sort()).toEqual(['20260102T030405Z', '20260102T030405Z-1']);
    expect(nextFreeVersion('20260102T030405Z', v.get(resourceId(web1))!)).toBe('20260102T030405Z-2');
    expect(nextFreeVersion('20260102T030406Z', new Set())).toBe('20260102T030406Z');
  });
});

describe('two backups of one resource saved under the same version (two runs in one second)', () => {
  // A data snapshot and its manifest snapshot, as a run saves them.
  const backup = (data: string, manifestId: string, saved: string, version: string): SnapshotInfo[] => [
    { id: data.repeat(64), time: saved, hostname: SNAPSHOT_HOST, paths: [`/${archiveFileName(web1)}`], tags: archiveTags(web1), summary: { total_bytes_processed: 7 } },
    { id: manifestId.repeat(64), time: saved, hostname: SNAPSHOT_HOST, paths: [`/${manifestFileName(web1)}`], tags: manifestTags(manifest(web1, version), data.repeat(64)) },
  ];
  const V = '20260102T030405Z';

  it('lists a manifest and the copy a re-tag left behind (append-only server) as one backup, protected, without taking a version', () => {
    const [data, original] = backup('a', '1', '2026-01-02T03:04:07.1Z', V);
    // What `restic tag --add ib-protected` wrote where it could not delete the original.
    const copy: SnapshotInfo = { ...original!, id: '9'.repeat(64), tags: [...original!.tags!, TAG_PROTECTED] };
    const snaps = [data!, original!, copy, ...backup('b', '2', '2026-01-02T03:04:08Z', V)];
    const { entries, broken } = pairSnapshots(snaps);
    expect(broken).toEqual([]);
    expect(entries.map((e) => [e.manifest.timestamp, e.location[0], e.manifest.protected === true, (e as ResticEntry).otherManifests])).toEqual([
      [V, 'a', true, ['9'.repeat(64)]],
      [`${V}-1`, 'b', false, undefined],
    ]);
  });

  it('lists the one saved first under the version, the later one under the next free one', () => {
    const snaps = [...backup('b', '2', '2026-01-02T03:04:07.5Z', V), ...backup('a', '1', '2026-01-02T03:04:07.1Z', V), ...backup('c', '3', '2026-01-02T03:04:09Z', `${V}-1`)];
    const { entries, broken } = pairSnapshots(snaps);
    expect(broken).toEqual([]);
    // -1 is taken by a third backup: the duplicate becomes -2; each version names one backup.
    expect(entries.map((e) => [e.manifest.timestamp, e.location[0], (e as ResticEntry).storedVersion])).toEqual([
      [V, 'a', undefined],
      [`${V}-1`, 'c', undefined],
      [`${V}-2`, 'b', V],
    ]);
    // A writer in the same second avoids the listed names as well as the stored ones.
    expect(nextFreeVersion(V, versionsByResource(snaps).get(resourceId(web1))!)).toBe(`${V}-3`);
    expect(assignVersions(snaps).get('2'.repeat(64))).toBe(`${V}-2`);
    // Once the first is gone, the other is listed under the plain version again.
    expect(pairSnapshots(snaps.slice(0, 2)).entries.map((e) => e.manifest.timestamp)).toEqual([V]);
  });
});

describe('which snapshot `restic dump latest` picks (read-ahead)', () => {
  const snap = (id: string, time: string, k: ResourceKey, over: Partial<SnapshotInfo> = {}): SnapshotInfo => ({
    id,
    time,
    hostname: SNAPSHOT_HOST,
    paths: [`/${archiveFileName(k)}`],
    tags: archiveTags(k),
    ...over,
  });
  const other: ResourceKey = { type: 'instance', project: 'default', name: 'web2' };

  it('gives restic the resource\'s host, all its tags as one filter, and its path', () => {
    const file = `/${archiveFileName(web1)}`;
    expect(latestArchiveDumpArgs(web1)).toEqual(['--host', SNAPSHOT_HOST, '--tag', archiveTags(web1).join(','), '--path', file, 'latest', file]);
  });

  it('picks the newest matching data snapshot, compared as times, not as strings', () => {
    const snaps = [
      snap('a', '2026-01-02T03:04:05.5+01:00', web1), // 02:04:05.5Z: the newest
      snap('b', '2026-01-02T02:04:05Z', web1),
      snap('c', '2026-01-03T00:00:00Z', other),
      snap('d', '2026-01-04T00:00:00Z', web1, { hostname: 'elsewhere' }),
      snap('e', '2026-01-04T00:00:00Z', web1, { tags: ['ib-archive'] }),
      snap('f', '2026-01-04T00:00:00Z', web1, { paths: ['/other.tar'] }),
      snap('g', '2026-01-04T00:00:00Z', web1, { tags: ['ib-manifest', ...archiveTags(web1).slice(1)] }),
    ];
    expect(latestArchiveSnapshot(snaps, web1)).toBe('a');
    expect(latestArchiveSnapshot(snaps, other)).toBe('c');
    expect(latestArchiveSnapshot(snaps, data)).toBeUndefined();
  });

  it('does not guess between two snapshots of the same time', () => {
    const snaps = [snap('a', '2026-01-02T00:00:00Z', web1), snap('b', '2026-01-02T00:00:00Z', web1), snap('c', '2026-01-01T00:00:00Z', web1)];
    expect(latestArchiveSnapshot(snaps, web1)).toBeUndefined();
  });

  it('picks the sample\'s newest web1 archive, which has no manifest: a read-ahead of it is not used', () => {
    const newest = pairSnapshots(SAMPLE, { type: 'instance', name: 'web1' }).entries.at(-1)!;
    expect(latestArchiveSnapshot(SAMPLE, web1)).toMatch(/^ea096dd0/);
    expect(newest.location).not.toMatch(/^ea096dd0/);
  });
});

describe('restic errors', () => {
  const ctx = { command: 'snapshots', repo: '/srv/restic', secrets: ['hunter2-pw'] };

  it('maps exit codes 10, 11, 12 and 130 to one-line errors with hints', () => {
    const missing = resticFailure(
      {
        exitCode: 10,
        signal: undefined,
        stderr:
          '{"message_type":"exit_error","code":10,"message":"Fatal: repository does not exist: unable to open config file: stat /srv/restic/config: no such file or directory\nIs there a repository at the following location?\n/srv/restic"}\n',
      },
      ctx,
    );
    expect(missing).toBeInstanceOf(ResticError);
    expect(missing.message).toBe('restic repository /srv/restic does not exist');
    expect(missing.exitCode).toBe(2);
    expect(missing.hint).toMatch(/creates the repository/);

    const locked = resticFailure({ exitCode: 11, signal: undefined, stderr: 'Fatal: unable to create lock in backend: repository is already locked' }, ctx);
    expect(locked.message).toMatch(/is locked by another restic process/);
    expect(locked.hint).toMatch(/restic unlock/);
    // A holder of this host that is gone (killed with -9) is named as such; another host's is named.
    const held = (who: string) => `repo already locked, waiting up to 2m0s for the lock\nunable to create lock in backend: repository is already locked by PID ${who} by root (UID 0, GID 0)\nlock was created at 2026-11-22 23:00:00`;
    const stale = resticFailure({ exitCode: 11, signal: undefined, stderr: held(`999999 on ${hostname()}`) }, ctx);
    expect(stale.message).toMatch(/is locked by restic process 999999 of this host, which is no longer running \(killed\?\)$/);
    expect(stale.hint).toMatch(/^`restic -r \S+ unlock` removes its stale lock/);
    const live = resticFailure({ exitCode: 11, signal: undefined, stderr: held(`${process.pid} on ${hostname()}`) }, ctx);
    expect(live.message).toMatch(new RegExp(`is locked by another restic process \\(PID ${process.pid} on `));
    const other = resticFailure({ exitCode: 11, signal: undefined, stderr: held('42 on elsewhere') }, ctx);
    expect(other.message).toMatch(/is locked by another restic process \(PID 42 on elsewhere\)$/);

    const pw = resticFailure({ exitCode: 12, signal: undefined, stderr: '{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"}' }, ctx);
    expect(pw.message).toMatch(/wrong password/);
    expect(pw.exitCode).toBe(2);
    expect(pw.message).not.toContain('\n');

    expect(resticFailure({ exitCode: 130, signal: undefined, stderr: '' }, ctx)).toBeInstanceOf(InterruptedError);
  });

  it('gives up on a repository that cannot be opened for reasons other than the network too (HTTP 500, TLS, no host)', () => {
    const line = 'Load(<config/0000000000>, 0, 0) returned error, retrying after 1.2s: unexpected HTTP response (500): 500 Internal Server Error';
    expect(isUnreachableRetry(line)).toBe(true);
    const e = resticFailure({ exitCode: undefined, signal: 'SIGTERM', stderr: line }, { ...ctx, unreachable: line });
    expect(e.message).toBe('cannot reach the restic repository /srv/restic: unexpected HTTP response (500): 500 Internal Server Error');
  });

  it('times an outage from network retries: given up after two minutes of them, a gap starts over', () => {
    const clock = new OutageClock(120_000);
    expect(clock.note(0)).toBe(false);
    expect(clock.note(20_000)).toBe(false);
    // 40 s of silence: the server answered in between; the outage starts again.
    expect(clock.note(60_000)).toBe(false);
    expect(clock.note(170_000)).toBe(false); // a gap over 30 s again
    for (let t = 180_000; t < 290_000; t += 10_000) expect(clock.note(t)).toBe(false);
    expect(clock.note(290_000)).toBe(true);
    expect(isNetworkRetry('Save(<data/12345>) returned error, retrying after 1s: dial tcp 127.0.0.1:8000: connect: connection refused')).toBe(true);
    expect(isNetworkRetry('Save(<data/12345>) returned error, retrying after 1s: unexpected HTTP response (507)')).toBe(false);
  });

  it('says a reading command lost the server when its lock refresh fails on the network, not that data was not kept', () => {
    const line = 'Save(<lock/4114ca14d2>) failed: Post "http://127.0.0.1:8000/repo/locks/4114ca14d2": dial tcp 127.0.0.1:8000: connect: connection refused';
    const dump = resticFailure({ exitCode: 1, signal: undefined, stderr: line }, { ...ctx, command: 'dump', failedSave: line });
    expect(dump.message).toBe('lost the restic repository /srv/restic while reading it: dial tcp 127.0.0.1:8000: connect: connection refused');
    expect(dump.hint).not.toMatch(/kept/);
    const backup = resticFailure({ exitCode: 1, signal: undefined, stderr: line }, { ...ctx, command: 'backup', failedSave: line });
    expect(backup.message).toMatch(/^restic could not write to the repository/);
  });

  it('recognises an unreachable server from its retry lines and says so', () => {
    const line =
      'Stat(<config/>) returned error, retrying after 647.549938ms: Head "http://:***@127.0.0.1:1/x/config": dial tcp 127.0.0.1:1: connect: connection refused';
    expect(isUnreachableRetry(line)).toBe(true);
    expect(isUnreachableRetry('Save(<data/12345>) returned error, retrying after 1s: dial tcp: connection refused')).toBe(false);
    const e = resticFailure({ exitCode: undefined, signal: 'SIGTERM', stderr: `${line}\nFatal: unable to open config file: context canceled` }, { ...ctx, unreachable: line });
    expect(e.message).toBe('cannot reach the restic repository /srv/restic: dial tcp 127.0.0.1:1: connect: connection refused');
    expect(e.hint).toMatch(/server is running/);
  });

  it('keeps a generic failure to restic’s own first Fatal line, without the password', () => {
    const e = resticFailure({ exitCode: 1, signal: undefined, stderr: 'some noise\nFatal: cannot open hunter2-pw file\nmore\n' }, ctx);
    expect(e.message).toBe('restic snapshots failed: cannot open *** file');
    expect(resticMessage('{"message_type":"exit_error","code":1,"message":"Fatal: a\\nb"}')).toBe('a');
  });

  it('recognises a write restic gave up on, and names the cause with a hint', () => {
    const full = 'Save(<data/1eb640d657>) failed: write /srv/restic/data/1e/1eb640d6570cc98c-tmp-4136068597: no space left on device';
    expect(isFailedSave(full)).toBe(true);
    expect(isFailedSave('Save(<data/1eb640d657>) returned error, retrying after 720ms: write /srv/x: no space left on device')).toBe(false);
    const e = resticFailure({ exitCode: undefined, signal: 'SIGTERM', stderr: `${full}\nsignal terminated received, cleaning up` }, { ...ctx, command: 'backup', failedSave: full });
    expect(e.message).toBe('restic could not write to the repository /srv/restic: no space left on device');
    expect(e.exitCode).toBe(1);
    expect(e.hint).toMatch(/^free space where the repository is stored .*nothing was kept$/);
    const refused = 'Save(<data/1eb640d657>) failed: Post "http://u:s3cret@host:8000/r/data/1eb6": server response unexpected: 500 Internal Server Error (500)';
    const e2 = resticFailure({ exitCode: undefined, signal: 'SIGTERM', stderr: refused }, { ...ctx, command: 'backup', failedSave: refused });
    expect(e2.message).toBe('restic could not write to the repository /srv/restic: 500 Internal Server Error (500)');
    expect(e2.hint).toMatch(/^check the storage behind the repository/);
    expect(`${e2.message} ${e2.hint}`).not.toContain('s3cret');
  });

  it('stops at a lock the storage refuses, and leaves network trouble to restic', () => {
    const readOnly = 'Save(<lock/4114ca14d2>) returned error, retrying after 1.460511601s: open /srv/restic/locks/4114ca14d262-tmp-2961530892: read-only file system';
    expect(isLockRefused(readOnly)).toBe(true);
    expect(isLockRefused('Save(<lock/4114ca14d2>) returned error, retrying after 720ms: open /srv/restic/locks/x: permission denied')).toBe(true);
    // A rest-server gone for a moment: restic's retries may well get through.
    expect(isLockRefused('Save(<lock/4114ca14d2>) returned error, retrying after 720ms: Post "http://h:8000/r/locks/4114": dial tcp 127.0.0.1:8000: connect: connection refused')).toBe(false);
    // Data writes are failedSave's business; a lock restic gave up on is no retry line.
    expect(isLockRefused('Save(<data/1eb640d657>) returned error, retrying after 720ms: write /srv/x: read-only file system')).toBe(false);
    expect(isLockRefused('Save(<lock/4114ca14d2>) failed: read-only file system')).toBe(false);
    const e = resticFailure({ exitCode: undefined, signal: 'SIGTERM', stderr: `${readOnly}\nsignal terminated received, cleaning up` }, { ...ctx, command: 'backup', lockRefused: readOnly });
    expect(e).toBeInstanceOf(ResticLockError);
    expect(e.message).toBe('restic cannot lock the repository /srv/restic: read-only file system');
    expect(e.exitCode).toBe(1);
    expect(e.hint).toMatch(/^backing up, pruning and protecting need a repository restic can write to/);
  });

  it('names refused credentials of a rest-server as such: exit 2, with where to fix them', () => {
    const e = resticFailure(
      { exitCode: 1, signal: undefined, stderr: 'Fatal: unable to open config file: unexpected HTTP response (401): 401 Unauthorized\nIs there a repository at the following location?\nrest:http://u:***@h:8000/r1' },
      { ...ctx, repo: 'rest:http://u:***@h:8000/r1', command: 'snapshots' },
    );
    expect(e.message).toBe('the server refused the credentials for the restic repository rest:http://u:***@h:8000/r1 (HTTP 401 Unauthorized)');
    expect(e.exitCode).toBe(2);
    expect(e.hint).toMatch(/user name and password in the repository URL/);
  });

  it('gives a dump of damaged data the advice a checksum mismatch gets', () => {
    const e = resticFailure(
      { exitCode: 1, signal: undefined, stderr: 'Fatal: cannot dump file: decrypting blob <data/9b3504cb> from 7eabb0e4 failed: ciphertext verification failed' },
      { ...ctx, command: 'dump' },
    );
    expect(e.message).toMatch(/^restic dump failed: .*ciphertext verification failed$/);
    expect(e.exitCode).toBe(1);
    expect(e.hint).toMatch(/^the backup is damaged in the repository: `incus-backup verify --deep` says which; an older one is restored with --version/);
    // Not every failed dump is damage.
    expect(resticFailure({ exitCode: 1, signal: undefined, stderr: 'Fatal: no free space' }, { ...ctx, command: 'dump' }).hint).toBeUndefined();
  });

  it('masks a password inside a repository URL', () => {
    expect(redactRepository('rest:https://user:secret@host:8000/repo')).toBe('rest:https://user:***@host:8000/repo');
    expect(redactRepository('/srv/restic')).toBe('/srv/restic');
    expect(redactRepository('Post "http://u:a@h/x": then http://v:b@h/y')).toBe('Post "http://u:***@h/x": then http://v:***@h/y');
  });
});

describe('restic environment and version', () => {
  it('needs some password source, an empty one does not count', () => {
    expect(hasCredential({})).toBe(false);
    expect(hasCredential({ RESTIC_PASSWORD: '' })).toBe(false);
    expect(hasCredential({ RESTIC_PASSWORD_COMMAND: 'pass show x' })).toBe(true);
    expect(hasCredential({}, '/etc/pw')).toBe(true);
    expect(() => new ResticBackend('/srv/r', 'restic:/srv/r', { env: {} })).toThrow(UsageError);
    expect(() => new ResticBackend('/srv/r', 'restic:/srv/r', { env: { RESTIC_PASSWORD: '' } })).toThrow(
      expect.objectContaining({ exitCode: 2, hint: expect.stringMatching(/RESTIC_PASSWORD_FILE/) }),
    );
  });

  it('hands the repository and a --password-file to restic through the environment', () => {
    const env = resticEnv({ repository: 'rest:http://h/r', env: { PATH: '/bin', RESTIC_PASSWORD: 'x', RESTIC_REPOSITORY_FILE: '/f' }, passwordFile: '/pw' });
    expect(env).toEqual({ PATH: '/bin', RESTIC_REPOSITORY: 'rest:http://h/r', RESTIC_PASSWORD_FILE: '/pw' });
    expect(resticEnv({ repository: '/r', env: { RESTIC_PASSWORD: 'x' } })).toEqual({ RESTIC_PASSWORD: 'x', RESTIC_REPOSITORY: '/r' });
  });

  it('parses restic version output and compares versions', () => {
    expect(parseVersion('restic 0.18.0 compiled with go1.24.4 on linux/amd64')).toEqual([0, 18, 0]);
    expect(parseVersion('restic 0.14.0 compiled with go1.19.8 on linux/amd64')).toEqual([0, 14, 0]);
    expect(parseVersion('nonsense')).toBeUndefined();
    expect(versionBelow([0, 14, 0], [0, 18, 0])).toBe(true);
    expect(versionBelow([0, 18, 1], [0, 18, 0])).toBe(false);
    expect(versionBelow([1, 0, 0], [0, 18, 0])).toBe(false);
  });
});

describe('prunedBytes', () => {
  // What restic 0.18.0's forget --prune printed here (trimmed).
  const out = [
    'collecting packs for deletion and repacking',
    '',
    'to repack:             3 blobs / 1.045 MiB',
    'this removes:          1 blobs / 524.980 KiB',
    'to delete:             1 blobs / 303 B',
    'total prune:           2 blobs / 525.276 KiB',
    'remaining:             8 blobs / 1.048 MiB',
    'unused size after prune: 0 B (0.00% of remaining size)',
    'done',
  ].join('\n');

  it('reads the total prune line, not the others', () => {
    expect(prunedBytes(out)).toBe(Math.round(525.276 * 1024));
    expect(prunedBytes('total prune:           0 blobs / 0 B\n')).toBe(0);
    expect(prunedBytes('total prune:           9 blobs / 2.500 GiB\n')).toBe(2.5 * 2 ** 30);
  });

  it('is undefined when restic said nothing of it', () => {
    expect(prunedBytes('done\n')).toBeUndefined();
    expect(prunedBytes('total prune: lots\n')).toBeUndefined();
  });
});
