import { describe, expect, it } from 'vitest';
import { addressClashes, attachedVolumesOf, countDistinct, fixedAddressesOf, optimizedFor, planIndex, requirementsOf, sharedVolumes, unusedMappings, type Mappings } from '../../src/core/preflight.js';
import type { RestorePlanItem } from '../../src/core/restore.js';
import type { Instance } from '../../src/incus/types.js';

function item(devices: Record<string, Record<string, string>>): RestorePlanItem {
  return {
    entry: { manifest: { type: 'instance', index: { config: { container: { profiles: [], devices } } } } },
    dest: { kind: 'instance', project: 'drill', name: 'web' },
  } as unknown as RestorePlanItem;
}

function instance(project: string, name: string, devices: Record<string, Record<string, string>>, config: Record<string, string> = {}): Instance {
  return { project, name, config, devices: {}, expanded_devices: devices } as unknown as Instance;
}

const noMaps: Mappings = { project: new Map(), pool: new Map(), profile: new Map(), network: new Map() };
const defaultNetworks = () => 'default';

describe('fixed NIC addresses of a restored copy', () => {
  it('are the static IPs and set MACs of its own NICs, on their networks after --network-map', () => {
    const i = item({
      eth0: { type: 'nic', network: 'br0', 'ipv4.address': '10.0.0.5', 'ipv6.address': 'fd00::5' },
      eth1: { type: 'nic', network: 'lan', hwaddr: '00:16:3e:aa:bb:cc' },
      eth2: { type: 'nic', network: 'br0' },
      eth3: { type: 'nic', nictype: 'macvlan', parent: 'eno1', hwaddr: '00:16:3e:00:00:01' },
      data: { type: 'disk', pool: 'default', source: 'data', path: '/srv' },
    });
    expect(fixedAddressesOf(i, { ...noMaps, network: new Map([['br0', 'drillbr']]) })).toEqual([
      { device: 'eth0', network: 'drillbr', value: '10.0.0.5' },
      { device: 'eth0', network: 'drillbr', value: 'fd00::5' },
      { device: 'eth1', network: 'lan', value: '00:16:3e:aa:bb:cc' },
    ]);
    expect(fixedAddressesOf(item({}), noMaps)).toEqual([]);
  });

  it('clash with another instance on the same network: its static IP, or its MAC (set or given by Incus)', () => {
    const addresses = fixedAddressesOf(
      item({ eth0: { type: 'nic', network: 'br0', 'ipv4.address': '10.0.0.5' }, eth1: { type: 'nic', network: 'lan', hwaddr: '00:16:3E:AA:BB:CC' } }),
      noMaps,
    );
    const web = instance('prod', 'web', { eth0: { type: 'nic', network: 'br0', 'ipv4.address': '10.0.0.5' } });
    const db = instance('prod', 'db', { eth0: { type: 'nic', network: 'lan' } }, { 'volatile.eth0.hwaddr': '00:16:3e:aa:bb:cc' });
    expect(addressClashes(addresses, 'drill', [web, db], defaultNetworks)).toEqual([
      'eth0 10.0.0.5 is taken by prod/web on br0',
      'eth1 00:16:3E:AA:BB:CC is taken by prod/db on lan',
    ]);
  });

  it('do not clash on another network, or with a network of the same name in a project that has its own', () => {
    const addresses = fixedAddressesOf(item({ eth0: { type: 'nic', network: 'br0', 'ipv4.address': '10.0.0.5' } }), noMaps);
    const elsewhere = instance('prod', 'web', { eth0: { type: 'nic', network: 'br1', 'ipv4.address': '10.0.0.5' } });
    expect(addressClashes(addresses, 'drill', [elsewhere], defaultNetworks)).toEqual([]);
    const ownNetworks = instance('lab', 'web', { eth0: { type: 'nic', network: 'br0', 'ipv4.address': '10.0.0.5' } });
    expect(addressClashes(addresses, 'drill', [ownNetworks], (p) => (p === 'lab' ? 'lab' : 'default'))).toEqual([]);
    const other = instance('prod', 'web', { eth0: { type: 'nic', network: 'br0', 'ipv4.address': '10.0.0.6' } });
    expect(addressClashes(addresses, 'drill', [other], defaultNetworks)).toEqual([]);
  });
});

describe('an optimized archive', () => {
  const index = { name: 'web', backend: 'btrfs', pool: 'fast', optimized: true, optimized_header: true, config: { container: { profiles: [], devices: {} } } };
  const asItem = (idx: Record<string, unknown>) => ({ entry: { manifest: { type: 'instance', index: idx } } }) as unknown as RestorePlanItem;

  it('needs the driver that made it, from the full index or from the restic summary', () => {
    expect(optimizedFor(asItem(index))).toBe('btrfs');
    expect(planIndex(index)).toMatchObject({ pool: 'fast', optimized: true, backend: 'btrfs' });
    // The snapshots' names, and the expiry dates of those that have one (a zero time is none).
    const withSnaps = {
      snapshots: ['a', 'b'],
      config: { container: { profiles: [] }, snapshots: [{ name: 'a', expires_at: '2031-02-03T04:05:06Z', config: { big: 'x' } }, { name: 'b', expires_at: '0001-01-01T00:00:00Z' }] },
    };
    expect(planIndex(withSnaps)).toEqual({ snapshots: ['a', 'b'], config: { container: { profiles: [], devices: {} }, snapshots: [{ name: 'a', expires_at: '2031-02-03T04:05:06Z' }] } });
    expect(optimizedFor(asItem(planIndex(index)))).toBe('btrfs');
  });

  it('a plain tarball needs no driver, and its summary says nothing of one', () => {
    const plain = { ...index, optimized: false, optimized_header: false };
    expect(optimizedFor(asItem(plain))).toBeUndefined();
    expect(planIndex(plain)).not.toHaveProperty('backend');
    expect(optimizedFor(asItem(planIndex(plain)))).toBeUndefined();
  });
});

