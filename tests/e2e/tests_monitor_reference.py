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


def comparison(obs, cols):
    """The drift rule's figures of the observations' columns `cols` (a window or its baseline),
    from its formulas in float64: Σw, m = Σw·l/Σw, var = Σw·l²/Σw − m², n = #(w ≠ 0)."""
    if not obs:
        return {"sw": 0.0, "n": 0}
    loss = np.concatenate([sce(z, x)[:, cols].ravel() for _, z, x, _ in obs])
    w = np.concatenate([m[:, cols].ravel() for _, _, _, m in obs])
    sw = float(w.sum())
    if sw == 0:
        return {"sw": 0.0, "n": 0}
    mean = float((w * loss).sum()) / sw
    var = max(float((w * loss * loss).sum()) / sw - mean * mean, 0.0)
    return {"sw": sw, "n": int((w != 0).sum()), "mean": mean, "var": var}


def expected_comparison(cur, base):
    """baseline_loss, baseline_weight, change and z as GET /v1/monitors/{name} gives them in a
    window's figure (None: no weight on a side)."""
    want = {"baseline_loss": base.get("mean"), "baseline_weight": base["sw"], "change": None, "z": None}
    if cur["sw"] > 0 and base["sw"] > 0:
        want["change"] = cur["mean"] - base["mean"]
        want["z"] = want["change"] / np.sqrt(cur["var"] / cur["n"] + base["var"] / base["n"])
    return want


def check_comparison(what, got, want, extent):
    """got's four fields against want; `extent` (the loss's size) scales the change's tolerance:
    a difference of two means keeps their absolute error, not its own relative one."""
    for k in ("baseline_loss", "baseline_weight", "change", "z"):
        assert k in got, (what, k, got)
        g, w = got[k], want[k]
        if w is None:
            assert g is None, (what, k, g)
            continue
        assert isinstance(g, (int, float)) and not isinstance(g, bool), (what, k, g, w)
        tol = {"baseline_loss": 1e-9 * abs(w), "baseline_weight": 0.0, "change": 1e-9 * extent,
               "z": 1e-6 * max(abs(w), 1.0)}[k]
        assert abs(g - w) <= tol, (what, k, g, w)


