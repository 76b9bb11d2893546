import { describe, expect, it } from 'vitest';
import { identityKeys, safeVolatileKey, setInstanceConfig, volatileLocked } from '../../src/core/identity.js';
import { IncusError, VOLATILE_REFUSED } from '../../src/incus/errors.js';

describe('volatileLocked: where Incus 6.0 refuses volatile keys', () => {
  it('in a project with restrictions or any limits.* key, unless it allows low-level options', () => {
    expect(volatileLocked({}, 'container')).toBe(false);
    expect(volatileLocked({ 'features.profiles': 'true' }, 'container')).toBe(false);
    expect(volatileLocked({ 'limits.instances': '10' }, 'container')).toBe(true);
    expect(volatileLocked({ restricted: 'true' }, 'container')).toBe(true);
    expect(volatileLocked({ restricted: 'false', 'restricted.snapshots': 'block' }, 'container')).toBe(false);
    expect(volatileLocked({ 'limits.disk': '10GiB', 'restricted.containers.lowlevel': 'allow' }, 'container')).toBe(false);
    // The switch is per instance type.
    expect(volatileLocked({ restricted: 'true', 'restricted.containers.lowlevel': 'allow' }, 'virtual-machine')).toBe(true);
    expect(volatileLocked({ restricted: 'true', 'restricted.virtual-machines.lowlevel': 'allow' }, 'virtual-machine')).toBe(false);
  });
});

describe('identity keys', () => {
  const config = {
    'volatile.uuid': 'u1',
    'volatile.uuid.generation': 'g1',
    'volatile.cloud-init.instance-id': 'c1',
    'volatile.eth0.hwaddr': '00:16:3e:00:00:01',
    'volatile.idmap.base': '0',
    'limits.cpu': '2',
  };

  it('are the UUIDs, the cloud-init instance-id and the MACs; only the MACs are safe in a locked project', () => {
    const keys = identityKeys(config);
    expect(Object.keys(keys).sort()).toEqual(['volatile.cloud-init.instance-id', 'volatile.eth0.hwaddr', 'volatile.uuid', 'volatile.uuid.generation']);
    expect(Object.keys(keys).filter(safeVolatileKey)).toEqual(['volatile.eth0.hwaddr']);
    expect(safeVolatileKey('volatile.root.apply_quota')).toBe(true);
    expect(safeVolatileKey('volatile.last_state.power')).toBe(true);
    expect(safeVolatileKey('volatile.idmap.base')).toBe(false);
  });

  it('setInstanceConfig writes them into index.yaml and backup.yaml, config and expanded config', () => {
    const index = { name: 'copy', config: { container: { config: { 'volatile.uuid': 'x', a: '1' }, expanded_config: { 'volatile.uuid': 'x' } } } };
    const backupYaml = { container: { config: { 'volatile.uuid': 'x' } }, snapshots: [] };
    const set = setInstanceConfig({ 'volatile.uuid': 'u1', 'volatile.cloud-init.instance-id': 'c1' });
    set(index);
    set(backupYaml);
    expect(index.config.container.config).toEqual({ 'volatile.uuid': 'u1', 'volatile.cloud-init.instance-id': 'c1', a: '1' });
    expect(index.config.container.expanded_config).toEqual({ 'volatile.uuid': 'u1', 'volatile.cloud-init.instance-id': 'c1' });
    expect(backupYaml.container.config).toEqual({ 'volatile.uuid': 'u1', 'volatile.cloud-init.instance-id': 'c1' });
  });
});

describe("Incus's refusal of volatile keys", () => {
  it('is recognised, and its error says what lets them through', () => {
    const msg = 'Changing "volatile.uuid.generation" on container "ibtmp-1-ab" in project "p" is forbidden';
    expect(VOLATILE_REFUSED.test(msg)).toBe(true);
    expect(VOLATILE_REFUSED.test('Setting "volatile.idmap.base" on container "web" in project "p" is forbidden')).toBe(true);
    expect(VOLATILE_REFUSED.test('Project "p" doesn\'t allow for backup creation')).toBe(false);
    expect(new IncusError(403, msg, 'PUT', '/1.0/instances/x').hint).toContain('restricted.containers.lowlevel=allow');
  });
});
