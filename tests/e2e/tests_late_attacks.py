"""Attacks on the late labels (issue 13), from an adversarial review: one reproducer per defect
found (they fail until it is fixed), and the attacks that held, kept as regressions. Expected
values come from numpy (tests_late's pointwise formulas) and from /v1/loss over the same
tensors, never from the monitor's own code; the model of what a monitor holds is tests_late's
Late."""
import base64
import math
import os
import random
import re
import resource
import sqlite3
import threading
import time

import numpy as np

from common import sqlite_only, expect_error, stop_clean, test, wait_until
from server import Server
from tests_late import SCE, TCE, Late, f32, sce
from tests_monitors import Api, comparable, json_diff, state_dir, sxfsz_ignored_server


def predict(api, name, body):
    return api.call("POST", f"/v1/monitors/{name}/predictions", body)


def label(api, name, body):
    return api.call("POST", f"/v1/monitors/{name}/labels", body)


def v1(api, loss, labels, inputs, weights, input_name="logits", dtype="float64", params=None):
    st, h, b = api.call("POST", "/v1/loss", {"loss": loss, "dtype": dtype, "labels": labels, input_name: inputs,
                                             "weights": weights, "params": params or {},
                                             "outputs": ["loss", "weighted_sum", "sum_weights"]})
    assert st == 200, (st, b)
    return b


def b64(a, dtype="float32"):
    a = np.asarray(a, dtype=np.float64)
    code = {"float32": "<f4", "float64": "<f8"}[dtype]
    return {"shape": list(a.shape), "dtype": dtype, "b64": base64.b64encode(a.astype(code).tobytes()).decode()}


def gauges(api):
    st, h, b = api.call("GET", "/metrics")
    assert st == 200, st
    text = b if isinstance(b, str) else b.decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'maskloss_monitor_(predictions|labelled_positions)\{monitor="([^"]+)"\} (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


# ---- Defects (each fails until fixed) ------------------------------------------------------------

@test
def late_attack_unevaluable_prediction(args):
    """A prediction whose loss cannot be finite whatever its label (log_loss on a probability
    of 5, squared error of 1e200) is stored without a word: only the first row of a request
    is evaluated (late_http.c, one unlabelled row's sums times the rows). Every later labels
    request that names it is then refused whole (422, field "", "a weight too large"), the
    valid labels with it, for the prediction's whole ttl. Expected: the row refused when it
    is stored (its field named), or at least its label entry named so that the rest can be
    sent again."""
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        cases = [("ll", {"loss": "log_loss", "dtype": "float64", "num_classes": 2}, [[0.5, 0.5], [5.0, -3.0]]),
                 ("mse", {"loss": "mean_squared_error", "dtype": "float64", "num_classes": 2}, [[0.5, 0.5], [1e200, 0]])]
        problems = []
        for name, cfg, rows in cases:
            assert api.put(name, cfg)[0] == 201
            st, h, b = predict(api, name, {"ids": ["good", "bad"], "predictions": rows})
            if st == 422:
                if b.get("code") != "invalid_observation" or not str(b.get("field", "")).startswith("predictions[1]"):
                    problems.append(f"{name}: predictions refused, but not naming row 1: {b}")
                continue
            assert st == 200 and b["stored"] == 2, (name, st, b)
            st, h, b = label(api, name, {"labels": [{"id": "good", "class": 0, "value": 1},
                                                    {"id": "bad", "class": 0, "value": 1}]})
            if st == 200:
                continue  # (taken: then the figures must hold it; not what happens now)
            field = str(b.get("field", ""))
            if st != 422 or not field.startswith("labels[1]") or "weight" in b.get("error", ""):
                problems.append(f"{name}: row 1 ({rows[1]}) was stored, and a labels request naming it "
                                f"is refused whole with {st} field {field!r}: {b.get('error')!r}")
        assert not problems, "\n".join(problems)


