import { execa } from 'execa';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliPath, incus, launch, state, tempTarget, testProject } from './helpers.js';

/**
 * The CLI on a real terminal: `script` gives it a pty, so the spinner, the progress bars and
 * the confirmation prompt are the ones people see. Output is capped: a redraw loop shows up
 * as a failure, not as a hung test.
 */
async function onTerminal(
  args: string[],
  opts: { columns?: number; answer?: string; env?: Record<string, string>; stdoutTo?: string } = {},
): Promise<{ exitCode: number; text: string; bytes: number; raw: string }> {
  const quoted = ['node', cliPath, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ') + (opts.stdoutTo ? ` >'${opts.stdoutTo}'` : '');
  const size = opts.columns ? `stty cols ${opts.columns} rows 40; ` : '';
  const child = execa('script', ['-qec', `${size}${quoted}`, '/dev/null'], { reject: false, timeout: 60_000, maxBuffer: 1 << 20, env: { TERM: 'xterm', ...opts.env } });
  if (opts.answer !== undefined) {
    // Answer once the prompt is up.
    const answer = opts.answer;
    let sent = false;
    child.stdout!.on('data', (d: Buffer) => {
      if (!sent && /\(y\/N\)/.test(d.toString())) {
        sent = true;
        child.stdin!.write(answer);
      }
    });
  } else child.stdin!.end();
  const r = await child;
  const raw = String(r.stdout);
  // What a person reads: escape sequences dropped, carriage-return redraws as lines.
  const text = raw.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '\n');
  return { exitCode: r.exitCode ?? -1, text, bytes: raw.length, raw };
}

let project: { name: string; dispose: () => Promise<void> };
let target: ReturnType<typeof tempTarget>;
let P: string;

beforeAll(async () => {
  project = await testProject('tty');
  P = project.name;
  target = tempTarget();
  await launch(P, 't1');
});

afterAll(async () => {
  await project?.dispose();
  target?.dispose();
});

describe('on a terminal', () => {
  it('shows a progress bar and a table, and asks before a restore; "y" restores', async () => {
    const b = await onTerminal(['backup', 'instances', 't1', '--project', P, '--target', target.uri], { columns: 120 });
    expect(b.exitCode, b.text).toBe(0);
    expect(b.text).toMatch(/instance .*t1 .*ETA/);
    expect(b.text).toMatch(/│ instance │/);
    expect(b.bytes).toBeLessThan(200_000);

    const r = await onTerminal(['restore', 'instance', 't1', '--target-name', 't2', '--project', P, '--target', target.uri], { columns: 120, answer: 'y\r' });
    expect(r.exitCode, r.text).toBe(0);
    expect(r.text).toContain('Restore 1 item(s)? (y/N)');
    expect(await state(P, 't2')).toBe('Running');
    await incus('delete', '-f', 't2', '--project', P);
  });

  it('shows help with emphasis on a terminal (in a pipe it has none: cli.test.ts)', async () => {
    const r = await onTerminal(['restore', 'volumes', '--help']);
    expect(r.exitCode).toBe(0);
    expect(r.raw).toMatch(/\x1b\[1m━━━ Usage/);
    expect(r.text).toMatch(/Restore several custom volumes/);
  });

  it('with --output json a person is shown the plan (on stderr) before the question; the results are the document', async () => {
    const out = join(target.dir, 'restore.json');
    const r = await onTerminal(['restore', 'instance', 't1', '--target-name', 't6', '--no-start', '--output', 'json', '--project', P, '--target', target.uri], {
      columns: 120,
      answer: 'y\r',
      stdoutTo: out,
    });
    expect(r.exitCode, r.text).toBe(0);
    // What the terminal showed (stdout went to the file): the plan, then the question.
    expect(r.text).toMatch(/│ instance t1 +│ [^\n]*t6/);
    expect(r.text.indexOf('│ instance t1')).toBeLessThan(r.text.indexOf('Restore 1 item(s)? (y/N)'));
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual([expect.objectContaining({ type: 'instance', name: 't6', status: 'ok' })]);
    await incus('delete', '-f', 't6', '--project', P);
  });

  it('answering no changes nothing', async () => {
    const r = await onTerminal(['restore', 'instance', 't1', '--target-name', 't3', '--project', P, '--target', target.uri], { columns: 120, answer: 'n\r' });
    expect(r.exitCode).toBe(1);
    expect(r.text).toContain('cancelled: nothing was changed');
    await expect(incus('info', 't3', '--project', P)).rejects.toThrow();
  });

  it('works on a terminal that reports no width (ora and enquirer used to redraw forever there)', async () => {
    const r = await onTerminal(['restore', 'instance', 't1', '--target-name', 't4', '--project', P, '--target', target.uri], { answer: 'y\r' });
    expect(r.exitCode, r.text.slice(0, 2000)).toBe(0);
    expect(r.bytes).toBeLessThan(200_000);
    expect(r.text).toMatch(/t4: done/);
    expect(await state(P, 't4')).toBe('Running');
  });

  it('Ctrl-C at the question is an interrupt (exit 130), not a bug; nothing is changed', async () => {
    const r = await onTerminal(['restore', 'instance', 't1', '--target-name', 't5', '--project', P, '--target', target.uri], { columns: 120, answer: '\x03' });
    expect(r.exitCode, r.text).toBe(130);
    expect(r.text).toContain('interrupted at the question: nothing was changed');
    expect(r.text).not.toContain('Bug');
    await expect(incus('info', 't5', '--project', P)).rejects.toThrow();
  });

  it('end of input (Ctrl-D) at the question cancels with exit 1, not a silent exit 0', async () => {
    const r = await onTerminal(['restore', 'instance', 't1', '--target-name', 't7', '--project', P, '--target', target.uri], { columns: 120, answer: '\x04' });
    expect(r.exitCode, r.text).toBe(1);
    expect(r.text).toContain('cancelled: no answer (end of input); nothing was changed');
    await expect(incus('info', 't7', '--project', P)).rejects.toThrow();
  });

  it('prints warnings on a terminal too, and NO_COLOR leaves the spinner and the question plain', async () => {
    // The warnings of a run's last moments used to stay in the progress bars' queue.
    const b = await onTerminal(['backup', 'instances', 't1', '--no-snapshot', '--project', P, '--target', target.uri], { columns: 120 });
    expect(b.exitCode, b.text).toBe(0);
    expect(b.text).toMatch(/warning: instance .*t1: --no-snapshot exports the live filesystem/);

    const r = await onTerminal(['restore', 'instance', 't1', '--target-name', 't6', '--project', P, '--target', target.uri], { columns: 120, answer: 'n\r', env: { NO_COLOR: '1' } });
    expect(r.exitCode, r.text).toBe(1);
    expect(r.text).toContain('Restore 1 item(s)? (y/N)');
    expect(r.raw).not.toMatch(/\x1b\[(3\d|1|2|22|39)m/);
  });
});
