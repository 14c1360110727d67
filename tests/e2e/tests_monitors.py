"""End-to-end tests of the loss monitors (/v1/monitors, issue 12): configuration, observations,
windows, slices, classes, series, drift, durability across kill -9, store failures, metrics
and v2. Every expected figure is computed here with numpy from the observations sent, never
read back from the server (its `now` and `from` only say which observations a window holds)."""
import base64
import contextlib
import copy
import http.client
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

import numpy as np

from common import sqlite_only, JSON, expect_error, ref, stop_clean, test, wait_until
from server import Server, exchange

SCE = "sigmoid_cross_entropy"
BCE = "torch.nn.functional.binary_cross_entropy_with_logits"
CWL = "tf.compat.v1.losses.compute_weighted_loss"
DEFAULT_WINDOWS = ["5m", "1h", "24h"]
SLICES = ["model_version", "region"]
UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# ---- Plumbing ----------------------------------------------------------------------------------


@contextlib.contextmanager
def state_dir():
    d = tempfile.mkdtemp(prefix="maskloss-mon-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def start(args, state, *extra, **kw):
    return Server(args.server, "--state", state, *extra, **kw)


class Api:
    """One keep-alive connection to a server, with the monitor routes."""

    def __init__(self, srv):
        self.srv = srv
        self.conn = srv.connect()

    def call(self, method, path, body=None, headers=None):
        if headers is None:
            headers = JSON if body is not None else {}
        try:
            return exchange(self.conn, method, path, body, headers)
        except (http.client.HTTPException, ConnectionError):
            # The server may close a connection after an error answer: once more, anew.
            self.conn.close()
            self.conn = self.srv.connect()
            try:
                return exchange(self.conn, method, path, body, headers)
            except (http.client.HTTPException, ConnectionError) as e:
                rc = self.srv.proc.poll()
                raise AssertionError(f"{method} {path}: {e!r}; the server's exit status: {rc}; "
                                     f"its log:\n{self.srv.log()[-2000:]}") from None

    def put(self, name, config, force=False):
        return self.call("PUT", f"/v1/monitors/{name}" + ("?force=true" if force else ""), config)

    def get(self, name):
        st, h, b = self.call("GET", f"/v1/monitors/{name}")
        assert st == 200, (name, st, b)
        return b

    def observe(self, name, body):
        return self.call("POST", f"/v1/monitors/{name}/observe", body)

    def series(self, name, query):
        return self.call("GET", f"/v1/monitors/{name}/series?" + urllib.parse.urlencode(query))

    def close(self):
        self.conn.close()


def created(api, name, config, status=201):
    st, h, b = api.put(name, config)
    assert st == status, (name, config, st, b)
    assert b["name"] == name and isinstance(b["config"], dict), b
    return b["config"]


def seconds(d):
    return int(d[:-1]) * UNIT[d[-1]]


def rfc3339(t_ms, offset_minutes=None):
    """t (integer milliseconds) as RFC 3339: "Z", or a numeric offset, fraction when not whole."""
    sec, ms = divmod(t_ms, 1000)
    tz = timezone.utc if offset_minutes is None else timezone(timedelta(minutes=offset_minutes))
    s = datetime.fromtimestamp(sec, tz).strftime("%Y-%m-%dT%H:%M:%S")
    if ms:
        s += ".%03d" % ms
    if offset_minutes is None:
        return s + "Z"
    sign = "+" if offset_minutes >= 0 else "-"
    return s + "%s%02d:%02d" % (sign, abs(offset_minutes) // 60, abs(offset_minutes) % 60)


def num(x):
    return ref.num(x)


# ---- The numpy reference -----------------------------------------------------------------------

def sigmoid_ce(z, x):
    """TensorFlow's sigmoid_cross_entropy_with_logits (= torch's BCE with logits, pos_weight 1)."""
    return np.maximum(x, 0.0) - x * z + np.log1p(np.exp(-np.abs(x)))


def tensor(a, fmt):
    if fmt == "b64":
        return {"shape": list(a.shape), "dtype": "float32",
                "b64": base64.b64encode(a.astype("<f4").tobytes()).decode()}
    if fmt == "data":
        return {"shape": list(a.shape), "data": a.ravel().tolist()}
    return a.tolist()


class Obs:
    """One observation: float32-representable arrays [N, C] (weights possibly [N, 1] or absent),
    its event time in milliseconds (None: the server's clock), slice values and id."""

    def __init__(self, labels, x, weights=None, t_ms=None, slc=None, oid=None, fmt="json",
                 time_fmt="number", input_name="logits"):
        self.labels, self.x, self.weights = labels, x, weights
        self.t_ms, self.slc, self.oid, self.fmt, self.time_fmt = t_ms, dict(slc or {}), oid, fmt, time_fmt
        self.input_name = input_name
        self.server_time = None  # the answer's "time" when the server's clock chose it

    @property
    def t(self):
        return self.t_ms / 1000 if self.t_ms is not None else self.server_time

    @property
    def bucket(self):
        if self.t_ms is not None:
            return self.t_ms // 60000 * 60
        return math.floor(self.t / 60) * 60

    def tensors(self):
        body = {self.input_name: tensor(self.x, self.fmt)}
        if self.labels is not None:
            body["labels"] = tensor(self.labels, self.fmt)
        if self.weights is not None:
            body["weights" if self.fmt != "json" else "mask"] = tensor(self.weights, self.fmt)
        return body

    def body(self, oid_prefix=""):
        body = self.tensors()
        if self.t_ms is not None:
            if self.time_fmt == "number":
                body["time"] = self.t_ms / 1000 if self.t_ms % 1000 else self.t_ms // 1000
            elif self.time_fmt == "Z":
                body["time"] = rfc3339(self.t_ms)
            else:
                body["time"] = rfc3339(self.t_ms, self.time_fmt)
        if self.slc:
            body["slice"] = self.slc
        if self.oid is not None:
            body["id"] = oid_prefix + self.oid
        return body

    def elementwise(self):
        if self.input_name == "losses":
            return self.x
        return sigmoid_ce(self.labels, self.x)

    def stats(self):
        """Per class (last axis) sums: weighted sum, Σw, Σ[w≠0], elements, Σw·l²; and N."""
        l = self.elementwise()
        w = np.ones_like(l) if self.weights is None else np.broadcast_to(self.weights, l.shape)
        return {"ws": (w * l).sum(axis=0), "sw": w.sum(axis=0), "nnz": (w != 0).sum(axis=0).astype(np.int64),
                "el": np.full(l.shape[1], l.shape[0], np.int64), "sq": (w * l * l).sum(axis=0),
                "samples": l.shape[0]}


# The reduction's denominator per element and its empty-denominator rule (proto/README.md).
REDUCTIONS = {"SUM_BY_NONZERO_WEIGHTS": ("nnz", "tf"), "SUM_OVER_NONZERO_WEIGHTS": ("nnz", "tf"),
              "MEAN": ("sw", "tf"), "SUM_OVER_BATCH_SIZE": ("el", "tf"), "mean": ("el", "torch")}


def divide(ws, den, rule):
    if rule == "tf":
        return 0.0 if den == 0 else ws / den
    if den == 0:
        return math.nan if ws == 0 else math.copysign(math.inf, ws)
    return ws / den


def figures(obs, reduction, classes=None, cls=None):
    """F of a list of observations; per_class when `classes` (the names, or None for indices
    given as an int count); `cls` = one class's sums instead of the whole (for series)."""
    key, rule = REDUCTIONS[reduction]
    st = [o.stats() for o in obs]
    C = len(st[0]["ws"]) if st else (len(classes) if isinstance(classes, list) else classes or 1)
    tot = {k: np.zeros(C, dtype=np.int64 if k in ("nnz", "el") else np.float64)
           for k in ("ws", "sw", "nnz", "el", "sq")}
    for s in st:
        for k in tot:
            tot[k] = tot[k] + s[k]
    sel = slice(None) if cls is None else slice(cls, cls + 1)
    ws, sw, nnz = float(tot["ws"][sel].sum()), float(tot["sw"][sel].sum()), int(tot["nnz"][sel].sum())
    den = {"nnz": float(nnz), "sw": sw, "el": float(tot["el"][sel].sum())}[key]
    f = {"loss": divide(ws, den, rule), "weighted_sum": ws, "denominator": den, "sum_weights": sw,
         "num_nonzero_weights": nnz, "elements": int(tot["el"].sum()), "samples": int(sum(s["samples"] for s in st)),
         "observations": len(obs)}
    if classes is not None and cls is None:
        names = classes if isinstance(classes, list) else list(range(classes))
        pc = []
        for c, name in enumerate(names):
            cden = {"nnz": float(tot["nnz"][c]), "sw": float(tot["sw"][c]), "el": float(tot["el"][c])}[key]
            pc.append({"class": name, "loss": divide(float(tot["ws"][c]), cden, rule),
                       "weighted_sum": float(tot["ws"][c]), "denominator": cden,
                       "sum_weights": float(tot["sw"][c]), "num_nonzero_weights": int(tot["nnz"][c]),
                       "sum_sq": float(tot["sq"][c])})
        f["per_class"] = pc
    return f


class Diff:
    """Collects mismatches; `done()` fails with the first of them."""

    def __init__(self, fp32=False):
        self.errors = []
        self.fp32 = fp32
        self.count = 0

    def num(self, what, got, want, scale=None, rtol=1e-9, exact=False):
        self.count += 1
        g = num(got)
        if isinstance(g, bool) or not isinstance(g, (int, float)):
            self.errors.append(f"{what}: {got!r}, expected {want!r}")
            return
        if exact:
            ok = g == want
        elif isinstance(want, float) and math.isnan(want):
            ok = math.isnan(g)
        elif isinstance(want, float) and math.isinf(want):
            ok = g == want
        else:
            atol = 0.0
            if self.fp32:
                # float32 elementwise work, summed in double: golden.json's float32 tolerance,
                # per element (scale = what the absolute part multiplies: Σw for sums).
                rtol = max(rtol, 2e-5)
                atol = 1e-6 * (1.0 if scale is None else scale)
            ok = abs(g - want) <= atol + rtol * abs(want) + 1e-300
        if not ok:
            self.errors.append(f"{what}: {got!r}, expected {want!r}")

    def eq(self, what, got, want):
        self.count += 1
        if got != want:
            self.errors.append(f"{what}: {got!r}, expected {want!r}")

    def figures(self, what, got, want):
        if not isinstance(got, dict):
            self.errors.append(f"{what}: not an object: {got!r}")
            return
        sw = abs(want["sum_weights"]) + 1
        self.num(f"{what}.loss", got.get("loss"), want["loss"], 1.0)
        self.num(f"{what}.weighted_sum", got.get("weighted_sum"), want["weighted_sum"], sw)
        self.num(f"{what}.denominator", got.get("denominator"), want["denominator"], 0.0)
        self.num(f"{what}.sum_weights", got.get("sum_weights"), want["sum_weights"], 0.0)
        for k in ("num_nonzero_weights", "elements", "samples", "observations"):
            if k in want:
                self.num(f"{what}.{k}", got.get(k), want[k], exact=True)
        if "per_class" in want:
            pcs = got.get("per_class")
            if not isinstance(pcs, list) or len(pcs) != len(want["per_class"]):
                self.errors.append(f"{what}.per_class: {pcs!r:.200}, expected {len(want['per_class'])} entries")
                return
            for g, w in zip(pcs, want["per_class"]):
                c = f"{what}.per_class[{w['class']!r}]"
                self.eq(f"{c}.class", g.get("class"), w["class"])
                wsw = abs(w["sum_weights"]) + 1
                self.num(f"{c}.loss", g.get("loss"), w["loss"], 1.0)
                self.num(f"{c}.weighted_sum", g.get("weighted_sum"), w["weighted_sum"], wsw)
                self.num(f"{c}.denominator", g.get("denominator"), w["denominator"], 0.0)
                self.num(f"{c}.sum_weights", g.get("sum_weights"), w["sum_weights"], 0.0)
                self.num(f"{c}.num_nonzero_weights", g.get("num_nonzero_weights"), w["num_nonzero_weights"], exact=True)
                self.num(f"{c}.sum_sq", g.get("sum_sq"), w["sum_sq"], 10 * wsw)
        elif "per_class" in got:
            self.errors.append(f"{what}: per_class without classes configured")

    def done(self, context=""):
        assert not self.errors, f"{len(self.errors)} of {self.count} figures differ{context}:\n" + \
            "\n".join(self.errors[:25])


def window_from(now, w):
    return now // 60 * 60 - seconds(w) + 60


def check_monitor(d, got, obs, config, classes=None):
    """The whole GET answer against the observations (total, every window, every slice value's
    marginal and its windows)."""
    red = config["reduction"]
    now = got["now"]
    d.eq("now is an integer", isinstance(now, int), True)
    d.figures("total", got["total"], figures(obs, red, classes))

    def windows(prefix, wins, sub):
        d.eq(f"{prefix}windows keys", sorted(wins or {}), sorted(config["windows"]))
        for w in config["windows"]:
            g = (wins or {}).get(w) or {}
            frm = window_from(now, w)
            d.eq(f"{prefix}windows[{w}].from", g.get("from"), frm)
            d.figures(f"{prefix}windows[{w}]", g, figures([o for o in sub if o.bucket >= frm], red, classes))
    windows("", got.get("windows"), obs)
    want_keys = {}
    for o in obs:
        for k, v in o.slc.items():
            want_keys.setdefault(f"{k}={v}", []).append(o)
    slices = got.get("slices") or {}
    d.eq("slices keys", sorted(slices), sorted(want_keys))
    for key, sub in want_keys.items():
        g = slices.get(key) or {}
        d.figures(f"slices[{key}].total", g.get("total"), figures(sub, red, classes))
        windows(f"slices[{key}].", g.get("windows"), sub)


def expected_drift(obs, config, now, classes=None):
    """The drift list of the spec, computed from the observations in float64."""
    out = []
    names = classes if isinstance(classes, list) else (list(range(classes)) if classes else [None])
    for wi, w in enumerate(config["windows"]):
        frm = window_from(now, w)
        cur = [o.stats() for o in obs if o.bucket >= frm]
        base = [o.stats() for o in obs if frm - seconds(w) <= o.bucket < frm]

        def sums(st, c):
            sel = slice(None) if c is None else slice(c, c + 1)
            return (sum(float(s["sw"][sel].sum()) for s in st), sum(float(s["ws"][sel].sum()) for s in st),
                    sum(float(s["sq"][sel].sum()) for s in st), sum(int(s["nnz"][sel].sum()) for s in st))
        for ci, name in enumerate(names):
            c = None if name is None else ci
            swc, wsc, sqc, nc = sums(cur, c)
            swb, wsb, sqb, nb = sums(base, c)
            mw = config["drift"]["min_weight"]
            if not (swc >= mw and swb >= mw and swc > 0 and swb > 0):
                continue
            mc, mb = wsc / swc, wsb / swb
            vc, vb = max(sqc / swc - mc * mc, 0.0), max(sqb / swb - mb * mb, 0.0)
            s = math.sqrt(vc / nc + vb / nb)
            if s == 0:
                if mc == mb:
                    continue
                z = math.copysign(math.inf, mc - mb)
            else:
                z = (mc - mb) / s
            if abs(z) >= config["drift"]["z"]:
                out.append({"window": w, "class": name, "loss": mc, "baseline_loss": mb, "change": mc - mb,
                            "z": z, "weight": swc, "baseline_weight": swb, "from": frm, "_order": (-abs(z), wi, ci)})
    out.sort(key=lambda e: e["_order"])
    for e in out:
        del e["_order"]
    return out


def check_drift(d, got, want, what="drift"):
    if not isinstance(got, list):
        d.errors.append(f"{what}: {got!r}")
        return
    d.eq(f"{what} (window, class) in order", [(e.get("window"), e.get("class")) for e in got],
         [(e["window"], e["class"]) for e in want])
    for g, w in zip(got, want):
        p = f"{what}[{w['window']},{w['class']}]"
        for k in ("loss", "baseline_loss", "change", "weight", "baseline_weight"):
            d.num(f"{p}.{k}", g.get(k), w[k], rtol=1e-9)
        # var = E[l²] − m² loses digits to cancellation: z to 1e-6.
        d.num(f"{p}.z", g.get("z"), w["z"], rtol=1e-6)
        d.eq(f"{p}.from", g.get("from"), w["from"])


def series_points(obs, reduction, step, frm, to, cls=None):
    """The series' points: buckets with frm <= start < to grouped by floor(start/step)*step."""
    groups = {}
    for o in obs:
        if frm <= o.bucket < to:
            groups.setdefault(o.bucket // step * step, []).append(o)
    pts = []
    for t in sorted(groups):
        f = figures(groups[t], reduction, cls=cls)
        f["t"] = t
        pts.append(f)
    return pts


def check_series(d, what, got, want_pts):
    if not isinstance(got, list):
        d.errors.append(f"{what}: points {got!r:.200}")
        return
    d.eq(f"{what} point times", [p.get("t") for p in got], [p["t"] for p in want_pts])
    for g, w in zip(got, want_pts):
        w = {k: v for k, v in w.items() if k != "samples"}
        d.figures(f"{what}[t={w['t']}]", g, w)


# ---- Random observations ---------------------------------------------------------------------

def random_observations(rng, now_ms, count, C=5):
    """`count` observations with every kind of input, time, slice and weight the spec allows."""
    obs = []
    mvs, regions = ["7", "8", "9"], ["eu", "us", "ap-south-1", "r" * 128]
    for i in range(count):
        N = int(rng.integers(1, 7))
        labels = (rng.random((N, C)) < 0.4).astype(np.float64)
        x = rng.normal(0.0, 2.5, (N, C)).astype(np.float32).astype(np.float64)
        kind = i % 8
        if kind in (0, 1, 2, 6):
            w = (rng.random((N, C)) < 0.6).astype(np.float64)  # a 0/1 mask
        elif kind == 3:
            w = rng.choice(np.array([0, 0.25, 0.5, 1.7, 3], dtype=np.float32), (N, C)).astype(np.float64)
        elif kind == 4:
            w = rng.choice(np.array([0, 0.5, 1, 2.5], dtype=np.float32), (N, 1)).astype(np.float64)  # per sample
        elif kind == 5:
            w = None  # no weights: all ones
        else:
            # All masked; a scalar weight (broadcast to every element); all ones.
            w = np.zeros((N, C)) if i % 16 == 7 else np.array(2.5) if i % 32 == 15 else np.ones((N, C))
        # Event times: the last two hours, a few up to 200 s ahead, two on the server's clock.
        if i in (11, 29):
            t_ms = None
        elif i % 13 == 4:
            t_ms = now_ms + int(rng.integers(10_000, 200_000))
        elif i % 17 == 3:
            t_ms = (now_ms // 60000 - int(rng.integers(1, 100))) * 60000  # on a minute's start
        else:
            t_ms = now_ms - int(rng.integers(0, 7_200_000))
        time_fmt = ["number", "number", "Z", 60, -330, "Z"][i % 6]
        slc = {}
        if rng.random() < 0.75:
            slc["model_version"] = str(rng.choice(mvs))
        if rng.random() < 0.7:
            slc["region"] = str(rng.choice(regions, p=[0.4, 0.3, 0.2, 0.1]))
        fmt = ["json", "b64", "json", "data", "json"][i % 5]
        oid = f"obs-{i}" if i % 3 == 0 else None
        obs.append(Obs(labels, x, w, t_ms, slc, oid, fmt, time_fmt))
    return obs


def observe_all(d, api, name, obs, config, prefix="", check_v1=True):
    """Sends each observation and checks its answer: the numbers of /v1/loss for the same
    tensors and config, the event time and its minute."""
    conn = api
    for i, o in enumerate(obs):
        st, h, b = conn.observe(name, o.body(prefix))
        if st != 200:
            d.errors.append(f"{name} observation {i}: HTTP {st}: {b}")
            continue
        if o.t_ms is None:
            o.server_time = b.get("time")
            d.eq(f"{name} obs {i} time (server clock) is close", abs((b.get("time") or 0) - time.time()) < 30, True)
        else:
            d.eq(f"{name} obs {i} time {b.get('time')!r} is {o.t_ms / 1000}",
                 isinstance(b.get("time"), (int, float)) and abs(b["time"] - o.t_ms / 1000) < 1e-3, True)
        d.eq(f"{name} obs {i} bucket", b.get("bucket"), o.bucket)
        d.eq(f"{name} obs {i} duplicate", b.get("duplicate"), False)
        d.eq(f"{name} obs {i} monitor", b.get("monitor"), name)
        want = figures([o], config["reduction"])
        for k in ("weighted_sum", "denominator", "sum_weights"):
            d.num(f"{name} obs {i} {k}", b.get(k), want[k], abs(want["sum_weights"]) + 1 if k == "weighted_sum" else 0)
        for k in ("num_nonzero_weights", "elements", "samples"):
            d.num(f"{name} obs {i} {k}", b.get(k), want[k], exact=True)
        d.num(f"{name} obs {i} loss", b.get("loss"), want["loss"], 1.0)
        if check_v1:
            req = dict(o.tensors(), loss=config["loss"], reduction=config["reduction"], dtype=config["dtype"],
                       params=config.get("params") or {})
            st1, h1, b1 = conn.call("POST", "/v1/loss", req)
            d.eq(f"{name} obs {i}: loss equals /v1/loss's", (st1, b.get("loss")), (200, b1.get("loss")))


@test
def monitor_random_observations(args):
    rng = np.random.default_rng(12)
    now_ms = int(time.time() * 1000)
    obs = random_observations(rng, now_ms, 64)
    classes = ["cat", "dog", "bird", "fish", "ant"]
    monitors = {  # name: (config, classes as figures() takes them, float32?)
        "c64": ({"loss": SCE, "dtype": "float64", "classes": classes, "slices": SLICES}, classes, False),
        "n32": ({"loss": SCE, "num_classes": 5, "slices": SLICES, "windows": ["1m", "10m", "2h"]}, 5, True),
        "torch": ({"loss": BCE, "reduction": "mean", "dtype": "float64", "num_classes": 5, "slices": SLICES,
                   "drift": {"z": 1, "min_weight": 5}}, 5, False),
        "tfmean": ({"loss": SCE, "reduction": "MEAN", "dtype": "float64", "slices": SLICES,
                    "windows": ["30m", "1h"], "drift": {"z": 0.5, "min_weight": 0}}, None, False),
    }
    with state_dir() as tmp, start(args, os.path.join(tmp, "state.db")) as srv:
        api = Api(srv)
        configs = {}
        for name, (cfg, cl, fp32) in monitors.items():
            configs[name] = created(api, name, cfg)
        # Each monitor its own copies: the server's clock times the observations sent without one.
        sent = {name: [copy.copy(o) for o in obs] for name in monitors}
        for name in monitors:
            d = Diff(monitors[name][2])
            observe_all(d, api, name, sent[name], configs[name], prefix=name + "-")
            d.done(f" in the observe answers of {name}")
        # Duplicates: the same ids again (identical bodies), answered 200 with duplicate: true.
        dups = [o for o in obs if o.oid][:6]
        for name in monitors:
            for o in dups:
                st, h, b = api.observe(name, o.body(name + "-"))
                assert st == 200 and b.get("duplicate") is True, (name, o.oid, st, b)
        report = []
        for name, (cfg, cl, fp32) in monitors.items():
            config = configs[name]
            got = api.get(name)
            d = Diff(fp32)
            check_monitor(d, got, sent[name], config, cl)
            if not fp32:
                check_drift(d, got.get("drift"), expected_drift(sent[name], config, got["now"], cl))
            d.done(f" in GET /v1/monitors/{name}")
            report.append(f"{name}: {d.count} figures")
        # Series: steps of 1 and 10 minutes, explicit ranges, slice and class filters.
        now = api.get("c64")["now"]
        d = Diff()
        queries = [
            ("c64", [("step", "1m")], None, None, None),
            ("c64", [("step", "10m"), ("from", str(now - 3 * 3600)), ("to", rfc3339((now + 600) * 1000))],
             None, None, None),
            ("c64", [("step", "10m"), ("slice", "region=eu")], {"region": "eu"}, None, None),
            ("c64", [("step", "1m"), ("slice", "region=eu"), ("slice", "model_version=7")],
             {"region": "eu", "model_version": "7"}, None, None),
            ("c64", [("step", "10m"), ("class", "dog"), ("slice", "model_version=8")],
             {"model_version": "8"}, 1, "dog"),
            ("n32", [("step", "1m"), ("class", "2")], None, 2, 2),
            ("torch", [("step", "1h"), ("from", str(now - 7200)), ("to", str(now + 3600))], None, None, None),
            ("tfmean", [("step", "10m"), ("slice", "region=" + "r" * 128)], {"region": "r" * 128}, None, None),
        ]
        for name, q, slc, cls, cls_label in queries:
            st, h, b = api.series(name, q)
            what = f"series {name} {urllib.parse.urlencode(q)[:80]}"
            if st != 200:
                d.errors.append(f"{what}: HTTP {st}: {b}")
                continue
            qd = dict(q)
            step = seconds(qd["step"])
            d.eq(f"{what} step", b.get("step"), step)
            frm, to = b.get("from"), b.get("to")
            if "from" in qd:
                d.eq(f"{what} from", frm, int(qd["from"]))
                d.eq(f"{what} to", to, now + 600 if "T" in qd["to"] else int(qd["to"]))
            else:
                d.eq(f"{what} default range is 24 h", (to or 0) - (frm or 0), 86400)
                d.eq(f"{what} default to is now + 60", abs((to or 0) - 60 - now) <= 5, True)
            if cls_label is not None:
                d.eq(f"{what} class", b.get("class"), cls_label if isinstance(cls_label, int) else cls_label)
            sub = [o for o in sent[name] if all(o.slc.get(k) == v for k, v in (slc or {}).items())]
            d2 = Diff(monitors[name][2])
            check_series(d2, what, b.get("points"),
                         series_points(sub, configs[name]["reduction"], step, frm, to, cls))
            d.errors += d2.errors
            d.count += d2.count
        d.done(" in the series")
        api.close()
        print(f"    {len(obs)} observations into 4 monitors; {', '.join(report)}; {len(queries)} series")
        stop_clean(srv)


# ---- Configuration -----------------------------------------------------------------------------

def bad_config(api, name, config, fields, codes=("invalid_monitor",), force=False):
    st, h, b = api.put(name, config, force)
    fields = (fields,) if isinstance(fields, str) else fields
    assert st == 422 and b.get("code") in codes and b.get("field") in fields, \
        f"PUT {name} {json.dumps(config)[:200]}: HTTP {st} {b}, expected 422 {codes} field {fields}"


@test
def monitor_crud(args):
    with state_dir() as tmp, start(args, os.path.join(tmp, "state.db"), "--max-monitors", "4",
                                   "--max-classes", "6") as srv:
        api = Api(srv)
        cfg = created(api, "m.1", {"loss": SCE})
        want = {"loss": cfg["loss"], "params": cfg.get("params"), "reduction": "SUM_BY_NONZERO_WEIGHTS",
                "dtype": "float32", "slices": [], "windows": DEFAULT_WINDOWS, "retention": "30d",
                "drift": {"z": 4, "min_weight": 100}, "export_classes": False}
        assert cfg == want, f"normalized config {cfg}, expected {want}"
        assert cfg["loss"] in (SCE, "tf.compat.v1.losses.sigmoid_cross_entropy"), cfg
        assert cfg["params"] in ({}, None, {"label_smoothing": 0}), cfg
        # The same config, spelt with its defaults: 200, unchanged.
        same = {"loss": SCE, "reduction": "sum_by_nonzero_weights", "dtype": "float32", "windows": DEFAULT_WINDOWS,
                "retention": "30d", "slices": [], "drift": {"z": 4, "min_weight": 100}, "export_classes": False}
        assert created(api, "m.1", same, 200) == cfg
        # Another config: 409, nothing changes.
        other = {"loss": SCE, "num_classes": 5}
        expect_error(api.put("m.1", other), 409, "monitor_conflict")
        assert api.get("m.1")["config"] == cfg
        # Data, then ?force=true: replaced and cleared.
        obs = Obs(np.array([[1.0, 0, 1, 0, 0]]), np.array([[0.5, -1, 2, 0, 1]]), t_ms=int(time.time() * 1000))
        assert api.observe("m.1", obs.body())[0] == 200
        assert api.get("m.1")["total"]["observations"] == 1
        st, h, b = api.put("m.1", other, force=True)
        assert st == 200 and b["config"]["num_classes"] == 5 and "classes" not in b["config"], (st, b)
        g = api.get("m.1")
        assert g["config"] == b["config"] and g["total"]["observations"] == 0, g
        assert g["total"]["elements"] == 0 and g["total"]["weighted_sum"] == 0 and g["slices"] == {}, g
        # Canonical spelling of the reduction; classes kept when given.
        c2 = created(api, "B_2", {"loss": BCE, "reduction": "MEAN", "classes": ["x", "y"], "slices": ["region"],
                                  "windows": ["1m", "2h"], "retention": "3h", "drift": {"z": 2.5, "min_weight": 0},
                                  "export_classes": True, "dtype": "float64"})
        assert c2["reduction"] == "mean" and c2["classes"] == ["x", "y"] and "num_classes" not in c2, c2
        assert c2["windows"] == ["1m", "2h"] and c2["retention"] == "3h" and c2["slices"] == ["region"], c2
        assert c2["drift"] == {"z": 2.5, "min_weight": 0} and c2["export_classes"] is True, c2
        assert c2["dtype"] == "float64", c2
        created(api, "a-3", {"loss": SCE, "params": {"label_smoothing": 0.1}})
        # The list, sorted by name.
        st, h, b = api.call("GET", "/v1/monitors")
        assert st == 200 and [m["name"] for m in b["monitors"]] == ["B_2", "a-3", "m.1"], b
        assert b["monitors"][0]["config"] == c2, b
        # Refused configs: 422 with the field at fault.
        base = {"loss": SCE}
        cases = [
            ({"loss": "no_such_loss"}, "loss", ("invalid_monitor", "unknown_loss")),
            ({}, "loss", ("invalid_monitor", "invalid_request")),
            ({"loss": 3}, "loss", ("invalid_monitor", "invalid_request")),
            (dict(base, reduction="none"), "reduction", ("invalid_monitor",)),
            (dict(base, reduction="NONE"), "reduction", ("invalid_monitor",)),
            (dict(base, reduction="MEDIAN"), "reduction", ("invalid_monitor", "unknown_reduction")),
            ({"loss": "sigmoid_focal_loss"}, "reduction", ("invalid_monitor",)),  # its default is none
            (dict(base, params={"gamma": 2}), ("params.gamma", "params"), ("invalid_monitor", "unknown_parameter")),
            (dict(base, dtype="float16"), "dtype", ("invalid_monitor", "invalid_request")),
            (dict(base, windows=["30s"]), ("windows", "windows[0]"), ("invalid_monitor",)),
            (dict(base, windows=["90s"]), ("windows", "windows[0]"), ("invalid_monitor",)),
            (dict(base, windows=["0m"]), ("windows", "windows[0]"), ("invalid_monitor",)),
            (dict(base, windows=["5x"]), ("windows", "windows[0]"), ("invalid_monitor",)),
            (dict(base, windows=["5m", "1h", "5m"]), ("windows", "windows[2]"), ("invalid_monitor",)),
            (dict(base, windows=[f"{i}m" for i in range(1, 10)]), "windows", ("invalid_monitor",)),
            (dict(base, windows=["2h"], retention="1h"), ("windows", "windows[0]", "retention"), ("invalid_monitor",)),
            (dict(base, windows="5m"), "windows", ("invalid_monitor",)),
            (dict(base, retention="90m"), "retention", ("invalid_monitor",)),
            (dict(base, retention="3651d"), "retention", ("invalid_monitor",)),
            (dict(base, slices=["1abc"]), ("slices", "slices[0]"), ("invalid_monitor",)),
            (dict(base, slices=["region", "monitor"]), ("slices", "slices[1]"), ("invalid_monitor",)),
            (dict(base, slices=["le"]), ("slices", "slices[0]"), ("invalid_monitor",)),
            (dict(base, slices=["class"]), ("slices", "slices[0]"), ("invalid_monitor",)),
            (dict(base, slices=["a", "a"]), ("slices", "slices[1]"), ("invalid_monitor",)),
            (dict(base, slices=["k" * 65]), ("slices", "slices[0]"), ("invalid_monitor",)),
            (dict(base, slices=[f"k{i}" for i in range(9)]), "slices", ("invalid_monitor",)),
            (dict(base, classes=["a", "b"], num_classes=2), ("classes", "num_classes"), ("invalid_monitor",)),
            (dict(base, classes=["a", "a"]), ("classes", "classes[1]"), ("invalid_monitor",)),
            (dict(base, classes=[]), "classes", ("invalid_monitor",)),
            (dict(base, classes=["a", ""]), ("classes", "classes[1]"), ("invalid_monitor",)),
            (dict(base, classes=["c" * 129]), ("classes", "classes[0]"), ("invalid_monitor",)),
            (dict(base, num_classes=0), "num_classes", ("invalid_monitor",)),
            (dict(base, num_classes=7), "num_classes", ("invalid_monitor", "limit_exceeded")),  # --max-classes 6
            (dict(base, classes=list("abcdefg")), "classes", ("invalid_monitor", "limit_exceeded")),
            (dict(base, num_classes=2.5), "num_classes", ("invalid_monitor",)),
            # Per-class figures need one loss value per class: not of a per-sample loss.
            ({"loss": "binary_crossentropy", "num_classes": 3}, "num_classes", ("invalid_monitor",)),
            ({"loss": "torch.nn.functional.cross_entropy", "classes": ["a", "b"]}, "classes", ("invalid_monitor",)),
            (dict(base, drift={"z": 0}), ("drift.z", "drift"), ("invalid_monitor",)),
            (dict(base, drift={"min_weight": -1}), ("drift.min_weight", "drift"), ("invalid_monitor",)),
            (dict(base, export_classes="yes"), "export_classes", ("invalid_monitor",)),
            (dict(base, colour="red"), "colour", ("invalid_monitor",)),
        ]
        for config, fields, codes in cases:
            bad_config(api, "fresh", config, fields, codes)
        assert srv.request("GET", "/v1/monitors/fresh")[0] == 404, "a refused config created its monitor"
        bad_config(api, "m.1", dict(base, colour="red"), "colour", force=True)
        assert api.get("m.1")["config"]["num_classes"] == 5, "a refused forced config replaced the monitor"
        for bad in ("bad%20name", "x" * 129, "caf%C3%A9", "a%3Bb"):
            bad_config(api, bad, base, "name")
        created(api, "y" * 128, base)  # the longest name; the 4th monitor
        expect_error(api.put("fifth", base), 422, "limit_exceeded", "name")  # --max-monitors 4
        assert created(api, "m.1", other, 200)["num_classes"] == 5  # the limit refuses only new ones
        expect_error(api.call("PUT", "/v1/monitors/z", "[1, 2]"), 422, "invalid_monitor")
        expect_error(api.call("PUT", "/v1/monitors/z", '{"loss": '), 400, "malformed_json")
        # DELETE: 204 without a body, then 404.
        st, h, b = api.call("DELETE", "/v1/monitors/a-3")
        assert st == 204 and b == "", (st, b)
        expect_error(api.call("GET", "/v1/monitors/a-3"), 404, "monitor_not_found", "name")
        expect_error(api.call("DELETE", "/v1/monitors/a-3"), 404, "monitor_not_found", "name")
        expect_error(api.observe("a-3", obs.body()), 404, "monitor_not_found")
        st, h, b = api.call("GET", "/v1/monitors")
        assert [m["name"] for m in b["monitors"]] == ["B_2", "m.1", "y" * 128], b
        created(api, "fifth", base)  # room again after the delete
        # The methods each route takes (405 names them, as for the other routes).
        for method, path, allow in (("POST", "/v1/monitors", "GET, HEAD"), ("PATCH", "/v1/monitors/m.1", None),
                                    ("GET", "/v1/monitors/m.1/observe", "POST"),
                                    ("POST", "/v1/monitors/m.1/series", "GET, HEAD")):
            st, h, b = api.call(method, path, {} if method != "GET" else None)
            assert st == 405 and (allow is None or h.get("allow") == allow), (method, path, st, h, b)
        # A deleted then recreated monitor starts empty.
        assert api.observe("B_2", Obs(np.array([[1.0, 0]]), np.array([[0.5, -1]])).body())[0] == 200
        assert api.call("DELETE", "/v1/monitors/B_2")[0] == 204
        created(api, "B_2", {"loss": BCE, "reduction": "mean", "classes": ["x", "y"]})
        assert api.get("B_2")["total"]["observations"] == 0
        # Neither a deleted monitor's ids nor a replaced one's live on.
        one = {"labels": [[1, 0]], "logits": [[0.5, -1]], "id": "once"}
        assert api.observe("B_2", one)[2]["duplicate"] is False
        assert api.call("DELETE", "/v1/monitors/B_2")[0] == 204
        created(api, "B_2", {"loss": BCE, "reduction": "mean", "classes": ["x", "y"]})
        assert api.observe("B_2", one)[2]["duplicate"] is False, "an id outlived its monitor's DELETE"
        assert api.put("B_2", {"loss": BCE, "reduction": "mean", "classes": ["x", "y"]}, force=True)[0] == 200
        assert api.observe("B_2", one)[2]["duplicate"] is False, "an id outlived ?force=true"
        assert api.get("B_2")["total"]["observations"] == 1
        # ?force=true on a name not taken creates it: 201.
        assert api.call("DELETE", "/v1/monitors/fifth")[0] == 204
        st, h, b = api.put("fifth", base, force=True)
        assert st == 201 and b["name"] == "fifth", (st, b)
        api.close()
        stop_clean(srv)
    print(f"    {len(cases)} refused configs, each with its field")


# ---- Drift -------------------------------------------------------------------------------------

@test
def monitor_drift(args):
    rng = np.random.default_rng(3)
    now_ms = int(time.time() * 1000)
    classes = ["a", "b", "c"]
    obs = []

    def batch(t_min, shift_b, N=60):
        labels = (rng.random((N, 3)) < 0.5).astype(np.float64)
        x = rng.normal(0, 1.5, (N, 3))
        # Class b's logits move against its labels in the current window: its loss rises.
        x[:, 1] += shift_b * np.where(labels[:, 1] > 0, -1, 1)
        x = x.astype(np.float32).astype(np.float64)
        return Obs(labels, x, np.ones((N, 3)), now_ms - t_min * 60_000, oid=None)
    for t_min in (100, 90, 80, 72):   # the 1h window's baseline: [from − 1 h, from)
        obs.append(batch(t_min, 0.0))
    for t_min in (40, 25, 12, 3):     # the current hour
        obs.append(batch(t_min, 2.0))
    # Infinite z: constant losses (exact in binary) on each side, through compute_weighted_loss.
    inf_obs = []
    for t_min, v in ((90, (0.5, 0.25, 0.75)), (80, (0.5, 0.25, 0.75)), (20, (0.75, 0.25, 0.5)), (5, (0.75, 0.25, 0.5))):
        inf_obs.append(Obs(None, np.tile(np.array(v), (8, 1)), np.ones((8, 3)), now_ms - t_min * 60_000,
                           input_name="losses"))
    monitors = {
        "d": ({"loss": SCE, "dtype": "float64", "classes": classes, "windows": ["1h", "2h"]}, classes, obs),
        "whole": ({"loss": SCE, "dtype": "float64", "windows": ["1h"], "drift": {"z": 2, "min_weight": 100}},
                  None, obs),
        "edge": ({"loss": SCE, "dtype": "float64", "classes": classes, "windows": ["1h"],
                  "drift": {"z": 4, "min_weight": 240}}, classes, obs),   # Σw = 240 on each side: listed
        "over": ({"loss": SCE, "dtype": "float64", "classes": classes, "windows": ["1h"],
                  "drift": {"z": 4, "min_weight": 240.5}}, classes, obs),  # suppressed
        "inf": ({"loss": CWL, "dtype": "float64", "num_classes": 3, "windows": ["1h"],
                 "drift": {"z": 4, "min_weight": 1}}, 3, inf_obs),
    }
    with state_dir() as tmp, start(args, os.path.join(tmp, "state.db")) as srv:
        api = Api(srv)
        for name, (cfg, cl, o) in monitors.items():
            config = created(api, name, cfg)
            monitors[name] = (config, cl, o)
            for i, ob in enumerate(o):
                st, h, b = api.observe(name, ob.body())
                assert st == 200, (name, i, st, b)
        got = {name: api.get(name) for name in monitors}
        d = Diff()
        for name, (config, cl, o) in monitors.items():
            check_drift(d, got[name].get("drift"), expected_drift(o, config, got[name]["now"], cl), f"{name}.drift")
        d.done(" in the drift lists")
        dd = got["d"]["drift"]
        assert dd and dd[0]["window"] == "1h" and dd[0]["class"] == "b" and dd[0]["z"] > 10, dd
        assert all(e["class"] == "b" for e in dd), f"classes a and c did not move: {dd}"
        assert all(e["window"] != "2h" for e in dd), "the 2h window has no baseline data"
        assert len(got["whole"]["drift"]) == 1 and got["whole"]["drift"][0]["class"] is None, got["whole"]["drift"]
        assert [e["class"] for e in got["edge"]["drift"]] == ["b"], got["edge"]["drift"]
        assert got["over"]["drift"] == [], got["over"]["drift"]
        inf = got["inf"]["drift"]
        assert [(e["class"], e["z"]) for e in inf] == [(0, "Infinity"), (2, "-Infinity")], inf
        api.close()
        print(f"    class b: z = {dd[0]['z']:.2f}; whole: z = {got['whole']['drift'][0]['z']:.2f}; "
              f"min_weight 240 listed, 240.5 suppressed; constant losses: ±Infinity")
        stop_clean(srv)


# ---- Durability ----------------------------------------------------------------------------------

# A window's comparison with its baseline (GET /v1/monitors/{name}): the baseline is the W
# before the window, where a test's data an hour or minutes old moves in and out as the minute
# turns (monitor_drift_per_class checks these against the observations).
BASELINE_FIELDS = ("baseline_loss", "baseline_weight", "change", "z")


def comparable(g):
    """A GET answer without what moves with the clock (now, the windows' from, their
    comparisons with the baselines before them)."""
    g = json.loads(json.dumps(g))
    g.pop("now", None)
    for e in g.get("drift") or []:
        e.pop("from", None)
    for part in [g] + list((g.get("slices") or {}).values()):
        for w in (part.get("windows") or {}).values():
            w.pop("from", None)
            for f in [w] + (w.get("per_class") or []):
                for k in BASELINE_FIELDS:
                    f.pop(k, None)
    return g


def json_diff(a, b, path=""):
    """The paths where two JSON documents differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += json_diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@test
def monitor_kill9(args):
    rng = np.random.default_rng(9)
    now_ms = int(time.time() * 1000)
    # Times 10 to 50 minutes back: in the 1h and 24h windows whatever the minute at the GETs.
    obs = random_observations(rng, now_ms, 40)
    for i, o in enumerate(obs):
        o.t_ms = now_ms - int(rng.integers(600_000, 3_000_000))
        o.oid = f"k-{i}"
    cfg = {"loss": SCE, "dtype": "float64", "num_classes": 5, "slices": SLICES, "windows": ["1h", "24h"]}
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        d = Diff()
        # 1. Acknowledged, read, killed at once: the figures read back are the same JSON.
        with start(args, path) as srv:
            api = Api(srv)
            config = created(api, "k", cfg)
            observe_all(d, api, "k", obs[:20], config, check_v1=False)
            before = api.get("k")
            srv.proc.kill()
            srv.proc.wait()
        with start(args, path) as srv:
            api = Api(srv)
            after = api.get("k")
            # Checked at the end, so that a difference does not hide what follows.
            changed = json_diff(comparable(before), comparable(after))
            # 2. Killed right after the last 200, nothing read in between.
            observe_all(d, api, "k", obs[20:], config, check_v1=False)
            srv.proc.kill()
            srv.proc.wait()
        with start(args, path) as srv:
            api = Api(srv)
            got = api.get("k")
            check_monitor(d, got, obs, config, 5)
            d.done(" after kill -9")
            # The ids are still known: duplicates, counted once.
            for o in (obs[0], obs[19], obs[39]):
                st, h, b = api.observe("k", o.body())
                assert st == 200 and b.get("duplicate") is True, (o.oid, st, b)
            assert api.get("k")["total"] == got["total"]
            # 3. A client observing in a loop, killed at some point: every acknowledged
            # observation is there, and at most the one in flight besides.
            more = random_observations(rng, now_ms, 400)
            for i, o in enumerate(more):
                o.t_ms = now_ms - int(rng.integers(600_000, 3_000_000))
                o.oid = f"loop-{i}"
            acked = []

            def loop():
                c = Api(srv)
                for o in more:
                    try:
                        st, h, b = c.observe("k", o.body())
                    except Exception:
                        return
                    if st != 200:
                        return
                    acked.append(o)
            th = threading.Thread(target=loop)
            th.start()
            wait_until(lambda: len(acked) >= 25 or not th.is_alive(), timeout=60, every=0.001)
            srv.proc.kill()
            srv.proc.wait()
            th.join()
        n = len(acked)
        assert 0 < n < len(more), f"{n} acknowledged before the kill: make the loop longer or the sleep shorter"
        with start(args, path) as srv:
            api = Api(srv)
            got = api.get("k")
            k = got["total"]["observations"] - len(obs)
            assert k in (n, n + 1), f"{got['total']['observations'] - len(obs)} observations kept of {n} acknowledged"
            d = Diff()
            check_monitor(d, got, obs + more[:k], config, 5)
            d.done(" after kill -9 in the loop")
            st, h, b = api.observe("k", more[n - 1].body())
            assert st == 200 and b["duplicate"] is True, b
            api.close()
            stop_clean(srv)
        assert not changed, f"{len(changed)} figures changed across kill -9 (before, after):\n" + \
            "\n".join(changed[:20])
        print(f"    40 observations across 3 restarts after kill -9; the loop: {n} acknowledged, {k} kept")


# ---- Store failures ------------------------------------------------------------------------------

def one_obs(i, t=None):
    return Obs(np.array([[1.0, 0, 1]]), np.array([[0.5, -1.0, 2.0]]), np.array([[1.0, 1, 0]]),
               int((t or time.time()) * 1000), {"k": f"v{i % 50}"}, f"fill-{i}")


def sxfsz_ignored_server(args, state, *extra):
    """The server with SIGXFSZ ignored (inherited across exec), so that a write past the file
    size limit fails with EFBIG instead of killing it: a store that refuses writes, as any user."""
    shim = "import os, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
    return Server(sys.executable, "-c", shim, args.server, "--port", "0", "--state", state, *extra)


STATE_CFG = {"loss": SCE, "dtype": "float64", "slices": ["k"], "windows": ["1h"]}
LOSS_REQ = {"loss": SCE, "labels": [1, 0], "logits": [0.5, -1]}


def refuse_then_recover(api, break_store, mend_store, tries, what):
    """With the store broken, an observation is refused with 503 state_unavailable and
    Retry-After (within `tries` new ones: the first writes may still fit), /v1/loss answers 200
    and the figures count only what was acknowledged; once mended, observations are taken again."""
    before = api.get("s")
    break_store()
    n_ok = before["total"]["observations"]
    for i in range(tries):
        st, h, b = api.observe("s", one_obs(10_000 + i).body())
        if st != 200:
            break
        n_ok += 1
    else:
        raise AssertionError(f"{what}: {tries} observations accepted")
    expect_error((st, h, b), 503, "state_unavailable")
    st, h, b = api.call("POST", "/v1/loss", LOSS_REQ)
    assert st == 200, (f"/v1/loss with {what}", st, b)
    got = api.get("s")
    assert got["total"]["observations"] == n_ok, (what, got["total"], n_ok)
    mend_store()
    for i in range(25):  # Retry-After says the store comes back: within 5 s here
        st, h, b = api.observe("s", one_obs(20_000 + i).body())
        if st == 200:
            break
        time.sleep(0.2)
    assert st == 200, f"the store did not recover from {what}: {st} {b}"
    assert api.get("s")["total"]["observations"] == n_ok + 1


def fresh_state(api):
    created(api, "s", STATE_CFG)
    for i in range(3):
        assert api.observe("s", one_obs(i).body())[0] == 200


@test
@sqlite_only
def monitor_state_unavailable(args):
    done, skipped = [], []
    # 1. Any user: RLIMIT_FSIZE 0 on the running server, every write to the state fails (EFBIG).
    with state_dir() as tmp, sxfsz_ignored_server(args, os.path.join(tmp, "state.db")) as srv:
        api = Api(srv)
        fresh_state(api)
        pid = srv.proc.pid
        refuse_then_recover(
            api, lambda: resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY)),
            lambda: resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2), 1, "RLIMIT_FSIZE 0")
        api.close()
        done.append("RLIMIT_FSIZE")
        stop_clean(srv)
    if os.geteuid() != 0:
        skipped.append("not root: immutable files, full disk, read-only mount")
    else:
        immutable_files(args, done, skipped)
        full_then_read_only(args, done, skipped)
    print(f"    503 state_unavailable with Retry-After, /v1/loss 200: {', '.join(done)}"
          + (f"; skipped: {', '.join(skipped)}" if skipped else ""))


def immutable_files(args, done, skipped):
    """Root: the state's files made immutable while the server runs (EPERM on every write), a
    file that turned read-only under the server. Needs chattr and a file system with the
    attribute (ext4, xfs)."""
    if not shutil.which("chattr"):
        skipped.append("immutable files (no chattr)")
        return
    with state_dir() as tmp:
        state = os.path.join(tmp, "state.db")
        # Not SQLite's -shm: it is mapped in memory, and a store to a page of an immutable file's
        # mapping is a SIGBUS, not an error a program can answer.
        files = lambda: [f for f in (state, state + "-wal", state + "-journal", tmp)  # noqa: E731
                         if os.path.exists(f)]
        try:
            with start(args, state) as srv:
                api = Api(srv)
                fresh_state(api)
                r = subprocess.run(["chattr", "+i"] + files(), capture_output=True, text=True)
                subprocess.run(["chattr", "-i"] + files(), capture_output=True)
                if r.returncode != 0:
                    skipped.append(f"immutable files ({r.stderr.strip()[:80]})")
                else:
                    refuse_then_recover(api, lambda: subprocess.run(["chattr", "+i"] + files(), check=True),
                                        lambda: subprocess.run(["chattr", "-i"] + files(), check=True), 1,
                                        "immutable state files")
                    done.append("immutable files")
                api.close()
                stop_clean(srv)
        finally:
            subprocess.run(["chattr", "-i"] + files(), capture_output=True)


def full_then_read_only(args, done, skipped):
    """Root: a full file system (a small tmpfs), then the same file system read-only."""
    if not (shutil.which("mount") and shutil.which("umount")):
        skipped.append("full disk (no mount)")
        return
    with state_dir() as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], capture_output=True, text=True)
        if r.returncode != 0:
            skipped.append(f"full disk ({r.stderr.strip()[:80]})")
            return
        try:
            full_disk(args, mnt)
            done.append("full tmpfs")
            done.append(read_only_mount(args, mnt))
        finally:
            subprocess.run(["umount", "-l", mnt])


def full_disk(args, mnt):
    with start(args, os.path.join(mnt, "state.db")) as srv:
        api = Api(srv)
        fresh_state(api)
        filler = os.path.join(mnt, "filler")

        def fill():
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            for chunk in (65536, 512, 1):  # to the last byte
                try:
                    while os.write(fd, b"\0" * chunk) > 0:
                        pass
                except OSError:
                    pass
            os.close(fd)
        # New ids and slice values make the state grow: it hits the wall within a few.
        refuse_then_recover(api, fill, lambda: os.unlink(filler), 3000, "a full file system")
        api.close()
        stop_clean(srv)


def read_only_mount(args, mnt):
    """The state on a file system mounted read-only at the start (a WAL database without its
    shared-memory file): the server starts, serves the monitors it holds, and refuses
    observations with 503 (the spec's "read-only file")."""
    r = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with start(args, os.path.join(mnt, "state.db")) as srv:
        api = Api(srv)
        st, _, b = api.call("GET", "/v1/monitors/s")
        assert st == 200, ("a monitor of a read-only state", st, b)
        expect_error(api.observe("s", one_obs(9000).body()), 503, "state_unavailable")
        st, h, b = api.call("POST", "/v1/loss", LOSS_REQ)
        assert st == 200, ("/v1/loss with a read-only state", st, b)
        api.close()
        stop_clean(srv)
    return "read-only mount (503)"


# ---- Prometheus --------------------------------------------------------------------------------

def bare(name):
    """A counter's name without "_total": prometheus_client's parser adds the suffix to counter
    samples that lack it (maskloss_monitor_weighted_loss_sum -> ..._sum_total)."""
    return name[:-6] if name.endswith("_total") else name


def counter(text, name, labels):
    """The value of the sample of `name` (with or without _total) whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if bare(s.name) == bare(name) and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@test
def monitor_metrics(args):
    rng = np.random.default_rng(21)
    now_ms = int(time.time() * 1000)
    obs = random_observations(rng, now_ms, 30, C=3)
    odd = 'a"b\\c'  # a value that needs escaping in a label
    for i, o in enumerate(obs):
        if i % 5 == 0:
            o.slc["region"] = odd
    classes = ["x", "y", "z"]
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with start(args, path) as srv:
            api = Api(srv)
            created(api, "pm", {"loss": SCE, "dtype": "float64", "classes": classes, "slices": SLICES,
                                "export_classes": True})
            created(api, "plain", {"loss": BCE, "dtype": "float64"})
            for o in obs:
                assert api.observe("pm", o.body())[0] == 200
            for o in obs[:7]:
                assert api.observe("plain", Obs(o.labels, o.x, o.weights, o.t_ms).body())[0] == 200
            for o in [o for o in obs if o.oid][:3]:  # duplicates are not counted
                assert api.observe("pm", o.body())[2]["duplicate"] is True
            text = srv.metrics()[1]
            combos = {}
            for o in obs:
                key = tuple(o.slc.get(k, "") for k in SLICES)
                combos.setdefault(key, []).append(o)
            d = Diff()
            names = [("maskloss_monitor_weighted_loss_sum", "weighted_sum"),
                     ("maskloss_monitor_denominator_sum", "denominator"),
                     ("maskloss_monitor_weights_sum", "sum_weights"),
                     ("maskloss_monitor_nonzero_weights_total", "num_nonzero_weights"),
                     ("maskloss_monitor_elements_total", "elements"),
                     ("maskloss_monitor_observations_total", "observations")]
            from prometheus_client.parser import text_string_to_metric_families
            # (the late-label gauges, one per monitor that can take predictions: none stored)
            gauges = ("maskloss_monitor_predictions", "maskloss_monitor_labelled_positions")
            series = [(bare(s.name), s.labels, s.value) for fam in text_string_to_metric_families(text)
                      for s in fam.samples if s.labels.get("monitor") == "pm" and s.name not in gauges]
            for g in gauges:
                d.eq(f"{g} of pm", counter(text, g, {"monitor": "pm"}), 0.0)
            for key, sub in combos.items():
                labels = {"monitor": "pm", **dict(zip(SLICES, key))}
                f = figures(sub, "SUM_BY_NONZERO_WEIGHTS", classes)
                for metric, field in names:
                    d.num(f"{metric}{labels}", counter(text, metric, labels), f[field])
                for c, pc in enumerate(f["per_class"]):
                    cl = dict(labels, **{"class": classes[c]})
                    d.num(f"class_weighted_loss_sum{cl}", counter(text, "maskloss_monitor_class_weighted_loss_sum", cl),
                          pc["weighted_sum"])
                    d.num(f"class_weights_sum{cl}", counter(text, "maskloss_monitor_class_weights_sum", cl),
                          pc["sum_weights"])
                    d.num(f"class_nonzero_weights_total{cl}",
                          counter(text, "maskloss_monitor_class_nonzero_weights_total", cl), pc["num_nonzero_weights"])
            # Exactly one series per combination and metric, each with every slice label.
            for metric, _ in names:
                got = sorted(tuple(lb.get(k) for k in SLICES) for n, lb, v in series if n == bare(metric))
                d.eq(f"{metric} series", got, sorted(combos))
            d.eq("label sets", {tuple(sorted(lb)) for n, lb, v in series},
                 {("model_version", "monitor", "region"), ("class", "model_version", "monitor", "region")})
            f = figures([Obs(o.labels, o.x, o.weights) for o in obs[:7]], "mean")
            for metric, field in names:
                d.num(f"{metric} plain", counter(text, metric, {"monitor": "plain"}), f[field])
            d.eq("plain has no class series", counter(text, "maskloss_monitor_class_weights_sum",
                                                           {"monitor": "plain"}), None)
            d.done(" in /metrics")
            api.close()
            stop_clean(srv)
        # What this process ingested: a restarted server starts from nothing.
        with start(args, path) as srv:
            api = Api(srv)
            assert api.get("pm")["total"]["observations"] == len(obs)
            text = srv.metrics()[1]
            v = counter(text, "maskloss_monitor_observations_total", {"monitor": "pm"})
            assert v in (None, 0), f"a restarted server counts {v} observations it did not ingest"
            o = obs[1]
            assert api.observe("pm", dict(o.body(), id="after-restart"))[0] == 200
            text = srv.metrics()[1]
            labels = {"monitor": "pm", **{k: o.slc.get(k, "") for k in SLICES}}
            assert counter(text, "maskloss_monitor_observations_total", labels) == 1
            api.close()
            stop_clean(srv)
    print(f"    {len(combos)} slice combinations x 6 counters + 3 per class; reset on restart")


# ---- Observation errors ------------------------------------------------------------------------

@test
def monitor_errors(args):
    now = time.time()
    with state_dir() as tmp, start(args, os.path.join(tmp, "state.db"), "--max-slice-values", "3") as srv:
        api = Api(srv)
        config = created(api, "e", {"loss": SCE, "dtype": "float64", "classes": ["a", "b", "c"],
                                    "slices": SLICES, "retention": "2d", "windows": ["1h"]})
        good = Obs(np.array([[1.0, 0, 1], [0, 0, 1]]), np.array([[0.5, -1, 2], [1.5, 0.25, -3]]),
                   np.array([[1.0, 0, 1], [1, 1, 0]]), int(now * 1000) - 60_000, {"region": "eu"}, "good-1")
        accepted = [good]
        assert api.observe("e", good.body())[0] == 200
        before = api.get("e")
        g = good.body()
        cases = [
            # The loss, its parameters and reduction come from the config.
            (dict(g, loss=SCE), "loss"), (dict(g, params={}), "params"), (dict(g, reduction="MEAN"), "reduction"),
            (dict(g, dtype="float64"), "dtype"), (dict(g, outputs=["loss"]), "outputs"),
            # Times.
            (dict(g, time=now + 400), "time"), (dict(g, time=rfc3339(int(now + 3600) * 1000)), "time"),
            (dict(g, time=now - 3 * 86400), "time"), (dict(g, time=rfc3339(int(now - 3 * 86400) * 1000, 120)), "time"),
            (dict(g, time="yesterday"), "time"), (dict(g, time="2026-13-01T00:00:00Z"), "time"),
            (dict(g, time="2026-12-01 09:00:00"), "time"), (dict(g, time=""), "time"), (dict(g, time=True), "time"),
            (dict(g, time=[now]), "time"), (dict(g, time="NaN"), "time"),
            # Slices.
            (dict(g, slice={"colour": "red"}), "slice.colour"), (dict(g, slice={"region": ""}), "slice.region"),
            (dict(g, slice={"region": "r" * 129}), "slice.region"), (dict(g, slice={"region": 7}), "slice.region"),
            (dict(g, slice="eu"), "slice"), (dict(g, slice=["eu"]), "slice"),
            # Ids.
            (dict(g, id=""), "id"), (dict(g, id="i" * 129), "id"), (dict(g, id=12), "id"),
            # Classes: the last axis of the prediction input is C.
            (dict(g, labels=[[1, 0, 1, 0]], logits=[[0.5, -1, 2, 0]], mask=[[1, 1, 1, 1]]), "logits"),
            (dict(g, labels=[1, 0], logits=[0.5, -1], mask=[1, 1]), "logits"),
        ]
        for body, field in cases:
            expect_error(api.observe("e", body), 422, "invalid_observation", field)
        # Tensor errors: exactly those of /v1/loss for the same tensors and config.
        lab = np.array([[1.0, 0, 1]], dtype=np.float32)
        tensor_cases = [
            {"labels": [[1, 0]], "logits": [[0.5, -1, 1]]},
            {"labels": [[1, 0, 1]], "logits": [[0.5, "NaN", 1]]},
            {"labels": [[1, 0, 1]], "logits": [[0.5, 1, 1]], "weights": [1, 1]},
            {"labels": [[1, 0, 1]], "logits": [[0.5, [1], 1]]},
            {"labels": {"shape": [1, 3], "dtype": "float32", "b64": tensor(lab, "b64")["b64"][:-4]},
             "logits": [[0.5, 1, 1]]},
            {"labels": {"shape": [1, 3], "dtype": "float16", "b64": "AAAA"}, "logits": [[0.5, 1, 1]]},
            {"logits": [[0.5, 1, 1]]},
            {"labels": [[1, 0, 1]], "predictions": [[0.5, 1, 1]]},
            {"labels": [[1, 0, 1]], "logits": [[0.5, 1, 1]], "mask": [[1, 1, 1]], "weights": [[1, 1, 1]]},
        ]
        for tc in tensor_cases:
            st1, h1, b1 = api.call("POST", "/v1/loss", dict(tc, loss=SCE, dtype="float64"))
            assert st1 != 200, tc
            st, h, b = api.observe("e", dict(tc, time=now - 30))
            assert (st, b.get("code"), b.get("field")) == (st1, b1.get("code"), b1.get("field")), \
                f"observe {tc}: {st} {b}; /v1/loss: {st1} {b1}"
        st, h, b = api.observe("e", "[1]")
        assert st == 422 and b["code"] in ("invalid_observation", "invalid_request"), (st, b)
        expect_error(api.observe("e", '{"labels": '), 400, "malformed_json")
        expect_error(api.observe("nope", g), 404, "monitor_not_found")
        # Slice combinations: --max-slice-values 3.
        for i, slc in enumerate(({"region": "eu"}, {"region": "us"}, {"model_version": "1", "region": "us"})):
            o = Obs(good.labels, good.x, good.weights, good.t_ms, slc, None)
            assert api.observe("e", o.body())[0] == 200, slc
            accepted.append(o)
        mid = api.get("e")
        expect_error(api.observe("e", dict(g, id="over", slice={"region": "ap"})), 422, "limit_exceeded", "slice")
        o = Obs(good.labels, good.x, good.weights, good.t_ms, {"region": "us"}, "kept")
        assert api.observe("e", o.body())[0] == 200, "a known combination refused at the limit"
        accepted.append(o)
        # The edges of time: 290 s ahead and just within the retention are accepted.
        for t in (now + 290, now - 2 * 86400 + 120):
            o = Obs(good.labels, good.x, good.weights, int(t * 1000), {"region": "us"}, None)
            st, h, b = api.observe("e", o.body())
            assert st == 200, (t, st, b)
            accepted.append(o)
        # Within the retention, but in a minute that starts before it: refused (retention drops
        # whole buckets), not acknowledged and then dropped at the next upkeep.
        t = now - 2 * 86400 + 1
        if t // 60 * 60 < int(now) - 2 * 86400:
            o = Obs(good.labels, good.x, good.weights, int(t * 1000), {"region": "us"}, None)
            expect_error(api.observe("e", o.body()), 422, "invalid_observation", "time")
        # RFC 3339's other spellings: nanoseconds, +00:00, a negative offset, a fraction and offset.
        base = int(now) - 120
        utc = datetime.fromtimestamp(base, timezone.utc)
        minus = datetime.fromtimestamp(base, timezone(timedelta(hours=-7)))
        for text, t in ((utc.strftime("%Y-%m-%dT%H:%M:%S.123456789Z"), base + 0.123456789),
                        (utc.strftime("%Y-%m-%dT%H:%M:%S+00:00"), base),
                        (minus.strftime("%Y-%m-%dT%H:%M:%S-07:00"), base),
                        (minus.strftime("%Y-%m-%dT%H:%M:%S.25-07:00"), base + 0.25)):
            st, h, b = api.observe("e", dict(good.tensors(), time=text, slice={"region": "us"}))
            assert st == 200 and abs(b["time"] - t) < 1e-6, (text, t, st, b)
            accepted.append(Obs(good.labels, good.x, good.weights, round(t * 1000), {"region": "us"}))
        # Nothing refused was counted.
        after = api.get("e")
        assert comparable(mid)["total"]["observations"] == comparable(before)["total"]["observations"] + 3
        d = Diff()
        check_monitor(d, after, accepted, config, ["a", "b", "c"])
        d.done(" after the refused observations")
        # The refused id is free: the same body with it is accepted now.
        st, h, b = api.observe("e", dict(g, id="over", slice={"region": "us"}))
        assert st == 200 and b["duplicate"] is False, (st, b)
        # Series: bad query parameters are 400 invalid_query with the parameter's name.
        for q, field in (([("step", "90s")], "step"), ([("step", "0m")], "step"), ([("step", "x")], "step"),
                         ([("step", "1m"), ("from", "0"), ("to", str(int(now)))], "step"),
                         ([("from", "yesterday")], "from"), ([("to", "2026-13-01T00:00:00Z")], "to"),
                         ([("class", "zebra")], "class"), ([("class", "3")], "class"),
                         ([("slice", "colour=red")], "slice"), ([("slice", "region")], "slice")):
            expect_error(api.series("e", q), 400, "invalid_query", field)
        expect_error(api.series("nope", []), 404, "monitor_not_found")
        # Slice values with "=", non-ASCII and URL-special characters, as keys and as filters.
        created(api, "u", {"loss": SCE, "dtype": "float64", "slices": ["region"]})
        values = ("a=b", "z\u00fcrich", "x y&z%2F")
        for v in values:
            assert api.observe("u", dict(good.tensors(), slice={"region": v}))[0] == 200, v
        assert sorted(api.get("u")["slices"]) == sorted(f"region={v}" for v in values)
        for v in values:
            st, h, b = api.series("u", [("slice", "region=" + v)])
            assert st == 200 and [p["observations"] for p in b["points"]] == [1], (v, st, b)
        expect_error(api.series("u", [("class", "0")]), 400, "invalid_query", "class")  # no classes
        b = expect_error(api.series("e", [("from", str(int(now))), ("to", str(int(now) - 60))]), 400, "invalid_query")
        assert b["field"] in ("from", "to"), b
        # At most 10000 steps: 10000 are answered, 10001 refused.
        t0 = int(now) // 60 * 60
        assert api.series("e", [("step", "1m"), ("from", str(t0 - 600000)), ("to", str(t0))])[0] == 200
        expect_error(api.series("e", [("step", "1m"), ("from", str(t0 - 600060)), ("to", str(t0))]),
                     400, "invalid_query", "step")
        api.close()
        print(f"    {len(cases)} refused observations, {len(tensor_cases)} tensor errors as /v1/loss; nothing counted")
        stop_clean(srv)


# ---- Reductions' denominators ------------------------------------------------------------------

def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@test
def monitor_denominators(args):
    """The denominator rule of each framework, summed over observations (proto/README.md's
    table): torch cross_entropy's Σ w[target] (ignored targets out), Keras' one per sample,
    TF's SUM_OVER_BATCH_SIZE (every element) and SUM (the weighted sum itself); an empty
    monitor's loss is 0 for TF and Keras (div_no_nan) and NaN for torch (0/0)."""
    rng = np.random.default_rng(17)
    now = int(time.time())
    C = 4
    cw = np.array([1.0, 2.0, 0.0, 0.5])
    ce, keras, tf_all = [], [], []
    for i in range(6):
        N = int(rng.integers(2, 6))
        x = rng.normal(0, 2, (N, C)).astype(np.float32).astype(np.float64)
        y = rng.integers(0, C, N)
        if i % 2:
            y[0] = -100  # torch's ignore_index: no loss, no weight
        ce.append((x, y))
        z = (rng.random((N, 3)) < 0.5).astype(np.float64)
        p = rng.uniform(0.05, 0.95, (N, 3)).astype(np.float32).astype(np.float64)
        sw = rng.choice(np.array([0, 0.5, 1, 2]), N)
        keras.append((z, p, sw))
        tf_all.append(Obs((rng.random((N, C)) < 0.5).astype(np.float64),
                          rng.normal(0, 2, (N, C)).astype(np.float32).astype(np.float64),
                          (rng.random((N, C)) < 0.5).astype(np.float64)))
    with state_dir() as tmp, start(args, os.path.join(tmp, "state.db")) as srv:
        api = Api(srv)
        created(api, "ce", {"loss": "torch.nn.functional.cross_entropy", "dtype": "float64"})
        created(api, "keras", {"loss": "keras3.losses.BinaryCrossentropy", "dtype": "float64"})
        created(api, "batch", {"loss": SCE, "dtype": "float64", "reduction": "SUM_OVER_BATCH_SIZE", "num_classes": C})
        created(api, "sum", {"loss": SCE, "dtype": "float64", "reduction": "SUM"})
        # Empty: TF's div_no_nan gives 0, torch's 0/0 is NaN, Keras divides by no sample: 0.
        for name, want in (("ce", "NaN"), ("keras", 0), ("batch", 0), ("sum", 0)):
            t = api.get(name)["total"]
            assert t["loss"] == want and t["observations"] == 0, (name, t)
        for x, y in ce:
            assert api.observe("ce", {"labels": y.tolist(), "logits": x.tolist(), "weights": cw.tolist(),
                                      "time": now - 60})[0] == 200
        for z, p, sw in keras:
            assert api.observe("keras", {"labels": z.tolist(), "predictions": p.tolist(), "weights": sw.tolist(),
                                         "time": now - 60})[0] == 200
        for o in tf_all:
            assert api.observe("batch", dict(o.body(), time=now - 60))[0] == 200
            assert api.observe("sum", dict(o.body(), time=now - 60))[0] == 200
        d = Diff()
        # torch cross_entropy, class weights: l_i = −w[y_i]·log_softmax(x_i)[y_i], mean = Σ l / Σ w[y].
        ws = den = 0.0
        nnz = samples = 0
        for x, y in ce:
            keep = y != -100
            wy = cw[y[keep]]
            ws += float((-wy * log_softmax(x[keep])[np.arange(keep.sum()), y[keep]]).sum())
            den += float(wy.sum())
            nnz += int((wy != 0).sum())
            samples += len(y)
        t = api.get("ce")["total"]
        d.num("ce.weighted_sum", t["weighted_sum"], ws)
        d.num("ce.denominator", t["denominator"], den)
        d.num("ce.sum_weights", t["sum_weights"], den)
        d.num("ce.loss", t["loss"], ws / den)
        d.num("ce.num_nonzero_weights", t["num_nonzero_weights"], nnz, exact=True)
        d.num("ce.samples", t["samples"], samples, exact=True)
        # Keras 3 BinaryCrossentropy: per sample the mean over the last axis, times its weight;
        # sum_over_batch_size divides by the samples, weighted or not.
        ws = sw_sum = 0.0
        nnz = n = 0
        for z, p, sw in keras:
            per = (-(z * np.log(p) + (1 - z) * np.log(1 - p))).mean(axis=-1)
            ws += float((per * sw).sum())
            sw_sum += float(sw.sum())
            nnz += int((sw != 0).sum())
            n += len(sw)
        t = api.get("keras")["total"]
        d.num("keras.weighted_sum", t["weighted_sum"], ws)
        d.num("keras.denominator", t["denominator"], float(n))
        d.num("keras.sum_weights", t["sum_weights"], sw_sum)
        d.num("keras.num_nonzero_weights", t["num_nonzero_weights"], nnz, exact=True)
        d.num("keras.loss", t["loss"], ws / n)
        d.num("keras.samples", t["samples"], n, exact=True)
        # TF SUM_OVER_BATCH_SIZE: every element counts, masked or not; per class too.
        d.figures("batch.total", api.get("batch")["total"], figures(tf_all, "SUM_OVER_BATCH_SIZE", C))
        # SUM: the loss is the weighted sum.
        t = api.get("sum")["total"]
        want = figures(tf_all, "SUM_OVER_BATCH_SIZE")["weighted_sum"]
        d.num("sum.weighted_sum", t["weighted_sum"], want)
        d.num("sum.loss", t["loss"], want)
        d.done(" in the reductions' denominators")
        api.close()
        stop_clean(srv)


# ---- Concurrency -------------------------------------------------------------------------------

@test
def monitor_concurrent(args):
    """8 clients at once, every id sent by two of them at the same time: each id is counted
    once (one answer says duplicate: false, the other true), and the figures are numpy's."""
    rng = np.random.default_rng(31)
    now_ms = int(time.time() * 1000)
    obs = random_observations(rng, now_ms, 160, C=4)
    for i, o in enumerate(obs):
        o.oid = f"c-{i}"
        if o.t_ms is None:
            o.t_ms = now_ms - 1000 * i
    with state_dir() as tmp, start(args, os.path.join(tmp, "state.db"), "--workers", "4") as srv:
        api = Api(srv)
        config = created(api, "cc", {"loss": SCE, "dtype": "float64", "num_classes": 4, "slices": SLICES})
        answers = {}
        lock = threading.Lock()

        def client(k):
            c = Api(srv)
            # Clients 2j and 2j+1 send the same quarter of the ids, in opposite orders.
            part = obs[(k // 2) * 40:(k // 2 + 1) * 40]
            for o in (part if k % 2 == 0 else part[::-1]):
                st, h, b = c.observe("cc", o.body())
                with lock:
                    answers.setdefault(o.oid, []).append((st, b.get("duplicate") if isinstance(b, dict) else b))
            c.close()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bad = {oid: a for oid, a in answers.items() if sorted(a, key=str) != [(200, False), (200, True)]}
        assert len(answers) == len(obs) and not bad, f"{len(bad)} ids answered wrongly: {list(bad.items())[:5]}"
        d = Diff()
        check_monitor(d, api.get("cc"), obs, config, 4)
        d.done(" after concurrent observations")
        api.close()
        print(f"    {len(obs)} ids sent twice at once by 8 clients: each counted once")
        stop_clean(srv)


# ---- v2 ------------------------------------------------------------------------------------------

def v2_duplicate(doc):
    """The answer's monitor_duplicate parameter (the response's parameters, else its LOSS's)."""
    if "monitor_duplicate" in (doc.get("parameters") or {}):
        return doc["parameters"]["monitor_duplicate"]
    for o in doc.get("outputs") or []:
        if "monitor_duplicate" in (o.get("parameters") or {}):
            return o["parameters"]["monitor_duplicate"]
    return "absent"


@test
def monitor_v2(args):
    check_monitor_v2(args)


@test
def monitor_v2_under_small_limit(args):
    """--max-elements at or below the HTTP threads' inline limit (4096 elements): a small v2
    observation is still handed to a worker (its hand-off to the writer suspends the
    connection) and answered and counted as above; the HTTP thread used to take it itself, its
    call leaked (fuzz_http under ASan found it)."""
    check_monitor_v2(args, "--max-elements", "4096", "--http-threads", "2")


def check_monitor_v2(args, *extra):
    from tests_v2 import TritonLikeClient
    rng = np.random.default_rng(4)
    now_ms = int(time.time() * 1000)
    obs = random_observations(rng, now_ms, 12, C=4)
    for i, o in enumerate(obs):
        if o.t_ms is None:
            o.t_ms = now_ms - 1000 * i
    with state_dir() as tmp, start(args, os.path.join(tmp, "state.db"), *extra) as srv:
        api = Api(srv)
        # float32 (the default): v2's own dtype parameter is not sent, the config's applies.
        config = created(api, "v", {"loss": SCE, "num_classes": 4, "slices": SLICES})
        c = TritonLikeClient(srv.port)
        d = Diff(fp32=True)
        for i, o in enumerate(obs):
            inputs = [("LABELS", o.labels.astype(np.float32)), ("LOGITS", o.x.astype(np.float32))]
            if o.weights is not None:
                inputs.append(("WEIGHTS", o.weights.astype(np.float32)))
            params = {"monitor": "v",
                      "monitor_time": o.body()["time"], "monitor_id": f"v2-{i}"}
            if o.slc:
                params["monitor_slice"] = o.slc if i % 2 else json.dumps(o.slc)
            st, doc, out = c.infer(SCE, inputs, parameters=params, binary_inputs=i % 3 != 0)
            if st != 200:
                d.errors.append(f"v2 observation {i}: {st} {doc}")
                continue
            dup = v2_duplicate(doc)
            d.eq(f"v2 {i} monitor_duplicate", dup, False)
            want = figures([o], "SUM_BY_NONZERO_WEIGHTS")
            d.num(f"v2 {i} LOSS", float(out["LOSS"]), want["loss"])
        d.done(" in the v2 answers")
        # The same id again: a duplicate, counted once.
        inputs = [("LABELS", obs[0].labels.astype(np.float32)), ("LOGITS", obs[0].x.astype(np.float32))]
        if obs[0].weights is not None:
            inputs.append(("WEIGHTS", obs[0].weights.astype(np.float32)))
        st, doc, out = c.infer(SCE, inputs, parameters={"monitor": "v", "monitor_id": "v2-0",
                                                         "monitor_time": obs[0].body()["time"]})
        assert st == 200 and v2_duplicate(doc) is True, (st, doc)
        # Another loss in the path than the monitor's: refused, field monitor; unknown monitor: 404.
        st, msg, _ = c.infer(BCE, inputs, parameters={"monitor": "v"})
        assert st in (400, 422), (st, msg)
        b = srv.request("POST", f"/v2/models/{BCE}/infer",
                        {"parameters": {"monitor": "v"},
                         "inputs": [{"name": "LABELS", "datatype": "FP32", "shape": [1, 4], "data": [1, 0, 1, 0]},
                                    {"name": "LOGITS", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]})
        assert b[0] in (400, 422), b
        # The field is the parameter, named as v2's other parameters are (parameters.dtype...);
        # checked at the end, not to hide what follows.
        wrong_field = b[2].get("field") != "parameters.monitor" and f"POST /v2/models/{BCE}/infer with " \
            f"parameters monitor of a {SCE} monitor: field {b[2].get('field')!r}, expected " \
            f"'parameters.monitor': {b}"
        st, msg, _ = c.infer(SCE, inputs, parameters={"monitor": "nope"})
        assert st == 404, (st, msg)
        c.close()
        got = api.get("v")
        d = Diff(fp32=True)
        check_monitor(d, got, obs, config, 4)
        d.done(" in the figures fed through v2")
        assert not wrong_field, wrong_field
        api.close()
        print(f"    {len(obs)} observations through /v2/models/{SCE}/infer (binary and JSON inputs)")
        stop_clean(srv)
