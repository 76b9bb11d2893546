/**
 * What the command line says when it is not a command to run: the overview of the commands,
 * readable placeholders in a command's help, and one-line errors for what clipanion cannot parse
 * (its own text lists every candidate command with every option: kilobytes for one typo).
 */

/** A registered command class, as far as help goes. */
export interface CommandInfo {
  paths?: string[][];
  usage?: { category?: string; description?: string };
}

/** What an option's value is, in help; clipanion writes `#0` for every one. */
const PLACEHOLDERS: Record<string, string> = {
  '--target': 'URI',
  '--project': 'NAME',
  '--output': 'FORMAT',
  '--log-level': 'LEVEL',
  '--log-file': 'FILE',
  '--config': 'FILE',
  '--parallel': 'N',
  '--password-file': 'FILE',
  '--compression': 'ALGORITHM',
  '--lock-wait': 'DURATION',
  '--version': 'TIMESTAMP',
  '--keep-within': 'DURATION',
  '--read-data-subset': 'SUBSET',
  '--target-name': 'NAME',
  '--project-map': 'OLD=NEW',
  '--pool-map': 'OLD=NEW',
  '--profile-map': 'OLD=NEW',
  '--network-map': 'OLD=NEW',
};

/** Replaces clipanion's `#0` after each option by what the option takes (`N` for the --keep-* counts). */
export function withPlaceholders(text: string): string {
  const named = text.replace(/((?:-[\w-]+,)*(--[\w-]+)) #0/g, (_all, names: string, long: string) => `${names} ${PLACEHOLDERS[long] ?? (long.startsWith('--keep') ? 'N' : 'VALUE')}`);
  // The option table's descriptions line up again (the placeholders are longer than `#0`).
  // On a terminal clipanion sets the padded definition in bold.
  const row = /^ {2}(\x1b\[1m)?(-\S+(?: [A-Z=]+)?) *(\x1b\[22m)? {2,}(\S.*)$/;
  const rows = named.split('\n');
  const width = Math.max(0, ...rows.map((l) => row.exec(l)?.[2]!.length ?? 0));
  return rows
    .map((l) => l.replace(row, (_all, bold: string | undefined, def: string, unbold: string | undefined, description: string) => `  ${bold ?? ''}${def.padEnd(width)}${unbold ?? ''}    ${description}`))
    .join('\n');
}

const CATEGORIES = ['Backup', 'Restore', 'Inspect', 'Maintenance'];

/**
 * The commands under `prefix` (all for none), one line each under their category, the first
 * of each command's paths only (`backup instance` is `backup instances`).
 */
export function overview(commands: CommandInfo[], prefix: string[], version: string): string {
  const under = commands.filter((c) => c.paths?.some((p) => prefix.every((w, i) => p[i] === w)));
  const rows = under.map((c) => ({ path: c.paths![0]!.join(' '), category: c.usage?.category ?? '', text: c.usage?.description ?? '' }));
  const width = Math.max(...rows.map((r) => r.path.length)) + 2;
  const out = [`incus-backup ${version}: back up Incus instances, volumes and config into restic or a directory`, '', `Usage: incus-backup ${prefix.length ? prefix.join(' ') : '<command>'} ... [options]`, ''];
  for (const category of [...CATEGORIES, ...new Set(rows.map((r) => r.category).filter((c) => !CATEGORIES.includes(c)))]) {
    const mine = rows.filter((r) => r.category === category).sort((a, b) => a.path.localeCompare(b.path));
    if (!mine.length) continue;
    out.push(category || 'Other');
    for (const r of mine) out.push(`  ${r.path.padEnd(width)}${r.text}`);
    out.push('');
  }
  out.push('`incus-backup COMMAND --help` shows a command\'s options and examples; the README has the whole guide.', '');
  return out.join('\n');
}

/** The words of the command line that could name a command (up to the first option). */
function commandWords(argv: string[]): string[] {
  const i = argv.findIndex((a) => a.startsWith('-'));
  return i < 0 ? argv : argv.slice(0, i);
}

/**
 * The group the command line names without naming a command in it (`backup`, or `restore
 * --bogus --help`): its words, or undefined. Only when no command has exactly those words.
 */
export function namespaceOf(argv: string[], commands: CommandInfo[]): string[] | undefined {
  const words = commandWords(argv);
  const paths = commands.flatMap((c) => c.paths ?? []);
  const help = argv.includes('--help') || argv.includes('-h');
  if (!words.length) return help ? [] : undefined;
  if (paths.some((p) => p.length === words.length && p.every((w, i) => words[i] === w))) return undefined;
  return paths.some((p) => p.length > words.length && words.every((w, i) => p[i] === w)) ? words : undefined;
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const next = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = row[j]!;
      row[j] = next;
    }
  }
  return row[b.length]!;
}

/** The registered path the command line starts with (the longest), if any. */
function typedPath(commands: CommandInfo[], argv: string[]): string[] | undefined {
  const words = commandWords(argv);
  let best: string[] | undefined;
  for (const c of commands) for (const p of c.paths ?? []) if (p.every((w, i) => words[i] === w) && p.length > (best?.length ?? 0)) best = p;
  return best;
}

/**
 * One line and a hint for what clipanion could not parse, or undefined to let clipanion say it
 * (an ambiguity, or anything not foreseen here).
 */
export function syntaxError(e: unknown, argv: string[], commands: CommandInfo[], optionsOf?: (path: string[]) => string[]): { message: string; hint: string } | undefined {
  const err = e as { name?: string; message?: string; candidates?: { usage: string; reason: string | null }[] };
  const path = typedPath(commands, argv);
  const help = path ? `\`incus-backup ${path.join(' ')} --help\` shows its options and arguments` : '`incus-backup --help` lists the commands';
  const lower = (s: string) => s.charAt(0).toLowerCase() + s.slice(1).replace(/\.$/, '');
  // `--keep-daily -1`: the parser takes -1 for an option; `=` keeps it a value.
  const dashValue = (reason: string) => {
    const option = /^Not enough arguments to option (\S+?)\.?$/.exec(reason)?.[1];
    const next = option ? argv[argv.indexOf(option) + 1] : undefined;
    return option && next && /^-\d/.test(next) ? { message: `${option} ${next}: a value that starts with "-" is read as an option`, hint: `write it as ${option}=${next}` } : undefined;
  };
  if (err.name === 'UsageError' && err.message) return dashValue(err.message.split('\n')[0]!) ?? { message: withPlaceholders(lower(err.message.split('\n')[0]!)), hint: help };
  if (err.name !== 'UnknownSyntaxError') return undefined;
  const reasons = (err.candidates ?? []).filter((c) => c.reason);
  if (reasons.length) {
    // The candidate that is the typed command, else the first that got as far as a reason.
    const mine = reasons.find((c) => path && c.usage.startsWith(`incus-backup ${path.join(' ')} `)) ?? reasons[0]!;
    // Named by what was typed: a candidate's usage may be a command nobody asked for.
    const where = path?.join(' ');
    const dashed = dashValue(mine.reason!);
    if (dashed) return dashed;
    // A mistyped option: the nearest the command has.
    const option = /^Unsupported option name \("([^"]+)"\)/.exec(mine.reason!)?.[1];
    if (option && path && optionsOf) {
      const near = optionsOf(path)
        .map((o) => ({ o, d: distance(option, o) }))
        .filter((x) => x.d <= Math.max(2, Math.floor(option.length / 4)))
        .sort((a, b) => a.d - b.d || a.o.localeCompare(b.o));
      const best = near.filter((x) => x.d === near[0]?.d).map((x) => x.o);
      return { message: `${where}: unknown option ${option}`, hint: best.length ? `did you mean ${best.join(' or ')}? ${help}` : help };
    }
    return { message: `${where ? `${where}: ` : ''}${lower(mine.reason!)}`, hint: help };
  }
  // No command matched at all: name the nearest one.
  const words = commandWords(argv);
  const all = [...new Set(commands.flatMap((c) => (c.paths ?? []).map((p) => p.join(' '))))];
  const typed = words.join(' ');
  const depth = all.some((p) => p.split(' ')[0] === words[0]) ? 2 : 1;
  const scored = all
    .map((p) => ({ p, d: distance(words.slice(0, depth).join(' '), p.split(' ').slice(0, depth).join(' ')) }))
    .filter((x) => x.d <= 2)
    .sort((a, b) => a.d - b.d || a.p.localeCompare(b.p));
  const near = [...new Set(scored.filter((x) => x.d === scored[0]?.d).map((x) => x.p.split(' ').slice(0, depth).join(' ')))];
  return {
    // The command words only: `restore instanse web` names `restore instanse`.
    message: `unknown command "${words.slice(0, depth).join(' ') || typed || argv.join(' ')}"`,
    hint: near.length ? `did you mean ${near.map((n) => `\`incus-backup ${n}\``).join(' or ')}? \`incus-backup --help\` lists the commands` : '`incus-backup --help` lists the commands',
  };
}
