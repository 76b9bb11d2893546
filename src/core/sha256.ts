import { createHash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/**
 * sha256 computed on a helper thread, so that hashing (about half a second per GiB) does not
 * hold up the thread that moves the bytes: a restore from a directory target spends most of
 * its time on the main thread, and hashing there made it ~40 % slower.
 *
 * Each hash copies its bytes into a small ring of shared 1 MiB slots; the helper hashes a full
 * slot and hands it back. Nothing is allocated per chunk (no garbage for the collector), memory
 * is bounded by the ring, and a producer faster than the helper waits for a free slot. Streams
 * shorter than one slot (manifests, config) are hashed inline and never start the helper.
 */

const SLOT = 1 << 20;
const SLOTS = 4;

/** The helper's code: one sha256 state per open hash, fed from that hash's ring. */
const HELPER = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const open = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'open') open.set(m.id, { hash: createHash('sha256'), ring: new Uint8Array(m.ring) });
  else if (m.op === 'update') {
    const s = open.get(m.id);
    s.hash.update(s.ring.subarray(m.slot * ${SLOT}, m.slot * ${SLOT} + m.len));
    parentPort.postMessage({ id: m.id, slot: m.slot });
  } else if (m.op === 'digest') {
    const s = open.get(m.id);
    open.delete(m.id);
    parentPort.postMessage({ id: m.id, hex: s.hash.digest('hex') });
  } else if (m.op === 'drop') open.delete(m.id);
});
`;

type Reply = { id: number; slot: number } | { id: number; hex: string };

/** The one helper thread, shared by every hash; it keeps the process alive only while in use. */
class Helper {
  private worker?: Worker;
  private readonly listeners = new Map<number, { reply: (m: Reply) => void; fail: (e: Error) => void }>();
  private nextId = 1;

  open(reply: (m: Reply) => void, fail: (e: Error) => void, ring: SharedArrayBuffer): number {
    const id = this.nextId++;
    if (!this.worker) {
      const w = new Worker(HELPER, { eval: true, name: 'sha256', resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 } });
      w.on('message', (m: Reply) => this.listeners.get(m.id)?.reply(m));
      const broken = (e: Error) => {
        this.worker = undefined;
        const all = [...this.listeners.values()];
        this.listeners.clear();
        for (const l of all) l.fail(e);
      };
      w.on('error', broken);
      w.on('exit', (code) => broken(new Error(`the sha256 helper thread exited (code ${code})`)));
      this.worker = w;
    }
    if (this.listeners.size === 0) this.worker.ref();
    this.listeners.set(id, { reply, fail });
    this.worker.postMessage({ op: 'open', id, ring });
    return id;
  }

  post(msg: { op: 'update'; id: number; slot: number; len: number } | { op: 'digest' | 'drop'; id: number }): void {
    this.worker?.postMessage(msg);
  }

  close(id: number): void {
    if (!this.listeners.delete(id)) return;
    if (this.listeners.size === 0) this.worker?.unref();
  }
}

const helper = new Helper();

/**
 * One sha256; feed it with update() (wait when it returns a promise), end with digest() or
 * dispose(). With `offThread: false` it hashes inline: the helper pays off only where the main
 * thread sets the pace (restores); for backups, whose pace is set by Incus or restic, inline
 * measured as fast and a few MiB smaller.
 */
export class Sha256 {
  private readonly inline?: Hash;
  private ring?: Buffer;
  private shared?: SharedArrayBuffer;
  private slot = 0;
  private fill = 0;
  private id?: number;
  private readonly busy = new Set<number>();
  private waiter?: { slot: number; resolve: () => void; reject: (e: Error) => void };
  private result?: { resolve: (hex: string) => void; reject: (e: Error) => void };
  private failure?: Error;
  private ended = false;

  constructor(opts: { offThread?: boolean } = {}) {
    if (opts.offThread === false) this.inline = createHash('sha256');
  }

  /** Takes the bytes (copied: the caller may reuse `chunk`). A returned promise means: wait before the next update. */
  update(chunk: Uint8Array): Promise<void> | undefined {
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) throw new Error('sha256 updated after digest()');
    if (this.inline) {
      this.inline.update(chunk);
      return undefined;
    }
    let off = 0;
    while (off < chunk.length) {
      if (this.busy.has(this.slot)) {
        const rest = chunk.subarray(off);
        return new Promise<void>((resolve, reject) => (this.waiter = { slot: this.slot, resolve, reject })).then(() => this.update(rest));
      }
      if (!this.ring) {
        this.shared = new SharedArrayBuffer(SLOT * SLOTS);
        this.ring = Buffer.from(this.shared);
      }
      const n = Math.min(SLOT - this.fill, chunk.length - off);
      this.ring.set(chunk.subarray(off, off + n), this.slot * SLOT + this.fill);
      this.fill += n;
      off += n;
      if (this.fill === SLOT) this.send();
    }
    return undefined;
  }

  async digest(): Promise<string> {
    if (this.failure) throw this.failure;
    this.ended = true;
    if (this.inline) return this.inline.digest('hex');
    if (this.id === undefined) {
      // Never filled a slot: hash the little there is right here.
      return createHash('sha256')
        .update(this.ring ? this.ring.subarray(0, this.fill) : Buffer.alloc(0))
        .digest('hex');
    }
    if (this.fill > 0) this.send();
    const hex = new Promise<string>((resolve, reject) => (this.result = { resolve, reject }));
    helper.post({ op: 'digest', id: this.id });
    return hex;
  }

  /** Gives up (the stream failed): frees the helper's state so it can let the process exit. */
  dispose(): void {
    if (this.id === undefined || this.ended) return;
    this.ended = true;
    helper.post({ op: 'drop', id: this.id });
    helper.close(this.id);
    this.fail(new Error('sha256 disposed'));
  }

  private send(): void {
    this.id ??= helper.open(
      (m) => this.reply(m),
      (e) => this.fail(e),
      this.shared!,
    );
    helper.post({ op: 'update', id: this.id, slot: this.slot, len: this.fill });
    this.busy.add(this.slot);
    this.slot = (this.slot + 1) % SLOTS;
    this.fill = 0;
  }

  private reply(m: Reply): void {
    if ('hex' in m) {
      helper.close(m.id);
      this.result?.resolve(m.hex);
      return;
    }
    this.busy.delete(m.slot);
    if (this.waiter?.slot === m.slot) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve();
    }
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.waiter?.reject(e);
    this.waiter = undefined;
    this.result?.reject(e);
    this.result = undefined;
  }
}
