"""Late labels, a second adversarial review (of the labels op in phases: predictions looked up
first, the labels next, the outputs read last and only the span of the labelled classes; the
state read through a memory map of its file). Every test here runs on a state FILE (the map
is SQLite's, absent for ":memory:", which the other late tests use). Expected figures come
from tests_late's Late model (numpy and /v1/loss over the stored tensors), counts from that
model or from a derivation written here, never from the monitor's code."""
import os
import shutil
import sqlite3
import subprocess
import threading
import time

import numpy as np

from common import sqlite_only, expect_error, stop_clean, test, wait_until
from server import Server
from tests_late import BCE, SCE, TCE, Late, bce_pos_weight, f32, log_loss, mapped, mse, sce
from tests_late_attacks import b64, label, predict
from tests_monitors import Api, comparable, json_diff, state_dir


def map_bytes(pid, path):
    """Bytes of the file at path the process maps."""
    real, total = os.path.realpath(path), 0
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if line.rstrip("\n").endswith(" " + real):
                lo, hi = line.split()[0].split("-")
                total += int(hi, 16) - int(lo, 16)
    return total


def per_class_counts(m):
    """labels.per_class[c].labelled as the contract defines it, from the model's label state:
    elementwise, the known (id, c); per-sample, the predictions whose latest label is c."""
    counts = [0] * m.C
    for k, v in m.lab.items():
        counts[k[1] if m.kind == "elem" else v[0]] += 1
    return counts


def check_per_class(m, got, context=""):
    pcs = got["labels"]["per_class"]
    want = per_class_counts(m)
    have = [pc["labelled"] for pc in pcs]
    assert have == want, f"{m.name}{context}: labels.per_class labelled {have}, expected {want}"


# ---- 1. The span of the labelled classes, on rows of many classes -----------------------------

