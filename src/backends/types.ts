import type { Readable, Writable } from 'node:stream';
import type { Manifest } from '../core/manifest.js';
import type { Compression, ResourceKey, ResourceType } from '../core/types.js';

export interface ListFilter {
  type?: ResourceType;
  project?: string;
  name?: string;
  pool?: string;
}

/** A complete backup as a backend lists it: its manifest and where it lives. */
export interface BackupEntry {
  manifest: Manifest;
  /** Backend-specific location (a directory, a restic snapshot id). */
  location: string;
  /** Bytes newly stored for this backup after deduplication (restic's data_added), if known. */
  dataAdded?: number;
}

/** The archive being written; nothing becomes visible to `list` until `commit`. */
export interface ArchiveWriter {
  /** Where the tarball bytes go. Ends when the caller ends it. */
  readonly stream: Writable;
  /** Version id this backup will have (final after commit, which may add a `-N` suffix). */
  readonly timestamp: string;
  /**
   * Resolves once the target can take the archive (restic: the repository is open), rejects
   * with the reason it cannot (wrong password, unreachable). Writers are created before the
   * slow Incus steps so that this overlaps them; writing before it resolves is allowed (the
   * first write waits), awaiting it first just reports a dead target before any export starts.
   */
  ready(): Promise<void>;
  /**
   * Makes the backup visible, once its data is durable. The manifest is completed by the
   * backend (stored size/sha256, file name) and returned.
   */
  commit(manifest: Omit<Manifest, 'archive'> & { archive: Pick<Manifest['archive'], 'size' | 'sha256'> }): Promise<BackupEntry>;
  /** Removes everything written so far. Safe to call more than once and after a failed commit. */
  abort(): Promise<void>;
}

export interface WriteRequest {
  key: ResourceKey;
  when: Date;
  archiveBase: 'export.tar' | 'volume.tar' | 'config.json' | 'image.tar';
  compression: Compression;
}

/** A backup the backend can see but cannot use (bad or missing manifest, missing data). */
export interface BrokenBackup {
  location: string;
  key: Partial<ResourceKey> & { timestamp?: string };
  problem: string;
  /** What kind of damage, for verify's report; 'manifest' when not given. */
  kind?: ProblemKind;
  /** Left by a run that never completed, and surely over: prune removes it (nothing lists it). */
  leftover?: boolean;
  /** Bytes it holds, when known. */
  size?: number;
}

/** Kinds of damage verify reports; the message says the details. */
export type ProblemKind = 'checksum' | 'missing' | 'manifest' | 'truncated' | 'size' | 'unreadable' | 'repository';

export interface Problem {
  kind: ProblemKind;
  message: string;
}

/** What verify asks for. A dir target reads and hashes all data whatever is asked. */
export interface CheckOptions {
  /** restic: `restic check --read-data`. */
  readData?: boolean;
  /** restic: `restic check --read-data-subset X` (n/t, x% or a size). */
  readDataSubset?: string;
  /** Stream every archive back and compare it with its manifest (restic: `restic dump`). */
  deep?: boolean;
  signal?: AbortSignal;
  /** Bytes read so far for the item being checked. */
  onBytes?: (done: number) => void;
}

/** The stored data of one backup checked against its manifest. */
export interface EntryCheck {
  problems: Problem[];
  bytesRead: number;
  /** The backup disappeared while being checked (a concurrent prune): not damage. */
  gone?: boolean;
}

export interface LockRequest {
  /** Waits this long for another writer; 0 fails at once. */
  waitMs: number;
  signal?: AbortSignal;
  /** Waiting, or taking over a stale lock. */
  onNotice?: (msg: string) => void;
}

