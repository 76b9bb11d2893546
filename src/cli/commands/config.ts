import { Command, Option } from 'clipanion';
import { redactRepository } from '../../backends/restic/restic.js';
import {
  absentProfileVolumes,
  applyChange,
  captureConfig,
  configApi,
  configNeedsHint,
  configRequirements,
  diffConfig,
  extraObjects,
  loadConfig,
  mapConfig,
  markUsers,
  objectLabel,
  parentField,
  REDACTED,
  type ConfigChange,
  type ConfigObject,
  type ConfigScope,
} from '../../core/config.js';
import { countDistinct, describeRequirement, missingRequirements, type Mappings } from '../../core/preflight.js';
import type { RunContext } from '../../core/run.js';
import { ExitCode, IbError, UsageError, type ExitCodeValue } from '../../errors.js';
import type { Column } from '../../output/format.js';
import type { Backend, BackupEntry } from '../../backends/types.js';
import { BaseCommand } from '../base.js';
import { DEFAULT_CONFIG_FILE } from '../../core/settings.js';
import { pickVersion } from '../select.js';

export interface ConfigPreview {
  entry: BackupEntry;
  changes: ConfigChange[];
  /** Present now, absent from the backup, and kept because --force was not given. */
  kept: ConfigObject[];
  /** The projects the backup or the server has. */
  projects: Set<string>;
}

interface PreviewRow {
  action: string;
  object: string;
  key: string;
  old: string;
  new: string;
  note: string;
}

const WIDTH = 40;

/**
 * An old and a new value cut to the column's width, both from a little before where they first
 * differ: cut from their start, two long values that differ further on (cloud-init user-data, a
 * device's JSON) would look the same.
 */
export function clipPair(a: string | undefined, b: string | undefined): [string, string] {
  const x = a ?? '';
  const y = b ?? '';
  if (x.length <= WIDTH && y.length <= WIDTH) return [x, y];
  let i = 0;
  if (a !== undefined && b !== undefined) while (i < x.length && i < y.length && x[i] === y[i]) i++;
  const from = i > WIDTH - 10 ? i - 10 : 0;
  const cut = (s: string | undefined) => (s === undefined ? '' : (from > 0 ? '…' : '') + (s.length - from > WIDTH ? `${s.slice(from, from + WIDTH - 1)}…` : s.slice(from)));
  return [cut(a), cut(b)];
}

/** What a delete of an object in use is told: Incus refuses it until nothing uses it. */
function inUse(users: string[]): string {
  const shown = users.length > 3 ? [...users.slice(0, 3), `${users.length - 3} more`] : users;
  return `in use by ${shown.join(', ')}: Incus refuses to delete it until they no longer use it`;
}

export function configPreviewRows(p: ConfigPreview): PreviewRow[] {
  const rows: PreviewRow[] = [];
  for (const c of p.changes) {
    const note = [c.refused ? `refused: ${c.refused}` : '', c.disruptive ? 'disruptive' : '', c.usedBy ? inUse(c.usedBy) : ''].filter(Boolean).join('; ');
    if (!c.changes.length) rows.push({ action: c.action, object: objectLabel(c.object), key: '', old: '', new: '', note });
    for (const k of c.changes) {
      const secret = k.new === REDACTED ? 'secret, not in the backup: set it by hand' : '';
      // A key the apply removes: said, not an empty value (which setting "" would look like).
      const [o, n] = clipPair(k.old, k.new === undefined && k.old !== undefined && c.action === 'update' ? '(unset)' : k.new);
      rows.push({ action: c.action, object: objectLabel(c.object), key: k.key, old: o, new: n, note: [note, secret].filter(Boolean).join('; ') });
    }
  }
  for (const o of p.kept) rows.push({ action: 'keep', object: objectLabel(o), key: '', old: '', new: '', note: 'not in the backup; --force deletes it' });
  return rows;
}

export const configPreviewColumns: Column<PreviewRow>[] = [
  { header: 'ACTION', value: (r) => r.action },
  { header: 'OBJECT', value: (r) => r.object },
  { header: 'KEY', value: (r) => r.key },
  { header: 'OLD', value: (r) => r.old },
  { header: 'NEW', value: (r) => r.new },
  { header: 'NOTE', value: (r) => r.note },
];

