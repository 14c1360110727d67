"""End-to-end tests of late labels (issue 13): predictions now, labels later. The contract: a
monitor's figures (total, every window, every slice, every class) are those of ONE /v1/loss
call over every stored prediction, with the latest label of each (id, class) and its weight
as the mask (unknown positions weight 0; torch cross_entropy: ignore_index). Each check here
computes that twice, independently of the monitor's code: with numpy from the formulas, and
with the server's own /v1/loss over the same tensors (a stateless path the monitor does not
share). The expected answers of /labels (applied, replaced, unknown) come from a model of the
label state kept here."""
import base64
import copy
import json
import math
import os
import sqlite3
import threading
import time

import numpy as np

from common import sqlite_only, JSON, expect_error, stop_clean, test, wait_until
from server import Server, exchange
from tests_monitors import Api, comparable, json_diff, rfc3339, state_dir

SCE = "sigmoid_cross_entropy"
BCE = "torch.nn.functional.binary_cross_entropy_with_logits"
TCE = "torch.nn.functional.cross_entropy"
UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RTOL = 1e-9
ATOL = 1e-11  # sums that should be 0 after a weight went to 0 (a replaced label is subtracted)

# ---- numpy: the pointwise losses, from their published formulas -------------------------------


def softplus_neg_abs(x):
    return np.log1p(np.exp(-np.abs(x)))


def sce(z, x, params):
    """tf.nn.sigmoid_cross_entropy_with_logits: max(x, 0) - x z + log(1 + exp(-|x|))."""
    return np.maximum(x, 0.0) - x * z + softplus_neg_abs(x)


def bce_pos_weight(z, x, params):
    """torch binary_cross_entropy_with_logits: (1 - z) x - (1 + (pw - 1) z) log_sigmoid(x)."""
    pw = np.asarray(params.get("pos_weight", 1.0), dtype=np.float64)
    log_sig = -(np.maximum(-x, 0.0) + softplus_neg_abs(x))
    return (1 - z) * x - (1 + (pw - 1) * z) * log_sig


def focal(z, x, params):
    """torchvision sigmoid_focal_loss: bce * (1 - p_t)^gamma * alpha_t (alpha >= 0)."""
    a, g = params.get("alpha", 0.25), params.get("gamma", 2.0)
    p = 1 / (1 + np.exp(-x))
    p_t = p * z + (1 - p) * (1 - z)
    out = sce(z, x, params) * (1 - p_t) ** g
    if a >= 0:
        out = out * (a * z + (1 - a) * (1 - z))
    return out


def log_loss(z, p, params):
    """tf.compat.v1.losses.log_loss: -z log(p + eps) - (1 - z) log(1 - p + eps)."""
    eps = params.get("epsilon", 1e-7)
    return -z * np.log(p + eps) - (1 - z) * np.log(1 - p + eps)


