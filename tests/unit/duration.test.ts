import { describe, expect, it } from 'vitest';
import { parseLockWait } from '../../src/backends/dir/lock.js';
import { UsageError } from '../../src/errors.js';

describe('parseLockWait (--lock-wait)', () => {
  it.each([
    ['0', 0],
    ['500ms', 500],
    ['5s', 5_000],
    ['10m', 600_000],
    ['1h', 3_600_000],
    ['1h30m', 5_400_000],
    ['2m5s', 125_000],
    [' 30s ', 30_000],
  ])('%s is %d ms', (s, ms) => {
    expect(parseLockWait(s)).toBe(ms);
  });

  it.each(['', '10', '5x', '-5s', '1.5s', 's', '5s5s', '1d', '5 s'])('rejects %j as a usage error', (s) => {
    expect(() => parseLockWait(s)).toThrow(UsageError);
  });

  it('names the bad value and the units in the error', () => {
    const err = (() => {
      try {
        parseLockWait('10');
      } catch (e) {
        return e as UsageError;
      }
      throw new Error('no error');
    })();
    expect(err.message).toContain('"10"');
    expect(err.exitCode).toBe(2);
    expect(err.hint).toMatch(/30s/);
  });
});
