import { createRequire } from 'node:module';
import type TableType from 'cli-table3';
import { yaml } from '../core/yaml.js';

export type OutputFormat = 'table' | 'json' | 'yaml';

export interface Column<T> {
  header: string;
  value: (row: T) => string;
}

/**
 * --output yaml: every string value double-quoted, so that no reader takes a volume named `yes`
 * for a boolean (YAML 1.1 readers such as PyYAML do) or an instant for a date: the same
 * objects as --output json, whatever the reader.
 */
export function toYaml(data: unknown): string {
  return yaml().stringify(data, { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN' });
}

/** One result, three renderings: people get a table, scripts get the same rows as data. */
export function render<T>(rows: T[], format: OutputFormat, columns: Column<T>[], toData: (row: T) => unknown = (r) => r): string {
  if (format === 'json') return JSON.stringify(rows.map(toData), null, 2) + '\n';
  if (format === 'yaml') return toYaml(rows.map(toData));
  if (rows.length === 0) return '';
  // Loaded on first use: json/yaml output and the streaming commands' start-up never need it.
  const Table = createRequire(import.meta.url)('cli-table3') as typeof TableType;
  const table = new Table({
    head: columns.map((c) => c.header),
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const r of rows) table.push(columns.map((c) => c.value(r)));
  return table.toString() + '\n';
}

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function humanDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)}m${Math.round(s % 60)}s`;
}
