#!/usr/bin/env bash
# Runs INSIDE the test container (started by scripts/test_integration_container.sh), never on a host.
#
#   entry.sh run [VITEST ARGS...]   copy /src, npm ci, build, private incusd, integration suite
#   entry.sh abort                  interrupt a running `run` (it then tears down) and wait for it
#
# The working tree is mounted at /src but never written to, except the shared npm cache in
# /src/.cache/npm: the suite runs on a private copy in /work/incus-backup (an anonymous volume of
# the container, removed with it), with its own node_modules, dist/ and sandbox state
# (/work/incus-backup/.cache/incus). So a run here cannot rewrite dist/ or node_modules under
# tests running on the host at the same time, nor touch the host's sandbox daemon.
#   KEEP_SANDBOX=1   leave the private incusd running afterwards (KEEP_CONTAINER=1 sets it)
set -euo pipefail

src=/src
work=/work/incus-backup
pidfile=/run/ib-entry.pid
# The exit code is also left in a file: the runtime's exec client is no witness (docker exec
# exits 0 on a Ctrl-C and leaves this script running), so the host reads the code from here.
rcfile=/run/ib-entry.rc
say() { echo "container: $*" >&2; }

[ -f /.dockerenv ] || [ -f /run/.containerenv ] || [ -n "${IB_IN_TEST_CONTAINER:-}" ] \
  || { say "refusing to run outside the test container"; exit 2; }

case "${1:-}" in
  abort)
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || exit 0
    say "interrupting the test run"
    # The whole process group, as a Ctrl-C would: npm exec does not pass a SIGINT on to vitest,
    # and the run's bash only acts on one once its foreground child is gone.
    kill -INT -- "-$pid" 2>/dev/null || kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # finish() writes the exit code only after the sandbox is down.
    if [ -f "$rcfile" ]; then say "test run stopped (exit code $(cat "$rcfile")), its incusd torn down"
    else say "the test run did not stop within 60 s"; fi
    exit 0 ;;
  run)
    shift
    # Its own process group (pgid = the pid in $pidfile), so that `abort` can signal all of it.
    if [ -z "${IB_ENTRY_GROUP:-}" ]; then IB_ENTRY_GROUP=1 exec setsid -w bash "$0" run "$@"; fi ;;
  *) echo "usage: $0 run [vitest args...] | abort" >&2; exit 2 ;;
esac

rm -f "$rcfile"
echo $$ > "$pidfile"
sandbox_started=0
# shellcheck disable=SC2317 # invoked by the trap
finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$sandbox_started" = 1 ]; then
    if [ "${KEEP_SANDBOX:-}" = 1 ]; then
      say "leaving the private incusd running (INCUS_DIR=$work/.cache/incus)"
    else
      (cd "$work" && scripts/sandbox.sh down) || true
    fi
  fi
  echo "$rc" > "$rcfile"
  rm -f "$pidfile"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM
phase() { say "$1 ($(( $(date +%s) - t_start )) s)"; }
t_start=$(date +%s)

say "copying the working tree from $src to $work (without node_modules, dist, .cache, .git)"
mkdir -p "$work"
# node_modules and .cache (the sandbox of a kept container) survive a rerun in the same container.
find "$work" -mindepth 1 -maxdepth 1 ! -name node_modules ! -name .cache -exec rm -rf --one-file-system {} +
tar -C "$src" --exclude=./node_modules --exclude=./dist --exclude=./.cache --exclude=./.git -cf - . | tar -C "$work" -xf -
cd "$work"

export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
# npm ci only when node_modules is missing or was installed from another lockfile (a rerun in a
# kept container). Its `prepare` script is the build (set -e stops here if it fails); otherwise
# build explicitly.
if [ ! -d node_modules ] || ! cmp -s package-lock.json node_modules/.ib-lock; then
  phase "npm ci, which builds through its prepare script (npm cache: $src/.cache/npm)"
  npm ci --cache "$src/.cache/npm" --prefer-offline --loglevel=error
  cp package-lock.json node_modules/.ib-lock
else
  phase "npm run build"
  npm run build --silent
fi

# The host's /sys is bind-mounted (nested containers need it), so /sys/class/net lists the host's
# network devices, not this container's: Incus would not find a bridge it makes here ("Parent
# device ... doesn't exist"). This container's own sysfs view of them goes over the host's.
if ! mountpoint -q /sys/class/net; then
  mkdir -p /run/ib-sysfs
  if mount -t sysfs sysfs /run/ib-sysfs; then
    mount --bind /run/ib-sysfs/class/net /sys/class/net
    mount --bind /run/ib-sysfs/devices/virtual/net /sys/devices/virtual/net
  else
    say "warning: cannot mount this container's sysfs: a managed bridge will not work here"
  fi
fi

# Without --privileged the container's /dev has no loop devices (the device cgroup allows them):
# Incus needs them for a btrfs pool on a file (the tests make one for --optimized backups).
if [ ! -e /dev/loop-control ]; then
  if mknod -m 0660 /dev/loop-control c 10 237 2>/dev/null; then
    for i in $(seq 0 63); do [ -e "/dev/loop$i" ] || mknod -m 0660 "/dev/loop$i" b 7 "$i"; done
  else
    say "warning: cannot make loop devices: a btrfs pool will not work here"
  fi
fi

phase "starting the private incusd"
sandbox_started=1
scripts/sandbox.sh up
eval "$(scripts/sandbox.sh env)"
phase "integration suite: npx vitest run --project integration $*"
t_suite=$(date +%s)
rc=0
npx vitest run --project integration "$@" || rc=$?
say "integration suite finished with exit code $rc in $(( $(date +%s) - t_suite )) s"
exit "$rc"
