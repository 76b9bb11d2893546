import type { Duplex, Readable, Writable } from 'node:stream';
import type { execa as Execa } from 'execa';

/**
 * The one place that starts child processes. No shell, nothing read from our own stdin,
 * children killed if we exit, and a missing program reported as such rather than as a
 * generic spawn failure.
 */

export class ProgramNotFoundError extends Error {
  constructor(readonly program: string) {
    super(`${program}: program not found`);
    this.name = 'ProgramNotFoundError';
  }
}

export interface ProcessOptions {
  /** The child's whole environment: nothing is inherited that is not in here. */
  env: NodeJS.ProcessEnv;
  /** Fed to stdin, which is then closed; without it stdin is /dev/null. */
  input?: string | Uint8Array;
  /** Pipes the parent writes into, open in the child as fds 3, 4, ... */
  extraInputs?: number;
  /** Leave stdout to the caller as a stream instead of collecting it. */
  streamStdout?: boolean;
  /** Each line the child writes to stderr, as it arrives. */
  onStderrLine?: (line: string) => void;
  /** Aborting kills the child. */
  signal?: AbortSignal;
}

export interface ProcessResult {
  /** Undefined when the child was ended by a signal. */
  exitCode: number | undefined;
  signal: string | undefined;
  /** Collected stdout (empty with streamStdout). */
  stdout: string;
  /** The last 256 KiB of stderr. */
  stderr: string;
}

export interface ChildProcess {
  readonly stdout: Readable;
  /** Writable ends of the extra pipes, in fd order (fd 3 first). */
  readonly inputs: Writable[];
  /** Settles when the child has exited; rejects only with ProgramNotFoundError. */
  readonly done: Promise<ProcessResult>;
  /** SIGTERM now, SIGKILL if it is still there 5 s later. */
  kill(): void;
}

const STDERR_KEEP = 256 * 1024;

let execa: typeof Execa | undefined;

/**
 * Loads execa. It costs ~16 MiB and ~50 ms at start-up, and only restic targets and compressed
 * directory targets start child processes, so it is loaded on first need, not at start-up.
 */
export async function loadProcessSupport(): Promise<void> {
  execa ??= (await import('execa')).execa;
}

/** Starts a child; loadProcessSupport() must have been awaited before. */
export function startProcess(file: string, args: string[], opts: ProcessOptions): ChildProcess {
  if (!execa) throw new Error('startProcess() called before loadProcessSupport()');
  const extra = opts.extraInputs ?? 0;
  const stdin = opts.input !== undefined ? 'pipe' : 'ignore';
  const sub = execa(file, args, {
    env: opts.env,
    extendEnv: false,
    stdio: [stdin, 'pipe', 'pipe', ...Array<'pipe'>(extra).fill('pipe')],
    ...(opts.input !== undefined ? { input: opts.input } : {}),
    buffer: false,
    reject: false,
    cleanup: true,
    forceKillAfterDelay: 5000,
    ...(opts.signal ? { cancelSignal: opts.signal } : {}),
  });
  const stdout = sub.stdout as Readable;
  const stderrStream = sub.stderr as Readable;
  const inputs = Array.from({ length: extra }, (_, i) => sub.stdio[3 + i] as unknown as Writable);
  // The child may exit before reading everything; the exit status tells why, not EPIPE.
  for (const w of inputs) w.on('error', () => undefined);

  let out = '';
  if (!opts.streamStdout) stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
  let err = '';
  let partial = '';
  stderrStream.on('data', (d: Buffer) => {
    const s = d.toString('utf8');
    err = (err + s).slice(-STDERR_KEEP);
    if (!opts.onStderrLine) return;
    const lines = (partial + s).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) opts.onStderrLine(l);
  });

  let exited = false;
  // Once the child is gone, so are our ends of its extra inputs: a grandchild that outlived it
  // (restic's `--stdin-from-command` shell runs `cat`, which a killed restic leaves behind)
  // then reads EOF and exits, instead of holding this process open on a pipe nobody writes.
  const closeInputs = () => {
    for (const w of inputs) w.destroy();
  };
  const done = sub.then((r) => {
    exited = true;
    closeInputs();
    if ((r as { code?: string }).code === 'ENOENT' && r.exitCode === undefined) throw new ProgramNotFoundError(file);
    if (partial && opts.onStderrLine) opts.onStderrLine(partial);
    return { exitCode: r.exitCode, signal: r.signal, stdout: out, stderr: err };
  });

  return {
    stdout,
    inputs,
    done,
    kill() {
      if (!exited) sub.kill();
      closeInputs();
    },
  };
}

/**
 * A filter program as a Duplex (bytes in on stdin, out on stdout), e.g. a compressor. Its
 * stderr is ignored; a non-zero exit fails the stream.
 */
export async function filterProcess(file: string, args: string[]): Promise<Duplex> {
  await loadProcessSupport();
  return execa!(file, args, { buffer: false, stderr: 'ignore', cleanup: true }).duplex();
}
