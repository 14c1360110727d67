#!/usr/bin/python3
"""The cluster test (make test-cluster, issue 15): three maskloss-server replicas on one
PostgreSQL, behind a real nginx, scraped by a real Prometheus, under steady load while one
replica is drained (SIGTERM) and another killed (kill -9), both restarted with the same flags.

usage: run.py [--server build/maskloss-server] [--seed N] [--threads N] [--keep]

  - PostgreSQL: tests/e2e/pg.py's throwaway cluster; every replica runs with --state <its dsn>.
  - nginx (tests/cluster/nginx.conf): round robin, the next replica on an error, a timeout or a
    503 (POST too: observes carry ids), passive health only.
  - Prometheus (tests/cluster/prometheus.yml): the replicas scraped every second, the rules of
    docker/prometheus/*.rules.yml evaluated every second.
  - Client threads post observations with ids through nginx to two monitors, and re-send the
    same id on any failure until it is acknowledged (an observation never acknowledged within
    30 s is a failure), with GETs between them. Meanwhile: SIGTERM to one replica, which
    drains and exits 0; it is started again; kill -9 of another, started again.

Then, and the test fails on any mismatch:
  - 0 failed requests after the client's retries;
  - every replica's GET /v1/monitors/NAME equals the numpy truth of the observations
    acknowledged (tests/e2e/tests_monitors.py's reference: total, windows, slices, classes),
    to 1e-9;
  - Prometheus's counters, summed over the replicas and their restarts, equal that truth to
    1e-9 for the monitor that took no observation while a replica stopped (QUIET_MONITOR);
  - the recording rules of the masked mean across replicas equal the monitor's own figure and
    that truth (to RULE_RTOL: see there what rate() itself changes);
  - every PromQL expression of docker/grafana/maskloss-dashboard.json and
    docker/prometheus/*.rules.yml returns data, and every rule evaluates;
  - the replicas exit 0 on SIGTERM at the end.
Every process started here is stopped on exit, failed or not.
"""
import argparse
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from pg import Postgres  # noqa: E402
from server import Server  # noqa: E402
from tests_monitors import Diff, Obs, check_monitor, figures  # noqa: E402

# The load alternates between two monitors of the same config. MONITOR takes observations all
# the time, also while replicas stop; QUIET_MONITOR none from before a replica is stopped
# (drained or killed) until it is started again, once every replica has been scraped since its
# last: so that every observation it counted is in Prometheus (see captured()).
MONITOR = "cluster"
QUIET_MONITOR = "cluster-quiet"
MONITORS = (MONITOR, QUIET_MONITOR)
LATE_MONITOR = "cluster-late"
CLASSES = ["drama", "comedy", "action", "horror", "scifi"]
REGIONS = ["eu", "us", "ap"]
CONFIG = {"loss": "sigmoid_cross_entropy", "dtype": "float64", "classes": CLASSES,
          "slices": ["region"], "export_classes": True}
CLIENT_TOKEN = "cluster-test-client-0123456789abcdefghij"
SCRAPE_TOKEN = "cluster-test-prometheus-0123456789abcdef"
ACK_DEADLINE = 30.0  # seconds an observation may take to be acknowledged, retries included
# The recording rule against the truth and the monitor's own figure. Of Prometheus's sums of
# the counters, the test asks the truth exactly (1e-9, captured()); of the rule, to RULE_RTOL:
# rate() extrapolates each series' increase to the edges of its range by a factor of the
# series' own (where its last sample falls before the evaluation, over the time it spans), and
# in a cluster a minute old every series spans less than the 5-minute range, so the sum of rates
# weighs each replica's ratio a little differently: by at most the 1 s between scrapes over the
# 20 s or more the series span, times how far a replica's ratio is from the whole (about 1 %),
# so a few 1e-4 at most (measured here: up to 1.4e-4).
# In a cluster older than the range the factors are nearly the same, and so the ratio is. For
# MONITOR, what a replica ingested after its last scrape and before it stopped is in no
# scrape: its tolerance adds how far the ratio of what Prometheus holds is from the truth.
RULE_RTOL = 1e-3


def log(msg):
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Failed(Exception):
    pass


# ---- processes ---------------------------------------------------------------------------------


