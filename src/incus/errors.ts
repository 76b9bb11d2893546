import { ExitCode, fileSystemError, IbError, STORAGE_FULL } from '../errors.js';

/**
 * Incus's message on one line. A command Incus ran that failed comes with all its output
 * (`Failed to run: tar -xf - --xattrs-include=* … exit status 2 (tar: rootfs/a: Cannot write: No
 * space left on device⏎tar: rootfs/b: …)`): that becomes the command's name and the first line
 * it wrote, or its first about a full disk (`tar failed: rootfs/a: Cannot write: No space left
 * on device`). Other line breaks become "; ", and a message that is still very long is cut.
 */
export function oneLineMessage(msg: string): string {
  const run = /Failed to run: (\S+)[^]*?: exit status \d+ \(([^]*)\)\s*$/.exec(msg);
  if (run) {
    const command = run[1]!.split('/').pop()!;
    const lines = run[2]!.split('\n').map((l) => l.trim()).filter(Boolean);
    // A full disk is the usual cause, but tar may first complain of a short write.
    const first = lines.find((l) => STORAGE_FULL.test(l)) ?? lines[0] ?? '';
    msg = `${msg.slice(0, run.index)}${command} failed: ${first.startsWith(`${command}: `) ? first.slice(command.length + 2) : first}`;
  }
  const line = msg.split('\n').map((l) => l.trim()).filter(Boolean).join('; ');
  return line.length > 400 ? `${line.slice(0, 399)}…` : line;
}

/**
 * A project's limits.instances or limits.* aggregate refused a new instance or volume, or its
 * limits.disk budget an upload (an import stops taking bytes half-way).
 */
const PROJECT_LIMIT = /Reached maximum (number of instances|aggregate value)|exceeding quota of/;
/** A restricted project refused a snapshot or a backup (restricted.snapshots / restricted.backups). */
const RESTRICTED = /doesn't allow for (snapshot|backup) creation/;

/**
 * A project refused an instance's volatile keys (its UUIDs, cloud-init instance-id, idmaps):
 * Incus 6.0 checks them in every project with restrictions or any `limits.*` key, unless it
 * allows low-level options (see core/identity.ts).
 */
export const VOLATILE_REFUSED = /(Changing|Setting) "volatile\.[^"]+" on \S+ "[^"]*" in project "[^"]*" is forbidden/;

function hintFor(serverMessage: string): string | undefined {
  if (STORAGE_FULL.test(serverMessage)) {
    // Incus stages every export and every uploaded import as a file in its backups directory.
    if (/\/backups\//.test(serverMessage)) {
      return "the Incus host's backups directory is full: Incus stages each backup and each restore there as a whole file (/var/lib/incus/backups, or the volume storage.backups_volume names); free space there or give it a bigger volume (`incus config set storage.backups_volume POOL/VOLUME`)";
    }
    // A volume's own size is a quota on btrfs and zfs: a copy of one that holds more than its
    // size (written before the quota, or past it) fails so, however empty the pool.
    if (/quota exceeded/i.test(serverMessage)) {
      return "a quota is exceeded: a volume's `size` (a quota on btrfs and zfs pools) smaller than what it holds, or a full storage pool; raise the size (`incus storage volume set POOL VOLUME size=…`, or the root disk's size) or free space (`incus storage info POOL`)";
    }
    return 'a storage pool on the Incus host is full: free space in it (`incus storage info POOL`); a backup needs room there for its temporary copy, a restore can go to another pool (--pool-map)';
  }
  if (PROJECT_LIMIT.test(serverMessage)) {
    return "the project's limits leave no room for one more: a point-in-time backup of a running instance makes a temporary copy in its project (--no-snapshot does not), and a restore imports beside the current instance before replacing it; raise the limit (`incus project set PROJECT limits.…`) or restore into another project (--project-map)";
  }
  if (VOLATILE_REFUSED.test(serverMessage)) {
    return 'the project refuses volatile keys, as Incus does in a project with restrictions or any limits.* key: let it take them (`incus project set PROJECT restricted.containers.lowlevel=allow`, or restricted.virtual-machines.lowlevel), or use another project (--project-map)';
  }
  const blocked = RESTRICTED.exec(serverMessage);
  if (blocked) {
    return blocked[1] === 'snapshot'
      ? 'the project forbids snapshots (restricted.snapshots=block), and a point-in-time backup of a running instance or of a volume takes one for a moment: allow them (`incus project set PROJECT restricted.snapshots=allow`) or back up with --no-snapshot (not point-in-time)'
      : 'the project forbids backups (restricted.backups=block, the default of a restricted project), which every backup asks Incus for: allow them (`incus project set PROJECT restricted.backups=allow`)';
  }
  return undefined;
}

/** An error answered by the Incus server; keeps the server's own message and HTTP status. */
export class IncusError extends IbError {
  constructor(
    readonly status: number,
    readonly serverMessage: string,
    readonly method: string,
    readonly path: string,
  ) {
    super(`Incus: ${oneLineMessage(serverMessage)}`, ExitCode.failed, hintFor(serverMessage));
    this.name = 'IncusError';
  }

  get notFound(): boolean {
    return this.status === 404;
  }
}

/** The socket is missing, refused or not ours to use: an environment problem, not a bug. */
/** For `.catch()`: what Incus does not have is nothing to do; anything else goes on. */
export function ignoreNotFound(e: unknown): void {
  if (e instanceof IncusError && e.notFound) return;
  throw e;
}

export class IncusConnectionError extends IbError {
  /** `gone`: no daemon listens there (the socket is missing or refuses), as during a restart. */
  constructor(
    message: string,
    hint: string,
    cause?: unknown,
    readonly gone = false,
  ) {
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
