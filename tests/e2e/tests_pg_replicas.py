"""Replicas on one PostgreSQL (run.py --pg): every replica answers with the global figures.

- Three replicas, observations spread over them (ids retried on another replica are
  duplicates), predictions on one and labels on the others: every replica's GET equals numpy's.
- A monitor replaced or deleted on one replica is so on the others.
- Two replicas' upkeeps rolling the same minutes into hours count each once.
- Schema migration by replicas starting at once.
- PostgreSQL stopped, hung (SIGSTOP) and killed: observes 503 + Retry-After, /readyz 503,
  /v1/loss answered; back by itself, nothing acknowledged lost.
- The password in no log line.
"""
import copy
import os
import signal
import subprocess
import threading
import time

import numpy as np

import server as server_mod
from common import pg_only, stop_clean, test, wait_until
from server import Server
from tests_late import CLASSES, Late, f32, random_elem_labels, sce
from tests_monitors import (SCE, SLICES, Api, Diff, check_monitor, created, figures,
                            random_observations)


def replicas(args, n, *extra, state=None):
    """n servers on one schema (the first one's)."""
    state = state or server_mod.pg_state(":memory:")
    return [Server(args.server, "--state", state, *extra) for _ in range(n)], state


def close_all(srvs):
    for s in srvs:
        s.__exit__(None, None, None)


@test
@pg_only
def pg_replicas_agree(args):
    """64 observations of every kind round robin over three replicas into two monitors, ids
    retried on the next replica (duplicates there); 120 predictions stored through one replica,
    labels in 6 batches through the other two: after each, all three GETs equal numpy's."""
    rng = np.random.default_rng(151)
    now_ms = int(time.time() * 1000)
    obs = random_observations(rng, now_ms, 64)
    srvs, _ = replicas(args, 3)
    try:
        apis = [Api(s) for s in srvs]
        monitors = {"c64": ({"loss": SCE, "dtype": "float64", "classes": ["cat", "dog", "bird", "fish", "ant"],
                             "slices": SLICES}, ["cat", "dog", "bird", "fish", "ant"], False),
                    "n32": ({"loss": SCE, "num_classes": 5, "slices": SLICES, "windows": ["1m", "10m", "2h"]},
                            5, True)}
        configs = {name: created(apis[i], name, cfg) for i, (name, (cfg, _, _)) in enumerate(monitors.items())}
        sent = {name: [copy.copy(o) for o in obs] for name in monitors}
        for name in monitors:
            for i, o in enumerate(sent[name]):
                api = apis[i % 3]
                st, h, b = api.observe(name, o.body(name + "-"))
                assert st == 200 and b.get("duplicate") is False, (name, i, st, b)
                if o.t_ms is None:
                    o.server_time = b["time"]
                if o.oid is not None:  # the client's retry, through the balancer to another
                    st, h, b = apis[(i + 1) % 3].observe(name, o.body(name + "-"))
                    assert st == 200 and b.get("duplicate") is True, (name, i, "retry", st, b)
        report = []
        for name, (cfg, cl, fp32) in monitors.items():
            for r, api in enumerate(apis):
                d = Diff(fp32)
                check_monitor(d, api.get(name), sent[name], configs[name], cl)
                d.done(f" in GET /v1/monitors/{name} of replica {r}")
            report.append(f"{name}: {d.count} figures x 3 replicas")
        # Late labels: stored through replica 0, labelled through 1 and 2.
        C = len(CLASSES)
        m = Late(apis[0], "late", {"loss": SCE, "dtype": "float64", "classes": CLASSES, "slices": ["region"],
                                   "windows": ["5m", "1h"]}, pointwise=sce)
        now = time.time()
        for j, off in enumerate((-3000, -600, -5)):
            ids = [f"p{j}-{i}" for i in range(40)]
            m.api = apis[j % 3]
            m.predict(ids, f32(rng.normal(0, 2, (40, C))), round(now + off, 3), {"region": ["eu", "us"][j % 2]})
        for b in range(6):
            m.api = apis[1 + b % 2]
            if b % 3 == 2:
                sel = list(rng.choice(len(m.ids), 8, replace=False))
                m.dense([m.ids[i] for i in sel], rng.choice(np.array([0, 1, 0.5]), (8, C)),
                        rng.choice(np.array([0, 1, 1, 0.25]), (8, C)))
            else:
                m.label(random_elem_labels(rng, m), key=f"batch-{b}")
            for api in apis:
                m.api = api
                m.check(f" after batch {b}, on replica {apis.index(api)}", delays=False)
        # A label batch retried by its id on another replica: a duplicate, nothing changed.
        m.api = apis[0]
        m.label(random_elem_labels(rng, m), key="batch-0")
        for api in apis:
            m.api = api
            m.check(" after a retried batch", delays=False)
        report.append(f"late: {len(m.ids)} predictions, {len(m.lab)} labelled positions x 3 replicas")
        for a in apis:
            a.close()
        for s in srvs:
            stop_clean(s)
        print("    " + "; ".join(report))
    finally:
        close_all(srvs)


