import { chmodSync, cpSync, readdirSync, readFileSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createResticBackend } from '../../src/backends/restic/index.js';
import { cli, cliSpawn, flipByte, incus, launch, parseJson, sh, snapshotNames, tempTarget, testProject } from './helpers.js';

let project: { name: string; dispose: () => Promise<void> };
let tmp: ReturnType<typeof tempTarget>;
let P: string;
const env = { RESTIC_PASSWORD: 'maintenance-test-pw' };
const repo = () => join(tmp.dir, 'repo');
const run = (args: string[], repoDir = repo()) => cli([...args, '--project', P, '--target', `restic:${repoDir}`], env);

/** The largest pack file: it holds the archive's data blobs (trees are small). */
function largestPack(dir: string): string {
  let best = '';
  let size = -1;
  for (const sub of readdirSync(join(dir, 'data'))) {
    for (const f of readdirSync(join(dir, 'data', sub))) {
      const p = join(dir, 'data', sub, f);
      const s = statSync(p).size;
      if (s > size) [best, size] = [p, s];
    }
  }
  return best;
}

beforeAll(async () => {
  project = await testProject('rmaint');
  P = project.name;
  tmp = tempTarget();
  await launch(P, 'm1');
  await sh(P, 'm1', 'dd if=/dev/urandom of=/data/blob bs=1M count=6 2>/dev/null');
  for (let i = 0; i < 3; i++) {
    const r = await run(['backup', 'instances', 'm1']);
    expect(r.exitCode, r.stderr).toBe(0);
  }
});

afterAll(async () => {
  await project?.dispose();
  tmp?.dispose();
});

/** The lock files in the repository: restic writes each as `<id>-tmp-…` first, then renames it. */
function lockFiles(): string[] {
  return readdirSync(join(repo(), 'locks')).filter((f) => /^[0-9a-f]{64}$/.test(f));
}

/**
 * A real exclusive lock: restic's own prune, stopped once its lock file exists under its final
 * name (restic waits 200 ms after writing it before it goes on, so it is stopped while it holds
 * the lock; stopped while the file still had its temporary name, it would hold nothing that
 * other clients see). resume() lets it finish.
 */
