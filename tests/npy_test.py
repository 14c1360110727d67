#!/usr/bin/env python3
"""The maskloss command on numpy .npy files: the same numbers as the JSON path, outputs
written as .npy, and a clear error for every broken file.

usage: npy_test.py build/maskloss
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CLI = sys.argv[1]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTE = json.load(open(os.path.join(ROOT, "examples", "masked-mean.json")))
tmp = tempfile.mkdtemp()
passed = failed = 0


def path(name):
    return os.path.join(tmp, name)


def run(*args, stdin=None):
    p = subprocess.run([CLI, *args], capture_output=True, text=True, input=stdin)
    return p.returncode, p.stdout, p.stderr


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


def json_eval(req):
    rc, out, err = run("eval", "-", stdin=json.dumps(req))
    assert rc == 0, (out, err)
    return json.loads(out)


y = np.array(NOTE["labels"], dtype=np.float32)
x = np.array(NOTE["logits"], dtype=np.float64)
m = np.array(NOTE["mask"], dtype=np.bool_)
np.save(path("y.npy"), y)
np.save(path("x.npy"), x)
np.save(path("m.npy"), m)

# The note's example: the same bytes of response as the JSON path.
rc, out, err = run("eval", "--loss", "sigmoid_cross_entropy", "--labels", path("y.npy"),
                   "--logits", path("x.npy"), "--weights", path("m.npy"), "--dtype", "float64")
want = json_eval(dict(NOTE, dtype="float64"))
check("note", rc == 0 and json.loads(out) == want, (rc, out, err))
# The exact value is 0.53753211355555677766... (Python decimal); the library's exp and log1p
# are within 2 ulp, so a few ulp of 1.1e-16.
check("note value", rc == 0 and abs(json.loads(out)["loss"] - 0.53753211355555677766) < 4.5e-16,
      out)

# Every input dtype, and outputs to files.
for t in (np.float32, np.float64, np.uint8, np.bool_, np.int32, np.int64):
    np.save(path("yt.npy"), y.astype(t))
    rc, out, err = run("eval", "--loss", "sigmoid_cross_entropy", "--labels", path("yt.npy"),
                       "--logits", path("x.npy"), "--mask", path("m.npy"), "--dtype", "float64",
                       "--per-element", path("pe.npy"), "--per-sample", path("ps.npy"))
    ok = rc == 0 and json.loads(out)["loss"] == want["loss"] and "per_element" not in json.loads(out)
    full = json_eval(dict(NOTE, dtype="float64", outputs=["per_element", "per_sample"]))
    ok = ok and np.array_equal(np.load(path("pe.npy")), np.array(full["per_element"]))
    ok = ok and np.array_equal(np.load(path("ps.npy")), np.array(full["per_sample"]))
    ok = ok and np.load(path("pe.npy")).dtype == np.float64
    check(f"dtype {np.dtype(t).name}", ok, (rc, out, err))

# Parameters, reductions, class indices (int64), float32 compute.
np.save(path("cls.npy"), np.array([0, 2, 1, 2], dtype=np.int64))
np.save(path("x3.npy"), np.arange(12, dtype=np.float32).reshape(4, 3) / 7)
rc, out, err = run("eval", "--loss", "torch.nn.functional.cross_entropy", "--labels", path("cls.npy"),
                   "--logits", path("x3.npy"), "--param", "label_smoothing=0.1", "--reduction", "sum")
w = json_eval({"loss": "torch.nn.functional.cross_entropy", "labels": [0, 2, 1, 2],
               "logits": (np.arange(12, dtype=np.float32).reshape(4, 3) / 7).tolist(),
               "params": {"label_smoothing": 0.1}, "reduction": "sum"})
check("torch ce int64 labels", rc == 0 and json.loads(out)["loss"] == w["loss"], (rc, out, err, w))

# Big-endian files are converted; Fortran order is refused with the fix.
np.save(path("xbe.npy"), x.astype(">f8"))
rc, out, err = run("eval", "--loss", "sigmoid_cross_entropy", "--labels", path("y.npy"),
                   "--logits", path("xbe.npy"), "--weights", path("m.npy"), "--dtype", "float64")
check("big-endian", rc == 0 and json.loads(out)["loss"] == want["loss"], (rc, out, err))
np.save(path("xf.npy"), np.asfortranarray(x))
rc, out, err = run("eval", "--loss", "sigmoid_cross_entropy", "--labels", path("y.npy"),
                   "--logits", path("xf.npy"))
check("fortran", rc == 1 and "Fortran" in err and "ascontiguousarray" in err, (rc, err))


def broken(name, data, *words):
    with open(path(name), "wb") as f:
        f.write(data)
    rc, out, err = run("eval", "--loss", "sigmoid_cross_entropy", "--labels", path("y.npy"),
                       "--logits", path(name))
    check(f"broken {name}", rc == 1 and name in err and all(w in err for w in words), (rc, out, err))


good = open(path("x.npy"), "rb").read()
broken("magic.npy", b"\x93NUMPX" + good[6:], "magic")
broken("short.npy", good[:8], "too short")
broken("trunc.npy", good[:-8], "truncated", "160", "152")
broken("header.npy", good[:40], "truncated .npy header")
broken("version.npy", good[:6] + b"\x09\x00" + good[8:], "version 9.0")
np.save(path("c.npy"), x.astype(np.complex64))
broken("c2.npy", open(path("c.npy"), "rb").read(), "'<c8' is not supported")
np.save(path("s.npy"), np.array(["a", "b"]))
broken("s2.npy", open(path("s.npy"), "rb").read(), "not supported")
rc, out, err = run("eval", "--loss", "sigmoid_cross_entropy", "--labels", path("y.npy"),
                   "--logits", path("missing.npy"))
check("missing file", rc == 1 and "No such file" in err, err)
# A well-formed file of the wrong shape is a request error (exit 2, the error object).
np.save(path("x4.npy"), x[:, :4])
rc, out, err = run("eval", "--loss", "sigmoid_cross_entropy", "--labels", path("y.npy"),
                   "--logits", path("x4.npy"))
check("shape mismatch", rc == 2 and json.loads(out)["code"] == "shape_mismatch", (rc, out))
rc, out, err = run("eval", "--loss", "sigmoid_cross_entropy", "--param", "oops")
check("bad param", rc == 64 and "NAME=VALUE" in err, err)

print(f"npy: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
