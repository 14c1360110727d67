"""Attacks on the PostgreSQL store (issue 15): replicas racing each other, a database that
freezes or stops answering mid-commit, values that must survive the text round trip, long
keys, hostile ids, wide monitors, the password in logs. run.py --pg only (server.PG; marked
pg_only, and each returns at once without it).

Every replica here is started on a schema of its own test (MASKLOSS_STATE, so that the harness
does not map --state), and the expected figures come from numpy (tests_monitors' and
tests_late's models), never from a server.
"""
import json
import os
import random
import signal
import subprocess
import threading
import time

import numpy as np

import server as server_mod
from common import expect_error, pg_only, stop_clean, test, wait_until
from server import Server
from tests_late import Late, f32, sce
from tests_monitors import SCE, Api, Diff, Obs, check_monitor, created

_schemas = [0]


def fresh_schema(options=""):
    """A new schema on the harness's PostgreSQL: (name, the server's connection string)."""
    pg = server_mod.PG
    _schemas[0] += 1
    name = f"atk{_schemas[0]}_{os.getpid()}_{int(time.monotonic() * 1000) % 100000}"
    pg.psql(f"CREATE SCHEMA {name} AUTHORIZATION maskloss")
    return name, pg.dsn + f" options='-csearch_path={name}{options}'"


def replicas(args, dsn, n, *extra):
    return [Server(args.server, *extra, env={"MASKLOSS_STATE": dsn}) for _ in range(n)]


def close_all(srvs):
    """Kills the servers and ends the locking sessions a failed test left."""
    for s in srvs:
        s.__exit__(None, None, None)
    while _holders:
        h = _holders.pop()
        if h.p.poll() is None:
            h.p.kill()
            h.p.wait()


_holders = []