/** The preview as data; once applied (`failed` given), each change with its status too. */
export function configPreviewData(p: ConfigPreview, failed?: AppliedConfig['failed']): Record<string, unknown> {
  return {
    timestamp: p.entry.manifest.timestamp,
    changes: p.changes.map((c) => {
      const error = failed?.find((f) => f.change === c)?.error;
      return {
        kind: c.object.kind,
        ...(c.object.project ? { project: c.object.project } : {}),
        ...parentField(c.object),
        name: c.object.name,
        action: c.action,
        disruptive: c.disruptive,
        changes: c.changes,
        ...(c.usedBy ? { usedBy: c.usedBy } : {}),
        ...(c.refused ? { refused: c.refused } : {}),
        ...(failed ? { status: error === undefined ? 'ok' : 'failed' } : {}),
        ...(error !== undefined ? { error } : {}),
      };
    }),
    kept: p.kept.map((o) => ({ kind: o.kind, ...(o.project ? { project: o.project } : {}), ...parentField(o), name: o.name })),
  };
}

/** Newest config backup (not newer than `notAfter` when given), or an exact version. */
export async function pickConfig(backend: Backend, version?: string, notAfter?: string): Promise<BackupEntry> {
  let versions = await backend.list({ type: 'config' });
  if (notAfter) versions = versions.filter((v) => v.manifest.timestamp <= notAfter);
  return pickVersion(versions, 'the config', version);
}

/** `maps`: restore all's name mappings, which the config follows (see mapConfig). */
export async function previewConfig(ctx: RunContext, entry: BackupEntry, scope: ConfigScope, force: boolean, maps?: Mappings): Promise<ConfigPreview> {
  const stored = await loadConfig(ctx, entry);
  const backup = maps ? mapConfig(stored, maps) : stored;
  const current = await captureConfig(configApi(ctx));
  const projects = new Set([...backup.objects, ...current.objects].filter((o) => o.kind === 'project').map((o) => o.name));
  const changes = diffConfig(backup, current, scope, force);
  await markUsers(configApi(ctx), changes);
  return { entry, changes, kept: force ? [] : extraObjects(backup, current, scope), projects };
}

export interface AppliedConfig {
  failed: { change: ConfigChange; label: string; error: string }[];
  applied: number;
}

/** Applies in dependency order; an object that cannot be changed is reported and the rest goes on. */
export async function applyConfig(ctx: RunContext, p: ConfigPreview): Promise<AppliedConfig> {
  const api = configApi(ctx);
  const failed: AppliedConfig['failed'] = [];
  let applied = 0;
  const apply = async (c: ConfigChange) => {
    await applyChange(api, c);
    applied++;
    ctx.ui.info(`config: ${c.action} ${objectLabel(c.object)}`);
    const secrets = c.changes.filter((k) => k.new === REDACTED).map((k) => k.key);
    if (secrets.length) ctx.ui.warn(`config: ${objectLabel(c.object)}: ${secrets.join(', ')} ${secrets.length === 1 ? 'is a secret' : 'are secrets'} the backup does not hold: set ${secrets.length === 1 ? 'it' : 'them'} by hand`);
  };
  // A project's lowered limits can be refused until its profiles are lowered too (Incus checks
  // the current total): such an update is tried once more after the rest.
  const fail = (c: ConfigChange, e: unknown) => {
    const error = (e as Error).message + (c.usedBy ? ` (${inUse(c.usedBy)})` : '');
    failed.push({ change: c, label: `${c.action} ${objectLabel(c.object)}`, error });
    ctx.ui.warn(`config: could not ${c.action} ${objectLabel(c.object)}: ${error}`);
  };
  const later: ConfigChange[] = [];
  for (const c of p.changes) {
    // Incus would refuse it: not asked, reported as not applied.
    if (c.refused) {
      fail(c, new Error(`not applied: ${c.refused}`));
      continue;
    }
    await apply(c).catch((e: unknown) => (c.action === 'update' && c.object.kind === 'project' ? later.push(c) : fail(c, e)));
  }
  for (const c of later) await apply(c).catch((e: unknown) => fail(c, e));
  return { failed, applied };
}

