/**
 * Running the restic binary: its environment (repository and credentials travel only in
 * environment variables, never in argv), its global flags, and turning its exit codes and
 * messages into one-line IbErrors. The mapping functions are pure and unit-tested.
 */
import { accessSync, constants } from 'node:fs';
import { hostname } from 'node:os';
import { pidAlive } from '../../core/fsutil.js';
import { ExitCode, IbError, InterruptedError, STORAGE_FULL, UsageError, type ExitCodeValue } from '../../errors.js';
import { loadProcessSupport, ProgramNotFoundError, startProcess, type ChildProcess, type ProcessOptions, type ProcessResult } from '../../core/process.js';

/** restic's documented exit codes (restic 0.17+). */
export const RESTIC_EXIT = {
  fatal: 1,
  partial: 3,
  noRepository: 10,
  locked: 11,
  wrongPassword: 12,
  interrupted: 130,
} as const;

/** A failed restic run, with restic's own exit code for callers that react to one. */
export class ResticError extends IbError {
  constructor(
    message: string,
    readonly resticCode: number | undefined,
    exitCode: ExitCodeValue = ExitCode.failed,
    hint?: string,
  ) {
    super(message, exitCode, hint);
    this.name = 'ResticError';
  }
}

/** restic could not create its lock in the repository (see isLockRefused). */
export class ResticLockError extends ResticError {
  override name = 'ResticLockError';
}

export const MIN_VERSION: [number, number, number] = [0, 18, 0];

export interface ResticConfig {
  /** Everything after `restic:` in the target. */
  repository: string;
  /** The environment restic runs in (credentials and backend settings come from here). */
  env: NodeJS.ProcessEnv;
  /** A password file given on our command line; overrides the other password variables. */
  passwordFile?: string;
  /** Where the password comes from, as the user would name it (for the wrong-password hint). */
  passwordSource?: string;
  /** Program to run: RESTIC_BINARY, or `restic` on PATH. */
  binary?: string;
  /** How long restic waits for a lock held by someone else (restic's --retry-lock). */
  retryLock?: string;
  /**
   * Told each time restic reports a repository request it is about to retry (a server gone for
   * a moment, a full disk on a rest-server): restic goes on retrying for up to 15 minutes, and
   * without this the run would just seem to stall. Passwords are masked.
   */
  onRetry?: (line: string) => void;
}

/** The repository as shown in messages: a password in a URL is masked, like restic does. */
export function redactRepository(repo: string): string {
  return repo.replace(/(\/\/[^/@:]*:)[^@/]*@/g, '$1***@');
}

function nonEmpty(v: string | undefined): boolean {
  return v !== undefined && v !== '';
}

/** Whether restic will find a password without asking on a terminal (which it cannot here). */
export function hasCredential(env: NodeJS.ProcessEnv, passwordFile?: string): boolean {
  return (
    nonEmpty(passwordFile) ||
    nonEmpty(env.RESTIC_PASSWORD) ||
    nonEmpty(env.RESTIC_PASSWORD_FILE) ||
    nonEmpty(env.RESTIC_PASSWORD_COMMAND)
  );
}

/** The environment for restic: ours, with the repository and the chosen password source. */
export function resticEnv(cfg: ResticConfig): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...cfg.env, RESTIC_REPOSITORY: cfg.repository };
  delete env.RESTIC_REPOSITORY_FILE;
  if (nonEmpty(cfg.passwordFile)) {
    delete env.RESTIC_PASSWORD;
    delete env.RESTIC_PASSWORD_COMMAND;
    env.RESTIC_PASSWORD_FILE = cfg.passwordFile;
  }
  for (const k of ['RESTIC_PASSWORD', 'RESTIC_PASSWORD_FILE', 'RESTIC_PASSWORD_COMMAND']) if (env[k] === '') delete env[k];
  return env;
}

