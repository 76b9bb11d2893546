import { describe, expect, it } from 'vitest';
import { Cleanup } from '../../src/core/run.js';
import type { IncusClient } from '../../src/incus/client.js';
import { IncusConnectionError, IncusError } from '../../src/incus/errors.js';

const away = () => new IncusConnectionError('cannot reach Incus: no daemon listening at /s', 'is incusd running?', undefined, true);

/** A client whose daemon comes back (or not) when waited for, counting the waits. */
function client(comesBack: boolean) {
  const c = { waits: 0, waitBack: async () => (c.waits++, comesBack) };
  return c;
}

describe('cleanup when Incus went away', () => {
  it('waits for the daemon and runs the step again once it is back', async () => {
    const incus = client(true);
    const cleanup = new Cleanup(incus as unknown as IncusClient);
    let tries = 0;
    cleanup.push('rename web back', async () => {
      if (++tries === 1) throw away();
    });
    const warnings: string[] = [];
    expect(await cleanup.run((m) => warnings.push(m))).toBe(true);
    expect(tries).toBe(2);
    expect(incus.waits).toBe(1);
    expect(warnings[0]).toMatch(/^Incus is not answering \(cannot reach Incus.*\); waiting up to 2 min for it to come back to rename web back/);
  });

  it('gives up on a step after three tries, and when the daemon stays away', async () => {
    for (const comesBack of [true, false]) {
      const incus = client(comesBack);
      const cleanup = new Cleanup(incus as unknown as IncusClient);
      let tries = 0;
      cleanup.push('delete copy', async () => {
        tries++;
        throw away();
      });
      const warnings: string[] = [];
      expect(await cleanup.run((m) => warnings.push(m))).toBe(false);
      expect(tries).toBe(comesBack ? 3 : 1);
      expect(warnings.at(-1)).toMatch(/^cleanup failed: delete copy: cannot reach Incus/);
    }
  });

  it('does not wait on an answer from Incus, or without a client', async () => {
    for (const [incus, error] of [
      [client(true), new IncusError(409, 'Instance is busy', 'DELETE', '/1.0/instances/x')],
      [undefined, away()],
    ] as const) {
      const cleanup = new Cleanup(incus as unknown as IncusClient | undefined);
      let tries = 0;
      cleanup.push('delete copy', async () => {
        tries++;
        throw error;
      });
      expect(await cleanup.run(() => undefined)).toBe(false);
      expect(tries).toBe(1);
      if (incus) expect(incus.waits).toBe(0);
    }
  });

  it('keeps a step that failed when run early (a thaw), for run() to try again', async () => {
    const cleanup = new Cleanup(client(true) as unknown as IncusClient);
    let tries = 0;
    const thaw = async () => {
      if (++tries === 1) throw away();
    };
    const remove = cleanup.push('unfreeze web', thaw);
    await expect(cleanup.runNow(remove, thaw)).rejects.toThrow(/cannot reach Incus/);
    expect(await cleanup.run(() => undefined)).toBe(true);
    expect(tries).toBe(2);
    // One that succeeded early is not run again.
    const done = new Cleanup();
    let runs = 0;
    const step = async () => void runs++;
    await done.runNow(done.push('drop snapshot', step), step);
    expect(await done.run(() => undefined)).toBe(true);
    expect(runs).toBe(1);
  });
});
