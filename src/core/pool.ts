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
        results[i] = { status: 'rejected', reason: new InterruptedError('interrupted before this item was started; nothing was done for it') };
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