/** `restic version` output → [major, minor, patch], or undefined if unrecognisable. */
export function parseVersion(text: string): [number, number, number] | undefined {
  const m = /restic (\d+)\.(\d+)\.(\d+)/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

export function versionBelow(v: [number, number, number], min: [number, number, number]): boolean {
  for (let i = 0; i < 3; i++) if (v[i] !== min[i]) return v[i]! < min[i]!;
  return false;
}

/** The lines restic prints as JSON (`--json`), skipping anything else. */
const UNITS: Record<string, number> = { B: 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40 };

/**
 * The space `restic prune` (or `forget --prune`) reclaimed, from its `total prune: N blobs / SIZE`
 * line (restic prints sizes with three decimals, so this is within 0.1 %); undefined without it.
 */
export function prunedBytes(stdout: string): number | undefined {
  const m = /^total prune:\s+\d+ blobs \/ ([\d.]+) (B|KiB|MiB|GiB|TiB)\s*$/m.exec(stdout);
  return m ? Math.round(Number(m[1]) * UNITS[m[2]!]!) : undefined;
}

export function jsonLines(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      const v: unknown = JSON.parse(t);
      if (v && typeof v === 'object' && !Array.isArray(v)) out.push(v as Record<string, unknown>);
    } catch {
      // a progress line cut in the middle, or not JSON after all
    }
  }
  return out;
}

/** What restic said went wrong: its JSON exit_error, else its last Fatal line, else its last line. */
export function resticMessage(stderr: string): string {
  const exitError = jsonLines(stderr).reverse().find((l) => l.message_type === 'exit_error');
  let msg = typeof exitError?.message === 'string' ? exitError.message : '';
  if (!msg) {
    const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
    msg = [...lines].reverse().find((l) => l.startsWith('Fatal:')) ?? lines[lines.length - 1] ?? '';
  }
  return msg.split('\n')[0]!.replace(/^Fatal:\s*/, '').trim();
}

/** The restic commands that store data (a failed save there is data not kept). */
const WRITES = new Set(['backup', 'init', 'forget', 'prune', 'tag', 'key']);

const NETWORK = /dial tcp|connection refused|no such host|i\/o timeout|network is unreachable|no route to host|TLS handshake|connection reset/i;

/** A line in which restic says it will try a repository request again. */
function isRetry(line: string): boolean {
  return /returned error, retrying after/.test(line);
}

/**
 * A retry line restic prints while it cannot even open the repository (its config or keys):
 * refused connections, TLS against a plain-HTTP server, a URL without a host, a server error
 * for a repository path that is a file. None of that goes away by waiting.
 */
export function isUnreachableRetry(line: string): boolean {
  return isRetry(line) && /<(config|key)\//.test(line);
}

/** A retry line for any request that failed on the network (the server gone mid-run). */
export function isNetworkRetry(line: string): boolean {
  return isRetry(line) && NETWORK.test(line);
}

/**
 * How long restic may go on retrying a server that does not answer, once the repository was
 * open (a server that died mid-run), before the run gives up: restic itself would try for
 * about 15 minutes. A restart of the server takes seconds.
 */
export const UNREACHABLE_FOR_MS = 120_000;
/** Retry lines further apart than this mean the server answered in between. */
const RETRY_GAP_MS = 30_000;

/**
 * Times an outage from restic's network retry lines: note() each one; true once they have come
 * without a gap (RETRY_GAP_MS) for `limitMs`.
 */
export class OutageClock {
  private first?: number;
  private last?: number;

  constructor(private readonly limitMs = UNREACHABLE_FOR_MS) {}

  note(now = Date.now()): boolean {
    if (this.last === undefined || now - this.last >= RETRY_GAP_MS) this.first = now;
    this.last = now;
    return now - this.first! >= this.limitMs;
  }
}

/**
 * restic failing to write its lock file, about to try again: `Save(<lock/4114ca14d2>) returned
 * error, retrying after 1.46s: open /srv/restic/locks/…: read-only file system`. Storage that
 * refuses a write (read-only, no permission, full) refuses every retry, and restic would go on
 * for minutes; a server out of reach for a moment (a network error) is left to restic's retries.
 */
