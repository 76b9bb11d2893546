import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freeBytes, STAGING_FULL_BELOW, stagingDir, stagingFullBefore, stagingFullDuring, StuckStaging } from '../../src/incus/staging.js';

const MiB = 1024 * 1024;

describe("watching Incus's backups directory while it stages", () => {
  it('is the backups directory beside the socket', () => {
    expect(stagingDir('/var/lib/incus/unix.socket')).toBe('/var/lib/incus/backups');
    expect(stagingDir('/srv/incus/unix.socket')).toBe('/srv/incus/backups');
  });

  it('says stuck only after the free space stayed below the mark, unchanged, for 10 s', () => {
    const d = new StuckStaging();
    expect(d.sample(5 * MiB, 0)).toBe(false);
    expect(d.sample(5 * MiB, 9_999)).toBe(false);
    expect(d.sample(5 * MiB, 10_000)).toBe(true);
  });

  it("says stuck though the rest of a busy host moves the free space back and forth (logs)", () => {
    const d = new StuckStaging();
    const noise = [0, 64 * 1024, -200 * 1024, 512 * 1024, -900 * 1024];
    for (let t = 0; t < 10_000; t += 1000) expect(d.sample(5 * MiB + noise[(t / 1000) % noise.length]!, t)).toBe(false);
    expect(d.sample(5 * MiB, 10_000)).toBe(true);
  });

  it('never says stuck while the backup is still being written (megabytes a second)', () => {
    const d = new StuckStaging();
    let free = 31 * MiB;
    for (let t = 0; t <= 15_000; t += 1000) {
      expect(d.sample(free, t)).toBe(false);
      free -= 2 * MiB;
    }
  });

  it('never says stuck with room left, or when the space cannot be read', () => {
    const d = new StuckStaging();
    for (let t = 0; t <= 60_000; t += 1000) expect(d.sample(STAGING_FULL_BELOW, t)).toBe(false);
    const u = new StuckStaging();
    for (let t = 0; t <= 60_000; t += 1000) expect(u.sample(undefined, t)).toBe(false);
  });

  it('starts counting again when space comes back and fills again', () => {
    const d = new StuckStaging();
    expect(d.sample(0, 0)).toBe(false);
    expect(d.sample(1 << 30, 5_000)).toBe(false);
    expect(d.sample(0, 6_000)).toBe(false);
    expect(d.sample(0, 15_000)).toBe(false);
    expect(d.sample(0, 16_000)).toBe(true);
  });

  it('reads the free space of a real directory, and nothing of a missing one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ib-staging-'));
    try {
      expect(await freeBytes(dir)).toBeGreaterThan(0);
      expect(await freeBytes(join(dir, 'missing'))).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('words both refusals with the cause, the place and what to do', () => {
    const before = stagingFullBefore('/var/lib/incus/backups', 3 * MiB);
    expect(before.message).toBe(
      "Incus's backups directory /var/lib/incus/backups has only 3.0 MiB free: Incus 6.0 never finishes a backup it cannot write there",
    );
    expect(before.exitCode).toBe(1);
    expect(before.hint).toMatch(/storage\.backups_volume .*; if an earlier backup filled it, restart incusd/);
    const during = stagingFullDuring('/var/lib/incus/backups', 0, 'instance prod/web');
    expect(during.message).toBe(
      "Incus's backups directory /var/lib/incus/backups filled up (0 B free) while staging instance prod/web, and Incus 6.0 never finishes a backup it cannot write",
    );
    expect(during.hint).toMatch(/then restart incusd .*release its file; nothing half-done was kept$/);
  });
});
