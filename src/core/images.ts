import { pipeline } from 'node:stream/promises';
import type { BackupEntry } from '../backends/types.js';
import { ImageApi, type Image } from '../incus/api.js';
import { IncusError, streamFailure } from '../incus/errors.js';
import { InterruptedError } from '../errors.js';
import { HashingStream } from './hashing.js';
import { uploadVerified } from './restore.js';
import { draftManifest } from './manifest.js';
import type { RunContext } from './run.js';

export function imageApi(ctx: RunContext): ImageApi {
  return new ImageApi(ctx.api.client);
}

/**
 * Images worth a backup: by default those that cannot be fetched again from an image server
 * (not cached from a remote, no update source); `all` for every image.
 */
export function irreplaceable(images: Image[], all: boolean): Image[] {
  return all ? images : images.filter((i) => !i.cached && !i.update_source?.server);
}

const short = (fp: string) => fp.slice(0, 12);

/** How an image is named in progress lines and warnings: `image PROJECT/FINGERPRINT12`. */
export const imageLabel = (project: string, fingerprint: string) => `image ${project}/${short(fingerprint)}`;

/** Per run (its Incus client), whether each project has images of its own: read once, for all its images. */
const ownImages = new WeakMap<object, Map<string, Promise<boolean | undefined>>>();

/** Whether `project` has images of its own (undefined: no such project yet, a config step may create it). */
function keepsOwnImages(ctx: RunContext, project: string): Promise<boolean | undefined> {
  let known = ownImages.get(ctx.api);
  if (!known) ownImages.set(ctx.api, (known = new Map()));
  let own = known.get(project);
  if (!own) known.set(project, (own = ctx.api.getProject(project).then((p) => p.config?.['features.images'] === 'true', () => undefined)));
  return own;
}

/** An image's expiry, unless it has none (Go's zero time). */
function expiry(at: string | undefined): string | undefined {
  return at && !at.startsWith('0001-01-01') ? at : undefined;
}

/** What an HTTP header can carry (an image's original file name goes in one). */
const PRINTABLE = /^[\x20-\x7e]+$/;

/** Streams one image through the backend, with its aliases and properties in the manifest. */
export async function backupImage(ctx: RunContext, project: string, image: Image): Promise<BackupEntry> {
  const task = ctx.ui.task(imageLabel(project, image.fingerprint));
  const key = { type: 'image' as const, project, name: image.fingerprint };
  const writer = await ctx.backend.createWriter({ key, when: new Date(), archiveBase: 'image.tar', compression: 'none' });
  try {
    const dl = await imageApi(ctx).download(project, image.fingerprint, ctx.signal);
    const hash = new HashingStream((n) => task.bytes(n, dl.size));
    await pipeline(dl.stream, hash, writer.stream, { signal: ctx.signal });
    const server = await ctx.api.client.server();
    const entry = await writer.commit(
      draftManifest(key, writer.timestamp, server.environment.server_version, { size: hash.bytes, sha256: hash.sha256 }, {
        consistency: { mode: 'immutable', instant: new Date().toISOString() },
        image: {
          contentType: dl.contentType,
          aliases: image.aliases ?? [],
          properties: image.properties ?? {},
          public: image.public,
          autoUpdate: image.auto_update,
          type: image.type,
          filename: image.filename,
          ...(image.profiles ? { profiles: image.profiles } : {}),
          ...(expiry(image.expires_at) ? { expiresAt: image.expires_at } : {}),
        },
      }),
    );
    task.end(true, entry.manifest.timestamp);
    return entry;
  } catch (e) {
    await writer.abort().catch(() => undefined);
    task.end(false);
    if (ctx.signal.aborted) throw new InterruptedError(`interrupted while backing up image ${short(image.fingerprint)}; nothing was kept`);
    throw streamFailure(e, `the backup of image ${short(image.fingerprint)}`);
  }
}

/** What restoring one image backup would do, decided before anything changes. */
export interface ImageRestorePlan {
  entry: BackupEntry;
  /** The destination project (the backup's own unless mapped). */
  project: string;
  /** create: import it; aliases: it is there, only free aliases are added back; skip: nothing to do. */
  action: 'create' | 'aliases' | 'skip';
  /** Aliases that are free and will point at the image. */
  aliases: string[];
  /** Aliases that already point at another image and are left alone. */
  conflicts: string[];
  /** An image already there whose settings differ from the backup's: what differs (left as it is). */
  differs?: string[];
}