@test
def late_attack_correction_residue(args):
    """A label of a large weight replaced by one of weight 1: the monitor subtracts the old
    row's sums (writer_late.c), and what is left of weight x loss in the bucket's sums was far
    beyond the contract's relative 1e-9 (1e12: 1.2e-5 relative). Weights are now bounded (at
    most 1e6, refused beyond with the label's field), and a correction from the bound leaves
    no more than the contract allows."""
    X = [[0.3, -1.7], [2.1, 0.4]]
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        assert api.put("w", {"loss": SCE, "dtype": "float64", "num_classes": 2})[0] == 201
        assert predict(api, "w", {"ids": ["a", "b"], "logits": X})[0] == 200
        assert label(api, "w", {"labels": [{"id": "b", "class": 1, "value": 1}]})[0] == 200
        before = api.get("w")["total"]
        st, h, b = label(api, "w", {"labels": [{"id": "a", "class": 0, "value": 1, "weight": 1e12}]})
        assert st == 422 and b.get("field") == "labels[0].weight", (st, b)
        assert api.get("w")["total"] == before, "a refused label changed the figures"
        assert label(api, "w", {"labels": [{"id": "a", "class": 0, "value": 1, "weight": 1e6}]})[0] == 200
        st, h, b = label(api, "w", {"labels": [{"id": "a", "class": 0, "value": 1, "weight": 1}]})
        assert st == 200 and b["replaced"] == 1, b
        got = api.get("w")["total"]
        Z, W = np.array([[1.0, 0], [0, 1]]), np.array([[1.0, 0], [0, 1]])
        want = float((W * sce(Z, np.array(X), {})).sum())
        ref = v1(api, SCE, Z.tolist(), X, W.tolist())
        assert abs(ref["weighted_sum"] - want) <= 1e-12 * want, (ref, want)
        rel = abs(got["weighted_sum"] - want) / want
        assert rel <= 1e-9 and abs(got["loss"] - want / 2) <= 1e-9 * want, \
            f"after a correction of a 1e6 weight: weighted_sum {got['weighted_sum']!r}, expected {want!r} " \
            f"(relative error {rel:.3g}); loss {got['loss']!r}"


@test
def late_attack_expired_id_stored_again(args):
    """Past time + prediction_ttl a prediction is gone for labels (unknown), but until the
    upkeep deletes it (up to a minute) storing its id again is refused "already stored", and
    the new row is lost: the client is told the id is taken while its labels say it does not
    exist. Expected: the expired prediction no longer holds its id (stored 1, and its labels
    then apply)."""
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        assert api.put("x", {"loss": SCE, "dtype": "float64", "num_classes": 2, "prediction_ttl": "1m"})[0] == 201
        t0 = time.time()
        st, h, b = predict(api, "x", {"ids": ["a"], "logits": [[1, 2]], "time": round(t0 - 57.5, 3)})
        assert st == 200 and b["stored"] == 1, b
        time.sleep(max(0.0, t0 + 3.5 - time.time()))
        st, h, b = label(api, "x", {"labels": [{"id": "a", "class": 0, "value": 1}]})
        assert st == 200 and b["unknown"] == 1 and b["unknown_ids"] == ["a"], b
        st, h, b = predict(api, "x", {"ids": ["a"], "logits": [[3, 4]]})
        assert st == 200, b
        assert b["stored"] == 1 and b["refused"] == [], \
            f"an expired id (its labels unknown) stored again: {b}"
        st, h, b = label(api, "x", {"labels": [{"id": "a", "class": 0, "value": 1}]})
        assert st == 200 and b["applied"] == 1, b
        g = api.get("x")
        assert g["labels"]["predictions"] == 1 and g["labels"]["labelled_positions"] == 1, g["labels"]


@test
def late_attack_expiry_to_the_millisecond(args):
    """A prediction takes labels until exactly its time + prediction_ttl, the instant the
    predictions route refuses it at: the writer read whole seconds (time()), so that a label up
    to a second past the ttl was taken. Here the ttl ends at a half second; a label a tenth of a
    second later is unknown, and one for a prediction with time to go (the control) applies."""
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        assert api.put("x", {"loss": SCE, "dtype": "float64", "num_classes": 2, "prediction_ttl": "1m"})[0] == 201
        now = time.time()
        end = math.floor(now) + (1 if now % 1 < 0.2 else 2) + 0.5  # (0.8 to 1.8 s ahead)
        st, h, b = predict(api, "x", {"ids": ["a"], "logits": [[1, 2]], "time": end - 60})
        assert st == 200 and b["stored"] == 1, b
        st, h, b = predict(api, "x", {"ids": ["b"], "logits": [[1, 2]], "time": end - 30})
        assert st == 200 and b["stored"] == 1, b
        time.sleep(max(0.0, end + 0.1 - time.time()))
        st, h, b = label(api, "x", {"labels": [{"id": "a", "class": 0, "value": 1},
                                               {"id": "b", "class": 0, "value": 1}]})
        late = time.time() - end
        assert st == 200 and b["unknown_ids"] == ["a"] and b["applied"] == 1, \
            f"a label {late:.3f} s past a prediction's ttl (at most that): {b}"


