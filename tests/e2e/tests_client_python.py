"""End-to-end tests of the Python package clients/python (issue 18): installed offline with
Debian's pip into a directory of its own (nothing fetched), then imported from there, not from
the checkout, by a Python of its own against a real server -- with numpy (binary v2 tensors,
numpy arrays back) and without it (numpy made unimportable: nested lists both ways), the note's
figures from numpy here, not from the server; monitors, late labels, errors with code and
field. Retries against a scripted peer: 429 and 503 retried after Retry-After or the backoff,
only what is safe to repeat (observe and labels with an id), a wait beyond max_retry_wait not
waited, the count bounded, timeouts not retried, the old maskloss_client module not retrying;
and against a real server's --rate-limit over HTTPS with a token."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import NOTE, NOTE_LOSS, ROOT, ref, stop_clean, test
import contract
from server import Server, check_python_client
from tests_cli_monitor import Peer, answer
from tests_client_auth import refused, shared_server  # (maskloss_client's MasklossError is maskloss's)

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import maskloss  # noqa: E402
import maskloss.client  # noqa: E402
import maskloss_client  # noqa: E402

check_python_client(maskloss.client)  # (its exchanges with real servers, in every suite)

Y = np.array(NOTE["labels"], np.float64)
X = np.array(NOTE["logits"], np.float64)
M = np.array(NOTE["mask"], np.float64)
# The note's per-element sigmoid cross-entropy by numpy (the stable form), and its masked mean.
SCE = np.maximum(X, 0) - X * Y + np.log1p(np.exp(-np.abs(X)))
NONZERO = int((M != 0).sum())
MASKED_MEAN = float((SCE * M).sum() / NONZERO)
CLASSES = ["drama", "comedy", "action", "horror", "scifi"]

# Run by the installed package's own Python: argv[1] the server's URL, argv[2] "numpy" or
# "nonumpy"; prints one JSON line of what it got. Every exchange of its Client is recorded
# in the file $CONTRACT_EXCHANGES (contract.check_log's lines), a hook around its transport.
SCRIPT = r'''
import base64, json, os, sys
if sys.argv[2] == "nonumpy":
    sys.modules["numpy"] = None  # import numpy raises ImportError, as on a Python without it
import maskloss, maskloss_client
import maskloss.client
_once = maskloss.client.Client._request_once
def _recorded(self, method, path, body, headers, resend):
    resp, data = _once(self, method, path, body, headers, resend)
    with open(os.environ["CONTRACT_EXCHANGES"], "a") as f:
        f.write(json.dumps({"method": method, "path": self._base + path, "headers": dict(headers),
                            "body": None if body is None else base64.b64encode(body).decode(),
                            "status": resp.status, "response_headers": dict(resp.getheaders()),
                            "response_body": base64.b64encode(data).decode()}) + "\n")
    return resp, data
maskloss.client.Client._request_once = _recorded
note = json.loads(sys.argv[3])
out = {"file": maskloss.__file__, "shim": maskloss_client.__file__, "version": maskloss.__version__,
       "shim_retries": maskloss_client.Client(sys.argv[1]).retries}
c = maskloss.Client(sys.argv[1])
r = c.evaluate("sigmoid_cross_entropy", labels=note["labels"], logits=note["logits"],
               weights=note["mask"], dtype="float64",
               outputs=("loss", "per_element", "num_nonzero_weights"))
out["loss"], out["nonzero"] = r["loss"], r["num_nonzero_weights"]
arr = __import__("numpy").array if sys.argv[2] == "numpy" else list  # (numpy: b64 tensors)
b = c.batch([{"loss": "sigmoid_cross_entropy", "labels": arr(note["labels"]), "dtype": "float64",
              "logits": arr(note["logits"]), "mask": arr(note["mask"])}, {"loss": "no_such_loss"}])
out["batch"] = [b[0]["loss"], b[1]["code"], b[1]["field"]]
out["per_element_type"] = type(r["per_element"]).__name__
out["per_element"] = r["per_element"] if isinstance(r["per_element"], list) else r["per_element"].tolist()
try:
    c.loss("sigmoid_cross_entropy", labels=note["labels"], logits=note["logits"][:3])
except maskloss.MasklossError as e:
    out["error"] = [e.status, e.code, e.field, sorted(e.body)]
mon = c.monitor("m")
mon.create({"loss": "sigmoid_cross_entropy", "dtype": "float64", "windows": ["1h"]})
mon.observe(labels=note["labels"], logits=note["logits"], mask=note["mask"], id="a")
out["duplicate"] = mon.observe(labels=note["labels"], logits=note["logits"], mask=note["mask"],
                               id="a")["duplicate"]
out["observed"] = mon.show()["total"]["loss"]
late = c.monitor("late")
late.create({"loss": "sigmoid_cross_entropy", "dtype": "float64", "classes": json.loads(sys.argv[4]),
             "prediction_ttl": "7d"})
ids = ["u1", "u2", "u3", "u4"]
out["stored"] = late.predictions(ids, logits=note["logits"])["stored"]
sparse = late.labels([{"id": "u1", "class": "drama", "value": 1}, {"id": "u9", "class": 0, "value": 1}])
out["sparse"] = [sparse["applied"], sparse["unknown_ids"]]
dense = late.labels(note["labels"], ids=ids, mask=note["mask"], id="l2")
out["dense"] = [dense["applied"], dense["replaced"]]
out["late"] = late.show()["total"]["loss"]
out["monitors"] = [m["name"] for m in c.monitors()]
print(json.dumps(out))
'''


def install(tmp):
    """pip install of a copy of clients/python (pip builds in the source tree: a copy keeps the
    checkout clean and two runs apart) into tmp/site, offline; the directory."""
    src = os.path.join(tmp, "src")
    shutil.copytree(os.path.join(ROOT, "clients", "python"), src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = os.path.join(tmp, "site")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation",
                        "--no-deps", "--no-cache-dir", "--disable-pip-version-check", "--target", site, src],
                       capture_output=True, text=True, timeout=300, cwd=tmp,
                       env=dict(os.environ, PIP_NO_INPUT="1", PIP_ROOT_USER_ACTION="ignore"))
    assert p.returncode == 0, (p.stdout, p.stderr)
    return site


@test
def client_python_package(args):
    """pip install --no-index of clients/python: the package maskloss with py.typed and the
    shim maskloss_client, version the library's (maskloss.h), no required dependency; imported
    from the install (another working directory, PYTHONPATH the target only) it evaluates the
    note (numpy arrays with numpy, nested lists without) and a batch (with an entry refused),
    raises MasklossError with status, code and field, and drives monitors and late labels to
    the note's loss."""
    header = open(os.path.join(ROOT, "lib", "include", "maskloss.h")).read()
    version = ".".join(re.search(rf"#define ML_VERSION_{p} (\d+)", header).group(1)
                       for p in ("MAJOR", "MINOR", "PATCH"))
    with tempfile.TemporaryDirectory() as tmp:
        site = install(tmp)
        assert os.path.isfile(os.path.join(site, "maskloss", "py.typed")), os.listdir(site)
        assert os.path.isfile(os.path.join(site, "maskloss_client.py")), os.listdir(site)
        meta = open(os.path.join(site, f"maskloss-{version}.dist-info", "METADATA")).read()
        requires = re.findall(r"^Requires-Dist: (.*)$", meta, re.M)
        assert len(requires) == 1 and re.fullmatch(r"numpy ; extra == [\"']numpy[\"']", requires[0]), requires
        for variant in ("numpy", "nonumpy"):
            log = os.path.join(tmp, f"exchanges-{variant}.jsonl")
            with Server(args.server) as srv:
                p = subprocess.run([sys.executable, "-c", SCRIPT, f"http://127.0.0.1:{srv.port}", variant,
                                    json.dumps(NOTE), json.dumps(CLASSES)],
                                   capture_output=True, text=True, timeout=120, cwd=tmp,
                                   env=dict(os.environ, PYTHONPATH=site, CONTRACT_EXCHANGES=log))
                assert p.returncode == 0, (variant, p.stderr)
                got = json.loads(p.stdout)
                stop_clean(srv)
            # What the installed package sent and got, against the document.
            if contract.ACTIVE:  # (13 requests: a recorder that lost some would say fewer)
                n = contract.check_log(log)
                assert n == 13, f"{n} exchanges recorded in {log}, not 13"
            assert got["file"] == os.path.join(site, "maskloss", "__init__.py"), got["file"]
            assert got["shim"] == os.path.join(site, "maskloss_client.py"), got["shim"]
            assert got["version"] == version and got["shim_retries"] == 0, got
            assert got["per_element_type"] == ("ndarray" if variant == "numpy" else "list"), got
            assert np.allclose(np.array(got["per_element"]), SCE, rtol=1e-12, atol=0), (variant, got)
            assert ref.close(got["loss"], MASKED_MEAN) and got["nonzero"] == NONZERO, (variant, got)
            assert got["error"] == [400, "shape_mismatch", "labels", ["code", "error", "field"]], got
            assert ref.close(got["batch"][0], MASKED_MEAN) and got["batch"][1:] == ["unknown_loss", "loss"], got
            assert got["duplicate"] is True and ref.close(got["observed"], MASKED_MEAN), got
            assert got["stored"] == 4 and got["sparse"] == [1, ["u9"]], got
            # (u1's drama given again: replaced, the other 8 positions applied)
            assert got["dense"] == [NONZERO - 1, 1] and ref.close(got["late"], MASKED_MEAN), got
            assert got["monitors"] == ["late", "m"], got


