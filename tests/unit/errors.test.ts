import { describe, expect, it } from 'vitest';
import { fileSystemError, IbError } from '../../src/errors.js';

/** An error as Node's fs raises it. */
function fsError(code: string, syscall: string, path?: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: something, ${syscall}`), { code, syscall, errno: -1, ...(path ? { path } : {}) });
}

describe('file system errors', () => {
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