def mse(z, p, params):
    return (p - z) ** 2


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def f32(a):
    """Values a float32 tensor holds exactly (so that every encoding sends the same numbers)."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def tensor(a, fmt):
    a = np.asarray(a, dtype=np.float64)
    if fmt == "b64":
        return {"shape": list(a.shape), "dtype": "float32", "b64": base64.b64encode(a.astype("<f4").tobytes()).decode()}
    if fmt == "b64f64":
        return {"shape": list(a.shape), "dtype": "float64", "b64": base64.b64encode(a.astype("<f8").tobytes()).decode()}
    if fmt == "data":
        return {"shape": list(a.shape), "data": a.ravel().tolist()}
    return a.tolist()


def num(x):
    if isinstance(x, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(x, x)
    return x


def seconds(d):
    return int(d[:-1]) * UNIT[d[-1]]


def window_from(now, w):
    return now // 60 * 60 - seconds(w) + 60


class Diff:
    """Collects mismatches; done() fails with them all."""

    def __init__(self):
        self.errors, self.count = [], 0

    def num(self, what, got, want, exact=False, rtol=RTOL, atol=ATOL):
        self.count += 1
        g = num(got)
        if isinstance(g, bool) or not isinstance(g, (int, float)) or (exact and isinstance(got, str)):
            self.errors.append(f"{what}: {got!r}, expected {want!r}")
            return
        if exact:
            ok = g == want
        elif isinstance(want, float) and math.isnan(want):
            ok = math.isnan(g) and got == "NaN"
        elif isinstance(want, float) and math.isinf(want):
            ok = g == want
        else:
            ok = abs(g - want) <= atol + rtol * abs(want)
        if not ok:
            self.errors.append(f"{what}: {got!r}, expected {want!r}")

    def eq(self, what, got, want):
        self.count += 1
        if got != want:
            self.errors.append(f"{what}: {got!r}, expected {want!r}")

    def done(self, context=""):
        assert not self.errors, f"{len(self.errors)} of {self.count} checks failed{context}:\n" + \
            "\n".join(self.errors[:30])


# ---- A monitor with late labels, and the model of what it holds ------------------------------

class Late:
    """One monitor: what was stored (predictions, their time buckets and slices) and the label
    state (the latest label of each position), to predict every answer and every figure.

    kind: "elem" (labels [N, C] of values, mask = weights), "sparse" (class index, weights [N]),
    "onehot" (softmax_cross_entropy / Keras CategoricalCrossentropy: one-hot labels, weights
    [N]), "torchce" (class index or ignore_index, no weights)."""

    def __init__(self, api, name, cfg, kind="elem", pointwise=None, input_name="logits"):
        self.api, self.name, self.kind, self.pointwise, self.input_name = api, name, kind, pointwise, input_name
        st, h, b = api.put(name, cfg)
        assert st == 201, (name, cfg, st, b)
        self.cfg = b["config"]
        self.names = cfg.get("classes")
        self.C = len(self.names) if self.names else cfg["num_classes"]
        self.params = dict(self.cfg.get("params") or {})
        self.ids, self.X, self.bucket, self.slc, self.ptime = [], [], [], [], []
        self.row = {}        # id -> row
        self.reqs = []       # (bucket, slice) of each predictions request that stored a row
        self.lab = {}        # elem: (id, c) -> (value, weight); per-sample: id -> (c, weight)
        self.first = {}      # (id, c) -> delay of its first label (None: the server's clock)
        self.keys = set()    # idempotency keys used
        self.version = 0
        self.cache = {}
        self.class_changed = False

    # -- requests --

    def predict(self, ids, X, t=None, slc=None, fmt="json", time_fmt="number"):
        body = {"ids": list(ids), self.input_name: tensor(X, fmt)}
        if t is not None:
            body["time"] = rfc3339(int(round(t * 1000))) if time_fmt == "Z" else t
        if slc:
            body["slice"] = slc
        st, h, b = self.api.call("POST", f"/v1/monitors/{self.name}/predictions", body)
        assert st == 200, (self.name, "predictions", st, b)
        want_refused, seen = [], set()
        for i, pid in enumerate(ids):
            if pid in self.row or pid in seen:
                want_refused.append((i, pid))
            seen.add(pid)
        assert b.get("monitor") == self.name, b
        got_refused = [(r.get("index"), r.get("id")) for r in b.get("refused") or []]
        assert got_refused == want_refused and b.get("stored") == len(ids) - len(want_refused), \
            f"{self.name} predictions: stored {b.get('stored')}, refused {got_refused}; " \
            f"expected {len(ids) - len(want_refused)}, {want_refused}"
        for r in b.get("refused") or []:
            assert isinstance(r.get("reason"), str) and r["reason"], r
        tt = t if t is not None else b.get("time")
        assert isinstance(b.get("time"), (int, float)) and abs(b["time"] - tt) < 1e-3, (t, b)
        if t is None:
            assert abs(tt - time.time()) < 30, b
        # A minute bucket; an hour for a time older than --rollup-after (default 48 h).
        unit = 3600 if time.time() - tt > 48 * 3600 else 60
        bucket = math.floor(tt / unit) * unit
        assert b.get("bucket") == bucket, (bucket, b)
        X = np.asarray(X, dtype=np.float64)
        refused = {i for i, _ in want_refused}
        for i, pid in enumerate(ids):
            if i in refused:
                continue
            self.row[pid] = len(self.ids)
            self.ids.append(pid)
            self.X.append(X[i])
            self.bucket.append(bucket)
            self.slc.append(dict(slc or {}))
            self.ptime.append(tt)
        if len(ids) > len(refused):
            self.reqs.append((bucket, dict(slc or {})))
        self.version += 1
        return b

    def cls(self, c):
        return self.names.index(c) if isinstance(c, str) else c

    def _expect(self, entries, key, t):
        """The answer the label request should get, and the state after it (applied in order)."""
        if key is not None and key in self.keys:
            return {"applied": 0, "replaced": 0, "unknown": 0, "unknown_ids": set(), "duplicate": True}, None
        lab, first = dict(self.lab), dict(self.first)
        applied = replaced = unknown = 0
        unknown_ids = set()
        changed = False
        for pid, c, v, w in entries:
            if pid not in self.row:
                unknown += 1
                unknown_ids.add(pid)
                continue
            k = pid if self.kind != "elem" else (pid, c)
            if k in lab:
                replaced += 1
                changed |= self.kind != "elem" and lab[k][0] != c
            else:
                applied += 1
            lab[k] = (c if self.kind != "elem" else v, w)
            if (pid, c) not in first:
                first[(pid, c)] = None if t is None else t - self.ptime[self.row[pid]]
        return ({"applied": applied, "replaced": replaced, "unknown": unknown, "unknown_ids": unknown_ids,
                 "duplicate": False}, (lab, first, changed))

    def _send(self, body, entries, key=None, t=None, dense=False):
        if key is not None:
            body["id"] = key
        if t is not None:
            body["time"] = t
        want, state = self._expect(entries, key, t)
        st, h, b = self.api.call("POST", f"/v1/monitors/{self.name}/labels", body)
        assert st == 200, (self.name, "labels", st, b, json.dumps(body)[:300])
        got = {"applied": b.get("applied"), "replaced": b.get("replaced"), "unknown": b.get("unknown"),
               "unknown_ids": set(b.get("unknown_ids") or []), "duplicate": b.get("duplicate")}
        if dense and want["unknown"]:
            # Dense rows of an unknown id: an "entry" may be the row or each known position.
            rows = len({pid for pid, _, _, _ in entries if pid not in self.row})
            if got["unknown"] == rows:
                want["unknown"] = rows
        if len(want["unknown_ids"]) > 100:
            assert len(got["unknown_ids"]) == 100 and got["unknown_ids"] <= want["unknown_ids"], b
            got["unknown_ids"] = want["unknown_ids"]
        assert b.get("monitor") == self.name, b
        assert got == want, f"{self.name} labels: got {got}, expected {want}; request {json.dumps(body)[:400]}"
        if state is not None:
            self.lab, self.first, changed = state
            self.class_changed |= changed
            if key is not None:
                self.keys.add(key)
            self.version += 1
        return b

    def label(self, entries, key=None, t=None, by_name=None):
        """Sparse labels: entries (id, class index, value, weight or None)."""
        out, norm = [], []
        for i, (pid, c, v, w) in enumerate(entries):
            e = {"id": pid}
            use_name = self.names and (by_name if by_name is not None else i % 2 == 0) and isinstance(c, int) \
                and 0 <= c < self.C
            e["class"] = self.names[c] if use_name else c
            if self.kind == "elem":
                e["value"] = v
            if w is not None:
                e["weight"] = w
            out.append(e)
            norm.append((pid, self.cls(c), v, 1.0 if w is None else w))
        return self._send({"labels": out}, norm, key, t)

    def dense(self, ids, Z, M=None, key=None, t=None):
        body = {"ids": list(ids), "labels": np.asarray(Z).tolist()}
        if M is not None:
            body["mask"] = np.asarray(M).tolist()
        norm = []
        for i, pid in enumerate(ids):
            for c in range(self.C):
                w = 1.0 if M is None else float(M[i][c])
                if w != 0:
                    norm.append((pid, c, float(Z[i][c]), w))
        return self._send(body, norm, key, t, dense=True)

    # -- the expected figures --

    def tensors(self, idx):
        """labels, input, weights of the one /v1/loss request over the rows idx."""
        n, C = len(idx), self.C
        X = np.array([self.X[i] for i in idx], dtype=np.float64).reshape(n, C)
        if self.kind == "elem":
            Z, W = np.zeros((n, C)), np.zeros((n, C))
            for r, i in enumerate(idx):
                for c in range(C):
                    v = self.lab.get((self.ids[i], c))
                    if v is not None:
                        Z[r, c], W[r, c] = v
            return Z, X, W
        y = np.full(n, -100 if self.kind == "torchce" else 0, dtype=np.int64)
        W = np.zeros(n)
        for r, i in enumerate(idx):
            v = self.lab.get(self.ids[i])
            if v is not None:
                y[r], W[r] = v
        if self.kind == "onehot":
            # One-hot of the labelled class (also for a label of weight 0); zeros when unknown.
            Y = np.zeros((n, C))
            for r, i in enumerate(idx):
                if self.ids[i] in self.lab:
                    Y[r, y[r]] = 1.0
            return Y, X, W
        return y, X, W

    def v1(self, idx):
        """The server's /v1/loss over the rows idx (None when there are none)."""
        if not idx:
            return None
        ck = (tuple(idx), self.version)
        if ck in self.cache:
            return self.cache[ck]
        Z, X, W = self.tensors(idx)
        req = {"loss": self.cfg["loss"], "dtype": self.cfg["dtype"], "reduction": self.cfg["reduction"],
               "params": self.cfg.get("params") or {}, "labels": Z.tolist(), self.input_name: X.tolist(),
               "outputs": ["loss", "weighted_sum", "sum_weights", "num_nonzero_weights"]}
        if self.kind == "elem":
            req["outputs"].append("per_class")
        if self.kind != "torchce":
            req["weights"] = W.tolist()
        st, h, b = self.api.call("POST", "/v1/loss", req)
        assert st == 200, (st, b)
        self.cache[ck] = b
        return b

    def numpy(self, idx, observations):
        """F from the formulas (None for the losses without a numpy formula here, and for
        float32 monitors: their elementwise work is float32, /v1/loss's at the same dtype)."""
        if self.cfg["dtype"] != "float64":
            return None
        n, C = len(idx), self.C
        red = self.cfg["reduction"]
        Z, X, W = self.tensors(idx)
        if self.kind == "elem":
            if self.pointwise is None:
                return None
            L = self.pointwise(Z, X, self.params) if n else np.zeros((0, C))
            WL = W * L
            per = {"ws": WL.sum(axis=0), "sw": W.sum(axis=0), "nnz": (W != 0).sum(axis=0), "sq": (WL * L).sum(axis=0),
                   "el": np.full(C, n)}
            elements = n * C
        else:
            if self.kind == "onehot" and self.cfg["loss"].startswith("keras"):
                return None
            if n:
                lsm = log_softmax(X)
                if self.kind == "onehot":
                    L = -(Z * lsm).sum(axis=-1)
                else:
                    yi = np.where(Z < 0, 0, Z)
                    L = -lsm[np.arange(n), yi]
                if self.kind == "torchce":
                    W = (Z >= 0).astype(np.float64)
            else:
                L = np.zeros(0)
            WL = W * L
            per = None
            tot = {"ws": WL.sum(), "sw": W.sum(), "nnz": (W != 0).sum(), "el": n}
            elements = n
        if per is not None:
            tot = {k: v.sum() for k, v in per.items()}
        den_of = {"SUM_BY_NONZERO_WEIGHTS": "nnz", "SUM_OVER_NONZERO_WEIGHTS": "nnz", "MEAN": "sw",
                  "SUM_OVER_BATCH_SIZE": "el", "mean": "el" if self.kind != "torchce" else "sw"}[red]
        rule = "torch" if self.cfg["loss"].startswith("torch") else "tf"

        def div(ws, den):
            if rule == "tf":
                return 0.0 if den == 0 else ws / den
            if den == 0:
                return math.nan if ws == 0 else math.copysign(math.inf, ws)
            return ws / den
        f = {"loss": div(float(tot["ws"]), float(tot[den_of])), "weighted_sum": float(tot["ws"]),
             "denominator": float(tot[den_of]), "sum_weights": float(tot["sw"]),
             "num_nonzero_weights": int(tot["nnz"]), "elements": elements, "samples": n,
             "observations": observations}
        if per is not None:
            names = self.names or list(range(C))
            f["per_class"] = [{"class": names[c], "loss": div(float(per["ws"][c]), float(per[den_of][c])),
                               "weighted_sum": float(per["ws"][c]), "denominator": float(per[den_of][c]),
                               "sum_weights": float(per["sw"][c]), "num_nonzero_weights": int(per["nnz"][c]),
                               "sum_sq": float(per["sq"][c])} for c in range(C)]
        return f

    def check_f(self, d, what, got, idx, observations):
        if not isinstance(got, dict):
            d.errors.append(f"{what}: not an object: {got!r:.200}")
            return
        want = self.numpy(idx, observations)
        if want is not None:
            for k in ("loss", "weighted_sum", "denominator", "sum_weights"):
                d.num(f"{what}.{k} (numpy)", got.get(k), want[k])
            for k in ("num_nonzero_weights", "elements", "samples", "observations"):
                d.num(f"{what}.{k} (numpy)", got.get(k), want[k], exact=True)
            if "per_class" in want:
                pcs = got.get("per_class")
                if not isinstance(pcs, list) or len(pcs) != self.C:
                    d.errors.append(f"{what}.per_class: {pcs!r:.200}")
                else:
                    for g, w in zip(pcs, want["per_class"]):
                        p = f"{what}.per_class[{w['class']!r}]"
                        d.eq(f"{p}.class", g.get("class"), w["class"])
                        for k in ("loss", "weighted_sum", "denominator", "sum_weights", "sum_sq"):
                            d.num(f"{p}.{k} (numpy)", g.get(k), w[k])
                        d.num(f"{p}.num_nonzero_weights (numpy)", g.get("num_nonzero_weights"),
                              w["num_nonzero_weights"], exact=True)
        else:
            n = len(idx)
            d.num(f"{what}.samples", got.get("samples"), n, exact=True)
            d.num(f"{what}.elements", got.get("elements"), n * self.C if self.kind == "elem" else n, exact=True)
            d.num(f"{what}.observations", got.get("observations"), observations, exact=True)
        v1 = self.v1(idx)
        if v1 is None:
            return
        for k in ("loss", "weighted_sum", "sum_weights"):
            d.num(f"{what}.{k} (/v1/loss)", got.get(k), num(v1[k]))
        d.num(f"{what}.num_nonzero_weights (/v1/loss)", got.get("num_nonzero_weights"), v1["num_nonzero_weights"],
              exact=True)
        if self.kind == "elem":
            pcs = got.get("per_class") or []
            if len(pcs) != self.C:
                d.errors.append(f"{what}.per_class: {len(pcs)} entries, expected {self.C}")
            else:
                for c in range(self.C):
                    d.num(f"{what}.per_class[{c}].loss (/v1/loss)", pcs[c].get("loss"), num(v1["per_class"][c]))

    def check(self, context="", delays=True):
        """GET against the model: every figure, the labels block; returns the GET answer."""
        got = self.api.get(self.name)
        d = Diff()
        now = got["now"]
        all_idx = list(range(len(self.ids)))
        self.check_f(d, "total", got.get("total"), all_idx, len(self.reqs))

        def windows(prefix, wins, idx, reqs):
            d.eq(f"{prefix}windows keys", sorted(wins or {}), sorted(self.cfg["windows"]))
            for w in self.cfg["windows"]:
                frm = window_from(now, w)
                g = (wins or {}).get(w) or {}
                d.eq(f"{prefix}windows[{w}].from", g.get("from"), frm)
                self.check_f(d, f"{prefix}windows[{w}]", g, [i for i in idx if self.bucket[i] >= frm],
                             sum(1 for b, _ in reqs if b >= frm))
        windows("", got.get("windows"), all_idx, self.reqs)
        keys = {}
        for i in all_idx:
            for k, v in self.slc[i].items():
                keys.setdefault(f"{k}={v}", []).append(i)
        slices = got.get("slices") or {}
        d.eq("slices keys", sorted(slices), sorted(keys))
        for key, idx in keys.items():
            k, v = key.split("=", 1)
            reqs = [r for r in self.reqs if r[1].get(k) == v]
            g = slices.get(key) or {}
            self.check_f(d, f"slices[{key}].total", g.get("total"), idx, len(reqs))
            windows(f"slices[{key}].", g.get("windows"), idx, reqs)
        # The labels block.
        lb = got.get("labels")
        if not self.ids and (lb is None or lb.get("predictions") == 0):
            # Before any prediction: no block (the contract) or, as the server shows it for every
            # monitor that can take predictions, one of zeros.
            d.eq("labels before any prediction", (lb or {}).get("labelled_positions", 0), 0)
        elif not isinstance(lb, dict):
            d.errors.append(f"labels: {lb!r:.200}")
        else:
            n = len(self.ids)
            d.num("labels.predictions", lb.get("predictions"), n, exact=True)
            d.num("labels.labelled_positions", lb.get("labelled_positions"), len(self.lab), exact=True)
            pcs = lb.get("per_class")
            if not self.class_changed:
                counts = [0] * self.C
                for k, v in self.lab.items():
                    counts[k[1] if self.kind == "elem" else v[0]] += 1
                names = self.names or list(range(self.C))
                if not isinstance(pcs, list) or len(pcs) != self.C:
                    d.errors.append(f"labels.per_class: {pcs!r:.200}")
                else:
                    for c, g in enumerate(pcs):
                        d.eq(f"labels.per_class[{c}].class", g.get("class"), names[c])
                        d.num(f"labels.per_class[{c}].labelled", g.get("labelled"), counts[c], exact=True)
                        d.num(f"labels.per_class[{c}].fraction", g.get("fraction"), counts[c] / n)
            if delays and not self.class_changed:
                dl = lb.get("delay") or {}

                def q(what, g, ks):
                    vals = [self.first[k] for k in ks]
                    d.num(f"{what}.count", (g or {}).get("count"), len(vals), exact=True)
                    if vals and all(v is not None for v in vals):
                        d.num(f"{what}.mean", (g or {}).get("mean"), float(np.mean(vals)), rtol=1e-9, atol=1e-6)
                d.eq("labels.delay.windows keys", sorted(dl.get("windows") or {}), sorted(self.cfg["windows"]))
                q("labels.delay.total", dl.get("total"), list(self.first))
                for w in self.cfg["windows"]:
                    frm = window_from(now, w)
                    q(f"labels.delay.windows[{w}]", (dl.get("windows") or {}).get(w),
                      [k for k in self.first if self.bucket[self.row[k[0]]] >= frm])
        d.done(f" in GET /v1/monitors/{self.name}{context}")
        return got