@test
@sqlite_only
def late_review2_spans(args):
    """Rows of 1024 float64 classes (8 KiB: the row spans overflow pages) and of 333 float32
    ones, stored in a mapped state; labels at the row's first and last class, in the middle,
    one class alone near the end, the same (id, class) three times interleaved with other ids
    (the last wins), dense rows of one id repeated with masks (a later row's 0 leaves the
    earlier label) -- after every batch the figures equal numpy's and /v1/loss's. Then a clean
    restart (outputs read from the checkpointed file through the map) and more labels."""
    rng = np.random.default_rng(2026)
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        mons = {}
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            mons["w64"] = Late(api, "w64", {"loss": SCE, "dtype": "float64", "num_classes": 1024, "slices": ["v"]},
                               pointwise=sce)
            mons["w32"] = Late(api, "w32", {"loss": SCE, "dtype": "float32", "num_classes": 333}, pointwise=sce)
            mons["ll"] = Late(api, "ll", {"loss": "log_loss", "dtype": "float64", "num_classes": 97},
                              pointwise=log_loss, input_name="predictions")
            now = time.time()
            for m in mons.values():
                for j in range(3):
                    ids = [f"{m.name}-{j}-{i}" for i in range(40)]
                    if m.input_name == "predictions":
                        X = f32(rng.uniform(0.02, 0.98, (40, m.C)))
                    else:
                        X = f32(rng.normal(0, 2, (40, m.C)))
                    m.predict(ids, X, round(now - 900 + 300 * j, 3), {"v": str(j)} if m.name == "w64" else None,
                              "b64f64" if m.cfg["dtype"] == "float64" else "b64")
            # (no map yet: what was just written is in the write-ahead log, read from there)

            def batches(m):
                C, ids = m.C, m.ids
                a, b_, c_ = ids[3], ids[50], ids[99]
                # The row's ends, its middle, a class alone at the end, a class alone at 0.
                yield "ends", [(a, 0, 1, None), (a, C - 1, 0, 2.0), (b_, C // 2, 1, 0.5), (c_, C - 2, 1, None),
                               (ids[7], 0, 0.3, None)]
                # The same (id, class) three times between other ids: the last wins (replaced 2).
                yield "repeats", [(a, 5, 1, 1.0), (b_, 1, 0, None), (a, 5, 0, 0.5), (c_, C - 1, 1, None),
                                  (a, 5, 0.3, 2.0), (b_, 1, 1, 0.25), (a, 0, 1, None)]
                # Descending classes within an id, ids given out of order.
                yield "descending", [(ids[110], c, float(c % 2), None) for c in range(C - 1, C - 40, -3)] + \
                    [(ids[2], c, 1.0, 0.5) for c in (C - 1, 17, 3)] + [(ids[1], C - 1, 0, None)]
                for _ in range(3):
                    entries = []
                    for _ in range(int(rng.integers(20, 120))):
                        pid = ids[int(rng.integers(len(ids)))]
                        cc = int(rng.choice([0, C - 1, int(rng.integers(C))]))
                        entries.append((pid, cc, float(rng.choice([0, 1, 0.5])), [None, 0.5, 0, 2][int(rng.integers(4))]))
                    yield "random", entries

            for m in mons.values():
                for what, entries in batches(m):
                    m.label(entries)
                    got = m.check(f" after {what}")
                    check_per_class(m, got, f" after {what}")
                # Dense: one id in three rows (the later row wins where its mask is not 0), and
                # rows of other ids; the mask's weights.
                pid = m.ids[60]
                others = [m.ids[61], m.ids[62]]
                dids = [pid, others[0], pid, others[1], pid]
                Z = rng.choice(np.array([0, 1, 0.5]), (5, m.C))
                M = rng.choice(np.array([0, 0, 1, 0.5, 2]), (5, m.C))
                M[4, :] = 0
                M[4, 0] = 1
                M[4, m.C - 1] = 0.5
                M[2, m.C // 2] = 0
                M[0, m.C // 2] = 2
                m.dense(dids, Z, M)
                got = m.check(" after dense rows of a repeated id")
                check_per_class(m, got, " after dense rows of a repeated id")
            api.close()
            stop_clean(srv)
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            assert mapped(srv.proc.pid, path), "the state is not mapped after a restart"
            for m in mons.values():
                m.api = api
                m.check(" after a restart")
                m.label([(m.ids[0], m.C - 1, 1, None), (m.ids[0], 0, 0, 0.5), (m.ids[119], m.C // 3, 1, None),
                         (m.ids[5], m.C - 1, 0, None), (m.ids[0], m.C - 1, 0.5, 1.5)])
                got = m.check(" after labels after a restart")
                check_per_class(m, got, " after labels after a restart")
            api.close()
            stop_clean(srv)


# ---- 2. Per-sample losses: one label an id, the last one given wins ----------------------------

@test
def late_review2_per_sample_repeats(args):
    """torch cross_entropy (ignore_index when unknown), sparse_softmax_cross_entropy and
    softmax_cross_entropy (weights), on a mapped state: one request names an id several times
    with different classes, between other ids and unknown ones -- the last class given wins,
    the answer counts every entry (applied for the first of an id never labelled, replaced for
    the others), labels.per_class counts the latest class, the delay one first label per
    prediction; then the same across requests and after a kill -9 and restart."""
    rng = np.random.default_rng(77)
    C = 5
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        specs = [("tce", {"loss": TCE, "dtype": "float64", "num_classes": C, "prediction_ttl": "7d"}, "torchce"),
                 ("ssce", {"loss": "sparse_softmax_cross_entropy", "dtype": "float64", "num_classes": C,
                           "prediction_ttl": "7d", "slices": ["v"]}, "sparse"),
                 ("softce", {"loss": "softmax_cross_entropy", "dtype": "float32",
                             "classes": ["a", "b", "c", "d", "e"], "prediction_ttl": "1d"}, "onehot")]
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            mons = [Late(api, name, cfg, kind=kind) for name, cfg, kind in specs]
            now = time.time()
            for m in mons:
                for j in range(2):
                    ids = [f"{m.name}{j}-{i}" for i in range(30)]
                    m.predict(ids, f32(rng.normal(0, 2, (30, C))), round(now - 400 + 200 * j, 3),
                              {"v": str(j)} if m.name == "ssce" else None)

            def w(m, x):
                return None if m.kind == "torchce" else x

            def check(m, what):
                got = m.check(what, delays=False)
                check_per_class(m, got, what)
                dl = got["labels"]["delay"]["total"]["count"]
                assert dl == len(m.lab), f"{m.name}{what}: delay count {dl}, expected {len(m.lab)} (one a prediction)"

            for m in mons:
                a, b, c = m.ids[0], m.ids[31], m.ids[7]
                m.label([(a, 1, None, w(m, 2.0)), (b, 2, None, None), (a, 3, None, None), ("ghost", 1, None, None),
                         (a, 4, None, w(m, 0.5)), (c, 0, None, None), (b, 2, None, w(m, 0.25)), ("ghost", 2, None, None),
                         (a, 1, None, None)])
                check(m, " after one request naming ids again")
                # Across requests: a labelled id given twice more, the second with another class.
                m.label([(c, 2, None, None), (m.ids[8], 4, None, w(m, 3.0)), (c, 4, None, w(m, 0.5))])
                check(m, " after a second request")
                for _ in range(3):
                    entries = []
                    for _ in range(int(rng.integers(10, 60))):
                        pid = m.ids[int(rng.integers(len(m.ids)))] if rng.random() < 0.9 else f"nobody{int(rng.integers(5))}"
                        entries.append((pid, int(rng.integers(C)), None, w(m, [None, 0.5, 2.0, 0][int(rng.integers(4))])))
                    m.label(entries)
                    check(m, " after random repeats")
            srv.proc.kill()
            srv.proc.wait()
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            for m in mons:
                m.api = api
                check(m, " after kill -9 and restart")
                m.label([(m.ids[0], 0, None, None), (m.ids[59], 3, None, None), (m.ids[0], 2, None, None)])
                check(m, " after labels after the restart")
            api.close()
            stop_clean(srv)


# ---- 3. The map while rows go: expiry, compaction, a vacuum by another process -----------------

@test
@sqlite_only
def late_review2_expiry_under_map(args):
    """A mapped state loses most of its rows: 6000 predictions of 128 classes (and their
    labels) expire, and the upkeep at the next start deletes them and compacts the labels;
    then another process VACUUMs the file and checkpoints it with TRUNCATE, so that the file
    shrinks under the server's map. The server stays up, the expired ids are unknown, and the
    live monitor's figures equal numpy's and /v1/loss's before and after, labels applying."""
    rng = np.random.default_rng(5)
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            assert api.put("old", {"loss": SCE, "dtype": "float32", "num_classes": 128,
                                   "prediction_ttl": "1m"})[0] == 201
            live = Late(api, "live", {"loss": "mean_squared_error", "dtype": "float64", "num_classes": 6,
                                      "slices": ["v"]}, pointwise=mse, input_name="predictions")
            t_old = round(time.time() - 55, 3)
            for j in range(6):
                ids = [f"o{j}-{i}" for i in range(1000)]
                st, h, b = predict(api, "old", {"ids": ids, "logits": b64(rng.normal(0, 1, (1000, 128))),
                                                "time": t_old})
                assert st == 200 and b["stored"] == 1000, (st, b)
                st, h, b = label(api, "old", {"labels": [{"id": ids[i], "class": int(rng.integers(128)), "value": 1}
                                                         for i in range(0, 1000, 3)]})
                assert st == 200 and b["applied"] == 334, (st, b)
            for j in range(3):
                live.predict([f"l{j}-{i}" for i in range(50)], f32(rng.normal(0, 2, (50, 6))),
                             round(time.time() - 300 + 100 * j, 3), {"v": str(j % 2)})
            live.label([(live.ids[i], i % 6, float(f32(rng.normal(0, 2))), None) for i in range(0, 150, 2)])
            live.check(" before the expiry")
            api.close()
            stop_clean(srv)
        size_before = os.path.getsize(path)
        time.sleep(max(0.0, t_old + 61 - time.time()))
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            live.api = api
            wait_until(lambda: api.get("old")["labels"]["predictions"] == 0, timeout=30)
            st, h, b = label(api, "old", {"labels": [{"id": "o0-3", "class": 1, "value": 1},
                                                     {"id": "o5-999", "class": 0, "value": 0}]})
            assert st == 200 and b["unknown"] == 2 and b["applied"] == 0, (st, b)
            live.check(" after the expiry's deletions")
            live.label([(live.ids[i], (i + 1) % 6, float(f32(rng.normal(0, 2))), 0.5) for i in range(0, 150, 3)])
            live.check(" after labels after the expiry")
            db = sqlite3.connect(path, timeout=30)
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
            size_after = os.path.getsize(path)
            assert size_after < size_before // 4, (size_before, size_after)
            for k in range(3):
                live.label([(live.ids[int(i)], int(rng.integers(6)), float(f32(rng.normal(0, 2))), None)
                            for i in rng.integers(0, 150, 40)])
                live.check(f" after labels after another process shrank the file ({k})")
            live.predict([f"l9-{i}" for i in range(20)], f32(rng.normal(0, 2, (20, 6))), None, {"v": "9"})
            live.label([(f"l9-{i}", i % 6, 1.5, None) for i in range(20)])
            live.check(" at the end")
            assert srv.proc.poll() is None, srv.proc.returncode
            api.close()
            stop_clean(srv)


# ---- 4. A state larger than the map ------------------------------------------------------------

@test
@sqlite_only
def late_review2_beyond_the_map(args):
    """--state-mmap 1M and --state-cache 64K under a state of ~3 MB whose rows (600 float64
    outputs, 4800 bytes) span two pages each: most rows lie beyond the map and SQLite's cache,
    read with a system call, and some straddle the map's end (one page mapped, the next read);
    labels at the rows' first and last classes; the figures equal numpy's and /v1/loss's, and
    those of the same traffic with the default map and with none."""
    results = {}
    t0 = time.time()
    for name, extra in (("small", ("--state-mmap", "1M", "--state-cache", "64K")), ("default", ()),
                        ("none", ("--state-mmap", "0"))):
        rng = np.random.default_rng(99)
        with state_dir() as tmp:
            path = os.path.join(tmp, "state.db")
            with Server(args.server, "--state", path, *extra) as srv:
                api = Api(srv)
                # (one window that holds every prediction in all three runs: they compare)
                m = Late(api, "big", {"loss": SCE, "dtype": "float64", "num_classes": 600, "slices": ["v"],
                                      "windows": ["1h"]}, pointwise=sce)
                for j in range(4):
                    m.predict([f"p{j}-{i}" for i in range(150)], f32(rng.normal(0, 2, (150, 600))),
                              round(t0 - 600 + 120 * j, 3), {"v": str(j % 2)}, "b64f64")
                # Everything in the file (the map and the cache are of the file, not of the log).
                db = sqlite3.connect(path, timeout=30)
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                db.close()
                assert os.path.getsize(path) > 2 << 20, os.path.getsize(path)
                for _ in range(3):
                    entries = []
                    for _ in range(400):
                        pid = m.ids[int(rng.integers(len(m.ids)))]
                        c = int(rng.choice([0, 599, int(rng.integers(600))]))
                        entries.append((pid, c, float(rng.choice([0, 1, 0.5])), [None, 2.0, 0.5][int(rng.integers(3))]))
                    m.label(entries)
                sel = [m.ids[int(i)] for i in rng.choice(len(m.ids), 20, replace=False)]
                m.dense(sel, rng.choice(np.array([0, 1]), (20, 600)), rng.choice(np.array([0, 1, 0.5]), (20, 600)))
                got = m.check(f" ({name})")
                size = map_bytes(srv.proc.pid, path)
                assert (size > 0) == (name != "none") and (name != "small" or size <= 1 << 20), \
                    f"{name}: {size} bytes of the state mapped"
                results[name] = comparable(got)
                results[name]["labels"].pop("delay")
                api.close()
                stop_clean(srv)
    for name in ("default", "none"):
        diff = json_diff(results["small"], results[name])
        assert not diff, f"a small map and {name}:\n" + "\n".join(diff[:20])


# ---- 5. Defect: a state file cut short under the map kills the server (SIGBUS) -----------------

@test
@sqlite_only
def late_review2_truncated_without_map(args):
    """The state file made shorter by something other than this server's SQLite while it runs
    (an operator's `cp backup.db state.db` over it -- cp truncates first --, a restore script):
    with --state-mmap 0 a labels request that reads a stored row past the new end is 503
    state_unavailable ("database disk image is malformed") and the server keeps serving
    /v1/loss. (With the map, the default, the read is a load from a mapped page past the end
    of the file, SIGBUS, and the process ends, as SQLite documents for memory-mapped I/O; the
    README says not to do this and what --state-mmap 0 does instead.)"""
    rng = np.random.default_rng(3)
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path, "--state-mmap", "0") as srv:
            api = Api(srv)
            assert api.put("m", {"loss": SCE, "dtype": "float64", "num_classes": 64})[0] == 201
            for j in range(4):
                st, h, b = predict(api, "m", {"ids": [f"p{j}-{i}" for i in range(1000)],
                                              "logits": b64(rng.normal(0, 1, (1000, 64)), "float64")})
                assert st == 200 and b["stored"] == 1000, (st, b)
            db = sqlite3.connect(path, timeout=30)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
            st, h, b = label(api, "m", {"labels": [{"id": "p3-999", "class": 1, "value": 1}]})
            assert st == 200 and b["applied"] == 1, (st, b)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 4)
            answers = []
            for k in range(3):
                st, h, b = label(api, "m", {"labels": [{"id": f"p3-{990 + k}", "class": 2, "value": 1}]})
                answers.append((st, b.get("code")))
            assert answers == [(503, "state_unavailable")] * 3, answers
            st, h, b = api.call("POST", "/v1/loss", {"loss": SCE, "labels": [1, 0], "logits": [0.5, -1]})
            assert st == 200 and srv.proc.poll() is None, (st, b)
            api.close()
            srv.stop()


# ---- 6. A read-only state (immutable) through the map ------------------------------------------

@test
@sqlite_only
def late_review2_read_only_state(args):
    """Root: a mapped state on a tmpfs remounted read-only (SQLite opens it immutable): the
    server starts with its predictions and labels (the figures equal numpy's and /v1/loss's),
    labels and predictions are 503 state_unavailable (nothing counted, the server up), /v1/loss
    answers; mounted writable again, a new server takes the same labels (applied/replaced as
    if the refused ones never came)."""
    if os.geteuid() != 0 or not (shutil.which("mount") and shutil.which("umount")):
        print("    skipped: needs root and mount")
        return
    rng = np.random.default_rng(8)
    with state_dir() as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"    skipped: no tmpfs ({r.stderr.strip()[:80]})")
            return
        try:
            path = os.path.join(mnt, "state.db")
            with Server(args.server, "--state", path) as srv:
                api = Api(srv)
                m = Late(api, "ro", {"loss": BCE, "dtype": "float32", "num_classes": 40, "slices": ["v"]},
                         pointwise=bce_pos_weight)
                t = Late(api, "rot", {"loss": TCE, "dtype": "float64", "num_classes": 40, "prediction_ttl": "7d"},
                         kind="torchce")
                for mm in (m, t):
                    for j in range(2):
                        mm.predict([f"p{j}-{i}" for i in range(500)], f32(rng.normal(0, 2, (500, 40))),
                                   round(time.time() - 200 + 100 * j, 3), {"v": str(j)} if mm is m else None, "b64")
                m.label([(m.ids[int(i)], int(rng.integers(40)), float(rng.choice([0, 1])), None)
                         for i in rng.integers(0, 1000, 300)])
                t.label([(t.ids[int(i)], int(rng.integers(40)), None, None) for i in rng.integers(0, 1000, 300)])
                before = {mm.name: mm.check(" before the read-only mount", delays=False) for mm in (m, t)}
                api.close()
                stop_clean(srv)
            r = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            with Server(args.server, "--state", path) as srv:
                api = Api(srv)
                for mm in (m, t):
                    mm.api = api
                    got = mm.check(" on a read-only state", delays=False)
                    diff = json_diff(comparable(before[mm.name]), comparable(got))
                    assert not diff, f"{mm.name} read-only:\n" + "\n".join(diff[:20])
                expect_error(label(api, "ro", {"labels": [{"id": m.ids[0], "class": 39, "value": 1},
                                                          {"id": m.ids[999], "class": 0, "value": 0}]}),
                             503, "state_unavailable")
                expect_error(label(api, "rot", {"labels": [{"id": t.ids[5], "class": 3}]}), 503, "state_unavailable")
                expect_error(predict(api, "ro", {"ids": ["new"], "logits": [[0.0] * 40]}), 503, "state_unavailable")
                st, h, b = api.call("POST", "/v1/loss", {"loss": SCE, "labels": [1, 0], "logits": [0.5, -1]})
                assert st == 200, (st, b)
                for mm in (m, t):
                    diff = json_diff(comparable(before[mm.name]), comparable(mm.check(" after refusals", delays=False)))
                    assert not diff, f"{mm.name} changed by refused requests:\n" + "\n".join(diff[:20])
                assert srv.proc.poll() is None
                api.close()
                stop_clean(srv)
            r = subprocess.run(["mount", "-o", "remount,rw", mnt], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            with Server(args.server, "--state", path) as srv:
                api = Api(srv)
                for mm in (m, t):
                    mm.api = api
                m.label([(m.ids[0], 39, 1, None), (m.ids[999], 0, 0, None)])
                t.label([(t.ids[5], 3, None, None)])
                for mm in (m, t):
                    mm.check(" writable again", delays=False)
                api.close()
                stop_clean(srv)
        finally:
            subprocess.run(["umount", "-l", mnt], capture_output=True)


# ---- 7. An op refused midway leaves nothing ----------------------------------------------------

@test
def late_review2_refused_midway(args):
    """A labels request whose last group (by id) is refused after the first ones were looked up,
    evaluated and -- for per-sample losses -- stored (|weight x loss| beyond 1e12: a logit of
    -2e7 labelled with weight 1e6; squared error of a regression label 1e4 with weight 1e6):
    422 naming that entry, and nothing of the request kept, on a mapped state -- the figures
    unchanged, its retry key free, its valid entries sent again count applied (not replaced)."""
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            sx = Late(api, "sx", {"loss": "sparse_softmax_cross_entropy", "dtype": "float64", "num_classes": 3,
                                  "prediction_ttl": "7d"}, kind="sparse")
            ms = Late(api, "ms", {"loss": "mean_squared_error", "dtype": "float64", "num_classes": 3},
                      pointwise=mse, input_name="predictions")
            t = round(time.time() - 60, 3)
            sx.predict(["aa", "bb", "zz"], [[0.5, -1, 2], [1, 1, 1], [0, 0, -2e7]], t)
            ms.predict(["aa", "bb", "zz"], [[0.5, -1, 2], [1, 1, 1], [0, 0, 0]], t)
            sx.label([("bb", 1, None, 0.5)])
            ms.label([("bb", 1, 2.0, 0.5)])
            before = {m.name: comparable(m.check(" before")) for m in (sx, ms)}
            cases = [(sx, [{"id": "aa", "class": 0}, {"id": "zz", "class": 2, "weight": 1e6}, {"id": "bb", "class": 2}],
                      "labels[1]"),
                     (sx, [{"id": "zz", "class": 2, "weight": 1e6}, {"id": "aa", "class": 0}, {"id": "bb", "class": 0}],
                      "labels[0]"),
                     (ms, [{"id": "aa", "class": 0, "value": 1}, {"id": "bb", "class": 1, "value": 3},
                           {"id": "zz", "class": 2, "value": 1e4, "weight": 1e6}, {"id": "aa", "class": 2, "value": 0}],
                      "labels[2]")]
            for m, entries, field in cases:
                st, h, b = label(api, m.name, {"labels": entries, "id": "key-" + m.name})
                assert st == 422 and b.get("field") == field, (m.name, st, b)
                diff = json_diff(before[m.name], comparable(m.check(" after a refusal")))
                assert not diff, f"{m.name}: a refused request changed the figures:\n" + "\n".join(diff[:20])
            ans = sx.label([("aa", 0, None, None), ("bb", 2, None, None)], key="key-sx")
            assert (ans["applied"], ans["replaced"], ans["duplicate"]) == (1, 1, False), ans
            ans = ms.label([("aa", 0, 1, None), ("bb", 1, 3, None), ("aa", 2, 0, None)], key="key-ms")
            assert (ans["applied"], ans["replaced"], ans["duplicate"]) == (2, 1, False), ans
            for m in (sx, ms):
                m.check(" after the valid entries alone")
            api.close()
            stop_clean(srv)


# ---- 8. Many ops in one transaction on the same mapped rows ------------------------------------

@test
@sqlite_only
def late_review2_concurrent_mapped(args):
    """4 clients label the same 300 predictions of 300 float32 classes at once, on a mapped
    state read after a clean restart (the rows in the file): each client its own classes (so
    the final state is known whatever the order, and each answer's applied/replaced), sparse
    requests with an (id, class) given twice and dense requests whose rows repeat an id; ops of
    several clients share a transaction and the same rows. The figures are then the one
    /v1/loss over the final labels."""
    rng = np.random.default_rng(23)
    C, T = 300, 4
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        cfg = {"loss": SCE, "dtype": "float32", "num_classes": C, "slices": ["s"]}
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            m = Late(api, "con", cfg, pointwise=sce)
            for j in range(3):
                m.predict([f"c{j}-{i}" for i in range(100)], f32(rng.normal(0, 2, (100, C))),
                          round(time.time() - 600 * j, 3), {"s": str(j)}, "b64")
            api.close()
            stop_clean(srv)
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            m.api = api
            own = [[c for c in range(C) if c % T == k] for k in range(T)]
            plans = []
            for k in range(T):
                batches = []
                for b in range(20):
                    if b % 4 == 3:
                        pids = [m.ids[int(i)] for i in rng.integers(0, len(m.ids), 6)]
                        pids[3] = pids[0]  # a row of the same id again: the later row wins
                        Z = rng.choice(np.array([0, 1, 0.5]), (6, C))
                        M = np.zeros((6, C))
                        for r in range(6):
                            for c in rng.choice(own[k], 12, replace=False):
                                M[r, c] = rng.choice([1, 0.5, 2])
                        batches.append(("dense", pids, Z, M))
                    else:
                        entries = [(m.ids[int(rng.integers(len(m.ids)))], int(rng.choice(own[k])),
                                    float(rng.choice([0, 1, 0.5])), [None, 0.5, 2, 0][int(rng.integers(4))])
                                   for _ in range(int(rng.integers(5, 80)))]
                        entries.append(entries[0][:2] + (1.0 - entries[0][2], 1.5))
                        batches.append(("sparse", entries))
                plans.append(batches)
            errors, finals = [], [dict() for _ in range(T)]

            def client(k):
                c = Api(srv)
                for batch in plans[k]:
                    if batch[0] == "dense":
                        _, pids, Z, M = batch
                        entries = [(p, cc, float(Z[r, cc]), float(M[r, cc])) for r, p in enumerate(pids)
                                   for cc in range(C) if M[r, cc] != 0]
                        body = {"ids": pids, "labels": Z.tolist(), "mask": M.tolist()}
                    else:
                        entries = batch[1]
                        body = {"labels": [dict({"id": p, "class": cl, "value": v}, **({} if w is None else {"weight": w}))
                                           for p, cl, v, w in entries]}
                    want = [0, 0]
                    for pid, cl, v, w in entries:
                        want[(pid, cl) in finals[k]] += 1
                        finals[k][(pid, cl)] = (v, 1.0 if w is None else w)
                    st, h, b = c.call("POST", "/v1/monitors/con/labels", body)
                    if st != 200 or [b.get("applied"), b.get("replaced")] != want:
                        errors.append((k, batch[0], st, b, want))
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
            got = m.check(" after concurrent labels")
            check_per_class(m, got, " after concurrent labels")
            assert mapped(srv.proc.pid, path), "the state is not mapped"
            api.close()
            stop_clean(srv)


# ---- 9. Ids that sort close together -------------------------------------------------------------

@test
def late_review2_id_order(args):
    """Ids that are prefixes of one another, differ in case, in a last byte, in UTF-8 (é, 日本),
    128 bytes with one prefix, given in a 6000-entry request in random order, each (id, class)
    several times far apart: grouped by id exactly (the last label of each wins), the unknown
    ones (prefixes of stored ids) counted and listed; elementwise and per-sample, on a mapped
    state."""
    rng = np.random.default_rng(61)
    base = ["a", "ab", "a b", "A", "a\u00e9", "a\u00e9\u00e9", "\u65e5\u672c", "\u65e5", "x" * 128, "x" * 127 + "y",
            "x" * 127, "a\t", "0", "00", "a-1", "a-10", "a-2"]
    stored = base[:8] + [base[8], base[9]]
    unknown = [i for i in base if i not in stored]
    C = 6
    with state_dir() as tmp:
        path = os.path.join(tmp, "state.db")
        with Server(args.server, "--state", path) as srv:
            api = Api(srv)
            e = Late(api, "e", {"loss": SCE, "dtype": "float64", "num_classes": C}, pointwise=sce)
            p = Late(api, "p", {"loss": "sparse_softmax_cross_entropy", "dtype": "float64", "num_classes": C,
                                "prediction_ttl": "7d"}, kind="sparse")
            for m in (e, p):
                m.predict(stored, f32(rng.normal(0, 2, (len(stored), C))), round(time.time() - 30, 3))
            for rnd in range(3):
                entries = []
                for _ in range(6000):
                    pid = base[int(rng.integers(len(base)))]
                    entries.append((pid, int(rng.integers(C)), float(rng.choice([0, 1, 0.25])),
                                    [None, 0.5, 2.0][int(rng.integers(3))]))
                ans = e.label(entries)
                assert set(ans["unknown_ids"]) <= set(unknown), ans["unknown_ids"]
                e.check(f" (elementwise, round {rnd})")
                pe = [(pid, c, None, w) for pid, c, _, w in entries[:3000]]
                p.label(pe)
                got = p.check(f" (per-sample, round {rnd})", delays=False)
                check_per_class(p, got, f" (per-sample, round {rnd})")
            api.close()
            stop_clean(srv)


# ---- 10. A full file system under the map --------------------------------------------------------

@test
@sqlite_only
def late_review2_full_disk_mapped(args):
    """Root: a mapped state on a small tmpfs that fills up (SQLite extends the file it maps
    with ftruncate at a checkpoint: a page of a full tmpfs read through a map is a SIGBUS, so
    nothing may be read there that was not written). Predictions until 503; labels on every
    stored row are 503 (nothing kept); space freed, the same labels apply (applied as if the
    refused ones never came) and the figures equal numpy's and /v1/loss's; the server up."""
    if os.geteuid() != 0 or not (shutil.which("mount") and shutil.which("umount")):
        print("    skipped: needs root and mount")
        return
    rng = np.random.default_rng(12)
    with state_dir() as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"    skipped: no tmpfs ({r.stderr.strip()[:80]})")
            return
        try:
            path = os.path.join(mnt, "state.db")
            filler = os.path.join(mnt, "filler")
            with Server(args.server, "--state", path) as srv:
                api = Api(srv)
                m = Late(api, "full", {"loss": SCE, "dtype": "float64", "num_classes": 32}, pointwise=sce)
                with open(filler, "wb") as f:
                    f.write(b"\0" * (2 << 20))
                t = round(time.time() - 30, 3)
                for j in range(1000):
                    try:
                        m.predict([f"p{j}-{i}" for i in range(100)], f32(rng.normal(0, 1, (100, 32))), t, None, "b64f64")
                    except AssertionError as e:  # (raised before the model takes the rows)
                        assert "503" in str(e) and "state_unavailable" in str(e), e
                        break
                else:
                    raise AssertionError("the tmpfs never filled")
                assert len(m.ids) >= 1000, len(m.ids)
                fd = os.open(filler, os.O_WRONLY | os.O_APPEND)
                for chunk in (65536, 512, 1):  # to the last byte
                    try:
                        while os.write(fd, b"\0" * chunk) > 0:
                            pass
                    except OSError:
                        pass
                os.close(fd)
                before = comparable(m.check(" when full"))
                for k in range(0, len(m.ids), 1000):
                    expect_error(label(api, "full", {"labels": [{"id": pid, "class": 3, "value": 1}
                                                                for pid in m.ids[k:k + 1000]]}),
                                 503, "state_unavailable")
                diff = json_diff(before, comparable(m.check(" after refused labels")))
                assert not diff, "refused labels changed the figures:\n" + "\n".join(diff[:20])
                os.unlink(filler)
                for k in range(0, len(m.ids), 1000):
                    m.label([(pid, 3, 1, None) for pid in m.ids[k:k + 1000]] +
                            [(pid, 31, 0, 0.5) for pid in m.ids[k:k + 1000:7]])
                m.check(" after the space came back")
                assert srv.proc.poll() is None
                api.close()
                stop_clean(srv)
        finally:
            subprocess.run(["umount", "-l", mnt], capture_output=True)
