#!/usr/bin/env python3
"""make bench: the monitors against plain /v1/loss, on one durable server started here.

usage: monitors.py SERVER [--duration S] [--runs N] [--connections C] [--threads T]
                          [--queries N] [--fill-threads N] [--per-hour N]

The server keeps its state in a SQLite file in a temporary directory (a real file, every
answer 200 committed to disk), not :memory:. Each comparison runs both sides in the same run,
interleaved, N times; medians (min-max). What the monitors counted is checked against what
was sent (GET /v1/monitors/{name}, /metrics), so the figures are of real work.

  observe   POST /v1/monitors/note/observe, the note's 4x5 example (examples/masked-mean.json
            without loss and dtype, which come from the monitor: sigmoid_cross_entropy,
            float64, num_classes 5), wrk -t2 -c64, against POST /v1/loss of the example itself.
            When perf can count the server's fsync/fdatasync calls, observations per sync: the
            group commit's batch.
  1000x1000 one float32 {"shape", "dtype", "b64"} request at a time (wrk -t1 -c1): observe on
            a monitor with num_classes 1000 against /v1/loss with the same tensors.
  query     GET /v1/monitors/month over 30 days of buckets with 1000 classes: a minute bucket
            for each of the last 48 hours' minutes, then hour buckets back to the retention
            (30d); filled by a thread pool of persistent connections, then N sequential GETs.
"""
import argparse
import base64
import concurrent.futures
import json
import math
import os
import re
import signal
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
from wrk import run_wrk  # noqa: E402


def call(srv, method, path, body=None, want=(200,)):
    status, _, payload = srv.request(method, path, body,
                                     {"Content-Type": "application/json"} if body else None)
    if status not in want:
        sys.exit(f"{method} {path}: HTTP {status} {payload}")
    return payload


def metric(srv, name, monitor):
    _, text = srv.metrics()
    m = re.search(r'^%s\{monitor="%s"[^}]*\} (\S+)$' % (name, monitor), text, re.M)
    return float(m.group(1)) if m else 0.0


def b64(a):
    return {"shape": list(a.shape), "dtype": "float32",
            "b64": base64.b64encode(a.astype(np.float32).tobytes()).decode()}


def fmt_rps(rows):
    rps = [r[0] for r in rows]
    return f"{statistics.median(rps):>9,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"


def ms(seconds):
    return f"{seconds * 1e3:.2f} ms"


class SyncCounter:
    """fsync + fdatasync calls of one process while it runs (perf's syscall tracepoints);
    None when perf cannot count them here (not root, no tracefs)."""

    EVENTS = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync"

    def __init__(self, pid):
        try:
            self.proc = subprocess.Popen(["perf", "stat", "-x,", "-e", self.EVENTS, "-p", str(pid)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         text=True)
        except OSError:
            self.proc = None
        time.sleep(0.3)  # perf attaches before the load starts

    def stop(self):
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGINT)
        err = self.proc.communicate(timeout=30)[1]
        counts = [int(f[0]) for f in (line.split(",") for line in err.splitlines())
                  if len(f) > 2 and f[2].startswith("syscalls:") and f[0].isdigit()]
        return sum(counts) if len(counts) == 2 else None