export class RestoreConfigCommand extends BaseCommand {
  static override paths = [['restore', 'config']];
  static override usage = Command.Usage({
    category: 'Restore',
    description: 'Preview (and with --apply, apply) the declarative config from a backup',
    details:
      'Without --apply nothing changes. Scope: the selected --project (the project, its profiles, networks, ACLs and zones); --all-projects for everything, including storage pools. Objects that exist now but not in the backup are deleted only with --force; the default project and profiles never are.',
    examples: [
      ['Preview config drift', '$0 restore config --target dir:/srv/backups'],
      ['Put the config of a given night back', '$0 restore config --all-projects --version 20260101T020000Z --apply -y --target dir:/srv/backups'],
    ],
  });
  version = Option.String('--version', { description: 'Config backup version; default: the newest' });
  apply = Option.Boolean('--apply', false, { description: 'Apply the changes (after confirmation)' });

  async run(): Promise<ExitCodeValue> {
    const backend = this.openTarget();
    const api = this.incus();
    const ctx = this.runContext(api, backend);
    const entry = await pickConfig(backend, this.version);
    const scope: ConfigScope = this.allProjects ? {} : { project: this.checkedProject() };
    const preview = await previewConfig(ctx, entry, scope, this.force);
    // A mistyped project is in neither: "matches" would reassure the wrong way.
    if (scope.project !== undefined && !preview.projects.has(scope.project)) {
      throw new UsageError(`project "${scope.project}" is neither on this Incus server nor in the config backup of ${entry.manifest.timestamp}`, 'check --project (`incus project list`; `incus-backup list config` for the backups)');
    }
    // A profile it writes that names a network or pool that is neither there nor created here
    // would be refused by Incus (and its instances would lose the device): said before anything changes.
    const reqs = configRequirements(preview.changes);
    const missing = await missingRequirements(api, reqs.needs.map(reqs.resolve), reqs.willExist);
    for (const w of await absentProfileVolumes(configApi(ctx), preview.changes)) ctx.ui.warn(w);
    // With --output json|yaml one document: the preview when nothing is applied, else the changes
    // with how each went.
    const stopsHere = !this.apply || this.dryRun || !preview.changes.length || missing.length > 0;
    if (this.format === 'table') {
      if (this.showsPlan(stopsHere)) this.print(configPreviewRows(preview), configPreviewColumns);
      if (!preview.changes.length) {
        const kept = preview.kept.length;
        this.context.stderr.write(
          kept
            ? `config matches the backup of ${entry.manifest.timestamp}, but for ${kept} object(s) not in it (kept; --force deletes them)\n`
            : `config matches the backup of ${entry.manifest.timestamp}\n`,
        );
      }
    } else if (this.showsPlan(stopsHere)) this.printData(configPreviewData(preview));
    this.planForQuestion(stopsHere, () => this.print(configPreviewRows(preview), configPreviewColumns));
    for (const r of missing) this.context.stderr.write(`missing: ${describeRequirement(r)}\n`);
    if (missing.length && this.apply) {
      throw new IbError(`cannot apply the config: ${countDistinct(missing)} thing(s) its profiles need do not exist in the destination`, ExitCode.failed, configNeedsHint(missing, false));
    }
    if (!this.apply || this.dryRun) {
      if (preview.changes.length && this.format === 'table') {
        this.context.stderr.write(this.dryRun ? 'dry run: nothing was changed\n' : 'preview only: nothing was changed (use --apply to apply)\n');
      }
      return ExitCode.ok;
    }
    if (!preview.changes.length) return ExitCode.ok;
    await this.confirm(`Apply ${preview.changes.length} config change(s)?`);
    const { failed } = await applyConfig(ctx, preview);
    if (this.format !== 'table') this.printData(configPreviewData(preview, failed));
    if (failed.length) {
      for (const f of failed) this.context.stderr.write(`failed: ${f.label}: ${f.error}\n`);
      if (failed.length === preview.changes.length) throw new IbError(`no config change could be applied`, ExitCode.failed);
      return ExitCode.partial;
    }
    return ExitCode.ok;
  }
}

