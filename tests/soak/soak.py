#!/usr/bin/env python3
"""Soak test of maskloss-server: mixed traffic from many clients for a long time, then SIGHUP
and SIGTERM under load.

usage: soak.py --server build/maskloss-server [--seconds 600] [--clients 64] [--seed N]
               [--out DIR]

Starts its own server (free port, access log on, a few workers, a small queue so that 503
queue_full happens, a body and an element limit so that 413 happens) and runs, from
--clients threads spread over the source addresses 127.0.0.1-4, a random mix of
  valid /v1/loss and /v1/batch requests (keep-alive or Connection: close, some chunked),
  checked against the independent reference of tests/e2e/reference.py;
  invalid ones (malformed JSON, wrong types, unknown loss, bad v2 framing, 404, 405, 415),
  checked for their exact status and error code;
  large ones (near --max-elements; over it; a body over --max-body-bytes: 413 + JSON error);
  slow ones (a body trickled within --connection-timeout);
  aborted ones (the client leaves mid-body, after the request, mid-answer);
  v2 infer with JSON and binary tensors; GET/HEAD probes and /metrics.
Every second it samples the server's RSS and open descriptors from /proc, and its heap in use
(maskloss_heap_bytes from /metrics). At the end: SIGHUP
(the server must still be alive and answering), then SIGTERM during the traffic (every
accepted request answered, exit status 0).

Asserts: no unexpected status or error code; no 5xx other than 503 with Retry-After; every 200
complete and correct; the access log agrees with what the clients received (no answer lost,
no accepted request left unanswered); RSS and open descriptors flat (the last minute's max
within 5% of the first minute's; the first and last quarters for runs under 2 minutes; with
--sanitizer, RSS is reported but not held to the bound: it also holds the sanitizer's shadow
memory and caches, which grow with the addresses the process has touched, not with what it
holds); the heap in use flat between two quiet points (after the warm-up and at the end,
every client closes its connection and waits until the server holds nothing for a request:
the heap then is what the server keeps, within 5%); no
ThreadSanitizer report; exit status 0. Prints a report and writes it as JSON to DIR; the
first failing requests of each kind are saved there as raw HTTP (replay: nc HOST PORT < F).
Exit status 1 if any assertion failed.
"""
import argparse
import collections
import http.client
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import reference as ref  # noqa: E402
from common import NOTE, NOTE_LOSS  # noqa: E402
from server import Server, exchange, parse_raw  # noqa: E402

# ---- Server configuration -------------------------------------------------------------------

WORKERS = 3
QUEUE_DEPTH = 16
MAX_BODY = 2 * 1024 * 1024
MAX_ELEMENTS = 65536
CONN_TIMEOUT = 15
DRAIN_TIMEOUT = 30
SOURCES = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]

JSON_CT = {"Content-Type": "application/json"}
# Distinct paths (all routed to the same loss) for the deliberately aborted requests, so that
# the access log tells them apart from the traffic whose every answer must arrive.
ABORT_BODY_PATH = "/v2/models/sigmoid_cross_entropy/versions/1/infer"
ABORT_AFTER_PATH = "/v2/models/tf.compat.v1.losses.sigmoid_cross_entropy/versions/1/infer"
ABORT_ANSWER_PATH = "/v2/models/tf.compat.v1.losses.sigmoid_cross_entropy/infer"
ABORT_PATHS = (ABORT_BODY_PATH, ABORT_AFTER_PATH, ABORT_ANSWER_PATH)
V2_PATH = "/v2/models/sigmoid_cross_entropy/infer"

# A memory budget that a few large requests fill (where the server has --max-inflight-bytes).
MAX_INFLIGHT = 64 * 1024 * 1024

# 503 codes the traffic may meet before the drain; "draining" only after SIGTERM.
BUSY_CODES = {"queue_full", "deadline_exceeded", "memory_budget_full"}

# ---- The requests, built once with their expected answers -----------------------------------


class Case:
    """One request body and what a 200 must contain (want, per), or the error it must get."""

    def __init__(self, body, want=None, per=None, what="", req=None):
        self.body, self.want, self.per, self.what, self.req = body, want, per, what, req


def dumps(doc):
    return json.dumps(doc, separators=(",", ":")).encode()


def v1_pool(rng, count):
    sizes = [(1, 1), (4, 5), (8, 16), (32, 8), (1, 300), (64, 32), (16, 16), (128, 64)]
    kinds = ("tf", "torch", "per_element")
    pool = []
    for i in range(count):
        n, c = sizes[i % len(sizes)]
        req, want, per = ref.random_case(rng, n, c, kinds[i % 3])
        pool.append(Case(dumps(req), want, per, f"{n}x{c} {kinds[i % 3]}", req))
    return pool


# Invalid /v1/loss bodies: (body, status, code). The codes are the protocol's (proto/README.md).
def invalid_cases():
    note = NOTE
    cases = [
        (b'{"loss": ', 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b'{"loss": "sigmoid_cross_entropy", "loss": "x"}', 400, "malformed_json"),
        (b"\xff\xfe{}", 400, "malformed_json"),
        (dumps(dict(note, loss="no_such_loss")), 422, "unknown_loss"),
        (dumps(dict(note, loss=5)), 422, "invalid_request"),
        (dumps(dict(note, dtype=3)), 422, "invalid_request"),
        (dumps(dict(note, reduction=1)), 422, "invalid_request"),
        (dumps(dict(note, params=[1])), 422, "invalid_request"),
        (dumps(dict(note, allow_non_finite="yes")), 422, "invalid_request"),
        (dumps(dict(note, labels="abc")), 422, "invalid_tensor"),
        (dumps(dict(note, labels=[[1, 0], [1]])), 422, "invalid_tensor"),
        (dumps(dict(note, params={"label_smoothing": "high"})), 422, "bad_parameter"),
        (dumps(dict(note, params={"gamma": 2})), 422, "unknown_parameter"),
        (dumps(dict(note, logits=[[0.1] * 4] * 4)), 422, "shape_mismatch"),
        (dumps(dict(note, mask=[1, 0, 1, 0, 1])), 422, "broadcast_error"),
        (dumps(dict(note, logits=[["NaN"] * 5] * 4)), 422, "non_finite_input"),
        (dumps(dict(note, reduction="MEDIAN")), 422, "unknown_reduction"),
        (dumps({"loss": "sigmoid_cross_entropy", "logits": [1]}), 422, "invalid_request"),
        (b"[1, 2]", 422, "invalid_request"),
    ]
    return cases


def v2_doc(case, binary, per_element, binary_out):
    """The v2 form of a v1 pool case: (body, Inference-Header-Content-Length or None)."""
    req = case.req
    labels = [float(x) for row in req["labels"] for x in row]
    logits = [float(x) for row in req["logits"] for x in row]
    weights = [float(x) for row in req["mask"] for x in row]
    shape = [len(req["labels"]), len(req["labels"][0])]
    inputs = [("LABELS", "FP32", "<%df" % len(labels), labels),
              ("LOGITS", "FP64", "<%dd" % len(logits), logits),
              ("WEIGHTS", "FP64", "<%dd" % len(weights), weights)]
    header = {"parameters": {"dtype": "float64"}, "inputs": []}
    raws = []
    for name, dt, fmt, data in inputs:
        meta = {"name": name, "datatype": dt, "shape": shape}
        if binary:
            b = struct.pack(fmt, *data)
            meta["parameters"] = {"binary_data_size": len(b)}
            raws.append(b)
        else:
            meta["data"] = data
        header["inputs"].append(meta)
    outs = [{"name": "LOSS"}]
    if per_element:
        outs.append({"name": "PER_ELEMENT", "parameters": {"binary_data": binary_out}})
    header["outputs"] = outs
    js = dumps(header)
    return js + b"".join(raws), (len(js) if raws else None)