# ---- 1. The identity under random label traffic ----------------------------------------------

CLASSES = ["cat", "dog", "bird", "fish", "ant", "owl", "bee"]


@test
def late_identity(args):
    """200 predictions in 8 requests (times from 2 h to now, slices, every tensor encoding);
    then 26 label batches in random order and size, repeats, corrections of value and weight,
    unknown ids, sparse and dense, class by name and by index; after every batch the figures
    equal numpy's and /v1/loss's over the stored logits, and the answers count as expected."""
    rng = np.random.default_rng(13)
    C = len(CLASSES)
    cfg = {"loss": SCE, "dtype": "float64", "classes": CLASSES, "slices": ["model_version", "region"],
           "windows": ["5m", "30m", "3h"]}
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        m = Late(api, "id", cfg, pointwise=sce)
        assert m.cfg.get("prediction_ttl") == "7d", m.cfg
        m.check(" (before any prediction)")
        now = time.time()
        # (offset from now in s or None for the server's clock, slice, encoding, time format)
        reqs = [(-7000, {"model_version": "7", "region": "eu"}, "json", "number"),
                (-5400.25, {"model_version": "8"}, "b64", "number"),
                (-1700, {}, "b64f64", "Z"),
                (-1500, {"region": "us"}, "data", "number"),
                (-600.5, {"model_version": "7", "region": "us"}, "json", "Z"),
                (-150, {"model_version": "8", "region": "eu"}, "b64", "number"),
                (-30, {"model_version": "7"}, "json", "number"),
                (None, {"region": "eu"}, "json", "number")]
        k = 0
        for j, (off, slc, fmt, tf) in enumerate(reqs):
            n = 25
            ids = [f"u{k + i}" for i in range(n)]
            k += n
            X = f32(rng.normal(0, 2.5, (n, C)))
            t = None if off is None else round(now + off, 3)
            m.predict(ids, X, t, slc, fmt, tf)
        got = m.check(" (before any label)")
        assert got["total"]["loss"] == 0 and all(w["loss"] == 0 for w in got["windows"].values()), got["total"]
        assert all(pc["loss"] == 0 for pc in got["total"]["per_class"]), got["total"]["per_class"]
        ids = list(m.ids)
        values = [0, 1, 1, 0.25, 0.8, 0]
        weights = [None, None, None, 0, 0.5, 2, 1]
        keyed = []
        counts = {"applied": 0, "replaced": 0, "unknown": 0}
        for b in range(26):
            kind = ["sparse", "sparse", "dense", "fix", "sparse", "dense-nomask", "unknown"][b % 7]
            key = f"batch-{b}" if b % 5 == 1 else None
            t = round(time.time(), 3)
            if kind in ("sparse", "fix", "unknown"):
                size = int(rng.integers(1, 60))
                entries = []
                labelled = [kk for kk in m.lab]
                for _ in range(size):
                    if kind == "fix" and labelled:
                        pid, c = labelled[int(rng.integers(len(labelled)))]
                    elif kind == "unknown" and rng.random() < 0.4:
                        pid, c = f"ghost{int(rng.integers(0, 30))}", int(rng.integers(C))
                    else:
                        pid, c = ids[int(rng.integers(len(ids)))], int(rng.integers(C))
                    entries.append((pid, c, values[int(rng.integers(len(values)))],
                                    weights[int(rng.integers(len(weights)))]))
                if entries and rng.random() < 0.5:
                    entries.append(entries[0][:2] + (1.0 - entries[0][2], 1.5))  # the later one wins
                b_ans = m.label(entries, key=key, t=t, by_name=None if b % 3 else bool(b % 2))
            else:
                sel = list(rng.choice(len(ids), int(rng.integers(1, 30)), replace=False))
                dids = [ids[i] for i in sel]
                Z = rng.choice(np.array([0, 1, 0.5, 0.125]), (len(dids), C))
                M = None if kind == "dense-nomask" else rng.choice(np.array([0, 0, 1, 0.5, 2]), (len(dids), C))
                b_ans = m.dense(dids, Z, M, key=key, t=t)
            for kk in counts:
                counts[kk] += b_ans[kk]
            if key:
                keyed.append((b, key))
            m.check(f" after label batch {b} ({kind})")
            # A keyed batch sent again (here or some batches later): nothing applied.
            for kb, kkey in list(keyed):
                if b - kb in (0, 3):
                    before = api.get("id")["total"]
                    ans = m.label([(ids[0], 0, 1, 3.0)], key=kkey, t=t)
                    assert ans["duplicate"] is True, ans
                    assert api.get("id")["total"] == before
        # The series: one point per prediction bucket (step 1m), its figures those of the
        # predictions of that bucket; with a class, that class's sums.
        d = Diff()
        for q, cls in (("step=1m&from=%d&to=%d", None), ("step=1m&from=%d&to=%d&class=dog", 1)):
            frm, to = int(now) - 4 * 3600, int(now) + 600
            st, h, ser = api.call("GET", "/v1/monitors/id/series?" + q % (frm, to))
            assert st == 200, (st, ser)
            buckets = sorted(set(m.bucket))
            d.eq(f"series {q} point times", [p.get("t") for p in ser.get("points") or []], buckets)
            for pt in ser.get("points") or []:
                idx = [i for i in range(len(m.ids)) if m.bucket[i] == pt["t"]]
                want = m.numpy(idx, sum(1 for b_, _ in m.reqs if b_ == pt["t"]))
                src = want if cls is None else want["per_class"][cls]
                for k in ("loss", "weighted_sum", "denominator", "sum_weights"):
                    d.num(f"series[{pt['t']}] class {cls} {k}", pt.get(k), src[k])
                d.num(f"series[{pt['t']}] class {cls} nnz", pt.get("num_nonzero_weights"), src["num_nonzero_weights"],
                      exact=True)
                for k in ("elements", "observations"):
                    d.num(f"series[{pt['t']}] {k}", pt.get(k), want[k], exact=True)
        d.done(" in the series")
        # More unknown ids than an answer lists.
        ans = m.label([(f"nobody-{i}", i % C, 1, None) for i in range(150)])
        assert ans["unknown"] == 150 and len(ans["unknown_ids"]) == 100, ans
        m.check(" at the end")
        api.close()
        print(f"    200 predictions, 26 batches: {counts['applied']} applied, {counts['replaced']} replaced, "
              f"{counts['unknown']} unknown; {len(m.lab)} positions known")
        stop_clean(srv)


