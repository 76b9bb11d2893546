import { subjectLabel, type BackupSubject, type IncusApi } from '../incus/api.js';
import { ignoreNotFound, IncusError } from '../incus/errors.js';
import { ExitCode, IbError } from '../errors.js';
import { isTmpName } from './tmpnames.js';

/**
 * Follows a resource an admin renames while it is backed up (`incus rename` of a stopped
 * instance, `incus storage volume rename`): Incus moves the run's temporary snapshot and
 * server-side backup along with it, so a clean-up by the old name finds nothing, and what
 * was made for the backup would stay on the host under the new name (on the dir driver a
 * snapshot left so can even stay mounted and block the instance's deletion).
 *
 * An instance is found again by its `volatile.uuid`; a custom volume (which has none in
 * Incus 6.0) by the run's own temporary snapshot or server-side backup, whose names are
 * unique to the run.
 */
export class Whereabouts {
  /** The instance's volatile.uuid, once read. */
  uuid?: string;
  /** The run's temporary snapshot on the subject, once asked for. */
  snapshot?: string;
  /** The run's server-side backup on the subject itself (not on a temporary copy), once asked for. */
  backup?: string;
  /** The subject's name now, once found renamed. */
  renamed?: string;

  constructor(
    private readonly api: IncusApi,
    readonly subject: BackupSubject,
  ) {}

  /** The name the subject has now, if an admin renamed it since the run began (undefined: not renamed, gone, or unknown). */
  async renamedTo(): Promise<string | undefined> {
    if (this.renamed) return this.renamed;
    const { api, subject } = this;
    if (subject.kind === 'instance') {
      if (!this.uuid) return undefined;
      // The run's temporary copy carries the source's identity too.
      const now = (await api.listInstances(subject.project)).find((i) => i.config['volatile.uuid'] === this.uuid && !isTmpName(i.name));
      if (now && now.name !== subject.name) this.renamed = now.name;
    } else if (this.snapshot) {
      const holder = (await api.listAllSnapshots(subject.project, subject.pool)).find((s) => s.of.kind === 'volume' && s.name === this.snapshot)?.of.name;
      if (holder && holder !== subject.name) this.renamed = holder;
    } else if (this.backup) {
      for (const v of await api.listVolumes(subject.project)) {
        if (v.pool !== subject.pool || v.name === subject.name || v.name.includes('/')) continue;
        if ((await api.listServerBackups({ ...subject, name: v.name }).catch((): string[] => [])).includes(this.backup)) {
          this.renamed = v.name;
          break;
        }
      }
    }
    return this.renamed;
  }

  /**
   * Runs `act` (a removal) on the subject; when Incus no longer knows the subject by its name,
   * on the subject under its new name. Not found under either: nothing to remove.
   */
  async onSubject(act: (s: BackupSubject) => Promise<void>): Promise<void> {
    try {
      await act(this.subject);
    } catch (e) {
      if (!(e instanceof IncusError && e.notFound)) throw e;
      const now = await this.renamedTo();
      if (!now) return;
      await act({ ...this.subject, name: now }).catch(ignoreNotFound);
    }
  }
}

/** An admin renamed the resource while it was backed up; nothing was kept of it. */
export class RenamedDuringBackupError extends IbError {
  constructor(
    readonly subject: BackupSubject,
    readonly newName: string,
  ) {
    super(
      `${subjectLabel(subject)} was renamed to ${newName} during its backup; nothing was kept`,
      ExitCode.failed,
      `back it up under its new name: \`incus-backup backup ${subject.kind === 'instance' ? 'instances' : 'volumes'} ${subject.kind === 'volume' ? `${subject.pool}/` : ''}${newName} --project ${subject.project}\``,
    );
    this.name = 'RenamedDuringBackupError';
  }
}
