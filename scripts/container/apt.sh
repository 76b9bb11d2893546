# Debian apt setup shared by scripts/install-deps.sh (the host) and build-image.sh (the test
# image); sourced, not run. It lives here so that a change to it rebuilds the image too.

# The Debian mirror the host's apt uses (deb822 first, then one-line sources), for repository
# path suffix $1 ("debian" or "debian-security"); empty when none is configured.
debian_mirror() {
  local m=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk -v s="$1" '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ ("/" s "/?$")) { print $i; exit } }' \
          /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk -v s="$1" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ ("^[a-z]+://.*/" s "/?$")) { print $i; exit } }' \
          /etc/apt/sources.list)
  fi
  echo "${m%/}"
}

# Writes to $1 an apt preference that pins trixie below 100: only what is asked for by name
# (restic/trixie) comes from it. At 100, trixie ties with installed packages, so its newer
# versions become the candidates of anything installed from backports (iproute2, incus-base),
# which need trixie's libc: any later install that touches them fails with "held broken packages".
write_trixie_pin() {
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 50\n' > "$1"
}