class Holder:
    """A psql session of the superuser kept open (a transaction holding locks meanwhile)."""

    def __init__(self, sql):
        pg = server_mod.PG
        _holders.append(self)
        self.p = subprocess.Popen([os.path.join(pg.bin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", pg.sockdir,
                                   "-p", str(pg.port), "-U", "postgres", "-d", "maskloss"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.p.stdin.write(sql + "\nSELECT 'held';\n")
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            assert line, self.p.stderr.read() if self.p.poll() is not None else "psql said nothing"
            if line.strip() == "held":
                break

    def release(self, sql="COMMIT;"):
        if self.p.poll() is None:
            self.p.stdin.write(sql + "\n")
            self.p.stdin.close()
            self.p.wait(30)


def pg_pids():
    pg = server_mod.PG
    pid = pg.postmaster_pid()
    return [pid] + pg._children(pid)


def resume(pids):
    """SIGCONT to the PostgreSQL processes a test stopped (those still there)."""
    for p in pids:
        try:
            os.kill(p, signal.SIGCONT)
        except ProcessLookupError:
            pass


class InOrder:
    """POSTs sent each from a thread of its own, 0.15 s apart: in this order into their
    replicas' next group commits. Their answers by key."""

    def __init__(self):
        self.res, self.threads = {}, []

    def post(self, key, srv, path, body):
        t = threading.Thread(target=lambda: self.res.setdefault(key, Api(srv).call("POST", path, body)))
        t.start()
        self.threads.append(t)
        time.sleep(0.15)

    def wait(self, timeout=30):
        for t in self.threads:
            t.join(timeout)
        return self.res

    def failed(self, width=200):
        """The answers other than 200: key -> (status, the error's start)."""
        return {k: (v[0], v[2].get("error", "")[:width] if isinstance(v[2], dict) else v[2])
                for k, v in self.res.items() if v[0] != 200}


def loss_body():
    return {"loss": SCE, "labels": [[1, 0]], "logits": [[0.5, -1.0]]}


def one(i, t=None, C=2, oid=None, slc=None):
    rng = np.random.default_rng(1000 + i)
    t = int(time.time() * 1000) if t is None else t
    return Obs(f32(rng.integers(0, 2, (3, C))), f32(rng.normal(0, 2, (3, C))), t_ms=t, oid=oid, slc=slc)


def check_all(apis, name, sent, config, classes, what):
    for r, api in enumerate(apis):
        d = Diff()
        check_monitor(d, api.get(name), sent, config, 2 if classes is None else classes)
        d.done(f" in GET /v1/monitors/{name} of replica {r} {what}")


# ---- races between replicas --------------------------------------------------------------------


@test
@pg_only
def pg_attack_create_race(args):
    """Two replicas create the same monitor at once, with different configs, neither with
    ?force=true: one is created (201), the other is told it exists with another config (409).
    Made deterministic by a lock that holds both INSERTs until both replicas have looked for the
    monitor (their poll before a create sees none). A create that silently replaces the other
    replica's monitor (both 201) loses what was observed into the first."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        created(a, "warm", {"loss": SCE, "num_classes": 2})  # (the schema exists: tables to lock)
        hold = Holder(f"BEGIN; LOCK TABLE {schema}.monitors IN EXCLUSIVE MODE;")
        out = {}

        def put(k, api, cfg):
            out[k] = api.put("m", cfg)

        ts = [threading.Thread(target=put, args=("a", a, {"loss": SCE, "num_classes": 2})),
              threading.Thread(target=put, args=("b", b, {"loss": SCE, "num_classes": 3}))]
        for t in ts:
            t.start()
        time.sleep(1.5)  # (both polled, both waiting on the lock)
        hold.release()
        for t in ts:
            t.join(30)
        codes = sorted(out[k][0] for k in out)
        assert codes == [201, 409], (
            f"two creates of one monitor at once on two replicas answered {codes} "
            f"({ {k: (v[0], v[2].get('code')) for k, v in out.items()} }); expected one 201 and one 409: "
            f"the second INSERT ... ON CONFLICT DO UPDATE replaced the first replica's monitor")
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_observe_after_replace_elsewhere(args):
    """A monitor replaced (?force=true) or deleted on replica A; right after A's answer, an
    observation with an id sent to replica B (which has not polled yet). Whatever B answers,
    an acknowledged observation (200) must be in the figures every replica then shows; a
    deleted monitor takes none (404). Three rounds (B polls once a second: the observation
    comes within that second nearly every time)."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        cfg = {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["1h"]}
        config = created(a, "m", cfg)
        b.get("m")
        lost = []
        for rnd in range(3):
            st, h, body = a.put("m", dict(cfg, windows=["1h", "24h"] if rnd % 2 == 0 else ["1h"]), force=True)
            assert st == 200, (st, body)
            config = body["config"]
            o = one(rnd, oid=f"r{rnd}")
            st, h, body = b.observe("m", o.body())
            got = b.get("m")["total"]["observations"]
            if st == 200:
                if got != 1:
                    lost.append(f"round {rnd}: B answered 200 (duplicate={body.get('duplicate')}) "
                                f"but the replaced monitor shows {got} observations")
                else:
                    check_all([a, b], "m", [o], config, None, f"round {rnd}")
            else:
                assert st in (409, 503), (st, body)
        # Deleted on A, then observed on B.
        st, h, body = a.call("DELETE", "/v1/monitors/m")
        assert st == 204, (st, body)
        st, h, body = b.observe("m", one(9, oid="after-delete").body())
        if st == 200:
            lost.append("an observation of a monitor deleted on another replica was answered 200")
        st_a = a.call("GET", "/v1/monitors/m")[0]
        assert st_a == 404, st_a
        assert not lost, "acknowledged observations lost: " + "; ".join(lost)
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_labels_race(args):
    """One prediction labelled on two replicas at once, each request setting every class of it
    (different values), 20 times over: the live counts and every figure are those of the last
    label of each position (whichever replica's it was), the same on both replicas, and equal to
    numpy's from the labels the database kept."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        C = 4
        m = Late(a, "late", {"loss": SCE, "dtype": "float64", "num_classes": C, "windows": ["1h"]}, pointwise=sce)
        rng = np.random.default_rng(7)
        ids = [f"p{i}" for i in range(6)]
        m.predict(ids, f32(rng.normal(0, 2, (6, C))), round(time.time() - 30, 3))
        errs = []

        def send(api, vals):
            body = {"ids": ids, "labels": vals.tolist()}
            st, h, r = api.call("POST", "/v1/monitors/late/labels", body)
            if st != 200:
                errs.append((st, r))

        for rnd in range(20):
            va, vb = rng.choice([0.0, 1.0], (6, C)), rng.choice([0.0, 1.0], (6, C))
            ts = [threading.Thread(target=send, args=(api2, v)) for api2, v in
                  ((Api(srvs[0]), va), (Api(srvs[1]), vb))]
            for t in ts:
                t.start()
            for t in ts:
                t.join(30)
        assert not errs, errs[:3]
        # The labels the database kept are the truth of which replica's came last.
        rows = server_mod.PG.psql(
            f"SELECT p.id, l.slot, l.value, l.weight FROM {schema}.labels l JOIN {schema}.predictions p "
            f"USING (pred) ORDER BY 1, 2")
        m.lab = {}
        for line in rows.splitlines():
            pid, slot, v, w = line.split("|")
            m.lab[(pid, int(slot))] = (float(v), float(w))
        assert len(m.lab) == 6 * C, len(m.lab)
        m.version += 1
        for api in (a, b):
            m.api = api
            m.check(" after concurrent labels on two replicas", delays=False)
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


# ---- what the text round trip must keep --------------------------------------------------------


CWL_LOSSES = "tf.compat.v1.losses.compute_weighted_loss"


def obs_losses(i, vals, w):
    return {"losses": [vals], "mask": [w], "id": f"e{i}"}


@test
@pg_only
def pg_attack_float_text_exact(args):
    """Doubles at float64's edges (subnormals down to 5e-324, the smallest normal, 1/3, 0.1,
    values near 1e154 whose squares are near the largest double, -0.0 and exact zeros) observed
    on replica A as per-element losses: both replicas' GETs (B's through PostgreSQL's text
    round trip and mls_addv) equal, bit for bit, numpy's sums in the same order."""
    if server_mod.PG is None:
        return
    exact_run(args, fresh_schema()[1], "with the default extra_float_digits")


@test
@pg_only
def pg_attack_float_digits_setting(args):
    """The same with the role's session set to extra_float_digits = 0 (an operator's setting:
    ALTER ROLE/DATABASE ... SET, or PGOPTIONS): PostgreSQL then prints float8 rounded to 15
    digits unless the server sets extra_float_digits itself; the feed would overwrite every
    replica's memory (and the labels read back) with rounded sums."""
    if server_mod.PG is None:
        return
    exact_run(args, fresh_schema(" -cextra_float_digits=0")[1], "with extra_float_digits = 0")


# Per-element losses [1, 2] and weights, observed one at a time into one bucket of one monitor
# each: sums whose every digit matters (thirds, tenths), subnormals down to 5e-324 and the
# smallest normal, -0.0, and values whose squares are near the largest double.
EXACT = {
    "plain": ([[0.1, 1 / 3], [2 / 3, 0.7], [123456789.12345679, 1e-5], [0.2, 0.30000000000000004]],
              [[1.0, 0.3], [0.7, 1.0], [1.0, 1e-7], [0.1, 0.9]]),
    "tiny": ([[1e-310, 5e-324], [2.2250738585072014e-308, -0.0], [-2.5e-320, 1e-300], [3e-310, 7e-323]],
             [[0.7, 1.0], [1.0, 1.0], [1.0, 0.5], [1.0, 1.0]]),
    "huge": ([[1.3e154, 1 / 3], [1e154, 2.5e153], [-1.1e154, 1e150]],
             [[0.5, 1.0], [0.25, 1.0], [0.5, 0.75]]),
}


def exact_run(args, dsn, what):
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        bt = int(time.time()) // 60 * 60
        bad = []
        for name, (vals, wts) in EXACT.items():
            st, h, body = a.put(name, {"loss": CWL_LOSSES, "dtype": "float64", "num_classes": 2,
                                       "windows": ["1h"]})
            assert st == 201, (st, body)
            for i, (v, w) in enumerate(zip(vals, wts)):
                body = obs_losses(i, v, w)
                body["time"] = bt
                st, h, r = a.observe(name, body)
                assert st == 200, (name, v, st, r)
            x, wa = np.array(vals, dtype=np.float64), np.array(wts, dtype=np.float64)
            # numpy: each class's sums, one observation after the other (as the buckets add)
            want = []
            for c in range(2):
                ws = sw = sq = 0.0
                for i in range(len(vals)):
                    ws += float(wa[i, c] * x[i, c])
                    sw += float(wa[i, c])
                    sq += float(wa[i, c] * x[i, c] * x[i, c])
                want.append({"weighted_sum": ws, "sum_weights": sw, "sum_sq": sq})
            for r, api in enumerate((a, b)):
                got = api.get(name)["total"]["per_class"]
                for c in range(2):
                    for k, v in want[c].items():
                        g = got[c].get(k)
                        if g != v or (v == 0 and np.signbit(v) != np.signbit(g)):
                            bad.append(f"{name} replica {'AB'[r]} class {c} {k}: {g!r}, numpy {v!r}")
        assert not bad, f"{what}: " + "; ".join(bad)
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


# ---- keys and ids -----------------------------------------------------------------------------


@test
@pg_only
def pg_attack_long_slice_combo(args):
    """A monitor with 8 slice keys, each observed with a 128-byte value of control characters
    (allowed: 1 to 128 bytes; the combination's key escapes each as \\u00XX, about 6 KB): the
    bucket's primary key then exceeds PostgreSQL's btree row limit (2704 bytes) unless the
    store keys it otherwise. Counted (200, on both replicas) as with SQLite; and an ordinary
    observation sent at the same time is not refused with it."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        keys = [f"k{i}" for i in range(8)]
        cfg = {"loss": SCE, "dtype": "float64", "num_classes": 2, "slices": keys, "windows": ["1h"]}
        config = created(a, "wide", cfg)
        rnd = random.Random(5)
        ctl = [c for c in range(1, 32) if c not in (9, 10, 13)]
        slc = {k: "".join(chr(rnd.choice(ctl)) for _ in range(128)) for k in keys}
        o = one(1, oid="long", slc=slc)
        st, h, body = a.observe("wide", o.body())
        assert st == 200, (f"an observation with 8 slice values of 128 control characters: {st} "
                           f"{body.get('code')} {body.get('error', '')[:300]}")
        check_all([a, b], "wide", [o], config, None, "after a long slice combination")
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


HOSTILE_IDS = ['a"b', 'a\\b', 'a,b', '{x}', 'NULL', ' sp ', "it's", "x'); DROP TABLE ids; --", 'é€😀',
               '\\"', '{"a":1}', 'x' * 128, '\\', '"', ',', '}', '{']


@test
@pg_only
def pg_attack_hostile_ids(args):
    """Ids that are SQL and array-literal syntax (quotes, backslashes, braces, commas, NULL,
    spaces, a DROP TABLE, 4-byte UTF-8, 128 bytes): observation ids retried on the other
    replica are duplicates; predictions stored through A under those ids are labelled through
    B (the predictions are read by an array literal built in C), figures equal numpy's on both."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        config = created(a, "obs", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["1h"]})
        sent = []
        for i, oid in enumerate(HOSTILE_IDS):
            o = one(i, oid=oid)
            st, h, r = a.observe("obs", o.body())
            assert st == 200 and r.get("duplicate") is False, (oid, st, r)
            st, h, r = b.observe("obs", o.body())
            assert st == 200 and r.get("duplicate") is True, (oid, "retried on B", st, r)
            sent.append(o)
        check_all([a, b], "obs", sent, config, None, "after hostile ids")
        C = 3
        m = Late(a, "late", {"loss": SCE, "dtype": "float64", "num_classes": C, "windows": ["1h"]}, pointwise=sce)
        rng = np.random.default_rng(3)
        m.predict(HOSTILE_IDS, f32(rng.normal(0, 2, (len(HOSTILE_IDS), C))), round(time.time() - 20, 3))
        m.api = b
        entries = [(pid, i % C, float(i % 2), 1.0) for i, pid in enumerate(HOSTILE_IDS)]
        m.label(entries, key='k"\\,{}')
        m.dense(HOSTILE_IDS[:6], rng.choice([0.0, 1.0], (6, C)))
        for api in (a, b):
            m.api = api
            m.check(" after labels of hostile ids", delays=False)
        # the retried label batch (its key hostile too) is a duplicate on A
        m.api = a
        m.label(entries, key='k"\\,{}')
        names = server_mod.PG.psql(f"SELECT count(*) FROM {schema}.ids")
        assert int(names) >= len(HOSTILE_IDS), names
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


# ---- wide and many ------------------------------------------------------------------------------


@test
@pg_only
def pg_attack_labels_many_buckets(args):
    """1100 predictions in 1100 different minute buckets (stored through A), then labelled in one
    request through B: one transaction of 1100 bucket deltas (more than the store's 1000 rows per
    upsert), 1100 predictions read (more than one batch of 1000) and 1100 labels written. Both
    replicas' figures equal numpy's."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        C = 2
        m = Late(a, "many", {"loss": SCE, "dtype": "float64", "num_classes": C, "windows": ["24h"]},
                 pointwise=sce)
        rng = np.random.default_rng(11)
        now = int(time.time()) // 60 * 60
        N = 1100
        X = f32(rng.normal(0, 2, (N, C)))
        for i in range(N):
            m.predict([f"p{i}"], X[i:i + 1], float(now - 60 * (i + 1) + 7))
        m.api = b
        m.dense(m.ids, rng.choice([0.0, 1.0], (N, C)))
        for api in (a, b):
            m.api = api
            m.check(" after 1100 buckets labelled in one request", delays=False)
        n = server_mod.PG.psql(f"SELECT count(*) FROM {schema}.buckets WHERE width = 60")
        assert int(n) >= N, n
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_1000_classes(args):
    """A monitor of 1000 classes (late labels on: class slots with their late part, ~6000
    doubles a bucket): observations on A in 3 buckets, predictions and labels through B; both
    replicas' figures (every class) equal numpy's."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        C = 1000
        m = Late(b, "k", {"loss": SCE, "dtype": "float64", "num_classes": C, "windows": ["1h"]}, pointwise=sce)
        rng = np.random.default_rng(13)
        now = time.time()
        for j in range(3):
            ids = [f"q{j}-{i}" for i in range(4)]
            m.predict(ids, f32(rng.normal(0, 2, (4, C))), round(now - 60 * j - 5, 3))
        m.api = a
        m.dense(m.ids[:8], rng.choice([0.0, 1.0], (8, C)), rng.choice([0.0, 1.0, 0.5], (8, C)))
        m.api = b
        m.dense(m.ids[4:], rng.choice([0.0, 1.0], (8, C)))
        for api in (a, b):
            m.api = api
            m.check(" with 1000 classes", delays=False)
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


# ---- a database that stops answering -------------------------------------------------------


@test
@pg_only
def pg_attack_commit_unanswered(args):
    """The COMMIT of an observation reaches PostgreSQL but its answer comes after the server's
    deadline (a deferred trigger sleeps 3 s at commit; the server, --state-timeout 2, gives up and drops
    the connection): the observation is then durable though the client got 503. Its retry by id
    (on the other replica) must be a duplicate and the figures count it once -- and the 503
    must not tell the client that nothing was counted (a client without an id would count it
    twice by sending it again)."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2, "--state-timeout", "2")
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        config = created(a, "m", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["1h"]})
        server_mod.PG.psql(
            f"CREATE FUNCTION {schema}.slow() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;"
            f"CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON {schema}.ids DEFERRABLE INITIALLY DEFERRED "
            f"FOR EACH ROW WHEN (NEW.id = 'slow') EXECUTE FUNCTION {schema}.slow();")
        o = one(1, oid="slow")
        t0 = time.monotonic()
        st, h, body = a.observe("m", o.body())
        took = time.monotonic() - t0
        assert st == 503, (st, body)
        message = body.get("error", "")
        assert took < 5, took
        time.sleep(max(0, 3.5 - took))  # (the backend's commit has finished)
        st, h, r = b.observe("m", o.body())
        assert st == 200 and r.get("duplicate") is True, ("the retry by id", st, r)
        check_all([a, b], "m", [o], config, None, "after a commit answered too late")
        assert "nothing was counted" not in message, (
            f"a 503 for a COMMIT whose answer never came says \"{message}\", but it was counted "
            f"(the retry by id was a duplicate)")
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_hung_database(args):
    """Every PostgreSQL process stopped (SIGSTOP, a hung database: the kernel still accepts
    connections): /v1/loss answers at once; an observation and a monitor GET answer 503 +
    Retry-After within the server's deadlines (--state-timeout 2 a call, 15 s a read's wait), not hang;
    /readyz turns 503; after SIGCONT the replica is ready again within a few seconds, and an
    observation with an id retried after its 503 is counted once."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 1, "--state-timeout", "2")
    pids = []
    try:
        (srv,) = srvs
        a = Api(srv)
        config = created(a, "m", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["1h"]})
        pids = pg_pids()
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        times = {}
        res = {}

        def timed(k, fn):
            t0 = time.monotonic()
            try:
                res[k] = fn()
            finally:
                times[k] = time.monotonic() - t0

        o = one(2, oid="during")
        ts = [threading.Thread(target=timed, args=("observe", lambda: Api(srv).observe("m", o.body()))),
              threading.Thread(target=timed, args=("get", lambda: Api(srv).call("GET", "/v1/monitors/m")))]
        for t in ts:
            t.start()
        # a backlog: 10 more observations waiting for the stuck writer
        pile = [threading.Thread(target=timed, args=(f"pile{i}", lambda i=i: srv.request(
            "POST", "/v1/monitors/m/observe", json.dumps(one(50 + i, oid=f"pile{i}").body()),
            {"Content-Type": "application/json"}, timeout=60))) for i in range(10)]
        for t in pile:
            t.start()
        ts += pile
        time.sleep(0.5)
        timed("loss", lambda: srv.request("POST", "/v1/loss", json.dumps(loss_body()), {"Content-Type": "application/json"}))
        assert res["loss"][0] == 200 and times["loss"] < 2, (res["loss"][0], times["loss"])
        for t in ts[:2]:
            t.join(40)
        assert not any(t.is_alive() for t in ts[:2]), f"requests still unanswered after 40 s: {times}"
        expect_error(res["observe"], 503, "state_unavailable")
        expect_error(res["get"], 503, "state_unavailable")
        ready = wait_until(lambda: srv.request("GET", "/readyz")[0] == 503, timeout=15)
        assert ready, "/readyz still 200 with the database hung"
        print(f"    hung: observe 503 in {times['observe']:.1f} s, GET 503 in {times['get']:.1f} s, "
              f"/v1/loss {times['loss'] * 1000:.0f} ms")
        assert times["observe"] < 25 and times["get"] < 25, times
        resume(pids)
        pids = []
        t0 = time.monotonic()
        back = wait_until(lambda: srv.request("GET", "/readyz")[0] == 200, timeout=15)
        assert back, f"/readyz still 503 15 s after the database came back; log:\n{srv.log()[-1500:]}"
        print(f"    ready again {time.monotonic() - t0:.1f} s after SIGCONT")
        for t in pile:
            t.join(40)
        assert not any(t.is_alive() for t in pile), f"piled observations unanswered: {times}"
        piled = [res[f"pile{i}"][0] for i in range(10)]
        assert set(piled) <= {200, 503}, piled
        st, h, r = a.observe("m", o.body())
        assert st == 200, (st, r)
        sent = [o]
        for i in range(10):  # (the clients' retries by id of the 503s)
            po = one(50 + i, oid=f"pile{i}")
            st, h, r = a.observe("m", po.body())
            assert st == 200 and r.get("duplicate") is (piled[i] == 200), (i, piled[i], st, r)
            sent.append(po)
        check_all([a], "m", sent, config, None, "after the hang")
        stop_clean(srv)
    finally:
        resume(pids)
        close_all(srvs)


