#!/usr/bin/env bash
# The main job end to end, in the private sandbox (never your own Incus): a demo container
# with a volume, backed up to a local directory target, listed, verified, and a restore
# previewed. Run as root on Debian 12 after `npm ci` (or let it run that for you).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" != 0 ] || scripts/install-deps.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent
scripts/sandbox.sh up
eval "$(scripts/sandbox.sh env)"

target="dir:$PWD/.cache/demo-target"
ib() { echo "+ incus-backup $*" >&2; ./bin/incus-backup "$@"; }

incus info demo >/dev/null 2>&1 || {
  incus launch ib-busybox demo
  incus storage volume create default demo-data
  incus storage volume attach default demo-data demo /srv/data
  incus exec demo -- sh -c 'echo "hello from demo" > /srv/data/hello; dd if=/dev/urandom of=/root/blob bs=1M count=8 2>/dev/null'
}

ib backup volumes default/demo-data --target "$target"
ib backup instances demo --target "$target"
ib list --target "$target"
ib verify --target "$target" || true
ib restore instance demo --target "$target" --target-name demo-restored --dry-run
echo "demo done: the backups are in ${target#dir:}; stop the sandbox with scripts/sandbox.sh down" >&2
