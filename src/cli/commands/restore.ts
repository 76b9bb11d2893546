import { Command, Option } from 'clipanion';
import { planRestore, restoreItem, type RestorePlanItem } from '../../core/restore.js';
import { mapPool } from '../../core/pool.js';
import type { ResourceType } from '../../core/types.js';
import { UsageError, type ExitCodeValue } from '../../errors.js';
import { humanBytes, type Column } from '../../output/format.js';
import { BaseCommand, checkName, NotImplementedCommand } from '../base.js';
import { selectBackups } from '../select.js';
import { errorText, resultColumns, settle, type ResultRow } from '../summary.js';
import { parseVolumeRef } from './backup.js';

const previewColumns: Column<RestorePlanItem>[] = [
  { header: 'BACKUP', value: (i) => `${i.entry.manifest.type} ${i.entry.manifest.pool ? `${i.entry.manifest.pool}/` : ''}${i.entry.manifest.name}` },
  { header: 'VERSION', value: (i) => i.entry.manifest.timestamp },
  { header: 'SIZE', value: (i) => humanBytes(i.entry.manifest.archive.size) },
  { header: 'DESTINATION', value: (i) => `${i.dest.project}/${i.dest.kind === 'volume' ? `${i.dest.pool}/` : ''}${i.dest.name}` },
  { header: 'ACTION', value: (i) => i.action },
  {
    header: 'SIDE EFFECTS',
    value: (i) =>
      [i.stops.length ? `stops ${i.stops.join(', ')}` : '', i.start ? 'starts it afterwards' : ''].filter(Boolean).join('; '),
  },
];

function previewData(i: RestorePlanItem): Record<string, unknown> {
  const m = i.entry.manifest;
  return {
    type: m.type,
    project: m.project,
    name: m.name,
    ...(m.pool ? { pool: m.pool } : {}),
    timestamp: m.timestamp,
    size: m.archive.size,
    destination: i.dest.name,
    destinationProject: i.dest.project,
    action: i.action,
    stops: i.stops,
    start: i.start,
  };
}

abstract class RestoreCommand extends BaseCommand {
  version = Option.String('--version', { description: 'Backup version (YYYYMMDDThhmmssZ); default: the newest complete one' });
  replace = Option.Boolean('--replace', false, { description: 'Replace what exists (kept until the restore succeeded)' });
  skipExisting = Option.Boolean('--skip-existing', false, { description: 'Leave what exists alone' });
  noStart = Option.Boolean('--no-start', false, { description: 'Do not start instances that were running at backup time' });

  abstract readonly type: ResourceType;
  abstract refs(): { name: string; pool?: string }[];
  targetNameOption(): string | undefined {
    return undefined;
  }

  async run(): Promise<ExitCodeValue> {
    if (this.replace && this.skipExisting) throw new UsageError('--replace and --skip-existing exclude each other', 'pick one');
    if (this.version && !/^\d{8}T\d{6}Z(-\d+)?$/.test(this.version)) {
      throw new UsageError(`--version "${this.version}" is not a backup version`, 'versions look like 20260131T235959Z; see `incus-backup list`');
    }
    const targetName = this.targetNameOption();
    if (targetName) checkName(this.type, targetName);
    const backend = this.openTarget();
    const refs = this.refs();
    const projects = this.allProjects ? undefined : [this.checkedProject()];
    const api = this.incus();
    const entries = await selectBackups(backend, this.type, projects ?? (await this.projects(api)), refs, this.version);
    if (entries.length === 0) throw new UsageError(`no ${this.type} backups found in ${backend.uri}`, 'check --project and --target; `incus-backup list` shows what is there');
    const ctx = this.runContext(api, backend);
    const plan = await planRestore(ctx, entries, {
      ...(targetName ? { targetName } : {}),
      replace: this.replace,
      skipExisting: this.skipExisting,
      noStart: this.noStart,
    });
    this.print(plan, previewColumns, previewData);
    if (this.dryRun) {
      if (this.format === 'table') this.context.stderr.write('dry run: nothing was changed\n');
      return 0;
    }
    const work = plan.filter((i) => i.action !== 'skip');
    if (work.length === 0) return 0;
    const replacing = work.filter((i) => i.action === 'replace').length;
    const stopsVolumeUsers = work.some((i) => i.dest.kind === 'volume' && i.stops.length > 0);
    if (stopsVolumeUsers && !this.force) {
      if (!this.context.interactive) {
        throw new UsageError('replacing a volume stops the running instances that use it', 'pass --force to allow that without a prompt');
      }
      this.yes = false;
    }
    await this.confirm(`Restore ${work.length} item(s)${replacing ? `, replacing ${replacing}` : ''}?`);
    const errors: unknown[] = [];
    const settled = await mapPool(work, this.parallel, async (item) => {
      const started = Date.now();
      await restoreItem(ctx, item);
      return Date.now() - started;
    });
    const rows = settled.map((r, i): ResultRow => {
      const item = work[i]!;
      const m = item.entry.manifest;
      const base: ResultRow = {
        type: m.type,
        project: item.dest.project,
        name: item.dest.name,
        ...(item.dest.kind === 'volume' ? { pool: item.dest.pool } : {}),
        status: 'ok',
        action: item.action,
        timestamp: m.timestamp,
        size: m.archive.size,
      };
      if (r.status === 'fulfilled') return { ...base, durationMs: r.value, detail: item.action };
      errors.push(r.reason);
      return { ...base, status: 'failed', error: errorText(r.reason) };
    });
    ctx.ui.stop();
    if (!this.quiet || errors.length) this.context.stderr.write('\n');
    this.print(rows, resultColumns);
    return settle(rows, errors);
  }
}

