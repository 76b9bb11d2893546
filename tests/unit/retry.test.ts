import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { IncusClient, stillWaitingNote } from '../../src/incus/client.js';
import { IncusError } from '../../src/incus/errors.js';

let server: Server | undefined;
let dir: string;
afterEach(async () => {
  await new Promise((r) => server?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

/** A stand-in daemon on a UNIX socket answering with a scripted list of statuses. */
async function daemon(statuses: number[]): Promise<{ socket: string; hits: () => number }> {
  dir = mkdtempSync(join(tmpdir(), 'ib-sock-'));
  const socket = join(dir, 'unix.socket');
  let n = 0;
  server = createServer((req, res) => {
    const status = statuses[Math.min(n++, statuses.length - 1)]!;
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(status < 400 ? { type: 'sync', status_code: 200, metadata: { ok: req.method } } : { type: 'error', error_code: status, error: `status ${status}` }));
  });
  await new Promise<void>((r) => server!.listen(socket, r));
  return { socket, hits: () => n };
}

describe('Incus client retries', () => {
  it('retries a read after transient 503s, logging each retry', async () => {
    const d = await daemon([503, 503, 200]);
    const retries: string[] = [];
    const c = new IncusClient(d.socket, undefined, (m) => retries.push(m));
    expect(await c.get('/1.0/x')).toEqual({ ok: 'GET' });
    await c.close();
    expect(d.hits()).toBe(3);
    expect(retries).toHaveLength(2);
    expect(retries[0]).toMatch(/GET \/1\.0\/x failed \(Incus: status 503\); retry 1 of 3/);
  });

  it('gives up after a bounded number of retries', async () => {
    const d = await daemon([503]);
    const c = new IncusClient(d.socket, undefined, () => undefined);
    await expect(c.get('/1.0/x')).rejects.toBeInstanceOf(IncusError);
    await c.close();
    expect(d.hits()).toBe(4);
  });

  it('never retries 4xx answers or writes', async () => {
    const d = await daemon([404, 503, 200]);
    const c = new IncusClient(d.socket, undefined, () => undefined);
    await expect(c.get('/1.0/x')).rejects.toMatchObject({ status: 404 });
    await expect(c.request('POST', '/1.0/x', { body: {} })).rejects.toMatchObject({ status: 503 });
    await c.close();
    expect(d.hits()).toBe(2);
  });
});

describe('a long operation', () => {
  it('is reported every 10 waits that ran out (5 minutes), with where to look', () => {
    expect(stillWaitingNote(0, 0, 'Backing up instance', '/var/lib/incus/backups')).toBeUndefined();
    expect(stillWaitingNote(9, 270_000, 'Backing up instance', '/var/lib/incus/backups')).toBeUndefined();
    expect(stillWaitingNote(10, 300_400, 'Backing up instance', '/var/lib/incus/backups')).toBe(
      'Incus is still at "Backing up instance" after 5 min; if it never ends, look at the free space in Incus\'s backups directory (/var/lib/incus/backups) and at `incus operation list`',
    );
    expect(stillWaitingNote(11, 330_000, 'Backing up instance', '/var/lib/incus/backups')).toBeUndefined();
    expect(stillWaitingNote(20, 45_000, undefined, '/var/lib/incus/backups')).toMatch(/^Incus is still at "an operation" after 45 s;/);
  });
});