# ---- 2. The other losses -----------------------------------------------------------------------

def random_elem_labels(rng, m, regression=False, values=(0, 1, 1, 0.3)):
    """Sparse entries for positions of stored ids (some repeated later), and dense batches."""
    ids = m.ids
    out = []
    for _ in range(int(rng.integers(5, 30))):
        pid, c = ids[int(rng.integers(len(ids)))], int(rng.integers(m.C))
        v = float(f32(rng.normal(0, 3))) if regression else values[int(rng.integers(len(values)))]
        w = [None, None, 0.5, 0, 2][int(rng.integers(5))]
        out.append((pid, c, v, w))
    return out


@test
def late_losses(args):
    """Each supported family against numpy (where written here) and /v1/loss over the stored
    tensors: torch BCE with a pos_weight vector (mean over every element: 0 with no label,
    "NaN" for an empty window), torchvision's focal loss, log_loss on probabilities, squared
    error with labels outside [0, 1]; the per-sample softmax losses (sparse, one-hot, torch
    cross_entropy with ignore_index, Keras CategoricalCrossentropy); what is refused for the
    losses that cannot take predictions."""
    rng = np.random.default_rng(31)
    C = 4
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        pw = [0.5, 1.0, 2.0, 3.5]
        mons = [
            Late(api, "bce", {"loss": BCE, "dtype": "float64", "num_classes": C, "params": {"pos_weight": pw}},
                 pointwise=bce_pos_weight),
            Late(api, "focal", {"loss": "torchvision.ops.sigmoid_focal_loss", "reduction": "mean", "dtype": "float64",
                                "classes": ["a", "b", "c", "d"], "params": {"alpha": 0.3, "gamma": 1.5}},
                 pointwise=focal),
            Late(api, "logloss", {"loss": "log_loss", "dtype": "float64", "num_classes": C},
                 pointwise=log_loss, input_name="predictions"),
            Late(api, "mse", {"loss": "mean_squared_error", "dtype": "float64", "num_classes": C,
                              "windows": ["5m", "1h"]}, pointwise=mse, input_name="predictions"),
            # The default dtype, float32: /v1/loss at float32 is the reference.
            Late(api, "sce32", {"loss": SCE, "num_classes": C}, pointwise=sce),
            Late(api, "tce32", {"loss": TCE, "num_classes": C, "prediction_ttl": "7d"}, kind="torchce"),
            # The softmax losses take classes with prediction_ttl given (README, "Late labels").
            Late(api, "ssce", {"loss": "sparse_softmax_cross_entropy", "dtype": "float64",
                               "classes": ["a", "b", "c", "d"], "prediction_ttl": "7d"}, kind="sparse"),
            Late(api, "softce", {"loss": "softmax_cross_entropy", "dtype": "float64", "num_classes": C,
                                 "prediction_ttl": "1d"}, kind="onehot"),
            Late(api, "tce", {"loss": TCE, "dtype": "float64", "num_classes": C, "prediction_ttl": "7d"},
                 kind="torchce"),
            Late(api, "kcce", {"loss": "keras3.losses.CategoricalCrossentropy", "dtype": "float64",
                               "num_classes": C, "prediction_ttl": "7d"}, kind="onehot", input_name="predictions"),
        ]
        now = time.time()
        for m in mons:
            for j, off in enumerate((-7000, -1200, -20)):
                n = 12
                ids = [f"{m.name}-{j}-{i}" for i in range(n)]
                if m.input_name == "predictions":
                    if m.kind == "onehot":
                        P = rng.uniform(0.05, 1, (n, C))
                        X = f32(P / P.sum(axis=1, keepdims=True))
                    elif m.name == "mse":
                        X = f32(rng.normal(0, 2, (n, C)))
                    else:
                        X = f32(rng.uniform(0.02, 0.98, (n, C)))
                else:
                    X = f32(rng.normal(0, 2, (n, C)))
                m.predict(ids, X, round(now + off, 3), None, ["json", "b64", "b64f64"][j])
            got = m.check(" (no label)")
            t = got["total"]
            if m.kind == "torchce":
                assert t["loss"] == "NaN", ("torch mean over no target: NaN as /v1/loss", t)
            else:
                # TF/Keras 0/0 -> 0; torch BCE and focal mean divide by every element: 0 / N.
                assert t["loss"] == 0, (m.name, t)
        # torch BCE: every prediction older than the 5m window: its mean over no element is NaN.
        empty = Late(api, "bce-empty", {"loss": BCE, "dtype": "float64", "num_classes": C}, pointwise=bce_pos_weight)
        empty.predict(["x0", "x1"], f32(rng.normal(0, 1, (2, C))), round(now - 3000, 3))
        empty.label([("x0", 1, 1, None)])
        got = empty.check()
        assert got["windows"]["5m"]["loss"] == "NaN" and got["windows"]["5m"]["samples"] == 0, got["windows"]["5m"]
        for b in range(6):
            for m in mons:
                if m.kind == "elem":
                    if b % 3 == 2:
                        sel = list(rng.choice(len(m.ids), 8, replace=False))
                        Z = f32(rng.normal(0, 3, (8, C))) if m.name == "mse" else \
                            rng.choice(np.array([0, 1, 0.5]), (8, C))
                        M = rng.choice(np.array([0, 1, 1, 0.25]), (8, C))
                        m.dense([m.ids[i] for i in sel], Z, M)
                    else:
                        m.label(random_elem_labels(rng, m, regression=m.name == "mse"))
                else:
                    entries = []
                    for _ in range(int(rng.integers(3, 12))):
                        pid = m.ids[int(rng.integers(len(m.ids)))]
                        # The same class again when already labelled (a correction of the weight);
                        # a change of class is tried once below, apart.
                        c = m.lab[pid][0] if pid in m.lab else int(rng.integers(C))
                        w = None if m.kind == "torchce" else [None, 0.5, 2, 0][int(rng.integers(4))]
                        if m.kind == "torchce" and rng.random() < 0.3:
                            w = 1
                        if any(e[0] == pid for e in entries):
                            continue
                        entries.append((pid, c, None, w))
                    m.label(entries)
                m.check(f" after batch {b}")
        # Regression labels outside [0, 1] were taken above (mse); a class changed for a sample:
        # the latest class is the one-hot label (counted once: applied or replaced).
        for m in mons:
            if m.kind == "elem":
                continue
            pid = next(p for p in m.ids if p in m.lab)
            newc = (m.lab[pid][0] + 1) % C
            st, h, b = api.call("POST", f"/v1/monitors/{m.name}/labels", {"labels": [{"id": pid, "class": newc}]})
            assert st == 200 and b["applied"] + b["replaced"] == 1 and b["unknown"] == 0, (m.name, st, b)
            m.lab[pid] = (newc, 1.0)
            m.class_changed = True
            m.version += 1
            m.check(" after a change of class")
            print(f"    {m.name}: a change of class of a labelled id answered applied {b['applied']}, "
                  f"replaced {b['replaced']}")
        # Keras BinaryCrossentropy (one value per sample over the classes): no predictions.
        st, h, b = api.put("kbce", {"loss": "keras3.losses.BinaryCrossentropy"})
        assert st == 201, b
        expect_error(api.call("POST", "/v1/monitors/kbce/predictions", {"ids": ["a"], "predictions": [[0.5, 0.5]]}),
                     422, "invalid_observation", "name")
        expect_error(api.put("kbce2", {"loss": "keras3.losses.BinaryCrossentropy", "prediction_ttl": "1h"}),
                     422, "invalid_monitor", "prediction_ttl")
        expect_error(api.put("cwl", {"loss": "tf.compat.v1.losses.compute_weighted_loss", "prediction_ttl": "7d"}),
                     422, "invalid_monitor", "prediction_ttl")
        # prediction_ttl: at least 60 s, shown as given.
        for ttl, ok in (("90s", True), ("1m", True), ("2h", True), ("59s", False), ("0m", False), ("abc", False),
                        (60, False), ("", False)):
            cfg = {"loss": SCE, "num_classes": 2, "prediction_ttl": ttl}
            if ok:
                st, h, b = api.put(f"ttl-{ttl}", cfg)
                assert st == 201 and b["config"]["prediction_ttl"] == ttl, (ttl, st, b)
                st, h, b = api.put(f"ttl-{ttl}", cfg)
                assert st == 200, (ttl, st, b)
            else:
                expect_error(api.put("ttl-bad", cfg), 422, "invalid_monitor", "prediction_ttl")
        expect_error(api.put("ttl-90s", {"loss": SCE, "num_classes": 2, "prediction_ttl": "2m"}), 409,
                     "monitor_conflict")
        api.close()
        stop_clean(srv)


