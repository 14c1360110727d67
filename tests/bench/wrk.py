#!/usr/bin/env python3
"""make bench: wrk against a maskloss-server started here on a free port.

usage: wrk.py SERVER [--duration S] [--runs N] [--connections C] [--threads T]

Scenarios, each run N times side by side in one session (medians reported, min-max in brackets):
  healthz  GET /healthz (the HTTP layer alone)
  note     POST /v1/loss with the note's 4x5 masked example (examples/masked-mean.json)
  n16384   POST /v1/loss, sigmoid cross-entropy on a 128x128 float32 request with a mask
Every response must be 2xx: wrk's "Non-2xx" count fails the run.
"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from server import Server  # noqa: E402


def seconds(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def run_wrk(url, args, body_file=None):
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url]
    env = dict(os.environ)
    if body_file:
        cmd[1:1] = ["-s", os.path.join(HERE, "post.lua")]
        env["BODY_FILE"] = body_file
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = seconds(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = seconds(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        sys.exit(f"wrk reported failures:\n{out}")
    return rps, p50, p99


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp()
    rng = random.Random(1)
    big = {"loss": "sigmoid_cross_entropy",
           "labels": [[rng.randint(0, 1) for _ in range(128)] for _ in range(128)],
           "logits": [[round(rng.uniform(-4, 4), 4) for _ in range(128)] for _ in range(128)],
           "mask": [[rng.randint(0, 1) for _ in range(128)] for _ in range(128)]}
    big_file = os.path.join(tmp, "n16384.json")
    with open(big_file, "w") as f:
        json.dump(big, f)
    note_file = os.path.join(ROOT, "examples", "masked-mean.json")
    scenarios = [("healthz", "/healthz", None), ("note", "/v1/loss", note_file),
                 ("n16384", "/v1/loss", big_file)]

    with Server(args.server) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        print(f"{srv.banner.strip()}")
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency, "
              f"{args.runs} runs per scenario, interleaved")
        results = {name: [] for name, _, _ in scenarios}
        for run in range(args.runs):
            for name, path, body in scenarios:
                results[name].append(run_wrk(base + path, args, body))
        print(f"{'scenario':10} {'req/s median (min-max)':>28} {'p50 median':>12} {'p99 median':>12}")
        for name, _, _ in scenarios:
            rps = [r[0] for r in results[name]]
            p50 = statistics.median(r[1] for r in results[name])
            p99 = statistics.median(r[2] for r in results[name])
            print(f"{name:10} {statistics.median(rps):>12,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"
                  f" {p50 * 1e3:>10.2f}ms {p99 * 1e3:>10.2f}ms")
        rc = srv.stop()
        if rc != 0:
            sys.exit(f"server exit status {rc}")


if __name__ == "__main__":
    main()
