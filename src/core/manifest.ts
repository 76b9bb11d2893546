import { toolVersion } from '../version.js';
import type { Compression, ConsistencyMode, ResourceKey, ResourceType } from './types.js';

export const MANIFEST_FORMAT = 1;

/** Everything needed to restore and to verify one backup, written after its data is safe. */
export interface Manifest extends ResourceKey {
  format: number;
  /** The backup's version id: YYYYMMDDThhmmssZ, with -N appended if one second held several. */
  timestamp: string;
  createdAt: string;
  tool: { name: string; version: string };
  incus: { serverVersion: string };
  /** How the backup was made consistent, when, and how long writers were frozen for it. */
  consistency: { mode: ConsistencyMode; instant: string; frozenMs?: number };
  options: { optimized: boolean; withSnapshots: boolean; compression: Compression };
  archive: {
    /** File name as stored (export.tar, volume.tar.zst, ...). */
    file: string;
    /** Bytes and sha256 of the uncompressed tarball, as Incus produced it. */
    size: number;
    sha256: string;
    /** Bytes and sha256 of what is stored, when compression makes it differ. */
    storedSize: number;
    storedSha256: string;
  };
  source: {
    status?: string;
    instanceType?: string;
    contentType?: string;
    host?: string;
    /**
     * An instance backed up through a temporary copy: the source's `boot.autostart` ('' when
     * unset). The copy, whose config the archive holds, has it false (Incus would start it on its
     * own beside the original when the daemon restarts); a restore puts this value back.
     */
    bootAutostart?: string;
  };
  /** Images: what Incus needs to import it again and to give it back its names. */
  image?: {
    contentType: string;
    aliases: { name: string; description: string }[];
    properties: Record<string, string>;
    public: boolean;
    autoUpdate: boolean;
    type: string;
    filename: string;
    /** The profiles an instance launched from it gets by default; absent in backups made before they were kept. */
    profiles?: string[];
    /** When Incus lets it expire; absent when it never does (or in backups made before it was kept). */
    expiresAt?: string;
  };
  /** The archive's backup/index.yaml, parsed, captured while streaming. */
  index?: Record<string, unknown>;
  /**
   * The backup run that made it, by its start (ISO time), and whether that run covered its kind
   * in the project whole (no names given; the configuration file's include/exclude patterns still
   * apply). The config backup of `backup all` names the projects whose instances and volumes the
   * run covered whole, so that a run that found none of a kind still counts. `restore all` marks
   * what the newest whole run lacks (cli/select.ts, missedRun).
   */
  run?: { startedAt: string; whole: boolean; projects?: string[] };
  protected?: boolean;
}

export class ManifestError extends Error {}

const TYPES: ResourceType[] = ['instance', 'volume', 'config', 'image'];
const SHA = /^[0-9a-f]{64}$/;

function need(cond: unknown, what: string): asserts cond {
  if (!cond) throw new ManifestError(what);
}

/** Validates a parsed manifest; the message names the first field that is wrong. */
export function validateManifest(v: unknown): Manifest {
  need(v && typeof v === 'object' && !Array.isArray(v), 'not a JSON object');
  const m = v as Manifest;
  need(m.format === MANIFEST_FORMAT, `unsupported format ${String(m.format)} (expected ${MANIFEST_FORMAT})`);
  need(TYPES.includes(m.type), `bad type ${String(m.type)}`);
  need(typeof m.project === 'string' && m.project, 'missing project');
  need(typeof m.name === 'string' && m.name, 'missing name');
  need(m.type !== 'volume' || (typeof m.pool === 'string' && m.pool), 'volume without pool');
  need(typeof m.timestamp === 'string' && /^\d{8}T\d{6}Z(-\d+)?$/.test(m.timestamp), 'bad timestamp');
  need(m.archive && typeof m.archive === 'object', 'missing archive');
  need(typeof m.archive.file === 'string' && !m.archive.file.includes('/'), 'bad archive file name');
  need(Number.isSafeInteger(m.archive.size) && m.archive.size >= 0, 'bad archive size');
  need(Number.isSafeInteger(m.archive.storedSize) && m.archive.storedSize >= 0, 'bad stored size');
  need(SHA.test(m.archive.sha256 ?? ''), 'bad archive sha256');
  need(SHA.test(m.archive.storedSha256 ?? ''), 'bad stored sha256');
  need(m.consistency && typeof m.consistency.mode === 'string', 'missing consistency');
  return m;
}

export function parseManifest(text: string): Manifest {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ManifestError(`not valid JSON (${(e as Error).message})`);
  }
  return validateManifest(v);
}

/** UTC second-resolution version id used in paths and for --version. */
export function formatTimestamp(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
}

export function timestampToDate(ts: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(ts);
  if (!m) throw new ManifestError(`bad timestamp ${ts}`);
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
}

/** Orders version ids: by time, then by the -N suffix for backups of the same second. */
export function compareTimestamps(a: string, b: string): number {
  const [ta, na] = a.split('-');
  const [tb, nb] = b.split('-');
  if (ta !== tb) return ta! < tb! ? -1 : 1;
  return Number(na ?? 0) - Number(nb ?? 0);
}

/** The order backends list backups in: by resource, then oldest first. */
export function compareManifests(a: Manifest, b: Manifest): number {
  return (
    a.type.localeCompare(b.type) ||
    a.project.localeCompare(b.project) ||
    (a.pool ?? '').localeCompare(b.pool ?? '') ||
    a.name.localeCompare(b.name) ||
    compareTimestamps(a.timestamp, b.timestamp)
  );
}

/** What a writer's commit takes: the manifest without what the backend adds (stored file, sizes). */
export type ManifestDraft = Omit<Manifest, 'archive'> & { archive: Pick<Manifest['archive'], 'size' | 'sha256'> };

/** The fields every backup shares; callers add consistency, options and what is theirs. */
export function draftManifest(
  key: ResourceKey,
  timestamp: string,
  serverVersion: string,
  archive: { size: number; sha256: string },
  fields: Pick<Manifest, 'consistency'> & Partial<Pick<Manifest, 'options' | 'source' | 'index' | 'image' | 'run'>>,
): ManifestDraft {
  return {
    format: MANIFEST_FORMAT,
    ...key,
    timestamp,
    createdAt: new Date().toISOString(),
    tool: { name: 'incus-backup', version: toolVersion },
    incus: { serverVersion },
    options: { optimized: false, withSnapshots: false, compression: 'none' },
    source: {},
    ...fields,
    archive,
  };
}