@test
def late_attack_retention_drops_live_prediction(args):
    """With prediction_ttl equal to the retention, a prediction's bucket (which starts before
    it, by up to an hour after the rollup) was dropped by the retention while the prediction
    still took labels: labels applied to a bucket in no figure. The ttl now ends an hour before
    the retention: a longer one is refused, and a monitor whose retention leaves no room takes
    no predictions."""
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        st, h, b = api.put("rt", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["5m"], "retention": "1h",
                               "prediction_ttl": "1h"})
        assert st == 422 and b.get("field") == "prediction_ttl", (st, b)
        st, h, b = api.put("rt2", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["5m"], "retention": "2h",
                                "prediction_ttl": "90m"})
        assert st == 422 and b.get("field") == "prediction_ttl", (st, b)
        st, h, b = api.put("rt3", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["5m"], "retention": "2h",
                                "prediction_ttl": "1h"})
        assert st == 201 and b["config"]["prediction_ttl"] == "1h", (st, b)
        st, h, b = api.put("rt4", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["5m"], "retention": "3h"})
        assert st == 201 and b["config"]["prediction_ttl"] == "2h", (st, b)
        st, h, b = api.put("rt5", {"loss": SCE, "dtype": "float64", "num_classes": 2, "windows": ["5m"], "retention": "1h"})
        assert st == 201 and "prediction_ttl" not in b["config"], (st, b)
        st, h, b = predict(api, "rt5", {"ids": ["a"], "logits": [[1, 2]]})
        assert st == 422 and b.get("field") == "name", (st, b)
        api.close()
        stop_clean(srv)


@test
@sqlite_only
def late_attack_schema2_labels_table(args):
    """A state written by the server before labels were written in runs (schema 2, a `labels`
    table of one row a label: lid, pred, slot, class, value, weight, first, t) is opened by this
    server either with its labels (live counts; a label given again counts replaced, its old
    loss taken out of the figures) or not at all (a message naming the state): never served
    with its labels silently gone while their losses stay in the buckets."""
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            st, h, b = api.put("m", {"loss": SCE, "dtype": "float64", "num_classes": 2})
            assert st in (200, 201), (st, b)
            assert predict(api, "m", {"ids": ["a", "b"], "logits": [[0.5, -1.0], [2.0, 0.0]],
                                      "time": round(time.time() - 10, 3)})[0] == 200
            st, h, b = label(api, "m", {"labels": [{"id": "a", "class": 0, "value": 1},
                                                   {"id": "b", "class": 1, "value": 0}]})
            assert st == 200 and b["applied"] == 2, (st, b)
            before = api.get("m")["total"]
            api.close()
            stop_clean(srv)
        # The same file as the server of a5471a7 left it: its labels as rows of `labels`.
        db = sqlite3.connect(path)
        from tests_late import label_records
        recs = label_records(path)
        assert len(recs) == 2, recs
        db.execute("CREATE TABLE labels(lid INTEGER PRIMARY KEY, pred INTEGER NOT NULL, slot INTEGER NOT NULL,"
                   " class INTEGER NOT NULL, value REAL NOT NULL, weight REAL NOT NULL, first REAL NOT NULL,"
                   " t REAL NOT NULL)")
        db.executemany("INSERT INTO labels(pred, slot, class, value, weight, first, t) VALUES(?,?,?,?,?,?,?)", recs)
        db.execute("DROP TABLE label_runs")
        db.commit()
        db.close()
        try:
            srv = Server(args.server, "--state", path)
        except AssertionError as e:
            assert "state" in str(e), e  # refused, with a message: acceptable
            return
        with srv:
            api = Api(srv)
            lb = api.get("m")["labels"]
            assert lb["labelled_positions"] == 2, f"the labels of a schema-2 state are gone: {lb}"
            st, h, b = label(api, "m", {"labels": [{"id": "a", "class": 0, "value": 1}]})
            assert st == 200 and (b["applied"], b["replaced"]) == (0, 1), (st, b)
            after = api.get("m")["total"]
            for k in ("weighted_sum", "denominator", "sum_weights"):
                assert math.isclose(after[k], before[k], rel_tol=1e-12), (k, before[k], after[k])
            api.close()
            stop_clean(srv)