@test
def monitor_drift_per_class(args):
    """Every class of the whole monitor's windows carries the drift comparison (baseline mean
    and weight, change, z), listed in "drift" or not: a drifting class, one below drift.z, one
    above it with too little weight, one without a baseline (nulls); a monitor without classes
    has them in its windows' figures. Expected values from the observations, in numpy."""
    with Server(args.server, "--state", ":memory:") as srv:
        classes = ["up", "still", "light", "new"]
        drift = {"z": 3, "min_weight": 10}
        configs = {
            "pc": {"loss": "sigmoid_cross_entropy", "dtype": "float64", "classes": classes,
                   "slices": ["v"], "windows": ["5m", "1h"], "drift": drift},
            "pcw": {"loss": "sigmoid_cross_entropy", "dtype": "float64", "windows": ["5m", "1h"],
                    "drift": drift},
        }
        for name, config in configs.items():
            status, got = call(srv, "PUT", "/v1/monitors/" + name, config)
            assert status == 201, got

        rng = np.random.default_rng(17)
        now = int(time.time())
        sent = []  # (bucket, labels, logits, weights)

        def send(age, shift, new_weight, version):
            N = 40
            z = (rng.random((N, 4)) < 0.5).astype(float)
            x = rng.normal(0, 1.5, (N, 4))
            w = rng.choice([0.0, 0.5, 1.0, 2.0], size=(N, 4))
            w[:, 2] *= 1 / 32   # light: Σw of a few units on each side, below min_weight
            w[:, 3] *= new_weight  # new: no weight before the current minutes
            for k in (0, 2):   # up and light pushed the wrong way: a larger loss
                x[:, k] -= shift * (2 * z[:, k] - 1)
            x = x.astype(np.float32).astype(np.float64)  # what sce() reads, exactly
            t = now - age
            for name in configs:
                status, got = call(srv, "POST", f"/v1/monitors/{name}/observe",
                                   {"labels": z.tolist(), "logits": x.tolist(), "mask": w.tolist(),
                                    "time": t, **({"slice": {"v": version}} if name == "pc" else {})})
                assert status == 200, got
            sent.append((t // 60 * 60, z, x, w))

        for age in (5400, 4500):     # the 1h window's baseline
            send(age, 0, 0, "a")
        send(1800, 0, 0, "a")        # in the 1h window only
        for age in (480, 420, 360):  # the 5m window's baseline, in the 1h window
            send(age, 0, 0, "b")
        for age in (150, 90, 20):    # the current minutes
            send(age, 2.5, 1, "b")

        answers = {name: call(srv, "GET", "/v1/monitors/" + name) for name in configs}
        for name, (status, got) in answers.items():
            assert status == 200, got
        pc, pcw = answers["pc"][1], answers["pcw"][1]
        seen = {"listed": 0, "below_z": 0, "light": 0, "no_baseline": 0}
        for doc, cols_of in ((pc, {c: [k] for k, c in enumerate(classes)}), (pcw, {None: [0, 1, 2, 3]})):
            listed = set()
            for w in ("5m", "1h"):
                frm = doc["now"] // 60 * 60 - {"5m": 300, "1h": 3600}[w] + 60
                cur = [o for o in sent if o[0] >= frm]
                base = [o for o in sent if frm - {"5m": 300, "1h": 3600}[w] <= o[0] < frm]
                fig = doc["windows"][w]
                assert fig["from"] == frm, (fig["from"], frm)
                for c, cols in cols_of.items():
                    got = fig if c is None else next(p for p in fig["per_class"] if p["class"] == c)
                    a, b = comparison(cur, cols), comparison(base, cols)
                    want = expected_comparison(a, b)
                    check_comparison(f"{doc['name']} {w} {c}", got, want, abs(a.get("mean", 1.0)))
                    z = want["z"]
                    if z is not None and abs(z) >= drift["z"] and min(a["sw"], b["sw"]) >= drift["min_weight"]:
                        listed.add((w, c))
                    if c is not None:
                        seen["listed"] += (w, c) in listed
                        seen["below_z"] += z is not None and abs(z) < drift["z"]
                        seen["light"] += z is not None and abs(z) >= drift["z"] and (w, c) not in listed
                        seen["no_baseline"] += want["baseline_loss"] is None
            # The drift list is these figures' (window, class) pairs past the rule, the same bits.
            assert {(e["window"], e["class"]) for e in doc["drift"]} == listed, (doc["drift"], listed)
            for e in doc["drift"]:
                fig = doc["windows"][e["window"]]
                got = fig if e["class"] is None else \
                    next(p for p in fig["per_class"] if p["class"] == e["class"])
                for k in ("baseline_loss", "baseline_weight", "change", "z"):
                    assert got[k] == e[k], (doc["name"], e, k, got[k])
        assert all(seen.values()), f"the data must hold every case: {seen}"
        assert pcw["drift"], "the whole must drift"
        # Drift compares the whole monitor's windows only: not its total, not a slice's figures,
        # not a whole with classes.
        for name, fig in [("total", pc["total"]), ("5m", pc["windows"]["5m"]), ("pcw total", pcw["total"])] + \
                [(f"{s} {w}", pc["slices"][s]["windows"][w]) for s in pc["slices"] for w in ("5m", "1h")]:
            assert not {"change", "z"} & set(fig), (name, fig)
            if name.startswith("v="):
                assert all(not {"change", "z"} & set(p) for p in fig["per_class"]), (name, fig)
        print(f"    {len(pc['drift'])} drifting of {2 * len(classes)} (window, class) figures, "
              f"cases {seen}; the whole: z {pcw['windows']['5m']['z']:.2f} (5m)")
