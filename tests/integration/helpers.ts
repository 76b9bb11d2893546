import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
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
export async function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
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