@test
@sqlite_only
def late_attack_compaction_write_amplification(args):
    """One correction among 200k labels written by one request: the upkeep that follows (at a
    restart) writes about the correction, not the 200k labels again (the bytes the process
    writes to its files, WAL and checkpoint included: under 2 MB; a rewrite of the run is about
    10 MB of records, twice with the checkpoint, and happens again at every upkeep after any
    correction in a run)."""
    N, C = 20000, 10
    rng = np.random.default_rng(47)
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            st, h, b = api.put("m", {"loss": SCE, "dtype": "float32", "num_classes": C})
            assert st in (200, 201), (st, b)
            ids = [f"p{i}" for i in range(N)]
            for k in range(0, N, 5000):
                st, h, b = predict(api, "m", {"ids": ids[k:k + 5000],
                                              "logits": rng.normal(0, 1, (5000, C)).round(3).tolist(),
                                              "time": round(time.time() - 10, 3)})
                assert st == 200, (st, b)
            st, h, b = label(api, "m", {"ids": ids, "labels": np.ones((N, C)).tolist()})
            assert st == 200 and b["applied"] == N * C, (st, b)
            st, h, b = label(api, "m", {"labels": [{"id": "p0", "class": 0, "value": 0}]})
            assert st == 200 and b["replaced"] == 1, (st, b)
            api.close()
            stop_clean(srv)
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            # The upkeep runs at once at start, in the writer: done when the writes stop.
            assert label(api, "m", {"labels": []})[0] == 200

            def wchar():
                with open(f"/proc/{srv.proc.pid}/io") as f:
                    return int(dict(line.split(": ") for line in f.read().splitlines())["wchar"])
            seen = [wchar()]

            def settled():
                time.sleep(1)
                seen.append(wchar())
                return seen[-1] == seen[-2]
            wait_until(settled, timeout=30)
            assert api.get("m")["labels"]["labelled_positions"] == N * C
            api.close()
            stop_clean(srv)
        wrote = seen[-1]
        assert wrote < 2_000_000, f"the upkeep after one correction among {N * C} labels wrote {wrote} bytes"


# ---- Attacks that held (regressions) -------------------------------------------------------------

@test
@sqlite_only
def late_attack_store_failure(args):
    """The state stops taking writes (RLIMIT_FSIZE 0) with labels (a retry key), predictions and
    a per-sample label on their way: each 503, nothing of them in memory (figures, labels block,
    the label index: the same labels later count applied, the retry key is free); restored,
    the same requests apply, and a kill -9 + restart serves the same."""
    rng = np.random.default_rng(41)
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with sxfsz_ignored_server(args, path) as srv:
            api = Api(srv)
            m = Late(api, "f", {"loss": SCE, "dtype": "float64", "num_classes": 4, "slices": ["v"]}, pointwise=sce)
            t = Late(api, "t", {"loss": TCE, "dtype": "float64", "num_classes": 4, "prediction_ttl": "1d"},
                     kind="torchce")
            ids = [f"p{i}" for i in range(30)]
            m.predict(ids, f32(rng.normal(0, 2, (30, 4))), round(time.time() - 100, 3), {"v": "x"})
            t.predict(ids, f32(rng.normal(0, 2, (30, 4))), round(time.time() - 100, 3))
            m.label([(f"p{i}", i % 4, 1, None) for i in range(10)])
            t.label([(f"p{i}", i % 4, None, None) for i in range(10)])
            before = {mm.name: mm.check() for mm in (m, t)}
            pid = srv.proc.pid
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
            try:
                body = {"labels": [{"id": "p0", "class": 0, "value": 0, "weight": 3},
                                   {"id": "p20", "class": 1, "value": 1}], "id": "retry-1"}
                expect_error(label(api, "f", dict(body)), 503, "state_unavailable")
                expect_error(predict(api, "f", {"ids": ["n1", "p1"], "logits": [[0] * 4, [1] * 4],
                                                "slice": {"v": "new"}}), 503, "state_unavailable")
                expect_error(label(api, "t", {"labels": [{"id": "p0", "class": 3}, {"id": "p25", "class": 2}]}),
                             503, "state_unavailable")
            finally:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            for mm in (m, t):
                diff = json_diff(comparable(before[mm.name]), comparable(api.get(mm.name)))
                assert not diff, f"{mm.name}: refused requests changed the figures:\n" + "\n".join(diff[:20])
            wait_until(lambda: label(api, "f", {"labels": []})[0] == 200, timeout=10)
            ans = m.label([("p0", 0, 0, 3), ("p20", 1, 1, None)], key="retry-1")
            assert (ans["applied"], ans["replaced"], ans["duplicate"]) == (1, 1, False), ans
            m.predict(["n1", "p1"], [[0] * 4, [1] * 4], slc={"v": "new"})
            ans = t.label([("p0", 3, None, None), ("p25", 2, None, None)])
            assert (ans["applied"], ans["replaced"]) == (1, 1), ans
            after = {mm.name: mm.check(" after the store came back") for mm in (m, t)}
            srv.proc.kill()
            srv.proc.wait()
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            for mm in (m, t):
                mm.api = api
                diff = json_diff(comparable(after[mm.name]), comparable(api.get(mm.name)))
                assert not diff, f"{mm.name} after kill -9:\n" + "\n".join(diff[:20])
            api.close()
            stop_clean(srv)


