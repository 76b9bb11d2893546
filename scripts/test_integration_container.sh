#!/usr/bin/env bash
# Runs the integration suite inside a throw-away container that has its own private Incus
# daemon, restic and rest-server: the host needs only node >= 20 and a container runtime (plus
# debootstrap to build the image; both are installed when missing, as root on Debian), and no
# Incus on the host (not even the host-mode sandbox of scripts/sandbox.sh) is touched.
#
#   scripts/test_integration_container.sh [VITEST ARGS...]
#   e.g. scripts/test_integration_container.sh tests/integration/volumes.test.ts
#   scripts/test_integration_container.sh --check-runtime
#       only find (or install and start) the runtime; exit 0 if there is one (for scripts/test.sh)
#
# Environment:
#   RUNTIME=docker|podman  container runtime (default: the first one that answers; when none
#                          does and we are root on Debian, Debian's docker.io is installed and
#                          dockerd is started in the background, logging to .cache/container/)
#   REBUILD=1              rebuild the image even if one for this recipe exists
#   IMAGE_TAG=NAME:TAG     image to use/build (default incus-backup-test:<hash of the recipe>)
#   CONTAINER_NAME=NAME    (default incus-backup-it-<pid>)
#   KEEP_CONTAINER=1       leave the container and its incusd running afterwards, to debug
#
# The image is made without any registry: debootstrap (Debian bookworm, minbase) + Incus 6.0
# (bookworm-backports) + restic 0.18 (trixie, pinned) + rest-server + busybox-static, plus the
# host's own node and npm (Debian's node is too old), imported with `RUNTIME import`. Its tag
# is a hash of this script, everything under scripts/container/ and the host's node/npm
# versions, so it is rebuilt only when one of them changes. Caches: .cache/container/ (the
# debootstrap tarball, apt's .debs, logs) and .cache/npm (npm's cache, used inside).
# Exit code: the test run's (130 after Ctrl-C).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
self="$repo/scripts/$(basename "$0")"
cache="$repo/.cache/container"
say() { echo "test-container: $*" >&2; }
die() { say "$*"; exit 1; }
t_begin=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

mkdir -p "$cache" "$repo/.cache/npm"

# --- the runtime ---------------------------------------------------------------------------
answers() { timeout 30 "$1" info >/dev/null 2>&1; }

start_dockerd() {
  local log="$cache/dockerd.log"
  say "no Docker daemon answers: starting dockerd in the background (log: $log; it keeps running afterwards)"
  # setsid: the daemon outlives this script and is not hit by a Ctrl-C aimed at the test run.
  # 8>&- 9>&-: the daemon must not inherit (and so hold forever) this script's lock files.
  setsid dockerd >>"$log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! > "$cache/dockerd.pid"
  for _ in $(seq 1 120); do
    answers docker && return 0
    kill -0 "$(cat "$cache/dockerd.pid")" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 20 "$log" >&2
  die "dockerd did not come up (log: $log)"
}

ensure_docker() {
  answers docker && return 0
  if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
      die "no container runtime answers (docker, podman) and we are not root on Debian: install docker or podman"
    fi
    say "no container runtime found: installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    answers docker && return 0   # a package script may have started it
  fi
  [ "$(id -u)" = 0 ] || die "dockerd is installed but not running, and only root can start it"
  start_dockerd
}

exec 8>"$cache/runtime.lock"   # one installer/dockerd starter at a time
flock -n 8 || { say "waiting for another run that is setting up the container runtime"; flock 8; }
case "${RUNTIME:-}" in
  docker) ensure_docker; rt=docker ;;
  podman) answers podman || die "RUNTIME=podman but \`podman info\` fails (apt-get install podman?)"; rt=podman ;;
  "") if answers docker; then rt=docker
      elif answers podman; then rt=podman
      else ensure_docker; rt=docker; fi ;;
  *) die "RUNTIME must be docker or podman, not '$RUNTIME'" ;;
esac
exec 8>&-
if [ "$rt" = docker ]; then say "runtime: docker (engine $(docker version --format '{{.Server.Version}}' 2>/dev/null))"
else say "runtime: $(podman --version)"; fi
[ "${1:-}" != --check-runtime ] || exit 0