# ---- 3. Refusals -------------------------------------------------------------------------------

@test
def late_refusals(args):
    """Every malformed predictions or labels request is a 422 naming its field, and nothing of
    it is kept: the figures are unchanged, and its valid entries sent alone are new."""
    rng = np.random.default_rng(7)
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        m = Late(api, "r", {"loss": SCE, "dtype": "float64", "classes": ["a", "b", "c"], "slices": ["v"]},
                 pointwise=sce)
        sx = Late(api, "sx", {"loss": "sparse_softmax_cross_entropy", "dtype": "float64", "num_classes": 3,
                              "prediction_ttl": "7d"}, kind="sparse")
        tc = Late(api, "tc", {"loss": TCE, "dtype": "float64", "num_classes": 3, "prediction_ttl": "7d"},
                  kind="torchce")
        now = time.time()
        ids = [f"p{i}" for i in range(6)]
        for mm in (m, sx, tc):
            mm.predict(ids, f32(rng.normal(0, 2, (6, 3))), round(now - 100, 3), {"v": "1"} if mm is m else None)
        m.label([("p0", 0, 1, None), ("p1", 2, 0, 0.5)])
        snap = {mm.name: comparable(api.get(mm.name)) for mm in (m, sx, tc)}

        wrong = []  # every refusal that differs, reported together

        def refused(mm, route, body, field, code="invalid_observation", field_prefix=False):
            st, h, b = api.call("POST", f"/v1/monitors/{mm.name}/{route}", body)
            b = b if isinstance(b, dict) else {}
            f = b.get("field")
            ok_field = f in field if isinstance(field, tuple) else \
                str(f).startswith(field) if field_prefix else f == field
            codes = code if isinstance(code, tuple) else (code,)
            if st != 422 or b.get("code") not in codes or not ok_field:
                wrong.append(f"POST {mm.name}/{route} {json.dumps(body)[:160]}: got {st} {b.get('code')} field "
                             f"{f!r}, expected 422 {code} field {field!r}{' (prefix)' if field_prefix else ''}")
            diff = json_diff(snap[mm.name], comparable(api.get(mm.name)))
            assert not diff, (body, diff[:5])

        X1, X2 = [[0.5, 1, -1]], [[0.5, 1, -1], [1, 2, 3]]
        # Predictions.
        refused(m, "predictions", {"ids": ["n1", "n2"], "logits": [[0.5, 1, -1]] * 3}, "ids")
        refused(m, "predictions", {"ids": ["n1"], "logits": [[0.5, 1, -1, 2]]}, "logits")
        refused(m, "predictions", {"ids": "n1", "logits": X1}, "ids", field_prefix=True)
        for bad in ([1, "n2"], ["n1", None], ["", "n2"], ["n1", "x" * 129], ["n1", ["n2"]]):
            refused(m, "predictions", {"ids": bad, "logits": X2}, "ids", field_prefix=True)
        # Non-finite: 422 (the contract names no code; the element may be named, logits[0][1]).
        for bad in ("NaN", "Infinity", "-Infinity"):
            refused(m, "predictions", {"ids": ["n1"], "logits": [[0.5, bad, 1]]}, "logits",
                    code=("invalid_observation", "non_finite_input"), field_prefix=True)
        refused(m, "predictions", {"ids": ["n1"], "logits": X1, "time": now - 8 * 86400}, "time")
        refused(m, "predictions", {"ids": ["n1"], "logits": X1, "time": now + 900}, "time")
        refused(m, "predictions", {"ids": ["n1"], "logits": X1, "slice": {"w": "1"}}, "slice.w")
        st, h, b = api.call("POST", "/v1/monitors/nope/predictions", {"ids": ["n1"], "logits": X1})
        assert st == 404 and b.get("code") == "monitor_not_found", b
        # None of these stored n1: its labels are unknown.
        # Labels, sparse: each bad entry after good ones.
        good = [{"id": "p2", "class": "a", "value": 1}, {"id": "p3", "class": 1, "value": 0, "weight": 2}]
        for bad, field in (({"id": "p4", "class": 0, "value": 1.5}, "value"),
                           ({"id": "p4", "class": 0, "value": -0.25}, "value"),
                           ({"id": "p4", "class": 0, "value": "1"}, "value"),
                           ({"id": "p4", "class": 0, "value": 1, "weight": -1}, "weight"),
                           ({"id": "p4", "class": 0, "value": 1, "weight": "NaN"}, "weight"),
                           ({"id": "p4", "class": "zebra", "value": 1}, "class"),
                           ({"id": "p4", "class": 3, "value": 1}, "class"),
                           ({"id": "p4", "class": -1, "value": 1}, "class"),
                           ({"id": "p4", "class": 1.5, "value": 1}, "class"),
                           ({"id": 4, "class": 0, "value": 1}, "id"),
                           ({"id": "", "class": 0, "value": 1}, "id")):
            refused(m, "labels", {"labels": good + [bad]}, f"labels[2].{field}")
        # Labels, dense.
        refused(m, "labels", {"ids": ["p2", "p3"], "labels": [[1, 0, 1]] * 3}, ("ids", "labels"))
        refused(m, "labels", {"ids": ["p2", "p3"], "labels": [[1, 0, 1, 0]] * 2}, "labels")
        refused(m, "labels", {"ids": ["p2", 3], "labels": [[1, 0, 1]] * 2}, "ids[1]")
        refused(m, "labels", {"ids": ["p2", "p3"], "labels": [[1, 0, 1], [1, 2, 0]]}, "labels", field_prefix=True)
        refused(m, "labels", {"ids": ["p2", "p3"], "labels": [[1, 0, 1]] * 2, "mask": [[1, 0]] * 2}, "mask",
                field_prefix=True)
        refused(m, "labels", {"ids": ["p2", "p3"], "labels": [[1, 0, 1]] * 2, "mask": [[1, 0, -1]] * 2}, "mask",
                field_prefix=True)
        refused(m, "labels", {"ids": ["p2", "p3"], "labels": [[1, 0, 1]] * 2, "mask": [[1, 0, "NaN"]] * 2}, "mask",
                field_prefix=True)
        # The per-sample losses: no value, no dense form; torch cross_entropy: weight 1 only.
        refused(sx, "labels", {"labels": [{"id": "p1", "class": 1}, {"id": "p2", "class": 1, "value": 1}]},
                "labels[1].value")
        refused(sx, "labels", {"labels": [{"id": "p1", "class": 3}]}, "labels[0].class")
        refused(sx, "labels", {"ids": ["p1"], "labels": [[0, 1, 0]]}, ("ids", "labels"))
        refused(tc, "labels", {"labels": [{"id": "p1", "class": 1}, {"id": "p2", "class": 1, "weight": 2}]},
                "labels[1].weight")
        refused(tc, "labels", {"labels": [{"id": "p1", "class": 1, "weight": 0}]}, "labels[0].weight")
        # The valid entries alone: new positions (nothing of the refused requests was applied),
        # n1 unknown (none of the refused predictions stored it).
        m.label([("p2", 0, 1, None), ("p3", 1, 0, 2), ("p4", 0, 1, None), ("n1", 0, 1, None)])
        sx.label([("p1", 1, None, None), ("p2", 1, None, 1)])
        tc.label([("p1", 1, None, None), ("p2", 1, None, 1)])
        for mm in (m, sx, tc):
            mm.check()
        # Duplicate prediction ids: refused per row, the others stored, the first logits kept.
        m.predict(["p0", "q1", "q1", "q2", "p5"], f32(rng.normal(0, 2, (5, 3))), round(now - 50, 3), {"v": "2"})
        m.predict(["q1", "q2"], f32(rng.normal(0, 2, (2, 3))), round(now - 40, 3))  # all refused: stored 0
        m.label([("q1", 0, 1, None), ("q1", 2, 0, None), ("p0", 1, 1, None), ("q2", 0, 0.5, None)])
        m.check(" after duplicate prediction ids")
        api.close()
        stop_clean(srv)
        assert not wrong, f"{len(wrong)} refusals differ from the contract:\n" + "\n".join(wrong)


