import { describe, expect, it } from 'vitest';
import { describeUser, diffConfig, extraObjects, mapConfig, objectLabel, type ConfigObject, type ConfigSnapshot } from '../../src/core/config.js';
import { ownsFeature } from '../../src/core/preflight.js';
import { CONFIG_KINDS } from '../../src/incus/api.js';
import { clipPair } from '../../src/cli/commands/config.js';
import type { Mappings } from '../../src/core/preflight.js';

const snap = (objects: ConfigObject[]): ConfigSnapshot => ({ format: 1, capturedAt: '2026-11-22T00:00:00Z', kinds: [...CONFIG_KINDS], objects, redacted: [] });
const maps = (m: Partial<Record<keyof Mappings, Record<string, string>>>): Mappings => ({
  project: new Map(Object.entries(m.project ?? {})),
  pool: new Map(Object.entries(m.pool ?? {})),
  profile: new Map(Object.entries(m.profile ?? {})),
  network: new Map(Object.entries(m.network ?? {})),
});

const prod: ConfigObject = { kind: 'project', name: 'prod', description: '', config: { 'features.profiles': 'true' } };
const prodDefault: ConfigObject = {
  kind: 'profile',
  project: 'prod',
  name: 'default',
  description: 'Default Incus profile for project prod',
  config: { 'limits.cpu': '2' },
  devices: { root: { type: 'disk', path: '/', pool: 'ssd' }, eth0: { type: 'nic', network: 'br0', name: 'eth0' } },
};
const web: ConfigObject = { kind: 'profile', project: 'prod', name: 'web', description: '', config: {}, devices: {} };
const pool: ConfigObject = { kind: 'storage-pool', name: 'ssd', description: '', config: {}, type: 'zfs' };

