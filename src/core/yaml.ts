import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';

// yaml takes ~15 ms to load: most runs (no config file, table or JSON output) never need it.
const require = createRequire(import.meta.url);
let loaded: typeof Yaml | undefined;

/** The yaml module, loaded on first use. */
export function yaml(): typeof Yaml {
  return (loaded ??= require('yaml') as typeof Yaml);
}
