import { spawn } from 'node:child_process';
import { cpSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireLock, type LockHolder } from '../../src/backends/dir/lock.js';
import { cli, cliSpawn, launch, parseJson, tempTarget, testProject } from './helpers.js';

let proj: Awaited<ReturnType<typeof testProject>>;
const base = tempTarget();
const copies: ReturnType<typeof tempTarget>[] = [];

function copyTarget(): { dir: string; uri: string } {
  const t = tempTarget();
  copies.push(t);
  cpSync(base.dir, t.dir, { recursive: true });
  return t;
}

const versions = (t: { dir: string }) => readdirSync(join(t.dir, 'instances', proj.name, 'a')).sort();

beforeAll(async () => {
  proj = await testProject('lock');
  await launch(proj.name, 'a');
  await launch(proj.name, 'b');
  for (let i = 0; i < 2; i++) {
    const r = await cli(['backup', 'instances', 'a', '--project', proj.name, '--target', base.uri, '-q']);
    expect(r.exitCode, r.stderr).toBe(0);
  }
});

afterAll(async () => {
  await proj?.dispose();
  base.dispose();
  for (const c of copies) c.dispose();
});

describe('directory target lock', () => {
  it('a writer fails at once naming the holder; with --lock-wait it proceeds once the lock is released', async () => {
    const t = copyTarget();
    const release = await acquireLock(t.dir, { purpose: 'backup', waitMs: 0 });
    try {
      const r = await cli(['prune', 'instances', 'a', '--keep-last', '1', '-y', '--project', proj.name, '--target', t.uri]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`Error: target is locked by backup \\(pid ${process.pid} on host ${hostname()}, since \\d{4}-\\d\\d-\\d\\dT`));
      expect(r.stderr).toContain(`remove ${join(t.dir, '.lock')}`);
      expect(versions(t)).toHaveLength(2);

      const p = await cli(['protect', 'instances', 'a', '--project', proj.name, '--target', t.uri]);
      expect(p.exitCode).toBe(1);
      expect(p.stderr).toContain(`pid ${process.pid}`);

      // Readers never lock.
      const v = await cli(['verify', '--project', proj.name, '--target', t.uri, '-q']);
      expect(v.exitCode, v.stderr).toBe(0);
      const l = await cli(['list', '--project', proj.name, '--target', t.uri, '--output', 'json']);
      expect(parseJson<unknown[]>(l.stdout)).toHaveLength(2);
    } catch (e) {
      await release();
      throw e;
    }

    const waiting = cliSpawn(['prune', 'instances', 'a', '--keep-last', '1', '-y', '--lock-wait', '5s', '--project', proj.name, '--target', t.uri]);
    await new Promise((r) => setTimeout(r, 1000));
    expect(versions(t)).toHaveLength(2); // still waiting
    await release();
    const r = await waiting;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr)).toMatch(/waiting up to 5 s for the lock held by backup/);
    expect(String(r.stderr)).toContain('removed 1 backup(s)');
    expect(versions(t)).toHaveLength(1);
    expect(existsSync(join(t.dir, '.lock'))).toBe(false);
  });

  it('takes over the lock of a writer that died, with a warning', async () => {
    const t = copyTarget();
    const child = spawn('true');
    await new Promise((r) => child.on('exit', r));
    const dead: LockHolder = { host: hostname(), pid: child.pid!, startedAt: '2026-01-01T00:00:00.000Z', command: 'prune', token: 'dead' };
    writeFileSync(join(t.dir, '.lock'), JSON.stringify(dead));
    const r = await cli(['protect', 'instances', 'a', '--project', proj.name, '--target', t.uri]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain(`warning: took over a stale lock of prune (pid ${child.pid} on host ${hostname()}`);
    expect(existsSync(join(t.dir, '.lock'))).toBe(false);
  });

  it('two concurrent backups into one target both succeed, or one fails naming the lock holder', async () => {
    const t = tempTarget();
    copies.push(t);
    const runs = await Promise.all(
      ['a', 'b'].map((n) => cliSpawn(['backup', 'instances', n, '--project', proj.name, '--target', t.uri, '-q'])),
    );
    const ok = runs.filter((r) => r.exitCode === 0);
    for (const r of runs.filter((x) => x.exitCode !== 0)) {
      expect(r.exitCode).toBe(1);
      expect(String(r.stderr)).toMatch(/target is locked by backup \(pid \d+ on host /);
    }
    expect(ok.length).toBeGreaterThanOrEqual(1);
    const v = await cli(['verify', '--project', proj.name, '--target', t.uri, '--output', 'json']);
    expect(v.exitCode, v.stderr).toBe(0);
    expect(parseJson<{ status: string }[]>(v.stdout).map((x) => x.status)).toEqual(ok.map(() => 'ok'));
    expect(readdirSync(join(t.dir, '.staging'))).toEqual([]);
    expect(existsSync(join(t.dir, '.lock'))).toBe(false);
  });
});
