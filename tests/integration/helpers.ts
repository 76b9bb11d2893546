import { randomBytes, randomInt } from 'node:crypto';
import { chmodSync, closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createConnection, createServer, type Socket } from 'node:net';
import { execa, type ResultPromise } from 'execa';

export const repo = resolve(import.meta.dirname, '../..');
export const cliPath = join(repo, 'bin/incus-backup');

if (!process.env.INCUS_SOCKET) {
  throw new Error('integration tests need the private sandbox: run scripts/test.sh (or eval "$(scripts/sandbox.sh env)")');
}

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI as a user would, without a terminal. */
export async function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  const r = await execa('node', [cliPath, ...args], { reject: false, env: { NO_COLOR: '1', ...env }, stdin: 'ignore' });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

export function cliSpawn(args: string[], env: Record<string, string> = {}): ResultPromise {
  return execa('node', [cliPath, ...args], { reject: false, env: { NO_COLOR: '1', ...env }, stdin: 'ignore' });
}

/** The real `incus` client against the private daemon, for setting up and checking. */
export async function incus(...args: string[]): Promise<string> {
  // stdin closed: several incus commands read YAML from a non-terminal stdin and would wait.
  const r = await execa('incus', args, { stdin: 'ignore' });
  return String(r.stdout);
}

export async function incusJson<T = unknown>(path: string, project?: string): Promise<T> {
  const sep = path.includes('?') ? '&' : '?';
  return JSON.parse(await incus('query', project ? `${path}${sep}project=${project}` : path)) as T;
}

/**
 * A uniquely named Incus project sharing the default project's images and profiles, so each
 * test file is isolated; `dispose` removes it with everything in it.
 */
export async function testProject(tag: string): Promise<{ name: string; dispose: () => Promise<void> }> {
  const name = `t-${tag}-${randomBytes(3).toString('hex')}`.slice(0, 60);
  await incus('project', 'create', name, '-c', 'features.images=false', '-c', 'features.profiles=false');
  return {
    name,
    async dispose() {
      for (const i of await incusJson<string[]>('/1.0/instances', name)) {
        await incus('delete', '-f', '--project', name, i.split('/').pop()!.split('?')[0]!).catch(() => undefined);
      }
      const vols = await incusJson<{ name: string; type: string }[]>('/1.0/storage-pools/default/volumes/custom?recursion=1', name);
      for (const v of vols) {
        await incus('storage', 'volume', 'delete', 'default', v.name, '--project', name).catch(() => undefined);
      }
      await incus('project', 'delete', name).catch(() => undefined);
    },
  };
}

/**
 * Inverts one byte of a file in place, so the damage is real whatever the byte was (writing a
 * fixed value leaves the file unchanged when the byte already had it: 1 run in 256).
 */
