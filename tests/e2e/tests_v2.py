"""End-to-end tests of the Open Inference Protocol (/v2) with binary tensors, b64 tensors on
/v1, and the Python client. The v2 requests are built here the way tritonclient.http builds
them (clean room: its wire behaviour, not its code), from Debian's python3 + numpy."""
import base64
import http.client
import json
import os
import random
import sys

import numpy as np

from common import JSON, NOTE, ROOT, expect_error, ref, stop_clean, test
from server import Server, exchange, read_checked

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

NP_TO_V2 = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.bool_): "BOOL",
            np.dtype(np.uint8): "UINT8", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64"}
V2_TO_NP = {v: k for k, v in NP_TO_V2.items()}


class TritonLikeClient:
    """What tritonclient.http's InferenceServerClient.infer puts on the wire and how it reads
    the answer (as tritonclient.http sends it): no Content-Type; the
    Inference-Header-Content-Length header only when binary data is present;
    "binary_data_output": true when no outputs are named; binary outputs sliced in the JSON
    order of the outputs."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def infer(self, model, inputs, outputs=None, parameters=None, request_id="", binary_inputs=True):
        header = {}
        if request_id:
            header["id"] = request_id
        params = dict(parameters or {})
        if not outputs:
            params["binary_data_output"] = True
        if params:
            header["parameters"] = params
        header["inputs"] = []
        raws = []
        for name, arr in inputs:
            meta = {"name": name, "shape": list(arr.shape), "datatype": NP_TO_V2[arr.dtype]}
            if binary_inputs:
                b = arr.tobytes()
                meta["parameters"] = {"binary_data_size": len(b)}
                raws.append(b)
            else:
                meta["data"] = [x.item() for x in arr.flatten()]
            header["inputs"].append(meta)
        if outputs:
            header["outputs"] = [{"name": n, "parameters": {"binary_data": b}} for n, b in outputs]
        js = json.dumps(header, separators=(",", ":")).encode()
        body = js + b"".join(raws)
        self.conn.putrequest("POST", f"/v2/models/{model}/infer", skip_accept_encoding=True)
        self.conn.putheader("User-Agent", "python/gevent-http-client-2.0.8")
        self.conn.putheader("Content-Length", str(len(body)))
        if raws:
            self.conn.putheader("Inference-Header-Content-Length", str(len(js)))
        self.conn.endheaders(body)
        sent = {"Content-Length": str(len(body))}
        if raws:
            sent["Inference-Header-Content-Length"] = str(len(js))
        status, h, _, data = read_checked(self.conn.getresponse(), "POST", f"/v2/models/{model}/infer", sent, body)
        if status != 200:
            return status, json.loads(data)["error"], None  # what tritonclient raises with
        ihcl = h.get("inference-header-content-length")
        if ihcl is None:
            doc, buf = json.loads(data), b""
        else:
            doc, buf = json.loads(data[:int(ihcl)]), data[int(ihcl):]
        out, offset = {}, 0
        for o in doc["outputs"]:
            size = (o.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                arr = np.frombuffer(buf[offset:offset + size], dtype=V2_TO_NP[o["datatype"]])
                offset += size
            else:
                arr = np.array(o["data"], dtype=V2_TO_NP[o["datatype"]])
            out[o["name"]] = arr.reshape(o["shape"])
        assert offset == len(buf), "binary data left over in the response"
        return status, doc, out

    def close(self):
        self.conn.close()


def note_inputs(dtype=np.float64):
    return [("LABELS", np.array(NOTE["labels"], dtype=np.float32)),
            ("LOGITS", np.array(NOTE["logits"], dtype=dtype)),
            ("MASK", np.array(NOTE["mask"], dtype=np.bool_))]


@test
def v2_endpoints(args):
    with Server(args.server) as srv:
        st, h, b = srv.request("GET", "/v2")
        assert st == 200 and b["name"] == "maskloss" and "binary_tensor_data" in b["extensions"], b
        assert srv.request("GET", "/v2/health/live")[:3:2] == (200, {"live": True})
        assert srv.request("GET", "/v2/health/ready")[:3:2] == (200, {"ready": True})
        for path in ("/v2/models/sigmoid_cross_entropy", "/v2/models/sigmoid_cross_entropy/versions/1"):
            st, h, b = srv.request("GET", path)
            assert st == 200 and b["name"] == "sigmoid_cross_entropy" and b["versions"] == ["1"], b
            assert [i["name"] for i in b["inputs"]] == ["LABELS", "LOGITS", "WEIGHTS"], b
            assert "PER_ELEMENT" in [o["name"] for o in b["outputs"]]
        st, h, b = srv.request("GET", "/v2/models/tf.compat.v1.losses.log_loss")
        assert [i["name"] for i in b["inputs"]] == ["LABELS", "PREDICTIONS", "WEIGHTS"], b
        st, h, b = srv.request("GET", "/v2/models/sigmoid_cross_entropy/ready")
        assert st == 200 and b == {"name": "sigmoid_cross_entropy", "ready": True}
        expect_error(srv.request("GET", "/v2/models/nope"), 404, "unknown_loss", "model")
        expect_error(srv.request("POST", "/v2/models/nope/infer", "{}"), 404, "unknown_loss", "model")
        expect_error(srv.request("GET", "/v2/models/sigmoid_cross_entropy/versions/2/ready"), 404,
                     "unknown_version", "version")
        st, h, b = srv.request("GET", "/v2/models/sigmoid_cross_entropy/infer")
        assert st == 405 and h["allow"] == "POST", (st, h)
        expect_error(srv.request("POST", "/v2/models/sigmoid_cross_entropy/infer", "{}",
                                 {"Content-Encoding": "br"}), 415, "unsupported_media_type",
                     "Content-Encoding")
        # Content-Type is not read on /v2 (Triton parity): any type, or none, is accepted.
        for ct in ("text/csv", "application/octet-stream", "application/x-www-form-urlencoded"):
            st, h, b = srv.request("POST", "/v2/models/sigmoid_cross_entropy/infer",
                                   {"inputs": [{"name": "LABELS", "datatype": "FP32", "shape": [1], "data": [1]},
                                               {"name": "LOGITS", "datatype": "FP32", "shape": [1], "data": [0]}]},
                                   {"Content-Type": ct})
            assert st == 200 and b["outputs"][0]["data"] == [0.6931471824645996], (ct, st, b)
        stop_clean(srv)


@test
def v2_tritonclient_wire(args):
    """The note's example the ways tritonclient sends it; every answer equals /v1's."""
    with Server(args.server) as srv:
        v1 = srv.request("POST", "/v1/loss", dict(NOTE, outputs=["loss", "per_element", "num_nonzero_weights"]),
                         JSON)[2]
        c = TritonLikeClient(srv.port)
        params = {"dtype": "float64"}
        # No outputs named: binary_data_output, LOSS comes back binary.
        st, doc, out = c.infer("sigmoid_cross_entropy", note_inputs(), parameters=params, request_id="r1")
        assert st == 200 and doc["id"] == "r1" and doc["model_name"] == "sigmoid_cross_entropy", doc
        assert doc["outputs"][0]["parameters"]["binary_data_size"] == 8, doc
        assert out["LOSS"].shape == () and float(out["LOSS"]) == v1["loss"] == 0.5375321135555567
        # Named outputs, mixed binary and JSON, in the order asked.
        st, doc, out = c.infer("sigmoid_cross_entropy", note_inputs(), parameters=params,
                               outputs=[("PER_ELEMENT", True), ("NUM_NONZERO_WEIGHTS", False), ("LOSS", True)])
        assert [o["name"] for o in doc["outputs"]] == ["PER_ELEMENT", "NUM_NONZERO_WEIGHTS", "LOSS"]
        assert "data" in doc["outputs"][1] and int(out["NUM_NONZERO_WEIGHTS"]) == 9
        assert np.array_equal(out["PER_ELEMENT"], np.array(v1["per_element"])), out["PER_ELEMENT"]
        assert float(out["LOSS"]) == v1["loss"]
        # JSON inputs (binary_data=False): no Inference-Header-Content-Length at all.
        st, doc, out = c.infer("sigmoid_cross_entropy", note_inputs(), parameters=params,
                               outputs=[("LOSS", False)], binary_inputs=False)
        assert st == 200 and doc["outputs"][0]["data"] == [v1["loss"]], doc
        # Every input datatype the server takes, for the labels and the mask.
        for lab_t in (np.float32, np.float64, np.uint8, np.int32, np.int64, np.bool_):
            for mask_t in (np.float32, np.uint8, np.bool_, np.int64):
                ins = [("LABELS", np.array(NOTE["labels"], dtype=lab_t)),
                       ("LOGITS", np.array(NOTE["logits"], dtype=np.float64)),
                       ("WEIGHTS", np.array(NOTE["mask"], dtype=mask_t))]
                st, doc, out = c.infer("sigmoid_cross_entropy", ins, parameters=params)
                assert st == 200 and float(out["LOSS"]) == v1["loss"], (lab_t, mask_t, doc)
        # Errors come as {"error": ...} (all tritonclient reads).
        st, msg, _ = c.infer("sigmoid_cross_entropy", note_inputs()[:2] + [("MASK", np.ones((4, 4), np.bool_))],
                             parameters=params)
        assert st == 400 and "weights" in msg, (st, msg)
        c.close()
        stop_clean(srv)


def golden_v2(case):
    """A golden case as a v2 request (inputs as numpy arrays, scalar parameters); None when it
    needs a tensor-valued parameter, which v2 parameters cannot carry."""
    req = ref.golden_request(case)
    dtype = np.float64 if req.get("dtype") == "float64" else np.float32
    inputs, params, outputs = [], {}, []
    for key, value in req.items():
        if key in ("labels", "logits", "predictions", "losses", "weights", "mask"):
            shape = value["shape"] if isinstance(value, dict) else None
            data = value["data"] if isinstance(value, dict) else value
            arr = np.array(data, dtype=np.float64)
            if shape is not None:
                arr = arr.reshape(shape)
            name = "WEIGHTS" if key == "mask" else key.upper()
            # Class indices travel as INT64, everything else in the request's precision.
            if key == "labels" and case["loss"] in ("tf.compat.v1.losses.sparse_softmax_cross_entropy",
                                                     "torch.nn.functional.cross_entropy") \
                    and np.all(np.isfinite(arr)) and np.all(arr == np.floor(arr)) and arr.ndim < 2:
                arr = arr.astype(np.int64)
            else:
                arr = arr.astype(dtype)
            inputs.append((name, arr))
        elif key == "params":
            for k, v in value.items():
                if isinstance(v, (list, dict)):
                    return None
                if v is not None:
                    params[k] = v
        elif key in ("reduction", "dtype", "allow_non_finite"):
            params[key] = value
        elif key == "outputs":
            outputs = [(o.upper(), True) for o in value]
        elif key != "loss":
            return None
    return inputs, params, outputs


@test
def v2_every_loss(args):
    """Every canonical loss over binary v2 gives exactly /v1's numbers (and the golden ones)."""
    cases = [c for c in json.load(open(os.path.join(ROOT, "tests/data/golden.json")))["cases"]
             if not c.get("expected_error")]
    with Server(args.server) as srv:
        catalogue = srv.request("GET", "/v1/losses")[2]["losses"]
        canonical = {l["name"] for l in catalogue if not l.get("alias_of")}
        conn = srv.connect()
        c = TritonLikeClient(srv.port)
        covered, failures, n = set(), [], 0
        for case in cases:
            conv = golden_v2(case)
            if conv is None:
                # tf.nn.weighted_cross_entropy's pos_weight is a tensor in its golden case: send
                # a scalar one instead and compare with /v1 alone.
                case = dict(case, params={"pos_weight": 3.0})
                conv = golden_v2(case)
                golden = False
            else:
                golden = True
            inputs, params, outputs = conv
            st1, _, v1 = exchange(conn, "POST", "/v1/loss", ref.golden_request(case), JSON)
            st2, doc, out = c.infer(case["loss"], inputs, outputs=outputs, parameters=params)
            n += 1
            if st1 != 200 or st2 != 200:
                failures.append(f"{case['id']}: /v1 {st1}, /v2 {st2}: {doc}")
                continue
            got = out["LOSS"]
            want = np.array(v1["loss"], dtype=np.float64)
            if not np.array_equal(got, want, equal_nan=True):
                failures.append(f"{case['id']}: v2 LOSS {got} != /v1 {want}")
            if "PER_ELEMENT" in out and not np.array_equal(out["PER_ELEMENT"], np.array(v1["per_element"], dtype=np.float64), equal_nan=True):
                failures.append(f"{case['id']}: v2 PER_ELEMENT differs from /v1")
            if golden:
                body = {"loss": got.tolist()}
                if "PER_ELEMENT" in out:
                    body["per_element"] = out["PER_ELEMENT"].tolist()
                why = ref.golden_check(case, True, body)
                if why:
                    failures.append(f"{case['id']}: {why}")
            covered.add(case["loss"])
        c.close()
        conn.close()
        assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:15])
        assert canonical <= covered, f"losses never tried over v2: {sorted(canonical - covered)}"
        print(f"    {n} cases over {len(covered)} losses: binary v2 == /v1 exactly")
        stop_clean(srv)