/** Everything a storage target must do; one conformance suite runs against each. */
export interface Backend {
  readonly kind: 'dir' | 'restic';
  readonly uri: string;
  /**
   * Prepares the target for writing (creates it if missing, says so through `onNotice`).
   * Writers may be created before it settles; a rejection means the target cannot be written.
   */
  prepareWrite(onNotice: (msg: string) => void): Promise<void>;
  /** Complete backups only, oldest first per resource. Fails if the target does not exist. */
  list(filter?: ListFilter): Promise<BackupEntry[]>;
  /** Like list, plus what is damaged or incomplete (for verify). */
  scan(filter?: ListFilter): Promise<{ entries: BackupEntry[]; broken: BrokenBackup[] }>;
  createWriter(req: WriteRequest): Promise<ArchiveWriter>;
  /**
   * `key` is backed up next: start opening its writer now, so that its start-up cost (restic:
   * key derivation and lock wait, ~0.7 s) overlaps the backup before it. createWriter() for the
   * same key takes it; one never taken is stopped by close(), before it saved anything.
   */
  prewarm?(key: ResourceKey): void;
  /**
   * Gives each instance entry's manifest at least the index fields a restore reads (planIndex);
   * other entries need none and are left alone. Needed where list() gives summaries (restic:
   * older backups' summaries carry no index); absent where listed manifests are complete (dir).
   */
  loadIndexes?(entries: BackupEntry[]): Promise<void>;
  /** The uncompressed tarball as stored. */
  openArchive(entry: BackupEntry, signal?: AbortSignal): Promise<Readable>;
  /**
   * A restore of `key`'s newest backup is about to follow: start reading it now, alongside the
   * listing (restic: the dump's key derivation then overlaps the listing's). openArchive() uses
   * what was read ahead only when the listing shows it is that entry's archive.
   */
  readAhead?(key: ResourceKey, signal?: AbortSignal): void;
  /**
   * Whether openArchive(entry) was served by readAhead(). A checksum mismatch then may only mean
   * that a newer backup landed between the listing and the read-ahead: read it again, plainly.
   */
  wasReadAhead?(entry: BackupEntry): boolean;
  /**
   * `entry` is restored next: start opening its archive now, so that its start-up cost (restic:
   * key derivation and lock wait, ~0.7 s) overlaps the restore before it. openArchive(entry)
   * takes it; one never taken is stopped by close(). With `manifest`, the entry is verified
   * next (`verify --deep`): its manifest file is read now as well, for checkEntry to take.
   */
  prefetch?(entry: BackupEntry, signal?: AbortSignal, opts?: { manifest?: boolean }): void;
  /**
   * Removes these backups, and the `leftovers` scan() marked so (a batch, so restic can forget
   * them all and prune once). `reclaimed`: the space the target got back, when it differs from
   * the backups' sizes and is known (restic: data other backups share stays).
   */
  remove(entries: BackupEntry[], leftovers?: BrokenBackup[]): Promise<{ reclaimed?: number }>;
  close(): Promise<void>;
  /**
   * The run is interrupted (Ctrl-C, SIGTERM): stop whatever the backend has running now, so
   * that nothing waits on it (restic retrying a server for minutes, or waiting for a lock). A
   * SIGTERM sent to incus-backup alone (systemd's KillMode=mixed) reaches no child by itself.
   */
  interrupt?(): void;

  /**
   * Re-reads the stored data of one backup and checks it against its manifest (and, for dir
   * targets, checksums.txt). Without it, verify streams openArchive() when --deep is given.
   */
  checkEntry?(entry: BackupEntry, opts: CheckOptions): Promise<EntryCheck>;
  /**
   * Extension point for a whole-repository check, run once before the per-backup checks
   * (restic: `restic check`, with --read-data / --read-data-subset from opts).
   */
  check?(opts: CheckOptions): Promise<{ problems: Problem[]; bytesRead?: number }>;
  /**
   * What a backup's dry run checks of the target without changing it: throws what prepareWrite
   * would (a directory of the wrong kind, a wrong password); resolves to a note when the real
   * run would create the target.
   */
  checkWritable?(): Promise<string | undefined>;
  /** Pins a backup so that prune never removes it (restic: a tag). Returns the updated entry. */
  setProtected?(entry: BackupEntry, value: boolean): Promise<BackupEntry>;
  /**
   * Takes the target's writer lock for backup, prune and protect; resolves to its release.
   * Absent when the storage locks by itself (restic).
   */
  lock?(purpose: string, req: LockRequest): Promise<() => Promise<void>>;
}

/** Settings a backend may need beyond its URI. */
export interface BackendOptions {
  /** restic: the repository password file (given to restic as RESTIC_PASSWORD_FILE). */
  passwordFile?: string;
  /** restic: where the password comes from, as the user names it (said when it is wrong). */
  passwordSource?: string;
  /** The environment the command runs with (restic reads its credentials from it). */
  env?: NodeJS.ProcessEnv;
  /** Where a backend's warnings go (the run's output layer). */
  warn?: (msg: string) => void;
  /** Asks before going on (refused without a terminal unless -y): e.g. an old restic. */
  confirm?: (question: string) => Promise<void>;
}

export interface BackendFactory {
  scheme: string;
  /** One-line description for help texts and errors. */
  example: string;
  create(rest: string, uri: string, opts?: BackendOptions): Backend;
}
