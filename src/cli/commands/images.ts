import { Command, Option } from 'clipanion';
import { applyImageRestore, planImageRestore, type ImageRestorePlan } from '../../core/images.js';
import type { RunContext } from '../../core/run.js';
import { ExitCode, UsageError, type ExitCodeValue } from '../../errors.js';
import { humanBytes, type Column } from '../../output/format.js';
import type { BackupEntry } from '../../backends/types.js';
import { BaseCommand } from '../base.js';
import { groupByResource, pickVersion } from '../select.js';
import { applyAll, settle, type ResultRow } from '../summary.js';

export const imagePreviewColumns: Column<ImageRestorePlan>[] = [
  { header: 'IMAGE', value: (p) => p.entry.manifest.name.slice(0, 12) },
  { header: 'PROJECT', value: (p) => p.project },
  { header: 'VERSION', value: (p) => p.entry.manifest.timestamp },
  { header: 'SIZE', value: (p) => humanBytes(p.entry.manifest.archive.size) },
  { header: 'ACTION', value: (p) => p.action },
  { header: 'ALIASES', value: (p) => [...p.aliases, ...p.conflicts.map((c) => `${c} (taken)`)].join(', ') },
  { header: 'NOTE', value: (p) => (p.differs ? `there already; its ${p.differs.join(', ')} differ from the backup's and are left as they are` : '') },
];

export function imagePreviewData(p: ImageRestorePlan): Record<string, unknown> {
  const m = p.entry.manifest;
  return { fingerprint: m.name, project: p.project, timestamp: m.timestamp, size: m.archive.size, action: p.action, aliases: p.aliases, conflicts: p.conflicts, ...(p.differs ? { differs: p.differs } : {}) };
}

/** Carries out image plans, `parallel` at a time; failures go to `errors` and into the rows. */
export function restoreImages(ctx: RunContext, work: ImageRestorePlan[], parallel: number, errors: unknown[]): Promise<ResultRow[]> {
  return applyAll(
    work,
    parallel,
    ctx.signal,
    (p) => applyImageRestore(ctx, p),
    (p): ResultRow => {
      const m = p.entry.manifest;
      // Only an import moves the image: giving aliases back moves nothing.
      return { type: 'image', project: p.project, name: m.name.slice(0, 12), status: 'ok', action: p.action, timestamp: m.timestamp, size: p.action === 'create' ? m.archive.size : 0, detail: p.action };
    },
    errors,
  );
}

export class RestoreImagesCommand extends BaseCommand {
  static override paths = [['restore', 'images']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore backed-up images with their aliases and properties (all of the project when none are given)',
    details: 'An image whose fingerprint is already present is left as it is; an alias that already points at another image is left alone with a warning.',
    examples: [['Bring back every backed-up image', '$0 restore images --target dir:/srv/backups -y']],
  });
  fingerprints = Option.Rest({ name: 'FINGERPRINT' });
  version = Option.String('--version', { description: 'Backup version; default: the newest' });

  async run(): Promise<ExitCodeValue> {
    const backend = this.openTarget();
    const api = this.incus();
    const ctx = this.runContext(api, backend);
    const project = this.allProjects ? undefined : this.checkedProject();
    const groups = groupByResource(await backend.list({ type: 'image', ...(project ? { project } : {}) }));
    const chosen: BackupEntry[] = [];
    for (const [, versions] of groups) {
      const fp = versions[0]!.manifest.name;
      if (this.fingerprints.length && !this.fingerprints.some((p) => fp.startsWith(p))) continue;
      chosen.push(pickVersion(versions, `image ${fp.slice(0, 12)}`, this.version));
    }
    for (const p of this.fingerprints) {
      if (!chosen.some((e) => e.manifest.name.startsWith(p))) throw new UsageError(`no backup of image ${p} in ${backend.uri}`, '`incus-backup list images` shows what is there');
    }
    if (!chosen.length) throw new UsageError(`no image backups found in ${backend.uri}`, 'check --project and --target');
    const plans: ImageRestorePlan[] = [];
    for (const e of chosen) plans.push(await planImageRestore(ctx, e, e.manifest.project));
    const work = plans.filter((p) => p.action !== 'skip');
    if (this.showsPlan(this.dryRun || !work.length)) this.print(plans, imagePreviewColumns, imagePreviewData);
    this.planForQuestion(this.dryRun || !work.length, () => this.print(plans, imagePreviewColumns, imagePreviewData));
    if (this.dryRun) return ExitCode.ok;
    if (!work.length) return ExitCode.ok;
    await this.confirm(`Restore ${work.length} image(s)?`);
    const errors: unknown[] = [];
    const rows = await restoreImages(ctx, work, this.parallel, errors);
    ctx.ui.stop();
    this.printSummary('restore', rows);
    return settle(rows, errors);
  }
}
