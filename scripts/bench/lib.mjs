// Helpers for bench.mjs: sizes and statistics, running and timing child processes, and the incus
// command line for setting up and tearing down what is measured.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** "1G", "512M", "4GiB", "1073741824" → bytes; units are binary, the result a whole number of MiB. */
export function parseSize(text) {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(String(text).trim());
  if (!m) throw new Error(`not a size: ${text} (e.g. 1G, 512M)`);
  const mult = { '': 1, K: 1024, M: MiB, G: GiB, T: 1024 * GiB }[m[2].toUpperCase()];
  const bytes = Math.round(Number(m[1]) * mult);
  if (bytes < MiB) throw new Error(`size ${text} is below 1 MiB`);
  return Math.round(bytes / MiB) * MiB;
}

export function fmtBytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '-';
  const abs = Math.abs(n);
  if (abs >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (abs >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (abs >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

export function median(xs) {
  const s = xs.filter((x) => typeof x === 'number' && !Number.isNaN(x)).sort((a, b) => a - b);
  if (!s.length) return undefined;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function round(x, digits = 3) {
  if (x === undefined || x === null || Number.isNaN(x)) return undefined;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** `/usr/bin/time -v` output → the numbers we use. */
export function parseTimeV(text) {
  const num = (re) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : undefined;
  };
  return {
    maxRssKB: num(/Maximum resident set size \(kbytes\): (\d+)/),
    userS: num(/User time \(seconds\): ([\d.]+)/),
    systemS: num(/System time \(seconds\): ([\d.]+)/),
  };
}

export class CommandError extends Error {}

/**
 * Starts and times child processes. Each child gets its own process group (so an interrupt of the
 * benchmark can stop a whole pipeline, e.g. curl | restic); its stderr is kept in a log file.
 */
export class Runner {
  constructor({ logDir, timeBin }) {
    this.logDir = logDir;
    this.timeBin = timeBin;
    this.children = new Set();
    this.seq = 0;
  }

  /**
   * Runs argv to its end. With `timed`, wraps it in `/usr/bin/time -v` (when there is one) and
   * measures the wall time from spawn to exit here. Rejects with CommandError on a non-zero exit
   * unless `allowFail`.
   */
  async run(argv, { env = process.env, timed = false, label = argv[0], allowFail = false } = {}) {
    const n = ++this.seq;
    const safe = label.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 60);
    const logFile = join(this.logDir, `${String(n).padStart(4, '0')}-${safe}.log`);
    const timeFile = join(this.logDir, `${String(n).padStart(4, '0')}-${safe}.time`);
    const full = timed && this.timeBin ? [this.timeBin, '-v', '-o', timeFile, '--', ...argv] : argv;
    // stderr comes through a pipe and is written here: a file as the child's stderr would count
    // as the child's own disk writes (write_bytes), which the benchmark measures.
    let stdout = '';
    let stderr = '';
    const started = process.hrtime.bigint();
    const code = await new Promise((resolve, reject) => {
      const child = spawn(full[0], full.slice(1), {
        env,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.children.add(child);
      child.stdout.on('data', (d) => (stdout += d.toString('utf8')));
      child.stderr.on('data', (d) => (stderr += d.toString('utf8')));
      child.on('error', (e) => {
        this.children.delete(child);
        reject(e);
      });
      child.on('close', (c, sig) => {
        this.children.delete(child);
        resolve(c ?? 128 + (sig === 'SIGKILL' ? 9 : 15));
      });
    });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (stderr || timed || code !== 0) writeFileSync(logFile, `$ ${argv.join(' ')}\n${stderr}${code !== 0 ? `\n(exit ${code})\n` : ''}`);
    const time = timed && this.timeBin && existsSync(timeFile) ? parseTimeV(readFileSync(timeFile, 'utf8')) : undefined;
    if (time) rmSync(timeFile, { force: true });
    const result = { code, seconds, stdout, stderr, logFile, time };
    if (code !== 0 && !allowFail) {
      const tail = stderr.trim().split('\n').slice(-6).join('\n');
      throw new CommandError(`${label} failed (exit ${code}): ${tail || '(no output)'}\n  full log: ${logFile}`);
    }
    return result;
  }

  /** SIGTERM to every running child's process group, SIGKILL after `graceMs`; waits for them. */
  async stopAll(graceMs = 15000) {
    const live = [...this.children];
    for (const c of live) signalGroup(c.pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (this.children.size && Date.now() < deadline) await sleep(100);
    for (const c of this.children) signalGroup(c.pid, 'SIGKILL');
  }
}

function signalGroup(pid, sig) {
  try {
    process.kill(-pid, sig);
  } catch {
    // already gone
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** The `incus` command line against the daemon in `env`, for setup and teardown only. */
export class IncusCli {
  constructor(runner, env, project) {
    this.runner = runner;
    this.env = env;
    this.project = project;
  }

  async run(args, opts = {}) {
    return (await this.runner.run(['incus', ...args], { env: this.env, label: `incus-${args.filter((a) => !a.startsWith('-') && a !== this.project).slice(0, 2).join('-')}`, ...opts })).stdout;
  }

  /** `incus --project P ...` */
  async p(args, opts = {}) {
    return this.run(['--project', this.project, ...args], opts);
  }

  async query(path) {
    return JSON.parse(await this.run(['query', path]));
  }

  async exec(instance, command) {
    return this.p(['exec', instance, '--', 'sh', '-c', command]);
  }
}
