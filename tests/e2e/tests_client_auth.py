"""End-to-end tests of clients/python/maskloss_client.py on a shared endpoint (issue 14): a
server with --auth-file and --tls-cert/--tls-key (a throwaway certificate and tokens made as
tests_tls.py and tests_auth.py make them). The token over HTTPS with cafile gives the note's
example (expected values from numpy and reference.py, not from the server) and the monitors;
no token, a wrong one and one without the scope raise MasklossError 401/403; MASKLOSS_TOKEN;
a certificate not trusted, or of another host, is refused with a clear ssl error; retry_after
from a real 503, a real 429 (--rate-limit) and a scripted peer's 429; the token in no repr()
or error message; the v2 requests tritonclient sends (binary and JSON) with the README's
header; and the README's Python examples, run."""
import contextlib
import http.client
import os
import re
import resource
import ssl
import sys
import tempfile
import time

import numpy as np

from common import NOTE, NOTE_LOSS, ROOT, ref, stop_clean, test
from server import Server, read_checked
from tests_auth import new_token
from tests_cli_monitor import Peer, answer
from tests_monitors import sxfsz_ignored_server
from tests_tls import make_cert
from tests_v2 import TritonLikeClient, note_inputs

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
from maskloss_client import Client, MasklossError  # noqa: E402

# name -> scopes of the tokens each server holds
SCOPES = {"user": "evaluate,monitor:read,monitor:write", "admin": "admin", "reader": "monitor:read"}
Y = np.array(NOTE["labels"], np.uint8)
X = np.array(NOTE["logits"], np.float64)
M = np.array(NOTE["mask"], bool)
# The note's figures by numpy: the stable form of sigmoid cross-entropy, masked.
SCE = np.maximum(X, 0) - X * Y + np.log1p(np.exp(-np.abs(X)))
WEIGHTED_SUM = float((SCE * M).sum())
MONITOR = {"loss": "sigmoid_cross_entropy", "dtype": "float64", "slices": ["model_version"],
           "windows": ["1h"]}


@contextlib.contextmanager
def shared_server(args, *extra, launch=None):
    """A server with TLS and tokens: (server, its https URL, the certificate, {name: token}).
    `launch(state_path, *argv)` starts it instead of Server (e.g. with SIGXFSZ ignored)."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        path = os.path.join(tmp, "tokens")
        tokens = {name: new_token(args, path, name, scopes) for name, scopes in SCOPES.items()}
        argv = ("--tls-cert", cert, "--tls-key", key, "--auth-file", path, *extra)
        start = launch(os.path.join(tmp, "state.db"), *argv) if launch else Server(args.server, *argv)
        with start as srv:
            yield srv, f"https://localhost:{srv.port}", cert, tokens


def put_environ(values):
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def environ(**values):
    """os.environ with these (None: unset) for the block, as it was after."""
    old = {k: os.environ.get(k) for k in values}
    try:
        put_environ(values)
        yield
    finally:
        put_environ(old)


def refused(fn, *a, **kw):
    """The MasklossError fn raises (an AssertionError if it raises none)."""
    try:
        fn(*a, **kw)
    except MasklossError as e:
        return e
    raise AssertionError(f"{getattr(fn, '__name__', fn)}: no MasklossError")


def secret_kept(tokens, *things):
    """No token in the str() or repr() of any of things (clients, exceptions)."""
    for thing in things:
        for text in (str(thing), repr(thing)):
            for name, token in tokens.items():
                assert token not in text, f"the token {name} shows in {type(thing).__name__}: {text}"


def note_ok(client):
    """The note's example through the binary v2 path: float32 and float64, every figure."""
    got = client.loss("sigmoid_cross_entropy", labels=Y, logits=X, weights=M)
    assert ref.close(got, NOTE_LOSS, rtol=1e-6), (got, NOTE_LOSS)
    r = client.evaluate("sigmoid_cross_entropy", labels=Y, logits=X, weights=M, dtype="float64",
                        outputs=("loss", "weighted_sum", "sum_weights", "num_nonzero_weights"))
    assert ref.close(r["loss"], NOTE_LOSS) and ref.close(r["weighted_sum"], WEIGHTED_SUM), r
    assert r["sum_weights"] == M.sum() == 9 and r["num_nonzero_weights"] == 9, r