export function isLockRefused(line: string): boolean {
  return isRetry(line) && /^Save\(<lock\//.test(line) && !NETWORK.test(line);
}

/**
 * A write restic has given up on, after its own retries: `Save(<data/1eb640d657>) failed: write
 * /srv/restic/data/1e/…: no space left on device`. The command cannot succeed any more, and a
 * `backup --stdin-from-command` would not even end: restic waits for its command to finish,
 * which waits for restic to read on.
 */
export function isFailedSave(line: string): boolean {
  return /^Save\(<[^>]*>\) failed: /.test(line);
}

/** A rest-server (or other HTTP backend) that refused who we are: `unexpected HTTP response (401): 401 Unauthorized`. */
const UNAUTHORIZED = /\(401\)|\b401 Unauthorized\b/;

export interface FailureContext {
  /** The restic subcommand, for the message (`backup`, `snapshots`, ...). */
  command: string;
  /** The repository as shown to the user (redacted). */
  repo: string;
  /** Strings that must not appear in a message (the password). */
  secrets?: string[];
  /** restic was stopped because it kept failing to reach the repository: its last retry line. */
  unreachable?: string;
  /** restic was stopped because it could not write to the repository: its failed-save line. */
  failedSave?: string;
  /** restic was stopped because the repository refused its lock file: its retry line. */
  lockRefused?: string;
  /** Where the password came from (ResticConfig.passwordSource). */
  passwordSource?: string;
}

/** restic's words with the passwords masked: those of URLs, and `secrets`. */
function scrub(text: string, secrets: string[] = []): string {
  let out = redactRepository(text);
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join('***');
  return out;
}

/** One-line error for a failed restic run, chosen by restic's exit code. */
export function resticFailure(r: Pick<ProcessResult, 'exitCode' | 'signal' | 'stderr'>, ctx: FailureContext): IbError {
  const detail = scrub(ctx.lockRefused ?? ctx.failedSave ?? ctx.unreachable ?? resticMessage(r.stderr), ctx.secrets);
  const { repo } = ctx;
  const code = r.exitCode;
  if (ctx.lockRefused) {
    return new ResticLockError(
      `restic cannot lock the repository ${repo}: ${detail.split(': ').at(-1)}`,
      code,
      ExitCode.failed,
      'backing up, pruning and protecting need a repository restic can write to (listing, verifying and restoring do not)',
    );
  }
  if (ctx.failedSave) {
    const cause = detail.split(': ').at(-1);
    // What a reading command (a restore's dump, a listing, a check) writes is its lock, which it
    // keeps refreshing: failing that on the network is a server gone, not storage refusing data.
    if (!WRITES.has(ctx.command) && NETWORK.test(detail)) {
      return new ResticError(
        `lost the restic repository ${repo} while reading it: ${lastCause(detail)}`,
        code,
        ExitCode.failed,
        'check that the server is running and the address in --target is right, and run again',
      );
    }
    return new ResticError(
      `restic could not write to the repository ${repo}: ${cause}`,
      code,
      ExitCode.failed,
      STORAGE_FULL.test(detail)
        ? 'free space where the repository is stored (old backups go with `incus-backup prune`; what this run wrote before it failed is in no backup, and `restic prune` gives it back) and run again; nothing was kept'
        : 'check the storage behind the repository; nothing was kept',
    );
  }
  if (/Resolving password failed/i.test(detail)) {
    // A password file that is a directory, a password command that fails: the user's setting.
    return new ResticError(
      `cannot get the password for restic repository ${repo}: ${detail.replace(/^.*Resolving password failed:\s*/i, '')}`,
      code,
      ExitCode.usage,
      'check --password-file (a readable file), RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND (a command that prints the password)',
    );
  }
  if (ctx.unreachable || (code === RESTIC_EXIT.fatal && NETWORK.test(detail))) {
    return new ResticError(
      `cannot reach the restic repository ${repo}${detail ? `: ${lastCause(detail.replace(/^.*?returned error, retrying after [^:]*: /, ''))}` : ''}`,
      code,
      ExitCode.failed,
      'check that the server is running and the address in --target is right',
    );
  }
  if (UNAUTHORIZED.test(detail)) {
    return new ResticError(
      `the server refused the credentials for the restic repository ${repo} (HTTP 401 Unauthorized)`,
      code,
      ExitCode.usage,
      'check the user name and password in the repository URL, or RESTIC_REST_USERNAME / RESTIC_REST_PASSWORD; a rest-server with --private-repos also refuses a path that does not start with /USER/',
    );
  }
  switch (code) {
    case RESTIC_EXIT.noRepository:
      return new ResticError(
        `restic repository ${repo} does not exist`,
        code,
        ExitCode.usage,
        'check --target; a backup creates the repository (restic init) on first use',
      );
    case RESTIC_EXIT.locked: {
      // restic names the holder ("locked by PID 4242 on host by root"); one of this host that is
      // gone (a run killed with -9) holds the lock until someone removes it.
      const holder = /by PID (\d+) on (\S+)/.exec(r.stderr);
      if (holder && holder[2] === hostname() && !pidAlive(Number(holder[1]))) {
        return new ResticError(
          `restic repository ${repo} is locked by restic process ${holder[1]} of this host, which is no longer running (killed?)`,
          code,
          ExitCode.failed,
          `\`restic -r ${repo} unlock\` removes its stale lock (it leaves the locks of running processes alone)`,
        );
      }
      return new ResticError(
        `restic repository ${repo} is locked by another restic process${holder ? ` (PID ${holder[1]} on ${holder[2]})` : ''}`,
        code,
        ExitCode.failed,
        'wait for it to finish and try again; if no restic is running any more, `restic unlock` removes stale locks',
      );
    }
    case RESTIC_EXIT.wrongPassword:
      return new ResticError(
        `wrong password for restic repository ${repo} (no key matches it)`,
        code,
        ExitCode.usage,
        ctx.passwordSource
          ? `check the password from ${ctx.passwordSource} (the first of --password-file, INCUS_BACKUP_PASSWORD_FILE, RESTIC_PASSWORD_FILE, RESTIC_PASSWORD_COMMAND, RESTIC_PASSWORD, restic.password_file in the configuration file is used)`
          : 'check the password: --password-file, RESTIC_PASSWORD_FILE, RESTIC_PASSWORD or RESTIC_PASSWORD_COMMAND',
      );
    case RESTIC_EXIT.interrupted:
      return new InterruptedError(`restic ${ctx.command} was interrupted`);
  }
  if (ctx.command === 'check' && code === RESTIC_EXIT.fatal) {
    // Name what is damaged (the first two findings), not just restic's closing line.
    const damage = r.stderr
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => /^(pack [0-9a-f]{8,}|error for |Load\(|error: )/.test(l))
      .map((l) => (l.length > 160 ? `${l.slice(0, 159)}…` : l));
    return new ResticError(`restic check found damage${damage.length ? `: ${damage.slice(0, 2).join('; ')}` : `: ${detail}`}`, code);
  }
  if (code === undefined && r.signal) return new ResticError(`restic ${ctx.command} was stopped (${r.signal})`, code);
  // Data restic could not read back as it was written: the same advice as a sha256 mismatch.
  const damaged = ctx.command === 'dump' && /ciphertext verification failed|decrypting blob|does not exist|not found in index|pack .* (?:missing|not found)|checksum|hash mismatch/i.test(detail);
  return new ResticError(
    `restic ${ctx.command} failed${detail ? `: ${detail}` : ` with exit code ${code}`}`,
    code,
    ExitCode.failed,
    damaged ? 'the backup is damaged in the repository: `incus-backup verify --deep` says which; an older one is restored with --version (`incus-backup list` shows them)' : undefined,
  );
}

/** `... Head "http://...": dial tcp 127.0.0.1:1: connect: connection refused` → the last part. */
function lastCause(detail: string): string {
  const parts = detail.split(': ');
  const i = parts.findIndex((p) => NETWORK.test(p));
  return i >= 0 ? parts.slice(i).join(': ') : detail;
}

/** Why restic was stopped while it was still trying (see Restic.start). */
type Stopped = Pick<FailureContext, 'unreachable' | 'failedSave' | 'lockRefused'>;

export type ResticRunOptions = Omit<ProcessOptions, 'env'> & {
  /** The command only reads: once the repository refused a lock (see lockless), it runs with --no-lock. */
  read?: boolean;
};

export interface ResticRun {
  child: ChildProcess;
  /** The run's result, or its failure mapped to an IbError. */
  result: Promise<ProcessResult>;
}

/** A restic binary bound to one repository and its credentials. */
export class Restic {
  readonly binary: string;
  readonly repoLabel: string;
  private readonly env: NodeJS.ProcessEnv;
  /** How long restic waits for a lock held by someone else (restic's --retry-lock). */
  readonly retryLock: string;
  private readonly running = new Set<ChildProcess>();
  private readonly onRetry?: (line: string) => void;
  /**
   * The repository refused restic's lock (read-only storage, no write permission, full): reads
   * (ResticRunOptions.read) run without one from then on, as restic's --no-lock allows.
   */
  lockless = false;

  private readonly passwordSource?: string;

  constructor(cfg: ResticConfig) {
    if (cfg.onRetry) this.onRetry = cfg.onRetry;
    if (cfg.passwordSource) this.passwordSource = cfg.passwordSource;
    this.binary = cfg.binary || cfg.env.RESTIC_BINARY || 'restic';
    this.repoLabel = redactRepository(cfg.repository);
    this.env = resticEnv(cfg);
    this.retryLock = cfg.retryLock ?? '2m';
    // The password file restic will read (--password-file wins over the environment's): one it
    // cannot read is bad input, named here rather than in restic's "Resolving password failed".
    const passwordFile = this.env.RESTIC_PASSWORD_FILE;
    if (passwordFile) {
      try {
        accessSync(passwordFile, constants.R_OK);
      } catch (e) {
        throw new UsageError(
          `the restic password file ${passwordFile} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
          'check --password-file, restic.password_file in the configuration file, or RESTIC_PASSWORD_FILE',
        );
      }
    }
  }

  private get secrets(): string[] {
    return this.env.RESTIC_PASSWORD ? [this.env.RESTIC_PASSWORD] : [];
  }

  notFound(): IbError {
    return new IbError(
      `restic is not installed: "${this.binary}" was not found`,
      1,
      'install restic 0.18 or newer (https://restic.net, or your distribution\'s package) or point RESTIC_BINARY at it',
    );
  }

  /** `restic version`, without touching the repository. */
  async version(): Promise<string> {
    // No global flags: a restic too old to know them must still say its version.
    await loadProcessSupport();
    const r = await this.wrap(startProcess(this.binary, ['version'], { env: this.env }), 'version');
    return r.stdout.trim();
  }

  /**
   * Starts `restic <args>` with the global flags every call gets. The result promise
   * rejects with a mapped IbError when restic fails. Needs loadProcessSupport() (version()
   * and run() do it; the backend calls version() before anything else).
   */
  start(args: string[], opts: ResticRunOptions = {}): ResticRun {
    const { read, ...processOpts } = opts;
    const command = args[0] ?? '';
    const stopped: Stopped = {};
    let retries = 0;
    const outage = new OutageClock();
    // Unless quiet, restic prints notices such as "repo already locked, waiting up to 2m0s for
    // the lock" on stdout, which for a dump is the archive itself.
    const quiet = command === 'dump' ? ['--quiet'] : [];
    const lock = read && this.lockless ? ['--no-lock'] : ['--retry-lock', this.retryLock];
    // restic is stopped, for the first reason it gives, with the line that gave it.
    const stop = (why: keyof Stopped, line: string) => {
      if (stopped[why]) return;
      stopped[why] = line;
      child.kill();
    };
    const child = startProcess(this.binary, [...lock, ...quiet, ...args], {
      ...processOpts,
      env: this.env,
      onStderrLine: (line) => {
        // restic retries an unreachable server for many minutes; while it cannot even read
        // the repository's config there is nothing to wait for.
        if (isUnreachableRetry(line)) {
          if (++retries >= 3) stop('unreachable', line);
        } else if (isLockRefused(line)) stop('lockRefused', line);
        else if (isRetry(line)) {
          this.onRetry?.(scrub(line, this.secrets));
          if (isNetworkRetry(line) && outage.note()) stop('unreachable', line);
        }
        if (isFailedSave(line)) stop('failedSave', line);
        opts.onStderrLine?.(line);
      },
    });
    this.running.add(child);
    const result = this.wrap(child, command, stopped);
    return { child, result };
  }

  /** Runs restic to its end; resolves with its output, rejects with a mapped IbError. */
  async run(args: string[], opts: ResticRunOptions = {}): Promise<ProcessResult> {
    await loadProcessSupport();
    return this.start(args, opts).result;
  }

  private async wrap(child: ChildProcess, command: string, stopped: Stopped = {}): Promise<ProcessResult> {
    let r: ProcessResult;
    try {
      r = await child.done;
    } catch (e) {
      if (e instanceof ProgramNotFoundError) throw this.notFound();
      throw e;
    } finally {
      this.running.delete(child);
    }
    // Stopped for any reason (see Stopped), restic's own exit code does not count.
    if (Object.values(stopped).every((why) => why === undefined) && r.exitCode === 0) return r;
    if (this.interrupted) throw new InterruptedError(`restic ${command} was stopped`);
    throw resticFailure(r, { command, repo: this.repoLabel, secrets: this.secrets, ...(this.passwordSource ? { passwordSource: this.passwordSource } : {}), ...stopped });
  }

  /** Set once the run is interrupted (interruptAll): what restic then fails with is that. */
  private interrupted = false;

  /** The run is interrupted: every restic still running is stopped, and says so as an interrupt. */
  interruptAll(): Promise<void> {
    this.interrupted = true;
    return this.killAll();
  }

  /** Kills every restic this instance still runs and waits for them to go. */
  async killAll(): Promise<void> {
    const all = [...this.running];
    for (const c of all) c.kill();
    await Promise.all(all.map((c) => c.done.catch(() => undefined)));
  }
}
