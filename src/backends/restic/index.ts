import { IbError } from '../../errors.js';
import type { BackendFactory } from '../types.js';

export const resticBackendFactory: BackendFactory = {
  scheme: 'restic',
  example: 'restic:/srv/restic',
  create(rest) {
    if (!rest) throw new IbError('restic: target needs a repository', 2, 'e.g. --target restic:/srv/restic or restic:rest:http://host:8000/repo');
    throw new IbError('restic targets are not implemented yet', 1, 'see ROADMAP.md; use a dir: target meanwhile');
  },
};
