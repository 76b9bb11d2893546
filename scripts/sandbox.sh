#!/usr/bin/env bash
# A private Incus daemon for tests and demos. Its state lives under .cache/incus (never the
# system's /var/lib/incus or its socket), so nothing here touches an Incus the user already runs.
#
#   scripts/sandbox.sh up     start incusd, create the dir pool, the default profile's root disk
#                             and the busybox test image (alias ib-busybox); idempotent
#   scripts/sandbox.sh down   stop the daemon and its containers
#   scripts/sandbox.sh env    print `export INCUS_DIR=... INCUS_SOCKET=...` for eval
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache="$repo/.cache"
export INCUS_DIR="$cache/incus"
export INCUS_SOCKET="$INCUS_DIR/unix.socket"
pidfile="$cache/incusd.pid"
log="$cache/incusd.log"
image_alias=ib-busybox

say() { echo "sandbox: $*" >&2; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

build_image() {
  local work="$cache/image" rootfs
  rm -rf "$work"; mkdir -p "$work/rootfs"; rootfs="$work/rootfs"
  mkdir -p "$rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,root,data,run,var}
  cp /bin/busybox "$rootfs/bin/busybox"
  for app in sh ash cat ls sha256sum dd sleep init mount umount echo rm mkdir cp mv head tail wc sync \
             grep sed seq touch stat df du find date true false kill ps printf tr cut sort od xargs md5sum; do
    ln -sf busybox "$rootfs/bin/$app"
  done
  ln -sf ../bin/busybox "$rootfs/sbin/init"
  printf '::sysinit:/bin/mount -t proc proc /proc\n::respawn:/bin/sleep 100000\n' > "$rootfs/etc/inittab"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
  echo 'root:x:0:' > "$rootfs/etc/group"
  cat > "$work/metadata.yaml" <<META
architecture: x86_64
creation_date: $(date +%s)
properties:
  description: busybox test image for incus-backup
  os: busybox
META
  tar -C "$work" --numeric-owner -cf "$work/image.tar" metadata.yaml rootfs
  incus image import "$work/image.tar" --alias "$image_alias" >/dev/null
  rm -rf "$work"
}

up() {
  command -v incus >/dev/null && [ -x /usr/libexec/incus/incusd ] || { say "incus is not installed: run scripts/install-deps.sh as root"; exit 1; }
  mkdir -p "$INCUS_DIR"; chmod 0711 "$cache" "$INCUS_DIR"
  if ! running; then
    say "starting private incusd in $INCUS_DIR"
    # setsid: the daemon outlives this script and is not hit by a Ctrl-C aimed at the test run.
    setsid /usr/libexec/incus/incusd --group root --logfile "$log" </dev/null >>"$log" 2>&1 &
    echo $! > "$pidfile"
  fi
  incus admin waitready --timeout 60
  incus storage show default >/dev/null 2>&1 || incus storage create default dir </dev/null >/dev/null
  incus profile device show default 2>/dev/null | grep -q '^root:' || incus profile device add default root disk path=/ pool=default </dev/null >/dev/null
  # busybox init powers off on SIGUSR2, not on the SIGPWR Incus sends by default: without this
  # every clean stop waits for the 30 s timeout and is then forced.
  [ "$(incus profile get default raw.lxc)" = "lxc.signal.halt = SIGUSR2" ] || incus profile set default raw.lxc "lxc.signal.halt = SIGUSR2"
  incus image alias list --format csv | grep -q "^$image_alias," || build_image
  say "ready: INCUS_SOCKET=$INCUS_SOCKET"
}

down() {
  if running; then
    say "stopping private incusd"
    # Stop containers first so no monitor processes linger after the daemon is gone.
    timeout 60 incus admin shutdown --timeout 30 >/dev/null 2>&1 || true
    pid=$(cat "$pidfile")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  # Leftover monitors of this daemon's containers (they carry its path in their command line).
  pkill -9 -f "$INCUS_DIR" 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export INCUS_DIR='$INCUS_DIR' INCUS_SOCKET='$INCUS_SOCKET'" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
