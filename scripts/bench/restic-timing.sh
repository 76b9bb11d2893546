#!/usr/bin/env bash
# Stands in for restic (RESTIC_BINARY) in the benchmark's profiled runs: appends one line per
# invocation to $IB_BENCH_RESTIC_LOG (start and end in ms since the epoch, exit code, arguments)
# so the report can show where a restic-target run spends its time. Arguments go to restic as given.
: "${IB_BENCH_RESTIC_LOG:?}"
start=$(date +%s%3N)
restic "$@"
rc=$?
echo "$start $(date +%s%3N) $rc $*" >>"$IB_BENCH_RESTIC_LOG"
exit $rc
