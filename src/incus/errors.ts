import { ExitCode, IbError } from '../errors.js';

/** An error answered by the Incus server; keeps the server's own message and HTTP status. */
export class IncusError extends IbError {
  constructor(
    readonly status: number,
    readonly serverMessage: string,
    readonly method: string,
    readonly path: string,
  ) {
    super(`Incus: ${serverMessage}`, ExitCode.failed);
    this.name = 'IncusError';
  }

  get notFound(): boolean {
    return this.status === 404;
  }
}

/** The socket is missing, refused or not ours to use: an environment problem, not a bug. */
export class IncusConnectionError extends IbError {
  constructor(message: string, hint: string, cause?: unknown) {
    super(message, ExitCode.usage, hint, { cause });
    this.name = 'IncusConnectionError';
  }
}