# ---- 4/5. Idempotency and durability across kill -9 ----------------------------------------------

@test
def late_kill9(args):
    """Labels acknowledged before a kill -9 are all there after the restart (the same GET), a
    retry key still makes a duplicate, a stored id is still refused, and a correction of a
    pre-restart label replaces it exactly."""
    rng = np.random.default_rng(5)
    cfg = {"loss": SCE, "dtype": "float64", "classes": ["a", "b", "c", "d", "e"], "slices": ["v"],
           "windows": ["1h", "24h"]}
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            m = Late(api, "k", cfg, pointwise=sce)
            tc = Late(api, "kt", {"loss": TCE, "dtype": "float64", "num_classes": 5, "prediction_ttl": "7d"},
                      kind="torchce")
            now = time.time()
            for j in range(3):
                ids = [f"k{j}-{i}" for i in range(20)]
                for mm in (m, tc):
                    mm.predict(ids, f32(rng.normal(0, 2, (20, 5))), round(now - 1800 + 300 * j, 3), {"v": str(j)}
                               if mm is m else None)
            for b in range(4):
                m.label(random_elem_labels(rng, m), key=f"kb{b}", t=round(time.time(), 3))
                Z = rng.choice(np.array([0, 1, 0.5]), (5, 5))
                M = rng.choice(np.array([0, 1, 2]), (5, 5))
                m.dense(list(rng.choice(m.ids, 5, replace=False)), Z, M, key=f"kd{b}")
                fresh = [p for p in tc.ids if p not in tc.lab][:6]
                tc.label([(p, int(rng.integers(5)), None, None) for p in fresh])
            before = {mm.name: mm.check() for mm in (m, tc)}
            srv.proc.kill()
            srv.proc.wait()
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            m.api = tc.api = api
            for mm in (m, tc):
                diff = json_diff(comparable(before[mm.name]), comparable(api.get(mm.name)))
                assert not diff, f"{mm.name}: {len(diff)} figures changed across kill -9:\n" + "\n".join(diff[:20])
                mm.check(" after kill -9")
            ans = m.label([("k0-0", 0, 1, None)], key="kb2")
            assert ans["duplicate"] is True, ans
            m.predict(["k0-1", "new-1"], f32(rng.normal(0, 2, (2, 5))), round(time.time(), 3))
            # Corrections of labels given before the restart: replaced, the identity holds.
            old = list(m.lab)[:5]
            ans = m.label([(p, c, 1 - m.lab[(p, c)][0], 0.75) for p, c in old] + [("new-1", 4, 1, None)])
            assert ans["replaced"] == 5 and ans["applied"] == 1, ans
            pid = next(iter(tc.lab))
            tc.label([(pid, tc.lab[pid][0], None, 1)])
            for mm in (m, tc):
                mm.check(" after corrections following kill -9")
            # Killed right after the last 200: the correction is there too.
            after = {mm.name: api.get(mm.name) for mm in (m, tc)}
            srv.proc.kill()
            srv.proc.wait()
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            m.api = tc.api = api
            for mm in (m, tc):
                diff = json_diff(comparable(after[mm.name]), comparable(api.get(mm.name)))
                assert not diff, f"{mm.name}: second kill -9:\n" + "\n".join(diff[:20])
            api.close()
            stop_clean(srv)