V2_OK = json.dumps({"model_name": "sigmoid_cross_entropy", "model_version": "1", "outputs": [
    {"name": "LOSS", "datatype": "FP64", "shape": [], "data": [0.25]}]}).encode()
OBSERVED = b'{"loss":0.5,"duplicate":false}'


def reply(status, body=b"{}", retry_after=None):
    headers = [("Content-Type", "application/json"), ("Connection", "close"),
               ("Content-Length", len(body))]
    if retry_after is not None:
        headers.append(("Retry-After", retry_after))
    return answer(status, body, headers)


def timed(fn, *a, **kw):
    t0 = time.monotonic()
    got = fn(*a, **kw)
    return got, time.monotonic() - t0


def sent(peer):
    """The peer's requests: (method, path, the JSON body's "id" or None)."""
    out = []
    for lines, body in peer.requests:
        method, path = lines[0].split()[:2]
        try:
            doc = json.loads(body)
        except ValueError:  # (a binary v2 request)
            doc = {}
        out.append((method, path, doc.get("id")))
    return out


@test
def client_python_retries(args):
    """maskloss.Client's retries against a scripted peer: inference answered 429 Retry-After 1,
    then 503 without the header, then 200 is the 200's loss after 1 s and the backoff; observe
    and labels without an id are not retried, with one they are (the same id sent again);
    predictions never are; a
    Retry-After beyond max_retry_wait is raised at once with its retry_after; retries=2 gives up
    after three tries; a read that times out is not sent again, and the next request goes
    on a new connection; the old module
    maskloss_client does not retry."""
    y, x = NOTE["labels"], NOTE["logits"]
    peer = Peer([reply(429, b'{"error":"slow down","code":"too_many_requests","field":null}', "1"),
                 reply(503), answer(200, V2_OK, [("Content-Length", len(V2_OK)), ("Connection", "close")])])
    with peer, maskloss.Client(peer.url, backoff=0.2) as c:
        loss, took = timed(c.loss, "sigmoid_cross_entropy", labels=y, logits=x)
        assert loss == 0.25 and 1.0 + 0.1 <= took < 10, (loss, took)
        assert [r[:2] for r in sent(peer)] == [("POST", "/v2/models/sigmoid_cross_entropy/infer")] * 3

    peer = Peer([reply(503, retry_after="0"), reply(503, retry_after="0"), reply(200, OBSERVED),
                 reply(503, retry_after="0"), reply(503, retry_after="0"),
                 reply(200, b'{"applied":1}'), reply(503, retry_after="0")])
    with peer, maskloss.Client(peer.url, timeout=10) as c:  # (a retry too many: no answer)
        mon = c.monitor("m")
        e = refused(mon.observe, labels=y, logits=x)
        assert (e.status, e.retry_after) == (503, 0.0), e
        assert mon.observe(labels=y, logits=x, id="o1") == json.loads(OBSERVED)
        e = refused(mon.labels, [{"id": "u1", "class": 0, "value": 1}])
        assert mon.labels([{"id": "u1", "class": 0, "value": 1}], id="l1") == {"applied": 1}
        e = refused(mon.predictions, ["u1"], logits=[[0.5]])  # (never retried)
        assert (e.status, e.retry_after) == (503, 0.0), e
        assert sent(peer) == [("POST", "/v1/monitors/m/observe", None)] + \
            [("POST", "/v1/monitors/m/observe", "o1")] * 2 + [("POST", "/v1/monitors/m/labels", None)] + \
            [("POST", "/v1/monitors/m/labels", "l1")] * 2 + [("POST", "/v1/monitors/m/predictions", None)], \
            sent(peer)

    peer = Peer([reply(429, retry_after="120")] + [reply(503, retry_after="0")] * 3)
    with peer, maskloss.Client(peer.url, max_retry_wait=5, retries=2) as c:
        e, took = timed(refused, c.monitors)
        assert (e.status, e.retry_after) == (429, 120.0) and took < 5, (e, took)
        e = refused(c.monitor("m").show)
        assert e.status == 503 and len(peer.requests) == 4, peer.requests

    with Peer([None, reply(200, b'{"monitors":[]}')]) as peer, \
            maskloss.Client(peer.url, timeout=1) as c:
        try:
            c.monitors()
            raise AssertionError("no timeout")
        except TimeoutError:
            pass
        assert len(peer.requests) == 1, peer.requests
        # (closed: the next request opens a new connection, instead of http.client's
        # CannotSendRequest on one still waiting for its answer)
        assert c._conn.sock is None, "the timed-out connection kept"

    with Peer([reply(503, retry_after="0"), reply(200, b'{"monitors":[]}')]) as peer, \
            maskloss_client.Client(peer.url) as c:
        e = refused(c.monitors)
        assert e.status == 503 and len(peer.requests) == 1, peer.requests