# ---- the password ---------------------------------------------------------------------------------


@test
@pg_only
def pg_attack_password_in_log(args):
    """Connection strings the server cannot use (a database that does not exist, a malformed
    URI), each with a password in a form libpq accepts: `password = x` (spaces around '='), a
    quoted value, a URI's user:password and ?password=: the password appears in no line the
    server logs."""
    if server_mod.PG is None:
        return
    pg = server_mod.PG
    secret = "Hunter2Secret"
    states = [
        f"host={pg.host} port={pg.port} dbname=nosuchdb user=maskloss password = {secret}",
        f"host={pg.host} port={pg.port} dbname=nosuchdb user=maskloss password='{secret} x'",
        f"postgresql://maskloss:{secret}@{pg.host}:{pg.port}/nosuchdb",
        f"postgresql://maskloss@{pg.host}:{pg.port}/nosuchdb?password={secret}",
        f"postgresql://maskloss:{secret}%zz@{pg.host}:{pg.port}/nosuchdb",
    ]
    leaks = []
    for st in states:
        p = subprocess.run([args.server, "--port", "0", "--state-wait", "0"], capture_output=True, text=True,
                           timeout=30, env=dict({k: v for k, v in os.environ.items() if not k.startswith("MASKLOSS_")},
                                                MASKLOSS_STATE=st))
        assert p.returncode != 0, (st, p.returncode)
        out = p.stdout + p.stderr
        if secret in out:
            leaks.append(next(line for line in out.splitlines() if secret in line))
    assert not leaks, "the password in the server's log: " + " | ".join(leaks)


