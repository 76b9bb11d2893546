#!/usr/bin/env bash
# Installs, on Debian 12 as root, what the integration tests need: Incus 6.0 (bookworm-backports),
# restic >= 0.18 (from trixie, pinned so nothing else upgrades), restic-rest-server, busybox-static.
# Idempotent: does nothing when everything is already there.
#   install-deps.sh           everything the host-mode integration suite needs
#   install-deps.sh --unit    only what the unit tests need (xz, zstd)
set -euo pipefail

need=()
pkg_of() { case "$1" in xz) echo xz-utils ;; *) echo "$1" ;; esac; }
if [ "${1:-}" = --unit ]; then
  for tool in xz zstd; do command -v $tool >/dev/null 2>&1 || need+=("$(pkg_of $tool)"); done
  [ ${#need[@]} -eq 0 ] && exit 0
  [ "$(id -u)" = 0 ] || { echo "install-deps: missing ${need[*]} and not root; install them or run as root" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
  echo "install-deps: installed ${need[*]}"
  exit 0
fi
command -v incus >/dev/null 2>&1 && [ -x /usr/libexec/incus/incusd ] || need+=(incus)
# Debian's restic-rest-server installs /usr/bin/restic-rest-server (no `rest-server`).
command -v rest-server >/dev/null 2>&1 || command -v restic-rest-server >/dev/null 2>&1 || need+=(restic-rest-server)
[ -x /bin/busybox ] && /bin/busybox --help 2>&1 | grep -q 'static' || command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
restic_ok=0
if command -v restic >/dev/null 2>&1; then
  v=$(restic version | awk '{print $2}')
  if [ "$(printf '%s\n0.18.0\n' "$v" | sort -V | head -n1)" = "0.18.0" ]; then restic_ok=1; fi
fi
[ $restic_ok = 1 ] || need+=(restic)
for tool in curl xz zstd; do command -v $tool >/dev/null 2>&1 || need+=("$(pkg_of $tool)"); done
# Incus runs dnsmasq for a managed bridge (the tests make one).
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
# Incus needs btrfs-progs for a btrfs pool (the tests make one for --optimized backups).
command -v btrfs >/dev/null 2>&1 || [ -x /usr/bin/btrfs ] || need+=(btrfs-progs)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: everything present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing ${need[*]} and not root; install them or run as root" >&2
  exit 1
fi

# shellcheck source=container/apt.sh
. "$(dirname "$0")/container/apt.sh"
src=/etc/apt/sources.list.d/incus-backup-extra.sources
if [ ! -f "$src" ]; then
  mirror=$(debian_mirror debian)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  cat > "$src" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
write_trixie_pin /etc/apt/preferences.d/incus-backup-trixie
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pkgs=()
for p in "${need[@]}"; do
  case "$p" in
    incus) apt-get install -y -qq --no-install-recommends -t bookworm-backports incus ;;
    restic) apt-get install -y -qq --no-install-recommends restic/trixie ;;
    *) pkgs+=("$p") ;;
  esac
done
[ ${#pkgs[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
echo "install-deps: installed ${need[*]}"
