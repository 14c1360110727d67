#!/usr/bin/env python3
"""Instructions a request costs the server, counted by valgrind's callgrind: builds side by side.

usage: instructions.py SERVER [SERVER ...] [--requests 500,2500] [--runs 3] [--path /v1/loss]

Each server runs under `valgrind --tool=callgrind` (every thread counted) with --workers 1
--http-threads 1 and an in-memory state, takes the note's 4x5 example on one keep-alive
connection, N requests for each N of --requests, and stops on SIGTERM. The cost of a request
is the difference of the totals divided by the difference of the counts, so start-up and
shutdown cancel out. Runs interleave the servers; the median is printed, with the spread.

Instruction counts do not depend on the other load of the machine, unlike requests/s: a change
that adds nothing to a route shows the same count within a fraction of a percent (the idle
threads' waits differ a little between runs). valgrind comes with the machine; nothing else
is needed.
"""
import argparse
import glob
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NOTE = os.path.join(ROOT, "examples", "masked-mean.json")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def total_instructions(server, n, path, body, tmp):
    """The instructions callgrind counted in server's threads for n requests (and start, stop)."""
    out = os.path.join(tmp, f"cg.{os.getpid()}.{time.monotonic_ns()}")
    port = free_port()
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", server,
         "--bind", "127.0.0.1", "--port", str(port), "--workers", "1", "--http-threads", "1",
         "--state", ":memory:"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("GET", "/readyz")
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{server} did not start under valgrind")
            time.sleep(0.2)
        for _ in range(n):
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise SystemExit(f"{server}: {path} answered {resp.status}: {data[:200]!r}")
        conn.close()
        proc.send_signal(signal.SIGTERM)
        if proc.wait(timeout=120) != 0:
            raise SystemExit(f"{server} exited {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    total = 0
    files = glob.glob(out + "*")
    for f in files:
        with open(f) as fh:
            for line in fh:
                if line.startswith(("summary:", "totals:")):
                    total += int(line.split()[1])
                    break
        os.unlink(f)
    if not files or not total:
        raise SystemExit(f"{server}: callgrind wrote no totals")
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("servers", nargs="+")
    ap.add_argument("--requests", default="500,2500")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--path", default="/v1/loss")
    args = ap.parse_args()
    low, high = (int(x) for x in args.requests.split(","))
    with open(NOTE, "rb") as f:
        body = f.read()
    json.loads(body)
    per = {s: [] for s in args.servers}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for s in args.servers:
                a = total_instructions(s, low, args.path, body, tmp)
                b = total_instructions(s, high, args.path, body, tmp)
                per[s].append((b - a) / (high - low))
                print(f"run {run + 1}: {s}: {per[s][-1]:,.0f} instructions a request", flush=True)
    first = statistics.median(per[args.servers[0]])
    print(f"\n{args.path}, the note's example, {low} and {high} requests, {args.runs} runs (median, min-max):")
    for s in args.servers:
        m = statistics.median(per[s])
        print(f"  {s}: {m:,.0f} ({min(per[s]):,.0f}-{max(per[s]):,.0f}), {m / first:.4f} of the first")


if __name__ == "__main__":
    sys.exit(main())
