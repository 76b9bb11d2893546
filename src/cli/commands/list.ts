import { Command, Option } from 'clipanion';
import type { ResourceType } from '../../core/types.js';
import { humanBytes } from '../../output/format.js';
import type { BackupEntry } from '../../backends/types.js';
import { BaseCommand, checkName } from '../base.js';
import { damagedLabel, elsewhereHint, holdsProject, KINDS, kindOption } from '../select.js';
import { sizes } from '../summary.js';

export class ListCommand extends BaseCommand {
  static override paths = [['list']];
  static override usage = Command.Usage({
    category: 'Inspect',
    description: 'List the complete backups in a target',
    details: 'Only backups whose data and manifest were fully written appear. Scoped to --project unless --all-projects.',
    examples: [
      ['Everything of the default project', '$0 list --target dir:/srv/backups'],
      ['Versions of one instance, as JSON', '$0 list instances web1 --target dir:/srv/backups --output json'],
    ],
  });
  kind = kindOption(false);
  name = Option.String({ required: false, name: 'NAME' });

  async run(): Promise<void> {
    const backend = this.openTarget();
    const type: ResourceType | undefined = KINDS[this.kind ?? 'all'];
    let name = this.name;
    let pool: string | undefined;
    if (name?.includes('/') && type === 'volume') [pool, name] = name.split('/') as [string, string];
    if (name) checkName('resource', name);
    const filter = {
      ...(type ? { type } : {}),
      ...(this.allProjects ? {} : { project: this.checkedProject() }),
      ...(name ? { name } : {}),
      ...(pool ? { pool } : {}),
    };
    const { entries, broken } = await backend.scan(filter);
    this.print(
      entries,
      [
        { header: 'TYPE', value: (e) => e.manifest.type },
        { header: 'PROJECT', value: (e) => e.manifest.project },
        { header: 'NAME', value: (e) => (e.manifest.pool ? `${e.manifest.pool}/${e.manifest.name}` : e.manifest.name) },
        { header: 'VERSION', value: (e) => e.manifest.timestamp },
        { header: 'SIZE', value: (e) => humanBytes(e.manifest.archive.storedSize) },
        { header: 'MODE', value: (e) => e.manifest.consistency.mode },
        { header: 'PROTECTED', value: (e) => (e.manifest.protected ? 'yes' : '') },
      ],
      toListData,
    );
    // A backup that cannot be read is not listed (restore could not use it), but not hidden either.
    const damaged = broken.filter((b) => !b.leftover);
    if (damaged.length) {
      const named = damaged.slice(0, 3).map(damagedLabel);
      const more = damaged.length > 3 ? ` and ${damaged.length - 3} more` : '';
      this.ui().warn(`${damaged.length} damaged backup(s) not listed (${named.join(', ')}${more}); \`incus-backup verify\` says what is wrong`);
    }
    if (entries.length === 0 && this.format === 'table') this.context.stderr.write('no backups found\n');
    const elsewhere = holdsProject(entries.map((e) => e.manifest)) ? undefined : await elsewhereHint(backend, filter);
    if (elsewhere) this.context.stderr.write(`${elsewhere}\n`);
  }
}

export function toListData(e: BackupEntry): Record<string, unknown> {
  const m = e.manifest;
  return {
    type: m.type,
    project: m.project,
    name: m.name,
    ...(m.pool ? { pool: m.pool } : {}),
    timestamp: m.timestamp,
    ...sizes(m),
    sha256: m.archive.sha256,
    consistency: m.consistency.mode,
    instant: m.consistency.instant,
    location: e.location,
    protected: m.protected === true,
    ...(e.dataAdded !== undefined ? { dataAdded: e.dataAdded } : {}),
  };
}
