import { ExitCode, InterruptedError, IbError, type ExitCodeValue } from '../errors.js';
import type { Manifest } from '../core/manifest.js';
import { mapPool } from '../core/pool.js';
import { humanBytes, humanDuration, type Column } from '../output/format.js';

/** One line of the end-of-run summary, the same object for the table and for json/yaml. */
export interface ResultRow {
  type: string;
  project: string;
  name: string;
  pool?: string;
  status: 'ok' | 'failed' | 'skipped' | 'planned';
  action?: string;
  timestamp?: string;
  /** What the backup takes in the target (compressed, on a dir: target with --compression). */
  size?: number;
  /** The export tarball's own size: what was streamed from or to Incus. */
  archiveSize?: number;
  durationMs?: number;
  /** The backup's consistency mode (as `list` has it). */
  consistency?: string;
  /** restic: bytes the repository actually grew by (after deduplication). */
  dataAdded?: number;
  detail?: string;
  error?: string;
  /** What to do about `error`, when the error says. */
  hint?: string;
}

/** The bytes a row moved to or from Incus (the tarball), which rates are of. */
const streamed = (r: ResultRow) => r.archiveSize ?? r.size ?? 0;

export const resultColumns: Column<ResultRow>[] = [
  { header: 'TYPE', value: (r) => r.type },
  { header: 'PROJECT', value: (r) => r.project },
  { header: 'NAME', value: (r) => (r.pool ? `${r.pool}/${r.name}` : r.name) },
  { header: 'STATUS', value: (r) => r.status },
  { header: 'VERSION', value: (r) => r.timestamp ?? '' },
  { header: 'SIZE', value: (r) => (r.size !== undefined ? humanBytes(r.size) : '') },
  { header: 'TIME', value: (r) => (r.durationMs !== undefined ? humanDuration(r.durationMs) : '') },
  {
    header: 'RATE',
    value: (r) => (streamed(r) && r.durationMs ? `${humanBytes(Math.round((streamed(r) * 1000) / Math.max(r.durationMs, 1)))}/s` : ''),
  },
  {
    header: 'DETAIL',
    value: (r) => r.error ?? [r.detail ?? r.consistency ?? '', r.dataAdded !== undefined ? `${humanBytes(r.dataAdded)} new` : ''].filter(Boolean).join(', '),
  },
];

/**
 * Exit code of a run over many resources: an interrupt wins; a run whose only item failed
 * fails with that item's own error; otherwise some failures mean exit 3.
 */
export function settle(rows: ResultRow[], errors: unknown[]): ExitCodeValue {
  if (errors.some((e) => e instanceof InterruptedError)) throw errors.find((e) => e instanceof InterruptedError);
  if (errors.length === 0) return ExitCode.ok;
  if (rows.length === 1 && errors.length === 1) throw errors[0];
  return ExitCode.partial;
}

/**
 * Carries out `apply` on each item, `parallel` at a time (none started after `signal` aborts),
 * and gives one summary row per item, in order: `row(item)` with the time it took, or failed
 * with its error (instead of the row's detail), which also goes to `errors`.
 */
export async function applyAll<T>(
  work: T[],
  parallel: number,
  signal: AbortSignal,
  apply: (item: T, index: number) => Promise<void>,
  row: (item: T) => ResultRow,
  errors: unknown[],
): Promise<ResultRow[]> {
  const settled = await mapPool(
    work,
    parallel,
    async (item, index) => {
      const started = Date.now();
      await apply(item, index);
      return Date.now() - started;
    },
    signal,
  );
  return settled.map((r, i): ResultRow => {
    const base = row(work[i]!);
    if (r.status === 'fulfilled') return { ...base, durationMs: r.value };
    errors.push(r.reason);
    return failedRow(base, r.reason);
  });
}

/** `base` as a failed row: the error in place of its detail, and the error's hint. */
export function failedRow(base: ResultRow, reason: unknown): ResultRow {
  const { detail: _detail, ...rest } = base;
  const hint = reason instanceof IbError ? reason.hint : undefined;
  return { ...rest, status: 'failed', error: errorText(reason), ...(hint ? { hint } : {}) };
}

/**
 * One line per distinct hint of the failed rows, naming the rows it is for. A run with one row
 * gets none here: its error ends the run and is printed with its hint (settle).
 */
export function hintLines(rows: ResultRow[]): string[] {
  if (rows.length <= 1) return [];
  const byHint = new Map<string, string[]>();
  for (const r of rows) {
    if (r.status !== 'failed' || !r.hint) continue;
    byHint.set(r.hint, [...(byHint.get(r.hint) ?? []), rowLabel(r)]);
  }
  return [...byHint].map(([hint, labels]) => `Hint: ${hint} (${labels.join(', ')})`);
}

/** "instance P/NAME", "volume P/POOL/NAME". */
/** A backup's two sizes, named as every command's rows name them. */
export function sizes(m: Manifest): { size: number; archiveSize: number } {
  return { size: m.archive.storedSize, archiveSize: m.archive.size };
}

export function rowLabel(r: ResultRow): string {
  return `${r.type} ${r.project}/${r.pool ? `${r.pool}/` : ''}${r.name}`;
}

export function errorText(e: unknown): string {
  return e instanceof IbError || e instanceof Error ? e.message : String(e);
}

/** One closing line for people: counts, bytes moved, time and overall rate. */
export function totalsLine(rows: ResultRow[], elapsedMs: number): string {
  const count = (s: ResultRow['status']) => rows.filter((r) => r.status === s).length;
  const bytes = rows.reduce((n, r) => n + (r.status === 'ok' ? streamed(r) : 0), 0);
  const rate = elapsedMs > 0 ? ` (${humanBytes(Math.round((bytes * 1000) / elapsedMs))}/s)` : '';
  const failed = count('failed');
  return `${count('ok')} ok${failed ? `, ${failed} failed` : ''}${count('skipped') ? `, ${count('skipped')} skipped` : ''}; ${humanBytes(bytes)} in ${humanDuration(elapsedMs)}${rate}`;
}