# ---- a crash under load -----------------------------------------------------------------------------


@test
@pg_only
def pg_attack_kill9_under_load(args):
    """Two clients, each sending 30 observations with ids, alternately to two replicas, retrying
    every observation answered otherwise than 200 on the other replica (as through the balancer)
    until it is answered 200; meanwhile PostgreSQL is killed (-9) and restarted (crash recovery),
    twice. At the end both replicas' figures equal numpy's of the 60 observations, each counted
    once: nothing acknowledged lost, nothing retried counted twice."""
    if server_mod.PG is None:
        return
    pg = server_mod.PG
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        config = created(a, "m", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["1h"]})
        b.get("m")
        t_ms = int(time.time() * 1000) // 60000 * 60000 + 1000
        obs = {k: [one(100 * k + i, t=t_ms + i, oid=f"c{k}-{i}") for i in range(30)] for k in range(2)}
        stats = {"retries": 0, "acked": 0, "failed": []}
        lock = threading.Lock()
        stop = time.monotonic() + 60

        def client(k):
            apis = [Api(srvs[0]), Api(srvs[1])]
            for i, o in enumerate(obs[k]):
                r = (i + k) % 2
                while True:
                    try:
                        st, h, body = apis[r].observe("m", o.body())
                    except AssertionError as e:  # (a connection the server dropped)
                        st, body = 0, {"error": str(e)[:100]}
                    if st == 200:
                        with lock:
                            stats["acked"] += 1
                        break
                    with lock:
                        stats["retries"] += 1
                    if time.monotonic() > stop:
                        with lock:
                            stats["failed"].append((k, i, st, body))
                        return
                    r = 1 - r
                    time.sleep(0.05)
                time.sleep(0.02)

        ts = [threading.Thread(target=client, args=(k,)) for k in range(2)]
        for t in ts:
            t.start()
        for _ in range(2):
            time.sleep(0.4)
            pg.kill9()
            time.sleep(0.5)
            pg.start()
        for t in ts:
            t.join(90)
        assert not stats["failed"], stats["failed"][:3]
        assert stats["acked"] == 60, stats
        sent = obs[0] + obs[1]
        ok = wait_until(lambda: all(api.call("GET", "/readyz")[0] == 200 for api in (a, b)), timeout=10)
        assert ok, "a replica not ready again"
        check_all([a, b], "m", sent, config, None, "after PostgreSQL was killed twice under load")
        print(f"    60 observations, {stats['retries']} answers other than 200 retried; each counted once")
        for s in srvs:
            stop_clean(s)
    finally:
        if not server_mod.PG.running():
            server_mod.PG.start()
        close_all(srvs)