@test
def client_python_rate_limited(args):
    """A real server's --rate-limit (0.5 a second, bursts of 2) over HTTPS with a token and the
    certificate as cafile: maskloss.Client's third request at once waits for the 429's
    Retry-After and is then served (the note's loss); with retries=0 it raises the 429 with
    retry_after; a token without the scope is 403 forbidden, field Authorization (the README's
    answer), at once (not retried); the
    requests of one Client go over one connection (keep-alive)."""
    with shared_server(args, "--rate-limit", "0.5", "--rate-burst", "2") as (srv, url, cert, tokens):
        with maskloss.Client(url, token=tokens["user"], cafile=cert) as c:
            socks = []
            for _ in range(2):
                assert ref.close(c.loss("sigmoid_cross_entropy", labels=Y, logits=X, weights=M),
                                 NOTE_LOSS, rtol=1e-6)
                socks.append(c._conn.sock)
            assert socks[0] is not None and socks[0] is socks[1], "a new connection for each request"
            loss, took = timed(c.loss, "sigmoid_cross_entropy", labels=Y, logits=X, weights=M)
            assert ref.close(loss, NOTE_LOSS, rtol=1e-6) and 0.5 <= took < 30, (loss, took)
        with maskloss.Client(url, token=tokens["admin"], cafile=cert, retries=0) as c:
            for _ in range(2):
                c.loss("sigmoid_cross_entropy", labels=Y, logits=X, weights=M)
            e = refused(c.loss, "sigmoid_cross_entropy", labels=Y, logits=X, weights=M)
            assert (e.status, e.code) == (429, "too_many_requests") and e.retry_after in (1.0, 2.0), e
        with maskloss.Client(url, token=tokens["reader"], cafile=cert) as c:
            e, took = timed(refused, c.loss, "sigmoid_cross_entropy", labels=Y, logits=X)
            assert (e.status, e.code, e.field) == (403, "forbidden", "Authorization") and took < 5, (e, took)
        stop_clean(srv)


@test
def client_python_typed(args):
    """The package is typed (py.typed says so to type checkers): every public function and
    method of maskloss's classes annotates its return and each of its parameters (no type
    checker is a test dependency; this keeps the promise from rotting)."""
    import inspect
    bare = []
    for cls in (maskloss.Client, maskloss.Monitor, maskloss.MasklossError):
        for name, fn in vars(cls).items():
            if not inspect.isfunction(fn) or (name.startswith("_") and name != "__init__"):
                continue
            sig = inspect.signature(fn)
            if sig.return_annotation is inspect.Signature.empty:
                bare.append(f"{cls.__name__}.{name} -> ?")
            bare += [f"{cls.__name__}.{name}({p})" for p in list(sig.parameters)[1:]
                     if sig.parameters[p].annotation is inspect.Parameter.empty]
    assert not bare, bare
    assert os.path.isfile(os.path.join(os.path.dirname(maskloss.__file__), "py.typed"))
