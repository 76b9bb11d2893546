import { describe, expect, it } from 'vitest';
import '../../src/cli.js';
import { openBackend, parseTarget } from '../../src/backends/registry.js';
import { DirBackend } from '../../src/backends/dir/index.js';
import { UsageError } from '../../src/errors.js';

describe('target URIs', () => {
  it('resolves dir: with an absolute path, normalised', () => {
    const b = openBackend('dir:/srv/backups//incus/');
    expect(b).toBeInstanceOf(DirBackend);
    expect((b as DirBackend).root).toBe('/srv/backups/incus');
  });

  it('hands everything after restic: to restic', () => {
    expect(parseTarget('restic:sftp:user@host:/srv/r').rest).toBe('sftp:user@host:/srv/r');
    expect(parseTarget('restic:rest:http://127.0.0.1:8000/r').scheme).toBe('restic');
    // restic's own backends and absolute local paths are taken as they are.
    for (const repo of ['/srv/r', 'local:/srv/r', 'sftp:user@host:r', 'rest:http://h:8000/', 's3:s3.amazonaws.com/b', 'rclone:remote:r']) {
      expect(openBackend(`restic:${repo}`, { env: { RESTIC_PASSWORD: 'pw' } }).kind).toBe('restic');
    }
  });

  it.each([
    [undefined, /no target given/, /INCUS_BACKUP_TARGET/],
    ['/srv/backups', /has no scheme/, /dir:\/srv\/backups/],
    ['s3:bucket', /unknown target scheme "s3:"/, /dir:, restic:/],
    ['dir:relative/path', /not an absolute path/, new RegExp(`dir:${process.cwd()}/relative/path `)],
    ['dir:', /needs a path/, /--target dir:/],
    ['restic:relative/repo', /restic repository "relative\/repo" is not an absolute path/, new RegExp(`restic:${process.cwd()}/relative/repo `)],
    ['restic:local:repo', /restic repository "repo" is not an absolute path/, new RegExp(`restic:${process.cwd()}/repo `)],
    // Remote addresses restic would only answer with a URL parser's words (or minutes of retries).
    ['restic:http://127.0.0.1:8000/repo', /is a URL: restic reaches a rest-server's repository as rest:URL/, /^use --target restic:rest:http:\/\/127\.0\.0\.1:8000\/repo$/],
    ['restic:REST:http://127.0.0.1:8000/repo', /backend names are lower case, not "REST:"/, /^use --target restic:rest:http:\/\/127\.0\.0\.1:8000\/repo$/],
    ['restic:ftp:host/repo', /"ftp:" is not a restic backend/, /sftp:, rest:/],
    ['restic:rest:127.0.0.1:8000/repo', /needs an http:\/\/ or https:\/\/ URL/, /restic:rest:http:\/\/127\.0\.0\.1:8000\/repo$/],
    // A host name is not a scheme: kept in the hint.
    ['restic:rest:localhost:8000/repo', /needs an http:\/\/ or https:\/\/ URL/, /restic:rest:http:\/\/localhost:8000\/repo$/],
    ['restic:rest:htp://backup:8000/repo', /needs an http:\/\/ or https:\/\/ URL/, /restic:rest:http:\/\/backup:8000\/repo$/],
    // An unencoded @ in the password: restic's parser error would show the rest of it.
    ['restic:rest:http://backup:p@ss:w/rd@127.0.0.1:8000/repo', /^the user name or password in the restic repository URL has an "@" that is not percent-encoded$/, /%40/],
    // A file where the repository should be (restic would retry opening it for many minutes).
    [`restic:${import.meta.filename}`, /restic repository \S+target\.test\.ts is not a directory/, /repository directory/],
    [`restic:${import.meta.filename}/repo`, /restic repository \S+target\.test\.ts\/repo is not a directory/, /repository directory/],
  ])('rejects %s with a usage error and a hint', (uri, msg, hint) => {
    let err: unknown;
    try {
      openBackend(uri);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(2);
    expect((err as UsageError).message).toMatch(msg);
    expect((err as UsageError).hint).toMatch(hint);
  });
});

describe('restic password files', () => {
  it('refuses one that cannot be read, naming it, before restic runs', () => {
    for (const opts of [{ env: {}, passwordFile: '/nonexistent/pw' }, { env: { RESTIC_PASSWORD_FILE: '/nonexistent/pw' } }]) {
      let err: unknown;
      try {
        openBackend('restic:/srv/r', opts);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).message).toBe('the restic password file /nonexistent/pw cannot be read (ENOENT)');
      expect((err as UsageError).hint).toMatch(/--password-file/);
    }
    expect(openBackend('restic:/srv/r', { env: {}, passwordFile: import.meta.filename }).kind).toBe('restic');
  });
});
