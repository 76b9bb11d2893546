import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { IncusApi } from '../../src/incus/api.js';
import { IncusClient, resolveSocketPath } from '../../src/incus/client.js';
import { IncusConnectionError, IncusError } from '../../src/incus/errors.js';
import { incus, testProject } from './helpers.js';

const client = new IncusClient(resolveSocketPath());
const api = new IncusApi(client);
afterAll(() => client.close());

describe('Incus client against the private daemon', () => {
  it('reads server info and API extensions', async () => {
    const info = await client.server();
    expect(info.environment.server_version).toMatch(/^\d+\.\d+/);
    expect(info.api_extensions).toContain('container_backup');
    expect(await client.hasExtension('container_backup')).toBe(true);
    expect(await client.hasExtension('no_such_extension_xyz')).toBe(false);
  });

  it('creates, lists and deletes a project', async () => {
    const name = `t-client-${randomBytes(3).toString('hex')}`;
    await api.createProject(name, { 'features.images': 'false', 'features.profiles': 'false' }, 'client test');
    try {
      const projects = await api.listProjects();
      const p = projects.find((x) => x.name === name);
      expect(p?.description).toBe('client test');
      expect(p?.config['features.images']).toBe('false');
    } finally {
      await api.deleteProject(name);
    }
    expect((await api.listProjects()).map((p) => p.name)).not.toContain(name);
  });

  it('waits an async operation to completion, scoped by project', async () => {
    const proj = await testProject('client');
    try {
      // Creating an instance is asynchronous: when `run` returns, the instance must exist.
      await api.createInstanceFromImage(proj.name, 'c1', 'ib-busybox', false);
      const inst = await api.getInstance(proj.name, 'c1');
      expect(inst.name).toBe('c1');
      expect(inst.status).toBe('Stopped');
      expect((await api.listInstances(proj.name)).map((i) => i.name)).toEqual(['c1']);
      expect((await api.listInstances('default')).map((i) => i.name)).not.toContain('c1');
      // ETag-guarded update goes through and is visible to the incus CLI.
      await api.patchInstanceConfig(proj.name, 'c1', { 'user.note': 'etag' });
      expect(await incus('config', 'get', 'c1', 'user.note', '--project', proj.name)).toBe('etag');
    } finally {
      await proj.dispose();
    }
  });

  it('surfaces Incus errors with the server message and status', async () => {
    const err = await api.getInstance('default', 'does-not-exist-xyz').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncusError);
    expect((err as IncusError).status).toBe(404);
    expect((err as IncusError).notFound).toBe(true);
    expect((err as IncusError).message).toMatch(/Instance not found/);
  });

  it('fails an operation that Incus rejects with its message', async () => {
    const err = await client.run('POST', '/1.0/instances', { body: { name: 'x-bad', source: { type: 'image', alias: 'no-such-image' } } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncusError);
    expect((err as IncusError).message).toMatch(/image/i);
  });

  it('turns a missing socket into a connection error with a hint', async () => {
    const c = new IncusClient('/nonexistent/incus.socket');
    const err = await c.server().catch((e: unknown) => e);
    await c.close();
    expect(err).toBeInstanceOf(IncusConnectionError);
    expect((err as IncusConnectionError).exitCode).toBe(2);
    expect((err as IncusConnectionError).hint).toMatch(/INCUS_SOCKET/);
  });
});