describe('host paths a restored instance mounts', () => {
  it('are needed unless the device is optional, from the full index and from the restic summary', () => {
    const devices = {
      media: { type: 'disk', source: '/srv/media', path: '/media' },
      cache: { type: 'disk', source: '/srv/cache', path: '/cache', required: 'false' },
      data: { type: 'disk', pool: 'default', source: 'data', path: '/data' },
      root: { type: 'disk', pool: 'default', path: '/' },
    };
    const index = { config: { container: { profiles: [], devices } } };
    const of = (idx: Record<string, unknown>) =>
      requirementsOf(
        { entry: { manifest: { type: 'instance', index: idx } }, dest: { kind: 'instance', project: 'prod', name: 'web' } } as unknown as RestorePlanItem,
        noMaps,
      ).filter((r) => r.what === 'path');
    expect(of(index)).toEqual([{ what: 'path', project: 'prod', name: '/srv/media', neededBy: 'instance prod/web (disk media)' }]);
    expect(of(planIndex(index))).toEqual(of(index));
  });
});

describe('countDistinct', () => {
  it('counts a host path needed by a profile and by its instance once, and other things per project', () => {
    const path = (neededBy: string, project = 'p') => ({ what: 'path' as const, project, name: '/srv/media', neededBy });
    const net = (project: string) => ({ what: 'network' as const, project, name: 'br0', neededBy: 'x' });
    expect(countDistinct([path('profile p/hp (disk media)'), path('instance p/i1 (disk media of profile hp)'), path('instance q/i2', 'q')])).toBe(1);
    expect(countDistinct([net('p'), net('q'), net('p')])).toBe(2);
    expect(countDistinct([])).toBe(0);
  });
});

describe('custom volumes a restored copy shares with other instances', () => {
  it('are its own disks on a pool (after --pool-map), attached by another instance in the project that holds the volumes', () => {
    const i = item({
      data: { type: 'disk', pool: 'default', source: 'data', path: '/srv' },
      root: { type: 'disk', pool: 'default', path: '/' },
      host: { type: 'disk', source: '/opt/media', path: '/media' },
    });
    expect(attachedVolumesOf(i, noMaps)).toEqual([{ device: 'data', pool: 'default', name: 'data' }]);
    const mapped = attachedVolumesOf(i, { ...noMaps, pool: new Map([['default', 'fast']]) });
    expect(mapped).toEqual([{ device: 'data', pool: 'fast', name: 'data' }]);
    const db = instance('prod', 'db', { d: { type: 'disk', pool: 'default', source: 'data', path: '/var/lib/db' } });
    const other = instance('prod', 'web', { d: { type: 'disk', pool: 'default', source: 'other', path: '/x' } });
    const own = (p: string) => p;
    expect(sharedVolumes(attachedVolumesOf(i, noMaps), 'prod', [db, other], own)).toEqual(['volume default/data is attached to prod/db too']);
    // Onto another pool, or into a project with volumes of its own, nothing is shared.
    expect(sharedVolumes(mapped, 'prod', [db], own)).toEqual([]);
    expect(sharedVolumes(attachedVolumesOf(i, noMaps), 'drill', [db], own)).toEqual([]);
    // A project without volumes of its own uses the default project's.
    const defaults = instance('default', 'db', db.expanded_devices!);
    expect(sharedVolumes(attachedVolumesOf(i, noMaps), 'drill', [defaults], () => 'default')).toEqual(['volume default/data is attached to default/db too']);
  });
});

describe('maps no backup uses', () => {
  const web = { type: 'instance' as const, project: 'prod', index: { pool: 'default', config: { container: { profiles: ['default', 'web'], devices: { eth0: { type: 'nic', network: 'br0' }, d: { type: 'disk', pool: 'fast', source: 'data' } } } } } };
  const vol = { type: 'volume' as const, project: 'prod', pool: 'bulk' };
  it('are named, each, with what no backup uses', () => {
    const maps: Mappings = {
      project: new Map([['prod', 'drill'], ['prd', 'x']]),
      pool: new Map([['default', 'a'], ['fast', 'b'], ['bulk', 'c'], ['fats', 'd']]),
      profile: new Map([['web', 'w2'], ['wbe', 'w3']]),
      network: new Map([['br0', 'n'], ['br1', 'm']]),
    };
    expect(unusedMappings(maps, [web, vol])).toEqual([
      '--project-map prd=x: no backup in this restore uses project prd',
      '--pool-map fats=d: no backup in this restore uses pool fats',
      '--profile-map wbe=w3: no backup in this restore uses profile wbe',
      '--network-map br1=m: no backup in this restore uses network br1',
    ]);
    expect(unusedMappings(noMaps, [web, vol])).toEqual([]);
  });

  it('judges pools, profiles and networks only when every instance backup says what it uses', () => {
    const maps: Mappings = { ...noMaps, project: new Map([['nope', 'x']]), pool: new Map([['nope', 'x']]) };
    expect(unusedMappings(maps, [web, { type: 'instance', project: 'prod' }])).toEqual(['--project-map nope=x: no backup in this restore uses project nope']);
  });
});