def v2_check(st, h, data, case, per_element):
    """None when a v2 200 answer (raw bytes) carries the case's loss (and per-element)."""
    ihcl = h.get("inference-header-content-length")
    try:
        if ihcl is None:
            doc, buf = json.loads(data), b""
        else:
            doc, buf = json.loads(data[:int(ihcl)]), data[int(ihcl):]
    except ValueError as e:
        return f"unparsable v2 answer: {e}: {data[:200]!r}"
    outs = {o["name"]: o for o in doc.get("outputs", [])}
    want_names = {"LOSS", "PER_ELEMENT"} if per_element else {"LOSS"}
    if set(outs) != want_names:
        return f"outputs {sorted(outs)}, expected {sorted(want_names)}"
    offset = 0
    values = {}
    for o in doc["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = buf[offset:offset + size]
            offset += size
            if len(chunk) != size or size % 8:
                return f"{o['name']}: binary data of {len(chunk)} bytes, expected {size}"
            values[o["name"]] = list(struct.unpack("<%dd" % (size // 8), chunk))
        else:
            values[o["name"]] = o.get("data")
    if offset != len(buf):
        return f"{len(buf) - offset} binary bytes left over"
    loss = values["LOSS"]
    if not isinstance(loss, list) or len(loss) != 1 or not ref.close(loss[0], case.want):
        return f"LOSS {loss!r}, expected {case.want!r}"
    if per_element:
        got = values["PER_ELEMENT"]
        want = [ref.sigmoid_ce(z, x) for zr, xr in zip(case.req["labels"], case.req["logits"])
                for z, x in zip(zr, xr)]
        flat = ref.flat(got)
        if len(flat) != len(want):
            return f"PER_ELEMENT has {len(flat)} values, expected {len(want)}"
        for i, (g, w) in enumerate(zip(flat, want)):
            if not ref.close(g, w):
                return f"PER_ELEMENT[{i}] = {g!r}, expected {w!r}"
    return None


V2_LEFTOVER = (b'{"inputs":[{"name":"LABELS","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},'
               b'{"name":"LOGITS","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}'
               + b"\0" * 20)


V2_SHORT = (b'{"inputs":[{"name":"LABELS","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":4}},'
            b'{"name":"LOGITS","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}'
            + b"\0" * 12)


def v2_path(case):
    return f"/v2/models/{case.req['loss']}/infer"


def build_requests(seed):
    rng = random.Random(seed)
    R = {}
    R["pool"] = v1_pool(rng, 240)
    R["invalid"] = invalid_cases()
    # Batches of 1-8 pool entries, some with a bad entry (an error object in its place).
    batches = []
    for i in range(60):
        entries = [rng.choice(R["pool"]) for _ in range(rng.randint(1, 8))]
        docs = [e.req for e in entries]
        expect = [e for e in entries]
        if i % 3 == 0:
            k = rng.randint(0, len(docs))
            docs.insert(k, dict(NOTE, loss="no_such_loss"))
            expect.insert(k, "unknown_loss")
        batches.append((dumps({"requests": docs}), expect))
    R["batch"] = batches
    # Near the element limit: [256, 250] = 64000 elements of 65536, about 1 MB of JSON.
    large = []
    for i in range(3):
        req, want, per = ref.random_case(rng, 256, 250, ("tf", "torch", "tf")[i])
        large.append(Case(dumps(req), want, None, f"256x250 {i}", req))
    R["large"] = large
    # v2 JSON whose answer is ~1.3 MB (PER_ELEMENT): the client leaves after 1 KB of it.
    req, _, _ = ref.random_case(rng, 256, 250, "tf")
    shape = [256, 250]
    R["huge_answer"] = dumps({
        "parameters": {"dtype": "float64"},
        "inputs": [{"name": "LABELS", "datatype": "FP32", "shape": shape, "data": ref.flat(req["labels"])},
                   {"name": "LOGITS", "datatype": "FP64", "shape": shape, "data": ref.flat(req["logits"])}],
        "outputs": [{"name": "PER_ELEMENT"}]})
    # Over the element limit, under the body limit: 413 too_large from the decoder.
    R["over_elements"] = dumps({"loss": "sigmoid_cross_entropy", "labels": [0] * (MAX_ELEMENTS + 1),
                                "logits": [0] * (MAX_ELEMENTS + 1)})
    # Over the body limit: 413 too_large from Content-Length (field "body").
    pad = MAX_BODY + 200 * 1024
    R["over_body"] = b'{"loss":"sigmoid_cross_entropy","labels":[' + b"0," * (pad // 2) + b'0],"logits":[0]}'
    # v2, JSON and binary.
    v2 = []
    for i, case in enumerate(R["pool"][:120]):
        binary = i % 2 == 0
        per_element = i % 3 == 0
        body, ihcl = v2_doc(case, binary, per_element, binary_out=(i % 4 == 0))
        v2.append((body, ihcl, case, per_element, binary))
    R["v2"] = v2
    R["v2_invalid"] = [
        # Inference-Header-Content-Length past the body.
        (b'{"inputs":[{"name":"LABELS","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}',
         {"Inference-Header-Content-Length": "500"}, V2_PATH, 400, "invalid_binary"),
        # Bytes left over after the binary inputs.
        (V2_LEFTOVER, {"Inference-Header-Content-Length": str(V2_LEFTOVER.index(b"}]}") + 3)}, V2_PATH, 400,
         "invalid_binary"),
        # binary_data_size that disagrees with shape x datatype (proto/README.md: invalid_tensor).
        (V2_SHORT, {"Inference-Header-Content-Length": str(V2_SHORT.index(b"}]}") + 3)}, V2_PATH, 400,
         "invalid_tensor"),
        (b'{"inputs": [', {}, V2_PATH, 400, "malformed_json"),
        (b'{"inputs":[]}', {}, "/v2/models/no_such_loss/infer", 404, "unknown_loss"),
    ]
    return R


# ---- Outcomes -------------------------------------------------------------------------------


class Record:
    """Everything the clients saw, under one lock."""

    def __init__(self, outdir):
        self.lock = threading.Lock()
        self.outdir = outdir
        self.phase = "main"  # main, hup (after SIGHUP), drain (after SIGTERM)
        self.counts = collections.Counter()  # (kind, method, path, status) -> n
        self.by_phase = collections.Counter()  # (phase, status) -> n
        self.received = collections.Counter()  # (method, path, status) -> n, for the access log check
        self.latency = collections.defaultdict(list)  # kind -> seconds
        self.failures = collections.Counter()  # category -> n
        self.examples = collections.defaultdict(list)  # category -> first messages
        self.not_accepted = collections.Counter()  # after SIGTERM: connection refused/closed
        self.saved = 0
        self.ok200 = 0
        self.intentional = collections.Counter()
        self.busy = collections.Counter()  # 503 code -> n

    def count(self, kind, method, path, status, seconds=None):
        with self.lock:
            self.counts[(kind, method, path, status)] += 1
            self.by_phase[(self.phase, status)] += 1
            self.received[(method, path, status)] += 1
            if seconds is not None:
                self.latency[kind].append(seconds)

    def fail(self, category, message, request=None):
        with self.lock:
            self.failures[category] += 1
            phase = self.phase
            if len(self.examples[category]) < 5:
                entry = f"[{phase}] {message}"
                if request is not None and self.saved < 40:
                    self.saved += 1
                    name = os.path.join(self.outdir, f"failure-{self.saved:02d}-{category}.http")
                    with open(name, "wb") as f:
                        f.write(request)
                    entry += f" (request saved as {name})"
                self.examples[category].append(entry)


def raw_request(method, path, body=b"", headers=None, length=None):
    """The bytes of a request; length: the Content-Length to announce (default len(body))."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if length is None and (body or method == "POST"):
        length = len(body)
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def is_json_error(h, body):
    return (h.get("content-type", "").startswith("application/json") and isinstance(body, dict)
            and isinstance(body.get("error"), str) and body["error"] and isinstance(body.get("code"), str)
            and "field" in body)


# ---- One client -----------------------------------------------------------------------------

ACTIONS = [  # (name, weight)
    ("loss", 30), ("batch", 8), ("chunked", 3), ("invalid", 12), ("large", 2), ("over_elements", 1),
    ("over_body", 1), ("slow", 1), ("abort_body", 1), ("abort_after", 1), ("abort_answer", 1),
    ("v2", 12), ("v2_invalid", 2), ("probe", 8), ("metrics", 1), ("wrong_route", 2), ("pipelined", 2),
    ("expect_continue", 1),
]


class Client:
    def __init__(self, soak, cid):
        self.soak = soak
        self.rec = soak.rec
        self.R = soak.R
        self.rng = random.Random(soak.seed * 1000 + cid)
        self.source = SOURCES[cid % len(SOURCES)]
        self.conn = None
        self.last_use = 0.0
        names, weights = zip(*ACTIONS)
        self.names, self.weights = names, weights

    # -- transport

    def connection(self):
        now = time.monotonic()
        # An idle connection may be closed by --connection-timeout: never reuse a stale one.
        if self.conn is not None and now - self.last_use > CONN_TIMEOUT / 3:
            self.drop()
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.soak.port, timeout=120,
                                                   source_address=(self.source, 0))
        self.last_use = now
        return self.conn

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def socket(self, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(120)
        s.bind((self.source, 0))
        s.connect(("127.0.0.1", self.soak.port))
        return s

    def transport_error(self, kind, method, path, e, request=None):
        """A connection that failed: a failure, except after SIGTERM, where a request the
        server never accepted is expected (the access log check catches accepted ones)."""
        self.drop()
        if self.rec.phase == "drain":
            with self.rec.lock:
                self.rec.not_accepted[type(e).__name__] += 1
            if isinstance(e, ConnectionRefusedError):
                self.soak.refused.set()
            return
        self.rec.fail("connection_error", f"{kind}: {method} {path}: {type(e).__name__}: {e}", request)

    def http(self, kind, method, path, body=None, headers=None, fresh=False):
        """One exchange on the keep-alive connection (or a fresh one that closes):
        (status, headers, parsed body) or None after a transport error."""
        headers = dict(headers or {})
        close = fresh or self.rng.random() < 0.15
        if close:
            self.drop()
            headers["Connection"] = "close"
        conn = self.connection()
        t0 = time.monotonic()
        try:
            st, h, b = exchange(conn, method, path, body, headers)
        except (OSError, http.client.HTTPException) as e:
            self.transport_error(kind, method, path, e, raw_request(method, path, body or b"", headers))
            return None
        dt = time.monotonic() - t0
        self.rec.count(kind, method, path, st, dt)
        if close or h.get("connection", "").lower() == "close":
            self.drop()
        return st, h, b

    # -- checks

    def busy_ok(self, kind, method, path, resp, request):
        """True when resp is an acceptable 503 (busy, or draining after SIGTERM)."""
        st, h, b = resp
        if st != 503:
            return False
        codes = BUSY_CODES | ({"draining"} if self.rec.phase == "drain" else set())
        with self.rec.lock:
            self.rec.busy[b.get("code") if isinstance(b, dict) else None] += 1
        if not h.get("retry-after", "").isdigit():
            self.rec.fail("503_without_retry_after", f"{kind}: {method} {path}: {h} {str(b)[:200]}", request)
        elif not is_json_error(h, b) or b["code"] not in codes:
            self.rec.fail("unexpected_503", f"{kind}: {method} {path}: {str(b)[:300]}", request)
        elif b["code"] == "draining" and h.get("connection", "").lower() != "close":
            self.rec.fail("draining_keeps_connection", f"{kind}: {method} {path}: {h}", request)
        # Back off a little, as a client reading Retry-After would (but far less than it says:
        # the queue must stay under pressure).
        time.sleep(self.rng.uniform(0.01, 0.15))
        return True

    def expect_error(self, kind, method, path, resp, status, code, request, busy=True):
        if resp is None:
            return
        st, h, b = resp
        if busy and self.busy_ok(kind, method, path, resp, request):
            return
        if not busy and st == 503 and self.rec.phase == "drain" and self.busy_ok(kind, method, path, resp, request):
            return
        if st != status:
            cat = "5xx" if st >= 500 else "unexpected_status"
            self.rec.fail(cat, f"{kind}: {method} {path}: HTTP {st}, expected {status} {code}: {str(b)[:300]}",
                          request)
        elif not is_json_error(h, b):
            self.rec.fail("bad_error_object", f"{kind}: {method} {path}: HTTP {st}: {h} {str(b)[:300]}", request)
        elif b["code"] != code:
            self.rec.fail("wrong_error_code", f"{kind}: {method} {path}: code {b['code']!r}, expected {code!r}: "
                          f"{b['error'][:200]}", request)

    def expect_200(self, kind, method, path, resp, check, request):
        """check(body) -> None or what is wrong."""
        if resp is None:
            return
        st, h, b = resp
        if self.busy_ok(kind, method, path, resp, request):
            return
        if st != 200:
            cat = "5xx" if st >= 500 else "unexpected_status"
            self.rec.fail(cat, f"{kind}: {method} {path}: HTTP {st}: {str(b)[:300]}", request)
            return
        why = check(b)
        if why:
            self.rec.fail("wrong_answer", f"{kind}: {method} {path}: {why}", request)
        else:
            with self.rec.lock:
                self.rec.ok200 += 1

    # -- actions

    def do_loss(self):
        case = self.rng.choice(self.R["pool"])
        resp = self.http("loss", "POST", "/v1/loss", case.body, JSON_CT)
        self.expect_200("loss", "POST", "/v1/loss", resp, lambda b: ref.check_answer(b, case.want, case.per),
                        raw_request("POST", "/v1/loss", case.body, JSON_CT))

    def do_chunked(self):
        case = self.rng.choice(self.R["pool"])
        body = case.body
        cut = sorted(self.rng.sample(range(1, len(body)), min(3, len(body) - 1)))
        parts = [body[a:b] for a, b in zip([0] + cut, cut + [len(body)])]
        conn = self.connection()
        t0 = time.monotonic()
        try:
            conn.request("POST", "/v1/loss", body=iter(parts), headers=JSON_CT, encode_chunked=True)
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            self.transport_error("chunked", "POST", "/v1/loss", e)
            return
        h = {k.lower(): v for k, v in r.getheaders()}
        self.rec.count("chunked", "POST", "/v1/loss", r.status, time.monotonic() - t0)
        if h.get("connection", "").lower() == "close":
            self.drop()
        try:
            b = json.loads(data)
        except ValueError:
            b = data[:300]
        self.expect_200("chunked", "POST", "/v1/loss", (r.status, h, b),
                        lambda b: ref.check_answer(b, case.want, case.per), None)

    def do_batch(self):
        body, expect = self.rng.choice(self.R["batch"])

        def check(b):
            if not isinstance(b, dict) or not isinstance(b.get("responses"), list):
                return f"not a batch answer: {str(b)[:200]}"
            if len(b["responses"]) != len(expect):
                return f"{len(b['responses'])} responses, expected {len(expect)}"
            for i, (got, want) in enumerate(zip(b["responses"], expect)):
                if isinstance(want, str):
                    if not isinstance(got, dict) or got.get("code") != want:
                        return f"responses[{i}] = {str(got)[:200]}, expected the error {want}"
                else:
                    why = ref.check_answer(got, want.want, want.per)
                    if why:
                        return f"responses[{i}]: {why}"
            return None
        resp = self.http("batch", "POST", "/v1/batch", body, JSON_CT)
        self.expect_200("batch", "POST", "/v1/batch", resp, check, raw_request("POST", "/v1/batch", body, JSON_CT))

    def do_invalid(self):
        body, status, code = self.rng.choice(self.R["invalid"])
        resp = self.http("invalid", "POST", "/v1/loss", body, JSON_CT)
        self.expect_error("invalid", "POST", "/v1/loss", resp, status, code,
                          raw_request("POST", "/v1/loss", body, JSON_CT))

    def do_wrong_route(self):
        choice = self.rng.randrange(4)
        if choice == 0:
            m, p, body, hdr, st, code = "GET", "/v1/nope", None, {}, 404, "not_found"
        elif choice == 1:
            m, p, body, hdr, st, code = "GET", "/v1/loss", None, {}, 405, "method_not_allowed"
        elif choice == 2:
            m, p, body, hdr, st, code = ("POST", "/v1/loss", dumps(NOTE), {"Content-Type": "text/plain"}, 415,
                                         "unsupported_media_type")
        else:
            m, p, body, hdr, st, code = ("POST", "/v1/loss", dumps(NOTE),
                                         {"Content-Type": "application/json", "Content-Encoding": "br"}, 415,
                                         "unsupported_media_type")
        resp = self.http("wrong_route", m, p, body, hdr)
        self.expect_error("wrong_route", m, p, resp, st, code, raw_request(m, p, body or b"", hdr), busy=False)

    def do_large(self):
        case = self.rng.choice(self.R["large"])
        resp = self.http("large", "POST", "/v1/loss", case.body, JSON_CT)
        self.expect_200("large", "POST", "/v1/loss", resp, lambda b: ref.check_answer(b, case.want, None), None)

    def do_over_elements(self):
        body = self.R["over_elements"]
        resp = self.http("over_elements", "POST", "/v1/loss", body, JSON_CT)
        self.expect_error("over_elements", "POST", "/v1/loss", resp, 413, "too_large", None)

    def do_over_body(self):
        """A body over --max-body-bytes from a plain client (http.client sends it all, then
        reads): 413 with the JSON error object, not a reset."""
        body = self.R["over_body"]
        resp = self.http("over_body", "POST", "/v1/loss", body, JSON_CT, fresh=True)
        self.expect_error("over_body", "POST", "/v1/loss", resp, 413, "too_large", None, busy=False)

    def do_slow(self):
        """A body trickled in 6-10 pieces over about 2 s, well within --connection-timeout."""
        case = self.rng.choice(self.R["pool"])
        head = raw_request("POST", "/v1/loss", b"", JSON_CT, length=len(case.body))
        req = head + case.body
        t0 = time.monotonic()
        try:
            s = self.socket()
            try:
                s.sendall(head)
                n = self.rng.randint(6, 10)
                step = max(1, len(case.body) // n + 1)
                for i in range(0, len(case.body), step):
                    time.sleep(2.0 / n)
                    s.sendall(case.body[i:i + step])
                data = self.read_answer(s)
            finally:
                s.close()
        except OSError as e:
            self.transport_error("slow", "POST", "/v1/loss", e, req)
            return
        parsed = parse_raw(data)
        if parsed is None:
            if self.rec.phase != "drain":
                self.rec.fail("incomplete_answer", f"slow: {len(data)} bytes, no complete answer: {data[:200]!r}", req)
            return
        st, h, b = parsed
        self.rec.count("slow", "POST", "/v1/loss", st, time.monotonic() - t0)
        try:
            b = json.loads(b)
        except ValueError:
            pass
        self.expect_200("slow", "POST", "/v1/loss", (st, h, b), lambda b: ref.check_answer(b, case.want, case.per),
                        req)

    def do_pipelined(self):
        """2-4 requests in one write on one connection (HTTP/1.1 pipelining; the last with
        Connection: close): every answer, in order."""
        cases = [self.rng.choice(self.R["pool"]) for _ in range(self.rng.randint(2, 4))]
        reqs = [raw_request("POST", "/v1/loss", c.body, JSON_CT) for c in cases[:-1]]
        reqs.append(raw_request("POST", "/v1/loss", cases[-1].body, dict(JSON_CT, Connection="close")))
        req = b"".join(reqs)
        t0 = time.monotonic()
        try:
            s = self.socket()
            try:
                s.sendall(req)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            finally:
                s.close()
        except OSError as e:
            self.transport_error("pipelined", "POST", "/v1/loss", e, req)
            return
        dt = time.monotonic() - t0
        for i, case in enumerate(cases):
            parsed = parse_raw(data)
            if parsed is None:
                if data or self.rec.phase != "drain":
                    self.rec.fail("incomplete_answer", f"pipelined: answer {i} of {len(cases)} missing or "
                                  f"incomplete: {data[:200]!r}", req)
                return
            st, h, b = parsed
            head_len = data.index(b"\r\n\r\n") + 4
            data = data[head_len + len(b):]
            self.rec.count("pipelined", "POST", "/v1/loss", st, dt)
            try:
                b = json.loads(b)
            except ValueError:
                pass
            self.expect_200("pipelined", "POST", "/v1/loss", (st, h, b),
                            lambda b, c=case: ref.check_answer(b, c.want, c.per), req)
            if h.get("connection", "").lower() == "close":
                break
        if data:
            self.rec.fail("unexpected_bytes", f"pipelined: {len(data)} bytes after the answers: {data[:200]!r}", req)

    def do_expect_continue(self):
        """Expect: 100-continue: the body is sent after the interim 100 (or a final answer)."""
        case = self.rng.choice(self.R["pool"])
        head = raw_request("POST", "/v1/loss", b"", dict(JSON_CT, Expect="100-continue"), length=len(case.body))
        t0 = time.monotonic()
        try:
            s = self.socket()
            try:
                s.sendall(head)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"HTTP/1.1 100"):
                    data = data[data.index(b"\r\n\r\n") + 4:]
                    s.sendall(case.body)
                # Else a final answer instead of the 100 (503 from the memory budget): checked below.
                data += self.read_answer(s, data)
            finally:
                s.close()
        except OSError as e:
            self.transport_error("expect_continue", "POST", "/v1/loss", e, head)
            return
        parsed = parse_raw(data)
        if parsed is None:
            if data or self.rec.phase != "drain":
                self.rec.fail("incomplete_answer", f"expect_continue: {data[:200]!r}", head)
            return
        st, h, b = parsed
        self.rec.count("expect_continue", "POST", "/v1/loss", st, time.monotonic() - t0)
        try:
            b = json.loads(b)
        except ValueError:
            pass
        self.expect_200("expect_continue", "POST", "/v1/loss", (st, h, b),
                        lambda b: ref.check_answer(b, case.want, case.per), head + case.body)

    @staticmethod
    def read_answer(s, data=b""):
        """What follows data on s until a whole answer is there (or the connection closes)."""
        more = b""
        while parse_raw(data + more) is None:
            chunk = s.recv(65536)
            if not chunk:
                break
            more += chunk
        return more

    def do_abort_body(self):
        """Headers and half the body, then leave (half the time with a reset)."""
        body, _, _, _, _ = self.rng.choice(self.R["v2"])
        req = raw_request("POST", ABORT_BODY_PATH, body)
        try:
            s = self.socket()
            s.sendall(req[:len(req) - len(body) // 2 - 1])
            time.sleep(self.rng.random() * 0.05)
            if self.rng.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError as e:
            self.transport_error("abort_body", "POST", ABORT_BODY_PATH, e, req)
            return
        with self.rec.lock:
            self.rec.intentional["abort_body"] += 1

    def do_abort_after(self):
        """A whole request, then leave before the answer."""
        body, ihcl, _, _, _ = self.rng.choice(self.R["v2"])
        req = raw_request("POST", ABORT_AFTER_PATH, body,
                          {"Inference-Header-Content-Length": str(ihcl)} if ihcl is not None else {})
        try:
            s = self.socket()
            s.sendall(req)
            time.sleep(self.rng.random() * 0.01)
            s.close()
        except OSError as e:
            self.transport_error("abort_after", "POST", ABORT_AFTER_PATH, e, req)
            return
        with self.rec.lock:
            self.rec.intentional["abort_after"] += 1

    def do_abort_answer(self):
        """A request with a ~1.3 MB answer from a socket with a small receive buffer: read 1 KB
        of the answer, then leave."""
        req = raw_request("POST", ABORT_ANSWER_PATH, self.R["huge_answer"])
        try:
            s = self.socket(rcvbuf=4096)
            s.sendall(req)
            got = s.recv(1024)
            if self.rng.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError as e:
            self.transport_error("abort_answer", "POST", ABORT_ANSWER_PATH, e, req)
            return
        with self.rec.lock:
            self.rec.intentional["abort_answer"] += 1
            if got.startswith(b"HTTP/1.1 200"):
                self.rec.intentional["abort_answer_mid_200"] += 1

    def do_v2(self):
        body, ihcl, case, per_element, binary = self.rng.choice(self.R["v2"])
        headers = {"Inference-Header-Content-Length": str(ihcl)} if ihcl is not None else {}
        kind = "v2_binary" if binary else "v2_json"
        path = v2_path(case)
        headers_sent = dict(headers)
        close = self.rng.random() < 0.15
        if close:
            self.drop()
            headers_sent["Connection"] = "close"
        conn = self.connection()
        t0 = time.monotonic()
        try:
            conn.request("POST", path, body=body, headers=headers_sent)
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            self.transport_error(kind, "POST", path, e, raw_request("POST", path, body, headers_sent))
            return
        h = {k.lower(): v for k, v in r.getheaders()}
        self.rec.count(kind, "POST", path, r.status, time.monotonic() - t0)
        if close or h.get("connection", "").lower() == "close":
            self.drop()
        if r.status == 200:
            b = data
        else:
            try:
                b = json.loads(data)
            except ValueError:
                b = data[:300]
        self.expect_200(kind, "POST", path, (r.status, h, b), lambda d: v2_check(200, h, d, case, per_element),
                        raw_request("POST", path, body, headers_sent))

    def do_v2_invalid(self):
        body, headers, path, status, code = self.rng.choice(self.R["v2_invalid"])
        resp = self.http("v2_invalid", "POST", path, body, headers)
        self.expect_error("v2_invalid", "POST", path, resp, status, code, raw_request("POST", path, body, headers),
                          busy=(status != 404))

    PROBES = [
        ("GET", "/healthz", {"status": "ok"}), ("GET", "/readyz", {"ready": True}),
        ("GET", "/v2/health/live", {"live": True}), ("GET", "/v2/health/ready", {"ready": True}),
        ("GET", "/v1/losses", None), ("GET", "/v2", None), ("GET", "/v2/models/sigmoid_cross_entropy", None),
        ("HEAD", "/healthz", ""), ("HEAD", "/v1/losses", ""),
    ]

    def do_probe(self):
        method, path, want = self.rng.choice(self.PROBES)
        resp = self.http("probe", method, path)
        if resp is None:
            return
        st, h, b = resp
        req = raw_request(method, path)
        draining = self.rec.phase == "drain"
        if draining and st == 503 and path in ("/readyz", "/v2/health/ready"):
            return  # readiness fails during the drain
        if st != 200:
            self.rec.fail("5xx" if st >= 500 else "unexpected_status", f"probe {method} {path}: HTTP {st}: {str(b)[:200]}",
                          req)
        elif want is not None and b != want:
            self.rec.fail("wrong_answer", f"probe {method} {path}: {str(b)[:200]}", req)
        elif path == "/v1/losses" and method == "GET" and "sigmoid_cross_entropy" not in json.dumps(b):
            self.rec.fail("wrong_answer", f"probe {path}: no sigmoid_cross_entropy in {str(b)[:200]}", req)

    def do_metrics(self):
        resp = self.http("metrics", "GET", "/metrics")
        if resp is None:
            return
        st, h, text = resp
        if st != 200:
            self.rec.fail("5xx" if st >= 500 else "unexpected_status", f"/metrics: HTTP {st}", None)
            return
        if not h.get("content-type", "").startswith("text/plain") or "maskloss_http_requests_total" not in text:
            self.rec.fail("wrong_answer", f"/metrics: {h} {text[:200]!r}", None)
            return
        try:
            from prometheus_client.parser import text_string_to_metric_families
            list(text_string_to_metric_families(text))
        except ImportError:
            pass
        except Exception as e:
            self.rec.fail("wrong_answer", f"/metrics does not parse: {e}", None)

    def run(self):
        while not self.soak.stop.is_set():
            if self.soak.quiet.is_set():
                self.drop()  # no connection left open while the server's heap is read
                self.soak.pause_here()
                continue
            if self.rec.phase == "drain" and self.soak.refused.is_set() and self.rng.random() < 0.5:
                time.sleep(0.05)  # the listener is gone: slow down, but keep probing
            name = self.rng.choices(self.names, self.weights)[0]
            try:
                getattr(self, "do_" + name)()
            except Exception as e:  # a bug of the soak itself, or an answer it cannot read
                self.rec.fail("client_exception", f"{name}: {type(e).__name__}: {e}")
        self.drop()


# ---- Sampling -------------------------------------------------------------------------------


def sample(pid):
    """(RSS in kB, open descriptors, threads) of a process, or None once it is gone."""
    try:
        rss = threads = None
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds, threads
    except (OSError, ValueError):
        return None


def metrics_text(port):
    """(HTTP status, the text of /metrics), or (None, None) when it could not be read."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        return resp.status, text
    except (OSError, http.client.HTTPException):
        return None, None


def metric_values(text, names):
    """The values of unlabelled metrics in /metrics text, in the order of names; None when
    one is missing."""
    out = []
    for name in names:
        m = re.search(r"^%s (\S+)$" % re.escape(name), text or "", re.M)
        if not m:
            return None
        out.append(float(m.group(1)))
    return out


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


# ---- The soak -------------------------------------------------------------------------------


class Soak:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        os.makedirs(args.out, exist_ok=True)
        for f in os.listdir(args.out):
            if f.startswith("failure-"):
                os.unlink(os.path.join(args.out, f))
        self.rec = Record(args.out)
        self.stop = threading.Event()
        self.refused = threading.Event()
        self.samples = []  # (t, rss_kb, fds, threads, heap bytes or None)
        self.notes = []
        self.findings = []  # (what, detail): assertion failures outside the per-request checks
        self.drain_probes = []
        # Quiet points: every client closes its connection and waits, the server finishes
        # what it has, and its heap in use is read with nothing in flight.
        self.quiet = threading.Event()
        self.resume = threading.Event()
        self.paused = 0
        self.paused_lock = threading.Lock()
        self.quiet_heap = []  # (label, t, heap bytes or None, settled)

    def sampler(self):
        while not self.sampler_stop.is_set():
            s = sample(self.pid)
            if s is None:
                break
            heap = self.metrics(("maskloss_heap_bytes",))
            self.samples.append((time.monotonic() - self.t0,) + s + (int(heap[0]) if heap else None,))
            self.sampler_stop.wait(1.0)

    def check_alive(self, what):
        if self.srv.proc.poll() is not None:
            rc = self.srv.proc.returncode
            self.findings.append((what, f"the server died: exit status {rc}"
                                  f"{' (signal %d)' % -rc if rc < 0 else ''}; stderr tail:\n"
                                  + tail(self.srv)))
            return False
        return True

    def drain_probe(self):
        """New connections every 0.5 s of the drain: GET /healthz must be answered (200, or 503
        draining) or the connection refused, never left hanging in the listen backlog and reset."""
        t_term = time.monotonic()
        while self.srv.proc.poll() is None:
            time.sleep(0.5)
            t = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=DRAIN_TIMEOUT + 60) as s:
                    s.sendall(raw_request("GET", "/healthz", b"", {"Connection": "close"}))
                    data = Client.read_answer(s)
                parsed = parse_raw(data)
                if parsed:
                    self.rec.count("drain_probe", "GET", "/healthz", parsed[0])
                what = f"HTTP {parsed[0]}" if parsed else f"{len(data)} bytes: {data[:100]!r}"
            except OSError as e:
                what = f"{type(e).__name__}: {e}"
            self.drain_probes.append(f"at {t - t_term:.1f} s: {what} after {time.monotonic() - t:.2f} s")
            if what.startswith("ConnectionRefusedError"):
                break

    def one_request(self, method, path, body=None, headers=None, tries=50):
        """A request on a fresh connection, retried while the server is busy (503)."""
        for _ in range(tries):
            try:
                r = self.srv.request(method, path, body, headers, timeout=30)
            except (OSError, http.client.HTTPException) as e:
                return None, f"{type(e).__name__}: {e}"
            self.rec.count("sighup_check", method, path, r[0])
            if r[0] != 503:
                return r, None
            time.sleep(0.05)
        return r, None

    def run(self):
        args = self.args
        print(f"soak: building the requests (seed {self.seed})", flush=True)
        self.R = build_requests(self.seed)
        server_args = ["--workers", str(WORKERS), "--queue-depth", str(QUEUE_DEPTH),
                       "--max-body-bytes", str(MAX_BODY), "--max-elements", str(MAX_ELEMENTS),
                       "--connection-timeout", str(CONN_TIMEOUT), "--drain-timeout", str(DRAIN_TIMEOUT),
                       "--access-log"]
        help_text = subprocess.run([args.server, "--help"], capture_output=True, text=True).stdout
        if "--max-inflight-bytes" in help_text:
            server_args += ["--max-inflight-bytes", str(MAX_INFLIGHT)]
        if "--max-inflight-bytes-per-ip" in help_text:
            # Every client of the soak has the same address: the whole budget is theirs.
            server_args += ["--max-inflight-bytes-per-ip", str(MAX_INFLIGHT)]
        env = {}
        if not args.sanitizer:
            # glibc counts the chunks its per-thread caches hold as allocated: without them,
            # the heap in use at a quiet point is what the server keeps, to the byte.
            env["GLIBC_TUNABLES"] = "glibc.malloc.tcache_count=0"
        if os.environ.get("TSAN_OPTIONS"):
            env["TSAN_OPTIONS"] = os.environ["TSAN_OPTIONS"]
        self.srv = Server(args.server, *server_args, env=env, startup_timeout=120)
        self.port, self.pid = self.srv.port, self.srv.proc.pid
        print(f"soak: {' '.join(self.srv.argv)} (pid {self.pid}, port {self.port}); {args.clients} clients "
              f"for {args.seconds} s", flush=True)
        try:
            self.traffic()
        finally:
            if self.srv.proc.poll() is None:
                self.srv.proc.kill()
                self.srv.proc.wait()
        return self.report()

    def metrics(self, names):
        """Values of the server's unlabelled metrics (None if unreadable); the request is
        counted like any other, for the access-log check."""
        st, text = metrics_text(self.port)
        if st is not None:
            self.rec.count("own_metrics", "GET", "/metrics", st)
        return metric_values(text, names) if st == 200 else None

    def pause_here(self):
        with self.paused_lock:
            self.paused += 1
        self.resume.wait()
        with self.paused_lock:
            self.paused -= 1

    def quiet_point(self, label, clients):
        """Stops the traffic, waits until the server holds nothing for a request, and records
        its heap in use: the measure of a leak, without the requests in flight."""
        self.resume.clear()
        self.quiet.set()
        deadline = time.monotonic() + 60
        while self.paused < clients and time.monotonic() < deadline:
            time.sleep(0.1)
        settled = False
        while not settled and time.monotonic() < deadline:
            g = self.metrics(("maskloss_http_requests_in_flight", "maskloss_queue_jobs",
                              "maskloss_running_jobs", "maskloss_inflight_bytes"))
            # The /metrics request that asks is itself in flight.
            settled = g is not None and g[0] <= 1 and g[1] == 0 and g[2] == 0 and g[3] == 0
            if not settled:
                time.sleep(0.2)
        heaps = []
        for _ in range(3):
            time.sleep(0.3)
            h = self.metrics(("maskloss_heap_bytes",))
            if h:
                heaps.append(int(h[0]))
        heap = min(heaps, default=None)
        self.quiet_heap.append((label, time.monotonic() - self.t0, heap, settled and self.paused >= clients))
        print(f"soak: quiet point ({label}): heap in use {heap} bytes"
              f"{'' if settled else ' (the server did not settle)'}", flush=True)
        self.quiet.clear()
        self.resume.set()

    def traffic(self):
        args = self.args
        self.t0 = time.monotonic()
        self.sampler_stop = threading.Event()
        sampler = threading.Thread(target=self.sampler, daemon=True)
        sampler.start()
        clients = [Client(self, k) for k in range(args.clients)]
        threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
        for t in threads:
            t.start()
        last_print = 0
        first_quiet = min(60.0, args.seconds / 4)  # after the warm-up
        while time.monotonic() - self.t0 < args.seconds:
            time.sleep(0.5)
            el = time.monotonic() - self.t0
            if not self.quiet_heap and el >= first_quiet:
                self.quiet_point("after the warm-up", len(clients))
            if not self.check_alive("traffic"):
                break
            if el - last_print >= 30:
                last_print = el
                s = self.samples[-1] if self.samples else (0, 0, 0, 0, None)
                with self.rec.lock:
                    n = sum(self.rec.counts.values())
                    bad = sum(self.rec.failures.values())
                heap = f"  heap {s[4] / 2**20:.1f} MiB" if s[4] is not None else ""
                print(f"soak: {el:5.0f} s  {n} requests  {bad} failures  RSS {s[1] / 1024:.1f} MiB  "
                      f"{s[2]} fds  {s[3]} threads{heap}", flush=True)
        if self.srv.proc.poll() is None:
            self.quiet_point("at the end", len(clients))
        self.t_main_end = time.monotonic() - self.t0
        alive = self.srv.proc.poll() is None
        # SIGHUP during the traffic: the server must log it and keep serving.
        self.hup_sent = False
        if alive:
            self.hup_sent = True
            self.rec.phase = "hup"
            self.srv.proc.send_signal(signal.SIGHUP)
            time.sleep(2)
            if self.check_alive("SIGHUP"):
                r, err = self.one_request("GET", "/healthz")
                if r is None or r[0] != 200:
                    self.findings.append(("SIGHUP", f"/healthz after SIGHUP: {err or r[:3:2]}"))
                r, err = self.one_request("POST", "/v1/loss", NOTE, JSON_CT)
                if r is None or r[0] != 200 or not ref.close(r[2].get("loss"), NOTE_LOSS):
                    self.findings.append(("SIGHUP", f"/v1/loss after SIGHUP: {err or r[:3:2]}"))
                time.sleep(2)
            else:
                alive = False
        # SIGTERM during the traffic: every accepted request answered, exit 0.
        rc = None
        if alive and self.check_alive("before SIGTERM"):
            self.rec.phase = "drain"
            self.t_term = time.monotonic()
            self.srv.signalled = True
            self.srv.proc.send_signal(signal.SIGTERM)
            probe = threading.Thread(target=self.drain_probe, daemon=True)
            probe.start()
            try:
                rc = self.srv.proc.wait(DRAIN_TIMEOUT + 60)
                self.drain_seconds = time.monotonic() - self.t_term
            except Exception:
                self.findings.append(("SIGTERM", f"the server did not exit within {DRAIN_TIMEOUT + 60} s"))
                self.srv.proc.kill()
                rc = self.srv.proc.wait()
            if rc != 0:
                self.findings.append(("exit status", f"exit status {rc} after SIGTERM; stderr tail:\n" + tail(self.srv)))
        if rc is not None:
            probe.join(60)
            bad = [w for w in self.drain_probes if not (": HTTP" in w or "ConnectionRefusedError" in w)]
            if bad:
                self.findings.append(("drain", "new connections during the drain neither answered nor refused: "
                                      + "; ".join(bad)))
        self.rc = rc if rc is not None else self.srv.proc.poll()
        self.stop.set()
        self.sampler_stop.set()
        for t in threads:
            t.join(180)
            if t.is_alive():
                self.findings.append(("clients", "a client thread did not finish within 180 s"))
                break

    # -- the end

    def access_log(self):
        """The server's access log: Counter of (method, path, status) of completed requests,
        and Counter of (path, reason) of aborted ones."""
        done, aborted, other = collections.Counter(), collections.Counter(), []
        self.srv.stderr.seek(0)
        for line in self.srv.stderr:
            if not line.startswith(b"{"):
                other.append(line.decode(errors="replace").rstrip())
                continue
            try:
                e = json.loads(line)
            except ValueError:
                other.append(line.decode(errors="replace").rstrip())
                continue
            if "aborted" in e:
                aborted[(e["path"], e["aborted"], e["status"])] += 1
            else:
                done[(e["method"], e["path"], e["status"])] += 1
        return done, aborted, other

    def flatness(self):
        """[(name, first max, last max, ok)] over the traffic period (before SIGHUP)."""
        T = self.t_main_end
        if T >= 120:
            w, how = 60.0, "the first and the last minute"
        else:
            w, how = T / 4, f"the first and the last quarter ({T / 4:.0f} s; the run is shorter than 2 minutes)"
        first = [s for s in self.samples if s[0] <= w]
        last = [s for s in self.samples if T - w <= s[0] <= T]
        out = []
        # (index, name, unit, held to the bound)
        rss = "RSS (max)" if not self.args.sanitizer else \
            f"RSS (max; with {self.args.sanitizer}'s shadow memory and caches)"
        kinds = [(1, rss, "kB", not self.args.sanitizer), (2, "open descriptors (max)", "", True)]
        for i, name, unit, bound in kinds:
            if not first or not last:
                out.append((name, None, None, False, unit, bound))
                continue
            a = max(s[i] for s in first)
            b = max(s[i] for s in last)
            out.append((name, a, b, b <= a * 1.05, unit, bound))
        # The heap in use at the two quiet points, with nothing in flight (while traffic runs
        # it is mostly the requests in flight, whose peaks come and go): growth is a leak.
        name = "heap in use at the quiet points"
        q = self.quiet_heap
        if len(q) == 2 and all(x[2] is not None and x[3] for x in q):
            a, b = q[0][2], q[1][2]
            out.append((name, a, b, b <= a * 1.05, "bytes", True))
        elif len(q) == 2 and all(x[2] is None and x[3] for x in q):
            out.append((name + " (the server's allocator does not say)", 0, 0, True, "bytes", False))
        else:
            out.append((name, None, None, False, "bytes", True))
        return how, out

    def report(self):
        rec = self.rec
        # The server's whole stderr (the access log) next to the report.
        self.srv.stderr.seek(0)
        with open(os.path.join(self.args.out, "server.log"), "wb") as f:
            while True:
                chunk = self.srv.stderr.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
        lines = []
        p = lines.append
        done, aborted, other = self.access_log()
        failed = []
        total = sum(rec.counts.values())
        p(f"== soak report: {self.t_main_end:.0f} s of traffic from {self.args.clients} clients, "
          f"{total} requests answered ({total / max(self.t_main_end, 1):.0f}/s), {rec.ok200} checked 200s")
        # Counts by route and status.
        by_route = collections.Counter()
        for (kind, method, path, st), n in rec.counts.items():
            by_route[(method, path if path not in ABORT_PATHS else path, st)] += n
        p("-- answers by route and status (client side)")
        for (method, path, st), n in sorted(by_route.items()):
            p(f"   {method:4} {path:55} {st}  {n}")
        p("-- by kind: count, p50, p99 latency (ms), statuses")
        kinds = collections.defaultdict(collections.Counter)
        for (kind, method, path, st), n in rec.counts.items():
            kinds[kind][st] += n
        lat = {}
        for kind in sorted(kinds):
            xs = rec.latency.get(kind, [])
            lat[kind] = (percentile(xs, 50) * 1e3, percentile(xs, 99) * 1e3)
            st = " ".join(f"{s}:{n}" for s, n in sorted(kinds[kind].items()))
            if not xs:
                p(f"   {kind:14} {sum(kinds[kind].values()):8}  {'':34}{st}")
                continue
            p(f"   {kind:14} {sum(kinds[kind].values()):8}  p50 {lat[kind][0]:8.2f}  p99 {lat[kind][1]:8.2f}  {st}")
        allx = [x for xs in rec.latency.values() for x in xs]
        p(f"   {'all':14} {len(allx):8}  p50 {percentile(allx, 50) * 1e3:8.2f}  p99 {percentile(allx, 99) * 1e3:8.2f}")
        p(f"-- deliberate aborts: {dict(rec.intentional)}")
        p(f"-- 503 answers by code: {dict(rec.busy)}")
        # What the traffic must have exercised, or the soak proves less than it says.
        missing = [f"{kind} {st}" for kind, st in (
            ("loss", 200), ("batch", 200), ("chunked", 200), ("large", 200), ("slow", 200), ("v2_json", 200),
            ("v2_binary", 200), ("pipelined", 200), ("expect_continue", 200), ("over_body", 413),
            ("over_elements", 413), ("invalid", 400), ("invalid", 422), ("v2_invalid", 400))
            if not kinds[kind][st]]
        if not rec.busy["queue_full"]:
            missing.append("503 queue_full")
        if not rec.intentional["abort_answer_mid_200"]:
            missing.append("a client leaving mid-answer")
        if missing:
            failed.append("never exercised: " + ", ".join(missing))
        if rec.not_accepted:
            p(f"-- after SIGTERM, not accepted (refused or closed before a request was read): {dict(rec.not_accepted)}")
        # Resources.
        ss = [s for s in self.samples if s[0] <= self.t_main_end]
        if ss:
            rss = [s[1] for s in ss]
            fds = [s[2] for s in ss]
            thr = [s[3] for s in ss]
            p(f"-- RSS (MiB) over {len(ss)} samples: min {min(rss) / 1024:.1f}, median "
              f"{percentile(rss, 50) / 1024:.1f}, max {max(rss) / 1024:.1f}, last {rss[-1] / 1024:.1f}")
            p(f"-- open descriptors: min {min(fds)}, median {percentile(fds, 50)}, max {max(fds)}, last {fds[-1]}; "
              f"threads {min(thr)}..{max(thr)}")
            # Per-minute maxima (or per-tenth for short runs).
            step = 60 if self.t_main_end >= 240 else max(1.0, self.t_main_end / 10)
            series = []
            k = 0
            while k * step < self.t_main_end:
                win = [s for s in ss if k * step <= s[0] < (k + 1) * step]
                if win:
                    heap = max((s[4] for s in win if s[4] is not None), default=0) / 2**20
                    series.append(f"{max(s[1] for s in win) / 1024:.1f}/{max(s[2] for s in win)}/{heap:.1f}")
                k += 1
            p(f"-- max RSS MiB / max fds / max heap MiB per {step:.0f} s: {' '.join(series)}")
        how, flat = self.flatness()
        p(f"-- flatness, comparing {how}:")
        for name, a, b, ok, unit, bound in flat:
            if a is None:
                p(f"   {name}: not measured (too few samples, or the server did not settle)")
                failed.append(f"{name}: not measured")
                continue
            verdict = ("ok" if ok else "GROWS") if bound else "(not held to the bound)"
            change = f"({(b / a - 1) * 100:+.1f}%)" if a else ""
            p(f"   {name}: {a} -> {b} {unit} {change} {verdict}")
            if bound and not ok:
                failed.append(f"{name} grew from {a} to {b} {unit} (more than 5%)")
        # The access log against what the clients received.
        p("-- access log against the clients")
        mismatch = []
        keys = set(done) | set(rec.received)
        for key in sorted(keys, key=str):
            method, path, st = key
            if path in ABORT_PATHS:
                continue
            if done.get(key, 0) != rec.received.get(key, 0):
                mismatch.append(f"{method} {path} {st}: the server logged {done.get(key, 0)}, the clients "
                                f"received {rec.received.get(key, 0)}")
        for m in mismatch[:20]:
            p("   MISMATCH " + m)
        if mismatch:
            failed.append(f"{len(mismatch)} (method, path, status) counts differ between the access log and "
                          f"the clients (answers lost or unlogged)")
        for (path, reason, st), n in sorted(aborted.items()):
            where = "deliberate" if path in ABORT_PATHS else "UNEXPECTED"
            p(f"   aborted {where}: {path} status {st} reason {reason}: {n}")
            if path not in ABORT_PATHS:
                failed.append(f"{n} request(s) on {path} ended without an answer ({reason}, status {st})")
            elif reason != "client_abort":
                failed.append(f"{n} deliberate client abort(s) on {path} logged as {reason!r}, not client_abort")
        if not mismatch:
            p(f"   every completed request in the log was received by its client, and conversely "
              f"({sum(v for k, v in done.items() if k[1] not in ABORT_PATHS)} lines)")
        tsan = [line for line in other if "ThreadSanitizer" in line]
        if tsan:
            failed.append(f"{sum(1 for line in tsan if 'WARNING' in line)} ThreadSanitizer report(s)")
        if tsan:
            p("-- ThreadSanitizer (first 40 lines of its reports):")
            start = next(i for i, line in enumerate(other) if "ThreadSanitizer" in line)
            for line in other[start:start + 40]:
                p("   " + line[:300])
        kinds_of = collections.Counter(re.sub(r"\d+", "N", line)[:200] for line in other)
        if kinds_of:
            p("-- the server's other stderr lines, by kind (digits as N):")
            for line, n in kinds_of.most_common(25):
                p(f"   {n:6}  {line}")
        if self.hup_sent and not any("SIGHUP" in line for line in other):
            failed.append("the server did not log the SIGHUP")
        phases = collections.defaultdict(dict)
        for (ph, st), n in sorted(rec.by_phase.items(), key=str):
            phases[ph][st] = n
        p("-- statuses by phase (main: before SIGHUP; hup: after it; drain: after SIGTERM): "
          + "; ".join(f"{ph} {d}" for ph, d in phases.items()))
        # Per-request failures.
        p("-- failures by category: " + (", ".join(f"{c} {n}" for c, n in sorted(rec.failures.items())) or "none"))
        for cat, msgs in sorted(rec.examples.items()):
            for m in msgs:
                p(f"   {cat}: {m[:600]}")
        for cat, n in rec.failures.items():
            failed.append(f"{n} {cat}")
        for what, detail in self.findings:
            p(f"-- FINDING ({what}): {detail}")
            failed.append(f"{what}: {detail.splitlines()[0]}")
        if getattr(self, "drain_seconds", None) is not None:
            p(f"-- SIGTERM: exit status {self.rc} after {self.drain_seconds:.2f} s; new connections during the "
              f"drain: {'; '.join(self.drain_probes) or 'none tried'}")
        p("== " + ("PASS" if not failed else "FAIL: " + "; ".join(failed)))
        text = "\n".join(lines)
        print(text, flush=True)
        summary = {
            "seconds": self.t_main_end, "clients": self.args.clients, "seed": self.seed, "requests": total,
            "ok200_checked": rec.ok200,
            "by_route_status": {f"{m} {p_} {s}": n for (m, p_, s), n in sorted(by_route.items())},
            "latency_ms": {k: {"p50": v[0], "p99": v[1]} for k, v in lat.items()},
            "samples": self.samples, "flatness": {"how": how, "series": [list(f[:4]) + [f[5]] for f in flat]},
            "failures": dict(rec.failures), "examples": rec.examples, "findings": self.findings,
            "exit_status": self.rc, "aborted_log": {f"{a} {b} {c}": n for (a, b, c), n in aborted.items()},
            "mismatch": mismatch, "passed": not failed, "failed": failed,
        }
        with open(os.path.join(self.args.out, "soak-report.json"), "w") as f:
            json.dump(summary, f, indent=1)
        with open(os.path.join(self.args.out, "soak-report.txt"), "w") as f:
            f.write(text + "\n")
        return 0 if not failed else 1


def tail(srv, n=3000):
    # (pread: seeking the descriptor the running server writes to would move its writes)
    fd = srv.stderr.fileno()
    size = os.fstat(fd).st_size
    return os.pread(fd, min(n, size), max(0, size - n)).decode(errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sanitizer", default="",
                    help="the server's sanitizer build (SOAK_SAN): its RSS is not held to the bound")
    ap.add_argument("--out", default=None, help="report directory (default: next to the server binary)")
    args = ap.parse_args()
    if args.out is None:
        args.out = os.path.join(os.path.dirname(os.path.abspath(args.server)), "soak")
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