def v2_post(srv, body, ihcl=None, model="sigmoid_cross_entropy"):
    headers = {} if ihcl is None else {"Inference-Header-Content-Length": str(ihcl)}
    return srv.request("POST", f"/v2/models/{model}/infer", body, headers)


def framing(inputs_meta, tail):
    js = json.dumps({"inputs": inputs_meta}).encode()
    return js, js + tail


@test
def v2_malformed(args):
    """Broken framing: each a clear 400 (never a crash or an over-read: this suite also runs
    under AddressSanitizer)."""
    with Server(args.server, "--max-elements", "1000000") as srv:
        lab = np.array(NOTE["labels"], dtype=np.float32).tobytes()
        lg = np.array(NOTE["logits"], dtype=np.float32).tobytes()
        meta = lambda name, dt, shape, size: {"name": name, "datatype": dt, "shape": shape,  # noqa: E731
                                              "parameters": {"binary_data_size": size}}
        good = [meta("LABELS", "FP32", [4, 5], 80), meta("LOGITS", "FP32", [4, 5], 80)]
        js, body = framing(good, lab + lg)
        st, h, b = v2_post(srv, body, len(js))
        assert st == 200 and abs(b["outputs"][0]["data"][0] - ref.tf_masked_mean(
            NOTE["labels"], NOTE["logits"], [[1] * 5] * 4)) < 1e-6, (st, b)

        def bad(body, ihcl, code, *words):
            b = expect_error(v2_post(srv, body, ihcl), 400, code)
            for w in words:
                assert w in b["error"], f"{w!r} not in {b['error']!r}"
            return b
        bad(body, len(body) + 1, "invalid_binary", str(len(body) + 1), str(len(body)))  # header past the body
        bad(body, 0, "invalid_binary", "raw binary")
        bad(body, len(js) + 3, "malformed_json")  # the header length cuts into the binary data
        js2, body2 = framing([meta("LABELS", "FP32", [4, 5], 79), good[1]], lab[:-1] + lg)
        # bytes that do not fill shape x datatype: the tensor's fault, as a short b64 on /v1
        bad(body2, len(js2), "invalid_tensor", "79", "80", "FP32", "[4, 5]")
        js2, body2 = framing(good, lab + lg[:-8])
        bad(body2, len(js2), "invalid_binary", "truncated")  # truncated body
        js2, body2 = framing(good, lab + lg + b"xx")
        bad(body2, len(js2), "invalid_binary", "162", "160")  # leftover bytes
        bad(body, None, "invalid_binary", "Inference-Header-Content-Length")  # binary, no header
        js2, body2 = framing([meta("LABELS", "FP32", [4, -5], 80), good[1]], lab + lg)
        bad(body2, len(js2), "invalid_tensor", "non-negative")
        js2, body2 = framing([meta("LABELS", "FP32", [2 ** 52, 2 ** 12], 80), good[1]], lab + lg)
        b = expect_error(v2_post(srv, body2, len(js2)), 413, "too_large")  # as /v1 says
        assert "2^40" in b["error"], b
        for dt in ("FP16", "BYTES", "XYZ", None):
            m = dict(good[0], datatype=dt) if dt else {k: v for k, v in good[0].items() if k != "datatype"}
            js2, body2 = framing([m, good[1]], lab + lg)
            bad(body2, len(js2), "invalid_tensor", "datatype")
        js2, body2 = framing([good[0], dict(good[1], data=[0] * 20)], lab + lg)
        bad(body2, len(js2), "invalid_tensor", "both")  # as /v1's data and b64 together
        js2, body2 = framing([good[0], dict(good[1], name="LOGITZ")], lab + lg)
        bad(body2, len(js2), "invalid_request", "LOGITZ")
        js2, body2 = framing([good[0], good[0]], lab + lab)
        bad(body2, len(js2), "invalid_request", "twice")
        js2, body2 = framing([good[0], dict(good[1], shape=[1] * 9, parameters={"binary_data_size": 4})],
                             lab + lg[:4])
        bad(body2, len(js2), "invalid_tensor", "rank")
        expect_error(v2_post(srv, b'{"inputs": 3}'), 400, "invalid_request", "inputs")
        expect_error(v2_post(srv, b'{"inputs": [], "outputs": [{"name": "LOSSES"}]}'), 400,
                     "unsupported_output")
        st, h, b = srv.request("POST", "/v2/models/sigmoid_cross_entropy/infer", body,
                               {"Inference-Header-Content-Length": "12abc"})
        expect_error((st, h, b), 400, "invalid_binary", "Inference-Header-Content-Length")
        big = [meta("LABELS", "FP32", [2000, 1000], 8000000), meta("LOGITS", "FP32", [4, 5], 80)]
        js2, body2 = framing(big, b"\0" * 8000000 + lg)
        expect_error(v2_post(srv, body2, len(js2)), 413, "too_large")
        # Random damage to a valid request: any 4xx, never a crash, never a 5xx.
        rng = random.Random(5)
        statuses = set()
        for i in range(300):
            d = bytearray(body)
            for _ in range(rng.randint(1, 4)):
                d[rng.randrange(len(d))] = rng.randrange(256)
            cut = rng.choice([len(d), rng.randrange(len(d) + 1)])
            st, h, b = v2_post(srv, bytes(d[:cut]), rng.choice([len(js), rng.randrange(len(d) + 2)]))
            assert st in (200, 400, 404, 413), (i, st, b)
            assert st == 200 or "error" in b, b
            statuses.add(st)
        assert srv.request("GET", "/healthz")[0] == 200
        print(f"    framing errors answered 400 with the numbers; 300 damaged requests gave {sorted(statuses)}")
        stop_clean(srv)