@test
@pg_only
def pg_attack_drain_while_hung(args):
    """SIGTERM while PostgreSQL is hung (SIGSTOP) and an observation waits for it: the server
    answers it (503) and exits 0 within its deadlines (a call's --state-timeout 2, the drain's 30 s), not
    stuck on the database."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 1, "--state-timeout", "2")
    pids = []
    try:
        (srv,) = srvs
        a = Api(srv)
        created(a, "m", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["1h"]})
        pids = pg_pids()
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("obs", srv.request(
            "POST", "/v1/monitors/m/observe", json.dumps(one(3, oid="x").body()),
            {"Content-Type": "application/json"}, timeout=60)))
        t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        try:
            rc = srv.proc.wait(45)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
        t.join(5)
        print(f"    exit {rc} {took:.1f} s after SIGTERM; the observation: {res.get('obs', ('none',))[0]}")
        assert rc == 0, f"exit status {rc} ({took:.1f} s); log:\n{srv.log()[-1500:]}"
        assert res.get("obs", (None,))[0] == 503, res
    finally:
        resume(pids)
        close_all(srvs)


@test
@pg_only
def pg_attack_expiry_on_replicas_at_once(args):
    """Predictions past their prediction_ttl (1m) with labels, then three replicas started at
    once on the same database: each one's upkeep at start expires them at the same moment (FOR
    UPDATE SKIP LOCKED shares the rows). The stored and labelled counts then are 0 on every
    replica -- not below, as they would be if two replicas subtracted the same rows -- and
    predictions stored after count from 0."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 1)
    try:
        a = Api(srvs[0])
        assert a.put("x", {"loss": SCE, "dtype": "float64", "num_classes": 3, "prediction_ttl": "1m"})[0] == 201
        rng = np.random.default_rng(17)
        t0 = time.time()
        N = 600
        ids = [f"e{i}" for i in range(N)]
        st, h, b = a.call("POST", "/v1/monitors/x/predictions",
                          {"ids": ids, "logits": f32(rng.normal(0, 2, (N, 3))).tolist(), "time": round(t0 - 57.5, 3)})
        assert st == 200 and b["stored"] == N, (st, b)
        st, h, b = a.call("POST", "/v1/monitors/x/labels",
                          {"labels": [{"id": i, "class": k % 3, "value": 1} for k, i in enumerate(ids)]})
        assert st == 200 and b["applied"] == N, (st, b)
        lb = a.get("x")["labels"]
        assert lb["predictions"] == N and lb["labelled_positions"] == N, lb
        time.sleep(max(0.0, t0 + 3.5 - time.time()))
        more = []
        ts = [threading.Thread(target=lambda: more.append(Server(args.server, env={"MASKLOSS_STATE": dsn})))
              for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        srvs += more
        apis = [Api(s) for s in srvs]
        for api in apis:
            assert wait_until(lambda: api.get("x")["labels"]["predictions"] <= 0, timeout=10), api.get("x")["labels"]
        got = [(api.get("x")["labels"]["predictions"], api.get("x")["labels"]["labelled_positions"],
                [c["labelled"] for c in api.get("x")["labels"]["per_class"]]) for api in apis]
        assert all(g == (0, 0, [0, 0, 0]) for g in got), f"after expiry by replicas at once: {got}"
        st, h, b = apis[1].call("POST", "/v1/monitors/x/predictions",
                                {"ids": ["n1", "n2"], "logits": f32(rng.normal(0, 2, (2, 3))).tolist()})
        assert st == 200 and b["stored"] == 2, (st, b)
        for api in apis:
            lb = api.get("x")["labels"]
            assert lb["predictions"] == 2, lb
        left = server_mod.PG.psql(f"SELECT count(*) FROM {schema}.predictions")
        assert int(left) == 2, left
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_delete_race(args):
    """Two replicas delete the same monitor at once (both have it in memory; a lock holds both
    UPDATEs until both have looked): one deletes it (204), the other finds it gone (404), as
    two DELETEs on one server answer."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        created(a, "m", {"loss": SCE, "num_classes": 2})
        b.get("m")
        hold = Holder(f"BEGIN; LOCK TABLE {schema}.monitors IN EXCLUSIVE MODE;")
        out = {}
        ts = [threading.Thread(target=lambda k=k, api=api: out.setdefault(k, api.call("DELETE", "/v1/monitors/m")))
              for k, api in (("a", a), ("b", b))]
        for t in ts:
            t.start()
        time.sleep(1.5)
        hold.release()
        for t in ts:
            t.join(30)
        codes = sorted(v[0] for v in out.values())
        assert codes == [204, 404], f"two DELETEs of one monitor at once on two replicas answered {codes}"
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


def backend_waiting(schema_like="INSERT INTO buckets%"):
    """The pid of a maskloss-server session waiting for a lock in the statement given."""
    out = server_mod.PG.psql(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'maskloss-server' AND "
        f"wait_event_type = 'Lock' AND query LIKE '{schema_like}'")
    return [int(x) for x in out.split()] if out else []


@test
@pg_only
def pg_attack_retry_while_first_in_flight(args):
    """An observation with an id whose transaction on replica A is held at its commit (another
    session locks the bucket's row); the client's retry of it reaches replica B meanwhile.
    (1) A's transaction then commits: A answers 200, B a duplicate; counted once. (2) A's
    connection is cut (pg_terminate_backend) while B's retry waits for it: A answers 503, B's
    retry is then the one counted (200, not a duplicate); counted once."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        config = created(a, "m", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["1h"]})
        t_ms = int(time.time() * 1000) // 60000 * 60000 + 500
        first = one(0, t=t_ms, oid="first")
        st, h, r = a.observe("m", first.body())
        assert st == 200, (st, r)
        b.get("m")
        sent = [first]
        for case, cut in (("commits", False), ("cut", True)):
            o = one(1 if not cut else 2, t=t_ms + 1, oid=f"inflight-{case}")
            hold = Holder(f"BEGIN; SELECT 1 FROM {schema}.buckets FOR UPDATE;")
            res = {}
            ta = threading.Thread(target=lambda: res.setdefault("a", Api(srvs[0]).observe("m", o.body())))
            ta.start()
            assert wait_until(lambda: backend_waiting(), timeout=5), "A's commit is not waiting on the lock"
            tb = threading.Thread(target=lambda: res.setdefault("b", Api(srvs[1]).observe("m", o.body())))
            tb.start()
            assert wait_until(lambda: server_mod.PG.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'maskloss-server' AND "
                "wait_event_type = 'Lock' AND query LIKE 'INSERT INTO ids%'") == "1", timeout=5), \
                "B's claim of the id is not waiting for A's"
            if cut:
                pid = backend_waiting()[0]
                server_mod.PG.psql(f"SELECT pg_terminate_backend({pid})")
                ta.join(15)
                time.sleep(0.3)
            hold.release()
            ta.join(15)
            tb.join(15)
            sa, sb = res["a"], res["b"]
            if not cut:
                assert sa[0] == 200 and sa[2].get("duplicate") is False, ("A", sa)
                assert sb[0] == 200 and sb[2].get("duplicate") is True, ("B", sb)
            else:
                assert sa[0] == 503, ("A, its connection cut", sa)
                assert sb[0] == 200 and sb[2].get("duplicate") is False, ("B", sb)
            sent.append(o)
            # (A reconnects at most once a second after its last connection: a moment of 503)
            assert wait_until(lambda: a.call("GET", "/readyz")[0] == 200 and a.call("GET", "/v1/monitors/m")[0] == 200,
                              timeout=10), "A not back after its connection was cut"
            check_all([a, b], "m", sent, config, None, f"after a retry while the first was in flight ({case})")
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


def waiting_on(prefix):
    return int(server_mod.PG.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'maskloss-server' AND "
        f"wait_event_type = 'Lock' AND query LIKE '{prefix}%'"))