/**
 * Plans an image restore: an image whose fingerprint is already present is never imported again
 * (the fingerprint is its content), only its free aliases are given back.
 */
export async function planImageRestore(ctx: RunContext, entry: BackupEntry, into: string): Promise<ImageRestorePlan> {
  const m = entry.manifest;
  // A project without images of its own (features.images not true) keeps its images in the
  // default project: Incus imports them there, so the plan says so. (One a config step is yet
  // to create is planned as named.)
  const project = into !== 'default' && (await keepsOwnImages(ctx, into)) === false ? 'default' : into;
  if (!m.image) throw new IncusError(0, `backup ${m.name} ${m.timestamp} has no image metadata`, 'RESTORE', m.name);
  const api = imageApi(ctx);
  const now = await api.get(project, m.name).catch((e: unknown) => {
    if (e instanceof IncusError && e.notFound) return undefined;
    throw e;
  });
  const present = now !== undefined;
  const aliases: string[] = [];
  const conflicts: string[] = [];
  for (const a of m.image.aliases) {
    const target = await api.aliasTarget(project, a.name);
    if (target === undefined) aliases.push(a.name);
    else if (target !== m.name) conflicts.push(a.name);
  }
  const action = !present ? 'create' : aliases.length ? 'aliases' : 'skip';
  // There already: its settings are left as they are, which the plan says where they differ.
  const differs = now ? settingsDiffer(now, m.image) : [];
  return { entry, project, action, aliases, conflicts, ...(differs.length ? { differs } : {}) };
}

/** What of an image's settings differs from a backup's (properties, public, auto_update, profiles). */
function settingsDiffer(now: Image, was: NonNullable<BackupEntry['manifest']['image']>): string[] {
  const same = (a: Record<string, string>, b: Record<string, string>) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
  return [
    ...(!same(now.properties ?? {}, was.properties) ? ['properties'] : []),
    ...(now.public !== was.public ? ['public'] : []),
    ...(now.auto_update !== was.autoUpdate ? ['auto_update'] : []),
    ...(was.profiles && JSON.stringify(now.profiles ?? []) !== JSON.stringify(was.profiles) ? ['profiles'] : []),
  ];
}

/** Carries out a plan: imports the image (verified on the way in), then properties and free aliases. */
export async function applyImageRestore(ctx: RunContext, plan: ImageRestorePlan): Promise<void> {
  const { entry, project } = plan;
  const m = entry.manifest;
  const meta = m.image!;
  if (plan.action === 'skip') return;
  const api = imageApi(ctx);
  const task = ctx.ui.task(imageLabel(project, m.name));
  try {
    if (plan.action === 'create') {
      await uploadVerified(
        ctx,
        entry,
        `image ${short(m.name)} ${m.timestamp}`,
        (n) => task.bytes(n, m.archive.size),
        (body) => api.import(project, body, meta.contentType, { public: meta.public, ...(PRINTABLE.test(meta.filename) ? { filename: meta.filename } : {}), signal: ctx.signal }),
      );
      // The profiles it launches with: the backup's (a backup made before they were kept: what
      // Incus gave it), those the project has; Incus refuses the lot for one it lacks.
      const wanted = meta.profiles ?? (await api.get(project, m.name)).profiles ?? ['default'];
      const profiles: string[] = [];
      for (const p of wanted) if (await ctx.api.profile(project, p)) profiles.push(p);
      const lacking = wanted.filter((p) => !profiles.includes(p));
      if (lacking.length) ctx.ui.warn(`${imageLabel(project, m.name)}: its profile${lacking.length > 1 ? 's' : ''} ${lacking.join(', ')} ${lacking.length > 1 ? 'are' : 'is'} not in project ${project}; restored without; \`incus image edit ${short(m.name)} --project ${project}\` adds ${lacking.length > 1 ? 'them' : 'it'} once created`);
      await api.update(project, m.name, {
        properties: meta.properties,
        public: meta.public,
        auto_update: meta.autoUpdate,
        profiles,
        ...(meta.expiresAt ? { expires_at: meta.expiresAt } : {}),
      });
    }
    for (const a of meta.aliases) if (plan.aliases.includes(a.name)) await api.createAlias(project, a.name, m.name, a.description);
    for (const c of plan.conflicts) ctx.ui.warn(`image alias ${c} already points at another image; left as it is`);
    task.end(true, plan.action === 'create' ? m.timestamp : 'aliases added');
  } catch (e) {
    task.end(false);
    throw streamFailure(e, `the restore of image ${short(m.name)}`);
  }
}
