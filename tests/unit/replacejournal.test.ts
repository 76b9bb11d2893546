import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { disksAttaching, encodeJournal, isAbandoned, JOURNAL_KEY, journalOf, newJournal, withoutJournal } from '../../src/core/replacejournal.js';
import type { Instance } from '../../src/incus/types.js';

const inst = (name: string, devices: Instance['devices']): Instance =>
  ({ name, type: 'container', status: 'Stopped', status_code: 102, config: {}, devices, profiles: [], ephemeral: false, stateful: false, description: '', architecture: 'x86_64' }) as Instance;

describe('a replace journal', () => {
  it('reads back what was written, and nothing else', () => {
    const j = newJournal('web', [{ name: 'web', frozen: false, ephemeral: true }], { nics: { devices: { eth0: { type: 'nic', network: 'br0' } }, volatile: { 'volatile.eth0.hwaddr': '10:66:6a:00:00:01' } } });
    expect(journalOf({ [JOURNAL_KEY]: encodeJournal(j), 'user.other': 'x' })).toEqual(j);
    expect(journalOf({})).toBeUndefined();
    expect(journalOf(undefined)).toBeUndefined();
    expect(journalOf({ [JOURNAL_KEY]: 'not json' })).toBeUndefined();
    expect(journalOf({ [JOURNAL_KEY]: JSON.stringify({ pid: 'x', name: 'web' }) })).toBeUndefined();
  });

  it('is abandoned only when its run is of this host and gone', () => {
    const mine = newJournal('web', [], {});
    expect(isAbandoned(mine)).toBe(false); // this very process
    expect(isAbandoned({ ...mine, pid: 2 ** 22 + 7 })).toBe(true); // beyond pid_max: no such process
    expect(isAbandoned({ ...mine, pid: 2 ** 22 + 7, host: `${hostname()}-elsewhere` })).toBe(false);
  });

  it('leaves the rest of the config as it was when removed', () => {
    expect(withoutJournal({ [JOURNAL_KEY]: '{}', 'limits.cpu': '2' })).toEqual({ 'limits.cpu': '2' });
  });

  it('finds the disk devices that attach one volume, on its pool only', () => {
    const a = inst('a', { data: { type: 'disk', pool: 'default', source: 'v1', path: '/data' }, root: { type: 'disk', pool: 'default', path: '/' } });
    const b = inst('b', { other: { type: 'disk', pool: 'fast', source: 'v1', path: '/x' }, v: { type: 'disk', pool: 'default', source: 'v1', path: '/v' } });
    expect(disksAttaching([a, b], 'default', 'v1')).toEqual([
      { instance: 'a', device: 'data', config: { type: 'disk', pool: 'default', source: 'v1', path: '/data' } },
      { instance: 'b', device: 'v', config: { type: 'disk', pool: 'default', source: 'v1', path: '/v' } },
    ]);
  });
});
