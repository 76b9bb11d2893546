import { describe, expect, it } from 'vitest';
import { IbError } from '../../src/errors.js';
import { failedRow, hintLines, type ResultRow } from '../../src/cli/summary.js';

const row = (name: string, pool?: string): ResultRow => ({ type: pool ? 'volume' : 'instance', project: 'p', name, ...(pool ? { pool } : {}), status: 'planned' });

describe('failed rows and their hints', () => {
  it('a failed row carries the error in place of its detail, and its hint', () => {
    const r = failedRow({ ...row('a'), detail: 'snapshot' }, new IbError('a is busy', 1, 'wait for it'));
    expect(r).toEqual({ type: 'instance', project: 'p', name: 'a', status: 'failed', error: 'a is busy', hint: 'wait for it' });
    expect(failedRow(row('b'), new Error('boom'))).toEqual({ type: 'instance', project: 'p', name: 'b', status: 'failed', error: 'boom' });
  });

  it('prints each distinct hint once, naming the rows it is for', () => {
    const rows = [
      failedRow(row('a'), new IbError('a is busy', 1, 'wait for it')),
      { ...row('ok'), status: 'ok' as const },
      failedRow(row('v', 'pool1'), new IbError('v is busy', 1, 'wait for it')),
      failedRow(row('c'), new IbError('disk full', 1, 'free space')),
      failedRow(row('d'), new Error('no hint here')),
    ];
    expect(hintLines(rows)).toEqual(['Hint: wait for it (instance p/a, volume p/pool1/v)', 'Hint: free space (instance p/c)']);
  });

  it('a run of one row gets its hint with its error instead', () => {
    expect(hintLines([failedRow(row('a'), new IbError('a is busy', 1, 'wait for it'))])).toEqual([]);
  });
});