@test
def client_auth_https_token(args):
    """Client(url, token=..., cafile=...) over HTTPS: the note's example on one kept-alive TLS
    connection (1.2 at least), the catalogue, readiness, and a monitor created, observed, shown,
    listed and charted; deleting needs admin (403 forbidden for the user's token, then done
    with an admin's)."""
    with shared_server(args) as (srv, url, cert, tokens):
        with Client(url, token=tokens["user"], cafile=cert) as c:
            assert c.ready()
            note_ok(c)
            sock = c._conn.sock
            assert sock.version() in ("TLSv1.2", "TLSv1.3"), sock.version()
            assert c._conn._context.minimum_version == ssl.TLSVersion.TLSv1_2
            assert any(l["name"] == "sigmoid_cross_entropy" for l in c.losses())
            assert c._conn.sock is sock, "the TLS connection was not kept alive"

            mon = c.monitor("ctr")
            assert mon.create(MONITOR)["name"] == "ctr"
            now = time.time()
            for i, version in enumerate(("7", "7", "8")):
                a = mon.observe(labels=Y, logits=X, mask=M, time=now, slice={"model_version": version},
                                id=f"o{i}")
                assert ref.close(a["loss"], NOTE_LOSS) and a["duplicate"] is False, a
            shown = mon.show()
            assert shown["total"]["observations"] == 3 and shown["total"]["num_nonzero_weights"] == 27, shown
            assert ref.close(shown["total"]["loss"], NOTE_LOSS), shown["total"]
            assert ref.close(shown["slices"]["model_version=8"]["total"]["loss"], NOTE_LOSS), shown
            series = mon.series(step="1m", from_=now - 600, to=now + 60, slice={"model_version": "7"})
            assert len(series["points"]) == 1 and ref.close(series["points"][0]["loss"], NOTE_LOSS), series
            assert [m["name"] for m in c.monitors()] == ["ctr"]
            e = refused(mon.delete)
            assert (e.status, e.code, e.field) == (403, "forbidden", "Authorization"), e
            assert "admin" in e.message, e
            secret_kept(tokens, c, e)
        with Client(url, token=tokens["admin"], cafile=cert) as admin:
            assert admin.monitor("ctr").delete() is None and admin.monitors() == []
        stop_clean(srv)


@test
def client_auth_refusals(args):
    """No token, a wrong one, one without the scope: MasklossError 401 unauthorized / 403
    forbidden (field Authorization) on the v2 inference, the catalogue and the monitor routes;
    a 16 MB v2 body with a wrong token is refused the same (the server answers before reading
    it); the same Client goes on after a refusal. No token in any error or repr."""
    seen = []
    with shared_server(args) as (srv, url, cert, tokens), environ(MASKLOSS_TOKEN=None):
        with Client(url, token=tokens["admin"], cafile=cert) as admin:
            admin.monitor("m").create(MONITOR)
        wrong = tokens["user"][:-4] + ("AAAA" if not tokens["user"].endswith("AAAA") else "BBBB")
        cases = (("no token", None, 401, "unauthorized"), ("no token", "", 401, "unauthorized"),
                 ("a wrong token", wrong, 401, "unauthorized"),
                 ("a token without the scope", tokens["reader"], 403, "forbidden"))
        for what, token, status, code in cases:
            with Client(url, token=token, cafile=cert) as c:
                calls = [lambda: c.loss("sigmoid_cross_entropy", labels=Y, logits=X, weights=M),
                         lambda: c.monitor("m").observe(labels=Y, logits=X, mask=M),
                         lambda: c.monitor("n").create(MONITOR)]
                if status == 401:  # (the reader may read these)
                    calls += [c.losses, c.monitors, c.monitor("m").show]
                for call in calls:
                    e = refused(call)
                    assert (e.status, e.code, e.field) == (status, code, "Authorization"), (what, e)
                    assert e.retry_after is None, e
                    seen.append(e)
                assert c.ready(), what  # the probes need no token, the connection goes on
                seen.append(c)
        big = np.zeros((2000, 1000), np.float32)
        with Client(url, token=wrong, cafile=cert) as c:
            e = refused(c.loss, "sigmoid_cross_entropy", labels=big, logits=big, weights=big)
            assert (e.status, e.code) == (401, "unauthorized"), e
            seen.append(e)
        with Client(url, token=tokens["reader"], cafile=cert) as c:
            assert [m["name"] for m in c.monitors()] == ["m"]
            e = refused(c.monitor("m").observe, labels=Y, logits=X, mask=M)
            assert e.status == 403 and "monitor:write" in e.message and "reader" in e.message, e
        secret_kept(dict(tokens, wrong=wrong), *seen)
        print(f"    {len(seen)} errors and clients, no token in any")
        stop_clean(srv)