async function stoppedPrune(): Promise<{ resume: () => Promise<void> }> {
  const prune = execa('restic', ['prune'], { env: { ...env, RESTIC_REPOSITORY: repo() }, reject: false });
  const deadline = Date.now() + 20_000;
  while (lockFiles().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  prune.kill('SIGSTOP');
  return {
    resume: async () => {
      prune.kill('SIGCONT');
      expect((await prune).exitCode).toBe(0);
    },
  };
}

/**
 * Runs the CLI on the repository while a stopped prune holds its exclusive lock. Once the run
 * said why it waits (or after 30 s), the prune is let go; gives what the run had said by then
 * and how it ended.
 */
async function runWhileLocked(args: string[]): Promise<{ waiting: string; result: Awaited<ReturnType<typeof cliSpawn>> }> {
  const prune = await stoppedPrune();
  let resumed = false;
  try {
    const run = cliSpawn([...args, '--project', P, '--target', `restic:${repo()}`], env);
    let stderr = '';
    run.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const deadline = Date.now() + 30_000;
    while (!/has not opened/.test(stderr) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const waiting = stderr;
    await prune.resume();
    resumed = true;
    return { waiting, result: await run };
  } finally {
    if (!resumed) await prune.resume();
  }
}

describe('verify, protect and prune on a restic target', () => {
  it('verifies a sound repository with exit 0', async () => {
    const r = await run(['verify', '--read-data']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/3 ok, 0 damaged; data read by restic check in /);
    // A subset read says how much.
    const part = await run(['verify', '--read-data-subset', '10%']);
    expect(part.exitCode, part.stderr).toBe(0);
    expect(part.stderr).toMatch(/3 ok, 0 damaged; 10% of the data read by restic check in /);
    // Without --read-data or --deep no byte of the backups is read, and "ok" says less: said.
    const light = await run(['verify']);
    expect(light.exitCode, light.stderr).toBe(0);
    expect(light.stderr).toMatch(/3 ok, 0 damaged; the repository's structure checked, its data not read \(--read-data reads it, --deep each backup's\) in /);
  });

  it('with --deep lists during the repository check and opens each next backup while the current one is read', async () => {
    // The real restic behind a wrapper that writes down when each run starts and ends (ms).
    const log = join(tmp.dir, 'timed-calls.log');
    const wrapper = join(tmp.dir, 'timed-restic');
    writeFileSync(log, '');
    writeFileSync(wrapper, `#!/bin/sh\nprintf '%s start %s\\n' "$(date +%s%3N)" "$*" >>'${log}'\nrestic "$@"\nrc=$?\nprintf '%s end %s\\n' "$(date +%s%3N)" "$*" >>'${log}'\nexit $rc\n`, { mode: 0o755 });
    const r = await cli(['verify', '--deep', '--project', P, '--target', `restic:${repo()}`], { ...env, RESTIC_BINARY: wrapper });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/3 ok, 0 damaged/);
    const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => {
      const [at, what, ...args] = l.split(' ');
      return { at: Number(at), what, args: args.join(' ') };
    });
    const runs = (match: RegExp) => {
      const starts = lines.filter((l) => l.what === 'start' && match.test(l.args)).sort((a, b) => a.at - b.at);
      return starts.map((s) => ({ start: s.at, end: lines.find((l) => l.what === 'end' && l.args === s.args)!.at }));
    };
    const [listing] = runs(/^--retry-lock \S+ snapshots /);
    const [check] = runs(/^--retry-lock \S+ check/);
    expect(listing!.start).toBeLessThan(check!.end);
    expect(check!.start).toBeLessThan(listing!.end);
    // Three backups, checked oldest first: three archives and three manifest files read, each by
    // its own dump. Every archive after the first was opened while the one before it was still
    // being read, and so was the second backup's manifest file.
    const listed = await run(['list', 'instances', '--output', 'json']);
    const ids = parseJson<{ timestamp: string; location: string }[]>(listed.stdout)
      .sort((a, b) => a.timestamp.localeCompare(b.timestamp))
      .map((row) => row.location);
    const archives = ids.map((id) => runs(new RegExp(` dump ${id} /\\S+_m1\\.tar$`)));
    const manifests = runs(/ dump \S+ \/\S+_m1_manifest\.json$/);
    const calls = readFileSync(log, 'utf8');
    expect([...archives.map((a) => a.length), manifests.length], calls).toEqual([1, 1, 1, 3]);
    for (let k = 1; k < 3; k++) expect(archives[k]![0]!.start, calls).toBeLessThan(archives[k - 1]![0]!.end);
    expect(manifests.filter((m) => m.start < archives[0]![0]!.end), calls).toHaveLength(2);
  });

  it('lists while another client holds an exclusive lock: a listing takes no lock', async () => {
    const prune = await stoppedPrune();
    try {
      expect(lockFiles()).toHaveLength(1);
      const started = Date.now();
      const r = await run(['list', 'instances', 'm1', '--output', 'json']);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(parseJson<unknown[]>(r.stdout)).toHaveLength(3);
      // With a lock it would wait for the prune (up to --retry-lock's 2 minutes).
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(lockFiles()).toHaveLength(1);
    } finally {
      await prune.resume();
    }
  });

  it('says why a restore waits while another client holds an exclusive lock, then goes on', async () => {
    try {
      const { waiting, result: r } = await runWhileLocked(['restore', 'instance', 'm1', '--target-name', 'm1-waited', '-y']);
      // restic prints nothing while it waits for the lock: the CLI says why nothing moves.
      expect(waiting).toMatch(/warning: restic dump has not opened \S+ after 10 s: it is loading the repository's index, or waiting \(up to 2m\) for a lock another restic process holds/);
      expect(r.exitCode, String(r.stderr)).toBe(0);
      // What restic wrote on the dump's stdout was the archive alone (its lock notice would have
      // failed the checksum, and the archive would have been read a second time).
      expect(r.stderr).not.toMatch(/again/);
      expect(await sh(P, 'm1-waited', 'ls /data')).toContain('blob');
    } finally {
      await incus('delete', '-f', 'm1-waited', '--project', P).catch(() => undefined);
    }
  });

  it('restores an archive whose first byte comes after Incus has closed idle connections (30 s)', async () => {
    // A large remote repository can take longer than that to load its index before `restic dump`
    // writes anything: here the real restic, started 32 s late. The import must not be sent
    // before the archive flows: Incus would drop the connection while it waits.
    const wrapper = join(tmp.dir, 'slow-dump-restic');
    writeFileSync(wrapper, '#!/bin/sh\ncase " $* " in *" dump "*) sleep 32 ;; esac\nexec restic "$@"\n', { mode: 0o755 });
    try {
      const r = await cli(['restore', 'instance', 'm1', '--target-name', 'm1-late', '-y', '--project', P, '--target', `restic:${repo()}`], {
        ...env,
        RESTIC_BINARY: wrapper,
      });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/restic dump has not opened/);
      expect(await sh(P, 'm1-late', 'ls /data')).toContain('blob');
    } finally {
      await incus('delete', '-f', 'm1-late', '--project', P).catch(() => undefined);
    }
  });

  it('verifies past the stale lock of a restic process of this host that was killed (no 2-minute wait, no failure); prune does the same', async () => {
    // A restic killed outright (kill -9 of a run, or of restic) leaves its lock. An exclusive
    // lock (check, prune) waits for every other one, stale or not: each later verify and prune
    // would wait 2 minutes and fail, until someone ran `restic unlock`.
    const leaver = execa('restic', ['backup', '--stdin', '--stdin-filename', 'x'], { env: { ...env, RESTIC_REPOSITORY: repo() }, reject: false });
    const deadline = Date.now() + 20_000;
    while (lockFiles().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    leaver.kill('SIGKILL');
    await leaver;
    expect(lockFiles()).toHaveLength(1);
    const started = Date.now();
    const v = await run(['verify']);
    expect(v.exitCode, v.stderr).toBe(0);
    expect(v.stderr).toMatch(/warning: removed 1 stale restic lock\(s\) from restic:\S+: left by restic processes of this host that were killed/);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(lockFiles()).toHaveLength(0);
  });

  it('keeps a protected backup through prune and removes the rest of what the policy drops', async () => {
    const versions = parseJson<{ timestamp: string }[]>((await run(['list', 'instances', 'm1', '--output', 'json'])).stdout).map((v) => v.timestamp);
    expect(versions).toHaveLength(3);
    const p = await run(['protect', 'instances', 'm1', '--version', versions[0]!]);
    expect(p.exitCode, p.stderr).toBe(0);
    const listed = parseJson<{ timestamp: string; protected: boolean }[]>((await run(['list', 'instances', 'm1', '--output', 'json'])).stdout);
    expect(listed.map((v) => [v.timestamp, v.protected])).toEqual(versions.map((v, i) => [v, i === 0]));
    const dry = await run(['prune', 'instances', 'm1', '--keep-last', '1', '--dry-run']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`${versions[0]}.*keep.*protected`));
    const r = await run(['prune', 'instances', 'm1', '--keep-last', '1', '-y']);
    expect(r.exitCode, r.stderr).toBe(0);
    // Not the backup's size (its data is mostly shared with the two kept): what restic gave back.
    const reclaimed = /^removed 1 backup\(s\), restic reclaimed (\d+(?:\.\d)?) (B|KiB|MiB) \(it keeps the data other backups share\)$/m.exec(r.stderr);
    expect(reclaimed, r.stderr).not.toBeNull();
    // The removed backup holds a 6 MiB blob the kept ones share: far less than that comes back.
    expect(Number(reclaimed![1]) * { B: 1, KiB: 1024, MiB: 1024 ** 2 }[reclaimed![2] as 'B' | 'KiB' | 'MiB']).toBeLessThan(1024 ** 2);
    const left = parseJson<{ timestamp: string }[]>((await run(['list', 'instances', 'm1', '--output', 'json'])).stdout).map((v) => v.timestamp);
    expect(left).toEqual([versions[0], versions[2]]);
    const v = await run(['verify']);
    expect(v.exitCode, v.stderr).toBe(0);
  });

  it('removes what a run killed between its data and its manifest left, once a later backup of it has completed', async () => {
    // Power loss right after restic saved the archive: asked for the manifest snapshot, this
    // restic SIGKILLs the incus-backup process that started it.
    const killer = join(tmp.dir, 'restic-killer');
    writeFileSync(killer, '#!/bin/sh\ncase "$*" in *ib-manifest*) kill -9 $PPID; exit 1;; esac\nexec restic "$@"\n');
    chmodSync(killer, 0o755);
    const dataSnapshots = async () => {
      const r = await execa('restic', ['snapshots', '--json', '--no-lock', '--tag', 'ib-archive,ib-name=m1'], { env: { ...env, RESTIC_REPOSITORY: repo() } });
      return (JSON.parse(r.stdout) as { id: string }[]).map((s) => s.id);
    };
    const listed = async () => parseJson<{ location: string }[]>((await run(['list', 'instances', 'm1', '--output', 'json'])).stdout).map((e) => e.location);
    const before = await listed();
    const killed = await cli(['backup', 'instances', 'm1', '--project', P, '--target', `restic:${repo()}`], { ...env, RESTIC_BINARY: killer });
    expect(killed.exitCode, killed.stderr).toBe(-1); // killed by a signal
    const orphans = (await dataSnapshots()).filter((id) => !before.includes(id));
    expect(orphans).toHaveLength(1);
    const short = orphans[0]!.slice(0, 8);
    expect(await listed()).toEqual(before);

    // It may still be a backup completing right now: named by verify, left alone by prune.
    const v1 = await run(['verify']);
    expect(v1.exitCode).toBe(3);
    expect(v1.stdout + v1.stderr).toMatch(new RegExp(`data snapshot ${short} .* has no manifest: its backup never completed, or is completing right now`));
    const p1 = await run(['prune', '--keep-last', '5', '-y']);
    expect(p1.exitCode, p1.stderr).toBe(0);
    expect(p1.stdout + p1.stderr).not.toMatch(/leftover/);
    expect(await dataSnapshots()).toContain(orphans[0]);

    // The next backup of m1 completes (and clears the killed run's leftovers on the host): the
    // orphan is now surely a leftover, which a dry run shows and prune removes.
    const next = await run(['backup', 'instances', 'm1']);
    expect(next.exitCode, next.stderr).toBe(0);
    const v2 = await run(['verify']);
    expect(v2.exitCode).toBe(3);
    expect(v2.stdout + v2.stderr).toMatch(/a run killed before writing it left it, or the manifest snapshot was lost \(a later backup of it has completed since\); `incus-backup prune` removes it/);
    const dry = await run(['prune', '--keep-last', '5', '--dry-run']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`m1 .*remove.*left by a run that never completed \\(${short}\\)`));
    expect(dry.stderr).toMatch(/0 to remove \(0 B\) and 1 leftover\(s\) of runs that never completed \(\d/);
    expect(await dataSnapshots()).toContain(orphans[0]);
    const p2 = await run(['prune', '--keep-last', '5', '-y']);
    expect(p2.exitCode, p2.stderr).toBe(0);
    expect(p2.stderr).toMatch(/removed 0 backup\(s\) and 1 leftover\(s\)/);
    expect(await dataSnapshots()).not.toContain(orphans[0]);
    expect(await listed()).toHaveLength(before.length + 1);
    const v3 = await run(['verify']);
    expect(v3.exitCode, v3.stdout + v3.stderr).toBe(0);
  });

  it('finds a missing pack without --read-data: exit 3, naming it', async () => {
    const copy = join(tmp.dir, 'missing');
    cpSync(repo(), copy, { recursive: true });
    const pack = largestPack(copy);
    rmSync(pack);
    const r = await run(['verify'], copy);
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toMatch(/damaged/);
    expect(r.stdout + r.stderr).toContain(pack.split('/').pop()!.slice(0, 10));
    // Nothing of the backups' own was read: they are not called sound while the repository is
    // damaged, and the totals count backups, not the repository's row.
    expect(r.stderr).toMatch(/^verified 3 backup\(s\) in \S+: 0 ok, 0 damaged, 3 not known to be sound; the repository itself is damaged; /m);
    expect(r.stderr).toMatch(/^Hint: the repository check found damage that may touch 3 backup\(s\) marked unknown: `incus-backup verify --deep`/m);
    const json = await run(['verify', '--output', 'json'], copy);
    expect(parseJson<{ type: string; status: string }[]>(json.stdout).map((i) => `${i.type}:${i.status}`)).toEqual(['repository:damaged', 'instance:unknown', 'instance:unknown', 'instance:unknown']);
    // --deep reads each one and tells which the missing pack touches.
    const deep = await run(['verify', '--deep', '--output', 'json'], copy);
    expect(deep.exitCode).toBe(3);
    expect(parseJson<{ status: string }[]>(deep.stdout).filter((i) => i.status === 'unknown')).toEqual([]);
    // prune there would keep the newest and forget the older ones, which may be the only sound
    // ones (restic's own prune finds the damage only after the forget): refused, nothing removed.
    const listed = async () => parseJson<{ timestamp: string }[]>((await run(['list', 'instances', 'm1', '--output', 'json'], copy)).stdout).map((v) => v.timestamp);
    const before = await listed();
    expect(before).toHaveLength(3);
    const prune = await run(['prune', '--keep-last', '1', '-y', '--output', 'json'], copy);
    expect(prune.exitCode).toBe(1);
    expect(prune.stdout).toBe('');
    expect(prune.stderr).toMatch(/^Error: prune refused: restic:\S+ is damaged \(.*\); nothing was removed$/m);
    expect(prune.stderr).toMatch(/^Hint: `incus-backup verify --deep` names the backups the damage touches; mend the repository/m);
    expect(await listed()).toEqual(before);
    // A dry run shows the plan, then what the run would say of it: refused (it promised
    // removals before).
    const dry = await run(['prune', '--keep-last', '1', '--dry-run'], copy);
    expect(dry.exitCode).toBe(1);
    expect(dry.stdout).toMatch(/remove/);
    expect(dry.stderr).toMatch(/^Error: prune refused: restic:\S+ is damaged \(.*\); nothing was removed$/m);
    expect(await listed()).toEqual(before);
  });

  it('verify --deep calls a backup that a prune removed meanwhile gone, not damaged', async () => {
    const copy = join(tmp.dir, 'pruned-meanwhile');
    cpSync(repo(), copy, { recursive: true });
    const be = createResticBackend(copy, `restic:${copy}`, { env: { ...process.env, ...env } });
    try {
      const [entry] = await be.list({ project: P });
      // What a concurrent prune does between verify's listing and its reading this backup.
      await be.remove([entry!]);
      expect(await be.checkEntry!(entry!, { deep: true })).toMatchObject({ gone: true, problems: [] });
    } finally {
      await be.close();
    }
  });

  it('one unreadable snapshot file, of another backup, stops neither a backup nor the restore of a newest backup', async () => {
    // restic's search for a parent snapshot, and `dump latest`, load every snapshot file.
    const copy = join(tmp.dir, 'bad-snapshot');
    cpSync(repo(), copy, { recursive: true });
    writeFileSync(join(copy, 'snapshots', 'ab'.repeat(32)), randomBytes(300));
    const b = await run(['backup', 'instances', 'm1'], copy);
    expect(b.exitCode, b.stderr).toBe(0);
    const r = await run(['restore', 'instance', 'm1', '--target-name', 'm1-bad-snap', '-y'], copy);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await sh(P, 'm1-bad-snap', 'test -s /data/blob && echo there')).toBe('there');
    await incus('delete', '-f', 'm1-bad-snap', '--project', P);
  });

  it('asks before using a restic older than 0.18: refused without a terminal, allowed with -y', async () => {
    // The real restic behind a wrapper that reports an old version (as a distribution might ship).
    const wrapper = join(tmp.dir, 'old-restic');
    writeFileSync(wrapper, '#!/bin/sh\n[ "$1" = version ] && { echo "restic 0.16.4 compiled with go1.21.6 on linux/amd64"; exit 0; }\nexec restic "$@"\n', { mode: 0o755 });
    const refused = await cli(['list', '--project', P, '--target', `restic:${repo()}`], { ...env, RESTIC_BINARY: wrapper });
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toMatch(/restic 0\.16\.4 is older than 0\.18\.0/);
    expect(refused.stderr).toMatch(/no terminal to ask on/);
    const allowed = await cli(['list', '-y', '--project', P, '--target', `restic:${repo()}`, '--output', 'json'], { ...env, RESTIC_BINARY: wrapper });
    expect(allowed.exitCode, allowed.stderr).toBe(0);
    expect(parseJson<unknown[]>(allowed.stdout).length).toBeGreaterThan(0);
  });

  it('finds a damaged pack with --read-data: exit 3', async () => {
    const copy = join(tmp.dir, 'damaged');
    cpSync(repo(), copy, { recursive: true });
    const pack = largestPack(copy);
    flipByte(pack, Math.floor(statSync(pack).size / 2));
    const r = await run(['verify', '--read-data'], copy);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stdout + r.stderr).toMatch(/restic check found damage: pack [0-9a-f]+/);
    // --deep streams every archive back: the damaged data is named per backup too.
    const deep = await run(['verify', '--deep'], copy);
    expect(deep.exitCode, deep.stderr).toBe(3);
  });

  it('reads every manifest file with --deep: one replaced by junk under the same tags is damage', async () => {
    const copy = join(tmp.dir, 'junk-manifest');
    cpSync(repo(), copy, { recursive: true });
    const restic = (args: string[], input?: string) =>
      execa('restic', args, { env: { RESTIC_REPOSITORY: copy, RESTIC_PASSWORD: env.RESTIC_PASSWORD }, ...(input !== undefined ? { input } : {}) });
    const snaps = JSON.parse((await restic(['snapshots', '--json'])).stdout) as { id: string; paths: string[]; tags: string[] }[];
    // The oldest backup's manifest is read when its turn comes, the newest one's ahead of it
    // (while the backup before it is read): both kinds of read must see the junk.
    const manifests = snaps.filter((x) => x.tags.includes('ib-manifest'));
    for (const manifest of [manifests[0]!, manifests.at(-1)!]) {
      // The listing only reads tags, so the same tags over a junk file still list as a backup.
      await restic(['backup', '--stdin', '--stdin-filename', manifest.paths[0]!.slice(1), '--host', 'incus-backup', ...manifest.tags.flatMap((t) => ['--tag', t]), '--quiet'], 'not a manifest');
      await restic(['forget', manifest.id]);
    }
    const shallow = await run(['verify'], copy);
    expect(shallow.exitCode, shallow.stderr).toBe(0);
    const deep = await run(['verify', '--deep', '--output', 'json'], copy);
    expect(deep.exitCode, deep.stderr).toBe(3);
    const items = parseJson<{ status: string; timestamp: string; problems: { kind: string; message: string }[] }[]>(deep.stdout);
    const damaged = items.filter((i) => i.status === 'damaged');
    expect(damaged.map((i) => i.timestamp)).toEqual([items[0]!.timestamp, items.at(-1)!.timestamp]);
    for (const i of damaged) expect(i.problems[0]).toMatchObject({ kind: 'manifest', message: expect.stringMatching(/manifest of instance .* is unreadable/) });
  });

  // Last: it adds a backup of m1, which the tests above count.
  it('says why a backup waits while another client holds an exclusive lock, then goes on', async () => {
    const count = async () => parseJson<unknown[]>((await run(['list', 'instances', 'm1', '--output', 'json'])).stdout).length;
    const before = await count();
    const { waiting, result: r } = await runWhileLocked(['backup', 'instances', 'm1']);
    expect(waiting).toMatch(/warning: restic backup has not opened \S+ after 10 s: it is loading the repository's index, or waiting \(up to 2m\) for a lock another restic process holds/);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await count()).toBe(before + 1);
  });

  it('stops at once on SIGTERM while restic is still at it (systemd stopping the unit signals incus-backup alone)', async () => {
    // The listing takes its time (a remote repository retrying a server that went away does
    // that for up to 15 minutes): here the real restic, started 5 minutes late.
    const wrapper = join(tmp.dir, 'slow-listing-restic');
    writeFileSync(wrapper, '#!/bin/sh\ncase " $* " in *" snapshots "*) exec sleep 300 ;; esac\nexec restic "$@"\n', { mode: 0o755 });
    const count = async () => parseJson<unknown[]>((await run(['list', 'instances', 'm1', '--output', 'json'])).stdout).length;
    const before = await count();
    const child = cliSpawn(['backup', 'instances', 'm1', '--project', P, '--target', `restic:${repo()}`], { ...env, RESTIC_BINARY: wrapper });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const deadline = Date.now() + 30_000;
    while (!/m1: (staging|\d)/.test(stderr) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    // Only the CLI gets the signal, as with KillMode=mixed: its restic children are its to stop.
    const sent = Date.now();
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode, stderr).toBe(130);
    // Not after restic is done (systemd would have killed the unit by then, leaving its copy).
    expect(Date.now() - sent).toBeLessThan(20_000);
    expect(stderr).toMatch(/nothing was kept/);
    expect(await count()).toBe(before);
    expect(await snapshotNames(P, 'm1')).toEqual([]);
    expect((await incus('list', '--project', P, '--format', 'csv', '--columns', 'n')).split('\n').filter((n) => n.startsWith('ibtmp-'))).toEqual([]);
  });
});
