import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { DEFAULT_CONFIG_FILE, parseSettings, type FileSettings } from '../core/settings.js';
import { openBackend } from '../backends/registry.js';
import type { Backend } from '../backends/types.js';
import { ExitCode, fileSystemError, fsReason, IbError, InterruptedError, UsageError, type ExitCodeValue } from '../errors.js';
import { IncusApi } from '../incus/api.js';
import { IncusClient, resolveSocketPath } from '../incus/client.js';
import type { RunContext } from '../core/run.js';
import { LOG_LEVELS, type LogLevel } from '../core/types.js';
import { createUi } from '../output/ui.js';
import { JsonLog, loggingUi } from '../output/log.js';
import { render, toYaml, type Column, type OutputFormat } from '../output/format.js';
import { hintLines, resultColumns, rowLabel, totalsLine, type ResultRow } from './summary.js';
import type { IbContext } from './context.js';

// Instance names: Incus's rule (validate.IsHostname): 1-63 letters, digits and "-", not starting
// or ending with "-", not a number. A --target-name Incus would refuse is refused before the upload.
const NAME = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;

/**
 * What Incus refuses in a project name (projectValidateName: "/", spaces, "_", quotes), and
 * control characters. Incus takes the rest, commas, "=" and letters beyond ASCII included, and
 * --all-projects backs such projects up: --project must name them too.
 */