@test
def late_attack_replace_while_labelling(args):
    """Three clients label and store predictions while the monitor is replaced (PUT ?force=true)
    and deleted and created again, 16 times; then it is created anew and the same ids stored
    again: no label of an earlier monitor of that name comes back (counts, figures), neither
    in memory nor after a kill -9 and restart."""
    rng = np.random.default_rng(42)
    C = 4
    cfg = {"loss": SCE, "dtype": "float64", "num_classes": C}
    ids = [f"q{i}" for i in range(40)]
    X = f32(rng.normal(0, 2, (40, C)))
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            assert api.put("r", cfg)[0] == 201
            assert predict(api, "r", {"ids": ids, "logits": X.tolist()})[0] == 200
            stop = threading.Event()
            statuses, errors = {}, []

            def labeller(k):
                c, r = Api(srv), random.Random(k)
                try:
                    while not stop.is_set():
                        body = {"labels": [{"id": r.choice(ids), "class": r.randrange(C), "value": r.choice([0, 1]),
                                            "weight": r.choice([1, 2, 0.5])} for _ in range(30)]}
                        st, h, b = label(c, "r", body)
                        statuses[st] = statuses.get(st, 0) + 1
                        if st not in (200, 404, 409):
                            errors.append((st, b))
                        predict(c, "r", {"ids": [r.choice(ids)], "logits": [[0] * C]})
                finally:
                    c.close()
            threads = [threading.Thread(target=labeller, args=(k,)) for k in range(3)]
            for th in threads:
                th.start()
            try:
                for i in range(16):
                    time.sleep(0.03)
                    if i % 2:
                        st, h, b = api.call("DELETE", "/v1/monitors/r")
                        assert st in (200, 204), (st, b)
                        st, h, b = api.put("r", cfg)
                    else:
                        st, h, b = api.put("r", dict(cfg, windows=["1h"]) if i % 4 else cfg, force=True)
                    assert st in (200, 201), (st, b)
            finally:
                stop.set()
                for th in threads:
                    th.join()
            assert not errors, errors[:5]
            assert statuses.get(200), statuses
            st, h, b = api.put("r", dict(cfg, windows=["1h"]), force=True)
            assert st == 200, b
            g = api.get("r")
            assert (g["labels"]["predictions"], g["labels"]["labelled_positions"], g["total"]["samples"]) == (0, 0, 0), g
            st, h, b = predict(api, "r", {"ids": ids, "logits": X.tolist()})
            assert st == 200 and b["stored"] == 40, b
            st, h, b = label(api, "r", {"labels": [{"id": p, "class": c, "value": 1} for p in ids[:10] for c in range(C)]})
            assert st == 200 and (b["applied"], b["replaced"]) == (40, 0), b
            g = api.get("r")
            Z = np.zeros((40, C))
            W = np.zeros((40, C))
            Z[:10], W[:10] = 1, 1
            want = float((W * sce(Z, X, {})).sum())
            assert abs(g["total"]["weighted_sum"] - want) <= 1e-9 * want and g["total"]["sum_weights"] == 40, g["total"]
            srv.proc.kill()
            srv.proc.wait()
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            g2 = api.get("r")
            diff = json_diff(comparable(g), comparable(g2))
            assert not diff, "after kill -9:\n" + "\n".join(diff[:20])
            assert g2["labels"]["labelled_positions"] == 40, g2["labels"]
            api.close()
            stop_clean(srv)


@test
def late_attack_same_position_concurrent(args):
    """8 clients x 40 requests label the same 5 positions, each request all five with its own
    value and weight: the figures are exactly those of one request's labels (the last one
    committed), never a mixture; 5 applied in all."""
    rng = np.random.default_rng(43)
    C = 4
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        assert api.put("cc", {"loss": SCE, "dtype": "float64", "num_classes": C})[0] == 201
        X = f32(rng.normal(0, 2, (6, C)))
        assert predict(api, "cc", {"ids": [f"u{i}" for i in range(6)], "logits": X.tolist()})[0] == 200
        pos = [(i, i % C) for i in range(5)]
        answers, errors = [], []

        def worker(k):
            c = Api(srv)
            for j in range(40):
                v, w = round((k * 40 + j) / 400, 4), 1 + k + j / 100
                st, h, b = label(c, "cc", {"labels": [{"id": f"u{i}", "class": cl, "value": v, "weight": w}
                                                      for i, cl in pos]})
                if st != 200 or b["applied"] + b["replaced"] != 5:
                    errors.append((st, b))
                answers.append(((v, w), b))
            c.close()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors[:5]
        assert sum(b["applied"] for _, b in answers) == 5, "applied in all"
        g = api.get("cc")
        assert g["labels"]["labelled_positions"] == 5, g["labels"]
        matches = []
        for (v, w), _ in answers:
            Z, W = np.zeros((6, C)), np.zeros((6, C))
            for i, cl in pos:
                Z[i, cl], W[i, cl] = v, w
            ws = float((W * sce(Z, X, {})).sum())
            if abs(ws - g["total"]["weighted_sum"]) <= 1e-9 * ws and abs(W.sum() - g["total"]["sum_weights"]) <= 1e-9 * W.sum():
                matches.append((v, w))
        assert matches, f"the total {g['total']} is the labels of no single request"


