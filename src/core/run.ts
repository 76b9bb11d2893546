import type { IncusApi } from '../incus/api.js';
import type { Backend } from '../backends/types.js';

/** Progress of one resource; the output layer decides how it looks (bar, spinner, plain lines). */
export interface Task {
  /** A step with no byte count (staging on the server, importing, snapshotting). */
  phase(text: string): void;
  /** Bytes moved so far, against an optional total. */
  bytes(done: number, total?: number): void;
  end(ok: boolean, text?: string): void;
}

export interface Ui {
  info(msg: string): void;
  warn(msg: string): void;
  task(label: string): Task;
  /** A wait with no byte count and no resource of its own (listing a target, planning). */
  wait<T>(text: string, fn: () => Promise<T>): Promise<T>;
}

/** What the core flows need, injected so commands stay thin and tests can swap parts. */
export interface RunContext {
  api: IncusApi;
  backend: Backend;
  ui: Ui;
  /** Aborted on SIGINT/SIGTERM: streams stop, then cleanup runs unaborted. */
  signal: AbortSignal;
}

/** LIFO undo steps, each run even if an earlier one fails; failures are reported, not thrown. */
export class Cleanup {
  private steps: { what: string; fn: () => Promise<void> }[] = [];

  push(what: string, fn: () => Promise<void>): () => void {
    const step = { what, fn };
    this.steps.push(step);
    return () => {
      this.steps = this.steps.filter((s) => s !== step);
    };
  }

  /** Runs one registered step now (e.g. the temporary snapshot as soon as it was copied). */
  async runNow(remove: () => void, fn: () => Promise<void>): Promise<void> {
    remove();
    await fn();
  }

  /** Runs every step; resolves to whether all of them succeeded. */
  async run(warn: (msg: string) => void): Promise<boolean> {
    let ok = true;
    while (this.steps.length) {
      const s = this.steps.pop()!;
      try {
        await s.fn();
      } catch (e) {
        ok = false;
        warn(`cleanup failed: ${s.what}: ${(e as Error).message}`);
      }
    }
    return ok;
  }
}

/** Steps that a second Ctrl-C must not cut in half (see main in cli.ts), by label. */
const unbreakable = new Map<symbol, string>();

/**
 * Runs `fn` as a step that a second Ctrl-C, which otherwise quits at once, does not cut short:
 * a replace renames the current resource aside and then the restored one in, and quitting
 * between the two would leave the original under a temporary name.
 */
export async function unbreakableStep<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const id = Symbol(label);
  unbreakable.set(id, label);
  try {
    return await fn();
  } finally {
    unbreakable.delete(id);
  }
}

/** The unbreakable steps running now. */
export function unbreakableSteps(): string[] {
  return [...unbreakable.values()];
}