@test
def client_auth_environment(args):
    """token=None reads MASKLOSS_TOKEN (its newline stripped); a token given wins over it;
    token="" sends none even with it set."""
    with shared_server(args) as (srv, url, cert, tokens):
        with environ(MASKLOSS_TOKEN=tokens["user"] + "\n"):
            with Client(url, cafile=cert) as c:
                note_ok(c)
                assert repr(c) == f"Client('{url}', token=<set>)", repr(c)
            with Client(url, token="", cafile=cert) as c:
                e = refused(c.loss, "sigmoid_cross_entropy", labels=Y, logits=X)
                assert (e.status, e.code) == (401, "unauthorized") and "a token is needed" in e.message, e
        with environ(MASKLOSS_TOKEN=tokens["reader"]):
            with Client(url, token=tokens["user"], cafile=cert) as c:
                note_ok(c)
            with Client(url, cafile=cert) as c:
                assert refused(c.loss, "sigmoid_cross_entropy", labels=Y, logits=X).status == 403
        with environ(MASKLOSS_TOKEN=None), Client(url, cafile=cert) as c:
            assert repr(c) == f"Client('{url}')", repr(c)
            assert refused(c.monitors).status == 401
        stop_clean(srv)


@test
def client_auth_untrusted(args):
    """A certificate the client does not trust (no cafile: the system's store; another
    certificate as cafile) or that names another host (127.0.0.2): ssl.SSLCertVerificationError
    saying certificate verify failed and to give cafile, without the token, before anything is
    sent; cafile with an http:// URL and a token that cannot travel in a header: ValueError
    without the token. The server goes on."""
    with shared_server(args, "--bind", "0.0.0.0") as (srv, url, cert, tokens):
        other, _ = make_cert(os.path.dirname(cert), "other")
        token = tokens["user"]
        for where, cafile, says in ((url, None, "self-signed certificate"),
                                    (url, other, "self-signed certificate"),
                                    (f"https://127.0.0.2:{srv.port}", cert, "IP address mismatch")):
            c = Client(where, token=token, cafile=cafile)
            try:
                c.loss("sigmoid_cross_entropy", labels=Y, logits=X)
                raise AssertionError(f"{where} with cafile {cafile}: not refused")
            except ssl.SSLCertVerificationError as e:
                text = str(e)
                assert "certificate verify failed" in text and says in text, text
                assert "cafile" in text and where in text, text
                assert e.verify_code and says in e.verify_message, (e.verify_code, e.verify_message)
                secret_kept(tokens, e, c)
            c.close()
        for bad in (lambda: Client(f"http://localhost:{srv.port}", token=token, cafile=cert),
                    lambda: Client(url, token=token + "\r\nX-Injected: 1", cafile=cert),
                    lambda: Client(url, token=token[:10] + " " + token[10:], cafile=cert),
                    lambda: Client(url, token=token + "é", cafile=cert)):
            try:
                bad()
                raise AssertionError("no ValueError")
            except ValueError as e:
                secret_kept(tokens, e)
        log = srv.log()
        assert token not in log
        with Client(url, token=token, cafile=cert) as c:
            note_ok(c)
        stop_clean(srv)