def observe_small(srv, base, args, tmp):
    note = json.load(open(os.path.join(ROOT, "examples", "masked-mean.json")))
    loss_file = os.path.join(ROOT, "examples", "masked-mean.json")
    observe_file = os.path.join(tmp, "note-observe.json")
    with open(observe_file, "w") as f:
        json.dump({k: v for k, v in note.items() if k not in ("loss", "dtype", "reduction")}, f)
    call(srv, "PUT", "/v1/monitors/note",
         {"loss": note["loss"], "dtype": note["dtype"], "num_classes": 5}, (201,))
    # The same loss both ways, or the comparison is of different work.
    want = call(srv, "POST", "/v1/loss", open(loss_file).read())["loss"]
    got = call(srv, "POST", "/v1/monitors/note/observe", open(observe_file).read())["loss"]
    if got != want:
        sys.exit(f"observe answered loss {got}, /v1/loss {want}")

    print(f"\n== observe: the note's 4x5 example, wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration}s, {args.runs} runs each, interleaved")
    res = {"loss": [], "observe": []}
    syncs = []
    for _ in range(args.runs):
        res["loss"].append(run_wrk(base + "/v1/loss", args, loss_file))
        before = metric(srv, "maskloss_monitor_observations_total", "note")
        counter = SyncCounter(srv.proc.pid)
        res["observe"].append(run_wrk(base + "/v1/monitors/note/observe", args, observe_file))
        n_sync = counter.stop()
        n_obs = metric(srv, "maskloss_monitor_observations_total", "note") - before
        syncs.append((n_obs, n_sync))
    print(f"{'path':32} {'req/s median (min-max)':>28} {'p50':>10} {'p99':>10}")
    for name, label in (("loss", "POST /v1/loss"), ("observe", "POST /v1/monitors/note/observe")):
        rows = res[name]
        print(f"{label:32} {fmt_rps(rows):>28} {ms(statistics.median(r[1] for r in rows)):>10}"
              f" {ms(statistics.median(r[2] for r in rows)):>10}")
    ratio = statistics.median(r[0] for r in res["observe"]) / statistics.median(
        r[0] for r in res["loss"])
    print(f"observe / loss: {ratio:.2f} of the requests/s (target >= 0.50)")

    # Every answered observation was counted once, and is in memory and the store alike.
    shown = call(srv, "GET", "/v1/monitors/note")["total"]["observations"]
    counted = metric(srv, "maskloss_monitor_observations_total", "note")
    # wrk's req/s is its count over its elapsed time (about the duration): not exact, and the
    # requests in flight when it stops are counted by the server but not by wrk.
    answered = 1 + sum(r[0] * args.duration for r in res["observe"])
    if shown != counted or not answered * 0.98 <= counted <= answered * 1.02 + \
            args.runs * args.connections:
        sys.exit(f"monitor note shows {shown} observations, /metrics {counted}, wrk answered "
                 f"about {answered:.0f}")
    if all(s for _, s in syncs):
        per = [n / s for n, s in syncs]
        print(f"group commit: {statistics.median(per):.1f} observations per fsync/fdatasync "
              f"(median; {statistics.median(s for _, s in syncs) / args.duration:,.0f} syncs/s), "
              f"{int(counted):,} observations counted in all")
    else:
        print(f"{int(counted):,} observations counted (perf cannot count the server's syncs here)")
    return ratio


def observe_large(srv, base, args, tmp):
    # The data of wrk.py's large requests (same generator, same draws).
    rng = np.random.default_rng(1)
    y = (rng.random((1000, 1000)) < 0.3).astype(np.float32)
    x = rng.normal(0, 2, (1000, 1000)).astype(np.float32)
    m = (rng.random((1000, 1000)) < 0.5).astype(np.float32)
    tensors = {"labels": b64(y), "logits": b64(x), "mask": b64(m)}
    loss_file = os.path.join(tmp, "large-loss.json")
    observe_file = os.path.join(tmp, "large-observe.json")
    with open(loss_file, "w") as f:
        json.dump({"loss": "sigmoid_cross_entropy", **tensors}, f)
    with open(observe_file, "w") as f:
        json.dump(tensors, f)
    del tensors
    call(srv, "PUT", "/v1/monitors/large", {"loss": "sigmoid_cross_entropy", "num_classes": 1000},
         (201,))
    want = call(srv, "POST", "/v1/loss", open(loss_file).read())["loss"]
    got = call(srv, "POST", "/v1/monitors/large/observe", open(observe_file).read())["loss"]
    if got != want:
        sys.exit(f"observe answered loss {got}, /v1/loss {want}")

    print(f"\n== 1000x1000 float32 b64 ({os.path.getsize(observe_file) / 1e6:.1f} MB), "
          f"one at a time: wrk -t1 -c1 -d{args.duration}s, {args.runs} runs each, interleaved")
    res = {"loss": [], "observe": []}
    for _ in range(args.runs):
        res["loss"].append(run_wrk(base + "/v1/loss", args, loss_file, 1, 1))
        res["observe"].append(run_wrk(base + "/v1/monitors/large/observe", args, observe_file,
                                      1, 1))
    # One request at a time: wrk's latency is the time per request (its req/s has 2 decimals).
    print(f"{'path':32} {'req/s median':>12} {'p50':>10} {'p99':>10}")
    per = {}
    for name, label in (("loss", "POST /v1/loss"), ("observe", "POST /v1/monitors/large/observe")):
        rows = res[name]
        per[name] = statistics.median(r[1] for r in rows)
        print(f"{label:32} {statistics.median(r[0] for r in rows):>12.2f} {ms(per[name]):>10}"
              f" {ms(statistics.median(r[2] for r in rows)):>10}")
    ratio = per["observe"] / per["loss"]
    print(f"observe / loss: {ratio:.2f}x the time per request, p50 (target <= 1.5)")
    shown = call(srv, "GET", "/v1/monitors/large")["total"]
    if shown["elements"] != shown["observations"] * 1e6 or shown["observations"] < 2:
        sys.exit(f"monitor large: {shown['observations']} observations, "
                 f"{shown['elements']} elements")
    return ratio


