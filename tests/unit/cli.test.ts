import { Builtins, Cli } from 'clipanion';
import { describe, expect, it } from 'vitest';
import { buildCli } from '../../src/cli.js';
import { checkName } from '../../src/cli/base.js';

const context = { ...Cli.defaultContext, env: {}, signal: new AbortController().signal, interactive: false };
const paths = (verb?: string) => buildCli(false, verb).definitions().map((d) => d.path.replace(/^incus-backup /, ''));

describe('buildCli: only the commands under the first word', () => {
  const every = paths();

  it('registers every command when the first word names none', () => {
    expect(every).toEqual(expect.arrayContaining(['backup all', 'restore all', 'restore instance', 'config show', 'list', 'verify', 'prune', 'protect', 'unprotect']));
    expect(paths('restor')).toEqual(every);
    expect(paths('--help')).toEqual(every);
  });

  it('reaches every command through its own first word', () => {
    const words = new Set(every.map((p) => p.split(' ')[0]).filter((w): w is string => !!w && !w.startsWith('-')));
    for (const w of words) {
      const some = paths(w);
      expect(some.filter((p) => !p.startsWith('-'))).toEqual(every.filter((p) => p.split(' ')[0] === w));
    }
    expect(paths('backup')).not.toContain('restore all');
    expect(paths('restore')).toContain('restore config');
  });

  it('parses a command line through the narrowed parser as through the whole one', () => {
    const argv = ['restore', 'instance', 'web', '--target', 'dir:/srv/b', '--replace', '-y'];
    const narrow = buildCli(false, argv[0]).process(argv, context);
    const whole = buildCli(false).process(argv, context);
    expect(narrow.constructor).toBe(whole.constructor);
    expect(narrow.path).toEqual(whole.path);
  });

  it('answers --version without registering any command', () => {
    expect(buildCli(false, '--version').process(['--version'], context)).toBeInstanceOf(Builtins.VersionCommand);
    expect(paths('--version').every((p) => p.startsWith('-'))).toBe(true);
  });
});

describe('checkName', () => {
  it("takes every project name Incus takes, and refuses what Incus refuses", () => {
    for (const ok of ['default', 'a,b', 'a=b', 'café', 'a.b', 'a..b', 'x-1']) expect(checkName('project', ok)).toBe(ok);
    for (const bad of ['', 'a_b', 'a b', "a'b", 'a"b', 'a/b', '*', '.', '..', 'a\nb']) expect(() => checkName('project', bad)).toThrow(/invalid project name/);
  });

  it("keeps instance names to Incus's rule: letters, digits and \"-\", not at either end, not a number", () => {
    for (const ok of ['web-1', '1web', 'a', 'x'.repeat(63)]) expect(checkName('instance', ok)).toBe(ok);
    for (const bad of ['a,b', 'café', '../x', 'a/b', '-x', 'x-', 'bad_name', 'web.bak', '123', '', 'x'.repeat(64)]) expect(() => checkName('instance', bad)).toThrow(/invalid instance name/);
  });

  it('takes the volume and pool names Incus takes, but no path steps', () => {
    for (const ok of ['data', 'my data', 'a,b', 'café', 'a..b', '_x']) expect(checkName('volume', ok)).toBe(ok);
    for (const bad of ['', '.', '..', 'a/b', 'a\tb']) expect(() => checkName('volume', bad)).toThrow(/invalid volume name/);
  });
});
