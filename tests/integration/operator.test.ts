import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { cli, cliSpawn, incus, instanceNames, launch, parseJson, snapshotNames, tempTarget, testProject } from './helpers.js';

let project: { name: string; dispose: () => Promise<void> };
let target: ReturnType<typeof tempTarget>;
let P: string;

beforeAll(async () => {
  project = await testProject('ops');
  P = project.name;
  target = tempTarget();
  for (const n of ['a1', 'a2', 'a3']) await launch(P, n);
  await incus('stop', '-f', 'a3', '--project', P);
});

afterAll(async () => {
  await project?.dispose();
  target?.dispose();
});

describe('operator experience', () => {
  it('--parallel 2 with one failing resource: the others succeed, stable summary, exit 3', async () => {
    const r = await cli(['backup', 'instances', 'a1', 'missing-one', 'a2', 'a3', '--parallel', '2', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(r.exitCode, r.stderr).toBe(3);
    const rows = parseJson<{ name: string; status: string; error?: string }[]>(r.stdout);
    expect(rows.map((x) => `${x.name}:${x.status}`)).toEqual(['a1:ok', 'missing-one:failed', 'a2:ok', 'a3:ok']);
    expect(rows[1]!.error).toBe(`instance ${P}/missing-one does not exist`);
    const list = parseJson<unknown[]>((await cli(['list', 'instances', '--project', P, '--target', target.uri, '--output', 'json'])).stdout);
    expect(list).toHaveLength(3);
  });

  it('points at the projects that do have backups when the one asked for has none (a forgotten --project)', async () => {
    const other = (args: string[]) => cli([...args, '--project', 'default', '--target', target.uri]);
    const hint = (n: string) => `the target holds backups of other projects: ${P} \\(${n}\\); pass --project ${P} or --all-projects`;
    const where = new RegExp(hint('3 backups'));
    const list = await other(['list']);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(list.stderr).toMatch(/^no backups found$/m);
    expect(list.stderr).toMatch(where);
    const json = await other(['list', '--output', 'json']);
    expect(parseJson<unknown[]>(json.stdout)).toEqual([]);
    expect(json.stderr).toMatch(where);
    const verify = await other(['verify']);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(verify.stderr).toMatch(where);
    for (const [args, n] of [
      [['restore', 'all', '--dry-run'], '3 backups'],
      [['restore', 'instances', '--dry-run'], '3 backups'],
      // Of that one instance.
      [['restore', 'instance', 'a1', '--dry-run'], '1 backup'],
    ] as const) {
      const r = await other([...args]);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^Hint: ${hint(n)}$`, 'm'));
    }
    // Where the project does have backups, nothing more is said.
    const mine = await cli(['list', '--project', P, '--target', target.uri]);
    expect(mine.stderr).not.toMatch(/other projects/);
    // A name no project has backups of gets the usual hint.
    const none = await other(['restore', 'instance', 'nobody', '--dry-run']);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).not.toMatch(/other projects/);
  });

  it('prints no escape codes and no carriage returns without a terminal', async () => {
    const r = await cli(['backup', 'instances', 'a1', '--project', P, '--target', target.uri], { NO_COLOR: '' });
    expect(r.exitCode, r.stderr).toBe(0);
    for (const out of [r.stdout, r.stderr]) {
      expect(out).not.toMatch(/\x1b\[/);
      expect(out).not.toMatch(/\r/);
    }
    // Plain, timestamped progress lines.
    expect(r.stderr).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ instance .*a1: done/m);
  });

  it('--output yaml is the json document for YAML 1.1 readers too (a volume named yes, instants)', async () => {
    const own = tempTarget();
    try {
      await incus('storage', 'volume', 'create', 'default', 'yes', '--project', P);
      const b = await cli(['backup', 'volumes', 'default/yes', '--project', P, '--target', own.uri, '--output', 'yaml']);
      expect(b.exitCode, b.stderr).toBe(0);
      expect(parseYaml(b.stdout, { version: '1.1' })).toEqual([expect.objectContaining({ name: 'yes', status: 'ok' })]);
      const asJson = await cli(['list', 'volumes', '--project', P, '--target', own.uri, '--output', 'json']);
      const asYaml = await cli(['list', 'volumes', '--project', P, '--target', own.uri, '--output', 'yaml']);
      // PyYAML and other YAML 1.1 readers took `name: yes` for true and the instant for a date.
      expect(parseYaml(asYaml.stdout, { version: '1.1' })).toEqual(parseJson(asJson.stdout));
      expect(parseJson<{ name: string }[]>(asJson.stdout).map((v) => v.name)).toEqual(['yes']);
    } finally {
      own.dispose();
      await incus('storage', 'volume', 'delete', 'default', 'yes', '--project', P).catch(() => undefined);
    }
  });

  it('--quiet prints only the failures and the final summary line', async () => {
    const r = await cli(['backup', 'instances', 'a3', '-q', '--project', P, '--target', target.uri]);
    expect(r.exitCode, r.stderr).toBe(0);
    // The totals line is on stderr, as without --quiet (and as verify and prune have it).
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^backup: 1 ok; [\d.]+ MiB in [\d.]+ m?s \([^)]*\/s\)$/);
    // a3 is stopped: --no-snapshot changes nothing for it, so no warning and no "live" mode.
    const aside = tempTarget();
    const still = await cli(['backup', 'instances', 'a3', '--no-snapshot', '--project', P, '--target', aside.uri, '--output', 'json']);
    aside.dispose();
    expect(still.exitCode, still.stderr).toBe(0);
    expect(parseJson<{ consistency: string }[]>(still.stdout).map((x) => x.consistency)).toEqual(['stopped']);
    expect(still.stderr).not.toContain('warning');
    const bad = await cli(['backup', 'instances', 'a3', 'nope', '-q', '--project', P, '--target', target.uri]);
    expect(bad.exitCode).toBe(3);
    expect(bad.stderr).toMatch(/^failed: instance .*\/nope: instance .*\/nope does not exist$/m);
    expect(bad.stderr).toMatch(/^Hint: `incus list --project \S+` shows the instances \(instance .*\/nope\)$/m);
    expect(bad.stderr).toMatch(/^backup: 1 ok, 1 failed; /m);
    expect(bad.stdout).toBe('');
    // Nothing named is there (a typo): a usage error before the target is touched.
    const fresh = join(target.dir, 'not-yet');
    for (const args of [['instances', 'nope'], ['volumes', 'default/nope']]) {
      const typo = await cli(['backup', ...args, '--project', P, '--target', `dir:${fresh}`]);
      expect(typo.exitCode, typo.stderr).toBe(2);
      expect(typo.stderr).toMatch(new RegExp(`^Error: ${args[0] === 'instances' ? 'instance' : 'volume'} ${P}/\\S*nope does not exist\nHint: \`incus (list|storage volume list default) --project ${P}\` shows the`, 'm'));
      expect(existsSync(fresh)).toBe(false);
    }
    // A dry run shows it as the run would report it.
    const dry = await cli(['backup', 'instances', 'a3', 'nope', '--dry-run', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(parseJson<{ name: string; status: string; error?: string }[]>(dry.stdout).map((x) => `${x.name}:${x.status}:${x.error ?? ''}`)).toEqual(['a3:planned:', `nope:failed:instance ${P}/nope does not exist`]);
    // With --all-projects a name is looked for in every project, and reported once.
    const nowhere = await cli(['backup', 'instances', 'nope-anywhere', '--all-projects', '--target', `dir:${fresh}`, '--dry-run']);
    expect(nowhere.exitCode).toBe(2);
    expect(nowhere.stderr).toMatch(/^Error: no project has instance nope-anywhere$/m);
  });

  it('--quiet with -y (a cron job) leaves the plan out of a restore and a prune; a dry run still shows it', async () => {
    const restore = await cli(['restore', 'instance', 'a3', '--target-name', 'a3q', '--no-start', '-q', '-y', '--project', P, '--target', target.uri]);
    expect(restore.exitCode, restore.stderr).toBe(0);
    expect(restore.stdout).toBe('');
    expect(restore.stderr).toMatch(/^restore: 1 ok; [^\n]+$/);
    await incus('delete', '-f', 'a3q', '--project', P);
    const prune = await cli(['prune', '--keep-last', '5', '-q', '-y', '--project', P, '--target', target.uri]);
    expect(prune.exitCode, prune.stderr).toBe(0);
    expect(prune.stdout).toBe('');
    expect(prune.stderr).toMatch(/^\d+ backup\(s\) of \d+ resource\(s\): \d+ to keep, 0 to remove/m);
    const dry = await cli(['restore', 'instance', 'a3', '--target-name', 'a3q', '-q', '--dry-run', '--project', P, '--target', target.uri]);
    expect(dry.stdout).toMatch(/│ instance a3 +│/);
    // Refused for want of a terminal to ask on: the plan is the document, as prune's is.
    const refused = await cli(['restore', 'instance', 'a3', '--target-name', 'a3q', '--output', 'json', '--project', P, '--target', target.uri]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toMatch(/refusing without confirmation/);
    expect(parseJson<{ name: string; destination: string; action: string }[]>(refused.stdout)).toEqual([
      expect.objectContaining({ name: 'a3', destination: 'a3q', destinationProject: P, action: 'create' }),
    ]);
    expect(await instanceNames(P)).not.toContain('a3q');
  });

  it('takes target, project and retention from the config file, flags winning over environment over file', async () => {
    const file = join(target.dir, 'ib.yaml');
    writeFileSync(file, `target: ${target.uri}\nproject: does-not-exist\nretention:\n  keep_last: 1\n`);
    const show = await cli(['config', 'show', '--config', file, '--output', 'json'], { INCUS_BACKUP_PROJECT: P });
    expect(show.exitCode, show.stderr).toBe(0);
    const rows = Object.fromEntries(parseJson<{ key: string; value: string; source: string }[]>(show.stdout).map((r) => [r.key, r]));
    expect(rows.target).toEqual({ key: 'target', value: target.uri, source: file });
    expect(rows.project).toEqual({ key: 'project', value: P, source: 'INCUS_BACKUP_PROJECT' });
    // Which file was read, and what nothing sets (with the value it then has).
    expect(rows['configuration file']).toEqual({ key: 'configuration file', value: file, source: '--config' });
    expect(rows['log.keep']).toEqual({ key: 'log.keep', value: '5', source: 'default' });
    const flag = parseJson<{ key: string; value: string; source: string }[]>((await cli(['config', 'show', '--config', file, '--project', 'x', '--output', 'json'], { INCUS_BACKUP_PROJECT: P })).stdout);
    expect(flag.find((r) => r.key === 'project')).toEqual({ key: 'project', value: 'x', source: '--project' });
    // A nightly `prune all` with no flags uses the file's retention.
    const prune = await cli(['prune', 'all', '--dry-run', '--config', file], { INCUS_BACKUP_PROJECT: P });
    expect(prune.exitCode, prune.stderr).toBe(0);
    // a1 has two backups by now, a3 three, a2 one: keep_last 1 removes three.
    expect(prune.stderr).toMatch(/6 backup\(s\) of 3 resource\(s\): 3 to keep, 3 to remove/);
    expect(prune.stdout).toMatch(/remove/);
  });

  it('backs up a name given twice once, and refuses a retention rule of 0 in the file as on the command line', async () => {
    const r = await cli(['backup', 'instances', 'a1', 'a1', '--project', P, '--target', target.uri, '--output', 'json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(parseJson<unknown[]>(r.stdout)).toHaveLength(1);
    const file = join(target.dir, 'zero.yaml');
    writeFileSync(file, `target: ${target.uri}\nretention:\n  keep_last: 0\n  keep_daily: 7\n`);
    const p = await cli(['prune', '--dry-run', '--config', file, '--project', P]);
    expect(p.exitCode).toBe(2);
    expect(p.stderr).toMatch(new RegExp(`^Error: ${file}: retention: keep_last: 0 keeps nothing by itself$`, 'm'));
    const dash = await cli(['prune', '--keep-daily', '-1', '--target', target.uri, '--project', P]);
    expect(dash.exitCode).toBe(2);
    expect(dash.stderr).toBe('Error: --keep-daily -1: a value that starts with "-" is read as an option\nHint: write it as --keep-daily=-1');
  });

  it('rejects unknown keys naming the file and the line', async () => {
    const file = join(target.dir, 'bad.yaml');
    writeFileSync(file, `target: ${target.uri}\nkeep_daily: 7\n`);
    const r = await cli(['list', '--config', file]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${file}:2: unknown key "keep_daily"`);
  });

  it('config show never prints the password file contents', async () => {
    const pw = join(target.dir, 'pw');
    writeFileSync(pw, 'correct-horse-battery-staple\n', { mode: 0o600 });
    const r = await cli(['config', 'show', '--password-file', pw, '--target', 'restic:rest:http://alice:url-secret-pw@127.0.0.1:1/repo'], { RESTIC_PASSWORD: 'env-secret-value' });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(pw);
    expect(r.stdout + r.stderr).not.toContain('correct-horse');
    expect(r.stdout + r.stderr).not.toContain('env-secret-value');
    // Nor a rest-server password in the target's URL.
    expect(r.stdout + r.stderr).not.toContain('url-secret-pw');
    expect(r.stdout).toContain('restic:rest:http://alice:***@127.0.0.1:1/repo');
    expect(r.stdout).toMatch(/RESTIC_PASSWORD .*<redacted>/);
  });

  it("takes a shell's RESTIC_PASSWORD_FILE over the configuration file's, and names the source of a wrong password", async () => {
    const repo = join(target.dir, 'pw-repo');
    const right = join(target.dir, 'pw-right');
    const wrong = join(target.dir, 'pw-wrong');
    writeFileSync(right, 'right-secret\n', { mode: 0o600 });
    writeFileSync(wrong, 'wrong-secret\n', { mode: 0o600 });
    await execa('restic', ['init', '--repo', repo], { env: { RESTIC_PASSWORD_FILE: right } });
    const file = join(target.dir, 'pw.yaml');
    writeFileSync(file, `target: restic:${repo}\nrestic:\n  password_file: ${wrong}\n`);
    const over = await cli(['list', '--config', file, '--project', P], { RESTIC_PASSWORD_FILE: right });
    expect(over.exitCode, over.stderr).toBe(0);
    // restic refuses a password file and command together: it gets the one used only.
    const both = await cli(['list', '--project', P, '--target', `restic:${repo}`], { RESTIC_PASSWORD_FILE: right, RESTIC_PASSWORD_COMMAND: 'echo wrong-secret' });
    expect(both.exitCode, both.stderr).toBe(0);
    const show = parseJson<{ key: string; source: string }[]>((await cli(['config', 'show', '--config', file, '--output', 'json'], { RESTIC_PASSWORD_FILE: right })).stdout);
    expect(show.find((r) => r.key === 'restic.password_file')?.source).toBe(`${file} (not used: RESTIC_PASSWORD_FILE (${right}))`);
    expect(show.find((r) => r.key === 'RESTIC_PASSWORD_FILE')?.source).toBe('RESTIC_PASSWORD_FILE');
    // The flag still comes first; a wrong password says where it came from.
    const flag = await cli(['list', '--config', file, '--project', P, '--password-file', wrong], { RESTIC_PASSWORD_FILE: right });
    expect(flag.exitCode).toBe(2);
    expect(flag.stderr).toMatch(/^Error: wrong password for restic repository /m);
    expect(flag.stderr).toContain(`Hint: check the password from --password-file ${wrong} (the first of`);
    const fromFile = await cli(['list', '--config', file, '--project', P]);
    expect(fromFile.exitCode).toBe(2);
    expect(fromFile.stderr).toContain(`Hint: check the password from restic.password_file (${wrong}) in ${file}`);
  });

  it('writes JSON log lines for the run, including Incus requests at debug level', async () => {
    // Its directory is made on the first run (private, like the file).
    const log = join(target.dir, 'logs', 'nightly', 'ib.jsonl');
    const r = await cli(['backup', 'instances', 'a2', '--log-file', log, '--log-level', 'debug', '--project', P, '--target', target.uri]);
    expect(r.exitCode, r.stderr).toBe(0);
    const events = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events[0]).toMatchObject({ level: 'info', operation: 'backup instances' });
    expect(events.some((e) => e.operation === 'incus-request' && String(e.message).startsWith('incus GET /1.0/instances/a2') && e.status === 200 && e.resource === undefined)).toBe(true);
    const done = events.find((e) => e.level === 'info' && String(e.resource).includes('a2') && String(e.message).startsWith('done'));
    expect(done).toBeDefined();
    expect(Number(done!.bytes)).toBeGreaterThan(1000);
    expect(Number(done!.durationMs)).toBeGreaterThan(0);
    expect(events.at(-1)).toMatchObject({ message: 'end', level: 'info', exitCode: 0, counts: { ok: 1 } });
    expect(events.filter((e) => e.operation === 'result')).toEqual([
      expect.objectContaining({ level: 'info', resource: `instance ${P}/a2`, result: 'ok', version: expect.stringMatching(/^\d{8}T\d{6}Z$/), bytes: done!.bytes }),
    ]);
    expect(statSync(join(target.dir, 'logs', 'nightly')).mode & 0o777).toBe(0o700);
    expect(statSync(log).mode & 0o777).toBe(0o600);

    // A second run into the same file, with a name that is not there: the failure with its
    // reason and hint, and an end record that says the run had problems.
    const aside = tempTarget();
    try {
      const bad = await cli(['backup', 'instances', 'a2', 'nope', '--log-file', log, '--project', P, '--target', aside.uri]);
      expect(bad.exitCode).toBe(3);
    } finally {
      aside.dispose();
    }
    const all = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const second = all.slice(events.length);
    expect(new Set(second.map((e) => e.run)).size).toBe(1);
    expect(second[0]!.run).not.toBe(events[0]!.run);
    expect(second).toContainEqual(
      expect.objectContaining({ level: 'error', operation: 'result', resource: `instance ${P}/nope`, result: 'failed', error: `instance ${P}/nope does not exist`, hint: expect.stringContaining('incus list') }),
    );
    expect(second.at(-1)).toMatchObject({ message: 'end', level: 'warn', exitCode: 3, counts: { ok: 1, failed: 1 } });
  });

  it('finishes the run, and cleans up, when whoever reads its output goes away (`| head -1`)', async () => {
    const before = parseJson<unknown[]>((await cli(['list', 'instances', 'a1', '--project', P, '--target', target.uri, '--output', 'json'])).stdout).length;
    const run = cliSpawn(['backup', 'instances', 'a1', '--project', P, '--target', target.uri]);
    // Both pipes closed after the first line: every later write fails with EPIPE.
    run.stderr!.once('data', () => {
      run.stderr!.destroy();
      run.stdout!.destroy();
    });
    const r = await run;
    expect(r.exitCode).toBe(0);
    const after = parseJson<unknown[]>((await cli(['list', 'instances', 'a1', '--project', P, '--target', target.uri, '--output', 'json'])).stdout).length;
    expect(after).toBe(before + 1);
    // Nothing of the run is left: no target lock, no temporary snapshot or copy on the host.
    expect(readdirSync(target.dir).filter((f) => f.startsWith('.lock'))).toEqual([]);
    expect((await instanceNames(P)).filter((n) => n.startsWith('ibtmp-'))).toEqual([]);
    expect((await snapshotNames(P, 'a1')).filter((n) => n.startsWith('ibtmp-'))).toEqual([]);
  });

  it('says when there is nothing to back up, and leaves the target alone', async () => {
    const empty = `${P}-empty`;
    await incus('project', 'create', empty);
    try {
      const fresh = join(target.dir, 'never-made');
      const r = await cli(['backup', 'instances', '--project', empty, '--target', `dir:${fresh}`]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stderr).toMatch(new RegExp(`warning: nothing to back up in project ${empty}`));
      expect(existsSync(fresh)).toBe(false);
    } finally {
      await incus('project', 'delete', empty);
    }
  });

  it('refuses a log file it cannot write before doing anything: exit 2, one line', async () => {
    const file = join(target.dir, 'ib.jsonl');
    writeFileSync(file, '');
    const backups = async () => parseJson<unknown[]>((await cli(['list', 'instances', 'a2', '--project', P, '--target', target.uri, '--output', 'json'])).stdout).length;
    const before = await backups();
    const r = await cli(['backup', 'instances', 'a2', '--log-file', join(file, 'inside.jsonl'), '--project', P, '--target', target.uri]);
    expect(await backups()).toBe(before);
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/^Error: cannot write the log file \S+inside\.jsonl: /m);
    expect(r.stderr).toMatch(/^Hint: check --log-file/m);
    expect(r.stderr).not.toMatch(/Bug:|\n\s+at /);
    // Every command that offers --log-file honours it, list and config show included.
    for (const cmd of [['list'], ['config', 'show']]) {
      const bad = await cli([...cmd, '--log-file', join(file, 'inside.jsonl'), '--project', P, '--target', target.uri]);
      expect(bad.exitCode, `${cmd.join(' ')}: ${bad.stderr}`).toBe(2);
      expect(bad.stderr).toMatch(/^Error: cannot write the log file \S+inside\.jsonl: /m);
      const log = join(target.dir, `${cmd[0]}.jsonl`);
      const ok = await cli([...cmd, '--log-file', log, '--project', P, '--target', target.uri]);
      expect(ok.exitCode, ok.stderr).toBe(0);
      expect(readFileSync(log, 'utf8')).toContain(`"message":"start: incus-backup ${cmd.join(' ')}"`);
    }
  });
});
