/**
 * Hands the memory of streamed chunks back while a large archive flows through.
 *
 * Every chunk of an archive is a Buffer whose bytes live outside V8's heap and are freed only
 * when a garbage collection finds the Buffer dead. A stream makes very little heap garbage per
 * MiB, so on its own V8 collects only when external memory has grown by tens of MiB: measured,
 * 20–40 MiB of dead chunks at the peak of a restore. A young-generation collection every
 * RECLAIM_EVERY bytes bounds that (restore from dir, 770 MiB: peak RSS 130 → 107 MiB, time
 * unchanged). It needs `gc`, which bin/incus-backup exposes (`--expose-gc`); without it (tests
 * importing the modules, `node dist/cli.js`) this does nothing and memory is merely higher.
 */
export const RECLAIM_EVERY = 8 * 1024 * 1024;

type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

export class Reclaimer {
  private sinceLast = 0;
  private readonly gc = (globalThis as { gc?: GcFunction }).gc;

  /** Counts `bytes` more streamed; collects the young generation once RECLAIM_EVERY is reached. */
  add(bytes: number): void {
    if (!this.gc) return;
    this.sinceLast += bytes;
    if (this.sinceLast < RECLAIM_EVERY) return;
    this.sinceLast = 0;
    this.gc({ type: 'minor' });
  }
}
