"""End-to-end test of drift against a pinned reference range (drift.reference in a monitor's
config): the baseline of every window is the buckets that start in the range, whatever lies
between. The expected z-scores are computed here with numpy."""
import time

import numpy as np

from common import test
from server import Server
from tests_monitor_rollup import call, sce


@test
def monitor_drift_reference(args):
    with Server(args.server, "--state", ":memory:") as srv:
        now = int(time.time())
        ref = {"from": now // 60 * 60 - 7200, "to": now // 60 * 60 - 3600}
        config = {"loss": "sigmoid_cross_entropy", "num_classes": 3, "windows": ["5m", "1h"],
                  "drift": {"z": 3, "min_weight": 10, "reference": ref}}
        status, got = call(srv, "PUT", "/v1/monitors/d", config)
        assert status == 201, got
        assert got["config"]["drift"] == {"z": 3, "min_weight": 10, "reference": ref}, got

        rng = np.random.default_rng(5)
        groups = {"ref": [], "between": [], "current": []}

        def send(group, t, shift):
            x = rng.normal(size=(30, 3)).round(4)
            z = (rng.random((30, 3)) < 0.5).astype(float)
            m = (rng.random((30, 3)) < 0.8).astype(float)
            x[:, 2] -= shift * (2 * z[:, 2] - 1)  # class 2 pushed the wrong way: a larger loss
            status, got = call(srv, "POST", "/v1/monitors/d/observe",
                               {"labels": z.tolist(), "logits": x.tolist(), "mask": m.tolist(),
                                "time": t})
            assert status == 200, got
            groups[group].append((z, x, m))

        for i in range(6):
            send("ref", ref["from"] + 60 * i + 7, 0)
        send("ref", ref["from"] - 30, 5)  # just before the range: not in it
        for i in range(4):
            send("between", now - 1800 + 60 * i, 4)  # in the 1h window, not in the reference
        for i in range(4):
            send("current", now - 30 - i, 2.5)

        status, got = call(srv, "GET", "/v1/monitors/d")
        assert status == 200, got

        def stats(obs, k):
            l = np.concatenate([sce(z, x)[:, k] for z, x, _ in obs])
            w = np.concatenate([m[:, k] for _, _, m in obs])
            sw = w.sum()
            mean = (w * l).sum() / sw
            var = max((w * l * l).sum() / sw - mean * mean, 0.0)
            return mean, var, (w != 0).sum(), sw

        want = []
        for name, cur in (("5m", groups["current"]), ("1h", groups["current"] + groups["between"])):
            for k in range(3):
                m1, v1, n1, w1 = stats(cur, k)
                m0, v0, n0, w0 = stats(groups["ref"][:6], k)
                zscore = (m1 - m0) / np.sqrt(v1 / n1 + v0 / n0)
                if abs(zscore) >= 3 and w1 >= 10 and w0 >= 10:
                    want.append((name, k, zscore, m1, m0, w1, w0))
        want.sort(key=lambda d: -abs(d[2]))
        assert want, "the data must drift"
        drift = got["drift"]
        assert [(d["window"], d["class"]) for d in drift] == [(w[0], w[1]) for w in want], (drift, want)
        for d, (_, _, zscore, m1, m0, w1, w0) in zip(drift, want):
            for key, value in (("z", zscore), ("loss", m1), ("baseline_loss", m0)):
                assert abs(d[key] - value) <= 1e-5 * abs(value), (key, d, value)
            assert d["weight"] == w1 and d["baseline_weight"] == w0, d

        for bad in ({"from": ref["to"], "to": ref["from"]}, {"from": "yesterday", "to": ref["to"]},
                    {"from": ref["from"]}, [ref["from"], ref["to"]]):
            c = dict(config, drift={"reference": bad})
            status, got = call(srv, "PUT", "/v1/monitors/e", c)
            assert status == 422 and got["code"] == "invalid_monitor" and \
                got["field"] == "drift.reference", (bad, status, got)
        print(f"    {len(want)} drifting (window, class) pairs against the pinned range, z "
              f"{want[0][2]:.1f} at worst; 4 bad references refused")