@test
def late_attack_hostile_inputs(args):
    """Masks with NaN, infinity or negative values in b64 (422, the element named, nothing
    kept), a NaN label under a mask of 0 (ignored), ids with NUL (400), of 129 bytes (422) and
    of 128 bytes of UTF-8 (taken), sizes past the limits refused before allocation (413:
    100001 ids, dense rows x classes > 1M, a b64 shape of 2^62 elements), label times out of
    range, classes that are not whole indexes."""
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        assert api.put("e", {"loss": SCE, "dtype": "float64", "num_classes": 2})[0] == 201
        long_id = "\u00e9" * 63 + "xy"  # 128 bytes
        assert len(long_id.encode()) == 128
        st, h, b = predict(api, "e", {"ids": ["a", "b", long_id], "logits": [[1, 2], [3, 4], [0, 0]]})
        assert st == 200 and b["stored"] == 3, b
        before = api.get("e")
        for mask in ([[math.nan, 1]], [[-1, 1]], [[math.inf, 1]]):
            expect_error(label(api, "e", {"ids": ["a"], "labels": [[1, 1]], "mask": b64(mask, "float64")}),
                         422, "invalid_observation", "mask[0][0]")
        expect_error(label(api, "e", {"ids": ["a"], "labels": b64([[math.nan, 1]]), "mask": [[1, 1]]}),
                     422, "invalid_observation", "labels[0][0]")
        expect_error(label(api, "e", {"labels": [{"id": "a", "class": 1.5, "value": 1}]}),
                     422, "invalid_observation", "labels[0].class")
        expect_error(label(api, "e", {"labels": [{"id": "a", "class": True, "value": 1}]}),
                     422, "invalid_observation", "labels[0].class")
        for t in (-1, 1e300, "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", True):
            expect_error(label(api, "e", {"labels": [{"id": "a", "class": 0, "value": 1}], "time": t}),
                         422, "invalid_observation", "time")
        diff = json_diff(comparable(before), comparable(api.get("e")))
        assert not diff, "refused labels changed the figures:\n" + "\n".join(diff[:10])
        st, h, b = label(api, "e", {"ids": ["a", long_id], "labels": b64([[math.nan, 1], [1, 0]]),
                                    "mask": [[0, 1], [1, 0]]})
        assert st == 200 and b["applied"] == 2, b
        st, h, b = api.call("POST", "/v1/monitors/e/predictions", '{"ids": ["a\\u0000b"], "logits": [[1, 2]]}',
                            {"Content-Type": "application/json"})
        assert st == 400, (st, b)
        expect_error(predict(api, "e", {"ids": ["x" * 129], "logits": [[1, 2]]}), 422, "invalid_observation", "ids[0]")
        expect_error(label(api, "e", {"labels": [{"id": "x" * 129, "class": 0, "value": 1}]}),
                     422, "invalid_observation", "labels[0].id")
        many = [f"i{i}" for i in range(100001)]
        st, h, b = predict(api, "e", {"ids": many, "logits": b64(np.zeros((1, 2)))})
        assert st == 413 and b["field"] == "ids", (st, b)
        assert api.put("wide", {"loss": SCE, "num_classes": 20})[0] == 201
        st, h, b = label(api, "wide", {"ids": many[:50001], "labels": b64(np.zeros((1, 20)))})
        assert st == 413 and b["field"] == "labels", (st, b)
        for route in ("predictions", "labels"):
            key = "logits" if route == "predictions" else "labels"
            st, h, b = api.call("POST", f"/v1/monitors/e/{route}",
                                {"ids": ["a"], key: {"shape": [2 ** 31, 2 ** 31], "dtype": "float32", "b64": "AAAA"}})
            assert st == 413, (route, st, b)
        g = api.get("e")["labels"]
        assert g["predictions"] == 3 and g["labelled_positions"] == 2, g


