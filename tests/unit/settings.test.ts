import { describe, expect, it } from 'vitest';
import { globMatch, parseSettings, selectByPatterns } from '../../src/core/settings.js';
import { UsageError } from '../../src/errors.js';

const parseErr = (text: string) => {
  try {
    parseSettings(text, '/etc/ib.yaml');
  } catch (e) {
    return e as UsageError;
  }
  throw new Error('expected an error');
};

describe('configuration file', () => {
  it('parses every supported key', () => {
    const s = parseSettings(
      [
        'target: restic:/srv/restic',
        'project: web',
        'all_projects: true',
        'parallel: 3',
        'consistency: live',
        'retention:',
        '  keep_daily: 7',
        '  keep_within: 30d',
        'restic:',
        '  password_file: /root/pw',
        'instances:',
        '  include: ["web*"]',
        '  exclude: ["web-tmp"]',
        'volumes:',
        '  exclude: ["*/scratch"]',
        'log:',
        '  file: /var/log/ib.jsonl',
        '  level: debug',
        '  max_size: 1048576',
        '  keep: 3',
      ].join('\n'),
      'f.yaml',
    );
    expect(s).toEqual({
      target: 'restic:/srv/restic',
      project: 'web',
      all_projects: true,
      parallel: 3,
      consistency: 'live',
      retention: { keep_daily: 7, keep_within: '30d' },
      restic: { password_file: '/root/pw' },
      instances: { include: ['web*'], exclude: ['web-tmp'] },
      volumes: { exclude: ['*/scratch'] },
      log: { file: '/var/log/ib.jsonl', level: 'debug', max_size: 1048576, keep: 3 },
    });
  });

  it('an empty file is no settings', () => {
    expect(parseSettings('', 'f')).toEqual({});
  });

  it.each([
    ['target: x\nparalel: 2\n', /^\/etc\/ib\.yaml:2: unknown key "paralel"$/],
    ['retention:\n  keep_dayly: 7\n', /^\/etc\/ib\.yaml:2: unknown key "retention.keep_dayly"$/],
    ['parallel: two\n', /^\/etc\/ib\.yaml:1: parallel: expected an integer, got "two"$/],
    ['parallel: 1.5\n', /:1: parallel: expected an integer/],
    ['all_projects: "yes"\n', /:1: all_projects: expected a boolean/],
    ['consistency: fast\n', /:1: consistency: expected one of snapshot, live, got "fast"/],
    ['\n\ninstances:\n  include: web\n', /:4: instances.include: expected a list of strings/],
    ['log: [1]\n', /:1: log: expected a mapping/],
    ['target: [unclosed\n', /^\/etc\/ib\.yaml:\d+: invalid YAML/],
  ])('rejects %j naming file, key and line', (text, msg) => {
    const e = parseErr(text);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.exitCode).toBe(2);
    expect(e.message).toMatch(msg);
  });
});

describe('include/exclude patterns', () => {
  it('matches whole names with * and ?', () => {
    expect(globMatch('web*', 'web1')).toBe(true);
    expect(globMatch('web*', 'aweb1')).toBe(false);
    expect(globMatch('db?', 'db1')).toBe(true);
    expect(globMatch('db?', 'db10')).toBe(false);
    expect(globMatch('a.b', 'axb')).toBe(false);
  });

  it('includes first, then excludes', () => {
    expect(selectByPatterns(['web1', 'web-tmp', 'db1'], { include: ['web*'], exclude: ['*-tmp'] })).toEqual(['web1']);
    expect(selectByPatterns(['web1', 'db1'], { exclude: ['db*'] })).toEqual(['web1']);
    expect(selectByPatterns(['web1', 'db1'], undefined)).toEqual(['web1', 'db1']);
  });
});
