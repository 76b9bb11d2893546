import { readFileSync } from 'node:fs';

/** The package's own version, read once from package.json so there is one source of truth. */
export const toolVersion: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