@test
@pg_only
def pg_replicas_replace_delete(args):
    """Create on one replica, observe on another, replace (?force=true, another config) on the
    third: every replica shows the new config, empty; delete on one: 404 on all, and an
    observation to it 404; created again elsewhere: there on all."""
    srvs, _ = replicas(args, 3)
    try:
        a, b, c = (Api(s) for s in srvs)
        created(a, "m", {"loss": SCE, "num_classes": 2})
        body = {"logits": [[0.5, -1.0]], "labels": [[1, 0]]}
        st, h, got = b.observe("m", body)
        assert st == 200, (st, got)
        for api in (a, b, c):
            assert api.get("m")["total"]["observations"] == 1
        st, h, got = c.put("m", {"loss": SCE, "num_classes": 3}, force=True)
        assert st == 200, (st, got)
        for api in (a, b, c):
            g = api.get("m")
            assert g["config"]["num_classes"] == 3 and g["total"]["observations"] == 0, g
        st, h, got = a.observe("m", {"logits": [[0.5, -1.0, 2]], "labels": [[1, 0, 1]]})
        assert st == 200, (st, got)
        st, h, got = b.call("DELETE", "/v1/monitors/m")
        assert st in (200, 204), (st, got)
        for api in (a, b, c):
            st, h, got = api.call("GET", "/v1/monitors/m")
            assert st == 404, (st, got)
            st, h, got = api.observe("m", body)
            assert st == 404, (st, got)
            st, h, got = api.call("GET", "/v1/monitors")
            assert st == 200 and got["monitors"] == [], got
        created(c, "m", {"loss": SCE, "num_classes": 2})
        st, h, got = a.observe("m", body)
        assert st == 200, (st, got)
        for api in (a, b, c):
            g = api.get("m")
            assert g["config"]["num_classes"] == 2 and g["total"]["observations"] == 1, g
        for api in (a, b, c):
            api.close()
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)


