#!/usr/bin/python3
"""Writes the seed corpus of the HTTP front-end target (tests/fuzz/corpus/http/): raw requests
as clients send them, the attacks of the end-to-end tests (tests/e2e/tests_hardening.py) and
their neighbours. Deterministic; rewrites the directory. Run with /usr/bin/python3."""
import base64
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "http")

NOTE = {"loss": "sigmoid_cross_entropy", "dtype": "float64",
        "labels": [[1, 1, 0, 0, 0], [0, 1, 1, 1, 0]], "logits": [[0.2, 0.2, 0.2, 0, 0.8], [0, 0.5, 0.5, 0.2, 0]],
        "mask": [[1, 0, 0, 0, 0], [0, 0, 1, 1, 0]]}


def req(method, path, body=b"", headers=(), length=True):
    head = [f"{method} {path} HTTP/1.1", "Host: x"] + list(headers)
    if length and body is not None:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def chunked(body, size=7):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def main():
    note = json.dumps(NOTE).encode()
    ct = "Content-Type: application/json"
    v2 = {"inputs": [{"name": "labels", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
                     {"name": "logits", "shape": [2, 2], "datatype": "FP32", "data": [0.5, -1, 2, 0]}],
          "outputs": [{"name": "loss", "parameters": {"binary_data": True}}]}
    v2h = json.dumps(v2).encode()
    v2b = v2h + struct.pack("<4f", 1, 0, 0, 1)
    cases = {
        "healthz": req("GET", "/healthz", None),
        "readyz_head": req("HEAD", "/readyz", None),
        "metrics": req("GET", "/metrics", None),
        "losses": req("GET", "/v1/losses", None),
        "loss": req("POST", "/v1/loss", note, [ct]),
        "loss_close": req("POST", "/v1/loss", note, [ct, "Connection: close"]),
        "loss_no_ct": req("POST", "/v1/loss", note),
        "loss_form": req("POST", "/v1/loss", note, ["Content-Type: application/x-www-form-urlencoded"]),
        "loss_gzip_ce": req("POST", "/v1/loss", note, [ct, "Content-Encoding: gzip"]),
        "loss_bad_json": req("POST", "/v1/loss", b'{"loss": ', [ct]),
        "loss_chunked": req("POST", "/v1/loss", chunked(note), [ct, "Transfer-Encoding: chunked"], length=False),
        "loss_expect": req("POST", "/v1/loss", note, [ct, "Expect: 100-continue"]),
        "batch": req("POST", "/v1/batch", json.dumps({"requests": [NOTE, {"loss": "nope"}]}).encode(), [ct]),
        "pipelined": req("GET", "/healthz", None) + req("POST", "/v1/loss", note, [ct]) + req("GET", "/v2", None),
        "get_on_post": req("GET", "/v1/loss", None),
        "post_on_get": req("POST", "/healthz", b"abc"),
        "not_found": req("GET", "/nope", None),
        "options": req("OPTIONS", "*", None),
        # Monitors: create, observe (with time, slice, id), read, series, delete, in one go.
        "monitor_flow": req("PUT", "/v1/monitors/m1", json.dumps(
            {"loss": "sigmoid_cross_entropy", "num_classes": 5, "slices": ["v"]}).encode(), [ct])
        + req("POST", "/v1/monitors/m1/observe", json.dumps(
            {k: NOTE[k] for k in ("labels", "logits", "mask")} | {"slice": {"v": "7"}, "id": "a",
                                                                  "time": "2026-12-01T09:00:00Z"}).encode(), [ct])
        + req("GET", "/v1/monitors/m1", None)
        + req("GET", "/v1/monitors/m1/series?step=5m&class=2&slice=v=7", None)
        + req("GET", "/v1/monitors", None)
        + req("DELETE", "/v1/monitors/m1", None),
        "monitor_v2": req("PUT", "/v1/monitors/m2", json.dumps({"loss": "sigmoid_cross_entropy"}).encode(), [ct])
        + req("POST", "/v2/models/sigmoid_cross_entropy/infer",
              json.dumps({"parameters": {"monitor": "m2", "monitor_id": "x"},
                          "inputs": [{"name": "LABELS", "shape": [1, 2], "datatype": "FP32", "data": [1, 0]},
                                     {"name": "LOGITS", "shape": [1, 2], "datatype": "FP32",
                                      "data": [0.5, -1]}]}).encode()),
        "two_lengths": req("POST", "/v1/loss", note, [ct, f"Content-Length: {len(note) + 3}"]),
        "length_and_chunked": req("POST", "/v1/loss", chunked(note), [ct, "Transfer-Encoding: chunked", f"Content-Length: {len(note)}"], length=False),
        "te_gzip": req("POST", "/v1/loss", note, [ct, "Transfer-Encoding: gzip"], length=False),
        "too_large": req("POST", "/v1/loss", b"", [ct, "Content-Length: 1000000"], length=False),
        "over_budget": req("POST", "/v1/loss", b"[", [ct, "Content-Length: 60000"], length=False),
        "v2_meta": req("GET", "/v2/models/sigmoid_cross_entropy/versions/1", None),
        "v2_ready": req("GET", "/v2/models/sigmoid_cross_entropy/ready", None),
        "v2_unknown": req("GET", "/v2/models/nope", None),
        "v2_version": req("GET", "/v2/models/sigmoid_cross_entropy/versions/2", None),
        "v2_infer_json": req("POST", "/v2/models/sigmoid_cross_entropy/infer", json.dumps(
            {"inputs": [{"name": "labels", "shape": [2], "datatype": "FP32", "data": [1, 0]},
                        {"name": "logits", "shape": [2], "datatype": "FP32", "data": [0.5, -1]}]}).encode(), [ct]),
        "v2_infer_binary": req("POST", "/v2/models/sigmoid_cross_entropy/infer", v2b,
                               ["Content-Type: application/octet-stream", f"Inference-Header-Content-Length: {len(v2h)}"]),
        "v2_bad_ihcl": req("POST", "/v2/models/sigmoid_cross_entropy/infer", v2b, ["Inference-Header-Content-Length: -4"]),
        "b64": req("POST", "/v1/loss", json.dumps({"loss": "sigmoid_cross_entropy", "labels": {"shape": [2], "dtype": "float32", "b64": base64.b64encode(struct.pack("<2f", 1, 0)).decode()}, "logits": [0.5, 1]}).encode(), [ct]),
        "http10": b"GET /healthz HTTP/1.0\r\n\r\n",
        "bare_lf": b"GET /healthz HTTP/1.1\nHost: x\n\n",
        "big_header": req("GET", "/healthz", None, ["X-Big: " + "a" * 2000]),
        # The status page: its files (304 for If-None-Match: *), /v1/stats, names outside it.
        # (HEAD last: the target checks no answer after one that may be HEAD's.)
        "ui": req("GET", "/ui/index.html", None, ['If-None-Match: "x", W/"y", *'])
              + req("GET", "/", None) + req("GET", "/v1/stats", None)
              + req("HEAD", "/ui/index.html", None),
        "ui_traversal": req("GET", "/ui/%2e%2e/Makefile", None) + req("GET", "/ui/../x", None)
                        + req("POST", "/ui/index.html", b"{}"),
    }
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    for name, data in sorted(cases.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{len(cases)} files in {OUT}")


if __name__ == "__main__":
    main()
