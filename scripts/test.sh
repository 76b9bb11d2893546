#!/usr/bin/env bash
# The one test command (README, CI): installs what is missing, builds, runs the unit tests,
# brings up the private Incus sandbox, runs the integration tests against it, tears it down.
#   SKIP_INTEGRATION=1  unit tests only
#   KEEP_SANDBOX=1      leave the private incusd running afterwards (faster reruns)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  scripts/install-deps.sh
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build
npx tsc --noEmit -p .

npx vitest run --project unit

if [ "${SKIP_INTEGRATION:-}" = 1 ]; then exit 0; fi

teardown() { [ "${KEEP_SANDBOX:-}" = 1 ] || scripts/sandbox.sh down; }
trap teardown EXIT
scripts/sandbox.sh up
eval "$(scripts/sandbox.sh env)"
export INCUS_DIR INCUS_SOCKET
npx vitest run --project integration