export class ConfigShowCommand extends BaseCommand {
  static override paths = [['config', 'show']];
  static override usage = Command.Usage({
    category: 'Inspect',
    description: 'Show the effective configuration and where each value comes from',
    details: `Precedence: flags, then environment variables (INCUS_BACKUP_*), then the configuration file (--config, INCUS_BACKUP_CONFIG or ${DEFAULT_CONFIG_FILE}), then defaults. Secrets are never printed: the restic password file is shown by path only.`,
    examples: [['Check what a nightly run would use', '$0 config show --config /etc/incus-backup/config.yaml']],
  });

  async run(): Promise<ExitCodeValue> {
    const e = this.effective();
    const f = this.settings().values;
    const file = this.settings().file;
    const rows: { key: string; value: string; source: string }[] = [];
    const add = (key: string, v: { value: unknown; source: string }) => {
      if (v.value !== undefined) rows.push({ key, value: String(v.value), source: v.source });
    };
    // A rest-server or S3 URL may carry a password.
    add('target', { ...e.target, value: e.target.value === undefined ? undefined : redactRepository(e.target.value) });
    // With every project, the project setting does not apply: said beside it.
    add('project', e.allProjects.value && e.project.source !== 'default' ? { ...e.project, source: `${e.project.source} (not used: all_projects)` } : e.project);
    add('all_projects', e.allProjects);
    add('parallel', e.parallel);
    add('log.level', e.logLevel);
    add('log.file', e.logFile);
    // The path is configuration; what the file holds is a secret and is never read here. Every
    // password source there is, and which one is used (see resticPassword).
    const password = this.resticPassword();
    const used = password.source ?? '';
    const unused = (source: string, isUsed: boolean) => (isUsed ? source : `${source} (not used: ${used})`);
    if (e.passwordFile.value !== undefined) add('restic.password_file', { ...e.passwordFile, source: unused(e.passwordFile.source, password.passwordFile !== undefined) });
    // Those the one above overrides are there too, marked.
    const envFile = this.context.env.INCUS_BACKUP_PASSWORD_FILE;
    if (envFile && e.passwordFile.source !== 'INCUS_BACKUP_PASSWORD_FILE') rows.push({ key: 'restic.password_file', value: envFile, source: unused('INCUS_BACKUP_PASSWORD_FILE', false) });
    const fileValue = f.restic?.password_file;
    if (fileValue && file && e.passwordFile.source !== file) rows.push({ key: 'restic.password_file', value: fileValue, source: unused(file, false) });
    for (const k of ['RESTIC_PASSWORD_FILE', 'RESTIC_PASSWORD_COMMAND', 'RESTIC_PASSWORD']) {
      const v = this.context.env[k];
      if (v) rows.push({ key: k, value: k === 'RESTIC_PASSWORD_FILE' ? v : '<redacted>', source: unused(k, used === k || used.startsWith(`${k} (`)) });
    }
    const fromFile = (key: string, v: unknown) => {
      if (v !== undefined) rows.push({ key, value: Array.isArray(v) ? v.join(', ') : typeof v === 'object' ? JSON.stringify(v) : String(v), source: file! });
    };
    fromFile('consistency', f.consistency);
    for (const [k, v] of Object.entries(f.retention ?? {})) fromFile(`retention.${k}`, v);
    fromFile('instances.include', f.instances?.include);
    fromFile('instances.exclude', f.instances?.exclude);
    fromFile('volumes.include', f.volumes?.include);
    fromFile('volumes.exclude', f.volumes?.exclude);
    // What is not set anywhere, with the value it then has.
    const orDefault = (key: string, v: unknown, fallback: string) => (v !== undefined ? fromFile(key, v) : rows.push({ key, value: fallback, source: 'default' }));
    if (f.consistency === undefined) rows.push({ key: 'consistency', value: 'snapshot', source: 'default' });
    orDefault('log.max_size', f.log?.max_size, String(10 << 20));
    orDefault('log.keep', f.log?.keep, '5');
    rows.unshift({ key: 'configuration file', value: file ?? '(none)', source: file ? (this.config ? '--config' : this.context.env.INCUS_BACKUP_CONFIG ? 'INCUS_BACKUP_CONFIG' : 'default') : 'default' });
    this.print(rows, [
      { header: 'KEY', value: (r) => r.key },
      { header: 'VALUE', value: (r) => r.value },
      { header: 'SOURCE', value: (r) => r.source },
    ]);
    return ExitCode.ok;
  }
}
