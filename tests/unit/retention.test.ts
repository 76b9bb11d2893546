import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyRetention,
  parseDuration,
  policyIsEmpty,
  RetentionError,
  type KeepReason,
  type RetentionDecision,
  type RetentionItem,
  type RetentionPolicy,
} from '../../src/core/retention.js';

// All expectations below are computed by hand from the fixtures; comments give the reasoning.

const NOW = new Date('2099-01-01T00:00:00Z');

function item(id: string, iso: string, prot?: boolean): RetentionItem {
  return prot === undefined ? { id, time: new Date(iso) } : { id, time: new Date(iso), protected: prot };
}

function run<T extends RetentionItem>(items: T[], policy: RetentionPolicy, now = NOW): RetentionDecision<T>[] {
  const ds = applyRetention(items, policy, now);
  expect(ds).toHaveLength(items.length);
  for (const d of ds) expect(d.keep).toBe(d.reasons.length > 0);
  return ds;
}

const ids = (ds: RetentionDecision<RetentionItem>[]): string[] => ds.map((d) => d.item.id);
const kept = (ds: RetentionDecision<RetentionItem>[]): string[] => ds.filter((d) => d.keep).map((d) => d.item.id);
const reasons = (ds: RetentionDecision<RetentionItem>[]): Record<string, KeepReason[]> =>
  Object.fromEntries(ds.map((d) => [d.item.id, d.reasons]));

// Hourly fixture: two items in hour 10, two in hour 9, none in hour 8 (gap), then 7, 6, and
// hour 6 of the previous day (same hour-of-day, different bucket).
const HOURLY = [
  item('h1', '2024-05-10T10:45:00Z'),
  item('h2', '2024-05-10T10:15:00Z'),
  item('h3', '2024-05-10T09:59:59Z'),
  item('h4', '2024-05-10T09:00:00Z'),
  item('h5', '2024-05-10T07:30:00Z'),
  item('h6', '2024-05-10T06:00:00Z'),
  item('h7', '2024-05-09T06:30:00Z'),
];

// Daily fixture: 10th twice, 9th just before midnight, 8th missing (gap), 7th twice, 6th, 5th.
const DAILY = [
  item('a', '2024-03-10T22:00:00Z'),
  item('b', '2024-03-10T08:00:00Z'),
  item('c', '2024-03-09T23:59:59Z'),
  item('d', '2024-03-07T12:00:00Z'),
  item('e', '2024-03-07T01:00:00Z'),
  item('f', '2024-03-06T00:00:00Z'),
  item('g', '2024-03-05T00:00:00Z'),
];

// Weekly fixture around the 2020/2021 ISO year boundary. 2020 has 53 ISO weeks:
// 2020-W53 = Mon 2020-12-28 .. Sun 2021-01-03; 2021-W01 starts Mon 2021-01-04.
const WEEKLY = [
  item('w1', '2021-01-04T00:00:00Z'), // 2021-W01 (Mon)
  item('w2', '2021-01-03T23:59:59Z'), // 2020-W53 (Sun)
  item('w3', '2021-01-01T12:00:00Z'), // 2020-W53 (Fri)
  item('w4', '2020-12-31T12:00:00Z'), // 2020-W53 (Thu)
  item('w5', '2020-12-28T00:00:00Z'), // 2020-W53 (Mon)
  item('w6', '2020-12-27T12:00:00Z'), // 2020-W52 (Sun)
  item('w7', '2020-12-08T12:00:00Z'), // 2020-W50 (Tue); W51 is a gap
];

// Monthly fixture: May twice (last and first second), April's last second, March missing (gap),
// leap day, January, previous December, and May of the previous year.
const MONTHLY = [
  item('m1', '2024-05-31T23:59:59Z'),
  item('m2', '2024-05-01T00:00:00Z'),
  item('m3', '2024-04-30T23:59:59Z'),
  item('m4', '2024-02-29T12:00:00Z'),
  item('m5', '2024-01-15T00:00:00Z'),
  item('m6', '2023-12-31T00:00:00Z'),
  item('m7', '2023-05-15T00:00:00Z'),
];

// Yearly fixture: 2024 twice, 2023's last second, 2022 missing (gap), 2021, 2020.
const YEARLY = [
  item('y1', '2024-06-01T00:00:00Z'),
  item('y2', '2024-01-01T00:00:00Z'),
  item('y3', '2023-12-31T23:59:59Z'),
  item('y4', '2021-07-01T00:00:00Z'),
  item('y5', '2020-01-01T00:00:00Z'),
];

