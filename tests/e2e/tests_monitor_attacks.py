"""End-to-end regressions of defects found by attacking the monitors: each test names what it
guards against."""
import json
import os
import shutil
import tempfile

from common import sqlite_only, expect_error, json_call as call, plain_only, stop_clean, test, JSON
from server import Server


@test
def monitor_reference_reloads(args):
    """A drift.reference is kept as whole Unix seconds and read back as numbers at a restart.
    A range accepted as given but not as stored (an RFC 3339 offset before 1970, a 'to' past
    year 9999 by its offset, from and to in the same second) made the state refuse to load:
    the server exited 1 at every restart. Such ranges are refused at the PUT instead."""
    tmp = tempfile.mkdtemp(prefix="maskloss-attacks-")
    try:
        state = os.path.join(tmp, "state.db")
        bad = [{"from": "1970-01-01T00:30:00+01:00", "to": "2026-12-01T00:00:00Z"},  # -1800
               {"from": "2026-12-01T00:00:00Z", "to": "9999-12-31T23:59:59-10:00"},  # > 9999
               {"from": 1796000000.2, "to": 1796000000.7},  # both 1796000000
               {"from": "2026-12-01T00:00:00.25Z", "to": "2026-12-01T00:00:00.75Z"}]
        good = {"from": "1970-01-01T00:00:00Z", "to": "2026-12-01T00:00:00.5+01:00"}
        with Server(args.server, "--state", state) as srv:
            for i, ref in enumerate(bad):
                expect_error(call(srv, "PUT", f"/v1/monitors/bad{i}",
                                  {"loss": "sigmoid_cross_entropy", "drift": {"reference": ref}}),
                             422, "invalid_monitor", "drift.reference")
            st, _, got = call(srv, "PUT", "/v1/monitors/good",
                              {"loss": "sigmoid_cross_entropy", "drift": {"reference": good}})
            assert st == 201, got
            # 2026-11-30T23:00:00.5Z, in whole seconds
            assert got["config"]["drift"]["reference"] == {"from": 0, "to": 1796079600}, got
            config = got["config"]
            # Its own normalized config is the same config.
            st, _, again = call(srv, "PUT", "/v1/monitors/good", config)
            assert st == 200 and again["config"] == config, (st, again)
            stop_clean(srv)
        with Server(args.server, "--state", state) as srv:
            st, _, got = call(srv, "GET", "/v1/monitors")
            assert st == 200 and [m["name"] for m in got["monitors"]] == ["good"], got
            assert got["monitors"][0]["config"] == config, got
            stop_clean(srv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("    drift.reference ranges that would not read back refused; a restart loads the state")


@test
@sqlite_only
def monitor_file_size_limit(args):
    """A file-size limit (RLIMIT_FSIZE: ulimit -f, systemd's LimitFSIZE=) reached by the state:
    the write fails and the observation is answered 503 state_unavailable. The server itself
    (not a shim that ignores SIGXFSZ for it) was killed by SIGXFSZ at the first observation."""
    import resource
    import time
    tmp = tempfile.mkdtemp(prefix="maskloss-attacks-")
    obs = {"labels": [[1, 0]], "logits": [[0.5, -1]]}
    try:
        with Server(args.server, "--state", os.path.join(tmp, "state.db")) as srv:
            st, _, got = call(srv, "PUT", "/v1/monitors/f", {"loss": "sigmoid_cross_entropy"})
            assert st == 201, got
            assert call(srv, "POST", "/v1/monitors/f/observe", obs)[0] == 200
            resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
            try:
                expect_error(call(srv, "POST", "/v1/monitors/f/observe", obs), 503,
                             "state_unavailable")
                assert srv.proc.poll() is None, f"the server died: {srv.proc.returncode}"
                assert call(srv, "POST", "/v1/loss", dict(obs, loss="sigmoid_cross_entropy"))[0] == 200
            finally:
                if srv.proc.poll() is None:
                    resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            for _ in range(25):
                st, _, got = call(srv, "POST", "/v1/monitors/f/observe", obs)
                if st == 200:
                    break
                time.sleep(0.2)
            assert st == 200, got
            st, _, got = call(srv, "GET", "/v1/monitors/f")
            assert got["total"]["observations"] == 2, got["total"]
            stop_clean(srv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("    RLIMIT_FSIZE 0: 503 state_unavailable, the server alive, then 200 again")


@test
@sqlite_only
def monitor_failed_commit_leaves_no_slice(args):
    """Observations refused 503 (the store cannot be written) count nothing, and that includes
    their slice combinations: those were made ready in memory before the commit and kept after
    it failed, so they showed in the figures (with no observation, until a restart) and counted
    against --max-slice-values: during the outage a new slice got 422 limit_exceeded instead of
    503, and once the store came back, new slices were refused."""
    import resource
    import time
    tmp = tempfile.mkdtemp(prefix="maskloss-attacks-")

    def obs(v):
        return {"labels": [[1, 0]], "logits": [[0.5, -1]], "slice": {"v": v}}

    try:
        with Server(args.server, "--state", os.path.join(tmp, "state.db"),
                    "--max-slice-values", "2") as srv:
            st, _, got = call(srv, "PUT", "/v1/monitors/f",
                              {"loss": "sigmoid_cross_entropy", "slices": ["v"]})
            assert st == 201, got
            assert call(srv, "POST", "/v1/monitors/f/observe", obs("a"))[0] == 200
            resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
            try:
                for v in ("b", "c", "d"):
                    expect_error(call(srv, "POST", "/v1/monitors/f/observe", obs(v)), 503,
                                 "state_unavailable")
                st, _, got = call(srv, "GET", "/v1/monitors/f")
                assert sorted(got["slices"]) == ["v=a"], got["slices"]
            finally:
                if srv.proc.poll() is None:
                    resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            for _ in range(25):
                st, _, got = call(srv, "POST", "/v1/monitors/f/observe", obs("e"))
                if st != 503:
                    break
                time.sleep(0.2)
            assert st == 200, (st, got)
            expect_error(call(srv, "POST", "/v1/monitors/f/observe", obs("g")), 422,
                         "limit_exceeded", "slice")
            st, _, got = call(srv, "GET", "/v1/monitors/f")
            assert {k: v["total"]["observations"] for k, v in got["slices"].items()} == \
                {"v=a": 1, "v=e": 1}, got["slices"]
            assert got["total"]["observations"] == 2, got["total"]
            stop_clean(srv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("    slices of observations refused 503 neither shown nor counted against "
          "--max-slice-values")


@test
@plain_only
def monitor_writer_not_starved_by_queries(args):
    """Queries that overlap must not keep the writer thread waiting: a monitor's lock let new
    readers in while the writer waited (glibc's default), and three clients asking for the
    figures of a monitor of 1000 classes in a loop held an observation for ever (and behind it,
    the one writer thread, every observation of every monitor)."""
    import threading
    import time
    C = 1000
    # Two workers for three clients: a query is always waiting for a worker, so that the
    # running queries overlap and, without the fix, the lock never has no reader.
    with Server(args.server, "--state", ":memory:", "--workers", "2") as srv:
        st, _, got = call(srv, "PUT", "/v1/monitors/wide",
                          {"loss": "sigmoid_cross_entropy", "num_classes": C, "slices": ["v"]})
        assert st == 201, got
        row = {"labels": [[0.0] * C], "logits": [[0.1] * C]}
        for k in range(40):
            st, _, got = call(srv, "POST", "/v1/monitors/wide/observe", dict(row, slice={"v": f"s{k}"}))
            assert st == 200, got
        stop, gets, failures = [False], [0], []

        def query():
            while not stop[0]:
                try:
                    status = srv.request("GET", "/v1/monitors/wide", timeout=120)[0]
                    gets[0] += 1
                    if status != 200:
                        failures.append(status)
                except Exception as e:  # noqa: BLE001 (reported below)
                    failures.append(repr(e))

        threads = [threading.Thread(target=query) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            t0 = time.monotonic()
            st, _, got = srv.request("POST", "/v1/monitors/wide/observe",
                                     json.dumps(dict(row, slice={"v": "s0"})), JSON, timeout=60)
            took = time.monotonic() - t0
        finally:
            stop[0] = True
            for t in threads:
                t.join()
        assert st == 200, (st, got)
        assert not failures, failures[:3]
        st, _, got = call(srv, "GET", "/v1/monitors/wide")
        assert got["total"]["observations"] == 41, got["total"]
        stop_clean(srv)
    print(f"    an observation among 3 looping queries answered in {took:.1f} s ({gets[0]} GETs)")
