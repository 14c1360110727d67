#!/usr/bin/env python3
"""make bench: the monitors' state on SQLite against PostgreSQL, one replica and three.

usage: replicas.py SERVER [--duration S] [--runs N] [--connections C] [--threads T]
                          [--replicas R] [--predictions N] [--rows R] [--bodies K] [--labels M]
                          [--label-connections L] [--size-minutes N] [--size-predictions N]
                          [--mixes small,binary,observe,labels] [--state-dir DIR]

Three configurations, started here and measured in one run, interleaved (each mix on each
configuration in turn, N times; medians, min-max):
  sqlite x1   one server, --state a SQLite file on a disk (durable commits)
  pg x1       one server, --state a PostgreSQL database (tests/e2e/pg.py's throwaway cluster:
              fsync and synchronous_commit at their defaults, on the same disk)
  pg xR       R servers (default 3) on another database of the same cluster; wrk's threads
              spread over them (thread i to replica i mod R), as a balancer would
Every server has its defaults but --max-connections-per-ip 0 (wrk's connections all come from
127.0.0.1). The mixes:
  small    POST /v1/loss, the note's 4x5 example (examples/masked-mean.json), wrk -tT -cC
  binary   POST /v2/models/sigmoid_cross_entropy/infer, one 1000x1000 float32 masked sigmoid
           cross-entropy in binary tensors (12 MB; wrk.py's data), wrk -tR -cR: R clients each
           sending one request at a time
  observe  POST /v1/monitors/note/observe, the note's example with an "id" of its own per
           request (every one new: none may be answered duplicate), wrk -tT -cC
  labels   late labels (late.py's way): N predictions of 100 float32 logits stored first (b64,
           R rows a request, spread over the replicas; predictions/s printed), then K bodies of
           M sparse labels among them (default 100) sent in turn, wrk -tT -cL (default 12:
           PostgreSQL takes a request of labels in tenths of a second, and more connections
           only queue); labels/s = req/s x M
The rates are of answers 200 (wrk's count over its time). A write mix's 503s (a write refused
whole, which a client retries; those naming a deadlock between the replicas' transactions
counted apart) are printed, not failed; any other failure fails the run. After a write mix's
run, one more request to each replica waits for what wrk left queued, and the figures of the
run and that backlog together are divided by its time: the requests the servers answered 200
(served/s), their group commits (maskloss_state_commits_total), and on PostgreSQL the
database's write rate: transactions committed (pg_stat_database.xact_commit of the
configuration's database, which also counts the replicas' read-only polls, about one a second
each), rows written (n_tup_ins + n_tup_upd + n_tup_del of pg_stat_user_tables) and WAL
(pg_current_wal_lsn()), sampled once the statistics are flushed. Afterwards every replica's GET
of each monitor must agree with the others, with the sum of the replicas' /metrics counters and
with what the answers said (replicas.lua checks each answer).
Then the sizes, from pg_total_relation_size (table, TOAST, indexes) after a known load on a
database and server of their own: bytes per stored prediction and per label (a monitor of
their own: --size-predictions predictions, 4 new labels each), per bucket row of monitors of
0, 100 and 1000 classes (one observation in each of --size-minutes minutes, a quarter of them
for 1000 classes, every class weighted); per idempotency id from the pg x1 database.
The machine's load average is printed: its cores are shared; quote the ratios.
"""
import argparse
import base64
import concurrent.futures
import json
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
from pg import Postgres  # noqa: E402
from late import CLASSES, REGIONS, fs_type, ident, label_bodies, state_dir  # noqa: E402
from wrk import seconds  # noqa: E402

MIXES = ("small", "binary", "observe", "labels")
WRITES = ("observe", "labels")
# The servers' own count of a write mix's answers 200 (/metrics), over wrk's run and its backlog.
SERVED = {"observe": '{route="/v1/monitors/{name}/observe",code="200"}',
          "labels": '{route="/v1/monitors/{name}/labels",code="200"}'}


def call(srv, method, path, body=None, want=(200,)):
    status, _, payload = srv.request(method, path, body,
                                     {"Content-Type": "application/json"} if body else None)
    if status not in want:
        sys.exit(f"{method} {path} on :{srv.port}: HTTP {status} {payload}")
    return payload