@test
@pg_only
def pg_attack_labels_crossed_order(args):
    """Replica A's group commit holds three label requests (predictions p1, wa, p2), replica
    B's three others (p2, wb, p1); each locks its predictions as it reads them: A takes p1, B
    takes p2, both wait on wa / wb (locked by another session), and once those are let go A
    waits for p2 while B waits for p1 -- a deadlock, every time, which PostgreSQL ends by
    aborting one transaction. Every label request must still be answered 200 (the store orders
    or retries what PostgreSQL chose as the victim, SQLSTATE 40P01: a client's request is not
    failed for another's order), and the figures equal numpy's."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        C = 2
        m = Late(a, "late", {"loss": SCE, "dtype": "float64", "num_classes": C, "windows": ["1h"]}, pointwise=sce)
        rng = np.random.default_rng(21)
        m.predict(["p0a", "p0b", "p1", "p2", "wa", "wb"], f32(rng.normal(0, 2, (6, C))), round(time.time() - 10, 3))
        b.get("late")
        h1 = Holder(f"BEGIN; SELECT pred FROM {schema}.predictions WHERE id IN ('p0a', 'p0b') FOR UPDATE;")
        hw = Holder(f"BEGIN; SELECT pred FROM {schema}.predictions WHERE id IN ('wa', 'wb') FOR UPDATE;")
        sent = InOrder()

        def go(k, srv, pid, c):
            sent.post(k, srv, "/v1/monitors/late/labels", {"labels": [{"id": pid, "class": c, "value": 1.0}]})

        go("a0", srvs[0], "p0a", 0)
        go("b0", srvs[1], "p0b", 0)
        assert wait_until(lambda: waiting_on("") == 2, timeout=5), \
            ("first labels not waiting", server_mod.PG.psql("SELECT application_name, state, wait_event_type, "
                                                            "left(query, 60) FROM pg_stat_activity"))
        for k, (srv, pid, c) in {"a1": (srvs[0], "p1", 0), "b1": (srvs[1], "p2", 0), "aw": (srvs[0], "wa", 0),
                                 "bw": (srvs[1], "wb", 0), "a2": (srvs[0], "p2", 1), "b2": (srvs[1], "p1", 1)}.items():
            go(k, srv, pid, c)
        h1.release()
        assert wait_until(lambda: waiting_on("") == 2, timeout=5), "second batches not waiting"
        hw.release()
        sent.wait()
        bad = sent.failed()
        assert not bad, f"label requests failed by a deadlock between two replicas' group commits: {bad}"
        m.lab = {(pid, c): (1.0, 1.0) for pid, c in (("p0a", 0), ("p0b", 0), ("p1", 0), ("p2", 0), ("wa", 0),
                                                      ("wb", 0), ("p2", 1), ("p1", 1))}
        m.version += 1
        for api in (a, b):
            m.api = api
            m.check(" after crossed labels", delays=False)
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_ids_crossed_order(args):
    """The same for observations: replica A's group commit holds the observations of ids X, Wa,
    Y, replica B's those of Y, Wb, X (X and Y the clients' retries of each other's, through the
    balancer). Each claims its ids in turn: A takes X, B takes Y, both wait on Wa / Wb (held,
    uncommitted, by another session); once those are let go A waits for B's Y and B for A's X:
    a deadlock, every time. Every observation must be answered 200, X and Y each counted once
    (one of the two a duplicate)."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        config = created(a, "m", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["1h"]})
        b.get("m")
        gen = f"(SELECT generation FROM {schema}.monitors WHERE name = 'm')"
        h1 = Holder(f"BEGIN; INSERT INTO {schema}.ids SELECT {gen}, unnest(ARRAY['zA', 'zB']), 0;")
        hw = Holder(f"BEGIN; INSERT INTO {schema}.ids SELECT {gen}, unnest(ARRAY['Wa', 'Wb']), 0;")
        t_ms = int(time.time() * 1000)
        obs = {k: one(i, t=t_ms, oid=k) for i, k in enumerate(("zA", "zB", "X", "Y", "Wa", "Wb"))}
        sent = InOrder()

        def go(key, srv, oid):
            sent.post(key, srv, "/v1/monitors/m/observe", obs[oid].body())

        go("a0", srvs[0], "zA")
        go("b0", srvs[1], "zB")
        assert wait_until(lambda: waiting_on("INSERT INTO ids") == 2, timeout=5), "first observations not waiting"
        for k, (srv, oid) in {"aX": (srvs[0], "X"), "bY": (srvs[1], "Y"), "aW": (srvs[0], "Wa"),
                              "bW": (srvs[1], "Wb"), "aY": (srvs[0], "Y"), "bX": (srvs[1], "X")}.items():
            go(k, srv, oid)
        h1.release("ROLLBACK;")
        assert wait_until(lambda: waiting_on("INSERT INTO ids") == 2, timeout=5), \
            ("second batches not waiting on Wa, Wb", server_mod.PG.psql(
                "SELECT wait_event_type, left(query, 50) FROM pg_stat_activity WHERE application_name = 'maskloss-server'"))
        hw.release("ROLLBACK;")
        res = sent.wait()
        bad = sent.failed(160)
        assert not bad, f"observations failed by a deadlock between two replicas' group commits: {bad}"
        for pair in (("aX", "bX"), ("aY", "bY")):
            dups = sorted(res[k][2]["duplicate"] for k in pair)
            assert dups == [False, True], (pair, dups)
        check_all([a, b], "m", list(obs.values()), config, None, "after crossed ids")
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_rollup_overflow(args):
    """Two observations with finite sums (weight 1e308, loss 1) in two minutes of one hour, then
    a replica whose upkeep rolls those minutes into their hour (--rollup-after 10m): the hour's
    sum is not finite, and mls_addv in SQL raises 'value out of range: overflow' where C gives
    inf. That must not stop the upkeep: predictions of another monitor past their
    prediction_ttl (1m) are still expired by the same upkeep (with the rollup failing, the
    whole upkeep -- expiry, ids, garbage, retention, of every monitor -- rolls back, every
    minute, for good)."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 1)
    try:
        a = Api(srvs[0])
        assert a.put("big", {"loss": CWL_LOSSES, "dtype": "float64", "windows": ["24h"]})[0] == 201
        assert a.put("late", {"loss": SCE, "dtype": "float64", "num_classes": 2, "prediction_ttl": "1m"})[0] == 201
        now = time.time()
        t1 = max(int(now - 1800) // 3600 * 3600, int(now) - 3000) // 60 * 60 + 5
        for t in (t1, t1 + 60):
            st, h, b = a.observe("big", {"losses": [[1.0]], "mask": [[1e308]], "time": t})
            assert st == 200, (st, b)
        st, h, b = a.call("POST", "/v1/monitors/late/predictions",
                          {"ids": ["x", "y"], "logits": [[0, 1], [1, 0]], "time": round(now - 57.5, 3)})
        assert st == 200 and b["stored"] == 2, (st, b)
        time.sleep(max(0.0, now + 3.5 - time.time()))
        srvs.append(Server(args.server, "--rollup-after", "10m", env={"MASKLOSS_STATE": dsn}))
        b2 = Api(srvs[1])
        expired = wait_until(lambda: b2.get("late")["labels"]["predictions"] == 0, timeout=4)
        rows = server_mod.PG.psql(f"SELECT width, count(*) FROM {schema}.buckets GROUP BY width ORDER BY 1")
        assert expired, (f"predictions past their ttl not expired by the upkeep of a replica whose rollup "
                         f"overflows (buckets by width: {rows!r}; the upkeep's transaction fails as a whole)")
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_labels_lock_after_undone_op(args):
    """The labels' advisory lock (store_pg.c read_preds, LABELS_LOCK) is taken inside the
    savepoint of the first op of a group commit that reads predictions; when that op is undone
    (ROLLBACK TO SAVEPOINT: here a predictions request re-sending a stored id with a new slice
    beyond --max-slice-values, 422), PostgreSQL releases the lock with the savepoint, but the
    store still believes it holds it (labels_locked), so the next label requests of the same
    group commit lock predictions without it. Replica A's group commit: [that predictions
    request, labels of p1, wa, p2]; replica B's: [the same, labels of p2, wb, p1]: A locks p1,
    B p2, both wait on wa / wb (held by another session); once let go, a deadlock, which the
    lock exists to prevent. Every label request must be answered 200 (the predictions requests
    422), and the figures equal numpy's."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2, "--max-slice-values", "1")
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        C = 2
        m = Late(a, "late", {"loss": SCE, "dtype": "float64", "num_classes": C, "slices": ["s"], "windows": ["1h"]},
                 pointwise=sce)
        rng = np.random.default_rng(22)
        m.predict(["p0a", "p0b", "p1", "p2", "wa", "wb", "e1"], f32(rng.normal(0, 2, (7, C))),
                  round(time.time() - 10, 3), slc={"s": "x"})
        b.get("late")
        h1 = Holder(f"BEGIN; SELECT pred FROM {schema}.predictions WHERE id IN ('p0a', 'p0b') FOR UPDATE;")
        hw = Holder(f"BEGIN; SELECT pred FROM {schema}.predictions WHERE id IN ('wa', 'wb') FOR UPDATE;")
        sent = InOrder()
        go = sent.post

        def lab(pid, c):
            return "/v1/monitors/late/labels", {"labels": [{"id": pid, "class": c, "value": 1.0}]}

        def undone(new_id):  # e1 stored already (its drop_prediction reads it), a second slice value
            return "/v1/monitors/late/predictions", {"ids": ["e1", new_id], "logits": [[0.5, -1.0], [1.0, 0.0]],
                                                     "slice": {"s": "y"}}

        go("a0", srvs[0], *lab("p0a", 0))
        go("b0", srvs[1], *lab("p0b", 0))
        assert wait_until(lambda: waiting_on("") == 2, timeout=5), "first labels not waiting"
        for k, (srv, req) in {"ua": (srvs[0], undone("na")), "ub": (srvs[1], undone("nb")),
                              "a1": (srvs[0], lab("p1", 0)), "b1": (srvs[1], lab("p2", 0)),
                              "aw": (srvs[0], lab("wa", 0)), "bw": (srvs[1], lab("wb", 0)),
                              "a2": (srvs[0], lab("p2", 1)), "b2": (srvs[1], lab("p1", 1))}.items():
            go(k, srv, *req)
        h1.release()
        assert wait_until(lambda: waiting_on("") == 2, timeout=5), "second batches not waiting"
        time.sleep(0.5)  # (settled: A on wa; B on wb, or on A's lock)
        hw.release()
        res = sent.wait()
        for k in ("ua", "ub"):
            assert res[k][0] == 422, (k, res[k])
        bad = {k: v for k, v in sent.failed().items() if k not in ("ua", "ub")}
        assert not bad, (f"label requests failed by a deadlock between two replicas' group commits after an undone "
                         f"op released the labels' lock: {bad}")
        m.lab = {(pid, c): (1.0, 1.0) for pid, c in (("p0a", 0), ("p0b", 0), ("p1", 0), ("p2", 0), ("wa", 0),
                                                      ("wb", 0), ("p2", 1), ("p1", 1))}
        m.version += 1
        for api in (a, b):
            m.api = api
            m.check(" after crossed labels behind an undone op", delays=False)
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


