import { ExitCode, fileSystemError, IbError } from '../errors.js';

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

const CONNECTION_LOST = new Set(['UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/** The socket to Incus went away under a request (daemon restarted, connection reset). */
export function connectionLost(e: unknown): boolean {
  const err = e as NodeJS.ErrnoException & { name?: string };
  return CONNECTION_LOST.has(err?.code ?? '') || err?.name === 'SocketError';
}

/**
 * A stream to or from Incus that broke half-way (daemon restarted, socket closed), or whose other
 * end, the `target`, refused (disk full, read-only, failing) becomes an operational error naming
 * what was going on, instead of a raw socket or file error that looks like a bug. Anything else
 * is returned unchanged.
 */
export function streamFailure(e: unknown, during: string, target?: string): unknown {
  if (e instanceof IbError) return e;
  const disk = fileSystemError(e, target, 'nothing half-done was kept');
  if (disk) return disk;
  if (connectionLost(e)) {
    return new IbError(
      `lost the connection to Incus during ${during} (${(e as Error).message})`,
      ExitCode.failed,
      'check that incusd is still running (`incus admin waitready`); nothing half-done was kept',
      { cause: e },
    );
  }
  return e;
}