def mapped(pid, path):
    """Whether the process maps the file at path (SQLite's --state-mmap)."""
    real = os.path.realpath(path)
    with open(f"/proc/{pid}/maps") as f:
        return any(line.rstrip("\n").endswith(" " + real) for line in f)


@test
@sqlite_only
def late_state_mmap(args):
    """The stored outputs are read through a map of the state file by default, through
    SQLite's cache with --state-mmap 0: the same labels give the same figures either way
    (both the identity), and /proc shows the map only where it is asked for. (SQLite maps the
    file, not its write-ahead log: the second server reads outputs the first one's clean stop
    checkpointed into the file.)"""
    cfg = {"loss": SCE, "dtype": "float32", "num_classes": 7, "slices": ["v"]}
    got = {}
    with state_dir() as tmp:
        for name, extra in (("map", ()), ("nomap", ("--state-mmap", "0", "--state-cache", "1M"))):
            rng = np.random.default_rng(11)
            path = os.path.join(tmp, f"{name}.db")
            with Server(args.server, "--state", path, *extra) as srv:
                api = Api(srv)
                m = Late(api, "mm", cfg, pointwise=sce)
                now = time.time()
                for j in range(4):
                    m.predict([f"m{j}-{i}" for i in range(300)], f32(rng.normal(0, 2, (300, 7))),
                              round(now - 600 + 60 * j, 3), {"v": str(j % 2)})
                m.label(random_elem_labels(rng, m))
                api.close()
                stop_clean(srv)
            with Server(args.server, "--state", path, *extra) as srv:
                m.api = api = Api(srv)
                for _ in range(3):
                    m.label(random_elem_labels(rng, m))
                got[name] = m.check(f" ({name})")
                assert mapped(srv.proc.pid, path) == (name == "map"), \
                    f"{name}: the state file {'is not' if name == 'map' else 'is'} mapped"
                api.close()
                stop_clean(srv)
    for g in got.values():  # (the delays are of this run's clock; both were checked above)
        g["labels"].pop("delay")
    diff = json_diff(comparable(got["map"]), comparable(got["nomap"]))
    assert not diff, "the map changed figures:\n" + "\n".join(diff[:20])


# ---- 6. Expiry ----------------------------------------------------------------------------------

def rows_of(path, table):
    import server as server_mod
    if server_mod.PG is not None:  # (run.py --pg: the state of `path` is a schema)
        if table == "label_runs":
            return []
        schema = server_mod.pg_schema(path)
        cols = "pred, generation, id, t, combo" if table == "predictions" else "*"
        out = server_mod.PG.psql(f"SELECT {cols} FROM {schema}.{table}")
        rows = [line.split("|") for line in out.split("\n") if line]
        return [(int(r[0]), *r[1:]) for r in rows]
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        con.close()


def label_records(path):
    """The labels a state file holds: label_runs rows of records (struct run_rec of
    server/store_sqlite.c: pred int64, slot int32, class int32, value, weight, first, t
    doubles; native = little-endian here), as (pred, slot, class, value, weight, first, t)."""
    import struct
    import server as server_mod
    if server_mod.PG is not None:  # (the labels table: the same fields)
        out = server_mod.PG.psql("SELECT pred, slot, cls, value, weight, first, t FROM "
                                 f"{server_mod.pg_schema(path)}.labels")
        return [(int(a), int(b), int(c), float(d), float(e), float(f), float(g))
                for a, b, c, d, e, f, g in (line.split("|") for line in out.split("\n") if line)]
    out = []
    for run, data in rows_of(path, "label_runs"):
        assert len(data) % 48 == 0, (run, len(data))
        out += [struct.unpack_from("<qiidddd", data, i) for i in range(0, len(data), 48)]
    return out


def mentions(row, ids):
    for v in row:
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        if isinstance(v, str) and v in ids:
            return True
    return False


@test
def late_expiry(args):
    """A prediction takes labels until its time + prediction_ttl; then its labels are unknown,
    the upkeep (at start) deletes it and its labels from the state file, and the figures keep
    what was counted."""
    rng = np.random.default_rng(6)
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            m = Late(api, "exp", {"loss": SCE, "dtype": "float64", "num_classes": 3, "prediction_ttl": "1m"},
                     pointwise=sce)
            keep = Late(api, "keep", {"loss": SCE, "dtype": "float64", "num_classes": 3}, pointwise=sce)
            t0 = time.time()
            tp = round(t0 - 55, 3)
            expect_error(api.call("POST", "/v1/monitors/exp/predictions",
                                  {"ids": ["old"], "logits": [[1, 2, 3]], "time": round(t0 - 62, 3)}),
                         422, "invalid_observation", "time")
            eids = [f"e{i}" for i in range(10)]
            m.predict(eids, f32(rng.normal(0, 2, (10, 3))), tp)
            keep.predict([f"k{i}" for i in range(5)], f32(rng.normal(0, 2, (5, 3))), tp)
            m.label([(f"e{i}", i % 3, 1, None) for i in range(5)])
            keep.label([("k0", 0, 1, None), ("k1", 2, 0, 0.5)])
            before = m.check(" before expiry")
            # Past tp + 60 s: every label for them is unknown, at once.
            time.sleep(max(0.0, tp + 60 + 1.5 - time.time()))
            st, h, b = api.call("POST", "/v1/monitors/exp/labels",
                                {"labels": [{"id": "e0", "class": 0, "value": 0}, {"id": "e7", "class": 1, "value": 1}]})
            assert st == 200 and (b["applied"], b["replaced"], b["unknown"]) == (0, 0, 2) and \
                set(b["unknown_ids"]) == {"e0", "e7"}, b
            st, h, b = api.call("POST", "/v1/monitors/exp/labels",
                                {"ids": ["e1"], "labels": [[1, 1, 1]]})
            assert st == 200 and b["applied"] == 0 and b["replaced"] == 0 and b["unknown"] >= 1, b
            diff = json_diff(comparable(before)["total"], comparable(api.get("exp"))["total"])
            assert not diff, diff
            stop_clean(srv)
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            m.api = keep.api = api
            # The upkeep at start: the expired predictions are no longer stored.
            got = wait_until(lambda: (api.get("exp").get("labels") or {}).get("predictions") == 0, timeout=10)
            assert got, api.get("exp").get("labels")
            after = api.get("exp")
            for part in ("total", "windows", "slices"):
                diff = json_diff(comparable(before)[part], comparable(after)[part])
                assert not diff, (part, diff[:10])
            lb = after["labels"]
            assert lb["labelled_positions"] == 0, lb
            keep.check(" after the restart")
            preds = rows_of(path, "predictions")
            assert not [r for r in preds if mentions(r, eids)], f"expired predictions left: {preds[:5]}"
            assert len(preds) == 5, f"{len(preds)} rows in predictions, expected keep's 5"
            labels = label_records(path)
            live = {r[0] for r in preds}
            assert not [r for r in labels if r[0] not in live], f"labels of expired predictions left: {labels[:5]}"
            assert len(labels) == 2, f"{len(labels)} labels stored, expected keep's 2: {labels[:5]}"
            api.close()
            stop_clean(srv)


# ---- 7. Coverage and delays ---------------------------------------------------------------------

