import { describe, expect, it, vi } from 'vitest';
import { gcFunction, RECLAIM_EVERY, Reclaimer } from '../../src/core/reclaim.js';

describe('Reclaimer', () => {
  it('asks for one young-generation collection per RECLAIM_EVERY bytes streamed', () => {
    const gc = vi.fn();
    const r = new Reclaimer(gc);
    const chunk = 1024 * 1024;
    for (let sent = 0; sent < 3 * RECLAIM_EVERY + chunk; sent += chunk) r.add(chunk);
    expect(gc).toHaveBeenCalledTimes(3);
    expect(gc).toHaveBeenCalledWith({ type: 'minor' });
  });

  it("uses V8's own gc, which is there without --expose-gc and collects", () => {
    const gc = gcFunction();
    expect(typeof gc).toBe('function');
    const before = process.memoryUsage().arrayBuffers;
    (() => {
      for (let i = 0; i < 16; i++) Buffer.alloc(1 << 20).fill(i);
    })();
    gc({ type: 'major' });
    expect(process.memoryUsage().arrayBuffers).toBeLessThan(before + (8 << 20));
    expect(gcFunction()).toBe(gc);
  });
});
