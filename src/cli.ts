import { Builtins, Cli } from 'clipanion';
import { dirBackendFactory } from './backends/dir/index.js';
import { registerBackend } from './backends/registry.js';
import { resticBackendFactory } from './backends/restic/index.js';
import { BackupAllCommand, BackupConfigCommand, BackupImagesCommand, BackupInstancesCommand, BackupVolumesCommand } from './cli/commands/backup.js';
import { RestoreImagesCommand } from './cli/commands/images.js';
import { ListCommand } from './cli/commands/list.js';
import { ProtectCommand, PruneCommand, UnprotectCommand, VerifyCommand } from './cli/commands/maintenance.js';
import {
  RestoreAllCommand,
  RestoreInstanceCommand,
  RestoreInstancesCommand,
  RestoreVolumeCommand,
  RestoreVolumesCommand,
} from './cli/commands/restore.js';
import { ConfigShowCommand, RestoreConfigCommand } from './cli/commands/config.js';
import type { IbContext } from './cli/context.js';
import { unbreakableSteps } from './core/run.js';
import { ExitCode } from './errors.js';
import { toolVersion } from './version.js';
import { namespaceOf, overview, syntaxError, withPlaceholders } from './cli/help.js';

registerBackend(dirBackendFactory);
registerBackend(resticBackendFactory);

/** Every command; buildCli registers those under the command line's first word, help.ts lists them. */
const ALL_COMMANDS = [
  BackupInstancesCommand,
  BackupVolumesCommand,
  BackupConfigCommand,
  BackupImagesCommand,
  BackupAllCommand,
  RestoreInstanceCommand,
  RestoreInstancesCommand,
  RestoreVolumeCommand,
  RestoreVolumesCommand,
  RestoreConfigCommand,
  RestoreImagesCommand,
  ConfigShowCommand,
  RestoreAllCommand,
  ListCommand,
  VerifyCommand,
  PruneCommand,
  ProtectCommand,
  UnprotectCommand,
];

/**
 * `colors`: whether help and usage errors may use escape codes. Given here, because clipanion's
 * help command otherwise decides from the terminal type alone, and wrote them into pipes.
 *
 * `verb`: the command line's first word. Only the commands under it are registered (every
 * command when it names none, so that help and "did you mean" see them all): clipanion builds
 * one parser over the options of every registered command, which took 15–30 ms of each start.
 */
export function buildCli(colors = false, verb?: string): Cli<IbContext> {
  const cli = new Cli<IbContext>({ binaryLabel: 'incus-backup', binaryName: 'incus-backup', binaryVersion: toolVersion, enableColors: colors });
  const all = ALL_COMMANDS;
  const versionOnly = verb === '--version' || verb === '-v';
  const mine = all.filter((c) => c.paths?.some((p) => p[0] === verb));
  for (const c of versionOnly ? [] : mine.length ? mine : all) cli.register(c);
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);
  return cli;
}

/**
 * Entry point. The first SIGINT/SIGTERM/SIGHUP aborts the run's signal so streams stop and
 * cleanup runs (exit 130); a second one exits at once, unless an unbreakable step (a replace's
 * swap) is running: then it takes a third.
 */
export async function main(argv: string[]): Promise<void> {
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      const busy = unbreakableSteps();
      if (busy.length && signals === 2) {
        process.stderr.write(`\n${sig}: still ${busy.join(', ')}: quitting now would leave it half-done (press Ctrl-C once more to quit anyway)\n`);
        return;
      }
      process.exit(ExitCode.interrupted);
    }
    // Ctrl-C is a person at a terminal; SIGTERM or SIGHUP a service manager or a closed session.
    process.stderr.write(`\n${sig}: stopping and cleaning up${sig === 'SIGINT' ? ' (press Ctrl-C again to quit at once)' : ` (another ${sig} quits at once)`}\n`);
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A closed terminal or ssh session: stop and clean up too, instead of dying half-way.
  process.on('SIGHUP', onSignal);
  // A reader that went away (`| head`, a log pipe that died) must not kill a run before its
  // cleanup: what would have been printed is dropped, and the work goes on to its end.
  for (const out of [process.stdout, process.stderr]) {
    out.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e;
    });
  }
  const colors = !!process.stdout.isTTY && !process.env.NO_COLOR;
  // `incus-backup help restore` is `incus-backup restore --help`.
  const words = argv[0] === 'help' ? [...argv.slice(1), '--help'] : argv;
  const cli = buildCli(colors, words[0]);
  let context = {
    ...Cli.defaultContext,
    colorDepth: colors ? process.stdout.getColorDepth() : 1,
    env: process.env,
    signal: controller.signal,
    interactive: !!process.stdin.isTTY && !!process.stderr.isTTY,
  };
  // Parse first: clipanion reports bad options and arguments with exit 1, ours is 2 (usage).
  let command;
  try {
    command = cli.process(words, context);
  } catch (e) {
    // A group alone (`incus-backup backup`), or help asked for with options clipanion cannot
    // place: the overview of what the words name, as with no command at all.
    const group = namespaceOf(words, ALL_COMMANDS);
    if (group) {
      process.stderr.write(overview(ALL_COMMANDS, group, toolVersion));
      process.exitCode = ExitCode.usage;
      return;
    }
    // The options each registered command takes, as its help lists them (`-y,--yes` is two).
    const optionsOf = (path: string[]) =>
      cli
        .definitions()
        .filter((d) => d.path === `incus-backup ${path.join(' ')}`)
        .flatMap((d) => d.options.flatMap((o) => o.definition.split(' ')[0]!.split(',')));
    const said = syntaxError(e, words, ALL_COMMANDS, optionsOf);
    process.stderr.write(said ? `Error: ${said.message}\nHint: ${said.hint}\n` : cli.error(e, { colored: context.colorDepth > 1 }));
    process.exitCode = ExitCode.usage;
    return;
  }
  if (command.constructor.name === 'HelpCommand') {
    // One command: clipanion's help, with readable placeholders. None or several (no command,
    // `backup --help`): the overview of those commands, each once.
    if ((command as unknown as { commands?: number[] }).commands?.length !== 1) {
      const text = overview(ALL_COMMANDS, command.path.filter((w) => !w.startsWith('-')), toolVersion);
      // No command at all is a usage error (a cron line missing its verb must not pass).
      (argv.length ? process.stdout : process.stderr).write(text);
      process.exitCode = argv.length ? ExitCode.ok : ExitCode.usage;
      return;
    }
    const out = process.stdout;
    context = { ...context, stdout: Object.assign(Object.create(out) as typeof out, { write: (s: string) => out.write(withPlaceholders(s)) }) };
  }
  const code = await cli.run(command, context);
  process.exitCode = controller.signal.aborted && code === 0 ? ExitCode.interrupted : code;
}
