import { cpSync, promises as fs, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, flipByte, launch, parseJson, tempTarget, testProject } from './helpers.js';

// One real backup per compression, made once; each test damages its own copy of the target.
let proj: Awaited<ReturnType<typeof testProject>>;
const base = tempTarget();
const copies: ReturnType<typeof tempTarget>[] = [];
/** The backup runs' rows, by compression. */
const made: Record<string, { timestamp: string; size: number; archiveSize: number }> = {};

interface Item {
  name: string;
  timestamp: string;
  status: string;
  problems: { kind: string; message: string }[];
}

function copyTarget(): { dir: string; uri: string; versions: string[] } {
  const t = tempTarget();
  copies.push(t);
  cpSync(base.dir, t.dir, { recursive: true });
  const versions = readdirSync(join(t.dir, 'instances', proj.name, 'c1')).sort();
  return { dir: t.dir, uri: t.uri, versions };
}

const backupDir = (t: { dir: string }, version: string) => join(t.dir, 'instances', proj.name, 'c1', version);

beforeAll(async () => {
  proj = await testProject('verify');
  await launch(proj.name, 'c1');
  for (const compression of ['none', 'gzip']) {
    const r = await cli(['backup', 'instances', 'c1', '--project', proj.name, '--target', base.uri, '--compression', compression, '--output', 'json']);
    expect(r.exitCode, r.stderr).toBe(0);
    made[compression] = parseJson<{ timestamp: string; size: number; archiveSize: number }[]>(r.stdout)[0]!;
  }
});

afterAll(async () => {
  await proj?.dispose();
  base.dispose();
  for (const c of copies) c.dispose();
});

