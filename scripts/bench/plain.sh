#!/usr/bin/env bash
# The "plain way" that scripts/bench/bench.mjs compares incus-backup with: the Incus REST API driven
# by curl over the UNIX socket, as an administrator would script it by hand. No manifest, no
# consistency, no checks beyond what curl and restic do themselves.
#
#   plain.sh backup-file     stage a server-side backup (no compression, without snapshots), wait for
#                            it, download it into $OUT while hashing it ($HASH_CMD), fsync $OUT,
#                            delete the server-side backup
#   plain.sh backup-restic   the same, the download piped into `restic backup --stdin`
#   plain.sh backup-restic-each   backup-restic for every resource in $RESES, one after the other
#   plain.sh restore-restic-each  restore-restic for every "SNAP FILENAME NAME" line of $ITEMS
#   plain.sh restore-restic  `restic dump $SNAP /$FILENAME` piped into an import, wait for it
#   plain.sh restore-file    $IN uploaded as an import, wait for it
#
# Parameters come from the environment: SOCK PROJECT, and RES (/1.0/instances/NAME or
# /1.0/storage-pools/POOL/volumes/custom/NAME) BNAME OUT HASH_CMD FILENAME SUMMARY SNAP NAME IN
# as the action needs; restic's RESTIC_REPOSITORY and RESTIC_PASSWORD.
set -euo pipefail
: "${SOCK:?}" "${PROJECT:?}"

api() { curl -sS --fail-with-body --unix-socket "$SOCK" "$@"; }
op_of() { sed -n 's/.*"operation":"\([^"]*\)".*/\1/p'; }

# The wait answer holds the envelope's status first and the operation's own status last.
wait_op() {
  local answer
  answer=$(api "http://incus$1/wait?timeout=3600")
  if [ "$(printf '%s' "$answer" | grep -o '"status":"[A-Za-z]*"' | tail -n1)" != '"status":"Success"' ]; then
    echo "plain: operation $1 failed: $answer" >&2
    exit 1
  fi
}

stage() {
  local only=instance_only op
  case "$RES" in /1.0/storage-pools/*) only=volume_only ;; esac
  op=$(api -X POST -H 'Content-Type: application/json' \
    -d "{\"name\":\"$BNAME\",\"compression_algorithm\":\"none\",\"$only\":true}" \
    "http://incus$RES/backups?project=$PROJECT" | op_of)
  wait_op "$op"
}

drop() {
  local op
  op=$(api -X DELETE "http://incus$RES/backups/$BNAME?project=$PROJECT" | op_of)
  wait_op "$op"
}

download() { api "http://incus$RES/backups/$BNAME/export?project=$PROJECT"; }

# `Expect:` stops curl from waiting for a "100 Continue" before it sends the body.
import_from() {
  local op
  op=$(api -X POST -T "$1" -H 'Expect:' -H 'Content-Type: application/octet-stream' -H "X-Incus-name: $NAME" \
    "http://incus/1.0/instances?project=$PROJECT" | op_of)
  wait_op "$op"
}

# One resource ($RES) into restic, as $FILENAME.
backup_restic() {
  stage
  download | restic backup --stdin --stdin-filename "$FILENAME" --json --quiet >"$SUMMARY"
  drop
}

# One archive ($SNAP's /$FILENAME) imported as $NAME.
restore_restic() {
  restic dump "$SNAP" "/$FILENAME" </dev/null | import_from -
}

case "${1:-}" in
  backup-file)
    stage
    download | tee "$OUT" | $HASH_CMD >"$OUT.sha256"
    sync "$OUT"
    drop
    ;;
  backup-restic)
    backup_restic
    ;;
  backup-restic-each)
    # A hand-made nightly loop: every resource of $RESES in turn.
    for RES in $RESES; do
      FILENAME="${RES##*/}.tar"
      backup_restic
    done
    ;;
  restore-restic)
    restore_restic
    ;;
  restore-restic-each)
    # A hand-made restore loop: every "SNAP FILENAME NAME" line of $ITEMS in turn.
    while read -r SNAP FILENAME NAME; do
      [ -n "$SNAP" ] || continue
      restore_restic
    done <<<"$ITEMS"
    ;;
  restore-file)
    import_from "$IN"
    ;;
  *)
    echo "usage: $0 backup-file|backup-restic|backup-restic-each|restore-restic|restore-restic-each|restore-file (parameters in the environment)" >&2
    exit 2
    ;;
esac
