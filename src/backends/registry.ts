import { UsageError } from '../errors.js';
import type { Backend, BackendFactory, BackendOptions } from './types.js';

const factories = new Map<string, BackendFactory>();

export function registerBackend(f: BackendFactory): void {
  factories.set(f.scheme, f);
}

function examples(): string {
  return [...factories.values()].map((f) => f.example).join(' or ');
}

/** Splits `scheme:rest` and checks the scheme is known, without touching the target. */
export function parseTarget(uri: string | undefined): { scheme: string; rest: string; factory: BackendFactory } {
  if (!uri) throw new UsageError('no target given', `pass --target (or set INCUS_BACKUP_TARGET), e.g. ${examples()}`);
  const i = uri.indexOf(':');
  if (i <= 0) {
    throw new UsageError(`target "${uri}" has no scheme`, `write it as ${examples()}`);
  }
  const scheme = uri.slice(0, i);
  const factory = factories.get(scheme);
  if (!factory) {
    throw new UsageError(`unknown target scheme "${scheme}:"`, `supported: ${[...factories.keys()].map((s) => s + ':').join(', ')} (e.g. ${examples()})`);
  }
  return { scheme, rest: uri.slice(i + 1), factory };
}

export function openBackend(uri: string | undefined, opts: BackendOptions = {}): Backend {
  const { rest, factory } = parseTarget(uri);
  return factory.create(rest, uri!, opts);
}