class Replica:
    """One maskloss-server on a fixed port (nginx's upstream), started again with the same
    flags after it stopped."""

    def __init__(self, name, binary, args):
        self.name, self.binary, self.args = name, binary, args
        self.port = free_port()
        self.srv = None
        self.logs = []

    def start(self):
        self.srv = Server(self.binary, "--port", str(self.port), *self.args)
        wait_for(lambda: self.get("/readyz")[0] == 200, 30, f"{self.name} /readyz 200")

    def get(self, path, token=CLIENT_TOKEN):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + token})
            r = conn.getresponse()
            body = r.read()
            try:
                return r.status, json.loads(body)
            except ValueError:
                return r.status, body.decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            return None, repr(e)
        finally:
            conn.close()

    def stopped(self):
        """Keeps the stopped process's log; returns its exit status."""
        rc = self.srv.proc.wait(60)
        self.logs.append(self.srv.log())
        return rc

    def kill(self):
        if self.srv is not None and self.srv.proc.poll() is None:
            self.srv.proc.kill()
            self.srv.proc.wait()


def wait_for(fn, timeout, what, every=0.05, diag=None):
    end = time.monotonic() + timeout
    while True:
        try:
            if fn():
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() > end:
            raise Failed(f"timed out after {timeout} s waiting for {what}" +
                         (f"\n{diag()}" if diag else ""))
        time.sleep(every)


def fill(template, **fields):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for k, v in fields.items():
        text = text.replace(f"@{k}@", v)
    left = re.findall(r"@[A-Z_]+@", text)
    assert not left, f"{template}: {left} not filled"
    return text