describe('parseDuration', () => {
  it.each<[string, ReturnType<typeof parseDuration>]>([
    ['30d', { years: 0, months: 0, days: 30, hours: 0 }],
    ['1y2m', { years: 1, months: 2, days: 0, hours: 0 }],
    ['2w3d12h', { years: 0, months: 0, days: 17, hours: 12 }],
    ['1y2m3w4d5h', { years: 1, months: 2, days: 25, hours: 5 }],
    ['12h1y', { years: 1, months: 0, days: 0, hours: 12 }],
    ['3w', { years: 0, months: 0, days: 21, hours: 0 }],
    ['48h', { years: 0, months: 0, days: 0, hours: 48 }],
    ['007d', { years: 0, months: 0, days: 7, hours: 0 }],
    ['0d', { years: 0, months: 0, days: 0, hours: 0 }],
    [' 7d\n', { years: 0, months: 0, days: 7, hours: 0 }],
  ])('parses %j', (input, expected) => {
    expect(parseDuration(input)).toEqual(expected);
  });

  it.each([
    '',
    '   ',
    '5',
    '3x',
    '-1d',
    '+1d',
    'd',
    '1.5d',
    '1d 2h',
    '1D',
    '1d1d',
    '1w2d1w',
    '1y-1m',
    '1d5',
    'P1D',
    '99999999999999999999d',
  ])('rejects %j with a RetentionError', (input) => {
    expect(() => parseDuration(input)).toThrow(RetentionError);
  });

  it('names the offending input in the message', () => {
    expect(() => parseDuration('3x')).toThrow(/"3x"/);
    expect(() => parseDuration('1d1d')).toThrow(/unit "d" given twice/);
    expect(() => parseDuration('')).toThrow('empty duration');
  });
});

