import { createRequire } from 'node:module';
import { setFlagsFromString } from 'node:v8';
import { Readable } from 'node:stream';
import type { Client } from 'undici';
import { IbError } from '../errors.js';
import { connectionLost, IncusConnectionError, IncusError } from './errors.js';
import { stagingDir } from './staging.js';

const require = createRequire(import.meta.url);
type ClientClass = typeof import('undici').Client;
let loaded: ClientClass | undefined;

/**
 * undici's HTTP/1 client, loaded when a command first talks to Incus: list, verify and prune work
 * on the target alone and never pay for it.
 *
 * Only the client and its request API are loaded, not `require('undici')`: the package's entry
 * point also loads fetch, WebSocket, cookies, caches and their Web IDL machinery, none of which
 * this tool uses (~42 ms to load against ~15 ms, on every command that talks to Incus; measured
 * on the 2-vCPU machine of scripts/bench). undici has no `exports` map, so these paths are
 * reachable; the entry point attaches the request API to the dispatcher exactly like this. If a
 * future undici moves them, the whole package is loaded instead (the unit test
 * `tests/unit/undici-load.test.ts` fails first, so an upgrade notices).
 *
 * It parses HTTP with llhttp compiled to WebAssembly, which V8 re-compiles when hot with its
 * optimising compiler: that took ~30 MiB at its peak here for no measurable speed (the parser
 * handles headers and chunk framing, not the archive's bytes; measured with scripts/bench). So
 * WebAssembly stays on the baseline compiler, set before undici compiles its parser.
 */
export function loadUndiciClient(): ClientClass {
  if (loaded) return loaded;
  setFlagsFromString('--liftoff-only');
  try {
    const Dispatcher = require('undici/lib/dispatcher/dispatcher.js') as { prototype: Record<string, unknown> };
    const Client = require('undici/lib/dispatcher/client.js') as ClientClass;
    if (typeof Dispatcher.prototype.request !== 'function') Object.assign(Dispatcher.prototype, require('undici/lib/api/index.js'));
    if (typeof (Client.prototype as unknown as Record<string, unknown>).request !== 'function') throw new Error('undici layout changed');
    loaded = Client;
  } catch {
    loaded = (require('undici') as typeof import('undici')).Client;
  }
  return loaded;
}

/** Where the Incus socket is: INCUS_SOCKET, else $INCUS_DIR/unix.socket, else the system's. */
export function resolveSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.INCUS_SOCKET) return env.INCUS_SOCKET;
  if (env.INCUS_DIR) return `${env.INCUS_DIR.replace(/\/+$/, '')}/unix.socket`;
  return '/var/lib/incus/unix.socket';
}

export interface RequestOptions {
  project?: string;
  body?: unknown;
  /** Sent as If-Match so a concurrent change is refused instead of overwritten. */
  etag?: string;
  query?: Record<string, string | undefined>;
  signal?: AbortSignal;
}

export interface IncusResponse<T> {
  type: 'sync' | 'async';
  metadata: T;
  etag?: string;
  /** For async answers: the operation's path, to wait on. */
  operation?: string;
}

export interface Operation {
  id: string;
  status: string;
  status_code: number;
  err: string;
  description?: string;
  metadata: Record<string, unknown> | null;
  resources: Record<string, string[]> | null;
}

/** Seconds per operation wait; a wait that runs out is asked again. */
const WAIT_SLICE_S = 30;
/** After this many waits ran out (5 minutes), and as often again, the run says it still waits. */
const NOTE_EVERY_SLICES = 10;

/**
 * What to say while an operation is still running after `slices` waits ran out, if anything:
 * Incus reports no progress for staging a backup, and on a full backups directory Incus 6.0's
 * backup operation never ends, so a nightly run would otherwise wait without a word.
 */
export function stillWaitingNote(slices: number, elapsedMs: number, description: string | undefined, backupsDir: string): string | undefined {
  if (slices === 0 || slices % NOTE_EVERY_SLICES !== 0) return undefined;
  const took = elapsedMs >= 60_000 ? `${Math.round(elapsedMs / 60_000)} min` : `${Math.round(elapsedMs / 1000)} s`;
  return `Incus is still at "${description || 'an operation'}" after ${took}; if it never ends, look at the free space in Incus's backups directory (${backupsDir}) and at \`incus operation list\``;
}

export interface ServerInfo {
  api_extensions: string[];
  api_version: string;
  environment: { server_version: string; server_name?: string; storage?: string; kernel_version?: string };
}

interface RawResponse {
  type: 'sync' | 'async' | 'error';
  status_code: number;
  error_code: number;
  error: string;
  operation: string;
  metadata: unknown;
}

const RETRIES = 3;

function transient(e: unknown): boolean {
  if (e instanceof IncusError) return e.status === 502 || e.status === 503 || e.status === 504;
  return connectionLost(e);
}

/**
 * Whether `e` says the daemon is away (restarting): no socket, a dropped connection, 502-504,
 * also as the cause of a stream's failure (streamFailure).
 */