class Nginx:
    def __init__(self, tmp, ports):
        self.dir = os.path.join(tmp, "nginx")
        os.makedirs(self.dir)
        self.port = free_port()
        ups = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in ports)
        # As root, nginx's worker would become nobody, who cannot write our temporary
        # directories: it stays root here (a throwaway test on loopback).
        user = "user root;" if os.geteuid() == 0 else ""
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(fill("nginx.conf", DIR=self.dir, PORT=str(self.port), UPSTREAMS=ups, USER=user))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        t = subprocess.run([nginx, "-t", "-p", self.dir, "-c", self.conf, "-e", "stderr"],
                           capture_output=True, text=True)
        if t.returncode != 0:
            raise Failed(f"nginx -t refuses the configuration:\n{t.stderr}")
        with open(os.path.join(self.dir, "stderr"), "wb") as err:
            self.proc = subprocess.Popen([nginx, "-p", self.dir, "-c", self.conf, "-e", "stderr"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), 1).close() or True,
                 10, "nginx to listen")

    def upstreams(self):
        """From the access log: the requests each replica (port) answered, and how many nginx
        sent to a second one (after an error, a timeout or a 503 of the first)."""
        answered, retried = {}, 0
        with open(os.path.join(self.dir, "access.log")) as f:
            for line in f:
                m = re.search(r'"([^"]*)" "([^"]*)"', line)
                if not m:
                    continue
                tried = [a.strip() for a in m.group(1).split(",")]
                retried += len(tried) > 1
                port = tried[-1].rpartition(":")[2]
                answered[port] = answered.get(port, 0) + 1
        return answered, retried

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # (nginx's fast shutdown; the master stops its worker)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Prometheus:
    def __init__(self, tmp, ports):
        self.dir = os.path.join(tmp, "prometheus")
        os.makedirs(self.dir)
        self.port = free_port()
        token_file = os.path.join(self.dir, "token")
        with open(token_file, "w") as f:
            f.write(SCRAPE_TOKEN)
        rules = sorted(os.path.join(ROOT, "docker", "prometheus", n)
                       for n in os.listdir(os.path.join(ROOT, "docker", "prometheus"))
                       if n.endswith(".rules.yml"))
        self.conf = os.path.join(self.dir, "prometheus.yml")
        with open(self.conf, "w") as f:
            f.write(fill("prometheus.yml", TOKEN_FILE=token_file,
                         RULE_FILES="\n".join(f"  - {r}" for r in rules),
                         TARGETS=", ".join(f"'127.0.0.1:{p}'" for p in ports)))
        self.stderr = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={self.conf}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
            start_new_session=True)

    def scraping(self, since):
        """Waits until every target has been scraped successfully after `since` (Unix time):
        Prometheus's first scrapes come up to 5 s after its start (its scrape manager's
        reload period), and a replica's counters must be seen before the load starts, or what
        a replica stopped early had ingested would be in no scrape at all."""
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                                timeout=2).status == 200, 60, "Prometheus ready")

        def done():
            ups = self.query('up{job="maskloss"} == 1')
            ts = self.query('timestamp(up{job="maskloss"})')
            return len(ups) == 3 and len(ts) == 3 and all(float(t["value"][1]) > since for t in ts)
        wait_for(done, 30, "Prometheus to scrape every replica", 0.2, self.targets)

    def query(self, expr, at=None):
        """The result of an instant query: a list of {"metric", "value"}."""
        q = {"query": expr}
        if at is not None:
            q["time"] = f"{at:.3f}"
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(q)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise Failed(f"Prometheus refuses {expr!r}: {e.read().decode(errors='replace')}")
        if body.get("status") != "success":
            raise Failed(f"Prometheus: {expr!r}: {body}")
        return body["data"]["result"]

    def scalar(self, expr, at=None):
        res = self.query(expr, at)
        if len(res) != 1:
            raise Failed(f"Prometheus: {expr!r} gives {len(res)} series, not 1: {res}")
        return float(res[0]["value"][1])

    def targets(self):
        """The targets' health and last error, and the log's end: for failure reports."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=30) as r:
            ts = json.loads(r.read())["data"]["activeTargets"]
        return "\n".join(f"target {t['scrapeUrl']}: {t['health']} {t['lastError']}" for t in ts) + \
            "\n" + self.log_tail()

    def log_tail(self):
        with open(os.path.join(self.dir, "stderr"), errors="replace") as f:
            return f.read()[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.stderr.close()


class CachedObs(Obs):
    """An observation whose per-class sums are computed once (the checks ask for them per
    window, slice and replica)."""

    def stats(self):
        if not hasattr(self, "_stats"):
            self._stats = super().stats()
        return self._stats


# ---- the client ------------------------------------------------------------------------------


class Load:
    """Client threads posting observations through nginx, each re-sent with its id until
    acknowledged, and a GET of a monitor every few observations. They alternate between the
    two monitors, except that while `quiet` is set none is sent to QUIET_MONITOR (and the
    caller waits for `quiet_idle` before a replica is stopped)."""

    def __init__(self, port, seed, threads=4, get_every=5):
        self.port, self.threads, self.get_every = port, threads, get_every
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.quiet = threading.Event()
        self.quiet_inflight = 0
        self.next_id = 0
        self.acked = {m: {} for m in MONITORS}  # monitor -> id -> Obs: the truth of each
        self.failed = []       # ids never acknowledged within ACK_DEADLINE
        self.sent = 0          # HTTP requests sent (observes, retries included, and GETs)
        self.retries = 0       # observes sent again (same id) after a failure
        self.duplicates = 0    # acknowledgements that said duplicate (a retry committed before)
        self.gets = 0
        self.get_failures = 0  # GETs answered other than 200 (retried; not an observation)
        self.statuses = {}     # what the client saw other than 200, for the record
        self.workers = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def observation(self):
        with self.lock:
            k = self.next_id
            self.next_id += 1
            rng = random.Random(self.rng.getrandbits(64))
            monitor = QUIET_MONITOR if k % 2 and not self.quiet.is_set() else MONITOR
            if monitor == QUIET_MONITOR:
                self.quiet_inflight += 1
        n = rng.randint(1, 12)
        C = len(CLASSES)
        # Classes of different difficulty and observations of very different weight, so that
        # an observation counted twice or lost moves the figures visibly.
        shift = np.array([0.0, 0.5, 1.0, 2.0, -1.0])
        labels = (np.array([[rng.random() for _ in range(C)] for _ in range(n)]) < 0.4).astype(float)
        logits = np.round(np.array([[rng.uniform(-5, 5) for _ in range(C)] for _ in range(n)]) + shift, 6)
        mask = np.array([[rng.choice((0.0, 0.0, 1.0, 1.0, 0.5, 3.0)) for _ in range(C)]
                         for _ in range(n)])
        return monitor, CachedObs(labels, logits, mask, t_ms=int(time.time() * 1000),
                                  slc={"region": rng.choice(REGIONS)}, oid=f"obs-{k:06d}")

    def quiet_idle(self):
        with self.lock:
            return self.quiet.is_set() and self.quiet_inflight == 0

    def count(self, key):
        with self.lock:
            self.statuses[key] = self.statuses.get(key, 0) + 1

    def call(self, conn, method, path, body):
        """(status, answer) or (None, the error's name); reconnects after an error."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": "Bearer " + CLIENT_TOKEN}
        if data is not None:
            headers["Content-Type"] = "application/json"
        with self.lock:
            self.sent += 1
        try:
            if conn[0] is None:
                conn[0] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=35)
            conn[0].request(method, path, body=data, headers=headers)
            r = conn[0].getresponse()
            raw = r.read()
            if r.getheader("Connection", "").lower() == "close":
                conn[0].close()
                conn[0] = None
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, raw.decode(errors="replace")[:200]
        except (OSError, http.client.HTTPException) as e:
            if conn[0] is not None:
                conn[0].close()
            conn[0] = None
            return None, type(e).__name__

    def observe(self, conn, monitor, o):
        """Sends o until acknowledged (the same id every time) or ACK_DEADLINE has passed."""
        body = o.body()
        t0 = time.monotonic()
        while True:
            st, ans = self.call(conn, "POST", f"/v1/monitors/{monitor}/observe", body)
            if st == 200:
                with self.lock:
                    self.acked[monitor][o.oid] = o
                    self.duplicates += ans.get("duplicate") is True
                return
            self.count(st if st is not None else ans)
            if time.monotonic() - t0 > ACK_DEADLINE:
                with self.lock:
                    self.failed.append(o.oid)
                return
            with self.lock:
                self.retries += 1
            time.sleep(0.05)

    def run(self):
        conn = [None]
        n = 0
        while not self.stop.is_set():
            monitor, o = self.observation()
            try:
                self.observe(conn, monitor, o)
            finally:
                if monitor == QUIET_MONITOR:
                    with self.lock:
                        self.quiet_inflight -= 1
            n += 1
            while n % self.get_every == 0 and not self.stop.is_set():
                st, ans = self.call(conn, "GET", f"/v1/monitors/{monitor}", None)
                with self.lock:
                    self.gets += 1
                if st == 200:
                    break
                with self.lock:
                    self.get_failures += 1
                self.count(f"GET {st if st is not None else ans}")
                time.sleep(0.05)
        if conn[0] is not None:
            conn[0].close()

    def start(self):
        for t in self.workers:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.workers:
            t.join(ACK_DEADLINE + 40)
            if t.is_alive():
                raise Failed("a client thread did not finish")