describe('config backups under restore mappings', () => {
  it('moves a mapped project with what it owns; leaves out mapped profiles, networks and pools (substitutes) and re-points profile devices at them', () => {
    const br0: ConfigObject = { kind: 'network', project: 'prod', name: 'br0', description: '', config: {}, type: 'bridge' };
    const lan: ConfigObject = { kind: 'network', project: 'prod', name: 'lan', description: '', config: {}, type: 'bridge' };
    const mapped = mapConfig(snap([prod, prodDefault, web, pool, br0, lan]), maps({ project: { prod: 'drill' }, pool: { ssd: 'hdd' }, network: { br0: 'br1' }, profile: { web: 'web2' } }));
    expect(mapped.objects.map((o) => `${o.kind} ${o.project ?? ''}/${o.name}`)).toEqual(['project /drill', 'profile drill/default', 'network drill/lan']);
    expect(mapped.objects[1]!.devices).toEqual({ root: { type: 'disk', path: '/', pool: 'hdd' }, eth0: { type: 'nic', network: 'br1', name: 'eth0' } });
    // Incus's own description of the default profile follows the project.
    expect(mapped.objects[1]!.description).toBe('Default Incus profile for project drill');
    // The stored snapshot is left as it was.
    expect(prodDefault.devices!.root!.pool).toBe('ssd');
    expect(prodDefault.project).toBe('prod');
  });

  it('creates the ACLs and zones a network names before the network (Incus refuses it otherwise), and deletes them after it', () => {
    const net: ConfigObject = { kind: 'network', project: 'default', name: 'br0', description: '', config: { 'security.acls': 'web', 'dns.zone.forward': 'lan.example' }, type: 'bridge' };
    const acl: ConfigObject = { kind: 'network-acl', project: 'default', name: 'web', description: '', config: {}, ingress: [], egress: [] };
    const zone: ConfigObject = { kind: 'network-zone', project: 'default', name: 'lan.example', description: '', config: {} };
    const creates = diffConfig(snap([net, acl, zone]), snap([]), {}, false);
    expect(creates.map((c) => c.object.kind)).toEqual(['network-acl', 'network-zone', 'network']);
    const deletes = diffConfig(snap([]), snap([net, acl, zone]), {}, true);
    expect(deletes.map((c) => c.object.kind)).toEqual(['network', 'network-zone', 'network-acl']);
  });

  it("creates a zone's records after the zone and a network's forwards after the network, tells apart two networks' forwards on one address, and deletes them first", () => {
    const net: ConfigObject = { kind: 'network', project: 'default', name: 'br0', description: '', config: {}, type: 'bridge' };
    const net2: ConfigObject = { ...net, name: 'br1' };
    const fwd: ConfigObject = { kind: 'network-forward', project: 'default', parent: 'br0', name: '192.0.2.50', description: '', config: {}, ports: [{ protocol: 'tcp', listen_port: '80', target_address: '10.0.0.5' }] };
    const fwd2: ConfigObject = { ...fwd, parent: 'br1' };
    const zone: ConfigObject = { kind: 'network-zone', project: 'default', name: 'lan.example', description: '', config: {} };
    const rec: ConfigObject = { kind: 'network-zone-record', project: 'default', parent: 'lan.example', name: 'www', description: '', config: {}, entries: [{ type: 'A', value: '10.0.0.5', ttl: 300 }] };
    const creates = diffConfig(snap([fwd, fwd2, rec, net, net2, zone]), snap([]), {}, false);
    expect(creates.map((c) => objectLabel(c.object))).toEqual([
      'network-zone default/lan.example',
      'network-zone-record default/lan.example/www',
      'network default/br0',
      'network default/br1',
      'network-forward default/br0/192.0.2.50',
      'network-forward default/br1/192.0.2.50',
    ]);
    expect(creates.find((c) => c.object.kind === 'network-forward')!.changes).toContainEqual({ key: 'ports', old: '[]', new: '[{"listen_port":"80","protocol":"tcp","target_address":"10.0.0.5"}]' });
    const deletes = diffConfig(snap([]), snap([net, fwd, zone, rec]), {}, true);
    expect(deletes.map((c) => c.object.kind)).toEqual(['network-forward', 'network', 'network-zone-record', 'network-zone']);
    // The same rules in another order are no drift.
    const two = [{ type: 'A', value: '10.0.0.5', ttl: 300 }, { type: 'A', value: '10.0.0.6', ttl: 300 }];
    expect(diffConfig(snap([{ ...rec, entries: two }]), snap([{ ...rec, entries: [...two].reverse() }]), {}, false)).toEqual([]);
    // A changed port rule or DNS entry is an update of that forward or record alone.
    const moved = { ...fwd, ports: [{ protocol: 'tcp', listen_port: '80', target_address: '10.0.0.6' }] };
    expect(diffConfig(snap([net, moved, zone, rec]), snap([net, fwd, zone, rec]), {}, false).map((c) => `${c.action} ${objectLabel(c.object)} ${c.changes.map((k) => k.key).join()}`)).toEqual([
      'update network-forward default/br0/192.0.2.50 ports',
    ]);
    // A backup made before forwards and records were captured does not speak for them: even
    // --force deletes none, nor counts them as extras.
    const { kinds: _kinds, ...legacy } = snap([net, zone]);
    expect(diffConfig(legacy, snap([net, fwd, zone, rec]), {}, true)).toEqual([]);
    expect(extraObjects(legacy, snap([net, fwd, zone, rec]), {})).toEqual([]);
    expect(extraObjects(snap([net, zone]), snap([net, fwd, zone, rec]), {}).map(objectLabel)).toEqual(['network-forward default/br0/192.0.2.50', 'network-zone-record default/lan.example/www']);
  });

  it('marks creates Incus refuses in a drill into another project: a bridge outside default, a zone name another project has, and what lives in them', () => {
    const br: ConfigObject = { kind: 'network', project: 'drill', name: 'br0', description: '', config: {}, type: 'bridge' };
    const ovn: ConfigObject = { ...br, name: 'ovn0', type: 'ovn' };
    const fwd: ConfigObject = { kind: 'network-forward', project: 'drill', parent: 'br0', name: '192.0.2.5', description: '', config: {}, ports: [] };
    const zone: ConfigObject = { kind: 'network-zone', project: 'drill', name: 'lan.example', description: '', config: {} };
    const rec: ConfigObject = { kind: 'network-zone-record', project: 'drill', parent: 'lan.example', name: 'www', description: '', config: {}, entries: [] };
    const elsewhere: ConfigObject = { ...zone, project: 'prod' };
    const changes = diffConfig(snap([br, ovn, fwd, zone, rec]), snap([elsewhere]), { project: 'drill' }, false);
    expect(changes.map((c) => `${objectLabel(c.object)}: ${c.refused ?? 'ok'}`)).toEqual([
      'network-zone drill/lan.example: zone names are server-wide, and project prod has lan.example',
      'network-zone-record drill/lan.example/www: its zone lan.example cannot be created',
      'network drill/br0: Incus creates bridge networks in the default project only',
      'network drill/ovn0: ok',
      'network-forward drill/br0/192.0.2.5: its network br0 cannot be created',
    ]);
  });

  it("leaves a substituted network's forwards out with it (nothing is changed on the substitute) and moves a mapped project's", () => {
    const fwd: ConfigObject = { kind: 'network-forward', project: 'prod', parent: 'br0', name: '192.0.2.50', description: '', config: {}, ports: [] };
    const other: ConfigObject = { ...fwd, parent: 'lan' };
    const mapped = mapConfig(snap([fwd, other]), maps({ project: { prod: 'drill' }, network: { br0: 'br1' } }));
    expect(mapped.objects.map(objectLabel)).toEqual(['network-forward drill/lan/192.0.2.50']);
  });

  it('names a secret the backup does not hold and the object lacks now; one the object still has is left alone', () => {
    const withSecret: ConfigObject = { ...web, config: { 'user.db_password': '<redacted>', 'user.a': '1' } };
    expect(diffConfig(snap([withSecret]), snap([{ ...web, config: { 'user.a': '1' } }]), {}, false)[0]!.changes).toEqual([{ key: 'user.db_password', new: '<redacted>' }]);
    expect(diffConfig(snap([withSecret]), snap([{ ...web, config: { 'user.a': '1', 'user.db_password': 'now' } }]), {}, false)).toEqual([]);
  });

  it("updates the empty default profile a new project with its own profiles comes with, instead of creating it", () => {
    const changes = diffConfig(snap([prod, prodDefault, web]), snap([]), { project: 'prod' }, false);
    expect(changes.map((c) => `${c.action} ${c.object.kind} ${c.object.name}`)).toEqual(['create project prod', 'update profile default', 'create profile web']);
    // (Incus describes that profile as the backup's does: no description change.)
    expect(changes[1]!.changes.map((k) => k.key)).toEqual(['limits.cpu', 'devices.eth0', 'devices.root']);
    // Without profiles of its own the project uses the default project's: nothing to update.
    const shared = { ...prod, config: { 'features.profiles': 'false' } };
    const none = diffConfig(snap([shared]), snap([]), { project: 'prod' }, false);
    expect(none.map((c) => `${c.action} ${c.object.kind}`)).toEqual(['create project']);
    // A create lists what it sets, devices included.
    const gpu = { ...web, devices: { gpu: { type: 'gpu', id: '0' } }, config: { 'user.a': '1' } };
    expect(diffConfig(snap([gpu]), snap([]), {}, false)[0]!.changes).toEqual([
      { key: 'user.a', new: '1' },
      { key: 'devices.gpu', new: '{"id":"0","type":"gpu"}' },
    ]);
    // A project whose config does not say gets its own profiles, as Incus defaults it.
    const unsaid = { ...prod, config: {} };
    expect(diffConfig(snap([unsaid, prodDefault]), snap([]), { project: 'prod' }, false).map((c) => `${c.action} ${c.object.kind}`)).toEqual(['create project', 'update profile']);
    expect([ownsFeature(unsaid.config, 'profiles', true), ownsFeature(unsaid.config, 'networks', true), ownsFeature({ 'features.networks': 'true' }, 'networks', true)]).toEqual([true, false, true]);
    // An existing project has its own only where its config says so (Incus reads a missing key as false).
    expect([ownsFeature({}, 'profiles'), ownsFeature({ 'features.profiles': 'true' }, 'profiles'), ownsFeature({}, 'networks')]).toEqual([false, true, false]);
    // An existing project's default profile is compared as it is.
    const have = { ...prodDefault, config: {}, devices: {} };
    expect(diffConfig(snap([prod, prodDefault]), snap([prod, have]), { project: 'prod' }, false).map((c) => c.action)).toEqual(['update']);
  });

  it("names Incus's used_by entries as an admin would type them", () => {
    expect(describeUser('/1.0/instances/web?project=prod')).toBe('instance prod/web');
    expect(describeUser('/1.0/instances/db')).toBe('instance default/db');
    expect(describeUser('/1.0/profiles/with%20space?project=p')).toBe('profile p/with space');
  });

  it("shows a device on both sides property by property, and a device added or removed whole", () => {
    const before: ConfigObject = { ...web, devices: { eth0: { type: 'nic', network: 'br1', name: 'eth0', mtu: '1400' }, old: { type: 'disk', path: '/old', source: '/srv/old' } } };
    const backup: ConfigObject = { ...web, devices: { eth0: { type: 'nic', network: 'br0', name: 'eth0' }, gpu: { type: 'gpu' } } };
    expect(diffConfig(snap([backup]), snap([before]), {}, false)[0]!.changes).toEqual([
      { key: 'devices.eth0.mtu', old: '1400' },
      { key: 'devices.eth0.network', old: 'br1', new: 'br0' },
      { key: 'devices.gpu', new: '{"type":"gpu"}' },
      { key: 'devices.old', old: '{"path":"/old","source":"/srv/old","type":"disk"}' },
    ]);
  });
});

describe('the config preview table', () => {
  it('shows two long values from a little before where they differ, so the change is visible', () => {
    const base = '#cloud-config\npackages:\n  - nginx\nruncmd:\n  - echo ';
    const [o, n] = clipPair(`${base}hello world`, `${base}bye world`);
    expect(o).not.toBe(n);
    expect(o).toMatch(/^…/);
    expect(o).toContain('hello');
    expect(n).toContain('bye');
    expect(o.length).toBeLessThanOrEqual(41);
    // Short ones are left whole; a long one beside nothing is cut at the width.
    expect(clipPair('a', 'b')).toEqual(['a', 'b']);
    const [none, long] = clipPair(undefined, 'x'.repeat(100));
    expect([none, long.length]).toEqual(['', 40]);
  });
});
