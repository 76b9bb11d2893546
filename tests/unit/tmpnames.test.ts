import { describe, expect, it } from 'vitest';
import { asideName, isStaleAsideName, isStaleTmpName, tmpName } from '../../src/core/tmpnames.js';
import { pidAlive } from '../../src/core/fsutil.js';

/** A pid no process has right now. */
function deadPid(): number {
  for (let pid = 4_000_000; ; pid++) if (!pidAlive(pid)) return pid;
}

describe('temporary names', () => {
  it('tells the leftovers of a run that is gone from those of live runs', () => {
    expect(tmpName()).toMatch(new RegExp(`^ibtmp-${process.pid}-[0-9a-f]{8}$`));
    expect(asideName()).toMatch(new RegExp(`^ibold-${process.pid}-[0-9a-f]{6}$`));
    const dead = deadPid();
    expect(isStaleTmpName(`ibtmp-${dead}-0a1b2c3d`)).toBe(true);
    expect(isStaleAsideName(`ibold-${dead}-0a1b2c`)).toBe(true);
    // This run's own, and a live process's, are never stale.
    for (const pid of [process.pid, process.ppid]) {
      expect(isStaleTmpName(`ibtmp-${pid}-0a1b2c3d`)).toBe(false);
      expect(isStaleAsideName(`ibold-${pid}-0a1b2c`)).toBe(false);
    }
    // Names of the user's that only look alike.
    for (const name of [`ibold-${dead}`, `ibold-${dead}-x-y`, 'ibold-web', `xibold-${dead}-0a1b2c`]) expect(isStaleAsideName(name)).toBe(false);
    expect(isStaleAsideName(`ibtmp-${dead}-0a1b2c`)).toBe(false);
  });
});