def v2_json(inputs, **extra):
    """A /v2 request of JSON inputs: (name, datatype, shape, data) each."""
    return dict(extra, inputs=[{"name": n, "datatype": dt, "shape": sh, "data": d} for n, dt, sh, d in inputs])


@test
def same_code_v1_v2(args):
    """The same mistake gets the same code on /v1 and /v2 (tests/test_proto.c has the full
    table); only the HTTP status differs: 422 on /v1, 400 on /v2 as Triton, 404 for an unknown
    model, 413 for too_large either way."""
    y, x = ("LABELS", "FP32", [2], [1, 0]), ("LOGITS", "FP32", [2], [0.5, -1])
    v1 = {"loss": "sigmoid_cross_entropy", "labels": [1, 0], "logits": [0.5, -1]}
    b64 = lambda dtype, text: {"shape": [2], "dtype": dtype, "b64": text}  # noqa: E731
    cases = [  # (code, /v1 request, /v2 model, /v2 request)
        ("unknown_loss", dict(v1, loss="nope"), "nope", v2_json([y, x])),
        ("invalid_request", dict(v1, dtype="float16"), None, v2_json([y, x], parameters={"dtype": "float16"})),
        ("invalid_tensor", dict(v1, labels=b64("float16", "AAAA")), None,
         v2_json([("LABELS", "FP16", [2], [1, 0]), x])),
        ("shape_mismatch", dict(v1, labels=[1, 0, 1]), None, v2_json([("LABELS", "FP32", [3], [1, 0, 1]), x])),
        ("non_finite_input", dict(v1, logits=[0.5, "NaN"]), None,
         v2_json([y, ("LOGITS", "FP32", [2], [0.5, "NaN"])])),
        ("too_large", dict(v1, labels={"shape": [2 ** 52, 2 ** 12], "dtype": "float32", "b64": ""}), None,
         v2_json([("LABELS", "FP32", [2 ** 52, 2 ** 12], []), x])),
        ("invalid_tensor", dict(v1, labels={"shape": [2, 2], "data": [1, 0, 1]}), None,
         v2_json([("LABELS", "FP32", [2, 2], [1, 0, 1]), x])),
        ("invalid_tensor", dict(v1, labels=b64("float32", "AAC*PwAAAAA=")), None,
         v2_json([("LABELS", "FP32", [2], "AACAPwAAAAA="), x])),
        ("unknown_parameter", dict(v1, params={"nope": 1}), None, v2_json([y, x], parameters={"nope": 1})),
        ("bad_parameter", {"loss": "huber_loss", "labels": [1, 0], "predictions": [0.5, 1], "params": {"delta": "big"}},
         "huber_loss", v2_json([y, ("PREDICTIONS", "FP32", [2], [0.5, 1])], parameters={"delta": "big"})),
        ("unknown_reduction", dict(v1, reduction="average"), None, v2_json([y, x], parameters={"reduction": "average"})),
        ("invalid_request", dict(v1, allow_non_finite=1), None, v2_json([y, x], parameters={"allow_non_finite": 1})),
        ("unsupported_output", dict(v1, outputs=["gradient"]), None, v2_json([y, x], outputs=[{"name": "GRADIENT"}])),
        ("invalid_request", {"loss": "sigmoid_cross_entropy", "labels": [1, 0]}, None, v2_json([y])),
        ("broadcast_error", dict(v1, weights=[1, 1, 1]), None, v2_json([y, x, ("WEIGHTS", "FP32", [3], [1, 1, 1])])),
        ("malformed_json", b'{"loss": ', None, b'{"inputs": ['),
    ]
    http_v1 = {"malformed_json": 400, "too_large": 413}
    http_v2 = {"unknown_loss": 404, "too_large": 413}
    with Server(args.server) as srv:
        for code, r1, model, r2 in cases:
            b1 = expect_error(srv.request("POST", "/v1/loss", r1, JSON), http_v1.get(code, 422), code)
            model = model or (r1.get("loss") if isinstance(r1, dict) else "sigmoid_cross_entropy")
            b2 = expect_error(v2_post(srv, r2 if isinstance(r2, bytes) else json.dumps(r2).encode(), model=model),
                              http_v2.get(code, 400), code)
            assert b1["code"] == b2["code"], (r1, b1, r2, b2)
        print(f"    {len(cases)} mistakes: the same code on /v1 and /v2")
        stop_clean(srv)


