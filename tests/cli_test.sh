#!/bin/sh
# cli_test.sh CLI -- the maskloss command as a user runs it: exit codes, stdout, jsonl.
set -u
cli=${1:-build/maskloss}
pass=0 fail=0
check() { # name, condition result
    if [ "$2" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi
}
blog='{"loss": "sigmoid_cross_entropy", "dtype": "float64",
 "labels": [[1,1,0,0,0],[0,1,1,1,0],[0,0,0,0,1],[1,1,1,1,1]],
 "logits": [[0.2,0.2,0.2,0,0.8],[0,0.5,0.5,0.2,0],[0,0.5,0.1,0.0,0.9],[0.9,0.9,0.7,0.1,0.0]],
 "mask":   [[1,0,0,0,0],[0,0,1,1,0],[0,0,1,0,1],[0,1,1,1,1]]}'

out=$(printf '%s' "$blog" | "$cli" eval -); rc=$?
check "eval exit 0" $rc
# The exact value (Python decimal, 60 digits) is 0.53753211355555677766...; float64 requests
# use the library's own exp and log1p (within 2 ulp each), so allow a few ulp (1.1e-16 each).
note_loss() { # answer -> 0 when its "loss" is the note's masked mean
    v=$(printf '%s' "$1" | sed -n 's/.*"loss":\([-0-9.e+]*\),.*/\1/p')
    awk -v v="$v" 'BEGIN { d = v - 0.53753211355555677766; if (d < 0) d = -d;
                           print (v != "" && d < 4.5e-16) ? 0 : 1 }'
}
check "the note's masked mean 0.537532113555556778 within 4 ulp (got $out)" $(note_loss "$out")

tmp=$(mktemp); printf '%s' "$blog" > "$tmp"
out2=$("$cli" eval "$tmp"); check "eval FILE" $([ "$out2" = "$out" ]; echo $?)
rm -f "$tmp"

out=$(printf '{"loss": "nope", "labels": [1], "logits": [1]}' | "$cli" eval); rc=$?
check "rejected request exits 2" $([ $rc = 2 ]; echo $?)
case $out in *'"code":"unknown_loss"'*'"field":"loss"'*) r=0 ;; *) r=1 ;; esac
check "unknown loss error object (got $out)" $r

out=$(printf '{"loss": "sigmoid_cross_entropy",\n "labels": [1,}' | "$cli" eval); rc=$?
check "malformed JSON exits 2" $([ $rc = 2 ]; echo $?)
case $out in *'"code":"malformed_json"'*'"line":2'*) r=0 ;; *) r=1 ;; esac
check "malformed JSON names line and column (got $out)" $r

out=$(printf '{"loss":"sigmoid_cross_entropy","labels":[[1,0],[1]],"logits":[[1,2],[3,4]]}' | "$cli" eval)
case $out in *'"code":"invalid_tensor"'*'"field":"labels"'*) r=0 ;; *) r=1 ;; esac
check "ragged tensor (got $out)" $r

out=$(printf '{"loss":"sigmoid_cross_entropy","labels":[1],"logits":["NaN"],"allow_non_finite":true}' | "$cli" eval)
case $out in *'"loss":"NaN"'*) r=0 ;; *) r=1 ;; esac
check "NaN written as a string (got $out)" $r

lines=$(printf '%s\n\n{"loss":"x"}\n{"loss":"mse"}\n' "$(printf '%s' "$blog" | tr -d '\n')" |
        "$cli" eval --jsonl -); rc=$?
check "jsonl exits 2 when a line fails" $([ $rc = 2 ]; echo $?)
check "jsonl answers every non-blank line" $([ "$(printf '%s\n' "$lines" | wc -l)" = 3 ]; echo $?)
check "jsonl first answer" $(note_loss "$(printf '%s\n' "$lines" | head -n 1)")

"$cli" losses | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d["losses"]) >= 30; names={l["name"] for l in d["losses"]}; assert "tf.compat.v1.losses.sigmoid_cross_entropy" in names and "asymmetric_loss" in names'
check "losses prints the catalogue as JSON" $?
"$cli" --help | grep -q "maskloss eval"; check "--help" $?
"$cli" --version | grep -q "^maskloss [0-9]"; check "--version" $?
"$cli" frobnicate 2>/dev/null; check "unknown command exits 64" $([ $? = 64 ]; echo $?)

# Options (getopt_long): --name=value, "--" before a FILE, mistakes exit 64 with a message.
out=$(printf '%s' "$blog" | "$cli" eval --max-elements=19 -); rc=$?
case $out in *'"code":"too_large"'*) r=0 ;; *) r=1 ;; esac
check "--max-elements=19 rejects 20 elements (got $rc $out)" $([ $rc = 2 ] && [ $r = 0 ]; echo $?)
out=$(printf '%s' "$blog" | "$cli" eval --max-elements 20 -- -); rc=$?
check "--max-elements 20 -- - accepts (got $rc)" $([ $rc = 0 ]; echo $?)
for bad in "--bogus" "eval --bogus" "eval --max-elements" "eval --max-elements=-1" \
           "eval --labels y.npy" "eval --loss mse --jsonl" "eval a b"; do
    err=$("$cli" $bad </dev/null 2>&1 >/dev/null); rc=$?
    check "'$bad' exits 64 with a message (got $rc: $err)" $([ $rc = 64 ] && [ -n "$err" ]; echo $?)
done

# bench --quick --n 1024: every case's answer agrees with the benchmark's own double reference
# (written apart from the library: libm, a compensated sum), and every row has its read limit.
"$cli" bench --quick --json --n 1024 | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
cases = {(r["loss"], r["classes"]) for r in rows}
assert len(cases) == 15 and ("softmax_cross_entropy", 1000) in cases, cases
bad = [r for r in rows if not (r["rel_error"] < (1e-6 if r["dtype"] == "float32" else 1e-12)
                               and r["read_limit_melem_per_s"] > 0 and r["melem_per_s"] > 0)]
assert not bad, bad'
check "bench --quick --n 1024: every case near its reference, with a read limit" $?

echo "cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
