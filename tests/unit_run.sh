#!/bin/sh
# unit_run.sh JOBS TEST... -- runs the cmocka suites JOBS at a time, from the root so that
# tests/data is found. Each suite is one thread and test_vmath alone takes about a minute, so
# two at a time save most of the others' time on two cores. A suite's output is printed whole
# when it ends (never interleaved with another's); the exit status is 1 when any failed, and
# the failed ones are named at the end.
set -u
jobs=$1
shift
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
for t in "$@"; do
    printf '%s\n' "$t"
done | xargs -P "$jobs" -I{} sh -c '
    t=$1 dir=$2
    log=$dir/$(basename "$t").log
    case $t in /*) run=$t ;; *) run=./$t ;; esac
    if "$run" >"$log" 2>&1; then status=""; else status=" FAILED"; echo "$t" >>"$dir/failed"; fi
    flock "$dir/lock" sh -c "echo \"== \$1\$2\"; cat \"\$3\"" sh "$t" "$status" "$log"' sh {} "$tmp"
if [ -s "$tmp/failed" ]; then
    echo "unit_run: failed: $(tr '\n' ' ' <"$tmp/failed")" >&2
    exit 1
fi
exit 0