@test
def b64_tensors(args):
    """/v1 tensors as {"shape", "dtype", "b64"} equal the JSON numbers, for every dtype."""
    with Server(args.server) as srv:
        want = srv.request("POST", "/v1/loss", NOTE, JSON)[2]["loss"]

        def t(a):
            return {"shape": list(a.shape), "dtype": str(a.dtype) if a.dtype != np.bool_ else "bool",
                    "b64": base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode()}
        for lab_t in (np.float32, np.float64, np.uint8, np.int32, np.int64, np.bool_):
            req = dict(NOTE, labels=t(np.array(NOTE["labels"], dtype=lab_t)),
                       logits=t(np.array(NOTE["logits"], dtype=np.float64)),
                       mask=t(np.array(NOTE["mask"], dtype=np.bool_)))
            st, h, b = srv.request("POST", "/v1/loss", req, JSON)
            assert st == 200 and b["loss"] == want, (lab_t, st, b)
        lab = t(np.array(NOTE["labels"], dtype=np.float32))
        cases = [
            (dict(lab, dtype="int32", b64=lab["b64"][:-4]), "needs 80"),
            (dict(lab, b64=lab["b64"][:10] + "*" + lab["b64"][11:]), "offset 10"),
            (dict(lab, dtype="float16"), "dtype"),
            (dict(lab, data=[0] * 20), "both"),
        ]
        for tensor, words in cases:
            b = expect_error(srv.request("POST", "/v1/loss", dict(NOTE, labels=tensor), JSON), 422,
                             "invalid_tensor", "labels")
            assert words in b["error"], (words, b)
        stop_clean(srv)


