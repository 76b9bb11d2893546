import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createResticBackend, type ResticBackend } from '../../src/backends/restic/index.js';
import { pidAlive } from '../../src/core/fsutil.js';
import { planRestore, restoreItem } from '../../src/core/restore.js';
import { IncusApi } from '../../src/incus/api.js';
import { IncusClient, resolveSocketPath } from '../../src/incus/client.js';
import { createUi } from '../../src/output/ui.js';
import { cli, cliSpawn, freePort, incus, instanceNames, launch, parseJson, repo as repoRoot, restServer, serverBackupNames, sh, snapshotNames, state, stopRestServers, testProject } from './helpers.js';

const PASSWORD = 'correct-horse-restic-pw';
const env = { RESTIC_PASSWORD: PASSWORD };

interface ListRow {
  type: string;
  project: string;
  name: string;
  pool?: string;
  timestamp: string;
  size: number;
  archiveSize: number;
  sha256: string;
  consistency: string;
  instant: string;
  location: string;
}

interface Snap {
  id: string;
  tags?: string[];
  paths: string[];
  summary?: { data_added: number; total_bytes_processed: number };
}

let project: { name: string; dispose: () => Promise<void> };
let P: string;
let work: string;
let sha: string;

/** `restic snapshots --json` straight from the real binary, to check what the repository holds. */
async function snapshots(repo: string): Promise<Snap[]> {
  const r = await execa('restic', ['snapshots', '--json'], { env: { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD } });
  return JSON.parse(r.stdout) as Snap[];
}

async function listJson(uri: string, ...args: string[]): Promise<ListRow[]> {
  const r = await cli(['list', ...args, '--project', P, '--target', uri, '--output', 'json'], env);
  expect(r.exitCode, r.stderr).toBe(0);
  return parseJson<ListRow[]>(r.stdout);
}

function backend(repo: string): ResticBackend {
  return createResticBackend(repo, `restic:${repo}`, { env: { ...process.env, ...env } });
}

/**
 * A data snapshot of instance c1 with no manifest, as a run killed between the two would leave:
 * 1 MiB of `fill` bytes under c1's archive name and tags. Returns its id.
 */
async function orphanArchive(repo: string, fill: number): Promise<string> {
  const tags = ['ib-archive', 'ib-type=instance', `ib-project=${P}`, 'ib-name=c1'].flatMap((t) => ['--tag', t]);
  const r = await execa('restic', ['backup', '--stdin', '--stdin-filename', `incus_${P}_instance_c1.tar`, '--host', 'incus-backup', ...tags, '--json', '--quiet'], {
    input: Buffer.alloc(1 << 20, fill),
    env: { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD },
  });
  return (JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { snapshot_id: string }).snapshot_id;
}

/** Stays clear of Incus: no temporary copies, no temporary snapshots left. */
async function expectNoLeftovers(instance: string): Promise<void> {
  expect((await instanceNames(P)).filter((n) => n.startsWith('ibtmp-'))).toEqual([]);
  expect((await snapshotNames(P, instance)).filter((n) => n.startsWith('ibtmp-'))).toEqual([]);
}

/**
 * restic behind a wrapper that writes down each run's start time (ms), command line and pid
 * (`exec` keeps it); `flags` go before restic's own arguments.
 */
function recordedRestic(name: string, flags = '') {
  const calls = join(work, `${name}-calls.log`);
  const pids = join(work, `${name}-pids.log`);
  const binary = join(work, name);
  writeFileSync(binary, `#!/bin/sh\necho $$ >>'${pids}'\nprintf '%s %s\\n' "$(date +%s%3N)" "$*" >>'${calls}'\nexec restic ${flags}"$@"\n`);
  chmodSync(binary, 0o755);
  const lines = () => (existsSync(calls) ? readFileSync(calls, 'utf8').split('\n').filter(Boolean) : []);
  return {
    binary,
    reset: () => {
      writeFileSync(calls, '');
      writeFileSync(pids, '');
    },
    text: () => lines().join('\n'),
    /** The runs whose command line matches: when each started (ms) and its arguments. */
    runs: (match: RegExp) =>
      lines()
        .map((l) => ({ at: Number(l.slice(0, l.indexOf(' '))), args: l.slice(l.indexOf(' ') + 1) }))
        .filter((r) => match.test(r.args)),
    pids: () => (existsSync(pids) ? readFileSync(pids, 'utf8').split('\n').filter(Boolean).map(Number) : []),
  };
}

/**
 * Ctrl-C once `ready()` holds: the CLI exits 130 and none of the restic runs it started
 * outlives it (a moment is allowed for the stopped ones to be reaped).
 */
async function interruptWhen(run: ReturnType<typeof cliSpawn>, ready: () => boolean, rec: ReturnType<typeof recordedRestic>): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!ready() && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
  expect(ready(), rec.text()).toBe(true);
  run.kill('SIGINT');
  const done = await run;
  expect(done.exitCode, String(done.stderr)).toBe(130);
  const started = rec.pids();
  const gone = Date.now() + 5_000;
  while (started.some((pid) => pidAlive(pid)) && Date.now() < gone) await new Promise((res) => setTimeout(res, 50));
  expect(started.filter((pid) => pidAlive(pid))).toEqual([]);
}

beforeAll(async () => {
  project = await testProject('restic');
  P = project.name;
  work = mkdtempSync(join(tmpdir(), 'ib-restic-'));
  await launch(P, 'c1');
  sha = await sh(P, 'c1', 'dd if=/dev/urandom of=/data/f bs=1M count=5 2>/dev/null; sha256sum /data/f | cut -d" " -f1');
  expect(sha).toMatch(/^[0-9a-f]{64}$/);
});

