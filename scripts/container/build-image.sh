#!/usr/bin/env bash
# Builds the integration-test image without pulling anything from a container registry:
# a Debian bookworm rootfs from debootstrap, packages installed into it with chroot, then
# `tar | RUNTIME import`. Called by scripts/test_integration_container.sh (which decides the
# tag and holds the build lock); not meant to be run by hand.
#
#   build-image.sh RUNTIME IMAGE CACHE_DIR
#
# Caches (all under CACHE_DIR, i.e. .cache/container/, git-ignored):
#   debootstrap-bookworm-minbase.tgz   the base system's .debs (debootstrap --make-tarball)
#   apt-archives/                      every .deb apt downloads in the chroot
# Debian's own nodejs is 18 (too old); the host's node and npm are copied in instead (the
# caller puts their versions into the tag, so a different host node means a new image).
set -euo pipefail

runtime=$1 image=$2 cache=$3
say() { echo "container-image: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "building the image needs root (debootstrap, chroot)"

# shellcheck source=apt.sh
. "$(dirname "$0")/apt.sh"
# The same Debian mirror the host's apt uses.
mirror=$(debian_mirror debian); [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
security=$(debian_mirror debian-security)

export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap on the host"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

node_bin=$(readlink -f "$(command -v node)")
npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
[ -f "$npm_dir/package.json" ] || die "cannot find npm's package directory (from $(command -v npm))"

mkdir -p "$cache/apt-archives/partial"
rootfs="$cache/rootfs.$$"
tarball="$cache/debootstrap-bookworm-minbase.tgz"

unmount_all() {
  local m
  # Deepest first; the bind mounts must be gone before anything is deleted.
  for m in var/cache/apt/archives dev/pts dev proc; do
    if mountpoint -q "$rootfs/$m" 2>/dev/null; then umount "$rootfs/$m" 2>/dev/null || umount -l "$rootfs/$m"; fi
  done
}
cleanup() {
  [ -d "$rootfs" ] || return 0
  unmount_all
  # --one-file-system: even if an unmount failed, never descend into a host directory.
  rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$(date +%s)
if [ ! -s "$tarball" ]; then
  say "downloading the bookworm minbase system from $mirror (cached in $tarball)"
  debootstrap --variant=minbase --make-tarball="$tarball.partial" bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap --make-tarball failed (log: $cache/debootstrap.log)"; }
  mv "$tarball.partial" "$tarball"
  rm -rf --one-file-system "$rootfs"
fi
say "debootstrap bookworm (minbase) into $rootfs"
debootstrap --variant=minbase --unpack-tarball="$tarball" bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
  || { tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }

# debootstrap leaves its .debs in the rootfs; they would be hidden under the apt cache mount
# below and still end up in the image. Documentation is not needed in a test image either.
rm -f "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\npath-exclude /usr/share/info/*\n' \
  > "$rootfs/etc/dpkg/dpkg.cfg.d/90incus-backup-test-nodoc"
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/*

# Sources: bookworm (+updates, +security), bookworm-backports for Incus 6.0, and trixie pinned
# below 100 (see apt.sh).
rm -f "$rootfs/etc/apt/sources.list"
{
  printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates bookworm-backports trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror"
  [ -z "$security" ] || printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$security"
} > "$rootfs/etc/apt/sources.list.d/debian.sources"
write_trixie_pin "$rootfs/etc/apt/preferences.d/trixie"
printf 'Acquire::Languages "none";\nAPT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  > "$rootfs/etc/apt/apt.conf.d/90incus-backup-test"
# No service may start inside the chroot (postinst scripts ask invoke-rc.d).
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"; chmod 755 "$rootfs/usr/sbin/policy-rc.d"

mount -t proc proc "$rootfs/proc"
mount --bind /dev "$rootfs/dev"
mount --bind "$cache/apt-archives" "$rootfs/var/cache/apt/archives"
in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
              DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }
apt_log="$cache/apt.log"; : > "$apt_log"
apt_in_root() { in_root apt-get -y -q -o Dpkg::Use-Pty=0 "$@" >>"$apt_log" 2>&1 \
                  || { tail -n 30 "$apt_log" >&2; die "apt-get $* failed in the chroot (log: $apt_log)"; }; }

say "installing packages in the chroot (apt log: $apt_log)"
apt_in_root update
# incus-base is the container-only daemon of Incus 6.0 (the `incus` package only adds QEMU for VMs,
# which cannot run here anyway); incus-client is the `incus` command.
# systemd-standalone-sysusers satisfies incus-base's sysusers dependency without all of systemd.
apt_in_root install --no-install-recommends -t bookworm-backports incus-base incus-client systemd-standalone-sysusers
apt_in_root install --no-install-recommends restic/trixie
# dnsmasq-base: Incus runs it for a managed bridge (the tests make one, as most hosts have incusbr0).
# btrfs-progs: Incus needs it for a btrfs pool (the tests make one for --optimized backups).
apt_in_root install --no-install-recommends restic-rest-server busybox-static xz-utils zstd curl \
  ca-certificates procps iproute2 dnsmasq-base btrfs-progs

say "copying the host's node $(node --version) and npm $(npm --version 2>/dev/null) into the image"
install -D -m 0755 "$node_bin" "$rootfs/usr/local/bin/node"
mkdir -p "$rootfs/usr/local/lib/node_modules"
cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"

# The image must be able to run everything the harness needs.
for check in "node --version" "npm --version" "incus --version" "test -x /usr/libexec/incus/incusd" \
             "restic version" "restic-rest-server --version" "busybox true" "xz --version" "zstd --version" \
             "dnsmasq --version" "btrfs --version"; do
  # shellcheck disable=SC2086
  in_root $check >/dev/null 2>&1 || die "image check failed: $check"
done
say "in the image: node $(in_root node --version), incus $(in_root incus --version), $(in_root restic version | cut -d' ' -f1-2)"

unmount_all
rm -f "$rootfs/usr/sbin/policy-rc.d"
rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/var/log/apt/"* "$rootfs/tmp/"*
say "importing the rootfs as $image"
quiet=(); [ "$runtime" = podman ] && quiet=(--quiet)   # podman reports its progress on stderr
tar -C "$rootfs" --numeric-owner -cf - . \
  | "$runtime" import "${quiet[@]}" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      - "$image" >/dev/null
say "built $image in $(( $(date +%s) - t0 )) s"
