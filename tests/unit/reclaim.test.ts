import { afterEach, describe, expect, it, vi } from 'vitest';
import { RECLAIM_EVERY, Reclaimer } from '../../src/core/reclaim.js';

const g = globalThis as { gc?: unknown };
const original = g.gc;

afterEach(() => {
  g.gc = original;
});

describe('Reclaimer', () => {
  it('asks for one young-generation collection per RECLAIM_EVERY bytes streamed', () => {
    const gc = vi.fn();
    g.gc = gc;
    const r = new Reclaimer();
    const chunk = 1024 * 1024;
    for (let sent = 0; sent < 3 * RECLAIM_EVERY + chunk; sent += chunk) r.add(chunk);
    expect(gc).toHaveBeenCalledTimes(3);
    expect(gc).toHaveBeenCalledWith({ type: 'minor' });
  });

  it('does nothing when gc is not exposed', () => {
    delete g.gc;
    const r = new Reclaimer();
    expect(() => r.add(10 * RECLAIM_EVERY)).not.toThrow();
  });
});