describe('verify on a directory target', () => {
  it('passes a clean target with exit 0 and counts what it read', async () => {
    const r = await cli(['verify', 'all', '--project', proj.name, '--target', base.uri, '--output', 'json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const items = parseJson<Item[]>(r.stdout);
    expect(items.map((i) => [i.name, i.status])).toEqual([
      ['c1', 'ok'],
      ['c1', 'ok'],
    ]);
    expect(r.stderr).toMatch(new RegExp(`verified 2 backup\\(s\\) in ${base.uri}: 2 ok, 0 damaged; \\d+(\\.\\d)? MiB checked`));
  });

  it('names a compressed backup\'s two sizes alike in backup, list, verify and a restore plan', async () => {
    const gz = made.gzip!;
    expect(gz.size).toBeLessThan(gz.archiveSize); // stored compressed, streamed as a tar
    expect(made.none!.size).toBe(made.none!.archiveSize);
    const listed = parseJson<{ timestamp: string; size: number; archiveSize: number }[]>((await cli(['list', 'instances', 'c1', '--project', proj.name, '--target', base.uri, '--output', 'json'])).stdout);
    expect(listed.find((l) => l.timestamp === gz.timestamp)).toMatchObject({ size: gz.size, archiveSize: gz.archiveSize });
    const verified = parseJson<{ timestamp: string; size: number }[]>((await cli(['verify', 'instances', 'c1', '--project', proj.name, '--target', base.uri, '--output', 'json'])).stdout);
    expect(verified.find((v) => v.timestamp === gz.timestamp)).toMatchObject({ size: gz.size });
    const plan = await cli(['restore', 'instance', 'c1', '--version', gz.timestamp, '--target-name', 'c1-sizes', '--dry-run', '--project', proj.name, '--target', base.uri, '--output', 'json']);
    expect(plan.exitCode, plan.stderr).toBe(0);
    expect(parseJson<unknown[]>(plan.stdout)).toEqual([expect.objectContaining({ size: gz.size, archiveSize: gz.archiveSize })]);
  });

  it('exits 3 on a flipped byte, naming the backup and "checksum"', async () => {
    const t = copyTarget();
    const [plain, gz] = t.versions as [string, string];
    for (const [v, file] of [
      [plain, 'export.tar'],
      [gz, 'export.tar.gz'],
    ] as const) {
      const path = join(backupDir(t, v), file);
      flipByte(path, Math.floor(statSync(path).size / 2));
    }
    const r = await cli(['verify', 'instances', 'c1', '--project', proj.name, '--target', t.uri]);
    expect(r.exitCode, r.stderr).toBe(3);
    const lines = r.stdout.split('\n');
    for (const v of [plain, gz]) {
      const line = lines.find((l) => l.includes(` ${v} `));
      expect(line).toMatch(/c1 .* damaged .*checksum mismatch/);
    }
    expect(r.stderr).toContain('0 ok, 2 damaged');
  });

  it('--version verifies that one backup: the sound one exits 0 beside a damaged one, the damaged one exits 3', async () => {
    const t = copyTarget();
    const [plain, gz] = t.versions as [string, string];
    const path = join(backupDir(t, gz), 'export.tar.gz');
    flipByte(path, Math.floor(statSync(path).size / 2));
    const sound = await cli(['verify', 'instances', 'c1', '--version', plain, '--project', proj.name, '--target', t.uri, '--output', 'json']);
    expect(sound.exitCode, sound.stderr).toBe(0);
    expect(parseJson<Item[]>(sound.stdout).map((i) => [i.timestamp, i.status])).toEqual([[plain, 'ok']]);
    expect(sound.stderr).toContain('verified 1 backup(s)');
    const log = join(t.dir, 'verify.jsonl');
    const damaged = await cli(['verify', 'instances', 'c1', '--version', gz, '--project', proj.name, '--target', t.uri, '--output', 'json', '--log-file', log]);
    expect(damaged.exitCode, damaged.stderr).toBe(3);
    expect(parseJson<Item[]>(damaged.stdout).map((i) => [i.timestamp, i.status])).toEqual([[gz, 'damaged']]);
    // The weekly job's log says what is damaged and why, and that the run found damage.
    const events = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events.filter((e) => e.operation === 'result')).toEqual([
      expect.objectContaining({ level: 'error', resource: `instance ${proj.name}/c1`, result: 'damaged', version: gz, error: expect.stringContaining('checksum mismatch') }),
    ]);
    expect(events.at(-1)).toMatchObject({ message: 'end', exitCode: 3, counts: { damaged: 1 } });
    // A version that is not there is a mistake (exit 2) naming those that are.
    const missing = await cli(['verify', 'instances', 'c1', '--version', '20200101T000000Z', '--project', proj.name, '--target', t.uri]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(new RegExp(`^Error: instance ${proj.name}/c1 has no backup with version 20200101T000000Z\nHint: available \\(newest last\\): ${plain}, ${gz}$`, 'm'));
    const unnamed = await cli(['verify', 'instances', '--version', plain, '--project', proj.name, '--target', t.uri]);
    expect(unnamed.exitCode).toBe(2);
    expect(unnamed.stderr).toMatch(/^Error: --version picks one backup of one resource$/m);
  });

  it('exits 3 on a deleted archive file, saying it is missing', async () => {
    const t = copyTarget();
    await fs.rm(join(backupDir(t, t.versions[0]!), 'export.tar'));
    const r = await cli(['verify', '--project', proj.name, '--target', t.uri, '--output', 'json']);
    expect(r.exitCode, r.stderr).toBe(3);
    const items = parseJson<Item[]>(r.stdout);
    expect(items.map((i) => [i.timestamp, i.status, i.problems.map((p) => `${p.kind}: ${p.message}`)])).toEqual([
      [t.versions[0], 'damaged', ['missing: archive export.tar is missing']],
      [t.versions[1], 'ok', []],
    ]);
    // A weekly job with --quiet: the damaged backup and the totals, not every good one.
    const quiet = await cli(['verify', '--project', proj.name, '--target', t.uri, '-q']);
    expect(quiet.exitCode, quiet.stderr).toBe(3);
    expect(quiet.stdout).toContain(t.versions[0]);
    expect(quiet.stdout).toContain('archive export.tar is missing');
    expect(quiet.stdout).not.toContain(t.versions[1]);
    expect(quiet.stderr).toMatch(/^verified 2 backup\(s\) in \S+: 1 ok, 1 damaged; /m);
    const clean = await cli(['verify', '--project', proj.name, '--target', base.uri, '-q']);
    expect(clean.exitCode, clean.stderr).toBe(0);
    expect(clean.stdout).toBe('');
    expect(clean.stderr).toMatch(/^verified 2 backup\(s\) in \S+: 2 ok, 0 damaged; /m);
  });

  it('exits 3 on a corrupt manifest.json, saying "manifest"', async () => {
    const t = copyTarget();
    const path = join(backupDir(t, t.versions[1]!), 'manifest.json');
    await fs.writeFile(path, (await fs.readFile(path, 'utf8')).slice(0, 200));
    const r = await cli(['verify', '--project', proj.name, '--target', t.uri]);
    expect(r.exitCode, r.stderr).toBe(3);
    const line = r.stdout.split('\n').find((l) => l.includes(t.versions[1]!));
    expect(line).toMatch(/damaged .*invalid manifest: not valid JSON/);
    expect(r.stderr).toContain('1 ok, 1 damaged');

    // list leaves it out (nothing could restore it) but says so, naming it.
    const [good, bad] = t.versions as [string, string];
    const list = await cli(['list', '--project', proj.name, '--target', t.uri]);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(list.stdout).toContain(good);
    expect(list.stdout).not.toContain(bad);
    expect(list.stderr).toMatch(new RegExp(`warning: 1 damaged backup\\(s\\) not listed \\(instance ${proj.name}/c1 ${bad}\\); \`incus-backup verify\` says what is wrong`));
    // A restore of the newest falls back to the older one, loudly; asked for by version, it is named as damaged.
    const newest = await cli(['restore', 'instance', 'c1', '--target-name', 'c9', '--dry-run', '--project', proj.name, '--target', t.uri]);
    expect(newest.exitCode, newest.stderr).toBe(0);
    expect(newest.stdout).toContain(good);
    expect(newest.stderr).toMatch(new RegExp(`warning: instance ${proj.name}/c1: the newest backup \\(${bad}\\) is damaged \\(invalid manifest.*\\); ${good} is used instead`));
    const named = await cli(['restore', 'instance', 'c1', '--version', bad, '--target-name', 'c9', '--dry-run', '--project', proj.name, '--target', t.uri]);
    expect(named.exitCode).toBe(2);
    expect(named.stderr).toMatch(new RegExp(`^Error: instance ${proj.name}/c1 ${bad} is damaged \\(invalid manifest`, 'm'));
    expect(named.stderr).toMatch(/^Hint: `incus-backup verify` says more; pick another version/m);
  });

  it('a restore of everything does not pass over a resource whose every backup is damaged', async () => {
    const t = copyTarget();
    // ghost's only backup has a manifest nobody can read.
    const ghost = join(t.dir, 'instances', proj.name, 'ghost', '20260101T000000Z');
    await fs.mkdir(ghost, { recursive: true });
    await fs.writeFile(join(ghost, 'manifest.json'), '{"format":1, broken');
    const said = new RegExp(`warning: instance ${proj.name}/ghost: every backup is damaged \\(20260101T000000Z: invalid manifest.*\\); it is not restored`);
    const dry = await cli(['restore', 'all', '--replace', '--dry-run', '--project', proj.name, '--target', t.uri]);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stderr).toMatch(said);
    // c1 is restored; ghost is a failed row, and the run is not a success (exit 3).
    const r = await cli(['restore', 'all', '--replace', '-y', '--project', proj.name, '--target', t.uri, '--output', 'json']);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stderr).toMatch(said);
    const rows = parseJson<{ name: string; status: string; error?: string }[]>(r.stdout);
    expect(rows.map((x) => `${x.name}:${x.status}`)).toEqual(['c1:ok', 'ghost:failed']);
    expect(rows[1]!.error).toMatch(/^every backup of instance \S+\/ghost is damaged \(invalid manifest/);
    // restore instances (all of the project) says the same; by name it is named as damaged.
    const bulk = await cli(['restore', 'instances', '--skip-existing', '-y', '--project', proj.name, '--target', t.uri]);
    expect(bulk.exitCode).toBe(1);
    expect(bulk.stderr).toMatch(new RegExp(`^Error: every backup of instance ${proj.name}/ghost is damaged`, 'm'));
    const named = await cli(['restore', 'instance', 'ghost', '-y', '--project', proj.name, '--target', t.uri]);
    expect(named.exitCode).toBe(2);
    expect(named.stderr).toMatch(new RegExp(`^Error: instance ${proj.name}/ghost 20260101T000000Z is damaged`, 'm'));
  });

  it('restore all with a --version older than every backup says so (not "no backups found")', async () => {
    const r = await cli(['restore', 'all', '--version', '20200101T000000Z', '--dry-run', '--project', proj.name, '--target', base.uri]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^Error: no backup in dir:\S+ for project \S+ is from --version 20200101T000000Z or before$/m);
    expect(r.stderr).toMatch(/^Hint: the oldest is \d{8}T\d{6}Z; `incus-backup list` shows them all$/m);
  });

  it('accepts the restic read options on a dir target and rejects bad input with exit 2', async () => {
    const ok = await cli(['verify', '--read-data', '--read-data-subset', '10%', '--deep', '--project', proj.name, '--target', base.uri, '-q']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    const subset = await cli(['verify', '--read-data-subset', 'lots', '--project', proj.name, '--target', base.uri]);
    expect(subset.exitCode).toBe(2);
    expect(subset.stderr).toContain('--read-data-subset "lots"');
    // In range, not only in shape: restic's own refusal would come back as "damage" (exit 3).
    const over = await cli(['verify', '--read-data-subset', '150%', '--project', proj.name, '--target', base.uri]);
    expect(over.exitCode).toBe(2);
    expect(over.stderr).toMatch(/^Error: --read-data-subset "150%": x% needs 0 < x <= 100$/m);
    const unknown = await cli(['verify', 'instances', 'nope', '--project', proj.name, '--target', base.uri]);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toContain('no backups of instances nope');
  });
});