afterAll(async () => {
  await stopRestServers();
  await project?.dispose();
  rmSync(work, { recursive: true, force: true });
});

describe('restic target, local repository', () => {
  let repo: string;
  let uri: string;
  beforeAll(() => {
    repo = join(work, 'local-repo');
    uri = `restic:${repo}`;
  });

  it('initialises the repository, backs up a running instance and restores it', async () => {
    const b = await cli(['backup', 'instances', 'c1', '--project', P, '--target', uri], env);
    expect(b.exitCode, b.stderr).toBe(0);
    expect(b.stderr).toContain(`initialised restic repository ${repo}`);
    // The backup's restic started before the repository existed and was replaced before it got
    // any data: one data snapshot (checked below) and no lock left by either restic.
    expect(readdirSync(join(repo, 'locks'))).toEqual([]);

    const rows = await listJson(uri);
    expect(rows).toHaveLength(1);
    const row = rows[0]!;
    expect(Object.keys(row)).toEqual(
      expect.arrayContaining(['type', 'project', 'name', 'timestamp', 'size', 'archiveSize', 'sha256', 'consistency', 'instant', 'location']),
    );
    expect(row.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(row).toMatchObject({ type: 'instance', project: P, name: 'c1', consistency: 'snapshot' });
    expect(row.timestamp).toMatch(/^\d{8}T\d{6}Z$/);
    expect(row.size).toBe(row.archiveSize);
    expect(row.size).toBeGreaterThan(5 << 20);

    // One data snapshot (flat name, per-resource tags only) and one manifest snapshot naming it.
    const snaps = await snapshots(repo);
    const data = snaps.filter((s) => s.tags?.includes('ib-archive'));
    const manifests = snaps.filter((s) => s.tags?.includes('ib-manifest'));
    expect(data).toHaveLength(1);
    expect(manifests).toHaveLength(1);
    expect(row.location).toBe(data[0]!.id);
    expect(data[0]!.paths).toEqual([`/incus_${P}_instance_c1.tar`]);
    expect(data[0]!.tags).toEqual(['ib-archive', 'ib-type=instance', `ib-project=${P}`, 'ib-name=c1']);
    expect(manifests[0]!.tags).toContain(`ib-data=${data[0]!.id}`);
    expect(data[0]!.summary!.total_bytes_processed).toBe(row.size);
    const r = await cli(['restore', 'instance', 'c1', '--target-name', 'c1-back', '--project', P, '--target', uri, '-y'], env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await state(P, 'c1-back')).toBe('Running');
    expect(await sh(P, 'c1-back', 'sha256sum /data/f | cut -d" " -f1')).toBe(sha);
    await incus('delete', '-f', 'c1-back', '--project', P);
    await expectNoLeftovers('c1');
  });

  it('lists the index fields a restore plan reads, and reads the manifest file for summaries without them', async () => {
    const b = backend(repo);
    try {
      const [entry] = await b.list({ type: 'instance', project: P, name: 'c1' });
      const summary = entry!.manifest.index as { config: { container: { profiles: string[]; devices: Record<string, unknown> } } };
      expect(summary.config.container.profiles).toEqual(['default']);
      // A summary written before it carried these fields: the plan reads the manifest file instead.
      delete entry!.manifest.index;
      await b.loadIndexes([entry!]);
      const full = entry!.manifest.index as unknown as { name?: string; config: { container: { profiles: string[]; config: Record<string, string> } } };
      expect(full.name).toBeDefined(); // the summary has no name: this is the manifest file's index
      expect(full.config.container.profiles).toEqual(['default']);
      expect(Object.keys(full.config.container.config).length).toBeGreaterThan(1);
    } finally {
      await b.close();
    }
  });

  it('stores almost nothing for a second unchanged backup, as a new version', async () => {
    const b = await cli(['backup', 'instances', 'c1', '--project', P, '--target', uri], env);
    expect(b.exitCode, b.stderr).toBe(0);
    const data = (await snapshots(repo)).filter((s) => s.tags?.includes('ib-archive'));
    expect(data).toHaveLength(2);
    const [first, second] = data.map((s) => s.summary!);
    expect(first!.data_added).toBeGreaterThan(5 << 20);
    // Same files again: restic only stores the few ~1 MiB chunks around changed tar headers.
    expect(second!.total_bytes_processed).toBeGreaterThan(5 << 20);
    expect(second!.data_added).toBeLessThan(2 << 20);
    expect(second!.data_added * 4).toBeLessThan(second!.total_bytes_processed);
    const be = backend(repo);
    try {
      const entries = await be.list({ project: P, name: 'c1' });
      expect(entries.map((e) => e.location)).toEqual(data.map((s) => s.id));
      expect(entries[0]!.manifest.timestamp < entries[1]!.manifest.timestamp).toBe(true);
      expect(entries.map((e) => e.dataAdded)).toEqual(data.map((s) => s.summary!.data_added));
    } finally {
      await be.close();
    }
  });

  it('lists two backups saved under one version (two runs in one second) under distinct versions, each verified and restorable', async () => {
    // In a copy of the repository, the newest backup saved a second time under the same version,
    // as a second run in the same second would: its archive as a new data snapshot, and its
    // manifest file with the same tags, linked to that one.
    const dup = join(work, 'dup-repo');
    cpSync(repo, dup, { recursive: true });
    const R = { RESTIC_REPOSITORY: dup, RESTIC_PASSWORD: PASSWORD };
    const saved = (await snapshots(dup)).filter((s) => s.tags?.includes('ib-manifest')).at(-1)!;
    const tag = (p: string) => saved.tags!.find((t) => t.startsWith(p))!.slice(p.length);
    const [version, dataId] = [tag('ib-version='), tag('ib-data=')];
    const [archiveName, manifestName] = [`incus_${P}_instance_c1.tar`, `incus_${P}_instance_c1_manifest.json`];
    const restic = (args: string[], input?: Uint8Array | string) => execa('restic', args, { env: R, encoding: 'buffer', ...(input !== undefined ? { input } : {}) });
    const archive = (await restic(['dump', dataId, `/${archiveName}`])).stdout;
    const archiveTags = ['ib-archive', 'ib-type=instance', `ib-project=${P}`, 'ib-name=c1'];
    const again = await restic(['backup', '--stdin', '--stdin-filename', archiveName, '--host', 'incus-backup', ...archiveTags.flatMap((t) => ['--tag', t]), '--json', '--quiet'], archive);
    const data2 = (JSON.parse(Buffer.from(again.stdout).toString().trim().split('\n').at(-1)!) as { snapshot_id: string }).snapshot_id;
    const manifestFile = (await restic(['dump', saved.id, `/${manifestName}`])).stdout;
    const tags = saved.tags!.map((t) => (t.startsWith('ib-data=') ? `ib-data=${data2}` : t));
    await restic(['backup', '--stdin', '--stdin-filename', manifestName, '--host', 'incus-backup', ...tags.flatMap((t) => ['--tag', t]), '--quiet'], manifestFile);

    const rows = await listJson(`restic:${dup}`, 'instances', 'c1');
    expect(rows.filter((r) => r.timestamp.startsWith(version)).map((r) => [r.timestamp, r.location])).toEqual([
      [version, dataId],
      [`${version}-1`, data2],
    ]);
    // verify --deep compares each manifest file with its listing: the renamed one's file says
    // the version it was saved under.
    const v = await cli(['verify', 'instances', 'c1', '--deep', '--project', P, '--target', `restic:${dup}`], env);
    expect(v.exitCode, v.stderr).toBe(0);
    const r = await cli(['restore', 'instance', 'c1', '--version', `${version}-1`, '--target-name', 'c1-dup', '-y', '--no-start', '--project', P, '--target', `restic:${dup}`], env);
    try {
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stderr).toContain(`done (${version}-1 → c1-dup)`);
    } finally {
      await incus('delete', '-f', 'c1-dup', '--project', P).catch(() => undefined);
      rmSync(dup, { recursive: true, force: true });
    }
  });

  it('reads the newest backup ahead when restoring it with -y, and reads plainly when a newer archive has no manifest', async () => {
    // restic itself, with every command line written down (the password is in the environment).
    const rec = recordedRestic('restic-logged');
    const file = `/incus_${P}_instance_c1.tar`;
    const restore = async (as: string) => {
      rec.reset();
      const r = await cli(['restore', 'instance', 'c1', '--target-name', as, '--project', P, '--target', uri, '-y'], { ...env, RESTIC_BINARY: rec.binary });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(await sh(P, as, 'sha256sum /data/f | cut -d" " -f1')).toBe(sha);
      await incus('delete', '-f', as, '--project', P);
      // The read-ahead was either used or left alone: never used for the wrong archive and retried.
      expect(r.stderr).not.toMatch(/read-ahead/);
      return rec.runs(/ dump /).map((x) => x.args);
    };
    const newest = (await listJson(uri)).filter((r) => r.name === 'c1').at(-1)!;

    // The archive was read ahead (`latest`); nothing by snapshot id, and no manifest file (the
    // listing's summary has what a restore reads).
    const ahead = await restore('c1-ahead');
    expect(ahead).toEqual([`--retry-lock 2m --quiet dump --host incus-backup --tag ib-archive,ib-type=instance,ib-project=${P},ib-name=c1 --path ${file} latest ${file}`]);

    // A newer data snapshot without a manifest (a run killed between the two): `latest` picks
    // it, the listing does not; the newest complete backup is read by its id instead.
    const orphanId = await orphanArchive(repo, 1);
    try {
      const plain = await restore('c1-plain');
      expect(plain.some((l) => l.includes(`dump ${newest.location} ${file}`))).toBe(true);
    } finally {
      await execa('restic', ['forget', orphanId], { env: { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD } });
    }
  });

  it('reads a backup again, plainly, when what was read ahead is a newer archive that landed after the listing', async () => {
    const be = backend(repo);
    const client = new IncusClient(resolveSocketPath());
    const warnings: string[] = [];
    const ui = createUi({ stream: new PassThrough(), quiet: true, color: false });
    const ctx = { api: new IncusApi(client), backend: be, ui: { ...ui, warn: (m: string) => warnings.push(m) }, signal: new AbortController().signal };
    let orphanId: string | undefined;
    try {
      // The race, in order: the listing, then a new archive lands, then restic resolves `latest`.
      const entries = await be.list({ type: 'instance', project: P, name: 'c1' });
      orphanId = await orphanArchive(repo, 2);
      be.readAhead({ type: 'instance', project: P, name: 'c1' });
      const [item] = (await planRestore(ctx, [entries.at(-1)!], { targetName: 'c1-race', replace: false, skipExisting: false, noStart: true })).plan;
      await restoreItem(ctx, item!);
      expect(be.wasReadAhead(item!.entry)).toBe(true);
      expect(warnings.join('\n')).toMatch(/read-ahead .* met a newer backup/);
      await incus('start', 'c1-race', '--project', P);
      expect(await sh(P, 'c1-race', 'sha256sum /data/f | cut -d" " -f1')).toBe(sha);
      await incus('delete', '-f', 'c1-race', '--project', P);
      await expectNoLeftovers('c1');
    } finally {
      if (orphanId) await execa('restic', ['forget', orphanId], { env: { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD } });
      await be.close();
      await client.close();
    }
  });

  it('opens the next archive while the previous one streams when restoring several, and stops it on Ctrl-C', async () => {
    const rec = recordedRestic('restic-prefetch');
    const dumps = () => rec.runs(/ dump /);
    await launch(P, 'pf1');
    await launch(P, 'pf2');
    const sums = [
      await sh(P, 'pf1', 'dd if=/dev/urandom of=/data/f bs=1M count=16 2>/dev/null; sha256sum /data/f | cut -d" " -f1'),
      await sh(P, 'pf2', 'dd if=/dev/urandom of=/data/f bs=1M count=2 2>/dev/null; sha256sum /data/f | cut -d" " -f1'),
    ];
    const b = await cli(['backup', 'instances', 'pf1', 'pf2', '--project', P, '--target', uri], env);
    expect(b.exitCode, b.stderr).toBe(0);
    const ids = parseJson<ListRow[]>((await cli(['list', 'instances', '--project', P, '--target', uri, '--output', 'json'], env)).stdout)
      .filter((row) => row.name === 'pf1' || row.name === 'pf2')
      .map((row) => row.location);
    const which = (x: { args: string }) => ids.findIndex((id) => x.args.includes(` dump ${id} `));
    try {
      for (const n of ['pf1', 'pf2']) await incus('delete', '-f', n, '--project', P);
      rec.reset();
      const log = join(work, 'prefetch.jsonl');
      const r = await cli(['restore', 'instances', 'pf1', 'pf2', '--project', P, '--target', uri, '-y', '--log-file', log], { ...env, RESTIC_BINARY: rec.binary });
      expect(r.exitCode, r.stderr).toBe(0);
      expect([await sh(P, 'pf1', 'sha256sum /data/f | cut -d" " -f1'), await sh(P, 'pf2', 'sha256sum /data/f | cut -d" " -f1')]).toEqual(sums);
      // One listing for the whole command, not one per name.
      expect(rec.runs(/ snapshots /)).toHaveLength(1);
      // One dump per archive, by its id; pf2's started before pf1 was done (the two start
      // together, so their key derivations overlap).
      const d = dumps().sort((x, y) => which(x) - which(y));
      expect(d.map(which)).toEqual([0, 1]);
      const events = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { time: string; message: string; resource?: string });
      const pf1Done = events.find((e) => e.message.startsWith('done') && e.resource?.endsWith('/pf1'));
      expect(pf1Done).toBeDefined();
      expect(d[1]!.at).toBeLessThan(Date.parse(pf1Done!.time));
      await expectNoLeftovers('pf1');

      // Ctrl-C while pf1 streams and pf2's archive is being opened: both restic runs stop, and
      // nothing half-restored is left.
      for (const n of ['pf1', 'pf2']) await incus('delete', '-f', n, '--project', P);
      rec.reset();
      const run = cliSpawn(['restore', 'instances', 'pf1', 'pf2', '--project', P, '--target', uri, '-y'], { ...env, RESTIC_BINARY: rec.binary });
      await interruptWhen(run, () => dumps().length === 2, rec);
      // The version check, the listing and the two dumps.
      expect(rec.pids(), rec.text()).toHaveLength(4);
      expect((await instanceNames(P)).filter((n) => n === 'pf1' || n === 'pf2' || n.startsWith('ibtmp-'))).toEqual([]);
    } finally {
      for (const n of ['pf1', 'pf2']) await incus('delete', '-f', n, '--project', P).catch(() => undefined);
    }
  });

  it('streams into restic as soon as restic has opened the repository, before the listing is back', async () => {
    // restic itself, except that `restic snapshots` (the listing) waits until the test lets it go.
    const release = join(work, 'release-listing');
    const held = join(work, 'restic-held-listing');
    writeFileSync(held, `#!/bin/sh\ncase " $* " in *" snapshots "*) n=0; while [ ! -e '${release}' ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done;; esac\nexec restic "$@"\n`);
    chmodSync(held, 0o755);
    rmSync(release, { force: true });
    const before = (await listJson(uri)).filter((r) => r.name === 'c1').length;
    const run = cliSpawn(['backup', 'instances', 'c1', '--no-snapshot', '--log-level', 'debug', '--project', P, '--target', uri], { ...env, RESTIC_BINARY: held });
    let stderr = '';
    // The server-side backup is deleted once its download has ended: with the listing still held.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no download finished while the listing was held:\n${stderr}`)), 40_000);
      run.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (/incus DELETE \/1\.0\/instances\/c1\/backups\/ibtmp-/.test(stderr)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    // The version is chosen from the listing: nothing is committed before it is back.
    expect((await listJson(uri)).filter((r) => r.name === 'c1')).toHaveLength(before);
    writeFileSync(release, '');
    const r = await run;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect((await listJson(uri)).filter((r) => r.name === 'c1')).toHaveLength(before + 1);
    await expectNoLeftovers('c1');
  });

  it('opens the next resource\'s restic backup while the one before streams, and stops it when not needed', async () => {
    // restic uploading at 8 MiB/s, so that a 40 MiB stream lasts seconds (restic stops reading
    // once about 12 MiB of 4 MiB packs wait for upload).
    const rec = recordedRestic('restic-prewarm', '--limit-upload 8192 ');
    const dataRuns = () => rec.runs(/--stdin-from-command/);
    const slowEnv = { ...env, RESTIC_BINARY: rec.binary, RESTIC_PACK_SIZE: '4' };
    await launch(P, 'pw1');
    await launch(P, 'pw2');
    await sh(P, 'pw1', 'dd if=/dev/urandom of=/data/f bs=1M count=40 2>/dev/null');
    const mine = async () => (await snapshots(repo)).filter((x) => x.paths.some((p) => /_instance_pw[12][._]/.test(p)));
    // When run alone, this test finds no repository yet; a first run's writer may be replaced.
    await execa('restic', ['init'], { env: { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD }, reject: false });
    try {
      rec.reset();
      const log = join(work, 'prewarm.jsonl');
      const r = await cli(['backup', 'instances', 'pw1', 'pw2', '--no-snapshot', '--project', P, '--target', uri, '--log-file', log, '--log-level', 'debug'], slowEnv);
      expect(r.exitCode, r.stderr).toBe(0);
      // pw2's restic started while pw1 still streamed: seconds before pw1's server-side backup
      // was deleted (that happens once its stream has ended).
      const runs = dataRuns();
      expect(runs, rec.text()).toHaveLength(2);
      expect(runs[1]!.args).toContain('_instance_pw2.');
      const events = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { time: string; message: string });
      const pw1Streamed = events.find((e) => /^incus DELETE \/1\.0\/instances\/pw1\/backups\//.test(e.message));
      expect(pw1Streamed).toBeDefined();
      expect(runs[1]!.at).toBeLessThan(Date.parse(pw1Streamed!.time) - 1000);
      // Both complete, each a data and a manifest snapshot; nothing else.
      expect((await listJson(uri)).filter((x) => x.name === 'pw1' || x.name === 'pw2').map((x) => x.name).sort()).toEqual(['pw1', 'pw2']);
      expect(await mine()).toHaveLength(4);

      // Ctrl-C while pw1 streams: pw2's prewarmed restic is stopped, and no snapshot of either
      // is kept. pw2 itself was never started (Incus staged nothing for it): the restic that
      // ran for it was the prewarmed one.
      rec.reset();
      const log2 = join(work, 'prewarm-interrupted.jsonl');
      const run = cliSpawn(['backup', 'instances', 'pw1', 'pw2', '--no-snapshot', '--project', P, '--target', uri, '--log-file', log2, '--log-level', 'debug'], slowEnv);
      await interruptWhen(run, () => dataRuns().length === 2, rec);
      const staged = readFileSync(log2, 'utf8').split('\n').filter((l) => /incus POST \/1\.0\/instances\/pw[12]\/backups/.test(l));
      expect(staged.map((l) => /pw[12]/.exec(l)![0])).toEqual(['pw1']);
      expect(await mine()).toHaveLength(4);
      await expectNoLeftovers('pw1');
      expect(await serverBackupNames(P, 'pw1')).toEqual([]);
    } finally {
      for (const n of ['pw1', 'pw2']) await incus('delete', '-f', n, '--project', P).catch(() => undefined);
    }
  });

  it('lets the process exit when it closes with a prewarmed backup never taken (--parallel can leave one)', async () => {
    // The prewarmed restic waits for data behind its shell's `cat`; a killed restic leaves that
    // `cat` behind, which held the CLI open on the pipe for ever (seen once: a `backup all
    // --parallel 2` that printed its summary and never exited).
    const script = `
      import { createResticBackend } from ${JSON.stringify(join(repoRoot, 'dist/backends/restic/index.js'))};
      const b = createResticBackend(process.env.REPO, 'restic:' + process.env.REPO, { env: process.env });
      await b.prepareWrite(() => undefined);
      b.prewarm({ type: 'instance', project: 'p', name: 'never-taken' });
      await new Promise((r) => setTimeout(r, 4000));
      await b.close();
      console.log('closed');
    `;
    const started = Date.now();
    const r = await execa('node', ['--input-type=module', '-e', script], { env: { ...process.env, ...env, REPO: repo }, timeout: 40_000, reject: false });
    expect(r.timedOut, `${r.stdout}\n${r.stderr}`).toBe(false);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('closed');
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('starts no prewarmed backup for a resource whose writer was already asked for (--parallel)', async () => {
    const rec = recordedRestic('restic-taken');
    rec.reset();
    const b = createResticBackend(repo, uri, { env: { ...process.env, ...env, RESTIC_BINARY: rec.binary } });
    try {
      await b.prepareWrite(() => undefined);
      const key = { type: 'instance', project: P, name: 'already-writing' } as const;
      const w = await b.createWriter({ key, when: new Date(), archiveBase: 'export.tar', compression: 'none' });
      // Another worker's stream reaches the point where it opens the next resource's writer.
      b.prewarm(key);
      b.prewarm({ ...key, name: 'not-yet' });
      await new Promise((r) => setTimeout(r, 3000));
      const runs = rec.runs(/--stdin-from-command/).map((x) => x.args);
      expect(runs.filter((a) => a.includes('already-writing'))).toHaveLength(1);
      expect(runs.filter((a) => a.includes('not-yet'))).toHaveLength(1);
      await w.abort();
    } finally {
      await b.close();
    }
  });

  it('round-trips a custom volume', async () => {
    await incus('storage', 'volume', 'create', 'default', 'vol1', '--project', P);
    await incus('storage', 'volume', 'attach', 'default', 'vol1', 'c1', '/mnt/v1', '--project', P);
    const vsha = await sh(P, 'c1', 'dd if=/dev/urandom of=/mnt/v1/g bs=1M count=2 2>/dev/null; sha256sum /mnt/v1/g | cut -d" " -f1');
    const b = await cli(['backup', 'volumes', 'default/vol1', '--project', P, '--target', uri], env);
    expect(b.exitCode, b.stderr).toBe(0);
    const rows = await listJson(uri, 'volumes');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ type: 'volume', project: P, pool: 'default', name: 'vol1' });
    const r = await cli(['restore', 'volume', 'default/vol1', '--target-name', 'vol2', '--project', P, '--target', uri, '-y'], env);
    expect(r.exitCode, r.stderr).toBe(0);
    await incus('storage', 'volume', 'attach', 'default', 'vol2', 'c1', '/mnt/v2', '--project', P);
    expect(await sh(P, 'c1', 'sha256sum /mnt/v2/g | cut -d" " -f1')).toBe(vsha);
    for (const v of ['vol1', 'vol2']) await incus('storage', 'volume', 'detach', 'default', v, 'c1', '--project', P);
  });

  it('fails in one line, without the password, on a wrong password, no password or no repository', async () => {
    const wrong = 'wrong-password-9f1c';
    const r = await cli(['list', '--project', P, '--target', uri], { RESTIC_PASSWORD: wrong });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^Error: wrong password for restic repository .*\nHint: .*RESTIC_PASSWORD/m);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('Error:'))).toHaveLength(1);
    expect(r.stderr).not.toMatch(/Bug:|\n\s+at /);
    expect(r.stdout + r.stderr).not.toContain(wrong);

    // A backup finds out while Incus already works on the first resource: one error for the
    // run, the right exit code, and nothing left on the host.
    const b = await cli(['backup', 'instances', 'c1', '--project', P, '--target', uri], { RESTIC_PASSWORD: wrong });
    expect(b.exitCode, b.stderr).toBe(2);
    expect(b.stderr).toMatch(/^Error: wrong password for restic repository .*\nHint: .*RESTIC_PASSWORD/m);
    expect(b.stderr.split('\n').filter((l) => l.startsWith('Error:'))).toHaveLength(1);
    expect(b.stdout + b.stderr).not.toContain(wrong);
    await expectNoLeftovers('c1');

    const none = await cli(['list', '--project', P, '--target', uri], { RESTIC_PASSWORD: '', RESTIC_PASSWORD_FILE: '', RESTIC_PASSWORD_COMMAND: '' });
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/^Error: no password set for restic repository/m);
    expect(none.stderr).toMatch(/^Hint: pass --password-file FILE, or set RESTIC_PASSWORD_FILE/m);

    const missing = await cli(['list', '--project', P, '--target', `restic:${join(work, 'nope')}`], env);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(/^Error: restic repository .*nope does not exist$/m);
    expect(missing.stderr).not.toMatch(/Bug:/);
  });

  it('passes on the requests restic retries as warnings, without the passwords in them', async () => {
    // restic itself, preceded by the line restic prints when a request to a rest-server failed
    // and will be retried (with the credentials of the server's URL in it).
    const retrying = join(work, 'restic-retrying');
    const line = `Save(<data/4ef1a2b3c4>) returned error, retrying after 552.330144ms: Post "http://backup:s3cret-url-pw@10.0.0.9:8000/r/data/4ef1": dial tcp 10.0.0.9:8000: connect: connection refused`;
    writeFileSync(retrying, `#!/bin/sh\ncase " $* " in *" backup "*) echo '${line}' >&2;; esac\nexec restic "$@"\n`, { mode: 0o755 });
    const r = await cli(['backup', 'instances', 'c1', '--no-snapshot', '--project', P, '--target', uri], { ...env, RESTIC_BINARY: retrying });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: restic: Save\(<data\/4ef1a2b3c4>\) returned error, retrying after 552\.330144ms: Post "http:\/\/backup:\*\*\*@10\.0\.0\.9:8000\/r\/data\/4ef1": dial tcp/);
    expect(r.stdout + r.stderr).not.toContain('s3cret-url-pw');
  });

  it('keeps nothing when the backup is interrupted in the middle of the stream', async () => {
    await launch(P, 'big');
    await sh(P, 'big', 'dd if=/dev/urandom of=/data/f bs=1M count=40 2>/dev/null; sync');
    // The real restic, uploading slowly, so that the interrupt surely lands mid-stream.
    const slow = join(work, 'slow-restic');
    writeFileSync(slow, '#!/bin/sh\nexec restic --limit-upload 64 "$@"\n');
    chmodSync(slow, 0o755);
    const run = cliSpawn(['backup', 'instances', 'big', '--project', P, '--target', uri], { ...env, RESTIC_BINARY: slow, RESTIC_PACK_SIZE: '4' });
    const pid = await waitForProcess(`incus_${P}_instance_big.tar`);
    // Repository and password travel in restic's environment, never in its argv.
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    expect(argv).not.toContain(PASSWORD);
    expect(argv).not.toContain(repo);
    // Wait until restic has read a few MiB of the archive, but far from all of it.
    let read = 0;
    for (let i = 0; i < 200 && read < 2 << 20; i++) {
      read = Number(/rchar: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))![1]);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(read).toBeGreaterThanOrEqual(2 << 20);
    expect(read).toBeLessThan(40 << 20);
    run.kill('SIGINT');
    const r = await run;
    expect(r.exitCode, String(r.stderr)).toBe(130);
    expect(String(r.stderr)).toMatch(/nothing was kept/);
    // No data snapshot of it at all (not even one without a manifest), and nothing listed.
    expect((await snapshots(repo)).filter((s) => s.paths.some((p) => p.includes('instance_big')))).toEqual([]);
    expect(await listJson(uri, 'instances', 'big')).toEqual([]);
    expect(pidAlive(pid)).toBe(false);
    await expectNoLeftovers('big');
    await incus('delete', '-f', 'big', '--project', P);
  });

  it('gives two backups of one second distinct versions, saves nothing on abort, and removes exactly what it is told', async () => {
    const be = backend(repo);
    try {
      await be.prepareWrite(() => undefined);
      const key = { type: 'instance' as const, project: P, name: 'bytes' };
      const when = new Date();
      const payload = Buffer.alloc(256 << 10, 7);
      const write = async () => {
        const w = await be.createWriter({ key, when, archiveBase: 'export.tar', compression: 'none' });
        await new Promise<void>((res, rej) => w.stream.end(payload, () => res()).once('error', rej));
        return { w, e: await w.commit(fakeManifest(key, w.timestamp, payload)) };
      };
      const first = await write();
      const second = await write();
      expect(second.w.timestamp).toBe(`${first.w.timestamp}-1`);
      // (a) The whole stream ended, then abort() instead of commit(), as the core does when an
      // export turns out to be cut short: restic waits at the gate, is stopped, saves nothing.
      // (b) commit() fails after restic saved the data (the byte count disagrees): abort()
      // forgets that data snapshot. Either leftover would show up as a broken backup.
      const ended = await be.createWriter({ key, when, archiveBase: 'export.tar', compression: 'none' });
      const failed = await be.createWriter({ key, when, archiveBase: 'export.tar', compression: 'none' });
      await new Promise<void>((res) => ended.stream.end(payload, () => res()));
      await new Promise<void>((res) => failed.stream.end(payload, () => res()));
      const bad = fakeManifest(key, failed.timestamp, payload);
      const err = await failed.commit({ ...bad, archive: { ...bad.archive, size: payload.length + 1 } }).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(/restic stored 262144 bytes .*expected 262145/);
      await Promise.all([ended.abort(), failed.abort()]);
      const scanned = await be.scan({ project: P, name: 'bytes' });
      expect(scanned.broken).toEqual([]);
      expect(scanned.entries.map((e) => e.manifest.timestamp)).toEqual([first.w.timestamp, `${first.w.timestamp}-1`]);

      const back = await be.openArchive(scanned.entries[1]!);
      const chunks: Buffer[] = [];
      for await (const c of back) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).equals(payload)).toBe(true);

      // Forgets both snapshots of the first backup (no orphan, no dangling manifest left).
      await be.remove([scanned.entries[0]!]);
      const after = await be.scan({ project: P, name: 'bytes' });
      expect(after.broken).toEqual([]);
      expect(after.entries.map((e) => e.location)).toEqual([second.e.location]);
    } finally {
      await be.close();
    }
  });
});

