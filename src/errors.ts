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