describe('RetentionError', () => {
  it('is an Error with its own name', () => {
    let caught: unknown;
    try {
      parseDuration('nope');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(RetentionError);
    expect(caught).toBeInstanceOf(Error);
    expect((caught as Error).name).toBe('RetentionError');
  });
});

describe('policyIsEmpty', () => {
  it.each<[string, RetentionPolicy]>([
    ['no fields', {}],
    ['undefined fields', { keepLast: undefined, keepWithin: undefined }],
    ['all counts zero', { keepLast: 0, keepHourly: 0, keepDaily: 0, keepWeekly: 0, keepMonthly: 0, keepYearly: 0 }],
    ['zero duration', { keepWithin: '0d' }],
    ['zero duration in every unit', { keepWithin: '0y0m0w0d0h', keepDaily: 0 }],
  ])('is true for %s', (_name, p) => {
    expect(policyIsEmpty(p)).toBe(true);
  });

  it.each<[string, RetentionPolicy]>([
    ['keepLast 1', { keepLast: 1 }],
    ['keepHourly 1', { keepHourly: 1 }],
    ['keepDaily -1', { keepDaily: -1 }],
    ['keepWeekly 2', { keepWeekly: 2 }],
    ['keepMonthly 3', { keepMonthly: 3 }],
    ['keepYearly 4', { keepYearly: 4 }],
    ['keepWithin 1h', { keepWithin: '1h' }],
    ['a zero count next to a real rule', { keepLast: 0, keepWithin: '0d', keepYearly: 1 }],
  ])('is false for %s', (_name, p) => {
    expect(policyIsEmpty(p)).toBe(false);
  });

  it('throws on a malformed policy rather than guessing', () => {
    expect(() => policyIsEmpty({ keepLast: 1.5 })).toThrow(RetentionError);
    expect(() => policyIsEmpty({ keepWithin: 'abc' })).toThrow(RetentionError);
    expect(() => policyIsEmpty({ keepWithin: '' })).toThrow(RetentionError);
  });
});

describe('applyRetention: validation', () => {
  it.each<[string, RetentionPolicy]>([
    ['{}', {}],
    ['all zero', { keepLast: 0, keepHourly: 0, keepDaily: 0, keepWeekly: 0, keepMonthly: 0, keepYearly: 0 }],
    ['zero duration', { keepWithin: '0d' }],
    ['zero hours and zero count', { keepWithin: '0h', keepDaily: 0 }],
  ])('throws for an empty policy (%s), with or without items', (_name, p) => {
    expect(() => applyRetention([], p, NOW)).toThrow(new RetentionError('no retention policy given'));
    expect(() => applyRetention(DAILY, p, NOW)).toThrow('no retention policy given');
  });

  const fields = ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly'] as const;
  const bad: unknown[] = [-2, -100, 1.5, -0.5, Number.NaN, Infinity, -Infinity, '3', null];
  it.each(fields.flatMap((f) => bad.map((v) => [f, v] as const)))('rejects %s = %s', (field, value) => {
    const p = { keepDaily: 1, [field]: value } as unknown as RetentionPolicy;
    expect(() => applyRetention(DAILY, p, NOW)).toThrow(RetentionError);
    expect(() => applyRetention(DAILY, p, NOW)).toThrow(field);
  });

  it('rejects an invalid keepWithin even when another rule is set', () => {
    expect(() => applyRetention(DAILY, { keepLast: 1, keepWithin: '3x' }, NOW)).toThrow(RetentionError);
    expect(() => applyRetention(DAILY, { keepLast: 1, keepWithin: '' }, NOW)).toThrow(RetentionError);
  });

  it('rejects items whose time is not a valid date', () => {
    const items = [item('ok', '2024-01-01T00:00:00Z'), { id: 'broken', time: new Date('not a date') }];
    expect(() => applyRetention(items, { keepLast: 1 }, NOW)).toThrow(/broken/);
    expect(() => applyRetention(items, { keepLast: 1 }, NOW)).toThrow(RetentionError);
  });

  it('accepts -1 and 0 as counts', () => {
    expect(kept(run(DAILY, { keepLast: 0, keepDaily: -1 }))).toEqual(['a', 'c', 'd', 'f', 'g']);
  });
});

describe('applyRetention: ordering and purity', () => {
  it('returns [] for no items', () => {
    expect(applyRetention([], { keepLast: 3 }, NOW)).toEqual([]);
  });

  it('orders decisions newest first regardless of input order', () => {
    const shuffled = [DAILY[4]!, DAILY[0]!, DAILY[6]!, DAILY[2]!, DAILY[1]!, DAILY[5]!, DAILY[3]!];
    expect(ids(run(shuffled, { keepLast: 1 }))).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
  });

  it('does not mutate the input array and hands back the same item objects', () => {
    const input = [...DAILY].reverse();
    const before = [...input];
    const ds = run(input, { keepDaily: 2 });
    expect(input).toEqual(before);
    expect(input.map((i) => i.id)).toEqual(['g', 'f', 'e', 'd', 'c', 'b', 'a']);
    expect(ds[0]!.item).toBe(DAILY[0]);
  });

  it('preserves the caller type and extra fields', () => {
    const rich = [{ id: 'x', time: new Date('2024-01-01T00:00:00Z'), path: '/backups/x' }];
    const ds = applyRetention(rich, { keepLast: 1 }, NOW);
    expect(ds[0]!.item.path).toBe('/backups/x');
  });

  it('breaks same-second ties by id, deterministically', () => {
    const t = '2024-01-01T12:00:00Z';
    const forward = [item('a', t), item('b', t), item('c', '2024-01-01T11:00:00Z')];
    const backward = [item('c', '2024-01-01T11:00:00Z'), item('b', t), item('a', t)];
    for (const input of [forward, backward]) {
      const ds = run(input, { keepLast: 1 });
      expect(ids(ds)).toEqual(['a', 'b', 'c']);
      expect(reasons(ds)).toEqual({ a: ['last'], b: [], c: [] });
    }
  });

  it('compares ids by code unit, not by locale', () => {
    const t = '2024-01-01T12:00:00Z';
    // 'B' (0x42) < 'a' (0x61) and '10' < '9' as strings; localeCompare would say otherwise.
    expect(ids(run([item('a', t), item('B', t)], { keepLast: 1 }))).toEqual(['B', 'a']);
    expect(ids(run([item('9', t), item('10', t)], { keepLast: 1 }))).toEqual(['10', '9']);
  });

  it('keeps only one of two same-second items for a bucket rule', () => {
    const t = '2024-01-01T12:00:00Z';
    const ds = run([item('b', t), item('a', t), item('z', '2023-12-31T12:00:00Z')], { keepDaily: 1 });
    expect(reasons(ds)).toEqual({ a: ['daily'], b: [], z: [] });
  });

  it('keeps both same-second items for keepWithin', () => {
    const t = '2024-01-01T12:00:00Z';
    const ds = run([item('b', t), item('a', t)], { keepWithin: '1h' });
    expect(reasons(ds)).toEqual({ a: ['within'], b: ['within'] });
  });
});

describe('applyRetention: keepLast', () => {
  it('keeps the N newest', () => {
    const ds = run(DAILY, { keepLast: 3 });
    expect(reasons(ds)).toEqual({ a: ['last'], b: ['last'], c: ['last'], d: [], e: [], f: [], g: [] });
  });

  it('ignores buckets: two items of the same day both count', () => {
    expect(kept(run(DAILY, { keepLast: 2 }))).toEqual(['a', 'b']);
  });

  it('keeps everything when N exceeds the number of items', () => {
    expect(kept(run(DAILY, { keepLast: 100 }))).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
  });

  it('keeps everything with -1', () => {
    const ds = run(DAILY, { keepLast: -1 });
    expect(kept(ds)).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
    expect(ds.every((d) => d.reasons.join() === 'last')).toBe(true);
  });
});

describe('applyRetention: keepHourly', () => {
  it.each<[number, string[]]>([
    [1, ['h1']],
    [2, ['h1', 'h3']],
    // hour 8 is empty and does not use up a count
    [3, ['h1', 'h3', 'h5']],
    [4, ['h1', 'h3', 'h5', 'h6']],
    // 06:30 the previous day is a different bucket from 06:00 today
    [5, ['h1', 'h3', 'h5', 'h6', 'h7']],
    [50, ['h1', 'h3', 'h5', 'h6', 'h7']],
    [-1, ['h1', 'h3', 'h5', 'h6', 'h7']],
  ])('keepHourly %i keeps %j', (n, expected) => {
    const ds = run(HOURLY, { keepHourly: n });
    expect(kept(ds)).toEqual(expected);
    for (const id of expected) expect(reasons(ds)[id]).toEqual(['hourly']);
  });

  it('treats 23:xx and 00:xx across midnight as different hours', () => {
    const items = [
      item('x1', '2024-05-10T00:10:00Z'),
      item('x2', '2024-05-09T23:50:00Z'),
      item('x3', '2024-05-09T23:10:00Z'),
    ];
    expect(reasons(run(items, { keepHourly: 2 }))).toEqual({ x1: ['hourly'], x2: ['hourly'], x3: [] });
  });
});

describe('applyRetention: keepDaily', () => {
  it.each<[number, string[]]>([
    [1, ['a']],
    [2, ['a', 'c']],
    // the 8th is missing: the third kept day is the 7th
    [3, ['a', 'c', 'd']],
    [4, ['a', 'c', 'd', 'f']],
    [5, ['a', 'c', 'd', 'f', 'g']],
    [6, ['a', 'c', 'd', 'f', 'g']],
    [-1, ['a', 'c', 'd', 'f', 'g']],
  ])('keepDaily %i keeps %j', (n, expected) => {
    expect(kept(run(DAILY, { keepDaily: n }))).toEqual(expected);
  });

  it('keeps the newest item of each day with reason daily', () => {
    expect(reasons(run(DAILY, { keepDaily: 3 }))).toEqual({
      a: ['daily'],
      b: [],
      c: ['daily'],
      d: ['daily'],
      e: [],
      f: [],
      g: [],
    });
  });

  it('computes the day in UTC, not from the offset the time was written with', () => {
    const items = [
      item('late', '2024-03-11T01:00:00+02:00'), // 2024-03-10T23:00Z
      item('early', '2024-03-10T01:00:00Z'),
      item('prev', '2024-03-09T12:00:00Z'),
    ];
    expect(kept(run(items, { keepDaily: 2 }))).toEqual(['late', 'prev']);
  });
});

describe('applyRetention: keepWeekly (ISO 8601 weeks)', () => {
  it.each<[number, string[]]>([
    [1, ['w1']],
    // w2..w5 are all 2020-W53 even though they straddle New Year
    [2, ['w1', 'w2']],
    [3, ['w1', 'w2', 'w6']],
    // 2020-W51 is empty and does not use up a count
    [4, ['w1', 'w2', 'w6', 'w7']],
    [-1, ['w1', 'w2', 'w6', 'w7']],
  ])('keepWeekly %i keeps %j', (n, expected) => {
    expect(kept(run(WEEKLY, { keepWeekly: n }))).toEqual(expected);
  });

  it('puts 2020-12-31 and 2021-01-01 in the same week (2020-W53)', () => {
    // dec20 (W51) behind them, so that the rule does not reach nye as the oldest item.
    const items = [item('new-year', '2021-01-01T00:00:00Z'), item('nye', '2020-12-31T00:00:00Z'), item('dec20', '2020-12-20T00:00:00Z')];
    expect(reasons(run(items, { keepWeekly: 2 }))).toEqual({ 'new-year': ['weekly'], nye: [], dec20: ['weekly'] });
  });

  it('puts 2024-12-30 in 2025-W01 together with 2025-01-01', () => {
    const items = [
      item('jan1', '2025-01-01T00:00:00Z'), // Wed, 2025-W01
      item('dec30', '2024-12-30T00:00:00Z'), // Mon, 2025-W01
      item('dec29', '2024-12-29T23:00:00Z'), // Sun, 2024-W52
    ];
    expect(kept(run(items, { keepWeekly: 2 }))).toEqual(['jan1', 'dec29']);
  });

  it('starts weeks on Monday, not Sunday', () => {
    const items = [
      item('mon13', '2024-05-13T00:00:00Z'),
      item('sun12', '2024-05-12T23:00:00Z'),
      item('mon06', '2024-05-06T00:00:00Z'), // same week as sun12
    ];
    // Two weeks (Mon-Sun): mon13 | sun12, mon06. With Sunday weeks it would be mon13, sun12 | mon06.
    expect(kept(run(items, { keepWeekly: 2 }))).toEqual(['mon13', 'sun12']);
  });

  it('tells the same week number of different years apart', () => {
    const items = [item('2024w10', '2024-03-06T00:00:00Z'), item('2023w10', '2023-03-08T00:00:00Z')];
    expect(kept(run(items, { keepWeekly: 2 }))).toEqual(['2024w10', '2023w10']);
  });
});

describe('applyRetention: keepMonthly', () => {
  it.each<[number, string[]]>([
    [1, ['m1']],
    [2, ['m1', 'm3']],
    // March is empty and does not use up a count
    [3, ['m1', 'm3', 'm4']],
    [4, ['m1', 'm3', 'm4', 'm5']],
    // May 2023 is a different bucket from May 2024
    [6, ['m1', 'm3', 'm4', 'm5', 'm6', 'm7']],
    [-1, ['m1', 'm3', 'm4', 'm5', 'm6', 'm7']],
  ])('keepMonthly %i keeps %j', (n, expected) => {
    expect(kept(run(MONTHLY, { keepMonthly: n }))).toEqual(expected);
  });

  it('reports monthly as the reason', () => {
    const r = reasons(run(MONTHLY, { keepMonthly: 2 }));
    expect(r).toEqual({ m1: ['monthly'], m2: [], m3: ['monthly'], m4: [], m5: [], m6: [], m7: [] });
  });
});

describe('applyRetention: keepYearly', () => {
  it.each<[number, string[]]>([
    [1, ['y1']],
    [2, ['y1', 'y3']],
    // 2022 is empty and does not use up a count
    [3, ['y1', 'y3', 'y4']],
    [-1, ['y1', 'y3', 'y4', 'y5']],
  ])('keepYearly %i keeps %j', (n, expected) => {
    expect(kept(run(YEARLY, { keepYearly: n }))).toEqual(expected);
  });

  it('reports yearly as the reason', () => {
    expect(reasons(run(YEARLY, { keepYearly: 2 }))).toEqual({ y1: ['yearly'], y2: [], y3: ['yearly'], y4: [], y5: [] });
  });
});

describe('applyRetention: keepWithin', () => {
  /** newest item at `newest`, plus one exactly on the expected boundary and one 1s/1ms older. */
  function boundary(newest: string, duration: string, edge: string) {
    const edgeMs = Date.parse(edge);
    const items = [
      item('newest', newest),
      item('edge', edge),
      item('ms-older', new Date(edgeMs - 1).toISOString()),
      item('s-older', new Date(edgeMs - 1000).toISOString()),
    ];
    return reasons(run(items, { keepWithin: duration }));
  }
  const expected = { newest: ['within'], edge: ['within'], 'ms-older': [], 's-older': [] };

  it.each<[string, string, string, string]>([
    ['1d', '2024-06-15T12:00:00Z', '2024-06-14T12:00:00Z', 'plain days'],
    ['36h', '2024-03-31T12:00:00Z', '2024-03-30T00:00:00Z', 'hours, across a (non-UTC) DST change'],
    ['2w3d12h', '2024-06-30T12:00:00Z', '2024-06-13T00:00:00Z', 'weeks + days + hours = 17d12h'],
    ['1y', '2024-06-15T12:00:00Z', '2023-06-15T12:00:00Z', 'a year'],
    ['1y2m', '2024-01-15T00:00:00Z', '2022-11-15T00:00:00Z', 'months wrapping into the previous year'],
    ['1m', '2021-03-31T10:00:00Z', '2021-03-03T10:00:00Z', '1m from Mar 31 = "Feb 31" = Mar 3'],
    ['1m', '2020-03-31T00:00:00Z', '2020-03-02T00:00:00Z', '1m from Mar 31 in a leap year = Mar 2'],
    ['1y', '2024-02-29T00:00:00Z', '2023-03-01T00:00:00Z', '1y from a leap day = "2023-02-29" = Mar 1'],
    ['1y1m', '2024-02-29T00:00:00Z', '2023-01-29T00:00:00Z', 'years and months normalised in one step'],
    ['1m31d', '2021-03-31T00:00:00Z', '2021-01-31T00:00:00Z', 'months and days normalised in one step ("Feb 0")'],
  ])('%s before %s ends exactly at %s (%s)', (duration, newest, edge) => {
    expect(boundary(newest, duration, edge)).toEqual(expected);
  });

  it('keeps every item in the window, even several per day', () => {
    const items = [
      item('n', '2024-06-15T12:00:00Z'),
      item('n-1h', '2024-06-15T11:00:00Z'),
      item('n-2h', '2024-06-15T10:00:00Z'),
      item('n-1d', '2024-06-14T12:00:00Z'),
      item('n-3d', '2024-06-12T12:00:00Z'),
    ];
    expect(kept(run(items, { keepWithin: '2d' }))).toEqual(['n', 'n-1h', 'n-2h', 'n-1d']);
  });

  const threeDays = [item('n', '2024-06-15T12:00:00Z'), item('n-1d', '2024-06-14T12:00:00Z'), item('n-2d', '2024-06-13T12:00:00Z')];

  it('measures from the newest item, not from now', () => {
    for (const now of [NOW, new Date('2024-06-15T12:00:01Z')]) {
      expect(kept(run(threeDays, { keepWithin: '1d' }, now))).toEqual(['n', 'n-1d']);
    }
  });

  it('measures from the newest item that is not in the future, as restic does', () => {
    // A clock that was wrong once left a backup dated a year ahead: measured from it, every
    // real backup would fall out of the window.
    const items = [item('ahead', '2025-06-15T12:00:00Z'), ...threeDays];
    expect(kept(run(items, { keepWithin: '1d' }, new Date('2024-06-16T00:00:00Z')))).toEqual(['ahead', 'n', 'n-1d']);
    // Everything in the future: no reference, the window holds them all (restic: from time zero).
    expect(kept(run(items, { keepWithin: '1d' }, new Date('2000-01-01T00:00:00Z')))).toEqual(['ahead', 'n', 'n-1d', 'n-2d']);
  });

  it('keeps the newest item that is not in the future as well as the newest: --keep-last 1 must not remove the backup just made', () => {
    const items = [item('ahead', '2025-06-15T12:00:00Z'), ...threeDays];
    expect(reasons(run(items, { keepLast: 1 }, new Date('2024-06-16T00:00:00Z')))).toEqual({ ahead: ['last'], n: ['newest-not-future'], 'n-1d': [], 'n-2d': [] });
    // Nothing in the future: nothing more is kept.
    expect(reasons(run(threeDays, { keepLast: 1 }, new Date('2024-06-16T00:00:00Z')))).toEqual({ n: ['last'], 'n-1d': [], 'n-2d': [] });
  });

  it("keeps the oldest item while a rule still has counts left (restic's \"oldest\" rule)", () => {
    const items = [item('jun', '2024-06-15T12:00:00Z'), item('may', '2024-05-20T12:00:00Z'), item('may-first', '2024-05-01T12:00:00Z')];
    // monthly 12: June, May, and the oldest (same month as may) since 10 counts are left.
    expect(reasons(run(items, { keepMonthly: 12 }))).toEqual({ jun: ['monthly'], may: ['monthly'], 'may-first': ['oldest'] });
    // monthly 2: the counts are used up before the oldest, which goes.
    expect(reasons(run(items, { keepMonthly: 2 }))).toEqual({ jun: ['monthly'], may: ['monthly'], 'may-first': [] });
    // -1 (unlimited) keeps it too.
    expect(kept(run(items, { keepMonthly: -1 }))).toEqual(['jun', 'may', 'may-first']);
  });

  it('keeps everything when the window reaches beyond the representable dates', () => {
    const items = [item('n', '2024-06-15T12:00:00Z'), item('epoch', '1970-01-01T00:00:00Z'), item('old', '1000-01-01T00:00:00Z')];
    expect(kept(run(items, { keepWithin: '300000y' }))).toEqual(['n', 'epoch', 'old']);
  });

  it('handles windows reaching into years 0-99 without the two-digit-year trap', () => {
    const items = [item('n', '0150-06-15T00:00:00Z'), item('in', '0050-06-15T00:00:00Z'), item('out', '0050-06-14T23:59:59Z')];
    expect(kept(run(items, { keepWithin: '100y' }))).toEqual(['n', 'in']);
  });
});

describe('applyRetention: combined policies', () => {
  // Evening backups. ISO weeks of 2024: 06-03 (Mon) = W23, 05-27..06-02 = W22, 05-26 (Sun) = W21.
  const ITEMS = [
    item('n1', '2024-06-03T18:00:00Z'),
    item('n2', '2024-06-03T06:00:00Z'),
    item('n3', '2024-06-02T18:00:00Z'),
    item('n4', '2024-06-01T18:00:00Z'), // exactly 2d before n1
    item('n5', '2024-05-31T18:00:00Z'),
    item('n6', '2024-05-26T18:00:00Z'),
    item('n7', '2024-05-19T18:00:00Z'),
    item('n8', '2024-04-30T18:00:00Z'),
    item('n9', '2024-03-31T18:00:00Z'),
    item('n10', '2023-12-31T18:00:00Z'),
    item('n11', '2023-06-30T18:00:00Z', true),
    item('n12', '2022-12-31T18:00:00Z'),
  ];
  const POLICY: RetentionPolicy = {
    keepLast: 2,
    keepDaily: 3,
    keepWeekly: 3,
    keepMonthly: 3,
    keepYearly: 2,
    keepWithin: '2d',
  };

  it('lists every rule that kept an item, in a fixed order', () => {
    const shuffled = [...ITEMS].sort((a, b) => (a.id.length - b.id.length) || (b.id < a.id ? -1 : 1));
    expect(reasons(run(shuffled, POLICY))).toEqual({
      n1: ['last', 'daily', 'weekly', 'monthly', 'yearly', 'within'],
      n2: ['last', 'within'],
      n3: ['daily', 'weekly', 'within'],
      n4: ['daily', 'within'],
      n5: ['monthly'], // May; W22 and daily count already used
      n6: ['weekly'], // W21
      n7: [], // W20: weekly count used up; May already kept
      n8: ['monthly'], // April
      n9: [], // March: monthly count used up
      n10: ['yearly'], // 2023
      n11: ['protected'],
      n12: [], // 2022: yearly count used up
    });
  });

  it('combines hourly and daily', () => {
    expect(reasons(run(HOURLY, { keepHourly: 2, keepDaily: 2 }))).toEqual({
      h1: ['hourly', 'daily'],
      h2: [],
      h3: ['hourly'],
      h4: [],
      h5: [],
      h6: [],
      h7: ['daily'],
    });
  });

  it('orders within before protected and after the count rules', () => {
    const items = [item('only', '2024-01-01T00:00:00Z', true)];
    expect(reasons(run(items, { keepWithin: '1d', keepYearly: 1, keepHourly: 1 }))).toEqual({
      only: ['hourly', 'yearly', 'within', 'protected'],
    });
  });

  it('ignores a zero count next to other rules', () => {
    expect(reasons(run(YEARLY, { keepLast: 0, keepYearly: 1, keepWithin: '0d' }))).toEqual({
      y1: ['yearly'],
      y2: [],
      y3: [],
      y4: [],
      y5: [],
    });
  });
});

describe('applyRetention: protected items', () => {
  it('keeps a protected item that no rule wants', () => {
    const items = [
      item('p1', '2024-01-03T00:00:00Z'),
      item('p2', '2024-01-02T00:00:00Z', true),
      item('p3', '2024-01-01T00:00:00Z'),
    ];
    expect(reasons(run(items, { keepLast: 1 }))).toEqual({ p1: ['last'], p2: ['protected'], p3: [] });
  });

  it('adds protected to the rules that kept it', () => {
    const items = [item('p1', '2024-01-03T00:00:00Z', true), item('p2', '2024-01-02T00:00:00Z')];
    expect(reasons(run(items, { keepLast: 1 }))).toEqual({ p1: ['last', 'protected'], p2: [] });
    expect(reasons(run(items, { keepWithin: '1d' }))).toEqual({ p1: ['within', 'protected'], p2: ['within'] });
  });

  it('still takes part in bucket counting like any other item', () => {
    const items = [
      item('d3', '2024-01-03T00:00:00Z'),
      item('d2', '2024-01-02T00:00:00Z', true),
      item('d1', '2024-01-01T00:00:00Z'),
    ];
    expect(reasons(run(items, { keepDaily: 2 }))).toEqual({ d3: ['daily'], d2: ['daily', 'protected'], d1: [] });
  });

  it('treats protected: false like unset', () => {
    const items = [item('a', '2024-01-02T00:00:00Z'), item('b', '2024-01-01T00:00:00Z', false)];
    expect(reasons(run(items, { keepLast: 1 }))).toEqual({ a: ['last'], b: [] });
  });
});

describe('applyRetention: the newest item is always kept', () => {
  const policies: RetentionPolicy[] = [
    { keepLast: 1 },
    { keepHourly: 1 },
    { keepDaily: 1 },
    { keepWeekly: 1 },
    { keepMonthly: 1 },
    { keepYearly: 1 },
    { keepWithin: '1h' },
    { keepLast: -1 },
  ];
  it.each(policies)('with %j, keeps the newest (by a real rule, so not as "newest")', (p) => {
    for (const fixture of [HOURLY, DAILY, WEEKLY, MONTHLY, YEARLY]) {
      const ds = run([...fixture].reverse(), p);
      expect(ds[0]!.item).toBe(fixture[0]);
      expect(ds[0]!.keep).toBe(true);
      expect(ds[0]!.reasons).toHaveLength(1);
      expect(ds[0]!.reasons).not.toContain('newest');
    }
  });

  it('keeps a single item', () => {
    expect(reasons(run([item('solo', '2024-01-01T00:00:00Z')], { keepDaily: 1 }))).toEqual({ solo: ['daily'] });
  });
});

describe('applyRetention: buckets use UTC whatever the host time zone', () => {
  const saved = process.env.TZ;
  beforeAll(() => {
    process.env.TZ = 'Pacific/Kiritimati'; // UTC+14: local dates differ from UTC dates most of the day
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.TZ;
    else process.env.TZ = saved;
  });

  it('has really switched the local zone (precondition)', () => {
    expect(new Date('2024-03-10T23:00:00Z').getDate()).toBe(11);
  });

  it('daily', () => {
    const items = [
      item('first', '2024-03-10T23:00:00Z'), // local 03-11
      item('second', '2024-03-10T01:00:00Z'), // local 03-10
      item('third', '2024-03-09T12:00:00Z'), // local 03-10
    ];
    expect(kept(run(items, { keepDaily: 2 }))).toEqual(['first', 'third']);
  });

  it('monthly', () => {
    const items = [
      item('feb', '2024-02-01T05:00:00Z'),
      item('jan31', '2024-01-31T20:00:00Z'), // local Feb 1
      item('jan15', '2024-01-15T00:00:00Z'),
    ];
    expect(kept(run(items, { keepMonthly: 2 }))).toEqual(['feb', 'jan31']);
  });

  it('weekly and yearly', () => {
    const items = [
      item('mon', '2024-01-01T01:00:00Z'), // 2024-W01; local Mon 15:00 too
      item('sun', '2023-12-31T12:00:00Z'), // 2023-W52, year 2023; local Mon Jan 1 2024
      item('sat', '2023-12-30T12:00:00Z'),
    ];
    expect(kept(run(items, { keepWeekly: 2 }))).toEqual(['mon', 'sun']);
    expect(kept(run(items, { keepYearly: 2 }))).toEqual(['mon', 'sun']);
  });

  it('hourly', () => {
    process.env.TZ = 'Asia/Kolkata'; // UTC+5:30 moves hour boundaries by half an hour
    const items = [
      item('t1040', '2024-03-10T10:40:00Z'), // local 16:10
      item('t1010', '2024-03-10T10:10:00Z'), // local 15:40
      item('t0910', '2024-03-10T09:10:00Z'), // local 14:40
    ];
    expect(new Date(items[1]!.time).getMinutes()).toBe(40);
    expect(kept(run(items, { keepHourly: 2 }))).toEqual(['t1040', 't0910']);
  });
});
