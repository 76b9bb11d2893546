import type { IncusApi } from '../incus/api.js';
import { COMEBACK_MS, incusAway, type IncusClient } from '../incus/client.js';
import type { Backend } from '../backends/types.js';

/** Progress of one resource; the output layer decides how it looks (bar, spinner, plain lines). */
export interface Task {
  /** A step with no byte count (staging on the server, importing, snapshotting). */
  phase(text: string): void;
  /** Bytes moved so far, against an optional total. */
  bytes(done: number, total?: number): void;
  /** `later`: not done now, to be tried again in this run (`text` says why). */
  end(ok: boolean | 'later', text?: string): void;
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

/**
 * LIFO undo steps, each run even if an earlier one fails; failures are reported, not thrown.
 * With `incus`, a step that fails because the daemon went away (a restart: a package upgrade
 * during the nightly run) is tried again once it is back, for up to COMEBACK_MS: a restore's
 * original set aside, or a temporary copy, is then put right instead of left for the next run.
 */
export class Cleanup {
  private steps: { what: string; fn: () => Promise<void> }[] = [];

  constructor(private readonly incus?: IncusClient) {}

  push(what: string, fn: () => Promise<void>): () => void {
    const step = { what, fn };
    this.steps.push(step);
    return () => {
      this.steps = this.steps.filter((s) => s !== step);
    };
  }

  /**
   * Runs one registered step now (e.g. the temporary snapshot as soon as it was copied). It is
   * unregistered only once it succeeded: one that fails (the daemon went away under a thaw)
   * stays for run() to try again, so an instance is never left frozen.
   */
  async runNow(remove: () => void, fn: () => Promise<void>): Promise<void> {
    await fn();
    remove();
  }

  /** Runs every step; resolves to whether all of them succeeded. */
  async run(warn: (msg: string) => void): Promise<boolean> {
    let ok = true;
    while (this.steps.length) {
      const s = this.steps.pop()!;
      for (let attempt = 1; ; attempt++) {
        try {
          await s.fn();
          break;
        } catch (e) {
          if (attempt < 3 && (await this.cameBack(e, s.what, warn))) continue;
          ok = false;
          warn(`cleanup failed: ${s.what}: ${(e as Error).message}`);
          break;
        }
      }
    }
    return ok;
  }

  /** Whether `e` was the daemon going away and it is back now (see the class). */
  private async cameBack(e: unknown, what: string, warn: (msg: string) => void): Promise<boolean> {
    if (!this.incus || !incusAway(e)) return false;
    warn(`Incus is not answering (${(e as Error).message}); waiting up to ${COMEBACK_MS / 60_000} min for it to come back to ${what}`);
    const back = await this.incus.waitBack();
    if (back) warn(`Incus is back; going on with the cleanup`);
    return back;
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
