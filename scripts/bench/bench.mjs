#!/usr/bin/env node
// Benchmark of incus-backup against the plain way (curl on the Incus API, restic on the command
// line), issue #9. Run after `npm run build`:
//
//   node scripts/bench/bench.mjs [--size 1G] [--rounds 3] [--quick] [--only 1a,2,4] [--profile]
//
// It creates its own Incus project (bench-<random>) with an instance holding --size of incompressible
// data and a custom volume, runs each pair alternately (ours, plain, ours, plain, ...), prints a
// table and writes JSON to .cache/bench/<timestamp>.json and .cache/bench/latest.json. Everything it
// created (project, instances, volumes, btrfs pool, targets) is removed at the end, also on failure
// and on Ctrl-C. Targets are reported, never asserted: the exit code is non-zero only if a run failed.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { CommandError, fmtBytes, GiB, IncusCli, median, parseSize, round, Runner } from './lib.mjs';
import { summarizeProfile } from './profile.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '../..');
const BIN = join(REPO, 'bin/incus-backup');
// The node flags of bin/incus-backup's shebang: a profiled run starts node itself and must pass them.
const BIN_NODE_FLAGS = readFileSync(BIN, 'utf8').split('\n')[0].split(/\s+/).filter((a) => a.startsWith('--'));
const PROBE_URL = pathToFileURL(join(HERE, 'probe.mjs')).href;
const PLAIN = join(HERE, 'plain.sh');
const MiB = 1024 * 1024;

const USAGE = `usage: node scripts/bench/bench.mjs [options]

  --size SIZE          incompressible data in the test instance (default 1G; --quick: 256M)
  --rounds N           rounds per pair, each round runs both sides (default 3; --quick: 1)
  --quick              smoke run: small size, one round, no 4 GiB memory point
  --big-size SIZE      the second memory point (default 4G; skipped with --quick)
  --only LIST          run only these pairs, e.g. 1a,2,4 (1 dir, 2 restic, 3 consistency,
                       4 restore, 5 second restic backup, 6 memory, 7 parallel,
                       8 nightly: four instances into restic in one run, 9 the same four
                       restored from restic in one run)
  --profile            also record one CPU profile (--cpu-prof) per kind of run and summarise it
  --no-btrfs           skip the btrfs pool in pair 3
  --plain-hash CMD     hasher of the plain download: openssl (default when present) or sha256sum
  --node-options OPTS  extra node flags for the incus-backup process, given through NODE_OPTIONS
                       (to try a fix, e.g. "--max-semi-space-size=4"); recorded in the JSON
  --keep-work          leave the downloaded archives and repositories in .cache/bench/<ts>/work

Environment: INCUS_DIR / INCUS_SOCKET select the daemon; without them the repository's private
sandbox is used (scripts/sandbox.sh up). Needs: a built dist/ (npm run build), curl, restic >= 0.18,
/usr/bin/time (optional: RSS of the whole process tree and CPU times of the plain side).`;

// ---------------------------------------------------------------------------------------------
// Options

function parseArgs(argv) {
  const o = { quick: false, profile: false, btrfs: true, keepWork: false, only: undefined, nodeOptions: [] };
  const raw = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    const name = a.split('=')[0];
    if (name === '--size') raw.size = value();
    else if (name === '--rounds') raw.rounds = value();
    else if (name === '--big-size') raw.bigSize = value();
    else if (name === '--only') o.only = value().split(',').map((s) => s.trim()).filter(Boolean);
    else if (name === '--plain-hash') raw.plainHash = value();
    else if (name === '--node-options') o.nodeOptions = value().split(/\s+/).filter(Boolean);
    else if (a === '--quick') o.quick = true;
    else if (a === '--profile') o.profile = true;
    else if (a === '--no-btrfs') o.btrfs = false;
    else if (a === '--keep-work') o.keepWork = true;
    else if (a === '-h' || a === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else throw new UsageError(`unknown argument ${a}`);
  }
  try {
    o.size = parseSize(raw.size ?? (o.quick ? '256M' : '1G'));
    o.bigSize = o.quick ? undefined : parseSize(raw.bigSize ?? '4G');
  } catch (e) {
    throw new UsageError(e.message);
  }
  o.rounds = Number(raw.rounds ?? (o.quick ? 1 : 3));
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new UsageError('--rounds must be a whole number >= 1');
  o.plainHash = raw.plainHash ?? (onPath('openssl') ? 'openssl' : 'sha256sum');
  if (!['openssl', 'sha256sum'].includes(o.plainHash)) throw new UsageError('--plain-hash is openssl or sha256sum');
  o.volumeSize = Math.max(MiB, Math.round(o.size / 4 / MiB) * MiB);
  o.parallelSize = Math.max(MiB, Math.round(o.size / 4 / MiB) * MiB);
  return o;
}

class UsageError extends Error {}

function onPath(cmd) {
  return (process.env.PATH ?? '').split(':').some((d) => d && existsSync(join(d, cmd)));
}

/** --only 1,4a: a pair runs if its id or its number is listed. */
function wanted(o, id) {
  return !o.only || o.only.some((w) => w === id || w === id.replace(/[a-z]$/, ''));
}

// ---------------------------------------------------------------------------------------------
// The benchmark

class Bench {
  constructor(o) {
    this.o = o;
    this.stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    this.out = join(REPO, '.cache/bench');
    this.dir = join(this.out, this.stamp);
    this.work = join(this.dir, 'work');
    this.logs = join(this.dir, 'logs');
    this.project = `bench-${randomBytes(3).toString('hex')}`;
    this.pool = 'default';
    this.btrfsPool = undefined;
    this.pairs = [];
    this.memory = [];
    this.tempBytes = [];
    this.rebackup = [];
    this.skipped = [];
    this.errors = [];
    this.profiles = [];
    this.probeSeq = 0;
    this.stopping = false;
  }

  log(msg) {
    process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
  }

  // -- environment -----------------------------------------------------------------------------