@test
def late_coverage(args):
    """labels.predictions, labelled_positions, per class labelled and fraction, and the delay
    of each position's first label (label time - prediction time): count and mean exact,
    quantiles within 10 %, grouped by the prediction's bucket; a later correction does not
    change a delay."""
    rng = np.random.default_rng(8)
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        m = Late(api, "cov", {"loss": SCE, "dtype": "float64", "classes": ["a", "b", "c", "d"],
                              "windows": ["5m", "1h"]}, pointwise=sce)
        now = int(time.time())
        t0, t1 = now - 5000, now - 1500
        A = [f"a{i}" for i in range(40)]
        B = [f"b{i}" for i in range(50)]
        m.predict(A, f32(rng.normal(0, 2, (40, 4))), t0)
        m.predict(B, f32(rng.normal(0, 2, (50, 4))), t1)
        m.label([(A[i], 2, 1, None) for i in range(30)], t=t0 + 30)
        pos = [(p, c) for p in B for c in (0, 1)]  # 100 positions: 60 at 30 s, 35 at 100 s, 5 at 1000 s
        rng.shuffle(pos)
        m.label([(p, c, 1, None) for p, c in pos[:60]], t=t1 + 30)
        m.label([(p, c, 0, 0 if i % 7 == 0 else None) for i, (p, c) in enumerate(pos[60:95])], t=t1 + 100)
        rows = {}
        for p, c in pos[95:]:
            rows.setdefault(p, np.zeros(4))[c] = 1.0
        m.dense(list(rows), np.ones((len(rows), 4)), np.array(list(rows.values())), t=t1 + 1000)
        # Corrections later: the delays stay those of the first labels.
        m.label([(p, c, 0.5, 2) for p, c in pos[:10]] + [(A[0], 2, 0, None)], t=t1 + 1200)
        got = m.check()
        lb = got["labels"]
        assert lb["predictions"] == 90 and lb["labelled_positions"] == 130, lb
        dl = lb["delay"]
        want = {"total": ([30] * 90 + [100] * 35 + [1000] * 5), "1h": ([30] * 60 + [100] * 35 + [1000] * 5)}
        d = Diff()
        for what, g in (("total", dl["total"]), ("1h", dl["windows"]["1h"])):
            vals = np.array(want[what], dtype=np.float64)
            d.num(f"delay {what} count", g.get("count"), len(vals), exact=True)
            d.num(f"delay {what} mean", g.get("mean"), float(vals.mean()))
            for qn, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                d.num(f"delay {what} {qn}", g.get(qn), float(np.quantile(vals, q)), rtol=0.10)
        d.num("delay 5m count", dl["windows"]["5m"].get("count"), 0, exact=True)
        d.done(" in the delays")
        print(f"    delays: total {dl['total']}; 1h {dl['windows']['1h']}")
        api.close()
        stop_clean(srv)


@test
def late_delay_quantiles(args):
    """One label per monitor, its delay from 0 to 6.5 days: count 1, the mean exactly the
    delay, and p50 = p90 = p99 within 10 % of it (0 for a label dated at its prediction)."""
    delays = (0, 0.25, 0.9, 1, 1.5, 7, 30, 3600, 6.5 * 86400)
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        tp = int(time.time()) - int(6.9 * 86400)
        d = Diff()
        for i, dl in enumerate(delays):
            m = Late(api, f"q{i}", {"loss": SCE, "dtype": "float64", "num_classes": 1}, pointwise=sce)
            m.predict(["a"], [[1.0]], tp)
            m.label([("a", 0, 1, None)], t=tp + dl)
            q = api.get(m.name)["labels"]["delay"]["total"]
            d.num(f"delay {dl} s: count", q.get("count"), 1, exact=True)
            d.num(f"delay {dl} s: mean", q.get("mean"), (tp + dl) - tp)
            for k in ("p50", "p90", "p99"):
                d.num(f"delay {dl} s: {k}", q.get(k), float(dl), rtol=0.10, atol=0.0)
        d.done(" in the delay quantiles")
        api.close()
        stop_clean(srv)


@test
def late_concurrent(args):
    """4 clients label the same predictions at once, each its own classes (so that the final
    state is known whatever the order): every row is evaluated again by several requests in
    flight, and the figures are still the one /v1/loss over the final labels."""
    rng = np.random.default_rng(21)
    C, T = 8, 4
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        m = Late(api, "con", {"loss": SCE, "dtype": "float64", "num_classes": C, "slices": ["s"]}, pointwise=sce)
        now = time.time()
        for j in range(3):
            m.predict([f"c{j}-{i}" for i in range(20)], f32(rng.normal(0, 2, (20, C))), round(now - 600 * j, 3),
                      {"s": str(j)})
        plans = []
        for k in range(T):
            batches = []
            for _ in range(25):
                batches.append([(m.ids[int(rng.integers(len(m.ids)))], int(rng.choice([k, k + T])),
                                 float(rng.choice([0, 1, 0.5])), [None, 0.5, 2, 0][int(rng.integers(4))])
                                for _ in range(int(rng.integers(1, 12)))])
            plans.append(batches)
        errors, finals = [], [dict() for _ in range(T)]

        def client(k):
            c = Api(srv)
            for entries in plans[k]:
                want_applied = want_replaced = 0
                for pid, cl, v, w in entries:
                    if (pid, cl) in finals[k]:
                        want_replaced += 1
                    else:
                        want_applied += 1
                    finals[k][(pid, cl)] = (v, 1.0 if w is None else w)
                body = {"labels": [dict({"id": p, "class": cl, "value": v}, **({} if w is None else {"weight": w}))
                                   for p, cl, v, w in entries]}
                st, h, b = c.call("POST", "/v1/monitors/con/labels", body)
                if st != 200 or (b.get("applied"), b.get("replaced")) != (want_applied, want_replaced):
                    errors.append((k, st, b, want_applied, want_replaced))
            c.close()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(T)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors[:5]
        for f in finals:
            m.lab.update(f)
            m.first.update({k: None for k in f})
        m.version += 1
        m.check(" after concurrent labels")
        api.close()
        stop_clean(srv)


@test
def late_kill9_in_flight(args):
    """A client labelling in a loop, the server killed (-9) at some point: after the restart the
    figures are those of the acknowledged batches, or of those and the one in flight (whole:
    a batch is one commit), never of a part of it."""
    rng = np.random.default_rng(22)
    C = 5
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            m = Late(api, "f", {"loss": SCE, "dtype": "float64", "num_classes": C}, pointwise=sce)
            m.predict([f"f{i}" for i in range(80)], f32(rng.normal(0, 2, (80, C))), round(time.time() - 120, 3))
            batches = [[(f"f{int(rng.integers(80))}", int(rng.integers(C)), float(rng.choice([0, 1, 0.25])),
                         [None, 2, 0.5][int(rng.integers(3))]) for _ in range(int(rng.integers(5, 40)))]
                       for _ in range(400)]
            acked = []

            def loop():
                c = Api(srv)
                for b in batches:
                    body = {"labels": [dict({"id": p, "class": cl, "value": v}, **({} if w is None else {"weight": w}))
                                       for p, cl, v, w in b]}
                    try:
                        st, h, ans = exchange_once(c, body)
                    except Exception:
                        return
                    if st != 200:
                        return
                    acked.append(b)
            th = threading.Thread(target=loop)
            th.start()
            wait_until(lambda: len(acked) >= 30 or not th.is_alive(), timeout=60, every=0.001)
            srv.proc.kill()
            srv.proc.wait()
            th.join()
        n = len(acked)
        assert 0 < n < len(batches), f"{n} batches acknowledged before the kill"
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            m.api = api
            states = []
            for k in (n, n + 1):
                mm = copy.copy(m)
                mm.lab, mm.first, mm.cache = dict(m.lab), dict(m.first), {}
                for b in batches[:k]:
                    for p, cl, v, w in b:
                        mm.lab[(p, cl)] = (v, 1.0 if w is None else w)
                        mm.first.setdefault((p, cl), None)
                mm.version += 1
                states.append(mm)
            fails = []
            for mm in states:
                try:
                    mm.check(f" with {len(mm.lab)} positions")
                    break
                except AssertionError as e:
                    fails.append(str(e)[:800])
            else:
                raise AssertionError(f"{n} batches acknowledged; the figures are neither those of {n} nor of "
                                     f"{n + 1} batches:\n" + "\n".join(fails))
            api.close()
            stop_clean(srv)
        print(f"    {n} batches acknowledged before kill -9; the state holds "
              f"{n if not fails else f'{n + 1} (the one in flight committed)'}")


def exchange_once(api, body):
    """One labels request without Api.call's retry (a retry after the kill would hang or lie)."""
    return exchange(api.conn, "POST", "/v1/monitors/f/labels", body, JSON)