@test
def python_client(args):
    from maskloss_client import Client, MasklossError
    with Server(args.server) as srv:
        v1 = srv.request("POST", "/v1/loss", dict(NOTE, outputs=["loss", "per_element", "per_sample"]), JSON)[2]
        with Client(f"http://127.0.0.1:{srv.port}") as c:
            assert c.ready()
            y, x, m = (np.array(NOTE["labels"], np.uint8), np.array(NOTE["logits"]),
                       np.array(NOTE["mask"], bool))
            assert c.loss("sigmoid_cross_entropy", labels=y, logits=x, weights=m, dtype="float64") == v1["loss"]
            r = c.evaluate("sigmoid_cross_entropy", labels=y, logits=x, weights=m, dtype="float64",
                           outputs=("loss", "per_element", "per_sample", "num_nonzero_weights"))
            assert r["loss"] == v1["loss"] and r["num_nonzero_weights"] == 9
            assert np.array_equal(r["per_element"], np.array(v1["per_element"]))
            assert np.array_equal(r["per_sample"], np.array(v1["per_sample"]))
            # Parameters and reductions as keyword arguments; float16 and lists are widened.
            t = c.loss("torch.nn.functional.binary_cross_entropy_with_logits", labels=NOTE["labels"],
                       logits=x.astype(np.float16), pos_weight=2.0, reduction="sum")
            t1 = srv.request("POST", "/v1/loss", {"loss": "torch.nn.functional.binary_cross_entropy_with_logits",
                                                   "labels": NOTE["labels"],
                                                   "logits": x.astype(np.float16).astype(float).tolist(),
                                                   "params": {"pos_weight": 2.0}, "reduction": "sum"}, JSON)[2]
            assert t == t1["loss"], (t, t1)
            try:
                c.loss("sigmoid_cross_entropy", labels=y, logits=x[:, :4])
                raise AssertionError("no error")
            except MasklossError as e:
                assert e.status == 400 and e.code == "shape_mismatch" and "[4, 5]" in e.message, e
            try:
                c.loss("no_such_loss", labels=y, logits=x)
                raise AssertionError("no error")
            except MasklossError as e:
                assert e.status == 404 and e.code == "unknown_loss", e
            try:
                c.loss("sigmoid_cross_entropy", labels=y, logits=x.astype(np.complex64))
                raise AssertionError("no error")
            except TypeError as e:
                assert "complex64" in str(e)
            assert any(l["name"] == "sigmoid_cross_entropy" for l in c.losses())
        print("    Client.loss / evaluate / errors / ready / losses")
        stop_clean(srv)