export function flipByte(file: string, at: number): void {
  const fd = openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    if (readSync(fd, b, 0, 1, at) !== 1) throw new Error(`flipByte: ${file} has no byte at ${at}`);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

/**
 * A real interface to be the parent of test macvlan networks. A managed macvlan network is only
 * configuration until a running instance uses it: no bridge, no dnsmasq, nothing changes on the host.
 */
export function parentInterface(): string {
  const defaultRoute = readFileSync('/proc/net/route', 'utf8').split('\n').find((l) => l.split('\t')[1] === '00000000')?.split('\t')[0];
  return defaultRoute ?? readdirSync('/sys/class/net').find((n) => n !== 'lo') ?? 'eth0';
}

export function tempTarget(): { dir: string; uri: string; dispose: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'ib-target-'));
  return { dir, uri: `dir:${dir}`, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function launch(project: string, name: string): Promise<void> {
  await incus('launch', 'ib-busybox', name, '--project', project);
}

export async function sh(project: string, instance: string, script: string): Promise<string> {
  return (await incus('exec', instance, '--project', project, '--', 'sh', '-c', script)).trim();
}

export async function state(project: string, instance: string): Promise<string> {
  return (await incusJson<{ status: string }>(`/1.0/instances/${instance}`, project)).status;
}

export async function instanceNames(project: string): Promise<string[]> {
  return (await incusJson<string[]>('/1.0/instances', project)).map((u) => decodeURIComponent(u.split('/').pop()!.split('?')[0]!)).sort();
}

export async function snapshotNames(project: string, instance: string): Promise<string[]> {
  return (await incusJson<string[]>(`/1.0/instances/${instance}/snapshots`, project)).map((u) => u.split('/').pop()!.split('?')[0]!);
}

export async function serverBackupNames(project: string, instance: string): Promise<string[]> {
  return (await incusJson<string[]>(`/1.0/instances/${instance}/backups`, project)).map((u) => u.split('/').pop()!.split('?')[0]!);
}

export function parseJson<T = unknown>(s: string): T {
  return JSON.parse(s) as T;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const restServers: ResultPromise[] = [];

/** A real rest-server on a free loopback port, serving `dir`; returns the repository string. */
export async function restServer(dir: string, ...flags: string[]): Promise<string> {
  const bin = (await execa('sh', ['-c', 'command -v rest-server || command -v restic-rest-server'], { reject: false })).stdout.trim();
  if (!bin) throw new Error('rest-server is not installed (Debian: restic-rest-server)');
  const port = await freePort();
  const auth = flags.some((f) => f.startsWith('--htpasswd-file')) ? [] : ['--no-auth'];
  const server = execa(bin, ['--path', dir, '--listen', `127.0.0.1:${port}`, ...auth, ...flags], { reject: false, stdin: 'ignore' });
  restServers.push(server);
  for (let i = 0; i < 100; i++) {
    const up = await fetch(`http://127.0.0.1:${port}/`).then(
      () => true,
      () => false,
    );
    if (up) return `rest:http://127.0.0.1:${port}/repo`;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('rest-server did not start');
}

export async function stopRestServers(): Promise<void> {
  for (const s of restServers) s.kill();
  await Promise.all(restServers.splice(0));
}

/** A relay's two sides: when one closes, the other is ended too. */
function endTogether(client: Socket, upstream: Socket): void {
  for (const s of [client, upstream]) {
    s.on('close', () => {
      client.destroy();
      upstream.destroy();
    });
  }
}

/**
 * A UNIX-socket relay in front of the real incusd: each client connection gets its own upstream
 * one, handed to `relay` to wire up; close() ends them all. The proxies below are built on it.
 */
async function incusRelay(
  relay: (client: Socket, upstream: Socket) => void,
): Promise<{ socket: string; close: () => Promise<void>; outage: (ms: number) => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'ib-proxy-'));
  const path = join(dir, 'incus.socket');
  const open = new Set<Socket>();
  let closed = false;
  const server = createServer((client) => {
    const upstream = createConnection(process.env.INCUS_SOCKET!);
    open.add(client).add(upstream);
    for (const s of [client, upstream]) {
      s.on('error', () => undefined);
      s.on('close', () => open.delete(s));
    }
    relay(client, upstream);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    socket: path,
    close: async () => {
      closed = true;
      for (const s of open) s.destroy();
      await new Promise((r) => server.close(r));
      rmSync(dir, { recursive: true, force: true });
    },
    // As a daemon restart looks from the client: every connection drops, the socket is gone for
    // `ms`, then it answers again (Incus itself keeps running: what it was doing goes on).
    outage: async (ms: number) => {
      for (const s of open) s.destroy();
      await new Promise((r) => server.close(r));
      await new Promise((r) => setTimeout(r, ms));
      if (!closed) await new Promise<void>((r) => server.listen(path, r));
    },
  };
}

/**
 * A relay that plays a daemon restart (see incusRelay's outage) for `ms`, the first time a
 * request matches `request` (tried on its first chunk: the head, and the body of a small
 * one); that request is dropped, not passed on.
 */
export async function outageProxy(request: RegExp, ms: number): Promise<{ socket: string; outages: () => number; close: () => Promise<void> }> {
  let outages = 0;
  const relay: Awaited<ReturnType<typeof incusRelay>> = await incusRelay((client, upstream) => {
    client.on('data', (chunk: Buffer) => {
      if (outages === 0 && request.test(chunk.toString('latin1'))) {
        outages++;
        void relay.outage(ms);
        return;
      }
      upstream.write(chunk);
    });
    upstream.pipe(client);
    endTogether(client, upstream);
  });
  return { socket: relay.socket, close: relay.close, outages: () => outages };
}

/**
 * A relay that holds back, for `ms`, Incus's answer to each request whose first line matches
 * `request` (the request itself goes through at once, so Incus acts on it). It stretches a
 * moment of a run, e.g. to interrupt it right there.
 */
export async function slowAnswerProxy(request: RegExp, ms: number): Promise<{ socket: string; held: () => number; close: () => Promise<void> }> {
  let held = 0;
  const relay = await incusRelay((client, upstream) => {
    let holdNext = false;
    let answers = Promise.resolve();
    client.on('data', (chunk: Buffer) => {
      if (request.test(chunk.toString('latin1').split('\r\n', 1)[0]!)) holdNext = true;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      const hold = holdNext;
      holdNext = false;
      if (hold) held++;
      answers = answers.then(async () => {
        if (hold) await new Promise((r) => setTimeout(r, ms));
        if (!client.destroyed) client.write(chunk);
      });
    });
    // A side that closes ends the other once the answers held back have gone out.
    for (const s of [client, upstream]) {
      s.on('close', () =>
        void answers.then(() => {
          client.destroy();
          upstream.destroy();
        }),
      );
    }
  });
  return { ...relay, held: () => held };
}

/**
 * Runs the CLI through `proxy` (a slowAnswerProxy) and resolves once the proxy holds back one
 * of Incus's answers: the moment a test acts in, as an admin would. The child is wrapped (it is
 * a promise, which an async function would wait for).
 */
export async function spawnHeld(proxy: { socket: string; held: () => number }, args: string[]): Promise<{ child: ReturnType<typeof cliSpawn> }> {
  const child = cliSpawn(args, { INCUS_SOCKET: proxy.socket });
  const deadline = Date.now() + 60_000;
  while (proxy.held() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  if (proxy.held() !== 1) throw new Error(`the proxy held back ${proxy.held()} answers, not 1`);
  return { child };
}

/**
 * A relay that counts the bytes clients send, an upload's body included: a test acts in once an
 * upload is whole (Incus answers an import's POST with its operation long before that).
 */
export async function sendCountingProxy(): Promise<{ socket: string; sent: () => number; close: () => Promise<void> }> {
  let sent = 0;
  const relay = await incusRelay((client, upstream) => {
    // Counted once handed to Incus's socket, and read no faster than Incus takes it.
    client.on('data', (chunk: Buffer) => {
      if (!upstream.write(chunk, () => (sent += chunk.length))) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    });
    upstream.pipe(client);
    endTogether(client, upstream);
  });
  return { ...relay, sent: () => sent };
}

/**
 * A relay that asks Incus to answer every operation wait at once (`/wait?timeout=0`), as a wait
 * on an operation that outlasts its 30 s slice would be answered: with the error "context
 * deadline exceeded", the operation still running. timedOut() counts those answers.
 */
export async function impatientWaitProxy(): Promise<{ socket: string; timedOut: () => number; close: () => Promise<void> }> {
  let timedOut = 0;
  const relay = await incusRelay((client, upstream) => {
    client.on('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      // Only request heads are rewritten, never an upload's body.
      upstream.write(text.startsWith('GET ') ? Buffer.from(text.replace(/\/wait\?timeout=\d+/, '/wait?timeout=0'), 'latin1') : chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      timedOut += chunk.toString('latin1').split('"error":"context deadline exceeded"').length - 1;
      client.write(chunk);
    });
    endTogether(client, upstream);
  });
  return { ...relay, timedOut: () => timedOut };
}

/**
 * A relay that breaks the one connection carrying a large transfer: once more than `afterBytes`
 * flowed in the given direction on a connection, both sides of it are destroyed. Everything else
 * (small API calls, the cleanup afterwards) passes. It injects a real mid-stream failure without
 * touching incus-backup's code.
 */
export async function cuttingProxy(direction: 'download' | 'upload', afterBytes: number): Promise<{ socket: string; cuts: () => number; close: () => Promise<void> }> {
  let cuts = 0;
  const relay = await incusRelay((client, upstream) => {
    let moved = 0;
    const cut = () => {
      cuts++;
      client.destroy();
      upstream.destroy();
    };
    const [from, to] = direction === 'download' ? [upstream, client] : [client, upstream];
    from.on('data', (chunk: Buffer) => {
      moved += chunk.length;
      if (moved > afterBytes) return cut();
      to.write(chunk);
    });
    const [back, backTo] = direction === 'download' ? [client, upstream] : [upstream, client];
    back.pipe(backTo);
    endTogether(client, upstream);
    from.on('end', () => to.end());
  });
  return { ...relay, cuts: () => cuts };
}

/**
 * A second, freshly installed Incus host: a private incusd of its own (its own directory and
 * socket) with a dir pool `default` and a bridge of its own in the default profile, as `incus
 * admin init` leaves a new machine. `env` points the CLI and `incus` at it. Both daemons share
 * the machine's network namespace, so a bridge the other daemon still has cannot be made here.
 */
export async function freshHost(): Promise<{ env: Record<string, string>; incus: (...args: string[]) => Promise<string>; dispose: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'ib-host-'));
  chmodSync(dir, 0o711);
  const env = { INCUS_DIR: dir, INCUS_SOCKET: join(dir, 'unix.socket') };
  const bridge = `ibh${randomBytes(3).toString('hex')}`;
  const daemon = execa('/usr/libexec/incus/incusd', ['--group', 'root', '--logfile', join(dir, 'incusd.log')], {
    env,
    detached: true,
    stdio: 'ignore',
    reject: false,
  });
  const run = async (...args: string[]) => String((await execa('incus', args, { env, stdin: 'ignore' })).stdout);
  const dispose = async () => {
    // Its bridges (its own and those a restore made), should the daemon leave them behind.
    const nets = JSON.parse(await run('query', '/1.0/networks?recursion=1').catch(() => '[]')) as { name: string; managed: boolean }[];
    // Stops its containers (busybox halts on SIGUSR2, set below), then the daemon.
    await execa('incus', ['admin', 'shutdown', '--timeout', '30'], { env, stdin: 'ignore', reject: false, timeout: 60_000 });
    daemon.kill('SIGKILL');
    await daemon;
    await execa('pkill', ['-9', '-f', dir], { reject: false });
    for (const n of nets) if (n.managed) await execa('ip', ['link', 'delete', n.name], { reject: false });
    const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(`${dir}/`));
    for (const m of mounts.sort().reverse()) await execa('umount', ['-l', m], { reject: false });
    rmSync(dir, { recursive: true, force: true });
  };
  const host = { env, incus: run, dispose };
  try {
    await run('admin', 'waitready', '--timeout', '60');
    const subnet = `10.${randomInt(100, 250)}.${randomInt(0, 250)}`;
    await execa('incus', ['admin', 'init', '--preseed'], {
      env,
      input: [
        'networks:',
        `- {name: ${bridge}, type: bridge, config: {ipv4.address: ${subnet}.1/24, ipv4.nat: "false", ipv4.firewall: "false", ipv6.address: none}}`,
        'storage_pools:',
        '- {name: default, driver: dir}',
        'profiles:',
        '- name: default',
        '  config: {raw.lxc: "lxc.signal.halt = SIGUSR2"}',
        '  devices:',
        '    root: {path: /, pool: default, type: disk}',
        `    eth0: {name: eth0, network: ${bridge}, type: nic}`,
      ].join('\n'),
    });
  } catch (e) {
    await host.dispose();
    throw e;
  }
  return host;
}