const NOT_IN_PROJECT = /[/\s_'"\u0000-\u001f\u007f]/;
/** What no name may contain: a path separator, control characters. */
const NOT_IN_NAME = /[/\u0000-\u001f\u007f]/;

/** Rejects names that could escape the layout or are not Incus names (`/`, `..`, empty). */
export function checkName(what: string, name: string): string {
  if (what === 'project') {
    if (!name || NOT_IN_PROJECT.test(name) || ['*', '.', '..'].includes(name)) {
      throw new UsageError(`invalid project name "${name}"`, 'project names cannot be "*", "." or "..", nor contain "/", spaces, "_" or quotes (`incus project list` shows them)');
    }
    return name;
  }
  if (what !== 'instance') {
    // Incus takes nearly any volume, pool, profile or network name (spaces, commas, non-ASCII letters).
    if (!name || name === '.' || name === '..' || NOT_IN_NAME.test(name)) {
      throw new UsageError(`invalid ${what} name "${name}"`, `${what} names cannot be empty, "." or "..", nor contain "/" or control characters`);
    }
    return name;
  }
  if (!NAME.test(name) || /^\d+$/.test(name)) {
    throw new UsageError(`invalid ${what} name "${name}"`, `Incus takes 1 to 63 letters, digits and "-" (not first or last), and not a number alone`);
  }
  return name;
}

/** The ansi-colors instance enquirer draws with. */
function enquirerColors(): { enabled: boolean } {
  const fromHere = createRequire(import.meta.url);
  return createRequire(fromHere.resolve('enquirer'))('ansi-colors') as { enabled: boolean };
}

/** Options every operational command shares, and the plumbing from them to the core. */
export abstract class BaseCommand extends Command<IbContext> {
  targetFlag = Option.String('--target', { description: 'Backup target: dir:/abs/path or restic:<repository> (env INCUS_BACKUP_TARGET)' });
  projectFlag = Option.String('--project', { description: 'Incus project (default: default; env INCUS_BACKUP_PROJECT)' });
  allProjectsFlag = Option.Boolean('--all-projects', { description: 'Work on every project' });
  dryRun = Option.Boolean('--dry-run', false, { description: 'Show what would happen; change nothing anywhere' });
  yes = Option.Boolean('-y,--yes', false, { description: 'Answer yes to confirmations' });
  force = Option.Boolean('--force', false, { description: 'Allow the riskiest steps without asking (implies --yes)' });
  quiet = Option.Boolean('-q,--quiet', false, { description: 'Only warnings, errors and the final summary' });
  output = Option.String('--output', 'table', {
    description: 'Result format: table, json or yaml',
    validator: t.isEnum(['table', 'json', 'yaml'] as const),
  });
  logLevelFlag = Option.String('--log-level', {
    description: 'debug, info, warn or error (env INCUS_BACKUP_LOG_LEVEL)',
    validator: t.isEnum(LOG_LEVELS),
  });
  logFileFlag = Option.String('--log-file', { description: 'Also write JSON lines to this file, rotated by size (env INCUS_BACKUP_LOG_FILE)' });
  config = Option.String('--config', { description: `Configuration file (YAML; env INCUS_BACKUP_CONFIG; default ${DEFAULT_CONFIG_FILE} if present)` });
  parallelFlag = Option.String('--parallel', {
    description: 'Resources processed at once (>= 1; default 1; env INCUS_BACKUP_PARALLEL)',
    validator: t.cascade(t.isNumber(), [t.isInteger(), t.isAtLeast(1)]),
  });
  passwordFile = Option.String('--password-file', { description: 'restic: read the repository password from this file (env INCUS_BACKUP_PASSWORD_FILE)' });
  noColor = Option.Boolean('--no-color', false, { description: 'No colours (also NO_COLOR)' });

  private cleanupFns: (() => Promise<void>)[] = [];
  private settingsCache?: { file?: string; values: FileSettings };

  /** The configuration file's values (none when there is no file). */
  settings(): { file?: string; values: FileSettings } {
    if (this.settingsCache) return this.settingsCache;
    const env = this.context.env;
    const explicit = this.config ?? env.INCUS_BACKUP_CONFIG;
    const file = explicit ?? (existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
    if (!file) return (this.settingsCache = { values: {} });
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read configuration file ${file}: ${fsReason(e)}`, 'check --config (or INCUS_BACKUP_CONFIG)');
    }
    return (this.settingsCache = { file, values: parseSettings(text, file) });
  }

  /** One effective value and where it came from: flag > environment > file > default. */
  resolve<T>(name: string, flag: T | undefined, envName: string, parse: (v: string) => T, fromFile: T | undefined, fallback: T): { value: T; source: string } {
    if (flag !== undefined) return { value: flag, source: `--${name}` };
    const env = this.context.env[envName];
    if (env !== undefined && env !== '') return { value: parse(env), source: envName };
    if (fromFile !== undefined) return { value: fromFile, source: this.settings().file! };
    return { value: fallback, source: 'default' };
  }

  private effectiveCache?: ReturnType<BaseCommand['computeEffective']>;

  /** Every setting with its source; computed once (flags and environment do not change). */
  effective() {
    return (this.effectiveCache ??= this.computeEffective());
  }

  private computeEffective() {
    const f = this.settings().values;
    const str = (v: string) => v;
    const bool = (v: string) => v === '1' || v.toLowerCase() === 'true' || v.toLowerCase() === 'yes';
    const parallel = (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`INCUS_BACKUP_PARALLEL="${v}" is not an integer >= 1`, 'unset it or fix it');
      return n;
    };
    const level = (v: string) => {
      if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new UsageError(`INCUS_BACKUP_LOG_LEVEL="${v}" is not debug, info, warn or error`, 'unset it or fix it');
      return v as LogLevel;
    };
    if (f.parallel !== undefined && f.parallel < 1) throw new UsageError(`${this.settings().file}: parallel must be >= 1`, 'fix the file');
    const project = this.resolve('project', this.projectFlag, 'INCUS_BACKUP_PROJECT', str, f.project, 'default');
    let allProjects = this.resolve('all-projects', this.allProjectsFlag, 'INCUS_BACKUP_ALL_PROJECTS', bool, f.all_projects, false);
    if (allProjects.value && project.source !== 'default') {
      // One project and every project: the more direct setting (flag > environment > file)
      // wins; given at the same level they contradict each other.
      const rank = (source: string) => (source.startsWith('--') ? 3 : source === this.settings().file ? 1 : 2);
      if (rank(project.source) === rank(allProjects.source)) {
        throw new UsageError(`${project.source} and ${allProjects.source} exclude each other`, 'name one project with --project, or every project with --all-projects');
      }
      if (rank(project.source) > rank(allProjects.source)) allProjects = { value: false, source: project.source };
    }
    return {
      target: this.resolve<string | undefined>('target', this.targetFlag, 'INCUS_BACKUP_TARGET', str, f.target, undefined),
      project,
      allProjects,
      parallel: this.resolve('parallel', this.parallelFlag, 'INCUS_BACKUP_PARALLEL', parallel, f.parallel, 1),
      logLevel: this.resolve('log-level', this.logLevelFlag, 'INCUS_BACKUP_LOG_LEVEL', level, f.log?.level, 'info' as const),
      logFile: this.resolve<string | undefined>('log-file', this.logFileFlag, 'INCUS_BACKUP_LOG_FILE', str, f.log?.file, undefined),
      passwordFile: this.resolve<string | undefined>('password-file', this.passwordFile, 'INCUS_BACKUP_PASSWORD_FILE', str, f.restic?.password_file, undefined),
    };
  }

  get project(): string {
    return this.effective().project.value;
  }
  get allProjects(): boolean {
    return this.effective().allProjects.value;
  }
  get parallel(): number {
    return this.effective().parallel.value;
  }
  get logLevel(): LogLevel {
    return this.effective().logLevel.value;
  }

  abstract run(): Promise<ExitCodeValue | void>;

  /** Runs `fn` when the command ends, however it ends (locks, connections, progress bars). */
  protected onCleanup(fn: () => Promise<void>): void {
    this.cleanupFns.push(fn);
  }

  /** When the command started, for the summary's totals. */
  readonly startedAt = Date.now();

  /** How the run ended, for the log's `end` record. */
  private exitCode?: number;
  /** The results' counts by outcome, once a summary was printed. */
  private counts?: Record<string, number>;

  async execute(): Promise<number> {
    try {
      // Opened first, whatever the command: a log file that cannot be written stops it at once.
      this.jsonLog();
      return (this.exitCode = (await this.run()) ?? ExitCode.ok);
    } catch (e) {
      return (this.exitCode = this.report(e));
    } finally {
      for (const fn of this.cleanupFns.reverse()) await fn().catch(() => undefined);
    }
  }

  /** User and environment faults: one line and a hint. Anything else is a bug: stack trace. */
  protected report(failure: unknown): number {
    const err = this.context.stderr;
    // A file system refusing (full, read-only, no permission) is the environment, not a bug.
    const e = fileSystemError(failure) ?? failure;
    const message = e instanceof Error ? e.message : String(e);
    this.logCache?.write({ level: 'error', message, error: e instanceof IbError ? message : `bug: ${message}`, ...(e instanceof IbError && e.hint ? { hint: e.hint } : {}) });
    if (e instanceof IbError) {
      err.write(`Error: ${e.message}\n`);
      if (e.hint) err.write(`Hint: ${e.hint}\n`);
      return e.exitCode;
    }
    err.write(`Bug: ${(e as Error)?.stack ?? String(e)}\nPlease report this.\n`);
    return ExitCode.failed;
  }

  get format(): OutputFormat {
    return this.planOnStderr ? 'table' : this.output;
  }

  get useColor(): boolean {
    return !this.noColor && !this.context.env.NO_COLOR;
  }

  resolvedTarget(): string | undefined {
    return this.effective().target.value;
  }

  /**
   * The restic password's source: --password-file, then INCUS_BACKUP_PASSWORD_FILE, then
   * restic's own variables (a shell's RESTIC_PASSWORD_FILE overrides the nightly configuration
   * file, as the environment does for every other setting), then the configuration file.
   */
  resticPassword(): { passwordFile?: string; source?: string } {
    const pf = this.effective().passwordFile;
    const env = this.context.env;
    if (pf.value && pf.source === '--password-file') return { passwordFile: pf.value, source: `--password-file ${pf.value}` };
    if (pf.value && pf.source === 'INCUS_BACKUP_PASSWORD_FILE') return { passwordFile: pf.value, source: `INCUS_BACKUP_PASSWORD_FILE (${pf.value})` };
    const own = ['RESTIC_PASSWORD_FILE', 'RESTIC_PASSWORD_COMMAND', 'RESTIC_PASSWORD'].find((k) => env[k]);
    if (own) return { source: own === 'RESTIC_PASSWORD_FILE' ? `RESTIC_PASSWORD_FILE (${env[own]})` : own };
    if (pf.value) return { passwordFile: pf.value, source: `restic.password_file (${pf.value}) in ${pf.source}` };
    return {};
  }

  openTarget(): Backend {
    const { passwordFile, source } = this.resticPassword();
    // restic refuses RESTIC_PASSWORD_FILE and RESTIC_PASSWORD_COMMAND together: it gets only
    // the one used (a password file of ours replaces all three, see resticEnv).
    const env = { ...this.context.env };
    const own = source?.split(' ')[0];
    if (own && /^RESTIC_PASSWORD/.test(own)) for (const k of ['RESTIC_PASSWORD_FILE', 'RESTIC_PASSWORD_COMMAND', 'RESTIC_PASSWORD']) if (k !== own) delete env[k];
    const b = openBackend(this.resolvedTarget(), {
      env,
      warn: (m) => this.ui().warn(m),
      confirm: (q) => this.confirm(q),
      ...(passwordFile ? { passwordFile } : {}),
      ...(source ? { passwordSource: source } : {}),
    });
    this.cleanupFns.push(() => b.close());
    const signal = this.context.signal;
    if (b.interrupt) {
      const stop = () => b.interrupt!();
      if (signal.aborted) stop();
      else signal.addEventListener('abort', stop, { once: true });
    }
    return b;
  }

  incus(): IncusApi {
    const file = this.jsonLog();
    const log =
      this.logLevel === 'debug'
        ? (e: { method: string; path: string; status: number; ms: number }) => {
            this.context.stderr.write(`debug: incus ${e.method} ${e.path} → ${e.status} (${e.ms} ms)\n`);
            file?.write({ level: 'debug', message: `incus ${e.method} ${e.path}`, operation: 'incus-request', durationMs: e.ms, status: e.status });
          }
        : undefined;
    const client = new IncusClient(resolveSocketPath(this.context.env), log, (msg) => this.ui().warn(msg));
    this.cleanupFns.push(() => client.close());
    return new IncusApi(client);
  }

  checkedProject(): string {
    return checkName('project', this.project);
  }

  /** The projects this run covers: --project, or every project with --all-projects. */
  async projects(api: IncusApi): Promise<string[]> {
    if (this.allProjects) return (await api.listProjects()).map((p) => p.name).sort();
    return [this.checkedProject()];
  }

  runContext(api: IncusApi, backend: Backend): RunContext & { ui: ReturnType<typeof createUi> } {
    return { api, backend, ui: this.ui(), signal: this.context.signal };
  }

  private uiCache?: ReturnType<typeof createUi>;

  /** Progress and messages on stderr, mirrored into the JSON log file when there is one. */
  ui(): ReturnType<typeof createUi> {
    if (this.uiCache) return this.uiCache;
    let ui = createUi({ stream: this.context.stderr, quiet: this.quiet, color: this.useColor });
    const log = this.jsonLog();
    if (log) ui = loggingUi(ui, log);
    this.cleanupFns.push(async () => ui.stop());
    return (this.uiCache = ui);
  }

  private logCache?: JsonLog | null;

  jsonLog(): JsonLog | undefined {
    if (this.logCache !== undefined) return this.logCache ?? undefined;
    const file = this.effective().logFile.value;
    const f = this.settings().values.log;
    try {
      this.logCache = file ? new JsonLog(file, this.logLevel, f?.max_size ?? 10 << 20, f?.keep ?? 5) : null;
    } catch (e) {
      this.logCache = null;
      throw new UsageError(`cannot write the log file ${file}: ${fsReason(e)}`, 'check --log-file (or INCUS_BACKUP_LOG_FILE, or log.file in the configuration file)');
    }
    if (this.logCache) {
      const log = this.logCache;
      log.write({ level: 'info', message: `start: incus-backup ${this.path.join(' ')}`, operation: this.path.join(' ') });
      this.cleanupFns.unshift(async () => {
        const code = this.exitCode ?? ExitCode.failed;
        log.write({
          level: code === ExitCode.ok ? 'info' : code === ExitCode.partial ? 'warn' : 'error',
          message: 'end',
          operation: this.path.join(' '),
          exitCode: code,
          durationMs: Date.now() - this.startedAt,
          ...(this.counts ? { counts: this.counts } : {}),
        });
      });
    }
    return this.logCache ?? undefined;
  }

  /**
   * Whether to print the plan. People see it before the prompt. With --output json|yaml a run
   * prints one document: the plan when the run ends without changing anything (`stopsHere`:
   * dry run, nothing to do, refused), the results otherwise.
   */
  showsPlan(stopsHere: boolean): boolean {
    if (this.format === 'table') return stopsHere || !this.unattendedQuiet();
    // No terminal to ask on and no -y: the run is refused, so the plan is its document.
    return stopsHere || (!this.context.interactive && !this.yes && !this.force);
  }

  /** Set while planForQuestion shows the plan: tables, on stderr. */
  private planOnStderr = false;

  /**
   * With --output json|yaml the document on stdout is the results, so a person about to be
   * asked (a terminal, no -y or --force) would answer blind: `show` prints the plan as a table
   * on stderr first. Tables print their plan anyway (showsPlan).
   */
  planForQuestion(stopsHere: boolean, show: () => void): void {
    if (this.output === 'table' || stopsHere || !this.context.interactive || this.yes || this.force) return;
    this.planOnStderr = true;
    try {
      show();
    } finally {
      this.planOnStderr = false;
    }
  }

  /** Where results and plans go: stdout, or stderr while planForQuestion shows a plan. */
  get out(): NodeJS.WritableStream {
    return this.planOnStderr ? this.context.stderr : this.context.stdout;
  }

  /**
   * --quiet with nobody asked (-y or --force), as in a cron job: the plan's table is left out,
   * and only warnings, errors and the summary are printed. A person asked to confirm sees it.
   */
  unattendedQuiet(): boolean {
    return this.quiet && (this.yes || this.force);
  }

  /** One result object as json/yaml (for results that are not a list of rows). */
  printData(data: unknown): void {
    this.context.stdout.write(this.format === 'yaml' ? toYaml(data) : JSON.stringify(data, null, 2) + '\n');
  }

  /**
   * The end-of-run summary: the rows on stdout (a table, or --output json|yaml data), then the
   * hints and the totals line on stderr, as verify and prune do; with --quiet the table is left
   * out and the failures are said on stderr. The totals line is on stderr whatever the format,
   * so a script redirecting stdout gets the same stream with or without --quiet.
   */
  printSummary(verb: string, rows: ResultRow[]): void {
    this.logResults(rows);
    const totals = `${verb}: ${totalsLine(rows, Date.now() - this.startedAt)}\n`;
    const hints = this.format === 'table' ? hintLines(rows).map((l) => `${l}\n`).join('') : '';
    if (this.format === 'table' && this.quiet) {
      for (const r of rows) if (r.status === 'failed') this.context.stderr.write(`failed: ${rowLabel(r)}: ${r.error}\n`);
    } else this.print(rows, resultColumns);
    this.context.stderr.write(hints + totals);
  }

  /**
   * One log record per resource with its outcome (`operation: result`), the failed ones with
   * their error and hint: the morning-after view of the run, whatever was on the terminal.
   */
  logResults(rows: { type?: string; project?: string; pool?: string; name?: string; status: string; timestamp?: string; size?: number; durationMs?: number; error?: string; hint?: string }[]): void {
    this.counts = {};
    for (const r of rows) this.counts[r.status] = (this.counts[r.status] ?? 0) + 1;
    const log = this.jsonLog();
    if (!log) return;
    for (const r of rows) {
      log.write({
        level: r.status === 'failed' || r.status === 'damaged' ? 'error' : r.status === 'unknown' ? 'warn' : 'info',
        message: `${r.status}${r.error ? `: ${r.error}` : ''}`,
        operation: 'result',
        resource: `${r.type ?? '?'} ${[r.project, r.pool, r.name].filter((x) => x !== undefined).join('/')}`,
        result: r.status,
        ...(r.timestamp ? { version: r.timestamp } : {}),
        ...(r.size !== undefined ? { bytes: r.size } : {}),
        ...(r.durationMs !== undefined ? { durationMs: r.durationMs } : {}),
        ...(r.error ? { error: r.error } : {}),
        ...(r.hint ? { hint: r.hint } : {}),
      });
    }
  }

  print<T>(rows: T[], columns: Column<T>[], toData?: (row: T) => unknown): void {
    this.out.write(render(rows, this.format, columns, toData));
  }

  /**
   * Asks before a destructive step. -y/--force answer yes; without a terminal there is nobody
   * to answer, so it refuses instead of waiting for input that cannot come.
   */
  async confirm(question: string, opts: { forceOnly?: boolean } = {}): Promise<void> {
    if (this.force || (this.yes && !opts.forceOnly)) return;
    if (!this.context.interactive) {
      throw new UsageError(`${question} — refusing without confirmation: no terminal to ask on`, 'pass -y (or --yes) to confirm non-interactively');
    }
    const { default: enquirer } = await import('enquirer');
    // No colours with --no-color or NO_COLOR: enquirer styles with ansi-colors, which reads
    // only FORCE_COLOR.
    if (!this.useColor) enquirerColors().enabled = false;
    const stdin = this.context.stdin as NodeJS.ReadStream;
    // End of input (Ctrl-D, the terminal going away) answers nothing. Node's readline closes on
    // it and pauses the input, which enquirer never notices: the prompt's promise was abandoned
    // and the process ended with exit 0, as if the run had succeeded. Input paused while the
    // question is still open is therefore a cancel (a real answer settles the prompt at once).
    let gone!: () => void;
    let timer: NodeJS.Timeout | undefined;
    const closed = new Promise<never>((_, reject) => {
      gone = () => {
        this.context.stderr.write('\n'); // ends the question's line
        reject(new IbError('cancelled: no answer (end of input); nothing was changed', ExitCode.failed));
      };
    });
    const paused = () => {
      clearTimeout(timer);
      timer = setTimeout(gone, 100);
    };
    stdin.on('pause', paused);
    stdin.once('end', gone);
    const asked = enquirer
      .prompt<{ ok: boolean }>({
        type: 'confirm',
        name: 'ok',
        message: question,
        initial: false,
        stdin,
        stdout: this.context.stderr as NodeJS.WriteStream,
        // A terminal that reports 0 columns (a pty nobody sized) made enquirer redraw forever.
        columns: (this.context.stderr as NodeJS.WriteStream).columns || 80,
      } as Parameters<typeof enquirer.prompt>[0])
      .catch((e: unknown) => {
        // Ctrl-C (or Esc) at the question: enquirer rejects with no error, only its empty answer.
        if (e instanceof Error) throw e;
        throw new InterruptedError('interrupted at the question: nothing was changed');
      });
    let ok: boolean;
    try {
      ({ ok } = await Promise.race([asked, closed]));
    } finally {
      clearTimeout(timer);
      stdin.off('pause', paused);
      stdin.off('end', gone);
    }
    if (!ok) throw new IbError('cancelled: nothing was changed', ExitCode.failed);
  }
}
