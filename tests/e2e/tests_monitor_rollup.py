"""End-to-end tests of the monitors' rollup: minute buckets older than --rollup-after become
hour buckets (at start, then about once a minute), observations older than it go to their hour
at once, and neither changes a figure. The expected sums are computed here with numpy."""
import shutil
import tempfile
import time

import numpy as np

from common import json_call, test
from server import Server

C = 3


def sce(z, x):
    """TF's sigmoid cross-entropy of float32 inputs, in float64 (numpy, elementwise)."""
    z = np.asarray(z, np.float32).astype(np.float64)
    x = np.asarray(x, np.float32).astype(np.float64)
    return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


def call(srv, method, path, body=None):
    status, _, data = json_call(srv, method, path, body)
    return status, data


def close(a, b, what, rel=1e-6):
    assert abs(a - b) <= rel * max(abs(a), abs(b), 1e-12), f"{what}: {a} != {b}"


@test
def monitor_rollup(args):
    state = tempfile.mkdtemp(prefix="maskloss-rollup-")
    try:
        rng = np.random.default_rng(12)
        now = time.time()
        hour = lambda t: int(t) // 3600 * 3600  # noqa: E731
        minute = lambda t: int(t) // 60 * 60  # noqa: E731
        # Observations 20 to 45 minutes old, in several minutes (and maybe two hours).
        obs = []
        for i in range(12):
            t = now - 20 * 60 - i * 130
            z = (rng.random((4, C)) < 0.5).astype(float)
            x = rng.normal(size=(4, C)).round(3)
            m = (rng.random((4, C)) < 0.7).astype(float)
            obs.append((t, z, x, m))
        config = {"loss": "sigmoid_cross_entropy", "num_classes": C}

        def expected():
            ws = np.zeros(C)
            nz = np.zeros(C)
            for _, z, x, m in obs:
                ws += (sce(z, x) * m).sum(axis=0)
                nz += (m != 0).sum(axis=0)
            return ws, nz

        def check_totals(srv, what):
            status, got = call(srv, "GET", "/v1/monitors/r")
            assert status == 200, got
            ws, nz = expected()
            close(got["total"]["weighted_sum"], ws.sum(), what + " weighted_sum")
            assert got["total"]["num_nonzero_weights"] == nz.sum(), what
            assert got["total"]["observations"] == len(obs), what
            for c in range(C):
                pc = got["total"]["per_class"][c]
                close(pc["weighted_sum"], ws[c], f"{what} class {c}")
                assert pc["num_nonzero_weights"] == nz[c], what
            return got

        def series_times(srv):
            q = f"/v1/monitors/r/series?step=1m&from={int(now) - 7200}&to={int(now) + 60}"
            status, got = call(srv, "GET", q)
            assert status == 200, got
            return sorted(p["t"] for p in got["points"]), sum(p["observations"] for p in got["points"])

        path = f"{state}/s.db"
        with Server(args.server, "--state", path) as srv:
            status, got = call(srv, "PUT", "/v1/monitors/r", config)
            assert status == 201, got
            for t, z, x, m in obs:
                status, got = call(srv, "POST", "/v1/monitors/r/observe",
                                   {"labels": z.tolist(), "logits": x.tolist(), "mask": m.tolist(),
                                    "time": t})
                assert status == 200, got
                assert got["bucket"] == minute(t), got  # a minute bucket under the default 48h
            before = check_totals(srv, "minute buckets")
            times, n = series_times(srv)
            assert times == sorted({minute(t) for t, *_ in obs}), times
            assert n == len(obs)
            srv.proc.kill()  # no drain: the state must already hold everything
            srv.proc.wait()

        # Restarted with a 10-minute rollup: the upkeep at start merges every minute bucket into
        # its hour; the figures stay; a new old observation goes straight to its hour.
        with Server(args.server, "--state", path, "--rollup-after", "10m") as srv:
            def rolled():
                times, n = series_times(srv)
                return times == sorted({hour(t) for t, *_ in obs}) and n == len(obs)
            deadline = time.monotonic() + 20
            while not rolled():
                assert time.monotonic() < deadline, series_times(srv)
                time.sleep(0.1)
            after = check_totals(srv, "hour buckets")
            for k in ("weighted_sum", "num_nonzero_weights", "elements", "samples", "observations"):
                close(after["total"][k], before["total"][k], "rollup changed " + k, rel=1e-12)
            t = now - 15 * 60
            z = np.ones((1, C))
            x = np.zeros((1, C))
            m = np.ones((1, C))
            status, got = call(srv, "POST", "/v1/monitors/r/observe",
                               {"labels": z.tolist(), "logits": x.tolist(), "mask": m.tolist(),
                                "time": t})
            assert status == 200 and got["bucket"] == hour(t), got
            close(got["loss"], float(np.log(2)), "log 2")
            obs.append((t, z, x, m))
            check_totals(srv, "an observation older than --rollup-after")
        print(f"    {len(obs) - 1} observations in {len({minute(o[0]) for o in obs[:-1]})} minute "
              f"buckets rolled into {len({hour(o[0]) for o in obs[:-1]})} hour bucket(s); figures kept")
    finally:
        shutil.rmtree(state, ignore_errors=True)