  async prepare() {
    if (!existsSync(join(REPO, 'dist/cli.js'))) throw new UsageError('dist/ is missing: run `npm run build` first');
    for (const cmd of ['curl', 'restic', 'incus', 'bash']) if (!onPath(cmd)) throw new UsageError(`${cmd} is not on PATH (scripts/install-deps.sh installs it)`);
    this.timeBin = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
    mkdirSync(this.work, { recursive: true });
    mkdirSync(this.logs, { recursive: true });
    this.runner = new Runner({ logDir: this.logs, timeBin: this.timeBin });

    let { INCUS_DIR, INCUS_SOCKET } = process.env;
    if (!INCUS_DIR && !INCUS_SOCKET) {
      this.log('no INCUS_DIR/INCUS_SOCKET: using the private sandbox (scripts/sandbox.sh up)');
      await this.runner.run([join(REPO, 'scripts/sandbox.sh'), 'up'], { label: 'sandbox-up' });
      const env = (await this.runner.run([join(REPO, 'scripts/sandbox.sh'), 'env'], { label: 'sandbox-env' })).stdout;
      INCUS_DIR = /INCUS_DIR='([^']*)'/.exec(env)?.[1];
      INCUS_SOCKET = /INCUS_SOCKET='([^']*)'/.exec(env)?.[1];
    }
    this.socket = INCUS_SOCKET || (INCUS_DIR ? `${INCUS_DIR.replace(/\/+$/, '')}/unix.socket` : '/var/lib/incus/unix.socket');

    // Nothing of the caller's incus-backup or restic settings may leak into a measurement.
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(INCUS_BACKUP_|RESTIC_|INCUS_)/.test(k)));
    Object.assign(base, { NO_COLOR: '1', INCUS_SOCKET: this.socket, RESTIC_PASSWORD: 'incus-backup-bench', RESTIC_CACHE_DIR: join(this.work, 'restic-cache') });
    if (INCUS_DIR) base.INCUS_DIR = INCUS_DIR;
    this.env = base;
    this.emptyConfig = join(this.work, 'config.yaml');
    writeFileSync(this.emptyConfig, '# the benchmark runs incus-backup without settings\nparallel: 1\n');
    this.incus = new IncusCli(this.runner, this.env, this.project);

    const server = await this.incus.query('/1.0');
    const profile = await this.incus.query('/1.0/profiles/default');
    this.pool = profile.devices?.root?.pool ?? 'default';
    const poolInfo = await this.incus.query(`/1.0/storage-pools/${this.pool}`);
    const images = await this.incus.run(['image', 'alias', 'list', '--format', 'csv']);
    if (!/^ib-busybox,/m.test(images)) throw new UsageError('image alias ib-busybox is missing: run scripts/sandbox.sh up (it builds it)');
    const restic = (await this.runner.run(['restic', 'version'], { env: this.env })).stdout.trim();
    let commit;
    try {
      commit = (await this.runner.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'], { label: 'git-rev' })).stdout.trim();
      const dirty = (await this.runner.run(['git', '--no-optional-locks', '-C', REPO, 'status', '--porcelain', '--untracked-files=no'], { label: 'git-status' })).stdout.trim();
      if (dirty) commit += '+dirty';
    } catch {
      commit = undefined;
    }
    this.envInfo = {
      node: process.version,
      incus: server.environment?.server_version,
      kernel: os.release(),
      cpu: os.cpus()[0]?.model,
      cpus: os.cpus().length,
      memGiB: round(os.totalmem() / GiB, 1),
      restic: /restic ([\d.]+)/.exec(restic)?.[1] ?? restic,
      rootPool: { name: this.pool, driver: poolInfo.driver },
      plainHash: this.o.plainHash,
      timeBin: this.timeBin ?? null,
      commit,
      loadAtStart: os.loadavg().map((x) => round(x, 2)),
    };
    this.log(`project ${this.project}, ${fmtBytes(this.o.size)} x ${this.o.rounds} rounds, pool ${this.pool} (${poolInfo.driver}), logs in ${this.logs}`);
    if (os.loadavg()[0] > os.cpus().length * 0.5) this.log(`warning: load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs; figures will be noisy`);
  }

  // -- Incus objects ---------------------------------------------------------------------------

  async setupProject() {
    await this.incus.run(['project', 'create', this.project, '-c', 'features.images=false', '-c', 'features.profiles=false']);
    this.projectCreated = true;
  }

  async launch(name, dataBytes, { pool } = {}) {
    this.log(`creating ${name} with ${fmtBytes(dataBytes)} of random data${pool ? ` on pool ${pool}` : ''}`);
    await this.incus.p(['launch', 'ib-busybox', name, ...(pool ? ['--storage', pool] : [])]);
    await this.fill(name, '/data/blob', dataBytes);
  }

  async fill(instance, path, bytes) {
    await this.incus.exec(instance, `dd if=/dev/urandom of=${path} bs=1M count=${Math.round(bytes / MiB)} 2>/dev/null && sync`);
  }

  async deleteInstance(name) {
    await this.incus.p(['delete', '-f', name], { allowFail: true });
  }

  async teardown() {
    this.teardownPromise ??= (async () => {
      this.log('cleaning up');
      if (this.projectCreated) {
        try {
          const q = (p) => this.incus.runner.run(['incus', 'query', p], { env: this.env, allowFail: true, label: 'incus-query' });
          const inst = await q(`/1.0/instances?project=${this.project}`);
          for (const url of inst.code === 0 ? JSON.parse(inst.stdout) : []) await this.deleteInstance(lastSegment(url));
          for (const pool of [this.pool, this.btrfsPool].filter(Boolean)) {
            const vols = await q(`/1.0/storage-pools/${pool}/volumes/custom?project=${this.project}`);
            for (const url of vols.code === 0 ? JSON.parse(vols.stdout) : [])
              await this.incus.p(['storage', 'volume', 'delete', pool, lastSegment(url)], { allowFail: true });
          }
          if (this.btrfsPool) await this.incus.run(['storage', 'delete', this.btrfsPool], { allowFail: true });
          await this.incus.run(['project', 'delete', this.project], { allowFail: true, label: 'project-delete' });
          const left = await q(`/1.0/projects/${this.project}`);
          if (left.code === 0) this.errors.push(`project ${this.project} could not be deleted; remove it by hand`);
        } catch (e) {
          this.errors.push(`cleanup: ${e.message}`);
        }
      }
      if (!this.o.keepWork) rmSync(this.work, { recursive: true, force: true });
    })();
    return this.teardownPromise;
  }

  // -- running the two sides --------------------------------------------------------------------

  /** Lets writeback of the previous run finish, so it is not charged to the next one. */
  async settle() {
    await this.runner.run(['sync'], { label: 'sync' });
  }

  /** One timed incus-backup run, with the probe; returns a sample. */
  async ours(label, args, { cpuProfDir, extraEnv = {}, extraArgs = [] } = {}) {
    if (this.stopping) throw new Error('interrupted');
    await this.settle();
    const probeFile = join(this.logs, `probe-${String(++this.probeSeq).padStart(3, '0')}.json`);
    // bin/incus-backup runs as users run it (its shebang and any flags in it apply); the probe and
    // --node-options come in through NODE_OPTIONS, which does not allow --cpu-prof: profiled runs
    // start node explicitly, with the shebang's flags.
    const argv = [
      ...(cpuProfDir ? [process.execPath, ...BIN_NODE_FLAGS, '--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []),
      BIN,
      ...args,
      '--project',
      this.project,
      '--config',
      this.emptyConfig,
      '--output',
      'json',
      ...extraArgs,
    ];
    const loadavg = round(os.loadavg()[0], 2);
    const spawnedAt = Date.now();
    const env = { ...this.env, ...extraEnv, NODE_OPTIONS: [`--import=${PROBE_URL}`, ...this.o.nodeOptions].join(' '), IB_BENCH_PROBE: probeFile };
    const r = await this.runner.run(argv, { env, timed: true, label: `ours-${label}` });
    let rows;
    try {
      rows = JSON.parse(r.stdout || '[]');
    } catch {
      rows = [];
    }
    const probe = existsSync(probeFile) ? JSON.parse(readFileSync(probeFile, 'utf8')) : undefined;
    return {
      seconds: round(r.seconds),
      rows: Array.isArray(rows) ? rows : [rows],
      cpuS: r.time ? round(r.time.userS + r.time.systemS, 2) : probe ? round((probe.cpuUserUs + probe.cpuSystemUs) / 1e6, 2) : undefined,
      treeMaxRssKB: r.time?.maxRssKB,
      maxRssKB: probe?.maxRssKB,
      nodeCpuS: probe ? round((probe.cpuUserUs + probe.cpuSystemUs) / 1e6, 2) : undefined,
      peak: probe?.peak,
      writeBytes: probe?.io?.self?.write_bytes,
      treeWriteBytes: probe?.io?.tree?.write_bytes,
      treeCancelledBytes: probe?.io?.tree?.cancelled_write_bytes,
      loadavg,
      spawnedAt,
      log: r.logFile,
    };
  }

  /** One timed plain.sh run. */
  async plain(label, action, vars) {
    if (this.stopping) throw new Error('interrupted');
    await this.settle();
    const loadavg = round(os.loadavg()[0], 2);
    const hash = this.o.plainHash === 'openssl' ? 'openssl dgst -sha256 -r' : 'sha256sum';
    const r = await this.runner.run(['bash', PLAIN, action], {
      env: { ...this.env, SOCK: this.socket, PROJECT: this.project, HASH_CMD: hash, ...vars },
      timed: true,
      label: `plain-${label}`,
    });
    return {
      seconds: round(r.seconds),
      cpuS: r.time ? round(r.time.userS + r.time.systemS, 2) : undefined,
      treeMaxRssKB: r.time?.maxRssKB,
      loadavg,
      log: r.logFile,
    };
  }

  /** Runs a then b, `rounds` times (a, b, a, b, ...). */
  async alternate(a, b, rounds = this.o.rounds) {
    const A = [];
    const B = [];
    for (let r = 1; r <= rounds; r++) {
      A.push(await a(r));
      B.push(await b(r));
    }
    return [A, B];
  }

  record(id, title, { a, b, bytes, aName = 'ours', bName = 'plain', target, ratioName = 'ours/plain', note }) {
    const side = (runs, name) => {
      const med = median(runs.map((s) => s.seconds));
      return {
        name,
        runs,
        medianS: round(med),
        minS: round(Math.min(...runs.map((s) => s.seconds))),
        maxS: round(Math.max(...runs.map((s) => s.seconds))),
        mibPerS: med ? round(bytes / MiB / med, 1) : undefined,
        medianCpuS: round(median(runs.map((s) => s.cpuS)), 2),
      };
    };
    const A = side(a, aName);
    const B = side(b, bName);
    const ratio = A.medianS && B.medianS ? round(A.medianS / B.medianS) : undefined;
    // Other jobs on the machine only ever add time: the ratio of the fastest runs is the least
    // disturbed estimate, shown beside the ratio of medians.
    const ratioOfMin = A.minS && B.minS ? round(A.minS / B.minS) : undefined;
    const loadavg = round(median([...a, ...b].map((s) => s.loadavg)), 2);
    const entry = { id, title, bytes, a: A, b: B, ratioName, ratio, ratioOfMin, loadavg, ...(target !== undefined ? { target, met: ratio !== undefined && ratio <= target } : {}), ...(note ? { note } : {}) };
    this.pairs.push(entry);
    this.log(
      `${id} ${title} | ${aName} ${A.medianS} s, ${bName} ${B.medianS} s, ${ratioName} ${ratio}` +
        (target !== undefined ? ` (target <= ${target}: ${entry.met ? 'met' : 'missed'})` : ''),
    );
    return entry;
  }

  async guard(id, fn) {
    if (this.stopping) return;
    try {
      await fn();
    } catch (e) {
      if (this.stopping) throw e;
      this.errors.push(`${id}: ${e.message}`);
      this.log(`${id} failed: ${e.message}`);
    }
  }

  // -- targets ---------------------------------------------------------------------------------

  dirTarget(name) {
    return join(this.work, name);
  }

  /** Empties a dir target's backups but keeps its metadata, like a target that is in use. */
  clearDirTarget(t) {
    for (const d of ['instances', 'volumes']) rmSync(join(t, d), { recursive: true, force: true });
  }

  /** The one backup directory in dir target `t` for `kind/.../name`. */
  backupDir(t, ...parts) {
    const base = join(t, ...parts);
    const versions = readdirSync(base).filter((d) => /^\d{8}T\d{6}Z/.test(d)).sort();
    return join(base, versions[versions.length - 1]);
  }

  async freshRepo(name) {
    const repo = join(this.work, name);
    rmSync(repo, { recursive: true, force: true });
    await this.runner.run(['restic', 'init', '--quiet'], { env: { ...this.env, RESTIC_REPOSITORY: repo }, label: 'restic-init' });
    return repo;
  }

  /**
   * Repository `name` of the work folder as an earlier pair left it (2a: restic-ours-instance,
   * 8: restic-ours-nightly), or, when that pair did not run, a fresh one with our backup of
   * `instances` in it.
   */
  async reusedRepo(name, label, instances) {
    const repo = join(this.work, name);
    if (!existsSync(repo)) {
      await this.freshRepo(name);
      await this.ours(label, ['backup', 'instances', ...instances, '--no-snapshot', '--target', `restic:${repo}`]);
    }
    return repo;
  }

  /** The newest data snapshot of instance `name` in a `restic snapshots` listing. */
  newestArchive(snaps, name) {
    return snaps.filter((x) => x.tags?.includes('ib-archive') && x.tags?.includes(`ib-name=${name}`)).at(-1);
  }

  async resticSnapshots(repo) {
    const r = await this.runner.run(['restic', 'snapshots', '--json'], { env: { ...this.env, RESTIC_REPOSITORY: repo }, label: 'restic-snapshots' });
    return JSON.parse(r.stdout || '[]').sort((x, y) => x.time.localeCompare(y.time));
  }

  async du(path) {
    const r = await this.runner.run(['du', '-sb', path], { label: 'du' });
    return Number(r.stdout.split(/\s/)[0]);
  }

  // -- the pairs -------------------------------------------------------------------------------

  /** 1a/1b: directory backup with --no-snapshot vs curl | tee | sha256. */
  async pairDir(id, kind) {
    const inst = kind === 'instance';
    const t = this.dirTarget(`dir-${kind}`);
    const res = inst ? '/1.0/instances/c1' : `/1.0/storage-pools/${this.pool}/volumes/custom/v1`;
    const out = join(this.work, 'plain.tar');
    let bytes;
    const [a, b] = await this.alternate(
      async (r) => {
        this.clearDirTarget(t);
        const s = await this.ours(`${id}-r${r}`, ['backup', inst ? 'instances' : 'volumes', inst ? 'c1' : `${this.pool}/v1`, '--no-snapshot', '--target', `dir:${t}`]);
        bytes = s.rows[0]?.size;
        s.storedBytes = await this.du(inst ? this.backupDir(t, 'instances', this.project, 'c1') : this.backupDir(t, 'volumes', this.project, this.pool, 'v1'));
        return s;
      },
      async (r) => {
        const s = await this.plain(`${id}-r${r}`, 'backup-file', { RES: res, BNAME: `bench-plain-${r}`, OUT: out });
        s.bytes = statSync(out).size;
        rmSync(out, { force: true });
        rmSync(`${out}.sha256`, { force: true });
        return s;
      },
    );
    const e = this.record(id, `backup ${kind} -> dir:`, { a, b, bytes: bytes ?? b[0].bytes, target: 1.05 });
    if (inst) {
      this.dirBackupReady = true;
      for (const s of a) this.tempBytes.push({ id, what: `backup ${kind} -> dir`, archive: e.bytes, cliWrote: s.writeBytes, stored: s.storedBytes, treeWrote: s.treeWriteBytes, treeCancelled: s.treeCancelledBytes });
      this.memory.push({ size: this.o.size, target: 'dir', runs: a });
      // The floor: the same process doing almost nothing (startup, every module, one listing).
      this.floor = await this.ours('floor', ['list', 'instances', '--target', `dir:${t}`]);
    }
  }

  /** 2a/2b (and 5 for the instance): restic backup with --no-snapshot vs curl | restic backup --stdin. */
  async pairRestic(id, kind) {
    const inst = kind === 'instance';
    const res = inst ? '/1.0/instances/c1' : `/1.0/storage-pools/${this.pool}/volumes/custom/v1`;
    const second = inst && wanted(this.o, '5');
    const args = (repo) => ['backup', inst ? 'instances' : 'volumes', inst ? 'c1' : `${this.pool}/v1`, '--no-snapshot', '--target', `restic:${repo}`];
    const summary = join(this.work, 'plain-summary.json');
    const plainRun = async (label, repo, r) => {
      const s = await this.plain(label, 'backup-restic', { RES: res, BNAME: `bench-plain-${r}`, FILENAME: `${kind}.tar`, SUMMARY: summary, RESTIC_REPOSITORY: repo });
      const line = readFileSync(summary, 'utf8').split('\n').find((l) => l.includes('"summary"'));
      const sum = line ? JSON.parse(line) : {};
      s.bytes = sum.total_bytes_processed;
      s.dataAdded = sum.data_added;
      return s;
    };
    const oursData = async (repo) => {
      const snaps = (await this.resticSnapshots(repo)).filter((x) => x.tags?.includes('ib-archive'));
      return snaps[snaps.length - 1]?.summary?.data_added;
    };
    const A = [];
    const B = [];
    const A2 = [];
    const B2 = [];
    let bytes;
    for (let r = 1; r <= this.o.rounds; r++) {
      // One fresh repository per round and side: the data is the same every round, so a shared
      // repository would deduplicate every run after the first.
      const ro = await this.freshRepo(`restic-ours-${kind}`);
      const rp = await this.freshRepo(`restic-plain-${kind}`);
      const [duO, duP] = [await this.du(ro), await this.du(rp)];
      const a = await this.ours(`${id}-r${r}`, args(ro));
      bytes = a.rows[0]?.size;
      a.dataAdded = await oursData(ro);
      a.repoGrowth = (await this.du(ro)) - duO;
      A.push(a);
      const b = await plainRun(`${id}-r${r}`, rp, r);
      b.repoGrowth = (await this.du(rp)) - duP;
      B.push(b);
      if (!second) continue;
      const [du1O, du1P] = [await this.du(ro), await this.du(rp)];
      const a2 = await this.ours(`5-r${r}`, args(ro));
      a2.dataAdded = await oursData(ro);
      a2.repoGrowth = (await this.du(ro)) - du1O;
      A2.push(a2);
      const b2 = await plainRun(`5-r${r}`, rp, r);
      b2.repoGrowth = (await this.du(rp)) - du1P;
      B2.push(b2);
    }
    const e = this.record(id, `backup ${kind} -> restic:`, {
      a: A,
      b: B,
      bytes: bytes ?? B[0].bytes,
      target: 1.05,
      note: 'fresh local repository per round and side (restic init not timed)',
    });
    if (!inst) return;
    // The last round's repository stays: pair 4a restores from it.
    for (const s of A) this.tempBytes.push({ id, what: `backup ${kind} -> restic`, archive: e.bytes, cliWrote: s.writeBytes, stored: 0, treeWrote: s.treeWriteBytes, treeCancelled: s.treeCancelledBytes });
    this.memory.push({ size: this.o.size, target: 'restic', runs: A });
    if (second) {
      const e5 = this.record('5', 'second, unchanged backup -> restic:', { a: A2, b: B2, bytes: e.bytes, target: 1.05 });
      for (const [side, runs] of [['ours', A2], ['plain', B2]]) {
        const growth = median(runs.map((s) => s.repoGrowth));
        const added = median(runs.map((s) => s.dataAdded));
        this.rebackup.push({
          side,
          medianS: e5[side === 'ours' ? 'a' : 'b'].medianS,
          repoGrowthBytes: growth,
          repoGrowthShare: round((growth / e.bytes) * 100, 3),
          dataAddedBytes: added,
          dataAddedShare: round((added / e.bytes) * 100, 3),
          target: '< 1 %',
          met: growth / e.bytes < 0.01,
        });
      }
    }
  }

  /** 3: the default (consistent) mode vs --no-snapshot, on `instance` of `pool`'s driver. */
  async pairConsistency(id, instance, driver) {
    const t = this.dirTarget('dir-consistency');
    const frozen = [];
    let bytes;
    const run = (live) => async (r) => {
      this.clearDirTarget(t);
      const s = await this.ours(`${id}-${live ? 'live' : 'snapshot'}-r${r}`, ['backup', 'instances', instance, ...(live ? ['--no-snapshot'] : []), '--target', `dir:${t}`]);
      bytes = s.rows[0]?.size;
      const m = JSON.parse(readFileSync(join(this.backupDir(t, 'instances', this.project, instance), 'manifest.json'), 'utf8'));
      s.mode = m.consistency?.mode;
      if (!live) frozen.push(m.consistency?.frozenMs);
      return s;
    };
    const [a, b] = await this.alternate(run(false), run(true));
    this.clearDirTarget(t);
    const e = this.record(id, `consistency cost, ${driver} pool`, {
      a,
      b,
      bytes,
      aName: 'snapshot',
      bName: 'live',
      ratioName: 'snapshot/live',
    });
    e.frozenMs = { median: median(frozen), all: frozen };
    e.modes = { a: a.map((s) => s.mode), b: b.map((s) => s.mode) };
  }

  async btrfsPair() {
    const why = this.btrfsUnavailable();
    if (why) {
      this.skipped.push({ what: '3b consistency on btrfs', why });
      this.log(`3b skipped: ${why}`);
      return;
    }
    const name = `${this.project}-btrfs`;
    const sizeGiB = Math.ceil((this.o.size * 3) / GiB) + 2;
    try {
      // A loop file under the daemon's directory, sparse: it uses only what is written.
      await this.incus.run(['storage', 'create', name, 'btrfs', `size=${sizeGiB}GiB`]);
    } catch (e) {
      this.skipped.push({ what: '3b consistency on btrfs', why: `incus storage create ... btrfs failed: ${e.message.split('\n')[0]}` });
      return;
    }
    this.btrfsPool = name;
    try {
      await this.launch('cb', this.o.size, { pool: name });
      await this.pairConsistency('3b', 'cb', 'btrfs');
    } finally {
      await this.deleteInstance('cb');
      await this.incus.run(['storage', 'delete', name], { allowFail: true });
      this.btrfsPool = undefined;
    }
  }

  btrfsUnavailable() {
    if (!this.o.btrfs) return 'disabled with --no-btrfs';
    let fs = '';
    try {
      fs = readFileSync('/proc/filesystems', 'utf8');
    } catch {
      // not Linux?
    }
    if (!/\bbtrfs\b/.test(fs)) return 'the kernel has no btrfs (not in /proc/filesystems; try modprobe btrfs)';
    if (!onPath('mkfs.btrfs') && !existsSync('/usr/sbin/mkfs.btrfs') && !existsSync('/sbin/mkfs.btrfs'))
      return 'btrfs-progs is not installed (apt-get install --no-install-recommends btrfs-progs)';
    return undefined;
  }

  /** 4a: restore from restic vs restic dump | curl -T - (import), both from the same snapshot. */
  async pairRestoreRestic() {
    const repo = await this.reusedRepo('restic-ours-instance', '4a-setup', ['c1']);
    const snap = this.newestArchive(await this.resticSnapshots(repo), 'c1');
    const file = snap.paths[0].replace(/^\//, '');
    const bytes = snap.summary?.total_bytes_processed;
    const [a, b] = await this.alternate(
      async (r) => {
        const name = `rs-ours-${r}`;
        const s = await this.ours(`4a-r${r}`, ['restore', 'instance', 'c1', '--target', `restic:${repo}`, '--target-name', name, '-y', '--no-start']);
        await this.deleteInstance(name);
        return s;
      },
      async (r) => {
        const name = `rs-plain-${r}`;
        const s = await this.plain(`4a-r${r}`, 'restore-restic', { RESTIC_REPOSITORY: repo, SNAP: snap.id, FILENAME: file, NAME: name });
        await this.deleteInstance(name);
        return s;
      },
    );
    this.record('4a', 'restore instance <- restic:', { a, b, bytes, target: 1.05 });
    this.memory.push({ size: bytes, target: 'restic (restore)', runs: a });
    for (const s of a) this.tempBytes.push({ id: '4a', what: 'restore instance <- restic', archive: bytes, cliWrote: s.writeBytes, stored: 0, treeWrote: s.treeWriteBytes, treeCancelled: s.treeCancelledBytes });
  }

  /** 4b: restore from a dir target vs curl -T export.tar (import). */
  async pairRestoreDir() {
    const t = this.dirTarget('dir-instance');
    if (!this.dirBackupReady) {
      this.clearDirTarget(t);
      await this.ours('4b-setup', ['backup', 'instances', 'c1', '--no-snapshot', '--target', `dir:${t}`]);
    }
    const file = join(this.backupDir(t, 'instances', this.project, 'c1'), 'export.tar');
    const bytes = statSync(file).size;
    const [a, b] = await this.alternate(
      async (r) => {
        const name = `rd-ours-${r}`;
        const s = await this.ours(`4b-r${r}`, ['restore', 'instance', 'c1', '--target', `dir:${t}`, '--target-name', name, '-y', '--no-start']);
        await this.deleteInstance(name);
        return s;
      },
      async (r) => {
        const name = `rd-plain-${r}`;
        const s = await this.plain(`4b-r${r}`, 'restore-file', { IN: file, NAME: name });
        await this.deleteInstance(name);
        return s;
      },
    );
    this.record('4b', 'restore instance <- dir:', { a, b, bytes, target: 1.05 });
    this.memory.push({ size: bytes, target: 'dir (restore)', runs: a });
    for (const s of a) this.tempBytes.push({ id: '4b', what: 'restore instance <- dir', archive: bytes, cliWrote: s.writeBytes, stored: 0, treeWrote: s.treeWriteBytes, treeCancelled: s.treeCancelledBytes });
  }

  /** 7, 8 and 9 share four instances of --size / 4 each. */
  async pairsOfFour() {
    const names = ['p1', 'p2', 'p3', 'p4'];
    try {
      for (const n of names) await this.launch(n, this.o.parallelSize);
      if (wanted(this.o, '7')) await this.guard('7', () => this.pairParallel(names));
      if (wanted(this.o, '8')) await this.guard('8', () => this.pairNightlyRestic(names));
      // Last: it deletes and restores the four instances.
      if (wanted(this.o, '9')) await this.guard('9', () => this.pairWorstDayRestic(names));
    } finally {
      for (const n of names) await this.deleteInstance(n);
    }
  }

  /** 7: four instances, --parallel 2 vs --parallel 1. */
  async pairParallel(names) {
    const t = this.dirTarget('dir-parallel');
    let bytes;
    const run = (p) => async (r) => {
      this.clearDirTarget(t);
      const s = await this.ours(`7-p${p}-r${r}`, ['backup', 'instances', ...names, '--no-snapshot', '--parallel', String(p), '--target', `dir:${t}`]);
      bytes = s.rows.reduce((x, row) => x + (row.size ?? 0), 0);
      return s;
    };
    const [a, b] = await this.alternate(run(2), run(1));
    this.clearDirTarget(t);
    this.record('7', `4 instances x ${fmtBytes(this.o.parallelSize)} -> dir:`, {
      a,
      b,
      bytes,
      aName: 'parallel 2',
      bName: 'parallel 1',
      ratioName: 'p2/p1',
    });
  }

  /**
   * 8: the nightly run: four instances into restic in one run of ours, against the loop a
   * hand-made cron job would run (stage, download | restic backup --stdin, delete; one after the
   * other). A fresh repository per round and side, as in pair 2.
   */
  async pairNightlyRestic(names) {
    const summary = join(this.work, 'plain-summary.json');
    let bytes;
    const [a, b] = await this.alternate(
      async (r) => {
        const repo = await this.freshRepo('restic-ours-nightly');
        const s = await this.ours(`8-r${r}`, ['backup', 'instances', ...names, '--no-snapshot', '--target', `restic:${repo}`]);
        bytes = s.rows.reduce((x, row) => x + (row.size ?? 0), 0);
        return s;
      },
      async (r) => {
        const repo = await this.freshRepo('restic-plain-nightly');
        return this.plain(`8-r${r}`, 'backup-restic-each', {
          RESES: names.map((n) => `/1.0/instances/${n}`).join(' '),
          BNAME: `bench-plain-${r}`,
          SUMMARY: summary,
          RESTIC_REPOSITORY: repo,
        });
      },
    );
    this.record('8', `nightly: 4 instances x ${fmtBytes(this.o.parallelSize)} -> restic:`, {
      a,
      b,
      bytes,
      target: 1.05,
      note: 'ours: one `backup instances` run; plain: the pipe of pair 2 in a loop; fresh local repository per round and side',
    });
  }

  /**
   * 9: the worst day: the four instances restored from restic in one run of ours (`restore
   * instances`, the items of `restore all`), against a hand-made loop of pair 4's plain restore.
   * Both read the same data snapshots; the instances are deleted before each side.
   */
  async pairWorstDayRestic(names) {
    const repo = await this.reusedRepo('restic-ours-nightly', '9-setup', names);
    const data = await this.resticSnapshots(repo);
    const items = names.map((n) => {
      const snap = this.newestArchive(data, n);
      return { name: n, snap: snap.id, file: snap.paths[0].replace(/^\//, ''), bytes: snap.summary?.total_bytes_processed ?? 0 };
    });
    const bytes = items.reduce((x, i) => x + i.bytes, 0);
    const clear = async () => {
      for (const n of names) await this.deleteInstance(n);
    };
    const [a, b] = await this.alternate(
      async (r) => {
        await clear();
        return this.ours(`9-r${r}`, ['restore', 'instances', ...names, '--target', `restic:${repo}`, '-y', '--no-start']);
      },
      async (r) => {
        await clear();
        return this.plain(`9-r${r}`, 'restore-restic-each', { RESTIC_REPOSITORY: repo, ITEMS: items.map((i) => `${i.snap} ${i.file} ${i.name}`).join('\n') });
      },
    );
    this.record('9', `worst day: 4 instances x ${fmtBytes(this.o.parallelSize)} <- restic:`, {
      a,
      b,
      bytes,
      target: 1.05,
      note: 'ours: one `restore instances` run (as restore all restores them); plain: the pipe of pair 4a in a loop',
    });
  }

  /**
   * 6: the memory point at --big-size (the --size point comes from pairs 1a and 2a). The same runs
   * are paired with the plain way, so the ratios at both sizes tell fixed costs from per-byte ones.
   */
  async bigPoint() {
    if (!this.o.bigSize) {
      this.skipped.push({ what: '6 peak RSS at a second size (and pairs 1a/2a at that size)', why: '--quick' });
      return;
    }
    const big = fmtBytes(this.o.bigSize);
    // Room on disk first: the big instance, its staged export and the target copy exist at once.
    await this.deleteInstance('c1');
    await this.incus.p(['storage', 'volume', 'delete', this.pool, 'v1'], { allowFail: true });
    try {
      await this.launch('big', this.o.bigSize);
      const t = this.dirTarget('dir-big');
      const out = join(this.work, 'plain-big.tar');
      let bytes;
      const [a, b] = await this.alternate(
        async (r) => {
          this.clearDirTarget(t);
          const s = await this.ours(`6-dir-r${r}`, ['backup', 'instances', 'big', '--no-snapshot', '--target', `dir:${t}`]);
          bytes = s.rows[0]?.size;
          this.clearDirTarget(t);
          return s;
        },
        async (r) => {
          const s = await this.plain(`6-dir-r${r}`, 'backup-file', { RES: '/1.0/instances/big', BNAME: `bench-plain-${r}`, OUT: out });
          rmSync(out, { force: true });
          rmSync(`${out}.sha256`, { force: true });
          return s;
        },
      );
      rmSync(t, { recursive: true, force: true });
      this.record('1a@big', `backup instance -> dir:, ${big}`, { a, b, bytes, target: 1.05 });
      this.memory.push({ size: this.o.bigSize, target: 'dir', runs: a });

      // restic once per side: a run takes most of a minute at 4 GiB.
      const ro = await this.freshRepo('restic-big');
      const ra = await this.ours('6-restic', ['backup', 'instances', 'big', '--no-snapshot', '--target', `restic:${ro}`]);
      rmSync(ro, { recursive: true, force: true });
      const rp = await this.freshRepo('restic-big-plain');
      const summary = join(this.work, 'plain-summary.json');
      const rb = await this.plain('6-restic', 'backup-restic', { RES: '/1.0/instances/big', BNAME: 'bench-plain-big', FILENAME: 'big.tar', SUMMARY: summary, RESTIC_REPOSITORY: rp });
      rmSync(rp, { recursive: true, force: true });
      this.record('2a@big', `backup instance -> restic:, ${big}`, { a: [ra], b: [rb], bytes: ra.rows[0]?.size, target: 1.05, note: 'one round per side' });
      this.memory.push({ size: this.o.bigSize, target: 'restic', runs: [ra] });
      this.tempBytes.push({ id: '6', what: `backup instance -> restic (${big})`, archive: ra.rows[0]?.size, cliWrote: ra.writeBytes, stored: 0, treeWrote: ra.treeWriteBytes, treeCancelled: ra.treeCancelledBytes });
    } finally {
      await this.deleteInstance('big');
    }
  }

  /**
   * --profile: one run per kind with a CPU profile (--cpu-prof), the CLI's debug log (every Incus
   * request with its duration) and every restic invocation timed (restic-timing.sh as
   * RESTIC_BINARY), turned into a timeline from the moment the process was spawned.
   */
  async profileRuns() {
    const dir = join(this.dir, 'profiles');
    mkdirSync(dir, { recursive: true });
    const one = async (label, args) => {
      const d = join(dir, label);
      mkdirSync(d, { recursive: true });
      const logFile = join(d, 'cli-log.jsonl');
      const resticLog = join(d, 'restic-calls.log');
      const s = await this.ours(`prof-${label}`, args, {
        cpuProfDir: d,
        extraArgs: ['--log-level', 'debug', '--log-file', logFile],
        extraEnv: { RESTIC_BINARY: join(HERE, 'restic-timing.sh'), IB_BENCH_RESTIC_LOG: resticLog },
      });
      const file = readdirSync(d).find((f) => f.endsWith('.cpuprofile'));
      this.profiles.push({
        label,
        seconds: s.seconds,
        timeline: timeline(s.spawnedAt, s.seconds, logFile, resticLog),
        ...(file ? summarizeProfile(join(d, file)) : {}),
      });
    };
    const t = this.dirTarget('dir-profile');
    await one('backup-dir', ['backup', 'instances', 'c1', '--no-snapshot', '--target', `dir:${t}`]);
    const repo = await this.freshRepo('restic-profile');
    await one('backup-restic', ['backup', 'instances', 'c1', '--no-snapshot', '--target', `restic:${repo}`]);
    await one('restore-restic', ['restore', 'instance', 'c1', '--target', `restic:${repo}`, '--target-name', 'prof-r', '-y', '--no-start']);
    await this.deleteInstance('prof-r');
    await one('restore-dir', ['restore', 'instance', 'c1', '--target', `dir:${t}`, '--target-name', 'prof-d', '-y', '--no-start']);
    await this.deleteInstance('prof-d');
    rmSync(t, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
  }

  // -- the whole run ---------------------------------------------------------------------------

  async run() {
    const o = this.o;
    await this.setupProject();
    await this.launch('c1', o.size);
    this.log(`creating volume v1 with ${fmtBytes(o.volumeSize)}, attached to c1 at /vol`);
    await this.incus.p(['storage', 'volume', 'create', this.pool, 'v1']);
    await this.incus.p(['storage', 'volume', 'attach', this.pool, 'v1', 'c1', '/vol']);
    await this.fill('c1', '/vol/blob', o.volumeSize);

    if (wanted(o, '1a')) await this.guard('1a', () => this.pairDir('1a', 'instance'));
    if (wanted(o, '1b')) await this.guard('1b', () => this.pairDir('1b', 'volume'));
    if (wanted(o, '2a') || wanted(o, '5')) await this.guard('2a', () => this.pairRestic('2a', 'instance'));
    if (wanted(o, '2b')) await this.guard('2b', () => this.pairRestic('2b', 'volume'));
    if (wanted(o, '4a')) await this.guard('4a', () => this.pairRestoreRestic());
    if (wanted(o, '4b')) await this.guard('4b', () => this.pairRestoreDir());
    if (wanted(o, '3a')) await this.guard('3a', () => this.pairConsistency('3a', 'c1', this.envInfo.rootPool.driver));
    if (wanted(o, '3b')) await this.guard('3b', () => this.btrfsPair());
    if (o.profile) await this.guard('profile', () => this.profileRuns());
    if (wanted(o, '7') || wanted(o, '8') || wanted(o, '9')) await this.guard('7/8/9', () => this.pairsOfFour());
    if (wanted(o, '6')) await this.guard('6', () => this.bigPoint());
  }

  // -- report ----------------------------------------------------------------------------------

  result() {
    const mem = this.memory.map((m) => ({
      size: m.size,
      target: m.target,
      rounds: m.runs.length,
      nodeMaxRssMiB: { median: mib(median(m.runs.map((s) => s.maxRssKB * 1024))), max: mib(Math.max(...m.runs.map((s) => s.maxRssKB * 1024))) },
      treeMaxRssMiB: { median: mib(median(m.runs.map((s) => s.treeMaxRssKB * 1024))), max: mib(Math.max(...m.runs.map((s) => (s.treeMaxRssKB ?? 0) * 1024))) },
      peakMiB: Object.fromEntries(['rss', 'heapTotal', 'heapUsed', 'external', 'arrayBuffers'].map((k) => [k, mib(Math.max(...m.runs.map((s) => s.peak?.[k] ?? 0)))])),
    }));
    const flat = {};
    for (const target of ['dir', 'restic']) {
      const pts = mem.filter((m) => m.target === target).sort((x, y) => x.size - y.size);
      if (pts.length >= 2) {
        const growth = round(pts[pts.length - 1].nodeMaxRssMiB.max - pts[0].nodeMaxRssMiB.max, 1);
        flat[target] = { fromSize: pts[0].size, toSize: pts[pts.length - 1].size, growthMiB: growth };
      }
    }
    const maxRss = Math.max(...mem.map((m) => m.nodeMaxRssMiB.max));
    const temp = this.tempBytes.map((t) => ({ ...t, temporary: t.cliWrote !== undefined ? t.cliWrote - (t.stored ?? 0) : undefined }));
    const floor = this.floor && { what: '`list instances` on the dir: target', maxRssMiB: mib(this.floor.maxRssKB * 1024), peakMiB: Object.fromEntries(Object.entries(this.floor.peak ?? {}).map(([k, v]) => [k, mib(v)])) };
    return {
      format: 1,
      startedAt: this.startedAt,
      durationS: this.durationS,
      options: { size: this.o.size, rounds: this.o.rounds, quick: this.o.quick, bigSize: this.o.bigSize ?? null, only: this.o.only ?? null, nodeOptions: this.o.nodeOptions, plainHash: this.o.plainHash },
      environment: { ...this.envInfo, loadAtEnd: os.loadavg().map((x) => round(x, 2)) },
      pairs: this.pairs,
      secondBackup: this.rebackup,
      memory: {
        floor,
        points: mem,
        flat,
        target: { maxMiB: 120, flat: 'growth <= 10 MiB from the small to the big size' },
        limitMet: mem.length ? maxRss <= 120 : undefined,
        flatMet: Object.keys(flat).length ? Object.values(flat).every((f) => f.growthMiB <= 10) : undefined,
        maxMiB: mem.length ? maxRss : undefined,
        how: 'node alone: process.resourceUsage().maxRSS in the CLI (probe.mjs); tree: /usr/bin/time -v "Maximum resident set size" (the largest of the CLI and its waited-for children, i.e. restic)',
      },
      temporaryBytes: {
        runs: temp,
        met: temp.length ? temp.every((t) => t.temporary !== undefined && t.temporary < 1 * MiB) : undefined,
        how: 'write_bytes summed over /proc/<cli>/task/*/io at the CLI\'s exit (probe.mjs), minus the bytes of the backup it stored in a dir: target (du -sb); tree = /proc/<cli>/io, which also counts reaped children (restic writing the repository and its temporary pack files)',
      },
      profiles: this.profiles,
      skipped: this.skipped,
      errors: this.errors,
    };
  }

  printReport(res) {
    const L = [];
    const env = res.environment;
    L.push('');
    L.push(
      `incus-backup benchmark ${this.stamp}: ${fmtBytes(res.options.size)} incompressible, ${res.options.rounds} round(s); ` +
        `${env.cpus} CPUs, node ${env.node}, Incus ${env.incus}, restic ${env.restic}, pool ${env.rootPool.name} (${env.rootPool.driver}); ` +
        `load ${env.loadAtStart[0]} -> ${env.loadAtEnd[0]}; ${res.durationS} s`,
    );
    L.push('');
    const rows = [['#', 'pair', 'A', 'A median (min-max)', 'A MiB/s', 'B', 'B median (min-max)', 'B MiB/s', 'A/B (of min)', 'CPU s A/B', 'target']];
    for (const p of res.pairs) {
      rows.push([
        p.id,
        p.title,
        p.a.name,
        `${p.a.medianS} s (${p.a.minS}-${p.a.maxS})`,
        String(p.a.mibPerS ?? '-'),
        p.b.name,
        `${p.b.medianS} s (${p.b.minS}-${p.b.maxS})`,
        String(p.b.mibPerS ?? '-'),
        `${p.ratio ?? '-'} (${p.ratioOfMin ?? '-'})`,
        `${p.a.medianCpuS ?? '-'}/${p.b.medianCpuS ?? '-'}`,
        p.target !== undefined ? `<= ${p.target} ${p.met ? 'met' : 'MISSED'}` : p.frozenMs ? `frozen ${p.frozenMs.median} ms` : '',
      ]);
    }
    L.push(...table(rows));
    L.push(
      'A = ours unless named: incus-backup backup ... --no-snapshot / restore ... --target-name X -y --no-start (pairs 3: default mode vs --no-snapshot; 7: --parallel 2 vs 1).',
      `B = plain (scripts/bench/plain.sh): backup -> dir: POST backup (compression none, instance/volume only), wait, curl | tee FILE | ${res.options.plainHash === 'openssl' ? 'openssl dgst -sha256' : 'sha256sum'}, fsync, DELETE;`,
      '    -> restic: the same download | restic backup --stdin; <- restic: restic dump SNAP FILE | curl -T - POST /1.0/instances, wait; <- dir: curl -T FILE, wait.',
      'restic pairs: a fresh local repository per round and side (restic init not timed); pair 5 backs up again into the same repository;',
      '    pairs 8 and 9: four instances in one run of ours against the plain pipe in a loop, one instance after the other.',
    );
    if (res.secondBackup.length) {
      L.push('', 'second, unchanged backup into restic (pair 5): repository growth (du -sb) and restic data_added, as a share of the archive');
      const r2 = [['side', 'median', 'repo growth', 'share', 'data_added', 'share', 'target']];
      for (const s of res.secondBackup)
        r2.push([s.side, `${s.medianS} s`, fmtBytes(s.repoGrowthBytes), `${s.repoGrowthShare} %`, fmtBytes(s.dataAddedBytes), `${s.dataAddedShare} %`, `${s.target} ${s.met ? 'met' : 'MISSED'}`]);
      L.push(...table(r2));
    }
    if (res.memory.points.length) {
      L.push('', 'peak resident memory of the CLI (pair 6): node alone (probe) and the process tree (/usr/bin/time -v, includes restic); floor = `list`');
      const r3 = [['size', 'target', 'runs', 'node max RSS (median / max)', 'tree max RSS (median / max)', 'peak heapTotal', 'peak heapUsed', 'peak arrayBuffers']];
      if (res.memory.floor) {
        const f = res.memory.floor;
        r3.push(['floor', 'dir', '1', `${f.maxRssMiB} MiB`, '-', `${f.peakMiB.heapTotal} MiB`, `${f.peakMiB.heapUsed} MiB`, `${f.peakMiB.arrayBuffers} MiB`]);
      }
      for (const m of res.memory.points)
        r3.push([
          fmtBytes(m.size),
          m.target,
          String(m.rounds),
          `${m.nodeMaxRssMiB.median} / ${m.nodeMaxRssMiB.max} MiB`,
          `${m.treeMaxRssMiB.median ?? '-'} / ${m.treeMaxRssMiB.max || '-'} MiB`,
          `${m.peakMiB.heapTotal} MiB`,
          `${m.peakMiB.heapUsed} MiB`,
          `${m.peakMiB.arrayBuffers} MiB`,
        ]);
      L.push(...table(r3));
      const flat = Object.entries(res.memory.flat).map(([t, f]) => `${t} ${f.growthMiB >= 0 ? '+' : ''}${f.growthMiB} MiB from ${fmtBytes(f.fromSize)} to ${fmtBytes(f.toSize)}`);
      L.push(
        `target <= 120 MiB: ${res.memory.limitMet ? 'met' : 'MISSED'} (max ${res.memory.maxMiB} MiB); ` +
          `flat: ${res.memory.flatMet === undefined ? 'not measured (one size)' : res.memory.flatMet ? 'met' : 'MISSED'}${flat.length ? ` (${flat.join('; ')})` : ''}`,
      );
    }
    if (res.temporaryBytes.runs.length) {
      L.push('', 'client-side disk writes: write_bytes of the CLI process alone (/proc/<pid>/task/*/io); "beyond the backup" = that minus the backup it stored in a dir: target');
      const r4 = [['#', 'run', 'archive', 'CLI wrote', 'stored in target', 'beyond the backup', 'tree wrote (incl. restic)', 'of which cancelled']];
      for (const t of res.temporaryBytes.runs)
        r4.push([t.id, t.what, fmtBytes(t.archive), fmtBytes(t.cliWrote), fmtBytes(t.stored), fmtBytes(t.temporary), fmtBytes(t.treeWrote), fmtBytes(t.treeCancelled)]);
      L.push(...table(r4));
      L.push(`target: zero temporary client bytes: ${res.temporaryBytes.met ? 'met' : 'MISSED'}`);
    }
    for (const p of res.profiles) {
      L.push('', `profile ${p.label} (${p.seconds} s wall, ${p.totalMs} ms sampled on the main thread): ` + (p.stages ?? []).slice(0, 7).map((s) => `${s.name} ${s.share} %`).join(', '));
      for (const f of (p.top ?? []).slice(0, 8)) L.push(`    ${String(f.share).padStart(5)} %  ${f.name}`);
      L.push('  timeline (ms after spawn):');
      for (const ev of p.timeline) L.push(`    ${String(ev.ms).padStart(6)}  ${ev.event}`);
    }
    for (const s of res.skipped) L.push(`skipped: ${s.what}: ${s.why}`);
    for (const e of res.errors) L.push(`ERROR: ${e}`);
    L.push('');
    process.stdout.write(L.join('\n') + '\n');
  }
}

/**
 * Where a profiled run's wall time went: [ms since spawn, event] from the CLI's debug log (Incus
 * requests end at their log time and started `durationMs` earlier) and the restic invocations.
 */
function timeline(spawnedAt, seconds, logFile, resticLog) {
  const ev = [];
  const boring = /^incus GET (\/1\.0(\/(instances|storage-pools|projects|profiles)[^/]*(\?|$)|\?|$)|.*\/snapshots\?|.*\/backups\?project)/;
  if (existsSync(logFile)) {
    for (const line of readFileSync(logFile, 'utf8').split('\n').filter(Boolean)) {
      let l;
      try {
        l = JSON.parse(line);
      } catch {
        continue;
      }
      const at = Date.parse(l.time) - spawnedAt;
      const msg = String(l.message ?? '');
      if (l.durationMs !== undefined && /^incus /.test(msg)) {
        if (boring.test(msg) && l.durationMs < 50) continue;
        ev.push([at - l.durationMs, `${msg.replace(/\?project=[^& ]*&?/, '?').replace(/\?$/, '').slice(0, 70)} (${l.durationMs} ms)`]);
      } else if (/^(start|end)\b|staging|importing|swapping|copying|snapshot|^done/.test(msg) || /: done/.test(msg)) ev.push([at, msg.slice(0, 70)]);
    }
  }
  if (existsSync(resticLog)) {
    for (const line of readFileSync(resticLog, 'utf8').split('\n').filter(Boolean)) {
      const [a, b, rc, ...args] = line.split(' ');
      const cmd = args.filter((x) => !/^--retry-lock$|^\d+m$/.test(x)).slice(0, 3).join(' ').slice(0, 60);
      ev.push([Number(a) - spawnedAt, `restic ${cmd} (${Number(b) - Number(a)} ms${rc !== '0' ? `, exit ${rc}` : ''})`]);
    }
  }
  ev.push([Math.round(seconds * 1000), 'process exited']);
  return ev.sort((x, y) => x[0] - y[0]).map(([t, m]) => ({ ms: Math.round(t), event: m }));
}

function mib(bytes) {
  return bytes === undefined || Number.isNaN(bytes) ? undefined : round(bytes / MiB, 1);
}

function lastSegment(url) {
  return decodeURIComponent(url.split('?')[0].split('/').pop());
}

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => String(c ?? '').padEnd(widths[i])).join('  ').trimEnd());
}

// ---------------------------------------------------------------------------------------------

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`bench: ${e.message}\n${USAGE}\n`);
    return 2;
  }
  const bench = new Bench(o);
  bench.startedAt = new Date().toISOString();
  const t0 = Date.now();
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    bench.stopping = true;
    bench.log('interrupted: stopping the running command, then cleaning up (again to exit at once)');
    void bench.runner?.stopAll();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await bench.prepare();
    await bench.run();
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`bench: ${e.message}\n`);
      await bench.teardown();
      return 2;
    }
    if (!interrupted) bench.errors.push(e instanceof CommandError ? e.message : e.stack ?? String(e));
  } finally {
    if (bench.runner) {
      bench.stopping = false;
      await bench.teardown();
    }
  }
  if (interrupted) {
    bench.log(`interrupted; no result written (logs: ${bench.logs})`);
    return 130;
  }
  bench.durationS = Math.round((Date.now() - t0) / 1000);
  const res = bench.result();
  bench.printReport(res);
  const file = join(bench.out, `${bench.stamp}.json`);
  writeFileSync(file, JSON.stringify(res, null, 2) + '\n');
  copyFileSync(file, join(bench.out, 'latest.json'));
  bench.log(`wrote ${file} and .cache/bench/latest.json (logs, probes${res.profiles.length ? ', profiles' : ''}: ${bench.dir})`);
  return res.errors.length ? 1 : 0;
}

process.exitCode = await main();