export class RestoreInstanceCommand extends RestoreCommand {
  static override paths = [['restore', 'instance']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore one instance (preview, confirm, then import)',
    examples: [
      ['Preview a restore under a new name', '$0 restore instance web1 --target dir:/srv/backups --target-name web1-restored --dry-run'],
      ['Replace web1 with its backup of a given time', '$0 restore instance web1 --target dir:/srv/backups --version 20260101T020000Z --replace -y'],
    ],
  });
  readonly type = 'instance' as const;
  name = Option.String({ name: 'NAME' });
  targetName = Option.String('--target-name', { description: 'Restore under this name instead' });
  refs() {
    return [{ name: checkName('instance', this.name) }];
  }
  override targetNameOption() {
    return this.targetName;
  }
}

export class RestoreInstancesCommand extends RestoreCommand {
  static override paths = [['restore', 'instances']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore several instances (all backed-up ones of the project when no names are given), after one preview',
    examples: [['Bring back what is missing', '$0 restore instances --target dir:/srv/backups --skip-existing -y']],
  });
  readonly type = 'instance' as const;
  names = Option.Rest({ name: 'NAME' });
  refs() {
    return this.names.map((n) => ({ name: checkName('instance', n) }));
  }
}

export class RestoreVolumeCommand extends RestoreCommand {
  static override paths = [['restore', 'volume']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore one custom volume',
    examples: [['Restore a volume under a new name', '$0 restore volume default/data --target dir:/srv/backups --target-name data-old -y']],
  });
  readonly type = 'volume' as const;
  name = Option.String({ name: 'POOL/NAME' });
  targetName = Option.String('--target-name', { description: 'Restore under this name instead' });
  refs() {
    return [parseVolumeRef(this.name)];
  }
  override targetNameOption() {
    return this.targetName;
  }
}

export class RestoreVolumesCommand extends RestoreCommand {
  static override paths = [['restore', 'volumes']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore several custom volumes (all backed-up ones of the project when none are given)',
    examples: [['Restore every backed-up volume that is missing', '$0 restore volumes --target dir:/srv/backups --skip-existing -y']],
  });
  readonly type = 'volume' as const;
  names = Option.Rest({ name: 'POOL/NAME' });
  refs() {
    return this.names.map(parseVolumeRef);
  }
}

export class RestoreConfigCommand extends NotImplementedCommand {
  static override paths = [['restore', 'config']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Preview (and with --apply, apply) the declarative config from a backup',
    examples: [['Preview config drift', '$0 restore config --target dir:/srv/backups']],
  });
}

export class RestoreAllCommand extends NotImplementedCommand {
  static override paths = [['restore', 'all']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Restore config, volumes, then instances from one backup set, after one preview',
    examples: [['The worst day, first step', '$0 restore all --target restic:/srv/restic --dry-run']],
  });
}
