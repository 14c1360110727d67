#!/usr/bin/env python3
"""make bench: late labels (issue 13) on 1M stored predictions, one durable server started here.

usage: late.py SERVER [--predictions N] [--rows R] [--load-connections L] [--bodies K]
                      [--labels M] [--duration S] [--runs N] [--connections C] [--threads T]
                      [--state-dir DIR] [--server-args "ARGS"]

The server keeps its state in a SQLite file in a temporary directory on a disk (not tmpfs:
every answer 200 is committed and synced, as in production); the directory and its file
system are printed.

  load    PUT a monitor (sigmoid_cross_entropy, num_classes 100, one slice key), then POST
          /v1/monitors/late/predictions: N predictions (default 1,000,000) of 100 float32 logits,
          R rows a request as a {"b64", "shape", "dtype"} tensor, L persistent connections.
          Predictions/s, and the state file (db + -wal) per stored prediction.
  labels  K pre-generated bodies (written to files) of M sparse labels each
          ({"id", "class", "value": 0|1}, ids drawn among the stored ones, classes among 100),
          sent in turn by wrk (labels.lua) to POST /v1/monitors/late/labels: -tT -cC, N runs
          (median, min-max), then one connection (-t1 -c1, one run: the latency of one request
          alone). labels/s = requests/s x M. Every answer is checked by the script (200,
          applied + replaced + unknown = M), and what the monitor shows afterwards against
          what the answers said. The bodies are sent again and again, so after the first pass
          through them most labels replace an earlier one (the counts are printed).
The server's peak memory (VmHWM) after the load and after the labels.
"""
import argparse
import base64
import concurrent.futures
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from server import Server, exchange  # noqa: E402
from wrk import seconds, vm_hwm  # noqa: E402

CLASSES = 100
REGIONS = ("eu", "us", "asia", "africa")


def call(srv, method, path, body=None, want=(200,)):
    status, _, payload = srv.request(method, path, body,
                                     {"Content-Type": "application/json"} if body else None)
    if status not in want:
        sys.exit(f"{method} {path}: HTTP {status} {payload}")
    return payload


def metric(srv, name):
    _, text = srv.metrics()
    m = re.search(r"^%s (\S+)$" % name, text, re.M)
    return float(m.group(1)) if m else 0.0