M64 = (1 << 64) - 1


def _pred_hash(gen, pid):
    """store_pg.c pred_hash (FNV-1a from the generation, then mix): where an id sits in the
    store's read cache, to pick ids that collide at the end of its table."""
    h = 14695981039346656037 ^ gen
    for ch in pid.encode():
        h = ((h ^ ch) * 1099511628211) & M64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    return h ^ (h >> 33)


def _probe_first(adds, want):
    """The entry (index into adds) the cache's lookup of hash `want` meets first among those of
    that hash, after the index_add calls adds (hashes, in order): store_pg.c index_add's open
    addressing (start 256, doubled past half full, rehashed in slot order)."""
    cap, slots = 0, []
    for e, h in enumerate(adds):
        if 2 * (len([s for s in slots if s]) + 1) > cap:
            ncap = cap * 2 if cap else 256
            n = [None] * ncap
            for s in slots:
                if s:
                    j = s[0] & (ncap - 1)
                    while n[j]:
                        j = (j + 1) & (ncap - 1)
                    n[j] = s
            slots, cap = n, ncap
        j = h & (cap - 1)
        while slots[j]:
            j = (j + 1) & (cap - 1)
        slots[j] = (h, e)
    j = want & (cap - 1)
    while slots[j]:
        if slots[j][0] == want:
            return slots[j][1]
        j = (j + 1) & (cap - 1)
    return None