@test
def late_attack_expiry_then_same_ids(args):
    """Predictions expire (ttl 1m), the upkeep at a restart deletes them with their labels
    (gauges and labels block 0); the same ids stored again start unlabelled (no old label comes
    back, in memory or after another restart), and the state file keeps only the new label."""
    rng = np.random.default_rng(44)
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            assert api.put("x", {"loss": SCE, "dtype": "float64", "num_classes": 3, "prediction_ttl": "1m"})[0] == 201
            t0 = time.time()
            st, h, b = predict(api, "x", {"ids": ["a", "b", "c"], "logits": f32(rng.normal(0, 2, (3, 3))).tolist(),
                                          "time": round(t0 - 57.5, 3)})
            assert st == 200 and b["stored"] == 3, b
            for body in ({"labels": [{"id": "a", "class": 0, "value": 1}, {"id": "a", "class": 1, "value": 0, "weight": 2},
                                     {"id": "b", "class": 2, "value": 1}]},
                         {"labels": [{"id": "a", "class": 0, "value": 0}]}):
                assert label(api, "x", body)[0] == 200
            assert gauges(api) == {("predictions", "x"): 3, ("labelled_positions", "x"): 3}, gauges(api)
            time.sleep(max(0.0, t0 + 3.5 - time.time()))
            srv.proc.kill()
            srv.proc.wait()
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            assert wait_until(lambda: api.get("x")["labels"]["predictions"] == 0, timeout=10), api.get("x")["labels"]
            assert gauges(api) == {("predictions", "x"): 0, ("labelled_positions", "x"): 0}, gauges(api)
            X = f32(rng.normal(0, 2, (3, 3)))
            st, h, b = predict(api, "x", {"ids": ["a", "b", "c"], "logits": X.tolist()})
            assert st == 200 and b["stored"] == 3, b
            st, h, b = label(api, "x", {"labels": [{"id": "a", "class": 0, "value": 1}, {"id": "b", "class": 2, "value": 1}]})
            assert st == 200 and (b["applied"], b["replaced"]) == (2, 0), b
            srv.proc.kill()
            srv.proc.wait()
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            lb = api.get("x")["labels"]
            assert lb["predictions"] == 3 and lb["labelled_positions"] == 2, lb
            assert [c["labelled"] for c in lb["per_class"]] == [1, 0, 1], lb["per_class"]
            assert gauges(api) == {("predictions", "x"): 3, ("labelled_positions", "x"): 2}, gauges(api)
            st, h, b = label(api, "x", {"labels": [{"id": "a", "class": 1, "value": 1}]})
            assert st == 200 and b["applied"] == 1, b
            from tests_late import label_records, rows_of
            preds = {r[0] for r in rows_of(path, "predictions")}
            rows = [(r[1], r[3]) for r in label_records(path) if r[0] in preds]
            assert sorted(rows) == [(0, 1.0), (1, 1.0), (2, 1.0)], rows
            api.close()
            stop_clean(srv)


@test
def late_attack_gathered_params(args):
    """Families and params tests_late leaves out, under random sparse labels (corrections,
    weights 0, 0.5, 2): per-class params taken at each position's class (pos_weight as [C] and
    as [1, C], weighted_cross_entropy's pos_weight), ASL, hinge, huber with delta, absolute
    difference at float32, tf.nn's sigmoid with a reduction, label smoothing, focal without
    alpha: after each batch every figure equals one /v1/loss over the stored outputs."""
    rng = np.random.default_rng(45)
    C = 5
    pw = [2, 1, 0.5, 3, 1.5]
    cfgs = {
        "bce32": ({"loss": "torch.nn.functional.binary_cross_entropy_with_logits", "num_classes": C,
                   "params": {"pos_weight": pw}}, "logits"),
        "bce2d": ({"loss": "torch.nn.functional.binary_cross_entropy_with_logits", "dtype": "float64",
                   "num_classes": C, "reduction": "sum", "params": {"pos_weight": [pw]}}, "logits"),
        "wce": ({"loss": "tf.nn.weighted_cross_entropy_with_logits", "dtype": "float64", "num_classes": C,
                 "reduction": "sum", "params": {"pos_weight": pw}}, "logits"),
        "asl": ({"loss": "ASL.AsymmetricLoss", "dtype": "float64", "num_classes": C}, "logits"),
        "hinge": ({"loss": "hinge_loss", "dtype": "float64", "num_classes": C}, "logits"),
        "huber": ({"loss": "huber_loss", "dtype": "float64", "num_classes": C, "params": {"delta": 0.7}},
                  "predictions"),
        "absd": ({"loss": "absolute_difference", "num_classes": C, "reduction": "SUM_OVER_BATCH_SIZE"},
                 "predictions"),
        "nnsig": ({"loss": "tf.nn.sigmoid_cross_entropy_with_logits", "num_classes": C, "reduction": "mean"},
                  "logits"),
        "smooth": ({"loss": SCE, "dtype": "float64", "num_classes": C, "params": {"label_smoothing": 0.2},
                    "reduction": "MEAN"}, "logits"),
        "focal": ({"loss": "torchvision.ops.sigmoid_focal_loss", "num_classes": C, "reduction": "sum",
                   "params": {"alpha": -1}}, "logits"),
    }
    with Server(args.server, "--state", ":memory:") as srv:
        api = Api(srv)
        for name, (cfg, input_name) in cfgs.items():
            m = Late(api, name, cfg, pointwise=None, input_name=input_name)
            for j in range(3):
                m.predict([f"{j}-{i}" for i in range(12)], f32(rng.normal(0, 2, (12, C))), round(time.time() - 900 * j, 3))
            regression = name in ("huber", "absd")
            for it in range(4):
                m.label([(f"{int(rng.integers(3))}-{int(rng.integers(12))}", int(rng.integers(C)),
                          float(rng.normal(0, 2)) if regression else float(rng.choice([0, 1, 0.3])),
                          [None, 2.0, 0.0, 0.5][int(rng.integers(4))]) for _ in range(int(rng.integers(1, 30)))])
                m.check(f" after batch {it}", delays=False)
        api.close()
        stop_clean(srv)


