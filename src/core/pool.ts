import { InterruptedError } from '../errors.js';

/**
 * Runs `fn` over `items` with at most `limit` at once. Results keep the input order, and one
 * failure does not stop the others. Once `signal` is aborted (Ctrl-C, a failed target), items
 * not yet started are not started: they fail with an InterruptedError.
 */
export async function mapPool<T, R>(
  items: T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  signal?: AbortSignal,
): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      if (signal?.aborted) {
        results[i] = { status: 'rejected', reason: notStarted() };
        continue;
      }
      try {
        results[i] = { status: 'fulfilled', value: await fn(items[i]!, i) };
      } catch (reason) {
        results[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** At most `n` holders at a time, served first come, first served. */
export class Semaphore {
  private free: number;
  private readonly queue: (() => void)[] = [];

  constructor(n: number) {
    this.free = n;
  }

  /**
   * Waits for a place; resolves to its release, which may be called more than once. If `signal`
   * was aborted meanwhile, gives the place back and fails like an item mapPool did not start.
   */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.queue.push(resolve));
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next) next();
      else this.free++;
    };
    if (signal?.aborted) {
      release();
      throw notStarted();
    }
    return release;
  }
}

function notStarted(): InterruptedError {
  return new InterruptedError('interrupted before this item was started; nothing was done for it');
}

/** Resolves after `ms`, or at once when `signal` aborts (the caller checks which). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, Math.max(ms, 0));
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
