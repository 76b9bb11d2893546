import { describe, expect, it } from 'vitest';
import { fileSystemError, fsReason, IbError } from '../../src/errors.js';
import { IncusError, oneLineMessage } from '../../src/incus/errors.js';

/** An error as Node's fs raises it. */
function fsError(code: string, syscall: string, path?: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: something, ${syscall}`), { code, syscall, errno: -1, ...(path ? { path } : {}) });
}

describe('file system errors', () => {
  it("names a volume's size as the quota a btrfs copy can exceed, not only a full pool", () => {
    const e = new IncusError(500, 'Create instance from copy: btrfs failed: ERROR: cannot write: Disk quota exceeded', 'WAIT', '/1.0/operations/x');
    expect(e.hint).toMatch(/^a quota is exceeded: a volume's `size` \(a quota on btrfs and zfs pools\)/);
    expect(new IncusError(500, 'write: no space left on device', 'WAIT', '/1.0/operations/x').hint).toMatch(/^a storage pool on the Incus host is full/);
  });

  it('words a refused path for a message that names the file', () => {
    expect(fsReason(fsError('ENOENT', 'mkdir', '/proc/x'))).toBe('no such file or directory (/proc/x)');
    expect(fsReason(fsError('EACCES', 'open', '/etc/ib.yaml'))).toBe('permission denied (/etc/ib.yaml)');
    expect(fsReason(new Error('odd'))).toBe('odd');
  });

  it('says what the file system refused, where, and what to do', () => {
    const full = fileSystemError(fsError('ENOSPC', 'write'), 'target dir:/srv/b', 'nothing half-done was kept');
    expect(full).toBeInstanceOf(IbError);
    expect(full!.message).toBe('target dir:/srv/b: no space left on the device');
    expect(full!.exitCode).toBe(1);
    expect(full!.hint).toBe('free space there (old backups go with `incus-backup prune`) and run again; nothing half-done was kept');
    const ro = fileSystemError(fsError('EROFS', 'open', '/srv/b/.lock'));
    expect(ro!.message).toBe('the file system is read-only (/srv/b/.lock)');
    expect(ro!.hint).toMatch(/remount it read-write/);
    for (const code of ['EDQUOT', 'EACCES', 'EPERM', 'EIO']) expect(fileSystemError(fsError(code, 'open'))).toBeInstanceOf(IbError);
  });

  it('leaves other errors alone', () => {
    expect(fileSystemError(fsError('ENOENT', 'open', '/x'))).toBeUndefined();
    // A code without a system call is not a file system's answer (e.g. a library's own error).
    expect(fileSystemError(Object.assign(new Error('x'), { code: 'EACCES' }))).toBeUndefined();
    expect(fileSystemError('ENOSPC')).toBeUndefined();
  });
});

describe('Incus errors', () => {
  // As Incus 6.0 answered a restore onto a pool too small for it.
  const unpack =
    'Create instance from backup: Error starting unpack: Failed to run: tar -xf - --xattrs-include=* --restrict --force-local --numeric-owner -C /var/lib/incus/storage-pools/tiny/containers/p_ibtmp-1-2 --strip-components=2 backup/container: exit status 2 (tar: rootfs/big2: Cannot write: No space left on device\ntar: rootfs/bin/busybox: Cannot write: No space left on device\ntar: Exiting with failure status due to previous errors)';

  it('puts a failed command of Incus on one line: its name and the first line it wrote', () => {
    expect(oneLineMessage(unpack)).toBe('Create instance from backup: Error starting unpack: tar failed: rootfs/big2: Cannot write: No space left on device');
    expect(oneLineMessage('first\n  second\n\nthird')).toBe('first; second; third');
    expect(oneLineMessage('Instance not found')).toBe('Instance not found');
    const long = oneLineMessage('x'.repeat(1000));
    expect(long).toHaveLength(400);
    expect(long.endsWith('…')).toBe(true);
  });

  it('says what to do about a full storage pool, and keeps the server message whole', () => {
    const e = new IncusError(400, unpack, 'WAIT', '/1.0/operations/x');
    expect(e.message).toBe('Incus: Create instance from backup: Error starting unpack: tar failed: rootfs/big2: Cannot write: No space left on device');
    expect(e.hint).toMatch(/^a storage pool on the Incus host is full/);
    expect(e.serverMessage).toBe(unpack);
    expect(new IncusError(404, 'Instance not found', 'GET', '/1.0/instances/x').hint).toBeUndefined();
    // Incus's staging area is not a pool: the hint says where it is.
    const staging = 'Create instance from backup: write /var/lib/incus/backups/incus_backup_1234: no space left on device';
    expect(new IncusError(400, staging, 'POST', '/1.0/instances').hint).toMatch(/^the Incus host's backups directory is full: .*storage\.backups_volume/);
  });

  it("says why a project's limits matter to a backup or a restore", () => {
    for (const msg of [
      'Reached maximum number of instances in project "p1"',
      'Reached maximum aggregate value "2GiB" for "limits.memory" in project "p1"',
      'reached 10518528 bytes, exceeding quota of 10485760',
    ]) {
      expect(new IncusError(400, msg, 'POST', '/1.0/instances').hint).toMatch(/^the project's limits leave no room for one more: a point-in-time backup .*--no-snapshot.*\(--project-map\)$/);
    }
    expect(new IncusError(403, 'Project "rs" doesn\'t allow for snapshot creation', 'POST', '/1.0/instances/a/snapshots').hint).toMatch(
      /^the project forbids snapshots \(restricted\.snapshots=block\).* or back up with --no-snapshot \(not point-in-time\)$/,
    );
    expect(new IncusError(403, 'Project "rs" doesn\'t allow for backup creation', 'POST', '/1.0/instances/a/backups').hint).toMatch(
      /^the project forbids backups \(restricted\.backups=block, the default of a restricted project\).*restricted\.backups=allow`\)$/,
    );
  });
});
