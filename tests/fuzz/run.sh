#!/bin/sh
# run.sh TARGET ... -- runs the libFuzzer builds of make fuzz, one after the other.
#
# Each $FUZZ_BUILD/fuzz_TARGET runs for $FUZZ_SECONDS on its working corpus
# ($FUZZ_BUILD/corpus/TARGET/, where new inputs go and later runs start from), reading the
# committed seeds (tests/fuzz/corpus/TARGET/) and regression cases too, with its dictionary
# and -max_len $FUZZ_MAX_LEN_TARGET. A single allocation over 512 MB is reported as a failure
# (no valid input needs one: the targets evaluate with a limit of 4096 elements). Prints a
# line per target: executions, the final cov: and ft: figures (edges and features covered),
# the corpus; exits 1 when a target crashed, leaked or broke an invariant (the log's tail
# and the input, in $FUZZ_BUILD/artifacts/TARGET/, are shown).
set -u
build=${FUZZ_BUILD:-build/fuzz}
seconds=${FUZZ_SECONDS:-60}
status=0
summary=""
for t in "$@"; do
    bin=$build/fuzz_$t
    work=$build/corpus/$t
    art=$build/artifacts/$t
    log=$build/logs/$t.log
    mkdir -p "$work" "$art" "$build/logs"
    eval "max_len=\${FUZZ_MAX_LEN_$t:-4096}"
    set -- "$work" "tests/fuzz/corpus/$t"
    [ -d "tests/fuzz/regressions/$t" ] && set -- "$@" "tests/fuzz/regressions/$t"
    [ -f "tests/fuzz/$t.dict" ] && set -- "-dict=tests/fuzz/$t.dict" "$@"
    echo "== fuzz_$t: ${seconds} s (log $log)"
    # shellcheck disable=SC2086 # FUZZ_ARGS: several flags
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$bin" -max_total_time="$seconds" \
        -max_len="$max_len" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -print_final_stats=1 -artifact_prefix="$art/" ${FUZZ_ARGS:-} "$@" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
    files=$(find "$work" -type f | wc -l)
    line=$(printf '%-6s execs %s  cov %s  ft %s  corp %s  (working corpus: %s files)' "$t" \
        "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$files")
    if [ "$rc" -ne 0 ]; then
        status=1
        line="$line  FAILED (exit $rc)"
        echo "-- fuzz_$t failed; the end of $log:"
        tail -n 60 "$log"
        echo "-- inputs: $(ls "$art")"
    fi
    echo "   $line"
    summary="$summary
   $line"
done
echo "== fuzz summary ($seconds s each):$summary"
exit $status