describe('restic target on rest-server', () => {
  it('backs up and restores through an append-only rest-server, which refuses removal; a writable one removes', async () => {
    // The usual deployment: clients write through an append-only server, pruning happens
    // through a writable one. Both serve the same directory here.
    const dir = mkdtempSync(join(work, 'rest-'));
    const appendOnly = await restServer(dir, '--append-only');
    const writable = await restServer(dir);
    const uri = `restic:${appendOnly}`;
    const b = await cli(['backup', 'instances', 'c1', '--project', P, '--target', uri], env);
    expect(b.exitCode, b.stderr).toBe(0);
    expect(b.stderr).toContain(`initialised restic repository ${appendOnly}`);
    const r = await cli(['restore', 'instance', 'c1', '--target-name', 'c1-ao', '--project', P, '--target', uri, '-y'], env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await sh(P, 'c1-ao', 'sha256sum /data/f | cut -d" " -f1')).toBe(sha);

    // protect re-tags by writing a new snapshot and deleting the old; the append-only server
    // refuses the delete (restic still exits 0), so two copies of the manifest stay: one
    // backup, protected, not damage (verify, restore by version).
    const listed = async (target: string) => parseJson<{ timestamp: string; protected: boolean }[]>((await cli(['list', 'instances', 'c1', '--project', P, '--target', target, '--output', 'json'], env)).stdout);
    const [version] = (await listed(uri)).map((e) => e.timestamp);
    const p = await cli(['protect', 'instances', 'c1', '--version', version!, '--project', P, '--target', uri], env);
    expect(p.exitCode, p.stderr).toBe(0);
    expect(await listed(uri)).toEqual([expect.objectContaining({ timestamp: version, protected: true })]);
    const v = await cli(['verify', '--project', P, '--target', uri], env);
    expect(v.exitCode, v.stderr + v.stdout).toBe(0);
    // Unprotecting there cannot work (the protected copy stays): refused, saying why.
    const u = await cli(['unprotect', 'instances', 'c1', '--version', version!, '--project', P, '--target', uri], env);
    expect(u.exitCode).toBe(1);
    expect(u.stderr).toMatch(/^Error: backup \S+ is still protected: restic could not delete its protected snapshot \(the repository refused to delete: probably an append-only rest-server\)$/m);
    expect(u.stderr).toMatch(/^Hint: unprotect it through a server that allows deleting/m);
    // Through the writable server it goes, copies and all.
    const u2 = await cli(['unprotect', 'instances', 'c1', '--version', version!, '--project', P, '--target', `restic:${writable}`], env);
    expect(u2.exitCode, u2.stderr).toBe(0);
    expect(await listed(uri)).toEqual([expect.objectContaining({ timestamp: version, protected: false })]);

    // prune: refused through the append-only server. A script reading --output json must not
    // be told "remove" for a removal that failed: no document, exit 1, the hint.
    const b2 = await cli(['backup', 'instances', 'c1', '--project', P, '--target', uri], env);
    expect(b2.exitCode, b2.stderr).toBe(0);
    const pruneArgs = ['prune', 'instances', 'c1', '--keep-last', '1', '--project', P, '-y', '--output', 'json'];
    const refused = await cli([...pruneArgs, '--target', uri], env);
    expect(refused.exitCode).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toMatch(/^Error: prune failed while removing backups: .*refused to delete .*append-only rest-server/m);
    expect(refused.stderr).toMatch(/^Hint: .*without --append-only/m);
    expect(await listed(uri)).toHaveLength(2);
    // Through the writable server it goes, and the document says what was removed.
    const pruned = await cli([...pruneArgs, '--target', `restic:${writable}`], env);
    expect(pruned.exitCode, pruned.stderr).toBe(0);
    const rows = parseJson<{ timestamp: string; action: string }[]>(pruned.stdout);
    expect(rows).toHaveLength(2);
    expect(rows.find((x) => x.timestamp === version)?.action).toBe('removed');
    expect(rows.find((x) => x.timestamp !== version)?.action).toBe('keep');
    expect((await listed(uri)).map((e) => e.timestamp)).not.toContain(version);
    expect(await listed(uri)).toHaveLength(1);
  });

  it('gets past the stale lock a killed restic left on a rest-server repository at once: removes it, checks', async () => {
    // On a remote repository the locks cannot be looked at without restic: `restic unlock` runs
    // first (it removes only stale locks), rather than restic waiting --retry-lock (2 minutes,
    // without a word) before naming the dead holder.
    const dir = mkdtempSync(join(work, 'rest-lock-'));
    const repo = await restServer(dir);
    await execa('restic', ['init'], { env: { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD } });
    const locks = () => readdirSync(join(dir, 'repo', 'locks')).filter((f) => /^[0-9a-f]{64}$/.test(f));
    const leaver = execa('restic', ['backup', '--stdin', '--stdin-filename', 'x'], { env: { RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD }, reject: false });
    const deadline = Date.now() + 20_000;
    while (locks().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    leaver.kill('SIGKILL');
    await leaver;
    expect(locks()).toHaveLength(1);
    const warnings: string[] = [];
    const be = createResticBackend(repo, `restic:${repo}`, { env: { ...process.env, ...env }, retryLock: '2m', onWarning: (m) => warnings.push(m) });
    const started = Date.now();
    try {
      expect(await be.check({})).toEqual({ problems: [] });
    } finally {
      await be.close();
    }
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(warnings.join('\n')).toMatch(/removed 1 stale restic lock\(s\) from restic:rest:http/);
    expect(locks()).toHaveLength(0);
  });

  it('gives up within seconds on a repository the server cannot open (its path is a file there: HTTP 500), as on a stopped server', async () => {
    const dir = mkdtempSync(join(work, 'rest-file-'));
    writeFileSync(join(dir, 'filerepo'), 'not a repository\n');
    const server = await restServer(dir);
    const started = Date.now();
    const r = await cli(['list', '--project', P, '--target', `restic:${server.replace(/\/repo$/, '/filerepo')}`], env);
    // restic alone retries that for about 15 minutes.
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^Error: cannot reach the restic repository rest:http:\/\/127\.0\.0\.1:\d+\/filerepo: .*\b500\b/m);
    expect(r.stderr).toMatch(/^Hint: check that the server is running and the address in --target is right$/m);
  });

  it('says when the server refuses the credentials in the URL: exit 2, the password masked', async () => {
    const dir = mkdtempSync(join(work, 'rest-auth-'));
    // rest-server's {SHA} entry: base64 of the password's SHA-1.
    writeFileSync(join(dir, '.htpasswd'), `backup:{SHA}${createHash('sha1').update('right-one').digest('base64')}\n`);
    const server = await restServer(dir, '--htpasswd-file', join(dir, '.htpasswd'));
    const url = (pw: string) => `restic:${server.replace('http://', `http://backup:${pw}@`)}`;
    const ok = await cli(['backup', 'instances', 'c1', '--project', P, '--target', url('right-one')], env);
    expect(ok.exitCode, ok.stderr).toBe(0);
    for (const args of [['list'], ['backup', 'instances', 'c1']]) {
      const r = await cli([...args, '--project', P, '--target', url('wrong-one')], env);
      expect(r.exitCode, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/^Error: the server refused the credentials for the restic repository rest:http:\/\/backup:\*\*\*@127\.0\.0\.1:\d+\/repo \(HTTP 401 Unauthorized\)$/m);
      expect(r.stderr).toMatch(/^Hint: check the user name and password in the repository URL/m);
      expect(r.stderr).not.toContain('wrong-one');
    }
    await expectNoLeftovers('c1');
    expect(await serverBackupNames(P, 'c1')).toEqual([]);
  });

  it('says when it cannot reach the server, within seconds', async () => {
    const port = await freePort();
    const started = Date.now();
    const r = await cli(['list', '--project', P, '--target', `restic:rest:http://127.0.0.1:${port}/repo`], env);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^Error: cannot reach the restic repository rest:http:\/\/127\.0\.0\.1:\d+\/repo: dial tcp .*connection refused$/m);
    expect(r.stderr).toMatch(/^Hint: check that the server is running/m);
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});

/** A manifest for bytes that did not come from Incus (backend-level tests). */
function fakeManifest(key: { type: 'instance' | 'volume'; project: string; name: string; pool?: string }, timestamp: string, payload: Buffer) {
  const sha256 = createHash('sha256').update(payload).digest('hex');
  return {
    format: 1,
    ...key,
    timestamp,
    createdAt: new Date().toISOString(),
    tool: { name: 'incus-backup', version: 'test' },
    incus: { serverVersion: 'test' },
    consistency: { mode: 'stopped' as const, instant: new Date().toISOString() },
    options: { optimized: false, withSnapshots: false, compression: 'none' as const },
    archive: { size: payload.length, sha256 },
    source: {},
  };
}

async function waitForProcess(needle: string): Promise<number> {
  for (let i = 0; i < 600; i++) {
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      let cmd = '';
      try {
        cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      if (cmd.includes(needle) && cmd.includes('backup')) return Number(d);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no process with ${needle}`);
}

