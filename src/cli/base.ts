import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import enquirer from 'enquirer';
import { stringify as stringifyYaml } from 'yaml';
import { openBackend } from '../backends/registry.js';
import type { Backend } from '../backends/types.js';
import { ExitCode, IbError, UsageError, type ExitCodeValue } from '../errors.js';
import { IncusApi } from '../incus/api.js';
import { IncusClient, resolveSocketPath } from '../incus/client.js';
import type { RunContext } from '../core/run.js';
import { createUi } from '../output/ui.js';
import { render, type Column, type OutputFormat } from '../output/format.js';
import type { IbContext } from './context.js';

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Rejects names that could escape the layout or are not Incus names (`/`, `..`, empty). */
export function checkName(what: string, name: string): string {
  if (!NAME.test(name) || name.includes('..')) {
    throw new UsageError(`invalid ${what} name "${name}"`, `${what} names are letters, digits, "-", "_" and "." and cannot contain "/" or ".."`);
  }
  return name;
}

/** Options every operational command shares, and the plumbing from them to the core. */
export abstract class BaseCommand extends Command<IbContext> {
  target = Option.String('--target', { description: 'Backup target: dir:/abs/path or restic:<repository> (env INCUS_BACKUP_TARGET)' });
  project = Option.String('--project', 'default', { description: 'Incus project (default: default)' });
  allProjects = Option.Boolean('--all-projects', false, { description: 'Work on every project' });
  dryRun = Option.Boolean('--dry-run', false, { description: 'Show what would happen; change nothing anywhere' });
  yes = Option.Boolean('-y,--yes', false, { description: 'Answer yes to confirmations' });
  force = Option.Boolean('--force', false, { description: 'Allow the riskiest steps without asking (implies --yes)' });
  quiet = Option.Boolean('-q,--quiet', false, { description: 'Only errors and the final summary' });
  output = Option.String('--output', 'table', {
    description: 'Result format: table, json or yaml',
    validator: t.isEnum(['table', 'json', 'yaml'] as const),
  });
  logLevel = Option.String('--log-level', 'info', {
    description: 'debug, info, warn or error',
    validator: t.isEnum(['debug', 'info', 'warn', 'error'] as const),
  });
  config = Option.String('--config', { description: 'Configuration file (YAML)' });
  parallel = Option.String('--parallel', '1', {
    description: 'Resources processed at once (>= 1)',
    validator: t.cascade(t.isNumber(), [t.isInteger(), t.isAtLeast(1)]),
  });
  noColor = Option.Boolean('--no-color', false, { description: 'No colours (also NO_COLOR)' });

  private cleanupFns: (() => Promise<void>)[] = [];

  abstract run(): Promise<ExitCodeValue | void>;

  /** Runs `fn` when the command ends, however it ends (locks, connections, progress bars). */
  protected onCleanup(fn: () => Promise<void>): void {
    this.cleanupFns.push(fn);
  }

  async execute(): Promise<number> {
    try {
      return (await this.run()) ?? ExitCode.ok;
    } catch (e) {
      return this.report(e);
    } finally {
      for (const fn of this.cleanupFns.reverse()) await fn().catch(() => undefined);
    }
  }

  /** User and environment faults: one line and a hint. Anything else is a bug: stack trace. */
  protected report(e: unknown): number {
    const err = this.context.stderr;
    if (e instanceof IbError) {
      err.write(`Error: ${e.message}\n`);
      if (e.hint) err.write(`Hint: ${e.hint}\n`);
      return e.exitCode;
    }
    err.write(`Bug: ${(e as Error)?.stack ?? String(e)}\nPlease report this.\n`);
    return ExitCode.failed;
  }

  get format(): OutputFormat {
    return this.output;
  }

  get useColor(): boolean {
    return !this.noColor && !this.context.env.NO_COLOR;
  }

  resolvedTarget(): string | undefined {
    return this.target ?? this.context.env.INCUS_BACKUP_TARGET;
  }

  openTarget(): Backend {
    const b = openBackend(this.resolvedTarget());
    this.cleanupFns.push(() => b.close());
    return b;
  }

  incus(): IncusApi {
    const log =
      this.logLevel === 'debug'
        ? (e: { method: string; path: string; status: number; ms: number }) =>
            this.context.stderr.write(`debug: incus ${e.method} ${e.path} → ${e.status} (${e.ms} ms)\n`)
        : undefined;
    const client = new IncusClient(resolveSocketPath(this.context.env), log);
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
    const ui = createUi({ stream: this.context.stderr, quiet: this.quiet, color: this.useColor });
    this.cleanupFns.push(async () => ui.stop());
    return { api, backend, ui, signal: this.context.signal };
  }

  /** One result object as json/yaml (for results that are not a list of rows). */
  printData(data: unknown): void {
    this.context.stdout.write(this.format === 'yaml' ? stringifyYaml(data) : JSON.stringify(data, null, 2) + '\n');
  }

  print<T>(rows: T[], columns: Column<T>[], toData?: (row: T) => unknown): void {
    this.context.stdout.write(render(rows, this.format, columns, toData));
  }

  /**
   * Asks before a destructive step. -y/--force answer yes; without a terminal there is nobody
   * to answer, so it refuses instead of waiting for input that cannot come.
   */
  async confirm(question: string): Promise<void> {
    if (this.yes || this.force) return;
    if (!this.context.interactive) {
      throw new UsageError(`${question} — refusing without confirmation: no terminal to ask on`, 'pass -y (or --yes) to confirm non-interactively');
    }
    const { ok } = await enquirer.prompt<{ ok: boolean }>({
      type: 'confirm',
      name: 'ok',
      message: question,
      initial: false,
      stdin: this.context.stdin as NodeJS.ReadStream,
      stdout: this.context.stderr as NodeJS.WriteStream,
    });
    if (!ok) throw new IbError('cancelled: nothing was changed', ExitCode.failed);
  }
}

/** Placeholder for commands whose issue has not landed yet: says so and fails. */
export abstract class NotImplementedCommand extends BaseCommand {
  async run(): Promise<ExitCodeValue> {
    this.context.stderr.write(`Error: "${this.path.join(' ')}" is not implemented yet\nHint: see ROADMAP.md for what is planned\n`);
    return ExitCode.failed;
  }
}