export function incusAway(e: unknown): boolean {
  return transient(e) || (e instanceof IncusConnectionError && e.gone) || (e instanceof IbError && e.cause !== undefined && incusAway(e.cause));
}

/** How long cleanup waits for a daemon that went away to come back (see waitBack). */
export const COMEBACK_MS = 120_000;

export type RequestLogger = (event: { method: string; path: string; status: number; ms: number }) => void;

/**
 * The only code that talks to Incus. It speaks the REST API over the UNIX socket with undici,
 * turns sync/async/error envelopes into values or `IncusError`s, and waits on operations.
 */
export class IncusClient {
  private readonly http: Client;
  private info?: ServerInfo;
  /** waitBack gave up once: the daemon is not coming back during this run. */
  private stayedAway = false;

  constructor(
    readonly socketPath: string = resolveSocketPath(),
    private readonly log?: RequestLogger,
    private readonly warn?: (msg: string) => void,
  ) {
    // Staging a large backup or spooling an import can take many minutes between bytes:
    // undici's 300 s header/body timeouts would turn that into a bogus failure.
    this.http = new (loadUndiciClient())('http://incus', { socketPath, headersTimeout: 0, bodyTimeout: 0 });
  }

  async close(): Promise<void> {
    await this.http.close();
  }

  private url(path: string, project?: string, query?: Record<string, string | undefined>): string {
    const params = new URLSearchParams();
    if (project) params.set('project', project);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) params.set(k, v);
    const qs = params.toString();
    return qs ? `${path}${path.includes('?') ? '&' : '?'}${qs}` : path;
  }

  private connectionError(e: unknown): never {
    const code = (e as NodeJS.ErrnoException)?.code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') {
      throw new IncusConnectionError(
        `cannot reach Incus: no daemon listening at ${this.socketPath}`,
        'is incusd running? Point INCUS_SOCKET (or INCUS_DIR) at its socket',
        e,
        true,
      );
    }
    if (code === 'EACCES' || code === 'EPERM') {
      throw new IncusConnectionError(
        `permission denied on the Incus socket ${this.socketPath}`,
        'run as root or as a member of the incus-admin group',
        e,
      );
    }
    throw e;
  }

  /**
   * A JSON request; async answers are returned with their operation, not waited on. Reads
   * (GET) are retried with backoff when the connection drops or Incus answers 502/503/504 — a
   * daemon restart or a busy moment — never for other answers or for writes.
   */
  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<IncusResponse<T>> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.requestOnce<T>(method, path, opts);
      } catch (e) {
        if (method !== 'GET' || attempt >= RETRIES || opts.signal?.aborted || !transient(e)) throw e;
        const delay = 250 * 2 ** attempt;
        this.warn?.(`${method} ${path} failed (${(e as Error).message}); retry ${attempt + 1} of ${RETRIES} in ${delay} ms`);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private async requestOnce<T>(method: string, path: string, opts: RequestOptions): Promise<IncusResponse<T>> {
    const started = Date.now();
    const headers: Record<string, string> = {};
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    if (opts.etag) headers['if-match'] = opts.etag;
    const target = this.url(path, opts.project, opts.query);
    let res;
    try {
      res = await this.http.request({ method: method as 'GET', path: target, headers, body, signal: opts.signal });
    } catch (e) {
      this.connectionError(e);
    }
    const text = await res.body.text();
    this.log?.({ method, path: target, status: res.statusCode, ms: Date.now() - started });
    return this.parse<T>(method, target, res.statusCode, text, res.headers.etag);
  }

  private parse<T>(method: string, path: string, status: number, text: string, etag: unknown): IncusResponse<T> {
    let raw: RawResponse;
    try {
      raw = JSON.parse(text) as RawResponse;
    } catch {
      throw new IncusError(status, `unexpected answer (HTTP ${status}): ${text.slice(0, 200)}`, method, path);
    }
    if (raw.type === 'error' || status >= 400) {
      throw new IncusError(raw.error_code || status, raw.error || `HTTP ${status}`, method, path);
    }
    return {
      type: raw.type,
      metadata: raw.metadata as T,
      etag: typeof etag === 'string' ? etag : undefined,
      operation: raw.operation || undefined,
    };
  }

  async get<T>(path: string, opts: RequestOptions = {}): Promise<T> {
    return (await this.request<T>('GET', path, opts)).metadata;
  }

  /** GET with the ETag, for read-modify-write updates. */
  async getWithEtag<T>(path: string, opts: RequestOptions = {}): Promise<{ value: T; etag?: string }> {
    const r = await this.request<T>('GET', path, opts);
    return { value: r.metadata, etag: r.etag };
  }

  /** Sends a request and, if the server answers with an operation, waits for it to finish. */
  async run(method: string, path: string, opts: RequestOptions = {}): Promise<Operation | undefined> {
    const r = await this.request<Operation>(method, path, opts);
    if (r.type !== 'async' || !r.operation) return undefined;
    return this.wait(r.operation, opts.signal);
  }

  /**
   * Waits on an operation. The wait endpoint sends its body only when the operation ends, so it
   * is polled in bounded slices: a client-side timeout can never fire on a long but healthy job.
   */
  async wait(operation: string, signal?: AbortSignal): Promise<Operation> {
    const id = operation.split('/').pop()!;
    const started = Date.now();
    let slices = 0;
    for (;;) {
      signal?.throwIfAborted();
      let op: Operation;
      try {
        op = await this.get<Operation>(`/1.0/operations/${encodeURIComponent(id)}/wait`, {
          query: { timeout: String(WAIT_SLICE_S) },
          signal,
        });
      } catch (e) {
        // Incus 6.0 answers a wait that times out, the operation still running, with the error
        // "context deadline exceeded" (and a failed operation with its own error): look.
        if (!(e instanceof IncusError) || e.serverMessage !== 'context deadline exceeded') throw e;
        op = await this.get<Operation>(`/1.0/operations/${encodeURIComponent(id)}`, { signal });
        const note = op.status_code < 200 ? stillWaitingNote(++slices, Date.now() - started, op.description, stagingDir(this.socketPath)) : undefined;
        if (note) this.warn?.(note);
      }
      if (op.status_code === 200) return op;
      if (op.status_code >= 400) {
        throw new IncusError(op.status_code, op.err || op.status, 'WAIT', operation);
      }
    }
  }

  /**
   * Streams a response body (an export) with its size and content type (image exports are tar
   * or multipart); errors are read and thrown as IncusError.
   */
  async download(path: string, opts: RequestOptions = {}): Promise<{ stream: Readable; size?: number; contentType: string }> {
    const target = this.url(path, opts.project, opts.query);
    let res;
    try {
      res = await this.http.request({ method: 'GET', path: target, signal: opts.signal });
    } catch (e) {
      this.connectionError(e);
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      this.parse('GET', target, res.statusCode, text, undefined);
    }
    const len = Number(res.headers['content-length']);
    const contentType = String(res.headers['content-type'] ?? 'application/octet-stream');
    return { stream: res.body as unknown as Readable, ...(Number.isFinite(len) ? { size: len } : {}), contentType };
  }

  /**
   * Waits until an operation is over, however it ends, without a signal: for a clean-up, which
   * can remove what the operation makes only once Incus is done with it. `onWaiting` is called
   * once if it is still running.
   */
  async settle(operation: string, onWaiting?: () => void): Promise<void> {
    const op = await this.find<Operation>(`/1.0/operations/${encodeURIComponent(operation.split('/').pop()!)}`);
    if (!op || op.status_code >= 200) return;
    onWaiting?.();
    // Ended in failure is over too.
    await this.wait(operation).catch((e: unknown) => {
      if (!(e instanceof IncusError)) throw e;
    });
  }

  /** Streams a request body (an import); returns the operation the server created. */
  async upload(
    path: string,
    body: Readable,
    headers: Record<string, string>,
    opts: RequestOptions = {},
  ): Promise<string> {
    const target = this.url(path, opts.project, opts.query);
    let res;
    try {
      res = await this.http.request({
        method: 'POST',
        path: target,
        // Exactly this type: anything else makes Incus treat the body as JSON.
        headers: { 'content-type': 'application/octet-stream', ...headers },
        body,
        signal: opts.signal,
      });
    } catch (e) {
      this.connectionError(e);
    }
    const text = await res.body.text();
    const r = this.parse<Operation>('POST', target, res.statusCode, text, undefined);
    if (!r.operation) throw new IncusError(res.statusCode, 'import answered without an operation', 'POST', target);
    return r.operation;
  }

  /**
   * After the daemon went away (incusAway): waits until it is back and ready (what `incus admin
   * waitready` asks: a starting daemon answers 503 until its storage and networks are up),
   * asking once a second for up to `ms`; whether it is. A daemon that stayed away is not waited
   * for again.
   */
  async waitBack(ms = COMEBACK_MS): Promise<boolean> {
    if (this.stayedAway) return false;
    const until = Date.now() + ms;
    for (;;) {
      try {
        await this.requestOnce('GET', '/internal/ready', {});
        return true;
      } catch (e) {
        if (!incusAway(e)) return true; // it answers; what it says is the next request's business
        if (Date.now() >= until) {
          this.stayedAway = true;
          return false;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /** GET `path`, or undefined when there is nothing there (404; other errors are thrown). */
  async find<T>(path: string, opts: RequestOptions = {}): Promise<T | undefined> {
    try {
      return await this.get<T>(path, opts);
    } catch (e) {
      if (e instanceof IncusError && e.notFound) return undefined;
      throw e;
    }
  }

  /** Whether GET `path` finds something (404 → false; other errors are thrown). */
  async exists(path: string, opts: RequestOptions = {}): Promise<boolean> {
    return (await this.find(path, opts)) !== undefined;
  }

  async server(): Promise<ServerInfo> {
    this.info ??= await this.get<ServerInfo>('/1.0');
    return this.info;
  }

  async hasExtension(name: string): Promise<boolean> {
    return (await this.server()).api_extensions.includes(name);
  }
}
