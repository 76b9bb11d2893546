import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { acquireLock, LOCK_FILE, LockedError, type LockHolder } from '../../src/backends/dir/lock.js';
import { InterruptedError } from '../../src/errors.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'ib-lock-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const lockPath = () => join(root, LOCK_FILE);
const holder = (): LockHolder => JSON.parse(readFileSync(lockPath(), 'utf8')) as LockHolder;

/** The pid of a process that has certainly exited (and was reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  const pid = child.pid!;
  await new Promise((resolve) => child.on('exit', resolve));
  return pid;
}

function plantLock(h: Partial<LockHolder>): void {
  const full: LockHolder = { host: hostname(), pid: 1, startedAt: '2026-01-01T00:00:00.000Z', command: 'backup', token: 'planted', ...h };
  writeFileSync(lockPath(), JSON.stringify(full));
}

describe('directory target lock', () => {
  it('writes the holder into <root>/.lock and removes it on release', async () => {
    const release = await acquireLock(root, { purpose: 'prune', waitMs: 0 });
    const h = holder();
    expect(h).toMatchObject({ host: hostname(), pid: process.pid, command: 'prune' });
    expect(Date.parse(h.startedAt)).toBeGreaterThan(Date.now() - 60_000);
    await release();
    expect(existsSync(lockPath())).toBe(false);
    await release(); // twice is harmless
    // Nothing but the lock was ever left behind (temporary files are cleaned up).
    expect(existsSync(lockPath())).toBe(false);
  });

  it('fails at once for a second writer, naming host, pid and start time', async () => {
    const release = await acquireLock(root, { purpose: 'backup', waitMs: 0 });
    const first = holder();
    const err = await acquireLock(root, { purpose: 'prune', waitMs: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockedError);
    const msg = (err as LockedError).message;
    expect(msg).toContain('backup');
    expect(msg).toContain(`pid ${process.pid}`);
    expect(msg).toContain(`host ${hostname()}`);
    expect(msg).toContain(first.startedAt);
    expect((err as LockedError).exitCode).toBe(1);
    expect((err as LockedError).hint).toContain(lockPath());
    // The holder's lock is untouched.
    expect(holder().token).toBe(first.token);
    await release();
  });

  it('a live lock of this process counts as held (pid alive), not stale', async () => {
    plantLock({ pid: process.pid, token: 'mine-elsewhere' });
    await expect(acquireLock(root, { purpose: 'prune', waitMs: 0 })).rejects.toBeInstanceOf(LockedError);
    expect(holder().token).toBe('mine-elsewhere');
  });

  it('waits for the holder with waitMs and gets the lock once it is released', async () => {
    const release = await acquireLock(root, { purpose: 'backup', waitMs: 0 });
    const notices: string[] = [];
    const started = Date.now();
    setTimeout(() => void release(), 300);
    const second = await acquireLock(root, { purpose: 'prune', waitMs: 5_000, pollMs: 50, onNotice: (m) => notices.push(m) });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(holder().command).toBe('prune');
    expect(notices.join('\n')).toMatch(/waiting up to 5 s for the lock held by backup/);
    await second();
  });

  it('gives up after waitMs', async () => {
    const release = await acquireLock(root, { purpose: 'backup', waitMs: 0 });
    const started = Date.now();
    const err = await acquireLock(root, { purpose: 'prune', waitMs: 300, pollMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockedError);
    expect((err as Error).message).toMatch(/waited/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    await release();
  });

  it('takes over a stale lock (dead pid on this host) with a warning', async () => {
    const pid = await deadPid();
    plantLock({ pid, token: 'stale' });
    const notices: string[] = [];
    const release = await acquireLock(root, { purpose: 'prune', waitMs: 0, onNotice: (m) => notices.push(m) });
    expect(holder()).toMatchObject({ pid: process.pid, command: 'prune' });
    expect(notices).toHaveLength(1);
    expect(notices[0]).toContain(`took over a stale lock of backup (pid ${pid} on host ${hostname()}`);
    expect(existsSync(join(root, '.lock.takeover'))).toBe(false);
    await release();
  });

  it('never takes over a lock of another host, whose pids it cannot check', async () => {
    const pid = await deadPid();
    plantLock({ host: 'some-other-host', pid });
    const err = await acquireLock(root, { purpose: 'prune', waitMs: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockedError);
    expect((err as Error).message).toContain(`pid ${pid} on host some-other-host`);
    expect(holder().token).toBe('planted');
  });

  it('treats an unreadable lock file as held by an unknown holder', async () => {
    writeFileSync(lockPath(), 'not json');
    const err = await acquireLock(root, { purpose: 'prune', waitMs: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockedError);
    expect((err as Error).message).toMatch(/unknown holder/);
    expect(readFileSync(lockPath(), 'utf8')).toBe('not json');
  });

  it('release leaves a lock that is not its own alone', async () => {
    const release = await acquireLock(root, { purpose: 'prune', waitMs: 0 });
    plantLock({ token: 'someone-else' });
    await release();
    expect(holder().token).toBe('someone-else');
  });

  it('only one of many concurrent writers gets the lock', async () => {
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => acquireLock(root, { purpose: `w${i}`, waitMs: 0 })));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    expect(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof LockedError)).toBe(true);
    await (won[0] as PromiseFulfilledResult<() => Promise<void>>).value();
    expect(existsSync(lockPath())).toBe(false);
  });

  it('stops waiting when interrupted', async () => {
    const release = await acquireLock(root, { purpose: 'backup', waitMs: 0 });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const err = await acquireLock(root, { purpose: 'prune', waitMs: 10_000, pollMs: 50, signal: ac.signal }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    await release();
  });
});