@test
def parallel_split(args):
    """A request of many chunks, split across the workers, answers the bits of the serial
    evaluation (the CLI on the same arrays)."""
    import subprocess
    import tempfile
    rng = np.random.default_rng(3)
    y = (rng.random((2000, 1000)) < 0.3).astype(np.float32)
    x = rng.normal(0, 3, (2000, 1000)).astype(np.float32)
    m = (rng.random((2000, 1000)) < 0.5)
    tmp = tempfile.mkdtemp()
    for name, a in (("y", y), ("x", x), ("m", m)):
        np.save(os.path.join(tmp, name + ".npy"), a)
    out = subprocess.run([args.cli, "eval", "--loss", "sigmoid_cross_entropy", "--labels",
                          os.path.join(tmp, "y.npy"), "--logits", os.path.join(tmp, "x.npy"),
                          "--weights", os.path.join(tmp, "m.npy")], capture_output=True, text=True)
    assert out.returncode == 0, out
    serial = json.loads(out.stdout)["loss"]
    with Server(args.server, "--workers", "2") as srv:
        c = TritonLikeClient(srv.port)
        for _ in range(3):
            st, doc, res = c.infer("sigmoid_cross_entropy", [("LABELS", y), ("LOGITS", x), ("MASK", m)])
            assert st == 200, doc
            assert float(res["LOSS"]) == serial, (float(res["LOSS"]), serial)
        c.close()
        from common import metric_value
        helped = metric_value(srv.metrics()[1], "maskloss_split_parts_helped_total")
        assert helped and helped > 0, "no part of the split requests ran on the idle worker"
        print(f"    2,000,000 elements split across 2 workers ({int(helped)} of 93 parts on the "
              f"helper): {serial!r}, the serial bits")
        stop_clean(srv)
