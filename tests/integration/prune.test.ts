import { cpSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, launch, parseJson, tempTarget, testProject } from './helpers.js';

// Three backups of `a` and two of `b`, made once; each test prunes its own copy of the target.
let proj: Awaited<ReturnType<typeof testProject>>;
const base = tempTarget();
const copies: ReturnType<typeof tempTarget>[] = [];

interface Row {
  name: string;
  timestamp: string;
  action: 'keep' | 'remove' | 'removed';
  reasons: string[];
  protected: boolean;
}

function copyTarget(): { dir: string; uri: string } {
  const t = tempTarget();
  copies.push(t);
  cpSync(base.dir, t.dir, { recursive: true });
  return t;
}

const versions = (t: { dir: string }, name: string) => {
  const d = join(t.dir, 'instances', proj.name, name);
  return existsSync(d) ? readdirSync(d).sort() : [];
};

let aVersions: string[];
let bVersions: string[];

beforeAll(async () => {
  proj = await testProject('prune');
  await launch(proj.name, 'a');
  await launch(proj.name, 'b');
  for (const names of [['a', 'b'], ['a', 'b'], ['a']]) {
    const r = await cli(['backup', 'instances', ...names, '--project', proj.name, '--target', base.uri, '-q']);
    expect(r.exitCode, r.stderr).toBe(0);
  }
  aVersions = versions(base, 'a');
  bVersions = versions(base, 'b');
  expect(aVersions).toHaveLength(3);
  expect(bVersions).toHaveLength(2);
});

afterAll(async () => {
  await proj?.dispose();
  base.dispose();
  for (const c of copies) c.dispose();
});

const prune = (t: { uri: string }, ...args: string[]) => cli(['prune', ...args, '--project', proj.name, '--target', t.uri]);

describe('prune on a directory target', () => {
  it('--dry-run previews keep/remove per instance and changes nothing', async () => {
    const t = copyTarget();
    const r = await prune(t, 'instances', '--keep-last', '1', '--dry-run', '--output', 'json');
    expect(r.exitCode, r.stderr).toBe(0);
    const rows = parseJson<Row[]>(r.stdout);
    expect(rows.map((x) => [x.name, x.timestamp, x.action, x.reasons])).toEqual([
      ['a', aVersions[0], 'remove', []],
      ['a', aVersions[1], 'remove', []],
      ['a', aVersions[2], 'keep', ['last']],
      ['b', bVersions[0], 'remove', []],
      ['b', bVersions[1], 'keep', ['last']],
    ]);
    expect(r.stderr).toContain('5 backup(s) of 2 resource(s): 2 to keep, 3 to remove');
    expect(r.stderr).toContain('dry run: nothing was changed');
    expect(versions(t, 'a')).toEqual(aVersions);
    expect(versions(t, 'b')).toEqual(bVersions);
  });

  it('--keep-last 1 -y removes older versions of one instance and leaves the other alone', async () => {
    const t = copyTarget();
    const r = await prune(t, 'instances', 'a', '--keep-last', '1', '-y');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`${aVersions[0]} .* remove .*no rule keeps it`));
    expect(r.stderr).toContain('removed 2 backup(s)');
    expect(versions(t, 'a')).toEqual([aVersions[2]]);
    expect(versions(t, 'b')).toEqual(bVersions);
    // Nothing half-removed is left behind, and the lock is gone.
    expect(readdirSync(join(t.dir, '.trash'))).toEqual([]);
    expect(existsSync(join(t.dir, '.lock'))).toBe(false);
    const list = await cli(['list', 'instances', '--project', proj.name, '--target', t.uri, '--output', 'json']);
    expect(parseJson<{ name: string }[]>(list.stdout).map((x) => x.name)).toEqual(['a', 'b', 'b']);
  });

  it('never removes a protected backup and shows it as protected in the preview', async () => {
    const t = copyTarget();
    const p = await cli(['protect', 'instances', 'a', '--version', aVersions[0]!, '--project', proj.name, '--target', t.uri]);
    expect(p.exitCode, p.stderr).toBe(0);
    expect(p.stderr).toContain(`${aVersions[0]}: protected`);
    const manifest = JSON.parse(readFileSync(join(t.dir, 'instances', proj.name, 'a', aVersions[0]!, 'manifest.json'), 'utf8')) as { protected?: boolean };
    expect(manifest.protected).toBe(true);
    // list shows which backups are protected.
    const listed = await cli(['list', 'instances', 'a', '--project', proj.name, '--target', t.uri]);
    expect(listed.stdout).toMatch(/│ PROTECTED │/);
    expect(listed.stdout).toMatch(new RegExp(`${aVersions[0]} .*│ yes +│`));
    expect(listed.stdout).not.toMatch(new RegExp(`${aVersions[1]} .*│ yes +│`));

    const r = await prune(t, 'instances', 'a', '--keep', '1', '-y');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`${aVersions[0]} .* keep .*protected`));
    expect(r.stdout).toMatch(new RegExp(`${aVersions[1]} .* remove `));
    expect(versions(t, 'a')).toEqual([aVersions[0], aVersions[2]]);

    // Unprotected, the same policy removes it.
    const u = await cli(['unprotect', 'instances', 'a', '--version', aVersions[0]!, '--project', proj.name, '--target', t.uri]);
    expect(u.exitCode, u.stderr).toBe(0);
    const again = await prune(t, 'instances', 'a', '--keep-last', '1', '-y', '--output', 'json');
    expect(again.exitCode, again.stderr).toBe(0);
    // The document of a prune that ran says what it did.
    expect(parseJson<Row[]>(again.stdout).map((x) => [x.timestamp, x.action])).toEqual([
      [aVersions[0], 'removed'],
      [aVersions[2], 'keep'],
    ]);
    expect(versions(t, 'a')).toEqual([aVersions[2]]);
  });

  it('refuses to run without a policy (exit 2) and changes nothing', async () => {
    const t = copyTarget();
    const r = await prune(t, 'all', '-y');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('no retention policy given');
    const bad = await prune(t, 'all', '--keep-within', '3x', '-y');
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('invalid duration "3x"');
    expect(versions(t, 'a')).toEqual(aVersions);
  });

  it('without -y and without a terminal: exit 2 with a hint, nothing removed, lock released', async () => {
    const t = copyTarget();
    const r = await prune(t, '--keep-last', '1');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('no terminal to ask on');
    expect(r.stderr).toContain('pass -y');
    expect(versions(t, 'a')).toEqual(aVersions);
    expect(existsSync(join(t.dir, '.lock'))).toBe(false);
  });
});