@test
@pg_only
def pg_replicas_rollup_once(args):
    """Minute buckets 20 to 50 minutes old, written through two replicas; both restarted at
    once with --rollup-after 10m, so that both upkeeps roll the same minutes into their hours
    together: the totals still equal numpy's (each minute added to its hour once), and the
    1-minute series has no point older than 10 minutes left as a minute."""
    rng = np.random.default_rng(152)
    now_ms = int(time.time() * 1000)
    cfg = {"loss": SCE, "dtype": "float64", "num_classes": 3}
    obs = []
    from tests_monitors import Obs
    for i in range(40):
        labels = (rng.random((2, 3)) < 0.5).astype(np.float64)
        x = rng.normal(0, 2, (2, 3)).astype(np.float32).astype(np.float64)
        obs.append(Obs(labels, x, None, now_ms - int(rng.integers(20 * 60_000, 50 * 60_000)), oid=f"o{i}"))
    srvs, state = replicas(args, 2)
    try:
        apis = [Api(s) for s in srvs]
        created(apis[0], "r", cfg)
        for i, o in enumerate(obs):
            st, h, b = apis[i % 2].observe("r", o.body())
            assert st == 200 and b["bucket"] == o.bucket, (st, b)
        for a in apis:
            a.close()
        for s in srvs:
            stop_clean(s)
        close_all(srvs)
        # Both at once: each loads the minutes before the other's upkeep has rolled them.
        srvs = [None, None]

        def one(i):
            srvs[i] = Server(args.server, "--state", state, "--rollup-after", "10m")
        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(srvs), srvs
        apis = [Api(s) for s in srvs]
        want = figures(obs, "SUM_BY_NONZERO_WEIGHTS", 3)

        def rolled(api):
            st, h, b = api.series("r", {"step": "1m", "from": str(now_ms // 1000 - 3 * 3600)})
            assert st == 200, (st, b)
            return b

        for r, api in enumerate(apis):
            wait_until(lambda: api.get("r")["total"]["observations"] == len(obs), timeout=10)
            d = Diff()
            d.figures("total", api.get("r")["total"], want)
            d.done(f" in GET on replica {r} after two rollups at once")
        schema = state.split("search_path=")[1].rstrip("'")
        left = server_mod.PG.psql(f"SELECT count(*) FROM {schema}.buckets WHERE width = 60 AND "
                                  f"start < {now_ms // 1000 - 11 * 60}")
        hours = server_mod.PG.psql(f"SELECT count(*) FROM {schema}.buckets WHERE width = 3600")
        assert left == "0" and int(hours) >= 1, (left, hours)
        # Each minute in its hour: the points of the 1-minute series add up to every observation.
        for r, api in enumerate(apis):
            pts = rolled(api)["points"]
            got_obs = sum(p.get("observations", 0) for p in pts)
            assert got_obs == len(obs), (r, got_obs, pts[:3])
        for a in apis:
            a.close()
        for s in srvs:
            stop_clean(s)
    finally:
        close_all(srvs)
    print(f"    {len(obs)} observations in minutes 20-50 min old, rolled by two replicas at once")


@test
@pg_only
def pg_migrations_at_once(args):
    """Four servers started at the same moment on an empty schema: all start, one migration
    recorded; the schema has every table."""
    state = server_mod.pg_state(":memory:")
    srvs, errors = [None] * 4, []

    def one(i):
        try:
            srvs[i] = Server(args.server, "--state", state)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        schema = state.split("search_path=")[1].rstrip("'")
        got = server_mod.PG.psql(f"SELECT version, name FROM {schema}.schema_version")
        assert got == "1|001_init.sql", got
        tables = server_mod.PG.psql(f"SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}'")
        assert int(tables) >= 10, tables
        for s in srvs:
            stop_clean(s)
    finally:
        close_all([s for s in srvs if s])


def metric(srv, name):
    for line in srv.metrics()[1].split("\n"):
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


@test
@pg_only
def pg_unreachable_then_back(args):
    """PostgreSQL stopped: within the poll's second /readyz is 503 state_unavailable, an
    observation 503 with Retry-After, a monitor GET 503, /v1/loss 200; started again: /readyz
    200 by itself, the observation retried by its id counted once, nothing acknowledged lost.
    Then hung (SIGSTOP): a write answers 503 after --state-timeout (2 s), not never; resumed: back.
    Then killed -9 and restarted (crash recovery): every acknowledged observation still there."""
    pg = server_mod.PG
    srvs, _ = replicas(args, 1, "--state-timeout", "2")
    srv = srvs[0]
    acked = 0
    try:
        api = Api(srv)
        created(api, "u", {"loss": SCE, "num_classes": 2})
        body = {"logits": [[0.5, -1.0]], "labels": [[1, 0]]}

        def observe(oid):
            st, h, b = api.observe("u", dict(body, id=oid))
            return st, h, b

        for i in range(5):
            assert observe(f"a{i}")[0] == 200
            acked += 1
        pg.stop()
        t0 = time.monotonic()
        ready = wait_until(lambda: api.call("GET", "/readyz")[0] == 503, timeout=10, every=0.05)
        assert ready, "readyz still 200 with PostgreSQL stopped"
        took = time.monotonic() - t0
        st, h, b = api.call("GET", "/readyz")
        assert st == 503 and b.get("code") == "state_unavailable" and b.get("ready") is False, (st, b)
        st, h, b = observe("during")
        assert st == 503 and b.get("code") == "state_unavailable" and h.get("retry-after"), (st, h, b)
        st, h, b = api.call("GET", "/v1/monitors/u")
        assert st == 503 and b.get("code") == "state_unavailable", (st, b)
        st, h, b = api.call("POST", "/v1/loss", {"loss": SCE, **body})
        assert st == 200, (st, b)
        assert metric(srv, "maskloss_ready") == 0, metric(srv, "maskloss_ready")
        pg.start()
        back = wait_until(lambda: api.call("GET", "/readyz")[0] == 200, timeout=15, every=0.1)
        assert back, f"not ready again after PostgreSQL came back: {srv.log()[-1500:]}"
        st, h, b = observe("during")  # the client's retry
        assert st == 200 and b["duplicate"] is False, (st, b)
        acked += 1
        st, h, b = observe("during")
        assert st == 200 and b["duplicate"] is True, (st, b)
        assert api.get("u")["total"]["observations"] == acked
        # Hung: the postmaster and its backends stopped, connections open and silent.
        pids = [pg.postmaster_pid()] + pg._children(pg.postmaster_pid())
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            t1 = time.monotonic()
            st, h, b = observe("hung")
            hung_took = time.monotonic() - t1
            assert st == 503 and b.get("code") == "state_unavailable", (st, b)
            assert 1.5 < hung_took < 8, f"answered after {hung_took:.1f} s with --state-timeout 2"
            st, h, b = api.call("POST", "/v1/loss", {"loss": SCE, **body})
            assert st == 200, (st, b)
        finally:
            for p in pids:
                try:
                    os.kill(p, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        assert wait_until(lambda: api.call("GET", "/readyz")[0] == 200, timeout=20, every=0.1), \
            srv.log()[-1500:]
        st, h, b = observe("hung")
        assert st == 200, (st, b)
        acked += 1 - b["duplicate"]
        for i in range(5):
            assert observe(f"b{i}")[0] == 200
            acked += 1
        pg.kill9()
        pg.start()
        # A connection lost while idle is replaced at its next use; but the readiness poll (once
        # a second) may have run while PostgreSQL was down, and then reads answer 503 until its
        # next round finds it back (seen on a loaded machine): wait for that, as a balancer would.
        assert wait_until(lambda: api.call("GET", "/readyz")[0] == 200, timeout=20, every=0.1), \
            srv.log()[-1500:]
        got = api.get("u")["total"]["observations"]
        assert got == acked, f"{got} observations after PostgreSQL's crash, {acked} acknowledged"
        log = srv.log()
        assert "unreachable" in log and "reachable again" in log, log[-1500:]
        print(f"    not ready {took:.2f} s after PostgreSQL stopped; a write to a hung one answered "
              f"503 in {hung_took:.1f} s; {acked} acknowledged observations kept through a kill -9")
        api.close()
        stop_clean(srv)
    finally:
        if not pg.running():
            pg.start()
        close_all(srvs)


@test
@pg_only
def pg_password_never_logged(args):
    """The password of the connection string, the URL or PGPASSWORD appears in no log line,
    whether the connection works or is refused."""
    pg = server_mod.PG
    secret = pg.password
    quoted = __import__("urllib.parse").parse.quote(secret, safe="")
    # Refused: a wrong database in a URL with the password in it.
    bad_url = pg.url.rsplit("/", 1)[0] + "/nosuchdb"
    r = subprocess.run([args.server, "--port", "0", "--state", bad_url, "--state-wait", "1"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0, r
    assert "nosuchdb" in r.stderr, r.stderr[-500:]
    assert secret not in r.stderr and quoted not in r.stderr, r.stderr[-800:]
    assert "***" in r.stderr, r.stderr[-500:]
    # Working, from PGPASSWORD and from PGPASSFILE: nothing of it in the log after some work.
    for env in ({"PGPASSWORD": secret}, {"PGPASSFILE": pg.passfile()}):
        with Server(args.server, "--state", pg.dsn_nopass, env=env) as srv:
            api = Api(srv)
            assert api.call("GET", "/readyz")[0] == 200
            api.close()
            stop_clean(srv)
            assert secret not in srv.log(), srv.log()[-500:]




@test
@pg_only
def pg_unreadable_config_skipped(args):
    """A monitor whose stored config this build cannot read (as a newer replica's could be, in a
    rolling upgrade) is left out, said in the log, while the others are served and the replica
    stays ready -- at start and when the feed brings it."""
    state = server_mod.pg_state(":memory:")
    schema = state.split("search_path=")[1].rstrip("'")
    srvs, _ = replicas(args, 1, state=state)
    try:
        api = Api(srvs[0])
        created(api, "fine", {"loss": SCE, "num_classes": 2})
        server_mod.PG.psql(f"INSERT INTO {schema}.monitors(name, generation, config) VALUES "
                           f"('future', nextval('{schema}.generations'), "
                           "'{{\"loss\": \"a_loss_of_the_future\"}}')")
        assert wait_until(lambda: "future" in srvs[0].log(), timeout=10), srvs[0].log()[-800:]
        assert api.call("GET", "/readyz")[0] == 200
        st, h, b = api.call("GET", "/v1/monitors")
        assert st == 200 and [m["name"] for m in b["monitors"]] == ["fine"], b
        assert api.observe("fine", {"logits": [[0.5, -1.0]], "labels": [[1, 0]]})[0] == 200
        api.close()
        stop_clean(srvs[0])
        close_all(srvs)
        srvs, _ = replicas(args, 1, state=state)
        api = Api(srvs[0])
        assert api.call("GET", "/readyz")[0] == 200
        assert api.get("fine")["total"]["observations"] == 1
        assert api.call("GET", "/v1/monitors/future")[0] == 404
        assert "future" in srvs[0].log(), srvs[0].log()[-800:]
        api.close()
        stop_clean(srvs[0])
    finally:
        close_all(srvs)