@test
def client_auth_retry_after(args):
    """retry_after: from a real 503 (the state refuses writes: RLIMIT_FSIZE 0 on the server,
    as tests_monitors does; Retry-After: 1), and from a scripted peer, a 429 too_many_requests
    with Retry-After: 3, a 503 with an HTTP-date 120 s ahead and one without the header; the
    peer's error page that echoes the request's headers has the token replaced; the peer sees
    the token in every request, v2 inference and monitors alike."""
    launch = lambda state, *argv: sxfsz_ignored_server(args, state, *argv)  # noqa: E731
    with shared_server(args, launch=launch) as (srv, url, cert, tokens):
        with Client(url, token=tokens["user"], cafile=cert) as c:
            mon = c.monitor("s")
            mon.create(MONITOR)
            mon.observe(labels=Y, logits=X, mask=M, id="before")
            pid = srv.proc.pid
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
            try:
                for i in range(20):  # (the first writes may still fit in pages the file has)
                    try:
                        mon.observe(labels=Y, logits=X, mask=M, id=f"o{i}")
                    except MasklossError as err:
                        e = err
                        break
                else:
                    raise AssertionError("20 observations taken by a state that cannot grow")
            finally:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            assert (e.status, e.code, e.retry_after) == (503, "state_unavailable", 1.0), (e, e.retry_after)
            secret_kept(tokens, e)
        stop_clean(srv)

    token = "tok-" + "x" * 39
    body429 = b'{"error":"over the rate limit","code":"too_many_requests","field":null}'
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    echo = f"<html>502 Bad Gateway<pre>Authorization: Bearer {token}</pre></html>".encode()
    ok = b'{"monitors":[]}'
    js = [("Content-Type", "application/json"), ("Connection", "close")]
    answers = [answer(429, body429, js + [("Retry-After", "3"), ("Content-Length", len(body429))]),
               answer(503, b"{}", js + [("Retry-After", date), ("Content-Length", 2)]),
               answer(503, b"{}", js + [("Content-Length", 2)]),
               answer(502, echo, [("Content-Type", "text/html"), ("Content-Length", len(echo))]),
               answer(200, ok, js + [("Content-Length", len(ok))])]
    with Peer(answers) as peer, Client(peer.url, token=token) as c:
        e = refused(c.loss, "sigmoid_cross_entropy", labels=Y, logits=X)
        assert (e.status, e.code, e.retry_after) == (429, "too_many_requests", 3.0), (e, e.retry_after)
        e = refused(c.monitor("m").observe, labels=Y, logits=X)
        assert e.status == 503 and 110 < e.retry_after <= 120, e.retry_after
        e = refused(c.monitor("m").show)
        assert e.status == 503 and e.retry_after is None, e.retry_after
        e = refused(c.monitor("m").create, MONITOR)
        assert e.status == 502 and "Bearer <token>" in e.message, e
        secret_kept({"t": token}, e, c)
        assert c.monitors() == []
        sent = [[h for h in lines[1:] if h.lower().startswith("authorization:")]
                for lines, _ in peer.requests]
        assert [lines[0].split()[:2] for lines, _ in peer.requests] == [
            ["POST", "/v2/models/sigmoid_cross_entropy/infer"], ["POST", "/v1/monitors/m/observe"],
            ["GET", "/v1/monitors/m"], ["PUT", "/v1/monitors/m"], ["GET", "/v1/monitors"]], peer.requests
        assert sent == [[f"Authorization: Bearer {token}"]] * 5, sent


@test
def client_auth_rate_limited(args):
    """A token over its --rate-limit (0.5 a second, bursts of 2): the third request at once is
    MasklossError 429 too_many_requests with retry_after (whole seconds, 1 or 2) and the token's
    name but not the token; another token goes on meanwhile; after retry_after seconds the same
    Client is served again (it does not retry by itself)."""
    with shared_server(args, "--rate-limit", "0.5", "--rate-burst", "2") as (srv, url, cert, tokens):
        with Client(url, token=tokens["user"], cafile=cert) as c, \
                Client(url, token=tokens["admin"], cafile=cert) as other:
            for _ in range(2):
                assert ref.close(c.loss("sigmoid_cross_entropy", labels=Y, logits=X, weights=M),
                                 NOTE_LOSS, rtol=1e-6)
            e = refused(c.loss, "sigmoid_cross_entropy", labels=Y, logits=X, weights=M)
            assert (e.status, e.code) == (429, "too_many_requests"), e
            assert e.retry_after in (1.0, 2.0) and "user" in e.message, (e.retry_after, e)
            secret_kept(tokens, e, c)
            note_ok(other)
            time.sleep(e.retry_after)
            assert ref.close(c.loss("sigmoid_cross_entropy", labels=Y, logits=X, weights=M),
                             NOTE_LOSS, rtol=1e-6)
        stop_clean(srv)


class HeaderHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection that adds `headers` to every request, as tritonclient.http's
    headers= argument does, trusting `cafile` as its ssl_options={"ca_certs": ...} does."""

    def __init__(self, port, cafile, headers):
        super().__init__("localhost", port, timeout=120, context=ssl.create_default_context(cafile=cafile))
        self.extra = headers

    def endheaders(self, message_body=None, **kw):
        for k, v in self.extra.items():
            self.putheader(k, v)
        super().endheaders(message_body, **kw)


def triton_like(port, cafile, headers):
    c = TritonLikeClient(port)
    c.conn.close()
    c.conn = HeaderHTTPS(port, cafile, headers)
    return c


def readme_python_blocks():
    """The ```python blocks of the README's section on the Python client."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("### The Python client"):]
    section = section[:section.index("\n### ", 1)]
    return re.findall(r"```python\n(.*?)\n```", section, re.S)


@test
def client_auth_v2_header(args):
    """The README's tritonclient recipe: its `auth` headers (evaluated as the README writes
    them) on the requests tritonclient.http sends, over HTTPS trusting the certificate: the
    note's example with binary tensors and with JSON data, the model's metadata; the same
    requests without the header are 401, with a token without the scope 403."""
    recipe = [b for b in readme_python_blocks() if "tritonclient" in b]
    assert len(recipe) == 1, f"{len(recipe)} tritonclient recipes in the README's Python client section"
    m = re.search(r"^auth = (\{.*\})$", recipe[0], re.M)
    assert m and "headers=auth" in recipe[0] and '"ca_certs": "cert.pem"' in recipe[0], recipe[0]
    with shared_server(args) as (srv, url, cert, tokens):
        for token, want in ((tokens["user"], 200), (None, 401), (tokens["reader"], 403)):
            if token is None:
                headers = {}
            else:
                with environ(MASKLOSS_TOKEN=token):
                    headers = eval(m.group(1), {"os": os})
            c = triton_like(srv.port, cert, headers)
            for binary in (True, False):
                st, doc, out = c.infer("sigmoid_cross_entropy", note_inputs(), parameters={"dtype": "float64"},
                                       binary_inputs=binary)
                assert st == want, (token is not None, binary, st, doc)
                if want == 200:
                    assert ref.close(float(out["LOSS"]), NOTE_LOSS), out
                else:
                    assert doc.startswith("token reader may not" if want == 403 else "a token is needed"), doc
            c.conn.request("GET", "/v2/models/sigmoid_cross_entropy")
            st = read_checked(c.conn.getresponse(), "GET", "/v2/models/sigmoid_cross_entropy")[0]
            assert st == want, st
            c.conn.request("GET", "/v2/health/ready")  # the health calls need no token
            st = read_checked(c.conn.getresponse(), "GET", "/v2/health/ready")[0]
            assert st == 200, st
            c.close()
        stop_clean(srv)


@test
def client_auth_readme_examples(args):
    """The README's examples of the package maskloss, run as written (y, x and mask the note's
    arrays; the URL's port the server's; cert.pem and MASKLOSS_TOKEN as the README says):
    `loss` is the note's loss. The plain one against a plain server, the HTTPS one against a shared
    server."""
    blocks = [b for b in readme_python_blocks() if "from maskloss import Client" in b]
    assert len(blocks) == 2 and any("https://" in b for b in blocks), blocks
    cwd = os.getcwd()
    with shared_server(args) as (tls, url, cert, tokens), Server(args.server) as plain:
        for block in blocks:
            srv = tls if "https://" in block else plain
            code = re.sub(r"(localhost|127\.0\.0\.1):8080", rf"\g<1>:{srv.port}", block)
            assert code != block, block
            scope = {"y": Y, "x": X, "mask": M}
            os.chdir(os.path.dirname(cert))
            try:
                os.rename(cert, "cert.pem")  # the README's name
                with environ(MASKLOSS_TOKEN=tokens["user"]):
                    exec(compile(code, "README.md", "exec"), scope)
            finally:
                os.rename("cert.pem", cert)
                os.chdir(cwd)
            assert ref.close(scope["loss"], NOTE_LOSS, rtol=1e-6), (scope["loss"], NOTE_LOSS)
            scope["client"].close()
        stop_clean(tls)
        stop_clean(plain)