# ---- the PromQL of the dashboard and the rules -----------------------------------------------


def expressions():
    """(where, expr) of every PromQL expression of the dashboard and the rules files, Grafana's
    variables replaced as tests/deploy_check.py replaces them."""
    out = []
    with open(os.path.join(ROOT, "docker", "grafana", "maskloss-dashboard.json")) as f:
        dash = json.load(f)

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"dashboard panel {p.get('title')!r}", t["expr"]))
            walk(p.get("panels", []))
    walk(dash["panels"])
    rdir = os.path.join(ROOT, "docker", "prometheus")
    for name in sorted(os.listdir(rdir)):
        if name.endswith(".rules.yml"):
            with open(os.path.join(rdir, name)) as f:
                for g in yaml.safe_load(f)["groups"]:
                    for r in g["rules"]:
                        e = r["expr"]
                        if "alert" in r:
                            # An alert's expression has data only while it fires; with bool,
                            # its comparisons give 0 or 1 for every series they compare.
                            e = re.sub(r"(?<=\s)(>=|<=|==|!=|>|<)(?=\s)", r"\1 bool", e)
                        out.append((f"{name} {r.get('record') or r.get('alert')}", e))
    grafana = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "monitor": MONITOR}

    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return grafana.get(name, m.group(0))
    return [(w, re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", one, e)) for w, e in out]


# ---- the test ----------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=os.path.join(ROOT, "build", "maskloss-server"))
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="maskloss-cluster-")
    procs = []  # things with .stop() / .kill(), stopped in reverse order
    replicas = []

    def on_signal(sig, frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return run(args, tmp, procs, replicas, lambda p: procs.append(p))
    except Failed as e:
        print(f"cluster test: FAILED after {time.monotonic() - T0:.1f} s: {e}", file=sys.stderr)
        return 1
    finally:
        for r in replicas:
            r.kill()
        for p in reversed(procs):
            try:
                p.stop()
            except Exception as e:  # (keep stopping the others)
                print(f"cluster test: stopping {p}: {e!r}", file=sys.stderr)
        if args.keep:
            print(f"cluster test: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp, procs, replicas, started):
    if not os.access(args.server, os.X_OK):
        raise Failed(f"no server binary at {args.server} (make, or --server PATH)")
    tokens = os.path.join(tmp, "tokens")
    with open(tokens, "w") as f:
        f.write(f"{hashlib.sha256(CLIENT_TOKEN.encode()).hexdigest()} loadgen admin\n")
        f.write(f"{hashlib.sha256(SCRAPE_TOKEN.encode()).hexdigest()} prometheus metrics\n")

    # ---- Prometheus first (it takes seconds to scrape), PostgreSQL, three replicas, nginx
    replicas += [Replica(name, args.server, []) for name in "ABC"]
    prom = Prometheus(tmp, [r.port for r in replicas])
    started(prom)
    pg = Postgres()
    pg.__enter__()  # (removes what it made if it fails)
    started(Removed(pg))
    log(f"PostgreSQL on 127.0.0.1:{pg.port} ({pg.init_seconds + pg.start_seconds:.1f} s)")
    for r in replicas:
        # (quotas on, far above the load: their metrics exist for the dashboard)
        r.args = ["--state", pg.dsn, "--workers", "2", "--auth-file", tokens,
                  "--rate-limit", "100000", "--queue-share", "64", "--drain-timeout", "20"]
        r.start()
    log("replicas " + ", ".join(f"{r.name} :{r.port}" for r in replicas))
    ngx = Nginx(tmp, [r.port for r in replicas])
    started(ngx)
    log(f"nginx :{ngx.port}, Prometheus :{prom.port}")

    # The monitors, through nginx. A monitor with stored predictions and labels gives the
    # late-label gauges of the dashboard; /v1/loss once, the per-loss element counters.
    late_cfg = {"loss": "sigmoid_cross_entropy", "classes": ["a", "b"]}
    setup, conn = Load(ngx.port, 0, threads=0), [None]
    for method, path, body in (
            ("PUT", f"/v1/monitors/{MONITOR}", CONFIG),
            ("PUT", f"/v1/monitors/{QUIET_MONITOR}", CONFIG),
            ("PUT", f"/v1/monitors/{LATE_MONITOR}", late_cfg),
            ("POST", f"/v1/monitors/{LATE_MONITOR}/predictions",
             {"ids": ["p1", "p2"], "logits": [[0.5, -1], [2, 0]]}),
            ("POST", f"/v1/monitors/{LATE_MONITOR}/labels",
             {"labels": [{"id": "p1", "class": 0, "value": 1}]}),
            ("POST", "/v1/loss", {"loss": "sigmoid_cross_entropy", "labels": [1, 0], "logits": [0.5, -1]})):
        st, ans = setup.call(conn, method, path, body)
        if st != (201 if method == "PUT" else 200):
            raise Failed(f"{method} {path}: {st} {ans}")
        if path == f"/v1/monitors/{MONITOR}":
            config = ans["config"]

    # ---- steady load; a drain, a kill -9, both restarted
    load = Load(ngx.port, args.seed, threads=args.threads)
    # First an observation of weight 0 per slice value and monitor: every replica then exports
    # each series at 0 before the load (rate() extrapolates a series that starts above 0 back
    # to its zero by the ratio of its first value, a different one for the weighted sum and
    # the denominator), and a stopped replica's counters are all in a scrape before it stops.
    for m in MONITORS:
        for region in REGIONS:
            o = CachedObs(np.zeros((1, len(CLASSES))), np.zeros((1, len(CLASSES))),
                          np.zeros((1, len(CLASSES))), t_ms=int(time.time() * 1000),
                          slc={"region": region}, oid=f"zero-{region}")
            load.observe(conn, m, o)
    conn[0].close()
    series = f'maskloss_monitor_weighted_loss_sum{{monitor=~"{"|".join(MONITORS)}"}}'
    wait_for(lambda: len(prom.query(series)) == 3 * len(MONITORS) * len(REGIONS), 30,
             "every replica to export the monitors' series", 0.2, prom.targets)
    prom.scraping(time.time())
    log("Prometheus scrapes every replica's series")
    t_load = time.monotonic()
    load.start()
    log(f"load: {args.threads} client threads through nginx")
    time.sleep(4)

    def quiet():
        """No observation of QUIET_MONITOR in flight, and every replica scraped since."""
        load.quiet.set()
        wait_for(load.quiet_idle, ACK_DEADLINE + 5, f"the observations of {QUIET_MONITOR}")
        prom.scraping(time.time())
    a, b = replicas[0], replicas[1]
    quiet()
    log(f"SIGTERM {a.name} (drain)")
    t = time.monotonic()
    a.srv.proc.send_signal(signal.SIGTERM)
    rc = a.stopped()
    drain = time.monotonic() - t
    if rc != 0:
        raise Failed(f"{a.name} exited {rc} after SIGTERM, not 0:\n{a.logs[-1][-3000:]}")
    log(f"{a.name} drained and exited 0 in {drain:.2f} s; started again")
    a.start()
    load.quiet.clear()
    time.sleep(3)
    quiet()
    log(f"kill -9 {b.name}")
    b.srv.proc.kill()
    b.stopped()
    time.sleep(1)
    b.start()
    load.quiet.clear()
    log(f"{b.name} started again")
    time.sleep(4)
    load.finish()
    t_end = time.time()
    load_seconds = time.monotonic() - t_load
    log(f"load stopped after {load_seconds:.1f} s")

    # ---- the client's figures
    acked = sum(len(v) for v in load.acked.values())
    answered, retried = ngx.upstreams()
    print(f"requests sent {load.sent} (observes {load.sent - load.gets}, GETs {load.gets}); "
          f"observations acknowledged {acked} ({acked / load_seconds:.0f}/s), failed {len(load.failed)}; "
          f"client retries {load.retries} (duplicates acknowledged {load.duplicates}), "
          f"GETs retried {load.get_failures}")
    print("nginx: answered by " + ", ".join(f"{r.name} {answered.get(str(r.port), 0)}" for r in replicas) +
          f"; sent on to a second replica {retried}")
    if load.statuses:
        print("  answers other than 200 the client saw: " +
              ", ".join(f"{k}: {v}" for k, v in sorted(load.statuses.items(), key=str)))
    errors = []
    if load.failed:
        errors.append(f"{len(load.failed)} observations never acknowledged within "
                      f"{ACK_DEADLINE:.0f} s: {load.failed[:5]}")

    # ---- every replica's GET against the truth
    truth, own = {}, {}
    for m in MONITORS:
        obs = list(load.acked[m].values())
        truth[m] = figures(obs, config["reduction"], CLASSES)
        print(f"{m}: truth (numpy, {len(obs)} observations): loss {truth[m]['loss']!r}, "
              f"weighted sum {truth[m]['weighted_sum']!r}, non-zero weights "
              f"{truth[m]['num_nonzero_weights']}")
        for r in replicas:
            st, got = r.get(f"/v1/monitors/{m}")
            if st != 200:
                errors.append(f"replica {r.name}: GET /v1/monitors/{m}: {st} {got}")
                continue
            d = Diff()
            check_monitor(d, got, obs, config, CLASSES)
            own[m, r.name] = got["windows"]["5m"]["loss"]
            print(f"  replica {r.name}: windows.5m.loss {own[m, r.name]!r}; {d.count - len(d.errors)} "
                  f"of {d.count} figures equal to the truth")
            if d.errors:
                errors.append(f"replica {r.name}: {m}: {len(d.errors)} of {d.count} figures differ "
                              "from the truth:\n  " + "\n  ".join(d.errors[:10]))

    # ---- Prometheus, once it has scraped every replica after the load and evaluated the rules
    def settled():
        # (timestamp() of the selector itself: of an expression, it is the query's time)
        ups = prom.query('timestamp(up{job="maskloss"})')
        if len(ups) != 3 or min(float(u["value"][1]) for u in ups) < t_end + 1:
            return False
        rule = prom.query('timestamp(maskloss:monitor_loss:ratio_rate5m)')
        return len(rule) >= 2 and min(float(x["value"][1]) for x in rule) > \
            max(float(u["value"][1]) for u in ups)
    wait_for(settled, 30, "Prometheus to scrape every replica after the load and evaluate the rules",
             0.2, prom.targets)
    for m in MONITORS:
        sel = f'{{monitor="{m}"}}'
        cap = captured(prom, sel)
        t = truth[m]
        print(f"{m}: Prometheus scraped {cap['observations_total']:.0f} of {t['observations']} "
              f"observations, weighted sum {cap['weighted_loss_sum']!r}, denominator "
              f"{cap['denominator_sum']!r}: their ratio {cap['weighted_loss_sum'] / cap['denominator_sum']!r}"
              + ("" if m == QUIET_MONITOR else " (the rest ingested by a replica after its last scrape)"))
        if m == QUIET_MONITOR:
            # Every observation counted once by the replica that committed it, and scraped.
            for fam, key in (("observations_total", "observations"), ("weighted_loss_sum", "weighted_sum"),
                             ("denominator_sum", "denominator"), ("nonzero_weights_total", "num_nonzero_weights")):
                if not abs(cap[fam] - t[key]) <= 1e-9 * abs(t[key]):
                    errors.append(f"{m}: Prometheus's maskloss_monitor_{fam} over the replicas adds "
                                  f"up to {cap[fam]!r}, the truth {t[key]!r}")
        elif cap["observations_total"] > t["observations"]:
            errors.append(f"{m}: Prometheus counted {cap['observations_total']:.0f} observations, "
                          f"more than the {t['observations']} acknowledged")
        # (MONITOR: plus how far the ratio of what Prometheus scraped is from the truth)
        seen = cap["weighted_loss_sum"] / cap["denominator_sum"]
        tol = RULE_RTOL + (0 if m == QUIET_MONITOR else abs(seen - t["loss"]) / abs(t["loss"]))
        for rule in ("maskloss:monitor_loss:ratio_rate5m",
                     "maskloss:monitor_loss_per_nonzero_weight:ratio_rate5m"):
            got = prom.scalar(rule + sel)
            rel = abs(got - t["loss"]) / abs(t["loss"])
            print(f"  {rule}: {got!r}, relative difference to the truth {rel:.2e} "
                  f"(tolerance {tol:.2e})")
            if not rel <= tol:
                errors.append(f"{m}: {rule} = {got!r}, the truth {t['loss']!r} (relative {rel:.2e})")
            for r in replicas:
                v = own.get((m, r.name))
                if v is not None and not abs(got - v) <= tol * abs(v):
                    errors.append(f"{m}: {rule} = {got!r}, replica {r.name}'s windows.5m.loss {v!r}")

    # ---- every expression of the dashboard and the rules returns data
    now = time.time()
    empty = []
    exprs = expressions()
    for where, expr in exprs:
        at = now
        if "offset 1h" in expr:
            # (the hour before the last one: this cluster is a minute old; evaluated an hour
            # after 3 s before the load's end, both hours hold some of it)
            at = t_end - 3 + 3600
        if not prom.query(expr, at):
            empty.append(f"{where}: {expr.strip()!r}")
    print(f"PromQL: {len(exprs) - len(empty)} of {len(exprs)} expressions of the dashboard and "
          "the rules return data")
    if empty:
        errors.append("PromQL expressions without data:\n  " + "\n  ".join(empty))
    with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/api/v1/rules", timeout=30) as r:
        rules = [(g["file"], x) for g in json.loads(r.read())["data"]["groups"] for x in g["rules"]]
    bad = [f"{x['name']}: {x['health']} {x.get('lastError', '')}" for _, x in rules if x["health"] != "ok"]
    if not rules or bad:
        errors.append(f"Prometheus's rules not all evaluated: {bad or 'none loaded'}")

    for r in replicas:
        rc = r.srv.stop(timeout=60)
        r.logs.append(r.srv.log())
        if rc != 0:
            errors.append(f"replica {r.name} exited {rc} on SIGTERM, not 0:\n{r.logs[-1][-2000:]}")
    if errors:
        raise Failed("\n".join(errors))
    print(f"cluster test: passed in {time.monotonic() - T0:.1f} s")
    return 0


def captured(prom, sel):
    """What Prometheus holds of each monitor counter family over every replica, from its raw
    samples and without rate()'s extrapolation: each series' increments added up, a drop
    being a restart of its replica from 0 (what increase() does before extrapolating)."""
    out = {}
    for fam in ("observations_total", "weighted_loss_sum", "denominator_sum", "nonzero_weights_total"):
        tot = 0.0
        for s in prom.query(f"maskloss_monitor_{fam}{sel}[10m]"):
            prev = 0.0
            for _, v in s["values"]:
                v = float(v)
                tot += v - prev if v >= prev else v
                prev = v
        out[fam] = tot
    return out


class Removed:
    """The throwaway PostgreSQL among the processes stopped at the end: stopped and removed."""

    def __init__(self, pg):
        self.pg = pg

    def stop(self):
        self.pg.cleanup()


T0 = time.monotonic()
if __name__ == "__main__":
    sys.exit(main())
