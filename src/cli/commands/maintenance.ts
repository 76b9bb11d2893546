import { Command } from 'clipanion';
import { NotImplementedCommand } from '../base.js';

export class VerifyCommand extends NotImplementedCommand {
  static override paths = [['verify']];
  static override usage = Command.Usage({
    category: 'Inspect',
    description: 'Check backups against their checksums and manifests; exit 3 if anything is damaged',
    examples: [['Verify everything', '$0 verify all --target dir:/srv/backups']],
  });
}

export class PruneCommand extends NotImplementedCommand {
  static override paths = [['prune']];
  static override usage = Command.Usage({
    category: 'Maintenance',
    description: 'Remove old backups according to a retention policy (preview first)',
    examples: [['Keep 7 daily and 4 weekly backups', '$0 prune all --keep-daily 7 --keep-weekly 4 --target dir:/srv/backups']],
  });
}
