/**
 * One error model for the whole tool. Faults of the user or the environment are `IbError`s:
 * they carry a one-line cause, a hint and an exit code, and are printed without a stack trace.
 * Anything else reaching the top is a bug and is printed with its stack.
 */
export const ExitCode = {
  ok: 0,
  failed: 1,
  usage: 2,
  partial: 3,
  interrupted: 130,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export class IbError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue = ExitCode.failed,
    readonly hint?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'IbError';
  }
}

/** Bad input: arguments, names, target strings, files the user pointed at. Exit 2. */
export class UsageError extends IbError {
  constructor(message: string, hint?: string) {
    super(message, ExitCode.usage, hint);
    this.name = 'UsageError';
  }
}

/** The run was stopped by SIGINT/SIGTERM after cleaning up. Exit 130. */
export class InterruptedError extends IbError {
  constructor(message = 'interrupted') {
    super(message, ExitCode.interrupted);
    this.name = 'InterruptedError';
  }
}

export function isIbError(e: unknown): e is IbError {
  return e instanceof IbError;
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** How Incus, restic and rest-server word a full storage (disk, quota, HTTP 507). */
export const STORAGE_FULL = /no space left|insufficient storage|quota exceeded/i;

/** What a file system's refusal means, and what to do about it. */
const FILE_SYSTEM_ERRORS: Record<string, [string, string]> = {
  ENOSPC: ['no space left on the device', 'free space there (old backups go with `incus-backup prune`) and run again'],
  EDQUOT: ['the disk quota is exceeded', 'raise the quota or free space there, and run again'],
  EROFS: ['the file system is read-only', 'remount it read-write, or use another target'],
  EACCES: ['permission denied', 'run incus-backup as a user that may read and write there (as root, like incusd)'],
  EPERM: ['operation not permitted', 'run incus-backup as a user that may read and write there (as root, like incusd)'],
  EIO: ['input/output error', 'the disk may be failing: check `dmesg`, then `incus-backup verify` the target'],
};

/** A file-system error in words (`no such file or directory: /x`), for messages that name a file. */
export function fsReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const words: Record<string, string> = {
    ENOENT: 'no such file or directory',
    ENOTDIR: 'a part of the path is not a directory',
    EISDIR: 'it is a directory',
    ...Object.fromEntries(Object.entries(FILE_SYSTEM_ERRORS).map(([k, [w]]) => [k, w])),
  };
  const said = err?.code ? words[err.code] : undefined;
  if (!said) return err instanceof Error ? err.message : String(e);
  return err.path ? `${said} (${err.path})` : said;
}

/**
 * A file system refusing a read or write (full, read-only, no permission, failing disk) as an
 * IbError: `where` (e.g. the target), the cause in words, the path when the error has one, and a
 * hint. Undefined for anything else.
 */
export function fileSystemError(e: unknown, where?: string, hint?: string): IbError | undefined {
  const err = e as NodeJS.ErrnoException;
  const known = err instanceof Error && typeof err.syscall === 'string' ? FILE_SYSTEM_ERRORS[err.code ?? ''] : undefined;
  if (!known) return undefined;
  const [what, fix] = known;
  return new IbError(`${where ? `${where}: ` : ''}${what}${err.path ? ` (${err.path})` : ''}`, ExitCode.failed, hint ? `${fix}; ${hint}` : fix, { cause: e });
}