def fill_times(now, per_hour):
    """Event times: one in each minute of the last 48 h, per_hour in each older hour whose
    bucket lies within the retention (30 d)."""
    minute = math.floor(now / 60) * 60
    times = [minute - i * 60 + 30 for i in range(48 * 60)]
    hour = math.floor(now / 3600) * 3600
    for h in range(48, 30 * 24 - 1):
        times += [hour - h * 3600 + 60 + k * (3600 - 120) / per_hour for k in range(per_hour)]
    return times


def query(srv, base, args):
    call(srv, "PUT", "/v1/monitors/month",
         {"loss": "sigmoid_cross_entropy", "num_classes": 1000, "retention": "30d"}, (201,))
    rng = np.random.default_rng(2)
    tensors = json.dumps({"labels": b64((rng.random((1, 1000)) < 0.3)),
                          "logits": b64(rng.normal(0, 2, (1, 1000))),
                          "mask": b64((rng.random((1, 1000)) < 0.5))})
    times = fill_times(time.time(), args.per_hour)
    local = threading.local()
    headers = {"Content-Type": "application/json"}

    def observe(t):
        if not hasattr(local, "conn"):
            local.conn = srv.connect()
        body = tensors[:-1] + ', "time": %.3f}' % t
        status, _, payload = exchange(local.conn, "POST", "/v1/monitors/month/observe", body,
                                      headers)
        if status != 200:
            raise RuntimeError(f"observe at time {t}: HTTP {status} {payload}")

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.fill_threads) as pool:
        for _ in pool.map(observe, times):
            pass
    fill = time.monotonic() - t0
    got = call(srv, "GET", "/v1/monitors/month")
    if got["total"]["observations"] != len(times) or len(got["total"]["per_class"]) != 1000:
        sys.exit(f"monitor month shows {got['total']['observations']} observations, "
                 f"{len(times)} sent")
    now = got["now"]
    hours = call(srv, "GET", f"/v1/monitors/month/series?step=1h&from={now - 30 * 86400}"
                 f"&to={now + 60}")["points"]
    minutes = call(srv, "GET", f"/v1/monitors/month/series?step=1m&from={now - 2 * 86400}"
                   f"&to={now + 60}")["points"]
    print(f"\n== query: GET /v1/monitors/month, 1000 classes, {len(times):,} observations over "
          f"30 days ({len(minutes):,} minutes of the last 48 h, {len(hours)} hours)")
    print(f"fill: {fill:.1f} s, {len(times) / fill:,.0f} observations/s "
          f"({args.fill_threads} threads, one persistent connection each, [1,1000] b64)")

    conn = srv.connect()
    lat = []
    size = 0
    for _ in range(args.queries):
        t = time.perf_counter()
        conn.request("GET", "/v1/monitors/month")
        resp = conn.getresponse()
        data = resp.read()
        lat.append(time.perf_counter() - t)
        if resp.status != 200:
            sys.exit(f"GET /v1/monitors/month: HTTP {resp.status}")
        size = len(data)
    conn.close()
    lat.sort()
    p99 = lat[math.ceil(0.99 * len(lat)) - 1]
    print(f"{args.queries} sequential GETs, one connection, {size / 1e3:.0f} kB answer: "
          f"p50 {ms(statistics.median(lat))}, p99 {ms(p99)}, max {ms(lat[-1])} "
          f"(target p99 <= 50 ms)")
    return p99


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--fill-threads", type=int, default=16)
    ap.add_argument("--per-hour", type=int, default=2)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp()
    state = os.path.join(tmp, "state.db")
    # No limit per client address: wrk's 64 connections are all from 127.0.0.1, and the server
    # may still be closing them when the next probe or run connects (at 64 it refused those).
    with Server(args.server, "--state", state, "--max-connections-per-ip", "0") as srv:
        base = f"http://127.0.0.1:{srv.port}"
        print(f"\nmonitors: {srv.banner.strip()}, --state {state}")
        try:
            observe_small(srv, base, args, tmp)
            observe_large(srv, base, args, tmp)
            query(srv, base, args)
        except BaseException:
            print(f"the server's log (end):\n{srv.log()[-3000:]}", file=sys.stderr)
            raise
        rc = srv.stop()
        if rc != 0:
            sys.exit(f"server exit status {rc}")
    print(f"state file: {os.path.getsize(state) / 1e6:.0f} MB")
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