def metric_sum(servers, name, labels=""):
    """The sum over servers of one series of /metrics (0 where absent)."""
    total = 0.0
    for srv in servers:
        _, text = srv.metrics()
        m = re.search(r"^%s%s (\S+)$" % (name, re.escape(labels)), text, re.M)
        total += float(m.group(1)) if m else 0.0
    return total


class Config:
    def __init__(self, name, servers, db=None, state=None):
        self.name, self.servers, self.db, self.state = name, servers, db, state

    @property
    def addrs(self):
        return ",".join(f"127.0.0.1:{s.port}" for s in self.servers)


# ---- PostgreSQL's figures ------------------------------------------------------------------------

def pg_sample(pg, db):
    """(commits, rows written, WAL bytes) so far, of database db (WAL: the cluster's)."""
    out = pg.psql(f"SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
                  f"FROM pg_stat_database WHERE datname = '{db}'", db="postgres")
    commits, wal = (int(x) for x in out.split("|"))
    rows = pg.psql("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                   "FROM pg_stat_user_tables", db=db)
    return commits, int(rows), wal


def relation_bytes(pg, db, table):
    """(pg_total_relation_size: table, TOAST and indexes; rows)."""
    out = pg.psql(f"SELECT pg_total_relation_size('{table}'), count(*) FROM {table}", db=db)
    return tuple(int(x) for x in out.split("|"))


# ---- the load ------------------------------------------------------------------------------------

def binary_request(tmp):
    """wrk.py's 1000x1000 binary v2 request (same generator, same draws): (file, header bytes)."""
    rng = np.random.default_rng(1)
    y = (rng.random((1000, 1000)) < 0.3).astype(np.float32)
    x = rng.normal(0, 2, (1000, 1000)).astype(np.float32)
    m = (rng.random((1000, 1000)) < 0.5).astype(np.float32)
    header = json.dumps({"inputs": [
        {"name": n, "shape": [1000, 1000], "datatype": "FP32",
         "parameters": {"binary_data_size": 4000000}} for n in ("LABELS", "LOGITS", "MASK")],
        "outputs": [{"name": "LOSS", "parameters": {"binary_data": True}}]}).encode()
    path = os.path.join(tmp, "binary")
    with open(path, "wb") as f:
        f.write(header + y.tobytes() + x.tobytes() + m.tobytes())
    return path, len(header)


def load_predictions(cfg, n, rows, monitor="late"):
    """Stores n predictions (ids ident(0..n-1)) in the monitor, rows a request, the requests
    spread over the replicas: predictions/s."""
    chunks = [(start, min(rows, n - start)) for start in range(0, n, rows)]
    local = threading.local()

    def send(chunk):
        start, k = chunk
        srv = cfg.servers[start // rows % len(cfg.servers)]
        conns = local.__dict__.setdefault("conns", {})
        if srv.port not in conns:
            conns[srv.port] = srv.connect()
        logits = np.random.default_rng(start).normal(0, 2, (k, CLASSES)).astype(np.float32)
        ids = ",".join('"%s"' % ident(i) for i in range(start, start + k))
        body = ('{"ids":[%s],"logits":{"shape":[%d,%d],"dtype":"float32","b64":"%s"},'
                '"slice":{"region":"%s"}}' % (ids, k, CLASSES,
                                              base64.b64encode(logits.tobytes()).decode(),
                                              REGIONS[start // rows % len(REGIONS)]))
        status, _, payload = exchange(conns[srv.port], "POST",
                                      f"/v1/monitors/{monitor}/predictions", body,
                                      {"Content-Type": "application/json"})
        if status != 200 or payload["stored"] != k or payload["refused"]:
            raise RuntimeError(f"predictions {start}..{start + k}: HTTP {status} "
                               f"{str(payload)[:500]}")

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in pool.map(send, chunks):
            pass
    return n / (time.monotonic() - t0)


def prepare(cfg, args):
    """The monitors note (observe) and late (labels) on the first replica, seen by every other
    (a GET waits for the replica's poll), and the predictions stored."""
    note = json.load(open(os.path.join(ROOT, "examples", "masked-mean.json")))
    first = cfg.servers[0]
    call(first, "PUT", "/v1/monitors/note",
         {"loss": note["loss"], "dtype": note["dtype"], "num_classes": 5}, (201,))
    call(first, "PUT", "/v1/monitors/late",
         {"loss": "sigmoid_cross_entropy", "num_classes": CLASSES, "slices": ["region"]}, (201,))
    for srv in cfg.servers:
        call(srv, "GET", "/v1/monitors/note")
        call(srv, "GET", "/v1/monitors/late")
    pps = load_predictions(cfg, args.predictions, args.rows)
    for srv in cfg.servers:
        held = call(srv, "GET", "/v1/monitors/late")["labels"]["predictions"]
        if held != args.predictions:
            sys.exit(f"{cfg.name}: replica :{srv.port} holds {held} predictions, "
                     f"{args.predictions} sent")
    return pps


def run_wrk(cfg, mix, path, args, threads, connections, env):
    """One wrk run: (answers 200 a second, p50 s, p99 s, the answers' counts). A 503 is
    tolerated on the write mixes only (counted, and reported: the write was refused whole)."""
    cmd = ["wrk", "-s", os.path.join(HERE, "replicas.lua"), f"-t{threads}", f"-c{connections}",
           f"-d{args.duration}s", "--timeout", "60s", "--latency",
           f"http://127.0.0.1:{cfg.servers[0].port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=dict(os.environ, ADDRS=cfg.addrs, **env)).stdout
    elapsed = seconds(re.search(r"\d+ requests in (\S+),", out).group(1))
    p50 = seconds(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = seconds(re.search(r"\s99%\s+(\S+)", out).group(1))
    counts = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)",
                                                re.search(r"^answers: .*$", out, re.M).group(0))}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if (int(non2xx.group(1)) if non2xx else 0) != counts["unavailable"] or \
            re.search(r"Socket errors", out) or counts["bad"] or counts["duplicate"] or \
            counts["unknown"] or (counts["unavailable"] and mix not in WRITES):
        sys.exit(f"{cfg.name}: wrk reported failures:\n{out}")
    return counts["ok"] / elapsed, p50, p99, counts


def drain(cfg, mix, run, bodies):
    """One more request of the mix to every replica, answered once the writer has worked
    through what wrk left queued (wrk stops counting at its duration, the servers do not):
    the next run starts on idle servers. The answers' counts."""
    path, env, _, _ = bodies[mix]
    if mix == "observe":
        template = open(env["BODY_FILE"]).read()
        body = [template.replace("@ID@", f"drain-{cfg.name.replace(' ', '')}-{run}-{i}")
                for i in range(len(cfg.servers))]
    else:
        body = [open(os.path.join(env["BODY_DIR"], "1.json")).read()] * len(cfg.servers)

    def one(i):
        srv = cfg.servers[i]
        for _ in range(10):  # (a 503 refused it whole: retried, as a client would)
            status, _, payload = srv.request("POST", path, body[i],
                                             {"Content-Type": "application/json"}, timeout=300)
            if status != 503:
                break
        if status != 200:
            sys.exit(f"{cfg.name}: {path} on :{srv.port}: HTTP {status} {payload}")
        return payload

    with concurrent.futures.ThreadPoolExecutor(len(cfg.servers)) as pool:
        got = list(pool.map(one, range(len(cfg.servers))))
    return {"ok": len(got), "applied": sum(g.get("applied", 0) for g in got)}


def measure(cfg, mix, run, args, pg, bodies):
    """One mix on one configuration: a dict of its figures."""
    path, env, threads, conns = bodies[mix]
    env = dict(env, RUN=f"{cfg.name.replace(' ', '')}-{run}")
    sample = pg is not None and cfg.db and mix in WRITES
    if mix in WRITES:
        commits0 = metric_sum(cfg.servers, "maskloss_state_commits_total")
    if sample:
        before = pg_sample(pg, cfg.db)
    t0 = time.monotonic()
    if mix in WRITES:
        served0 = metric_sum(cfg.servers, "maskloss_http_requests_total", SERVED[mix])
    rps, p50, p99, counts = run_wrk(cfg, mix, path, args, threads, conns, env)
    got = {"rps": rps, "p50": p50, "p99": p99, "counts": counts}
    if mix in WRITES:
        # The write rates are of the whole work: wrk's run and its queued requests after it.
        got["drain"] = drain(cfg, mix, run, bodies)
        span = time.monotonic() - t0
        got["span"] = span
        got["commits"] = (metric_sum(cfg.servers, "maskloss_state_commits_total") - commits0) \
            / span
        got["served"] = (metric_sum(cfg.servers, "maskloss_http_requests_total", SERVED[mix])
                         - served0) / span
    if sample:
        # A backend publishes its statistics when idle, at most once a second; the writers
        # poll every second: 1.5 s after the load, the run's are all in.
        time.sleep(1.5)
        after = pg_sample(pg, cfg.db)
        got["pg_commits"], got["pg_rows"], got["pg_wal"] = \
            ((a - b) / span for a, b in zip(after, before))
    if os.environ.get("REPLICAS_DEBUG"):
        print(f"  [{cfg.name} {mix} run {run}: {got}]", flush=True)
    return got


# ---- checks --------------------------------------------------------------------------------------

def check_observe(cfg, results, args):
    """Every replica answers the same global count; the replicas' counters sum to it; the
    answers' count within wrk's in-flight slack of it."""
    shown = [call(s, "GET", "/v1/monitors/note")["total"]["observations"] for s in cfg.servers]
    counted = metric_sum(cfg.servers, "maskloss_monitor_observations_total",
                         '{monitor="note"}')
    answered = sum(r["counts"]["ok"] + r["drain"]["ok"] for r in results)
    slack = args.runs * args.connections
    if len(set(shown)) != 1 or shown[0] != counted or not answered <= counted <= answered + slack:
        sys.exit(f"{cfg.name}: monitor note shows {shown} observations across the replicas, "
                 f"their /metrics {counted:.0f}, the answers {answered}")
    return int(counted)


def check_labels(cfg, results, args):
    held = [call(s, "GET", "/v1/monitors/late")["labels"]["labelled_positions"]
            for s in cfg.servers]
    applied = sum(r["counts"]["applied"] + r["drain"]["applied"] for r in results)
    slack = args.runs * args.label_connections * args.labels
    if len(set(held)) != 1 or not applied <= held[0] <= applied + slack:
        sys.exit(f"{cfg.name}: monitor late holds {held} labelled positions across the "
                 f"replicas, the answers applied {applied}")
    return int(held[0])


# ---- sizes ---------------------------------------------------------------------------------------

def bucket_sizes(srv, pg, db, args):
    """Bytes per bucket row of monitors of 0, 100 and 1000 classes: one observation in each of
    args.size_minutes minutes (every class weighted), pg_total_relation_size('buckets') before
    and after."""
    now = time.time()
    minute = int(now // 60) * 60
    out = []
    for classes in (0, 100, 1000):
        # (rows of 1000 classes are 40 kB: fewer of them measure as well)
        n = args.size_minutes // 4 if classes == 1000 else args.size_minutes
        times = [minute - i * 60 + 30 for i in range(1, n + 1)]
        name = f"size{classes}"
        cfg = {"loss": "sigmoid_cross_entropy"}
        if classes:
            cfg["num_classes"] = classes
        call(srv, "PUT", f"/v1/monitors/{name}", cfg, (201,))
        width = classes or 8
        rng = np.random.default_rng(classes)

        def b64(a):
            return {"shape": list(a.shape), "dtype": "float32",
                    "b64": base64.b64encode(a.astype(np.float32).tobytes()).decode()}
        body = json.dumps({"labels": b64(rng.random((2, width)) < 0.3),
                           "logits": b64(rng.normal(0, 2, (2, width))),
                           "mask": b64(rng.random((2, width)) + 0.5)})
        size0, rows0 = relation_bytes(pg, db, "buckets")
        local = threading.local()

        def observe(t):
            if not hasattr(local, "conn"):
                local.conn = srv.connect()
            status, _, payload = exchange(local.conn, "POST", f"/v1/monitors/{name}/observe",
                                          body[:-1] + ', "time": %.3f}' % t,
                                          {"Content-Type": "application/json"})
            if status != 200:
                raise RuntimeError(f"observe {name} at {t}: HTTP {status} {payload}")

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in pool.map(observe, times):
                pass
        took = time.monotonic() - t0
        size1, rows1 = relation_bytes(pg, db, "buckets")
        if rows1 - rows0 != len(times):
            sys.exit(f"{name}: {rows1 - rows0} bucket rows for {len(times)} minutes")
        out.append((classes, (size1 - size0) / (rows1 - rows0), len(times), len(times) / took))
    return out


def late_sizes(srv, pg, db, args):
    """Bytes per stored prediction and per label: args.size_predictions predictions of 100
    float32 logits in a monitor of their own, then 4 labels of distinct classes for each (1000
    a request, every label new), pg_total_relation_size of predictions and labels before and
    after each."""
    call(srv, "PUT", "/v1/monitors/sizelate",
         {"loss": "sigmoid_cross_entropy", "num_classes": CLASSES, "slices": ["region"]}, (201,))
    n = args.size_predictions
    p0, _ = relation_bytes(pg, db, "predictions")
    load_predictions(Config("size", [srv]), n, args.rows, "sizelate")
    p1, _ = relation_bytes(pg, db, "predictions")
    l0, rows0 = relation_bytes(pg, db, "labels")
    rng = np.random.default_rng(7)
    entries = []
    for i in range(n):
        for c in rng.choice(CLASSES, 4, replace=False).tolist():
            entries.append('{"id":"%s","class":%d,"value":%d}' % (ident(i), c, rng.integers(2)))
    conn = srv.connect(timeout=300)
    for k in range(0, len(entries), 1000):
        status, _, payload = exchange(conn, "POST", "/v1/monitors/sizelate/labels",
                                      '{"labels":[%s]}' % ",".join(entries[k:k + 1000]),
                                      {"Content-Type": "application/json"})
        if status != 200 or payload["applied"] != len(entries[k:k + 1000]):
            sys.exit(f"labels for the sizes: HTTP {status} {str(payload)[:300]}")
    conn.close()
    l1, rows1 = relation_bytes(pg, db, "labels")
    if rows1 - rows0 != len(entries):
        sys.exit(f"{rows1 - rows0} label rows for {len(entries)} labels")
    return (p1 - p0) / n, (l1 - l0) / len(entries), len(entries)


# ---- report --------------------------------------------------------------------------------------

def spread(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def report(configs, results, args, bodies, mixes):
    titles = {
        "small": "POST /v1/loss, the note's 4x5 example",
        "binary": "POST /v2/models/sigmoid_cross_entropy/infer, 1000x1000 float32 binary "
                  "(12 MB), each client one request at a time",
        "observe": "POST /v1/monitors/note/observe, the note's example, a new id each",
        "labels": f"POST /v1/monitors/late/labels, {args.labels} sparse labels a request "
                  f"(rates in labels/s)",
    }
    med = statistics.median
    for mix in mixes:
        _, _, threads, conns = bodies[mix]
        per = args.labels if mix == "labels" else 1
        unit = "labels/s" if mix == "labels" else "req/s"
        print(f"\n== {mix}: {titles[mix]}; wrk -t{threads} -c{conns} -d{args.duration}s, "
              f"{args.runs} runs")
        print(f"{'config':10} {unit + ' median (min-max)':>30} {'p50':>9} {'p99':>9} "
              f"{'vs sqlite':>9}" + (f" {'served/s':>10} {'commits/s':>9} {'req/commit':>10} "
                                     f"{'503s':>5}" if mix in WRITES else ""))
        base = med(r["rps"] for r in results[configs[0].name][mix])
        for cfg in configs:
            rows = results[cfg.name][mix]
            rps = [r["rps"] * per for r in rows]
            line = (f"{cfg.name:10} {spread(rps, lambda v: f'{v:,.0f}'):>30} "
                    f"{med(r['p50'] for r in rows) * 1e3:>7.1f}ms "
                    f"{med(r['p99'] for r in rows) * 1e3:>7.1f}ms "
                    f"{med(r['rps'] for r in rows) / base:>8.2f}x")
            if mix in WRITES:
                served = med(r["served"] for r in rows)
                commits = med(r["commits"] for r in rows)
                refused = sum(r["counts"]["unavailable"] for r in rows)
                answered = refused + sum(r["counts"]["ok"] for r in rows)
                deadlocks = sum(r["counts"]["deadlock"] for r in rows)
                line += (f" {served * per:>10,.0f} {commits:>9,.0f} "
                         f"{served / commits if commits else 0:>10.1f} {refused:>5}"
                         + (f" of {answered} in wrk's runs ({deadlocks} deadlocks)"
                            if refused else ""))
            print(line)
        if mix in WRITES:
            print("  PostgreSQL, per second of the run and its backlog (medians):")
            for cfg in (c for c in configs if c.db):
                rows = results[cfg.name][mix]
                print(f"  {cfg.name:8} {med(r['pg_commits'] for r in rows):>7,.0f} commits/s "
                      f"{med(r['pg_rows'] for r in rows):>9,.0f} rows/s "
                      f"{med(r['pg_wal'] for r in rows) / 1e6:>6.1f} MB/s of WAL; a request: "
                      f"{med(r['pg_rows'] / r['served'] for r in rows):.1f} rows, "
                      f"{med(r['pg_wal'] / r['served'] for r in rows) / 1e3:.1f} kB of WAL")
        if mix == "small" or mix == "observe":
            last = configs[-1]
            each = med(x["rps"] for x in results[last.name][mix]) / len(last.servers)
            print(f"  {last.name}: {each:,.0f} {unit} a replica, on the same {os.cpu_count()} "
                  f"cores")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=63)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--predictions", type=int, default=20000)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--bodies", type=int, default=50)
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--label-connections", type=int, default=12)
    ap.add_argument("--size-minutes", type=int, default=600)
    ap.add_argument("--size-predictions", type=int, default=5000)
    ap.add_argument("--mixes", default=",".join(MIXES),
                    help="the mixes to run, of " + ",".join(MIXES))
    ap.add_argument("--state-dir", help="where the SQLite file goes (default: a disk's temporary "
                    "directory, as late.py)")
    args = ap.parse_args()
    if args.threads % args.replicas:
        print(f"note: -t{args.threads} does not spread evenly over {args.replicas} replicas",
              file=sys.stderr)
    started = time.monotonic()
    mixes = [m for m in MIXES if m in args.mixes.split(",")]

    where = state_dir(args)
    tmp = tempfile.mkdtemp(prefix="maskloss-replicas-", dir=where)
    note = json.load(open(os.path.join(ROOT, "examples", "masked-mean.json")))
    observe_file = os.path.join(tmp, "observe.json")
    with open(observe_file, "w") as f:
        json.dump(dict({k: v for k, v in note.items() if k not in ("loss", "dtype")},
                       id="@ID@"), f)
    binary, ihcl = binary_request(tmp)
    labels_dir = label_bodies(args, tmp)
    t, c, r = args.threads, args.connections, args.replicas
    bodies = {
        "small": ("/v1/loss", {"BODY_FILE": os.path.join(ROOT, "examples", "masked-mean.json")},
                  t, c),
        "binary": ("/v2/models/sigmoid_cross_entropy/infer",
                   {"BODY_FILE": binary, "IHCL": str(ihcl),
                    "CONTENT_TYPE": "application/octet-stream"}, r, r),
        "observe": ("/v1/monitors/note/observe", {"BODY_FILE": observe_file}, t, c),
        "labels": ("/v1/monitors/late/labels", {"BODY_DIR": labels_dir,
                                                "BODIES": str(args.bodies),
                                                "LABELS": str(args.labels)}, t,
                   args.label_connections),
    }
    flags = ("--max-connections-per-ip", "0")
    servers = []
    try:
        with Postgres() as pg:
            for db in ("one", "many", "sizes"):
                pg.psql(f"CREATE DATABASE {db} OWNER maskloss", db="postgres")

            def dsn(db):
                return (f"host={pg.host} port={pg.port} dbname={db} user=maskloss "
                        f"password={Postgres._quote(pg.password)}")
            state = os.path.join(tmp, "state.db")
            configs = [Config("sqlite x1", [Server(args.server, "--state", state, *flags)],
                              state=state)]
            servers += configs[0].servers
            configs.append(Config("pg x1", [Server(args.server, "--state", dsn("one"), *flags)],
                                  db="one"))
            servers += configs[1].servers
            many = [Server(args.server, "--state", dsn("many"), *flags) for _ in range(r)]
            servers += many
            configs.append(Config(f"pg x{r}", many, db="many"))
            settings = pg.psql("SELECT current_setting('server_version'), "
                               "current_setting('shared_buffers'), current_setting('fsync'), "
                               "current_setting('synchronous_commit')", db="postgres").split("|")
            print(f"\nreplicas: {configs[0].servers[0].banner.strip()} (each server); "
                  f"{os.cpu_count()} cores shared by everything here (wrk, the servers, "
                  f"PostgreSQL, other jobs): load average {os.getloadavg()[0]:.1f} at the start")
            print(f"state on {where} ({fs_type(tmp)}); PostgreSQL {settings[0]}, shared_buffers "
                  f"{settings[1]}, fsync {settings[2]}, synchronous_commit {settings[3]} "
                  f"(tests/e2e/pg.py's cluster)")

            pps = {}
            sizes = {}
            for cfg in configs:
                pps[cfg.name] = prepare(cfg, args)
                if cfg.db:
                    sizes[cfg.name] = relation_bytes(pg, cfg.db, "predictions")
                else:
                    sizes[cfg.name] = (sum(os.path.getsize(p) for p in (state, state + "-wal")
                                           if os.path.exists(p)), args.predictions)

            results = {cfg.name: {mix: [] for mix in MIXES} for cfg in configs}
            for run in range(args.runs):
                for mix in mixes:
                    for cfg in configs:
                        results[cfg.name][mix].append(measure(cfg, mix, run, args, pg, bodies))
            held = {}
            for cfg in configs:
                held[cfg.name] = (
                    check_observe(cfg, results[cfg.name]["observe"], args)
                    if "observe" in mixes else 0,
                    check_labels(cfg, results[cfg.name]["labels"], args)
                    if "labels" in mixes else 0)
            load_end = os.getloadavg()[0]
            report(configs, results, args, bodies, mixes)

            print(f"\n== storing predictions: {args.predictions:,} of {CLASSES} float32 logits, "
                  f"{args.rows} a request (b64), 4 connections spread over the replicas")
            for cfg in configs:
                size, rows = sizes[cfg.name]
                what = ("pg_total_relation_size('predictions')" if cfg.db
                        else "state file (db + -wal)")
                print(f"{cfg.name:10} {pps[cfg.name]:>9,.0f} predictions/s; {what} "
                      f"{size / rows:,.0f} bytes a prediction ({CLASSES * 4} of logits)")
            for cfg in configs:
                print(f"{cfg.name:10} answers checked: every replica's GET equal; "
                      f"{held[cfg.name][0]:,} observations (= the sum of the replicas' "
                      f"maskloss_monitor_observations_total), {held[cfg.name][1]:,} labelled "
                      f"positions")

            one = configs[1]
            # The sizes on a database of their own, which nothing else wrote (the runs' dead
            # row versions leave free space that new rows would fill unmeasured).
            sizer = Server(args.server, "--state", dsn("sizes"), *flags)
            servers.append(sizer)
            print(f"\n== sizes on PostgreSQL (pg_total_relation_size: table, TOAST and indexes; "
                  f"a fresh database and server but ids and labels in all: {one.name}'s)")
            per_pred, per_label, labels = late_sizes(sizer, pg, "sizes", args)
            print(f"prediction    {per_pred:>8,.0f} bytes a stored prediction of {CLASSES} float32 "
                  f"logits ({args.size_predictions:,} stored in a monitor of their own)")
            print(f"label         {per_label:>8,.0f} bytes a stored label ({labels:,} new labels, "
                  f"4 classes of each of those predictions)")
            size, rows = relation_bytes(pg, one.db, "labels")
            if "labels" in mixes:
                print(f"              {size / rows:>8,.0f} bytes a label in all, after the label "
                      f"runs ({rows:,} rows; a replaced label is an updated row: dead versions "
                      f"until vacuumed)")
            size, rows = relation_bytes(pg, one.db, "ids")
            if rows:
                print(f"ids           {size / rows:>8,.0f} bytes an observation id ({rows:,} "
                      f"rows; an id is kept 24 h)")
            for classes, per, n, rate in bucket_sizes(sizer, pg, "sizes", args):
                print(f"bucket row    {per:>8,.0f} bytes, {classes or 'no'} classes "
                      f"({n} minute buckets; filled at {rate:,.0f} "
                      f"observations/s by 8 connections)")
            for cfg in configs[1:] + [Config("sizes", [sizer], db="sizes")]:
                db_size = int(pg.psql(f"SELECT pg_database_size('{cfg.db}')", db="postgres"))
                print(f"database {cfg.db:5} {db_size / 1e6:>8,.1f} MB at the end ({cfg.name})")
            for srv in servers:
                rc = srv.stop()
                if rc != 0:
                    sys.exit(f"server :{srv.port} exit status {rc}")
    except BaseException:
        for srv in servers:
            if srv.proc.poll() is None:
                print(f"server :{srv.port}'s log (end):\n{srv.log()[-2000:]}", file=sys.stderr)
        raise
    finally:
        for srv in servers:
            if srv.proc.poll() is None:
                srv.proc.kill()
                srv.proc.wait()
        for root, dirs, files in os.walk(tmp, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(tmp)
    print(f"\nload average {load_end:.1f} at the end of the runs; "
          f"{time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    main()
