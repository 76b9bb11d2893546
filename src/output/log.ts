import { appendFileSync, existsSync, mkdirSync, openSync, closeSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import type { Task, Ui } from '../core/run.js';
import { LOG_LEVELS, type LogLevel } from '../core/types.js';

export type Level = LogLevel;
/** Severity: the order of LOG_LEVELS. */
const severity = (l: Level) => LOG_LEVELS.indexOf(l);

export interface LogEvent {
  level: Level;
  message: string;
  resource?: string;
  operation?: string;
  bytes?: number;
  durationMs?: number;
  error?: string;
  hint?: string;
  /** HTTP status of an Incus request (debug level). */
  status?: number;
  /** A resource's outcome (`operation: result`): ok, failed, skipped, planned, removed, … */
  result?: string;
  /** The backup version a record is about. */
  version?: string;
  /** The run's exit code (the `end` record). */
  exitCode?: number;
  /** The run's counts of results by outcome (the `end` record of a run that had results). */
  counts?: Record<string, number>;
}

/**
 * JSON lines, one event per line, for the morning after. The file is private (0600) and is
 * rotated by size: FILE → FILE.1 → … → FILE.<keep>, the oldest dropped. Writes are synchronous
 * appends so that the last lines before a crash are on disk.
 */
/**
 * mkdir -p, one level at a time: Node 20's recursive mkdirSync never returns for a path under
 * /proc (it spins at full CPU, and no signal can stop a synchronous loop).
 */
function mkdirParents(dir: string): void {
  if (existsSync(dir)) return;
  const parent = dirname(dir);
  if (parent !== dir) mkdirParents(parent);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
}

export class JsonLog {
  /** Stamped on every record: two runs writing one file (a nightly backup and prune) stay apart. */
  readonly run = randomBytes(4).toString('hex');

  constructor(
    readonly file: string,
    readonly level: Level = 'info',
    readonly maxBytes = 10 << 20,
    readonly keep = 5,
  ) {
    // A directory that is not there yet is made (private, like the file): a nightly job's
    // `--log-file /var/log/incus-backup/nightly.jsonl` works on its first night.
    mkdirParents(dirname(file));
    closeSync(openSync(file, 'a', 0o600));
  }

  write(e: LogEvent): void {
    if (severity(e.level) < severity(this.level)) return;
    const line = JSON.stringify({ time: new Date().toISOString(), run: this.run, pid: process.pid, ...e }) + '\n';
    this.rotateIfNeeded(Buffer.byteLength(line));
    appendFileSync(this.file, line, { mode: 0o600 });
  }

  private rotateIfNeeded(incoming: number): void {
    let size = 0;
    try {
      size = statSync(this.file).size;
    } catch {
      return;
    }
    if (size === 0 || size + incoming <= this.maxBytes) return;
    if (this.keep <= 0) {
      unlinkSync(this.file);
      return;
    }
    const oldest = `${this.file}.${this.keep}`;
    if (existsSync(oldest)) unlinkSync(oldest);
    for (let i = this.keep - 1; i >= 1; i--) if (existsSync(`${this.file}.${i}`)) renameSync(`${this.file}.${i}`, `${this.file}.${i + 1}`);
    renameSync(this.file, `${this.file}.1`);
  }
}

/** A Ui that also records what it shows (and the outcome of every task) in the log. */
export function loggingUi(ui: Ui & { stop(): void }, log: JsonLog): Ui & { stop(): void } {
  return {
    info(msg) {
      log.write({ level: 'info', message: msg });
      ui.info(msg);
    },
    warn(msg) {
      log.write({ level: 'warn', message: msg });
      ui.warn(msg);
    },
    task(label): Task {
      const inner = ui.task(label);
      const started = Date.now();
      let bytes = 0;
      return {
        phase(text) {
          log.write({ level: 'debug', message: text, resource: label, operation: text });
          inner.phase(text);
        },
        bytes(done, total) {
          bytes = done;
          inner.bytes(done, total);
        },
        end(ok, text) {
          log.write({
            level: ok === 'later' ? 'warn' : ok ? 'info' : 'error',
            message: ok === 'later' ? `later (${text ?? ''})` : ok ? `done${text ? ` (${text})` : ''}` : `failed${text ? `: ${text}` : ''}`,
            resource: label,
            ...(ok === false && text ? { error: text } : {}),
            bytes,
            durationMs: Date.now() - started,
          });
          inner.end(ok, text);
        },
      };
    },
    wait: (text, fn) => ui.wait(text, fn),
    stop: () => ui.stop(),
  };
}