@test
@pg_only
def pg_attack_labels_same_id_read_twice(args):
    """One group commit of four label requests: (1) X; (2) X and Y -- X is in the store's read
    cache already, but the hinted batch read for Y names X again: a second cache entry for X,
    left 'not found' (read_preds fills only the entry its lookup meets first, the older one);
    (3) 130 other predictions -- the cache's index doubles, re-inserting its slots in slot
    order, so that an older entry at the table's end and a newer one wrapped to its start swap
    places; (4) X again: the lookup now meets the 'not found' entry, and X -- stored, not
    expired -- is counted unknown, its label never stored. (X's id is picked so that its hash
    sits at the end of the 256-slot table.) Every label must count (unknown 0), the figures
    equal numpy's."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 1)
    try:
        a = Api(srvs[0])
        C = 2
        m = Late(a, "late", {"loss": SCE, "dtype": "float64", "num_classes": C, "windows": ["1h"]}, pointwise=sce)
        gen = int(server_mod.PG.psql(f"SELECT generation FROM {schema}.monitors WHERE name = 'late'"))
        zs = [f"z{i:03d}" for i in range(130)]
        y = "y0"
        x = None
        for i in range(200000):
            cand = f"k{i}"
            h = _pred_hash(gen, cand)
            if h & 255 != 255:
                continue
            # the index_add calls of the second transaction: (1) [X], (2) the hints [X, Y] sorted,
            # (3) the Zs; then (4) looks X up: it must meet the second entry (the bug's case)
            adds = [h] + [_pred_hash(gen, p) for p in sorted([cand, y])] + [_pred_hash(gen, z) for z in zs]
            second = 1 + sorted([cand, y]).index(cand)
            if _probe_first(adds[:second + 1], h) == 0 and _probe_first(adds, h) == second:
                x = cand
                break
        assert x, "no id found whose cache entries swap places"
        rng = np.random.default_rng(23)
        ids = ["p0", x, y] + zs
        m.predict(ids, f32(rng.normal(0, 2, (len(ids), C))), round(time.time() - 10, 3))
        h1 = Holder(f"BEGIN; SELECT pred FROM {schema}.predictions WHERE id = 'p0' FOR UPDATE;")
        sent = InOrder()

        def go(k, labels):
            sent.post(k, srvs[0], "/v1/monitors/late/labels", {"labels": labels})

        go("first", [{"id": "p0", "class": 0, "value": 1.0}])
        assert wait_until(lambda: waiting_on("") == 1, timeout=5), "first labels not waiting"
        go("1", [{"id": x, "class": 0, "value": 1.0}])
        go("2", [{"id": x, "class": 1, "value": 1.0}, {"id": y, "class": 0, "value": 1.0}])
        go("3", [{"id": z, "class": 0, "value": 1.0} for z in zs])
        go("4", [{"id": x, "class": 0, "value": 0.0}])
        h1.release()
        res = sent.wait()
        assert not sent.failed(), sent.failed()
        unknown = {k: (v[2].get("unknown"), v[2].get("unknown_ids")) for k, v in res.items() if v[2].get("unknown")}
        assert not unknown, f"stored predictions counted unknown within one group commit: {unknown}"
        m.lab = {(p, c): (v, 1.0) for p, c, v in [("p0", 0, 1.0), (x, 1, 1.0), (y, 0, 1.0), (x, 0, 0.0)] +
                 [(z, 0, 1.0) for z in zs]}
        m.version += 1
        m.check(" after one id read twice in a group commit", delays=False)
        stop_clean(srvs[0])
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_label_ids_crossed_order(args):
    """pg_attack_ids_crossed_order for label requests with an "id" (a client's retry through
    the balancer on another replica): their group commits claim the ids in arrival order (74b3298
    sorts only observations), and a label request claims its id before it takes the labels' lock.
    Replica A's group commit: [L1 labelling wa, L2 labelling p2]; replica B's: [L2, L1] (the same
    two requests). A claims L1, takes the labels' lock and waits on wa (held by another session);
    B claims L2 and waits for the labels' lock; once wa is let go A claims L2 and waits for B: a
    deadlock, every time. Every label request must be answered 200, each id counted once (one
    of each pair a duplicate), the figures equal numpy's."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        C = 2
        m = Late(a, "late", {"loss": SCE, "dtype": "float64", "num_classes": C, "windows": ["1h"]}, pointwise=sce)
        rng = np.random.default_rng(24)
        m.predict(["p0a", "p0b", "p2", "wa"], f32(rng.normal(0, 2, (4, C))), round(time.time() - 10, 3))
        b.get("late")
        h1 = Holder(f"BEGIN; SELECT pred FROM {schema}.predictions WHERE id IN ('p0a', 'p0b') FOR UPDATE;")
        hw = Holder(f"BEGIN; SELECT pred FROM {schema}.predictions WHERE id = 'wa' FOR UPDATE;")
        sent = InOrder()
        bodies = {"L1": {"id": "L1", "labels": [{"id": "wa", "class": 0, "value": 1.0}]},
                  "L2": {"id": "L2", "labels": [{"id": "p2", "class": 0, "value": 1.0}]},
                  "a0": {"labels": [{"id": "p0a", "class": 0, "value": 1.0}]},
                  "b0": {"labels": [{"id": "p0b", "class": 0, "value": 1.0}]}}

        def go(k, srv, body):
            sent.post(k, srv, "/v1/monitors/late/labels", bodies[body])

        go("a0", srvs[0], "a0")
        go("b0", srvs[1], "b0")
        assert wait_until(lambda: waiting_on("") == 2, timeout=5), "first labels not waiting"
        for k, (srv, body) in {"a1": (srvs[0], "L1"), "b2": (srvs[1], "L2"), "a2": (srvs[0], "L2"),
                               "b1": (srvs[1], "L1")}.items():
            go(k, srv, body)
        h1.release()
        assert wait_until(lambda: waiting_on("") == 2, timeout=5), "second batches not waiting"
        time.sleep(0.5)  # (settled: A on wa, B on the labels' lock)
        hw.release()
        res = sent.wait()
        bad = sent.failed()
        assert not bad, f"label requests with ids failed by a deadlock between two replicas' group commits: {bad}"
        for pair in (("a1", "b1"), ("a2", "b2")):
            dups = sorted(bool(res[k][2].get("duplicate")) for k in pair)
            assert dups == [False, True], (pair, dups, [res[k][2] for k in pair])
        m.lab = {(pid, 0): (1.0, 1.0) for pid in ("p0a", "p0b", "p2", "wa")}
        m.version += 1
        for api in (a, b):
            m.api = api
            m.check(" after crossed label ids", delays=False)
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_attack_predictions_retry_crossed_with_labels(args):
    """A predictions request retried on another replica while labels flow: replica A's group
    commit [labels of wa, predictions P], replica B's [predictions P (the retry), labels of p2].
    A takes the labels' lock and waits on wa (held by another session); B stores P (uncommitted)
    and waits for the labels' lock; once wa is let go A's insert of P waits for B's transaction:
    a deadlock, every time (predictions are stored in arrival order, after the lock of a label
    request before them). Every request must be answered 200, P stored once (refused as stored
    by the other), the figures equal numpy's."""
    if server_mod.PG is None:
        return
    schema, dsn = fresh_schema()
    srvs = replicas(args, dsn, 2)
    try:
        a, b = Api(srvs[0]), Api(srvs[1])
        C = 2
        m = Late(a, "late", {"loss": SCE, "dtype": "float64", "num_classes": C, "windows": ["1h"]}, pointwise=sce)
        rng = np.random.default_rng(25)
        t = round(time.time() - 10, 3)
        m.predict(["p0a", "p0b", "p2", "wa"], f32(rng.normal(0, 2, (4, C))), t)
        xp = f32(rng.normal(0, 2, (1, C)))
        b.get("late")
        h1 = Holder(f"BEGIN; SELECT pred FROM {schema}.predictions WHERE id IN ('p0a', 'p0b') FOR UPDATE;")
        hw = Holder(f"BEGIN; SELECT pred FROM {schema}.predictions WHERE id = 'wa' FOR UPDATE;")
        sent = InOrder()

        def lab(pid):
            return "/v1/monitors/late/labels", {"labels": [{"id": pid, "class": 0, "value": 1.0}]}

        pred = ("/v1/monitors/late/predictions", {"ids": ["P"], "logits": xp.astype(np.float64).tolist(), "time": t})

        def go(k, srv, req):
            sent.post(k, srv, *req)

        go("a0", srvs[0], lab("p0a"))
        go("b0", srvs[1], lab("p0b"))
        assert wait_until(lambda: waiting_on("") == 2, timeout=5), "first labels not waiting"
        for k, (srv, req) in {"aw": (srvs[0], lab("wa")), "bP": (srvs[1], pred), "aP": (srvs[0], pred),
                              "b2": (srvs[1], lab("p2"))}.items():
            go(k, srv, req)
        h1.release()
        assert wait_until(lambda: waiting_on("") == 2, timeout=5), "second batches not waiting"
        time.sleep(0.5)  # (settled: A on wa, B on the labels' lock)
        hw.release()
        res = sent.wait()
        bad = sent.failed()
        assert not bad, f"requests failed by a deadlock between two replicas' group commits: {bad}"
        stored = sorted(res[k][2].get("stored") for k in ("aP", "bP"))
        assert stored == [0, 1], ("P stored once", res["aP"][2], res["bP"][2])
        m.ids.append("P")
        m.X.append(np.asarray(xp[0], dtype=np.float64))
        m.bucket.append(m.bucket[0])
        m.slc.append(m.slc[0])
        m.ptime.append(m.ptime[0])
        m.row["P"] = len(m.ids) - 1
        m.reqs.append(m.reqs[0])
        m.lab = {(pid, 0): (1.0, 1.0) for pid in ("p0a", "p0b", "p2", "wa")}
        m.version += 1
        for api in (a, b):
            m.api = api
            m.check(" after a predictions retry crossed with labels", delays=False)
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)