@test
@sqlite_only
def late_attack_compaction_restarts(args):
    """Corrections in every round (elementwise, sparse softmax and torch cross_entropy whose
    classes change), a kill -9 and a restart between rounds (the upkeep at start compacts the
    dead label rows): the figures are the model's after each restart, the live per-class
    counts too, and the labels table shrinks to the live rows plus one round's."""
    rng = np.random.default_rng(46)
    C = 3
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        ms = None
        for rnd in range(3):
            with Server(args.server, "--state", path) as srv:
                api = Api(srv)
                if ms is None:
                    ms = [Late(api, "el", {"loss": SCE, "dtype": "float64", "num_classes": C, "slices": ["v"]},
                               pointwise=sce),
                          Late(api, "sp", {"loss": "tf.compat.v1.losses.sparse_softmax_cross_entropy",
                                           "dtype": "float64", "num_classes": C, "prediction_ttl": "7d"}, kind="sparse"),
                          Late(api, "tc", {"loss": TCE, "dtype": "float64", "num_classes": C, "prediction_ttl": "7d"},
                               kind="torchce")]
                    for m in ms:
                        m.predict([f"x{i}" for i in range(20)], f32(rng.normal(0, 2, (20, C))), round(time.time() - 500, 3),
                                  {"v": "a"} if m.name == "el" else None)
                else:
                    for m in ms:
                        m.api = api
                    wait_until(lambda: all(api.get(m.name)["labels"]["predictions"] == 20 for m in ms), timeout=10)
                    for m in ms:
                        m.check(f" after restart {rnd}", delays=False)
                        lb = api.get(m.name)["labels"]
                        counts = [0] * C
                        for k, v in m.lab.items():
                            counts[k[1] if m.kind == "elem" else v[0]] += 1
                        assert [c["labelled"] for c in lb["per_class"]] == counts, (m.name, lb["per_class"], counts)
                    live = sum(len(m.lab) for m in ms)

                    def label_rows():
                        from tests_late import label_records
                        return len(label_records(path))
                    # The compaction at start leaves fewer dead labels than live ones (a run is
                    # written again once half of it is dead).
                    wait_until(lambda: live <= label_rows() < max(2 * live, 1), timeout=10)
                    assert live <= label_rows() < max(2 * live, 1), \
                        f"{label_rows()} labels stored after the compaction at start, {live} live"
                for it in range(5):
                    for m in ms:
                        ents = []
                        for _ in range(15):
                            p, c = f"x{int(rng.integers(20))}", int(rng.integers(C))
                            if m.kind == "elem":
                                ents.append((p, c, float(rng.choice([0, 1, 0.5])), [None, 2.0, 0.0][int(rng.integers(3))]))
                            else:
                                ents.append((p, c, None, None if m.kind == "torchce" else [None, 2.0, 0.0][int(rng.integers(3))]))
                        m.label(ents, key=f"r{rnd}-{it}-{m.name}" if it % 2 else None)
                for m in ms:
                    m.check(f" in round {rnd}", delays=False)
                srv.proc.kill()
                srv.proc.wait()
