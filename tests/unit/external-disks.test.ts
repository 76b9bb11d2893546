import { describe, expect, it } from 'vitest';
import { externalDisks } from '../../src/core/backup.js';

describe('externalDisks', () => {
  it("names the disks whose data is outside Incus's pools, as the instance runs with them", () => {
    const devices = {
      root: { type: 'disk', path: '/', pool: 'default' },
      vol: { type: 'disk', path: '/srv', pool: 'default', source: 'data' },
      shared: { type: 'disk', path: '/mnt/shared', source: '/srv/shared' },
      rbd: { type: 'disk', path: '/mnt/rbd', source: 'ceph:pool/vol' },
      eth0: { type: 'nic', network: 'incusbr0' },
    };
    expect(externalDisks({ devices: {}, expanded_devices: devices })).toEqual(['shared (/srv/shared)', 'rbd (ceph:pool/vol)']);
    expect(externalDisks({ devices: { root: devices.root } })).toEqual([]);
  });
});
