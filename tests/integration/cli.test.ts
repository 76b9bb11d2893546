import { execa } from 'execa';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, repo } from './helpers.js';

const version = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;

describe('the CLI surface', () => {
  it('prints its version', async () => {
    const r = await cli(['--version']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe(version);
  });

  it('lists every command in --help, without colours when NO_COLOR is set', async () => {
    const r = await cli(['--help']);
    expect(r.exitCode).toBe(0);
    for (const c of [
      'backup instances',
      'backup volumes',
      'backup config',
      'backup all',
      'restore instance ',
      'restore instances',
      'restore volume ',
      'restore volumes',
      'restore config',
      'restore all',
      'list',
      'verify',
      'prune',
    ]) {
      expect(r.stdout).toMatch(new RegExp(`^  ${c.trim()} +[A-Z]`, 'm'));
    }
    expect(r.stdout).not.toMatch(/\x1b\[/);
    // A namespace's help lists its commands once each (not once per alias, with every option).
    const backup = await cli(['backup', '--help']);
    expect(backup.exitCode).toBe(0);
    expect(backup.stdout.split('\n').filter((l) => /^ {2}backup /.test(l)).map((l) => l.trim().split(/ {2,}/)[0])).toEqual(['backup all', 'backup config', 'backup images', 'backup instances', 'backup volumes']);
    expect(backup.stdout.length).toBeLessThan(2000);
    // No command at all is a usage error, with the overview; `help X` is `X --help`.
    const none = await cli([]);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/^ {2}restore all +Restore/m);
    const help = await cli(['help', 'restore', 'instance']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toBe((await cli(['restore', 'instance', '--help'])).stdout);
  });

  it("names each option's value in help instead of clipanion's #0, lined up", async () => {
    const r = await cli(['restore', 'instance', '--help']);
    expect(r.stdout).not.toContain('#0');
    expect(r.stdout).toMatch(/^ {2}--target URI +Backup target/m);
    expect(r.stdout).toMatch(/^ {2}--project-map OLD=NEW +Restore project OLD/m);
    const columns = new Set(r.stdout.split('\n').filter((l) => /^ {2}-/.test(l)).map((l) => /^ {2}\S+(?: [A-Z=]+)? +/.exec(l)![0].length));
    expect(columns.size).toBe(1);
  });

  it('writes help into a pipe without escape codes, NO_COLOR or not (clipanion went by the terminal type)', async () => {
    for (const args of [['--help'], ['restore', 'volumes', '--help'], ['list', '--bogus']]) {
      // No NO_COLOR at all (Node counts an empty one as set).
      const r = await cli(args, { NO_COLOR: undefined, TERM: 'xterm-256color' });
      expect(r.stdout + r.stderr, args.join(' ')).toMatch(/incus-backup/);
      expect(r.stdout + r.stderr, args.join(' ')).not.toMatch(/\x1b\[/);
    }
  });

  it.each(['backup instances', 'restore instance', 'list', 'verify', 'prune', 'backup all'])(
    '%s --help has a description and an example',
    async (path) => {
      const r = await cli([...path.split(' '), '--help']);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(/^Examples$/m);
      expect(r.stdout).toMatch(/\$ incus-backup /);
    },
  );

  it('rejects bad targets with exit 2, one line and a hint', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'ib-cli-')), 'a-file');
    writeFileSync(file, 'not a target\n');
    for (const [cmd, target, msg] of [
      ['list', 'nowhere', /has no scheme/],
      ['list', 'ftp:/x', /unknown target scheme/],
      ['list', 'dir:relative', /not an absolute path/],
      ['list', `dir:${file}`, /^Error: target dir:\S+\/a-file is not a directory$/m],
      ['list', `dir:${file}/sub`, /^Error: target dir:\S+\/a-file\/sub is not a directory$/m],
      ['backup', `dir:${file}`, /^Error: target dir:\S+\/a-file is not a directory$/m],
    ] as const) {
      const r = await cli(cmd === 'list' ? ['list', '--target', target] : ['backup', 'config', '--target', target]);
      expect(r.exitCode, r.stderr).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).toMatch(/^Hint: /m);
      expect(r.stderr).not.toMatch(/Bug:|\n\s+at /);
    }
  });

  it('refuses a malformed --*-map before reading the target', async () => {
    for (const cmd of [['restore', 'all'], ['restore', 'instance', 'web']]) {
      const r = await cli([...cmd, '--project-map', 'bad', '--target', 'dir:/nonexistent/ib-target', '--dry-run']);
      expect(r.exitCode, cmd.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^Error: --project-map "bad" is not OLD=NEW$/m);
      expect(r.stderr).toMatch(/^Hint: e\.g\. --project-map default=staging$/m);
    }
  });

  it('takes the target from INCUS_BACKUP_TARGET', async () => {
    const r = await cli(['list'], { INCUS_BACKUP_TARGET: 'dir:/nonexistent/ib-target' });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/dir:\/nonexistent\/ib-target does not exist/);
  });

  it.each([['backup', 'instances'], ['backup', 'instance', 'web'], ['backup', 'volume', 'default/data']])('says clearly when the Incus socket is missing (%s %s)', async (...cmd) => {
    const r = await cli([...cmd, '--target', 'dir:/tmp/ib-unused'], { INCUS_SOCKET: '/nonexistent/unix.socket' });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/cannot reach Incus: no daemon listening at \/nonexistent\/unix.socket/);
    expect(r.stderr).toMatch(/Hint: .*INCUS_SOCKET/);
  });

  it('validates options and commands as usage errors (exit 2)', async () => {
    const parallel = await cli(['list', '--target', 'dir:/tmp', '--parallel', '0']);
    expect(parallel.exitCode).toBe(2);
    expect(parallel.stderr).toMatch(/^Error: invalid value for --parallel: expected to be at least 1 \(got 0\)$/m);
    expect(parallel.stderr).toMatch(/^Hint: `incus-backup list --help` shows its options and arguments$/m);
    const output = await cli(['list', '--target', 'dir:/tmp', '--output', 'xml']);
    expect(output.exitCode).toBe(2);
    expect(output.stderr).toMatch(/^Error: invalid value for --output/m);
    // An option the command does not have: one line naming it, not every command's usage.
    const option = await cli(['restore', 'instances', 'c1', '--target-name', 'foo', '--target', 'dir:/tmp']);
    expect(option.exitCode).toBe(2);
    expect(option.stderr).toBe('Error: restore instances: unknown option --target-name\nHint: `incus-backup restore instances --help` shows its options and arguments');
    // Options that only instances and volumes have a use for are said to be of no use.
    const unused = await cli(['backup', 'config', '--no-snapshot', '--compression', 'xz', '--target', 'dir:/nonexistent/ib-target', '--dry-run']);
    expect(unused.exitCode, unused.stderr).toBe(0);
    expect(unused.stderr).toMatch(/warning: --no-snapshot, --compression xz apply to instances and volumes only: the config is stored as JSON, uncompressed/);
    // A typo of one it has: named.
    const typo = await cli(['list', '--taget', 'dir:/tmp']);
    expect(typo.exitCode).toBe(2);
    expect(typo.stderr).toBe('Error: list: unknown option --taget\nHint: did you mean --target? `incus-backup list --help` shows its options and arguments');
    expect((await cli(['restore', 'instance', 'c1', '--replce', '--target', 'dir:/tmp'])).stderr).toMatch(/^Hint: did you mean --replace\?/m);
    // A rule of 0 is off in restic's terms; typed, it is refused rather than left to the file's policy.
    for (const [flag, value] of [['--keep-last', '0'], ['--keep-within', '0d']]) {
      const zero = await cli(['prune', flag!, value!, '--target', 'dir:/nonexistent/ib-target']);
      expect(zero.exitCode).toBe(2);
      expect(zero.stderr).toMatch(new RegExp(`^Error: ${flag} ${value} keeps nothing by itself$`, 'm'));
    }
    // An empty --target-name is a bad name, not "no new name".
    const empty = await cli(['restore', 'instance', 'web', '--target-name', '', '--target', 'dir:/nonexistent/ib-target']);
    expect(empty.exitCode).toBe(2);
    expect(empty.stderr).toMatch(/^Error: invalid instance name ""$/m);
    // Singular kinds, as `backup instance` takes them.
    expect((await cli(['list', 'instance', 'web', '--target', 'dir:/nonexistent/ib-target'])).stderr).toMatch(/does not exist/);
    const both = await cli(['backup', 'instances', '--project', 'p1', '--all-projects', '--target', 'dir:/nonexistent/ib-target', '--dry-run']);
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toMatch(/^Error: --project and --all-projects exclude each other$/m);
    // At different levels the more direct one wins: --project over INCUS_BACKUP_ALL_PROJECTS.
    const shown = await cli(['config', 'show', '--project', 'p1', '--output', 'json'], { INCUS_BACKUP_ALL_PROJECTS: '1' });
    expect(shown.exitCode, shown.stderr).toBe(0);
    expect(JSON.parse(shown.stdout)).toContainEqual({ key: 'all_projects', value: 'false', source: '--project' });
    // The other way round, the project that does not apply says so.
    const every = await cli(['config', 'show', '--all-projects', '--output', 'json'], { INCUS_BACKUP_PROJECT: 'p1' });
    expect(JSON.parse(every.stdout)).toContainEqual({ key: 'project', value: 'p1', source: 'INCUS_BACKUP_PROJECT (not used: all_projects)' });
    const unknown = await cli(['lsit']);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toBe('Error: unknown command "lsit"\nHint: did you mean `incus-backup list`? `incus-backup --help` lists the commands');
    // A group alone lists its commands (exit 2), as no command at all does.
    const group = await cli(['backup']);
    expect(group.exitCode).toBe(2);
    expect(group.stderr).toMatch(/^ {2}backup instances +Back up instances/m);
    const sub = await cli(['restore', 'instnace', 'web']);
    expect(sub.stderr).toMatch(/^Error: unknown command "restore instnace"$/m);
    expect(sub.stderr).toMatch(/^Hint: did you mean `incus-backup restore instance`\?/m);
  });
});