def fs_type(path):
    """The file system type of the mount holding path (the longest mount point above it)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            point = fields[1].replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and \
                    len(point) >= len(best):
                best, kind = point, fields[2]
    return kind


def state_dir(args):
    """A directory on a disk: a state in memory (tmpfs) would leave out the fsyncs measured."""
    if args.state_dir:
        return args.state_dir
    for d in (tempfile.gettempdir(), "/var/tmp", os.path.dirname(os.path.abspath(args.server))):
        if os.path.isdir(d) and fs_type(d) not in ("tmpfs", "ramfs"):
            return d
    sys.exit("no directory on a disk for the state: give --state-dir")


def state_bytes(state):
    """(db, -wal) sizes in bytes."""
    return tuple(os.path.getsize(p) if os.path.exists(p) else 0 for p in (state, state + "-wal"))


def ident(i):
    return "p%07d" % i


def load(srv, args):
    """Stores args.predictions predictions: (seconds, predictions/s)."""
    n, rows = args.predictions, args.rows
    chunks = [(start, min(rows, n - start)) for start in range(0, n, rows)]
    local = threading.local()

    def send(chunk):
        start, k = chunk
        if not hasattr(local, "conn"):
            local.conn = srv.connect()
        logits = np.random.default_rng(start).normal(0, 2, (k, CLASSES)).astype(np.float32)
        ids = ",".join('"%s"' % ident(i) for i in range(start, start + k))
        body = ('{"ids":[%s],"logits":{"shape":[%d,%d],"dtype":"float32","b64":"%s"},'
                '"slice":{"region":"%s"}}' % (ids, k, CLASSES,
                                              base64.b64encode(logits.tobytes()).decode(),
                                              REGIONS[start // rows % len(REGIONS)]))
        status, _, payload = exchange(local.conn, "POST", "/v1/monitors/late/predictions", body,
                                      {"Content-Type": "application/json"})
        if status != 200 or payload["stored"] != k or payload["refused"]:
            raise RuntimeError(f"predictions {start}..{start + k}: HTTP {status} "
                               f"{str(payload)[:500]}")

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.load_connections) as pool:
        for _ in pool.map(send, chunks):
            pass
    took = time.monotonic() - t0
    return took, n / took


def label_bodies(args, tmp):
    """Writes the label bodies, 1.json .. K.json: their directory."""
    d = os.path.join(tmp, "labels")
    os.makedirs(d)
    rng = np.random.default_rng(13)
    for b in range(1, args.bodies + 1):
        ids = rng.integers(0, args.predictions, args.labels)
        classes = rng.integers(0, CLASSES, args.labels)
        values = rng.integers(0, 2, args.labels)
        entries = ",".join('{"id":"%s","class":%d,"value":%d}' % (ident(i), c, v)
                           for i, c, v in zip(ids.tolist(), classes.tolist(), values.tolist()))
        with open(os.path.join(d, f"{b}.json"), "w") as f:
            f.write('{"labels":[%s]}' % entries)
    return d


def run_wrk(url, args, bodies, threads, connections):
    """One wrk run: (requests/s, p50 s, p99 s, {applied, replaced, unknown, bad}, requests)."""
    # A timeout above wrk's 2 s: a request that waits behind 63 others is counted, not dropped.
    cmd = ["wrk", "-s", os.path.join(HERE, "labels.lua"), f"-t{threads}", f"-c{connections}",
           f"-d{args.duration}s", "--timeout", "30s", "--latency", url]
    env = dict(os.environ, BODY_DIR=bodies, BODIES=str(args.bodies), LABELS=str(args.labels))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = seconds(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = seconds(re.search(r"\s99%\s+(\S+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    counts = dict((k, int(v)) for k, v in re.findall(r"(applied|replaced|unknown|bad) (\d+)",
                                                      re.search(r"^labels: .*$", out,
                                                                re.M).group(0)))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors or counts["bad"] or counts["unknown"]:
        sys.exit(f"wrk reported failures:\n{out}")
    return rps, p50, p99, counts, requests


def labels(srv, args, tmp):
    base = f"http://127.0.0.1:{srv.port}/v1/monitors/late/labels"
    t0 = time.monotonic()
    bodies = label_bodies(args, tmp)
    made = time.monotonic() - t0
    size = os.path.getsize(os.path.join(bodies, "1.json"))
    # A few answers by hand first: 200, every entry counted, every id known.
    applied = replaced = 0
    for b in (1, 2, 1):
        got = call(srv, "POST", "/v1/monitors/late/labels",
                   open(os.path.join(bodies, f"{b}.json")).read())
        if got["applied"] + got["replaced"] + got["unknown"] != args.labels or got["unknown"] \
                or got["duplicate"]:
            sys.exit(f"labels body {b}: {got}")
        applied += got["applied"]
        replaced += got["replaced"]
    if replaced < args.labels:  # body 1 again: each of its entries replaces itself
        sys.exit(f"body 1 sent twice replaced only {replaced} labels")

    def settle():
        # The requests wrk left in flight are still queued for the writer when it stops: one
        # more answer, queued behind them, and the next run starts on an idle server.
        time.sleep(0.2)
        got = call(srv, "POST", "/v1/monitors/late/labels",
                   open(os.path.join(bodies, "1.json")).read())
        return got["applied"], got["replaced"]

    many = []
    commits = 0
    for _ in range(args.runs):
        commits0 = metric(srv, "maskloss_state_commits_total")
        many.append(run_wrk(base, args, bodies, args.threads, args.connections))
        commits += metric(srv, "maskloss_state_commits_total") - commits0
        a, r = settle()
        applied += a
        replaced += r
    one = run_wrk(base, args, bodies, 1, 1)
    for r in many + [one]:
        applied += r[3]["applied"]
        replaced += r[3]["replaced"]
    # What the monitor holds against what the answers said: every new (id, class) counted once.
    # Requests in flight when wrk stops are applied but not counted by wrk (at most C of them).
    held = call(srv, "GET", "/v1/monitors/late")["labels"]["labelled_positions"]
    slack = (args.runs * args.connections + 1) * args.labels
    if not applied <= held <= applied + slack:
        sys.exit(f"the monitor holds {held} labelled positions, the answers applied {applied}")
    return {"many": many, "one": one, "size": size, "made": made, "held": held,
            "applied": applied, "replaced": replaced,
            "per_commit": sum(r[4] for r in many) / commits if commits else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--predictions", type=int, default=1000000)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--load-connections", type=int, default=4)
    ap.add_argument("--bodies", type=int, default=200)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--state-dir")
    ap.add_argument("--server-args", default="",
                    help="more arguments of the server (default none: its defaults are measured)")
    args = ap.parse_args()

    where = state_dir(args)
    tmp = tempfile.mkdtemp(prefix="maskloss-late-", dir=where)
    state = os.path.join(tmp, "state.db")
    try:
        # No limit per client address: wrk's connections all come from 127.0.0.1.
        with Server(args.server, "--state", state, "--max-connections-per-ip", "0",
                    *args.server_args.split()) as srv:
            print(f"\nlate labels: {srv.banner.strip()}, --state in {where} ({fs_type(tmp)})"
              + (f", server arguments {args.server_args}" if args.server_args else ""))
            try:
                call(srv, "PUT", "/v1/monitors/late",
                     {"loss": "sigmoid_cross_entropy", "num_classes": CLASSES,
                      "slices": ["region"]}, (201,))
                took, pps = load(srv, args)
                shown = call(srv, "GET", "/v1/monitors/late")
                if shown["labels"]["predictions"] != args.predictions or \
                        shown["total"]["samples"] != args.predictions:
                    sys.exit(f"the monitor holds {shown['labels']['predictions']} predictions "
                             f"({shown['total']['samples']} samples), {args.predictions} sent")
                db, wal = state_bytes(state)
                size = db + wal
                hwm_load = vm_hwm(srv.proc.pid)
                print(f"\n== load: {args.predictions:,} predictions of {CLASSES} float32 logits, "
                      f"{args.rows} a request (b64), {args.load_connections} connections")
                print(f"{took:.1f} s, {pps:,.0f} predictions/s; state file {size / 1e6:,.0f} MB "
                      f"(db {db / 1e6:,.0f} + -wal {wal / 1e6:,.0f}): "
                      f"{size / args.predictions:,.0f} bytes per stored prediction "
                      f"({CLASSES * 4} of logits); server peak RSS {hwm_load / 2**20:,.0f} MiB")

                res = labels(srv, args, tmp)
                hwm_labels = vm_hwm(srv.proc.pid)
            except BaseException:
                print(f"the server's log (end):\n{srv.log()[-3000:]}", file=sys.stderr)
                raise
            rc = srv.stop()
            if rc != 0:
                sys.exit(f"server exit status {rc}")
        end_size = sum(state_bytes(state))
    finally:
        for root, dirs, files in os.walk(tmp, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(tmp)

    many, one = res["many"], res["one"]
    rps = [r[0] for r in many]
    print(f"\n== labels: POST /v1/monitors/late/labels, {args.labels} sparse labels a request "
          f"({res['size'] / 1e3:.0f} kB), {args.bodies} bodies in turn, wrk -d{args.duration}s")
    print(f"{'wrk':14} {'labels/s median (min-max)':>34} {'req/s':>8} {'p50':>10} {'p99':>10}")
    print(f"{f'-t{args.threads} -c{args.connections}, {args.runs} runs':14} "
          f"{statistics.median(rps) * args.labels:>13,.0f} ({min(rps) * args.labels:,.0f}-"
          f"{max(rps) * args.labels:,.0f}) {statistics.median(rps):>8,.0f} "
          f"{statistics.median(r[1] for r in many) * 1e3:>7.1f} ms "
          f"{statistics.median(r[2] for r in many) * 1e3:>7.1f} ms")
    print(f"{'-t1 -c1, 1 run':14} {one[0] * args.labels:>34,.0f} {one[0]:>8,.0f} "
          f"{one[1] * 1e3:>7.1f} ms {one[2] * 1e3:>7.1f} ms")
    # The first run stores mostly new labels (rows inserted), the later ones mostly replace them.
    print(f"runs at -c{args.connections}: " + ", ".join(
        f"{r[0] * args.labels:,.0f} labels/s ({r[3]['applied'] / (r[4] * args.labels):.0%} new)"
        for r in many))
    print(f"labels/s at -c{args.connections}: {statistics.median(rps) * args.labels:,.0f} "
          f"(target >= 200,000); non-2xx 0, every answer applied + replaced + unknown = "
          f"{args.labels}, unknown 0")
    per_commit = f"{res['per_commit']:.1f}" if res["per_commit"] else "?"
    print(f"answers: {res['applied']:,} labels applied (new), {res['replaced']:,} replaced; "
          f"the monitor holds {res['held']:,} labelled positions; {per_commit} label requests "
          f"per commit at -c{args.connections}")
    print(f"server peak RSS {hwm_labels / 2**20:,.0f} MiB after the labels; state file "
          f"{end_size / 1e6:,.0f} MB at the end (db + -wal); bodies made in {res['made']:.1f} s")


if __name__ == "__main__":
    main()
