import type { Node, Pair } from 'yaml';
import { yaml } from './yaml.js';
import { UsageError } from '../errors.js';
import { LOG_LEVELS, type LogLevel } from './types.js';

/**
 * The configuration file (YAML). Every key is optional; flags override environment variables
 * (INCUS_BACKUP_*), which override the file, which overrides the defaults.
 */
export interface FileSettings {
  target?: string;
  project?: string;
  all_projects?: boolean;
  parallel?: number;
  consistency?: 'snapshot' | 'live';
  retention?: {
    keep_last?: number;
    keep_hourly?: number;
    keep_daily?: number;
    keep_weekly?: number;
    keep_monthly?: number;
    keep_yearly?: number;
    keep_within?: string;
  };
  restic?: { password_file?: string };
  instances?: { include?: string[]; exclude?: string[] };
  volumes?: { include?: string[]; exclude?: string[] };
  log?: { file?: string; level?: LogLevel; max_size?: number; keep?: number };
}

type Kind = 'string' | 'boolean' | 'integer' | 'strings' | { enum: string[] } | { map: Record<string, Kind> };

const int: Kind = 'integer';
const SCHEMA: Record<string, Kind> = {
  target: 'string',
  project: 'string',
  all_projects: 'boolean',
  parallel: int,
  consistency: { enum: ['snapshot', 'live'] },
  retention: {
    map: { keep_last: int, keep_hourly: int, keep_daily: int, keep_weekly: int, keep_monthly: int, keep_yearly: int, keep_within: 'string' },
  },
  restic: { map: { password_file: 'string' } },
  instances: { map: { include: 'strings', exclude: 'strings' } },
  volumes: { map: { include: 'strings', exclude: 'strings' } },
  log: { map: { file: 'string', level: { enum: [...LOG_LEVELS] }, max_size: int, keep: int } },
};

export const DEFAULT_CONFIG_FILE = '/etc/incus-backup/config.yaml';

/** Parses and validates; errors name the file, the key and the line. */
export function parseSettings(text: string, file: string): FileSettings {
  const { LineCounter, parseDocument, isMap, isScalar, isSeq } = yaml();
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const where = (n: Node | Pair | null | undefined) => {
    const range = (n as { range?: [number, number, number] } | null)?.range ?? ((n as Pair)?.key as Node | undefined)?.range;
    return range ? `${file}:${lines.linePos(range[0]).line}` : file;
  };
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    throw new UsageError(`${file}:${lines.linePos(e.pos[0]).line}: invalid YAML: ${e.message.split("\n")[0]}`, "fix the file or point --config elsewhere");
  }
  if (doc.contents === null) return {};
  const check = (node: Node | null, kind: Kind, path: string): unknown => {
    const bad = (what: string) => new UsageError(`${where(node)}: ${path}: ${what}`, `see the README's configuration section`);
    if (typeof kind === 'object' && 'map' in kind) {
      if (!isMap(node)) throw bad('expected a mapping');
      const out: Record<string, unknown> = {};
      for (const pair of node.items) {
        const k = isScalar(pair.key) ? String(pair.key.value) : '';
        const sub = kind.map[k];
        if (!sub) throw new UsageError(`${where(pair.key as Node)}: unknown key "${path ? `${path}.` : ''}${k}"`, `known keys here: ${Object.keys(kind.map).join(', ')}`);
        out[k] = check(pair.value as Node | null, sub, path ? `${path}.${k}` : k);
      }
      return out;
    }
    if (kind === 'strings') {
      if (!isSeq(node) || !node.items.every((i) => isScalar(i) && typeof i.value === 'string')) throw bad('expected a list of strings');
      return node.items.map((i) => String((i as { value: unknown }).value));
    }
    if (!isScalar(node)) throw bad(`expected a ${typeof kind === 'object' ? 'string' : kind}`);
    const v = node.value;
    if (kind === 'string' && typeof v === 'string' && v) return v;
    if (kind === 'boolean' && typeof v === 'boolean') return v;
    if (kind === 'integer' && typeof v === 'number' && Number.isInteger(v)) return v;
    if (typeof kind === 'object' && 'enum' in kind && typeof v === 'string' && kind.enum.includes(v)) return v;
    throw bad(typeof kind === 'object' && 'enum' in kind ? `expected one of ${kind.enum.join(', ')}, got ${JSON.stringify(v)}` : `expected ${kind === 'integer' ? 'an integer' : `a ${kind}`}, got ${JSON.stringify(v)}`);
  };
  return check(doc.contents as Node, { map: SCHEMA }, '') as FileSettings;
}

/** `*` and `?` wildcards, whole-name match. */
export function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(name);
}

/** Applies include/exclude patterns to names picked when none were given explicitly. */
export function selectByPatterns(names: string[], patterns: { include?: string[]; exclude?: string[] } | undefined): string[] {
  if (!patterns) return names;
  return names.filter(
    (n) => (!patterns.include?.length || patterns.include.some((p) => globMatch(p, n))) && !(patterns.exclude ?? []).some((p) => globMatch(p, n)),
  );
}
