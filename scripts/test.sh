#!/usr/bin/env bash
# The one test command (README, CI): builds, runs the unit tests on this machine, then the
# integration suite inside the test container (scripts/test_integration_container.sh; Docker is
# installed and started when missing) or, where no container runtime can be had, against a
# private Incus daemon on this machine (scripts/sandbox.sh), installing Incus/restic if missing.
#   SKIP_INTEGRATION=1        unit tests only
#   INTEGRATION=host|container  force one way (default: container when a runtime can be had)
#   KEEP_SANDBOX=1            host mode: leave the private incusd running afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

# What the unit tests need (xz, zstd); Incus, restic and rest-server only for the host-mode
# fallback below (the container image has its own). A no-op when all is there.
if [ "$(id -u)" = 0 ]; then
  scripts/install-deps.sh --unit
fi
# npm ci builds through the package's `prepare` script; otherwise build here.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run build
fi
npx tsc --noEmit -p .

npx vitest run --project unit

if [ "${SKIP_INTEGRATION:-}" = 1 ]; then exit 0; fi

mode=${INTEGRATION:-auto}
if [ "$mode" != host ]; then
  if scripts/test_integration_container.sh --check-runtime; then
    exec scripts/test_integration_container.sh
  fi
  [ "$mode" = auto ] || { echo "test: no container runtime can be had (INTEGRATION=container)" >&2; exit 1; }
  echo "test: no container runtime can be had: running the integration suite on this machine" >&2
fi

if [ "$(id -u)" = 0 ]; then
  scripts/install-deps.sh
fi
teardown() { [ "${KEEP_SANDBOX:-}" = 1 ] || scripts/sandbox.sh down; }
trap teardown EXIT
scripts/sandbox.sh up
eval "$(scripts/sandbox.sh env)"
npx vitest run --project integration
