import { Command, Option } from 'clipanion';
import { restoreImage } from '../../core/images.js';
import { mapPool } from '../../core/pool.js';
import { ExitCode, UsageError, type ExitCodeValue } from '../../errors.js';
import { humanBytes } from '../../output/format.js';
import type { BackupEntry } from '../../backends/types.js';
import { BaseCommand } from '../base.js';
import { groupByResource, pickVersion } from '../select.js';
import { errorText, settle, type ResultRow } from '../summary.js';

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
    const previews = [];
    for (const e of chosen) previews.push({ entry: e, ...(await restoreImage(ctx, e, e.manifest.project, true)) });
    this.print(
      previews,
      [
        { header: 'IMAGE', value: (p) => p.entry.manifest.name.slice(0, 12) },
        { header: 'PROJECT', value: (p) => p.entry.manifest.project },
        { header: 'VERSION', value: (p) => p.entry.manifest.timestamp },
        { header: 'SIZE', value: (p) => humanBytes(p.entry.manifest.archive.size) },
        { header: 'ACTION', value: (p) => p.action },
        { header: 'ALIASES', value: (p) => [...p.aliases, ...p.conflicts.map((c) => `${c} (taken)`)].join(', ') },
      ],
      (p) => ({ fingerprint: p.entry.manifest.name, project: p.entry.manifest.project, timestamp: p.entry.manifest.timestamp, action: p.action, aliases: p.aliases, conflicts: p.conflicts }),
    );
    if (this.dryRun) return ExitCode.ok;
    const work = previews.filter((p) => p.action === 'create' || p.aliases.length);
    if (!work.length) return ExitCode.ok;
    await this.confirm(`Restore ${work.length} image(s)?`);
    const errors: unknown[] = [];
    const settled = await mapPool(
      work,
      this.parallel,
      async (p) => {
        const started = Date.now();
        await restoreImage(ctx, p.entry, p.entry.manifest.project, false);
        return Date.now() - started;
      },
      ctx.signal,
    );
    const rows = settled.map((r, i): ResultRow => {
      const m = work[i]!.entry.manifest;
      const base: ResultRow = { type: 'image', project: m.project, name: m.name.slice(0, 12), status: 'ok', timestamp: m.timestamp, size: m.archive.size };
      if (r.status === 'fulfilled') return { ...base, durationMs: r.value, detail: work[i]!.action };
      errors.push(r.reason);
      return { ...base, status: 'failed', error: errorText(r.reason) };
    });
    ctx.ui.stop();
    this.printSummary('restore', rows);
    return settle(rows, errors);
  }
}
