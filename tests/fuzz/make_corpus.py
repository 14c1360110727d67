#!/usr/bin/python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/) and their
dictionaries (tests/fuzz/<target>.dict), from the project's own test data:

  loss   the golden cases of tests/data/golden.json as /v1/loss bodies (as the end-to-end
         tests send them), the rows of tests/data/bad_requests.tsv, b64 tensors of every
         dtype, a few hand-written edge cases
  batch  /v1/batch bodies: golden cases and bad requests in small groups, broken envelopes
  v2     the golden cases as Open Inference Protocol requests with binary inputs (and some
         as JSON), the framing cases of tests/e2e/tests_v2.py (v2_malformed), mixed outputs
  b64    base64 text, valid and broken
  auth   Authorization headers and token files
  npy    .npy files written by numpy (every dtype, both byte orders, format 1.0/2.0/3.0,
         Fortran order) and damaged ones

Run it with Debian's python3 (numpy) from anywhere: /usr/bin/python3 tests/fuzz/make_corpus.py.
It is deterministic and rewrites the corpus directories from scratch.
"""
import base64
import hashlib
import io
import json
import os
import random
import re
import shutil
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import reference as ref  # noqa: E402  (golden_request: the golden case as a request body)

# The example of the project's note (tests/e2e/common.py).
NOTE = {"loss": "sigmoid_cross_entropy", "dtype": "float64",
        "labels": [[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]],
        "logits": [[0.2, 0.2, 0.2, 0, 0.8], [0, 0.5, 0.5, 0.2, 0], [0, 0.5, 0.1, 0.0, 0.9],
                   [0.9, 0.9, 0.7, 0.1, 0.0]],
        "mask": [[1, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 0, 1], [0, 1, 1, 1, 1]]}

MAX_SEED = 16384  # every seed fits the smallest -max_len of make fuzz


def golden_cases():
    with open(os.path.join(ROOT, "tests", "data", "golden.json")) as f:
        return json.load(f)["cases"]


def bad_requests():
    rows = []
    with open(os.path.join(ROOT, "tests", "data", "bad_requests.tsv"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t", 2)
            rows.append(parts[2] if len(parts) == 3 else "")
    return rows


def models():
    """The model list of fuzz_v2.c (its first input byte indexes it)."""
    with open(os.path.join(HERE, "fuzz_v2.c")) as f:
        src = f.read()
    block = src[src.index("/* models-begin */"):src.index("/* models-end */")]
    return re.findall(r'"([^"]+)"', block)


class Corpus:
    def __init__(self, name):
        self.dir = os.path.join(HERE, "corpus", name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.names = set()

    def add(self, name, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        assert len(data) <= MAX_SEED, (name, len(data))
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        assert name not in self.names, name
        self.names.add(name)
        with open(os.path.join(self.dir, name), "wb") as f:
            f.write(data)


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


# ---- /v1/loss --------------------------------------------------------------------------


def b64_tensor(a):
    a = np.asarray(a)
    name = "bool" if a.dtype == np.bool_ else str(a.dtype)
    le = a.astype(a.dtype.newbyteorder("<"))
    return {"shape": list(a.shape), "dtype": name, "b64": base64.b64encode(le.tobytes()).decode()}


def loss_seeds():
    c = Corpus("loss")
    for case in golden_cases():
        body = dumps(ref.golden_request(case))
        if len(body) <= MAX_SEED:
            c.add(f"golden-{case['id']}.json", body)
    for i, body in enumerate(bad_requests()):
        c.add(f"bad-{i:02d}.json", body)
    c.add("note.json", dumps(NOTE))
    c.add("note-outputs.json", dumps(dict(NOTE, outputs=["loss", "per_element", "per_sample",
                                                          "per_class", "weighted_sum",
                                                          "sum_weights", "num_nonzero_weights"])))
    for dt in (np.float32, np.float64, np.uint8, np.int32, np.int64, np.bool_):
        req = dict(NOTE, labels=b64_tensor(np.array(NOTE["labels"], dtype=dt)),
                   logits=b64_tensor(np.array(NOTE["logits"], dtype=np.float64)),
                   mask=b64_tensor(np.array(NOTE["mask"], dtype=np.bool_)))
        c.add(f"b64-{np.dtype(dt).name}.json", dumps(req))
    lab = b64_tensor(np.array(NOTE["labels"], dtype=np.float32))
    for i, t in enumerate([dict(lab, dtype="int32", b64=lab["b64"][:-4]),
                           dict(lab, b64=lab["b64"][:10] + "*" + lab["b64"][11:]),
                           dict(lab, dtype="float16"), dict(lab, data=[0] * 20)]):
        c.add(f"b64-bad-{i}.json", dumps(dict(NOTE, labels=t)))
    edges = [
        # non-finite leaves and allow_non_finite
        {"loss": "mean_squared_error", "labels": ["NaN", "Infinity", "-Infinity", 0],
         "predictions": [1, 2, 3, "nan"], "allow_non_finite": True, "reduction": "NONE"},
        # scalars, empty tensors, declared shapes with flat data
        {"loss": "mean_squared_error", "labels": 1, "predictions": 2},
        {"loss": "mean_squared_error", "labels": {"shape": [2, 0], "data": []},
         "predictions": {"shape": [2, 0], "data": []}},
        {"loss": "mean_squared_error", "labels": {"shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
         "predictions": [[1, 2, 3], [4, 5, 6]], "weights": {"shape": [], "data": 0.5}},
        {"loss": "mean_squared_error", "labels": [[[[[[[[1]]]]]]]],
         "predictions": [[[[[[[[1]]]]]]]]},
        # a ragged tensor whose first row claims many elements (the rest are numbers)
        {"loss": "mean_squared_error", "labels": [[[[0] * 9] * 9] * 9, 1, 2], "predictions": [1]},
        # tensor parameters, booleans and None, unknown keys
        {"loss": "torch.nn.functional.binary_cross_entropy_with_logits",
         "labels": [[1, 0], [0, 1]], "logits": [[0.5, -1], [2, 0]],
         "params": {"pos_weight": {"shape": [2], "data": [1, 3]}}, "extra": 1, "x-trace": "a"},
        {"loss": "keras3.losses.BinaryFocalCrossentropy", "labels": [[1, 0]],
         "logits": [[0.5, -1]], "params": {"from_logits": True, "apply_class_balancing": True,
                                            "gamma": None, "alpha": 0.4}},
        {"loss": "cross_entropy", "labels": [0, 2, -100], "logits": [[1, 2, 3]] * 3,
         "weights": [1, 2, 3], "params": {"ignore_index": -100, "label_smoothing": 0.1},
         "outputs": ["loss", "per_sample"]},
        {"loss": "sparse_softmax_cross_entropy", "labels": b64_tensor(np.array([0, 1, 2], np.int64)),
         "logits": [[1, 2, 3]] * 3, "dtype": "float32", "reduction": "SUM"},
        {"loss": "compute_weighted_loss", "losses": [[1, 2], [3, 4]], "weights": [[1], [0]],
         "reduction": "SUM_OVER_NONZERO_WEIGHTS", "outputs": "num_nonzero_weights"},
        {"loss": "weighted_cross_entropy", "labels": [1, 0], "logits": [3, -3],
         "params": {"pos_weight": "Infinity"}},
    ]
    for i, e in enumerate(edges):
        c.add(f"edge-{i:02d}.json", dumps(e))
    return c


# ---- /v1/batch -------------------------------------------------------------------------


def batch_seeds():
    c = Corpus("batch")
    reqs = [ref.golden_request(case) for case in golden_cases()]
    group = []
    for r in reqs:
        if len(dumps({"requests": group + [r]})) > 6000 or len(group) == 6:
            c.add(f"golden-{len(c.names):02d}.json", dumps({"requests": group}))
            group = []
        if len(dumps({"requests": [r]})) <= 6000:
            group.append(r)
    if group:
        c.add(f"golden-{len(c.names):02d}.json", dumps({"requests": group}))
    bad = bad_requests()
    parsed = []
    for body in bad:
        try:
            value = json.loads(body)
            dumps(value)
        except ValueError:  # malformed here or in Python's eyes (1e999): not in a batch
            continue
        parsed.append(value)
    for i in range(0, len(parsed), 8):
        c.add(f"bad-{i:02d}.json", dumps({"requests": parsed[i:i + 8]}))
    c.add("mixed.json", dumps({"requests": [NOTE, 3, None, "x", [], {}, NOTE]}))
    for i, body in enumerate(['{}', '[]', '{"requests": 3}', '{"requests": {}}',
                              '{"requests": []}', '{"requests": [], "other": 1}', '3', 'null']):
        c.add(f"envelope-{i}.json", body)
    return c


# ---- v2 --------------------------------------------------------------------------------

V2_DTYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
             np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8",
             np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64"}


def frame(model_index, header, tail=b"", header_len="auto", misalign=False):
    """The fuzz_v2 input: model byte, Inference-Header-Content-Length (0xFFFF: none), body."""
    js = header if isinstance(header, bytes) else dumps(header).encode()
    if header_len == "auto":
        header_len = len(js) if tail else None
    hl = 0xFFFF if header_len is None else header_len
    assert 0 <= hl <= 0xFFFF
    return bytes([model_index | (0x80 if misalign else 0)]) + struct.pack("<H", hl) + js + tail


def v2_inputs(case, req, binary):
    """The golden request's tensors as v2 inputs (class indices as INT64, the rest in the
    request's precision), like tests/e2e/tests_v2.py's golden_v2."""
    dtype = np.float64 if req.get("dtype") == "float64" else np.float32
    metas, raws = [], []
    for key in ("labels", "logits", "predictions", "losses", "weights", "mask"):
        if key not in req:
            continue
        value = req[key]
        shape = value["shape"] if isinstance(value, dict) else None
        data = value["data"] if isinstance(value, dict) else value
        arr = np.array([ref.num(x) for x in ref.flat(data)], dtype=np.float64)
        arr = arr.reshape(shape if shape is not None else np.shape(data))
        if key == "labels" and case["loss"] in ("tf.compat.v1.losses.sparse_softmax_cross_entropy",
                                                "torch.nn.functional.cross_entropy") \
                and np.all(np.isfinite(arr)) and np.all(arr == np.floor(arr)) and arr.ndim < 2:
            arr = arr.astype(np.int64)
        else:
            arr = arr.astype(dtype)
        meta = {"name": "WEIGHTS" if key == "mask" else key.upper(), "shape": list(arr.shape),
                "datatype": V2_DTYPES[arr.dtype]}
        if binary:
            b = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            meta["parameters"] = {"binary_data_size": len(b)}
            raws.append(b)
        else:
            meta["data"] = [x.item() if np.isfinite(x) else str(x) for x in arr.flatten()]
        metas.append(meta)
    return metas, b"".join(raws)


def v2_seeds():
    c = Corpus("v2")
    names = models()
    for n, case in enumerate(golden_cases()):
        if case["loss"] not in names:
            continue
        req = ref.golden_request(case)
        params = {k: req[k] for k in ("reduction", "dtype", "allow_non_finite") if k in req}
        for k, v in (req.get("params") or {}).items():
            if v is not None:
                params[k] = v
        outputs = [{"name": o.upper(), "parameters": {"binary_data": True}}
                   for o in req.get("outputs", [])]
        binary = n % 4 != 3  # most as binary, every fourth as JSON data
        try:
            metas, tail = v2_inputs(case, req, binary)
        except (ValueError, TypeError):
            continue
        header = {"id": case["id"][:20], "inputs": metas, "outputs": outputs}
        if params:
            header["parameters"] = params
        body = frame(names.index(case["loss"]), header, tail, misalign=(n % 5 == 4))
        if len(body) <= MAX_SEED:
            c.add(f"golden-{case['id']}", body)

    # The framing cases of tests/e2e/tests_v2.py (v2_malformed), model sigmoid_cross_entropy.
    sce = names.index("sigmoid_cross_entropy")
    lab = np.array(NOTE["labels"], dtype=np.float32).tobytes()
    lg = np.array(NOTE["logits"], dtype=np.float32).tobytes()

    def meta(name, dt, shape, size):
        m = {"name": name, "shape": shape, "parameters": {"binary_data_size": size}}
        if dt is not None:
            m["datatype"] = dt
        return m
    good = [meta("LABELS", "FP32", [4, 5], 80), meta("LOGITS", "FP32", [4, 5], 80)]
    js = dumps({"inputs": good}).encode()
    body = js + lab + lg
    c.add("frame-good", frame(sce, js, lab + lg))
    c.add("frame-good-misaligned", frame(sce, js, lab + lg, misalign=True))
    c.add("frame-header-past-body", frame(sce, js, lab + lg, header_len=len(body) + 1))
    c.add("frame-header-zero", frame(sce, js, lab + lg, header_len=0))
    c.add("frame-header-into-binary", frame(sce, js, lab + lg, header_len=len(js) + 3))
    c.add("frame-no-header", frame(sce, js, lab + lg, header_len=None))
    cases = [
        ("size-vs-shape", [meta("LABELS", "FP32", [4, 5], 79), good[1]], lab[:-1] + lg),
        ("truncated", good, lab + lg[:-8]),
        ("leftover", good, lab + lg + b"xx"),
        ("negative-dim", [meta("LABELS", "FP32", [4, -5], 80), good[1]], lab + lg),
        ("overflow-dims", [meta("LABELS", "FP32", [2 ** 52, 2 ** 12], 80), good[1]], lab + lg),
        ("fp16", [meta("LABELS", "FP16", [4, 5], 80), good[1]], lab + lg),
        ("bytes", [meta("LABELS", "BYTES", [4, 5], 80), good[1]], lab + lg),
        ("no-datatype", [meta("LABELS", None, [4, 5], 80), good[1]], lab + lg),
        ("data-and-binary", [good[0], dict(good[1], data=[0] * 20)], lab + lg),
        ("unknown-input", [good[0], dict(good[1], name="LOGITZ")], lab + lg),
        ("twice", [good[0], good[0]], lab + lab),
        ("rank-9", [good[0], dict(good[1], shape=[1] * 9, parameters={"binary_data_size": 4})],
         lab + lg[:4]),
        ("mask-and-weights", good + [meta("MASK", "BOOL", [4, 5], 20),
                                     meta("WEIGHTS", "UINT8", [4, 5], 20)],
         lab + lg + bytes(20) + bytes(20)),
        ("empty", [meta("LABELS", "FP32", [0, 5], 0), meta("LOGITS", "FP32", [0, 5], 0)], b""),
    ]
    for name, inputs, tail in cases:
        js2 = dumps({"inputs": inputs}).encode()
        c.add(f"frame-{name}", frame(sce, js2, tail, header_len=len(js2)))
    c.add("json-inputs-3", frame(sce, b'{"inputs": 3}'))
    c.add("json-outputs-losses", frame(sce, b'{"inputs": [], "outputs": [{"name": "LOSSES"}]}'))
    c.add("json-not-object", frame(sce, b'[1]'))
    c.add("json-malformed", frame(sce, b'{"inputs": ['))
    # The note's example the ways tritonclient sends it (v2_tritonclient_wire).
    y = np.array(NOTE["labels"], np.float32)
    x = np.array(NOTE["logits"], np.float64)
    m = np.array(NOTE["mask"], np.bool_)
    wire = [
        ("triton-binary-output", {"dtype": "float64", "binary_data_output": True}, None),
        ("triton-mixed-outputs", {"dtype": "float64"},
         [("PER_ELEMENT", True), ("NUM_NONZERO_WEIGHTS", False), ("LOSS", True)]),
        ("triton-all-outputs", {"reduction": "NONE", "sequence_id": 3, "triton_x": 1},
         [(o, i % 2 == 0) for i, o in enumerate(["LOSS", "PER_ELEMENT", "PER_SAMPLE", "PER_CLASS",
                                                 "WEIGHTED_SUM", "SUM_WEIGHTS",
                                                 "NUM_NONZERO_WEIGHTS"])]),
    ]
    for name, params, outs in wire:
        header = {"id": "r1", "parameters": params, "inputs": []}
        raws = []
        for nm, arr in (("LABELS", y), ("LOGITS", x), ("MASK", m)):
            b = arr.tobytes()
            header["inputs"].append({"name": nm, "shape": list(arr.shape),
                                     "datatype": V2_DTYPES[arr.dtype],
                                     "parameters": {"binary_data_size": len(b)}})
            raws.append(b)
        if outs:
            header["outputs"] = [{"name": o, "parameters": {"binary_data": b}} for o, b in outs]
        c.add(name, frame(sce, header, b"".join(raws)))
    for dt in (np.float32, np.float64, np.uint8, np.int32, np.int64, np.bool_):
        header = {"inputs": [], "parameters": {"dtype": "float64"}}
        raws = []
        for nm, arr in (("LABELS", y.astype(dt)), ("LOGITS", x), ("WEIGHTS", m.astype(dt))):
            b = arr.tobytes()
            header["inputs"].append({"name": nm, "shape": list(arr.shape),
                                     "datatype": V2_DTYPES[arr.dtype],
                                     "parameters": {"binary_data_size": len(b)}})
            raws.append(b)
        c.add(f"dtype-{np.dtype(dt).name}", frame(sce, header, b"".join(raws)))
    return c


# ---- base64 ----------------------------------------------------------------------------


def b64_seeds():
    c = Corpus("b64")
    rng = random.Random(11)
    for n in range(0, 13):
        raw = bytes(rng.randrange(256) for _ in range(n))
        text = base64.b64encode(raw)
        c.add(f"valid-{n:02d}", text)
        if text.endswith(b"="):
            c.add(f"unpadded-{n:02d}", text.rstrip(b"="))
    for name, text in [("empty", b""), ("note-labels", b64_tensor(np.array(NOTE["labels"],
                                                                            np.float32))["b64"]),
                       ("bad-char", b"AAAA*AAA"), ("lone-sextet", b"AAAAA"),
                       ("three-pad", b"AA==="), ("pad-middle", b"AA==AAAA"), ("pad-only", b"=="),
                       ("pad-short", b"AAA=="), ("url-safe", b"-_-_"), ("space", b"AAAA AAAA"),
                       ("newline", b"AAAA\nAAAA"), ("nonzero-tail-bits", b"AB=="),
                       ("high-bytes", bytes([0xff, 0x80, 0x41, 0x41]))]:
        c.add(name, text)
    return c


def auth_seeds():
    """An Authorization header value, a newline, a token file (tests/fuzz/fuzz_auth.c)."""
    c = Corpus("auth")

    def h(t):
        return hashlib.sha256(t.encode()).hexdigest()
    for name, text in [
            ("allowed", f"Bearer tok-a\n{h('tok-a')} a evaluate,monitor:read\n{h('tok-b')} b admin\n"),
            ("admin", f"bearer   tok-b  \n# tokens\n\n{h('tok-a')} a metrics\n{h('tok-b')} b admin\n"),
            ("unknown", f"Bearer nope\n{h('tok-a')} a evaluate\n"),
            ("basic", f"Basic dG9rLWE=\n{h('tok-a')} a evaluate\n"),
            ("bad-lines", f"Bearer x\nzz a evaluate\n{h('x')} bad/name evaluate\n"
                          f"{h('x')} n evaluate,,metrics\n{h('x')} n write\n{h('x')} n evaluate extra\n"),
            ("empty", "\n"),
            ("same-hash", f"Bearer d\n{h('d')} one evaluate\n{h('d')} two metrics\n")]:
        c.add(name, text.encode())
    return c


# ---- .npy ------------------------------------------------------------------------------


def npy_bytes(arr, version=None):
    f = io.BytesIO()
    if version is None:
        np.save(f, arr)
    else:
        np.lib.format.write_array(f, arr, version=version)
    return f.getvalue()


def npy_seeds():
    c = Corpus("npy")
    x = np.arange(6, dtype=np.float64).reshape(2, 3) / 4
    for dt in (np.float32, np.float64, np.uint8, np.int32, np.int64, np.bool_):
        c.add(f"{np.dtype(dt).name}.npy", npy_bytes(x.astype(dt)))
    c.add("float64-be.npy", npy_bytes(x.astype(">f8")))
    c.add("int32-be.npy", npy_bytes(x.astype(">i4")))
    c.add("scalar.npy", npy_bytes(np.float32(2.5)))
    c.add("empty.npy", npy_bytes(np.zeros((0, 3), np.float32)))
    c.add("rank1.npy", npy_bytes(np.ones(5, np.float32)))
    c.add("rank8.npy", npy_bytes(np.ones((1, 2, 1, 2, 1, 2, 1, 2), np.uint8)))
    c.add("fortran.npy", npy_bytes(np.asfortranarray(x)))
    c.add("fortran-vector.npy", npy_bytes(np.asfortranarray(np.ones((1, 4)))))
    c.add("v2.npy", npy_bytes(x, (2, 0)))
    c.add("v3.npy", npy_bytes(x, (3, 0)))
    good = npy_bytes(x)
    c.add("truncated-data.npy", good[:-1])
    c.add("truncated-header.npy", good[:40])
    c.add("bad-magic.npy", b"\x93NUMPX" + good[6:])
    c.add("version-4.npy", good[:6] + b"\x04\x00" + good[8:])
    c.add("complex.npy", npy_bytes(np.ones(2, np.complex64)))
    c.add("float16.npy", npy_bytes(np.ones(2, np.float16)))

    def handmade(header, data=b"", version=1):
        h = header.encode("latin-1")
        pre = b"\x93NUMPY" + bytes([version, 0])
        pre += struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
        return pre + h + data
    c.add("py2-long.npy", handmade("{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 1L), }\n",
                                   bytes(16)))
    c.add("dquotes.npy", handmade('{"descr": "<f4", "fortran_order": False, "shape": (2,), }\n',
                                  bytes(8)))
    c.add("shape-at-end.npy", handmade("{'descr': '<f8', 'fortran_order': False, 'shape': (12"))
    c.add("order-at-end.npy", handmade("{'descr': '<f8', 'shape': (), 'fortran_order': Tr"))
    c.add("empty-descr.npy", handmade("{'descr': '', 'fortran_order': False, 'shape': (), }"))
    c.add("huge-shape.npy", handmade("{'descr': '<f8', 'fortran_order': False, "
                                     "'shape': (99999999999999999999, 3), }", bytes(8)))
    c.add("overflow-shape.npy", handmade("{'descr': '<f8', 'fortran_order': False, "
                                         "'shape': (4294967296, 4294967296), }", bytes(8)))
    c.add("zero-dim-huge.npy", handmade("{'descr': '<f8', 'fortran_order': False, "
                                        "'shape': (0, 9223372036854775807), }"))
    return c


# ---- Dictionaries ----------------------------------------------------------------------


def tok(t):
    return t.encode("latin-1") if isinstance(t, str) else t


def write_dict(name, tokens):
    def esc(t):
        b = tok(t)
        return "".join(chr(x) if 0x20 <= x < 0x7f and x not in (0x22, 0x5c) else f"\\x{x:02x}"
                       for x in b)
    with open(os.path.join(HERE, f"{name}.dict"), "w") as f:
        f.write(f"# {name}: tokens for libFuzzer (-dict), written by make_corpus.py\n")
        for t in sorted(set(map(tok, tokens))):
            f.write(f'"{esc(t)}"\n')


REDUCTIONS = ["NONE", "ELEMENTWISE", "SUM", "MEAN", "SUM_OVER_BATCH_SIZE",
              "SUM_BY_NONZERO_WEIGHTS", "SUM_OVER_NONZERO_WEIGHTS", "sum_over_batch_size", "sum",
              "none", "mean", "mean_with_sample_weight", "auto"]
PARAMS = ["label_smoothing", "pos_weight", "gamma", "alpha", "delta", "epsilon", "from_logits",
          "ignore_index", "axis", "apply_class_balancing", "gamma_neg", "gamma_pos", "clip", "eps",
          "disable_torch_grad_focal_loss"]
JSON_TOKENS = ["true", "false", "null", "[", "]", "{", "}", ",", ":", "-0.0", "1e308", "5e-324",
               "\"NaN\"", "\"Infinity\"", "\"-Infinity\"", "\\u0000", "\\ud800", "1.5"]


def dicts():
    v1_keys = ["loss", "labels", "logits", "predictions", "losses", "weights", "mask", "params",
               "reduction", "dtype", "outputs", "allow_non_finite", "shape", "data", "b64",
               "requests"]
    values = ["float32", "float64", "uint8", "bool", "int32", "int64", "loss", "per_element",
              "per_sample", "per_class", "weighted_sum", "sum_weights", "num_nonzero_weights"]
    quoted = [f'"{t}"' for t in v1_keys + values + REDUCTIONS + PARAMS + models()]
    write_dict("loss", quoted + JSON_TOKENS)
    write_dict("batch", quoted + JSON_TOKENS + ['{"requests":['])
    v2_keys = ["id", "inputs", "outputs", "name", "datatype", "shape", "data", "parameters",
               "binary_data_size", "binary_data", "binary_data_output", "classification",
               "LABELS", "LOGITS", "PREDICTIONS", "LOSSES", "WEIGHTS", "MASK", "FP32", "FP64",
               "BOOL", "UINT8", "INT32", "INT64", "FP16", "LOSS", "PER_ELEMENT", "PER_SAMPLE",
               "PER_CLASS", "WEIGHTED_SUM", "SUM_WEIGHTS", "NUM_NONZERO_WEIGHTS", "reduction",
               "dtype", "allow_non_finite", "sequence_id", "triton_"]
    write_dict("v2", [f'"{t}"' for t in v2_keys + REDUCTIONS + PARAMS] + JSON_TOKENS
               + [b"\x00\x00\x80\x3f", b"\x00\x00\xc0\x7f", b"\x00\x00\x00\x00\x00\x00\xf0\x7f"])
    write_dict("npy", [b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", "'descr'", "'fortran_order'",
                       "'shape'", "<f4", "<f8", ">f8", ">i4", "|u1", "|b1", "<i4", "<i8", "=f4",
                       "True", "False", "()", "(1,)", "L", ": ", ", ", "}"])


def main():
    counts = {}
    for fn in (loss_seeds, batch_seeds, v2_seeds, b64_seeds, auth_seeds, npy_seeds):
        c = fn()
        counts[os.path.basename(c.dir)] = len(c.names)
    dicts()
    print("seeds: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
