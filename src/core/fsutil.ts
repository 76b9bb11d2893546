import { randomBytes } from 'node:crypto';
import { promises as fs, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Private by default: backups hold whole filesystems. */
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

export async function fsyncPath(path: string): Promise<void> {
  const fh = await fs.open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * The one place that writes small files: to a temporary name, fsync, rename, fsync the
 * directory. A crash leaves the old content or the new one, never a mix.
 */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  const tmp = join(dirname(path), `.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, 'wx', FILE_MODE);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.rename(tmp, path);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
  await fsyncPath(dirname(path));
}

export async function mkdirPrivate(path: string): Promise<void> {
  await fs.mkdir(path, { recursive: true, mode: DIR_MODE });
}

export async function exists(path: string): Promise<boolean> {
  try {
    await fs.lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/**
 * What is at a target's path: a directory, nothing yet, or something else (a file, or a file
 * where one of its parent directories should be). Other failures (no permission) are thrown.
 */
export function pathKind(path: string): 'directory' | 'missing' | 'other' {
  try {
    return statSync(path).isDirectory() ? 'directory' : 'other';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'missing';
    if (code === 'ENOTDIR') return 'other';
    throw e;
  }
}

/**
 * What an existing directory holds, as far as a target goes: a restic repository (its `config`
 * file and `keys/`), a directory target (its metadata.json), nothing (lost+found aside: a fresh
 * file system's mount point is empty; `alsoEmpty` names what else counts as nothing), or
 * something else. Pointing one kind of target at the
 * other, or a new target at a directory in use (`dir:/srv` for `dir:/srv/backups`), must be
 * refused rather than mixed in.
 */
export function directoryHolds(path: string, alsoEmpty: (entry: string) => boolean = () => false): 'restic' | 'dir-target' | 'empty' | 'other' {
  const isFile = (name: string) => {
    try {
      return statSync(join(path, name)).isFile();
    } catch {
      return false;
    }
  };
  if (isFile('config') && pathKind(join(path, 'keys')) === 'directory') return 'restic';
  if (isFile('metadata.json')) return 'dir-target';
  return readdirSync(path).every((e) => e === 'lost+found' || alsoEmpty(e)) ? 'empty' : 'other';
}

/** True when `pid` is a live process on this host. */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