describe('a target of the other kind, or a directory in use', () => {
  it('refuses dir: for a restic repository and restic: for a directory target, and does not set up a target among other files', async () => {
    const base = mkdtempSync(join(tmpdir(), 'ib-kinds-'));
    const pw = join(base, 'pw');
    writeFileSync(pw, 'kinds-secret\n', { mode: 0o600 });
    const env = { RESTIC_PASSWORD_FILE: pw };
    const wrongPw = join(base, 'wrong-pw');
    writeFileSync(wrongPw, 'not-the-secret\n', { mode: 0o600 });
    const repoDir = join(base, 'repo');
    await execa('restic', ['init', '--repo', repoDir], { env });
    const dirTarget = join(base, 'dirtarget');
    expect((await cli(['backup', 'config', '--target', `dir:${dirTarget}`, '-q'])).exitCode).toBe(0);
    const busy = join(base, 'busy');
    mkdirSync(busy);
    writeFileSync(join(busy, 'notes.txt'), 'not a backup\n');
    const empty = join(base, 'empty');
    mkdirSync(empty);

    for (const [args, msg, hint] of [
      [['list', '--target', `dir:${repoDir}`], /^Error: dir:\S+\/repo is a restic repository, not a directory target$/m, /^Hint: use --target restic:\S+\/repo$/m],
      [['backup', 'config', '--target', `dir:${repoDir}`], /is a restic repository/, /restic:/],
      [['list', '--target', `restic:${dirTarget}`], /^Error: restic:\S+\/dirtarget is a directory target, not a restic repository$/m, /^Hint: use --target dir:\S+\/dirtarget$/m],
      [['backup', 'config', '--target', `restic:${dirTarget}`], /is a directory target/, /dir:/],
      [['backup', 'config', '--target', `dir:${busy}`], /^Error: dir:\S+\/busy is not empty and is not a directory target \(it has no metadata\.json\)$/m, /busy\/incus-backup/],
      [['backup', 'config', '--target', `restic:${busy}`], /^Error: restic:\S+\/busy is not empty and is not a restic repository$/m, /busy\/restic/],
      // What reads a target refuses a directory that is none: a backup disk not mounted (an
      // empty mount point) or a mistyped path must not pass a weekly verify as "0 damaged".
      [['verify', '--all-projects', '--target', `dir:${empty}`], /^Error: dir:\S+\/empty is not a directory target \(it is empty\)$/m, /^Hint: is the backup disk mounted\?/m],
      [['list', '--target', `dir:${busy}`], /^Error: dir:\S+\/busy is not a directory target \(it has no metadata\.json and no backups\)$/m, /mounted/],
      [['prune', '--keep-last', '1', '-y', '--target', `dir:${empty}`], /is not a directory target/, /mounted/],
      [['list', '--target', `restic:${repoDir}`, '--password-file', base], /^Error: cannot get the password for restic repository \S+: .*is a directory$/m, /--password-file/],
      // A backup's dry run finds what the run would, without creating anything.
      [['backup', 'config', '--dry-run', '--target', `dir:${busy}`], /is not empty and is not a directory target/, /busy\/incus-backup/],
      [['backup', 'config', '--dry-run', '--target', `restic:${repoDir}`, '--password-file', wrongPw], /^Error: wrong password for restic repository/m, /^Hint: check the password from --password-file/m],
    ] as const) {
      const r = await cli([...args], env);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).toMatch(hint);
      expect(r.stderr).not.toMatch(/Bug:|\n\s+at /);
    }
    // Nothing of the other kind was written into either, nor into the busy directory.
    expect(existsSync(join(repoDir, 'metadata.json'))).toBe(false);
    expect(existsSync(join(dirTarget, 'keys'))).toBe(false);
    expect(existsSync(join(busy, 'metadata.json'))).toBe(false);
    expect(existsSync(join(busy, 'config'))).toBe(false);
    // An empty file system's mount point (lost+found only) is fine.
    const mount = join(base, 'mount');
    mkdirSync(join(mount, 'lost+found'), { recursive: true });
    expect((await cli(['backup', 'config', '--target', `dir:${mount}`, '-q'])).exitCode).toBe(0);
    expect(existsSync(join(mount, 'metadata.json'))).toBe(true);
    // A dry run into a new place says it would set it up, and does not.
    const fresh = join(base, 'fresh');
    const dry = await cli(['backup', 'config', '--dry-run', '--target', `restic:${fresh}`], env);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stderr).toContain(`a backup initialises restic repository ${fresh}`);
    expect(existsSync(fresh)).toBe(false);
  });
});

