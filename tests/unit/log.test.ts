import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JsonLog } from '../../src/output/log.js';

let dir: string;
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('JSON log file', () => {
  it('makes missing directories (private) one level at a time, and fails at once where none can be made (/proc)', () => {
    dir = mkdtempSync(join(tmpdir(), 'ib-log-'));
    const file = join(dir, 'a', 'b', 'ib.jsonl');
    new JsonLog(file, 'info').write({ level: 'info', message: 'x' });
    expect(statSync(join(dir, 'a', 'b')).mode & 0o777).toBe(0o700);
    expect(readFileSync(file, 'utf8')).toContain('"message":"x"');
    // Node 20's recursive mkdirSync never returns for a path under /proc.
    const started = Date.now();
    expect(() => new JsonLog(`/proc/ib-log-test-${process.pid}/ib.jsonl`)).toThrow();
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('writes one parsable event per line, private, filtered by level', () => {
    dir = mkdtempSync(join(tmpdir(), 'ib-log-'));
    const file = join(dir, 'ib.jsonl');
    const log = new JsonLog(file, 'info');
    log.write({ level: 'debug', message: 'hidden' });
    log.write({ level: 'info', message: 'backed up', resource: 'instance default/web', bytes: 42, durationMs: 7 });
    log.write({ level: 'error', message: 'boom', error: 'IncusError' });
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.message)).toEqual(['backed up', 'boom']);
    expect(lines[0]).toMatchObject({ level: 'info', resource: 'instance default/web', bytes: 42, durationMs: 7 });
    expect(String(lines[0]!.time)).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('rotates by size and keeps N files', () => {
    dir = mkdtempSync(join(tmpdir(), 'ib-log-'));
    const file = join(dir, 'ib.jsonl');
    const log = new JsonLog(file, 'debug', 300, 2);
    for (let i = 0; i < 40; i++) log.write({ level: 'info', message: `event ${i} ${'x'.repeat(40)}` });
    expect(readdirSync(dir).sort()).toEqual(['ib.jsonl', 'ib.jsonl.1', 'ib.jsonl.2']);
    for (const f of readdirSync(dir)) {
      expect(statSync(join(dir, f)).size).toBeLessThanOrEqual(300);
      for (const l of readFileSync(join(dir, f), 'utf8').trim().split('\n')) expect(() => JSON.parse(l)).not.toThrow();
    }
    // The newest event is in the live file, older ones in .1, the oldest kept in .2.
    const last = readFileSync(file, 'utf8').trim().split('\n').pop()!;
    expect(JSON.parse(last).message).toMatch(/^event 39 /);
    const n = (f: string) => Number(/event (\d+)/.exec(readFileSync(join(dir, f), 'utf8'))![1]);
    expect(n('ib.jsonl.2')).toBeLessThan(n('ib.jsonl.1'));
    expect(n('ib.jsonl.1')).toBeLessThan(n('ib.jsonl'));
  });
});