# --- the image -----------------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  die "node >= 20 and npm are needed on the host (they are copied into the image)"
fi
node_v=$(node --version)
[ "$(printf '%s\n' "${node_v#v}" 20.0.0 | sort -V | head -n1)" = 20.0.0 ] \
  || die "the host's node is $node_v; the project needs >= 20 (it is copied into the image)"

recipe_hash() {
  local f
  {
    echo "== $(basename "$self")"; cat "$self"
    while IFS= read -r f; do echo "== $f"; cat "$repo/$f"; done \
      < <(cd "$repo" && find scripts/container -type f | LC_ALL=C sort)
    echo "== node $node_v npm $(npm --version 2>/dev/null)"
  } | sha256sum | cut -c1-12
}
image_repo=incus-backup-test
image=${IMAGE_TAG:-$image_repo:$(recipe_hash)}

exec 9>"$cache/build.lock"   # concurrent first runs build once
flock -n 9 || { say "waiting for another run that is building an image"; flock 9; }
if [ "${REBUILD:-}" != 1 ] && "$rt" image inspect "$image" >/dev/null 2>&1; then
  say "reusing image $image (recipe unchanged; REBUILD=1 forces a rebuild)"
else
  if [ "${REBUILD:-}" = 1 ]; then say "REBUILD=1: rebuilding $image"
  else say "no image $image yet: building it (about a minute; several on a slow mirror)"; fi
  t_build=$(date +%s.%N)
  old_id=$("$rt" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  bash "$repo/scripts/container/build-image.sh" "$rt" "$image" "$cache"
  say "image $image built in $(elapsed "$t_build") s"
  # REBUILD=1 leaves the image the tag pointed to untagged: remove it unless a container uses it.
  [ -z "$old_id" ] || "$rt" rmi "$old_id" >/dev/null 2>&1 || true
  if [ -z "${IMAGE_TAG:-}" ]; then
    # Older recipes' images: removed unless a container still uses them (then rmi refuses).
    # (podman lists local images as localhost/NAME:TAG)
    "$rt" images --format '{{.Repository}}:{{.Tag}}' "$image_repo" 2>/dev/null | while read -r old; do
      if [ "${old#localhost/}" != "$image" ] && "$rt" rmi "$old" >/dev/null 2>&1; then say "removed the outdated image $old"; fi
    done
  fi
fi
exec 9>&-

# --- the container -------------------------------------------------------------------------
# Capabilities the host itself lacks cannot be given to a container: `--privileged` asks for
# all of them and fails ("unable to apply caps"), so it is used only when the bounding set is full.
cap_names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
  NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
  SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
  AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
  PERFMON BPF CHECKPOINT_RESTORE)
last_cap=$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null || echo 40)
bounding=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
missing_caps=()
for ((i = 0; i <= last_cap && i < ${#cap_names[@]}; i++)); do
  (( bounding >> i & 1 )) || missing_caps+=("${cap_names[$i]}")
done
unmask=systempaths=unconfined; [ "$rt" = podman ] && unmask=unmask=ALL
explicit_flags=(--cap-add ALL)
for c in "${missing_caps[@]}"; do explicit_flags+=(--cap-drop "$c"); done
explicit_flags+=(--security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt "$unmask"
  --device-cgroup-rule 'a *:* rwm')
privileged_flags=(--privileged)
# Both: the host's cgroup tree and sysfs (without the /sys bind, nested containers fail to start:
# "sysfs mount denied"), tmpfs on /run and /tmp. /tmp must allow exec as on a normal system (the
# tests run helper scripts from their temporary directories); a bare `--tmpfs /tmp` is noexec.
# shellcheck disable=SC2054 # the commas are mount options
common_flags=(--cgroupns=host -v /sys:/sys:rw --tmpfs /run:rw,nosuid,nodev,mode=755
  --tmpfs /tmp:rw,exec,nosuid,nodev,mode=1777)
# podman mounts the container's own cgroup directories read-only over /sys/fs/cgroup (Incus then
# cannot freeze an instance) unless the host's tree is mounted there explicitly.
# shellcheck disable=SC2054
[ "$rt" = podman ] && common_flags+=(-v /sys/fs/cgroup:/sys/fs/cgroup:rw,rbind)

name=${CONTAINER_NAME:-incus-backup-it-$$}
run_flags=(--detach --name "$name" --hostname incus-backup-it --label incus-backup-test=1
  -v "$repo:/src:ro" -v "$repo/.cache/npm:/src/.cache/npm"   # the tree read-only; only npm's cache is shared
  -v /work                                                   # anonymous volume: the copy and its sandbox
  -e IB_IN_TEST_CONTAINER=1)
# Without CAP_SYS_RESOURCE no limit can be raised, but podman's defaults do (RLIMIT_NOFILE to
# 1048576, RLIMIT_NPROC to the host's while podman itself runs with at most 32768): ask for what
# the host has.
if [ "$rt" = podman ] && [[ " ${missing_caps[*]} " == *" SYS_RESOURCE "* ]]; then
  nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
  run_flags+=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
fi
# npm inside goes through the same proxy and trusts the same extra CA as the host's.
# CI, NO_COLOR, FORCE_COLOR: the suite's output behaves as it would on the host.
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY npm_config_registry CI NO_COLOR FORCE_COLOR; do
  [ -z "${!v:-}" ] || run_flags+=(-e "$v=${!v}")
done
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$NODE_EXTRA_CA_CERTS" ]; then
  run_flags+=(-v "$NODE_EXTRA_CA_CERTS:/etc/ib-extra-ca.pem:ro" -e NODE_EXTRA_CA_CERTS=/etc/ib-extra-ca.pem)
fi
# PID 1 only reaps orphans and waits; the suite runs through `exec`, so the container can outlive
# it (KEEP_CONTAINER=1).
pid1=(bash -c 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done')

started=0 interrupted=0 rc=1
run_err="$cache/run.$$.err"
# shellcheck disable=SC2317 # invoked by the traps
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  [ "$interrupted" = 1 ] && code=130
  if [ "$started" = 1 ]; then
    if [ "$interrupted" = 1 ]; then
      # The exec'd run does not get the Ctrl-C: ask it to stop so it tears its incusd down.
      timeout 120 "$rt" exec "$name" bash /src/scripts/container/entry.sh abort || true
    fi
    if [ "${KEEP_CONTAINER:-}" = 1 ]; then
      say "KEEP_CONTAINER=1: container $name is still running, with its incusd. To look inside:"
      say "  $rt exec -it $name bash -c 'cd /work/incus-backup && eval \"\$(scripts/sandbox.sh env)\" && exec bash'"
      say "  rerun the suite there: $rt exec $name bash /src/scripts/container/entry.sh run [vitest args]"
      say "  remove it: $rt rm -f -v $name"
    else
      "$rt" rm -f -v "$name" >/dev/null 2>&1 || say "could not remove container $name"
    fi
  fi
  rm -f "$run_err"
  say "total $(elapsed "$t_begin") s, exit code $code"
  exit "$code"
}
trap cleanup EXIT
trap 'interrupted=1; exit 130' INT TERM

if "$rt" container inspect "$name" >/dev/null 2>&1; then
  # A stopped test container of ours is what a run killed with its machine leaves: remove it.
  # A running one is another run (or KEEP_CONTAINER=1); a foreign one is not ours to touch.
  ours=$("$rt" container inspect -f '{{index .Config.Labels "incus-backup-test"}}' "$name" 2>/dev/null || true)
  running=$("$rt" container inspect -f '{{.State.Running}}' "$name" 2>/dev/null || true)
  if [ "$ours" = 1 ] && [ "$running" != true ]; then
    say "removing the stopped test container $name left by an earlier run"
    "$rt" rm -f -v "$name" >/dev/null
  else
    die "a container named $name exists already (another run, or one left by KEEP_CONTAINER=1): remove it with \`$rt rm -f -v $name\` or set CONTAINER_NAME"
  fi
fi
start_container() {
  "$rt" run "${run_flags[@]}" "$@" "${common_flags[@]}" "$image" "${pid1[@]}" >/dev/null 2>"$run_err" && return 0
  "$rt" rm -f -v "$name" >/dev/null 2>&1 || true   # created but not started
  return 1
}
t_start=$(date +%s.%N)
if [ ${#missing_caps[@]} -eq 0 ] && start_container "${privileged_flags[@]}"; then
  started=1; say "container $name started with --privileged"
else
  [ ${#missing_caps[@]} -gt 0 ] || say "--privileged failed ($(tail -n1 "$run_err")): using explicit capabilities"
  start_container "${explicit_flags[@]}" || { cat "$run_err" >&2; die "the container did not start"; }
  started=1
  if [ ${#missing_caps[@]} -gt 0 ]; then
    say "container $name started with explicit flags (not --privileged: the host's bounding set lacks ${missing_caps[*]})"
  else
    say "container $name started with explicit flags"
  fi
  say "  ${explicit_flags[*]} ${common_flags[*]}"
fi
say "container up $(elapsed "$t_start") s after the start request, $(elapsed "$t_begin") s after launch"

keep=; [ "${KEEP_CONTAINER:-}" = 1 ] && keep=1
exec_rc=0
"$rt" exec -e KEEP_SANDBOX="$keep" "$name" bash /src/scripts/container/entry.sh run "$@" || exec_rc=$?
# The run's own exit code (see entry.sh): `docker exec` itself exits 0 when interrupted.
if rc=$("$rt" exec "$name" cat /run/ib-entry.rc 2>/dev/null) && [ -n "$rc" ]; then
  exit "$rc"
fi
say "the test run did not finish ($rt exec ended with $exec_rc): stopping it"
timeout 120 "$rt" exec "$name" bash /src/scripts/container/entry.sh abort || true
exit 1
