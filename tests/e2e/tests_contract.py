"""The contract checks themselves (contract.py) can fail: real answers of the server pass, and
the same answers fail once a header the document requires is taken away or altered, or
against a copy of the document altered on purpose; raw-socket answers, nginx's own pages and
the client packages' recorded exchanges likewise."""
import base64
import copy
import json
import os
import tempfile

import contract
from common import NOTE, test
from server import Server, check_python_client, exchange, parse_raw, raw, recorded
from tests_auth import new_token
from tests_proxy import nginx_own

JSON = {"Content-Type": "application/json"}


def refused(fn, *a):
    """The AssertionError fn(*a) raises (it must raise one)."""
    try:
        fn(*a)
    except AssertionError as e:
        return str(e)
    raise AssertionError(f"contract passed {a[:2]}")


def real(srv, method, path, body=None, headers=None):
    """(method, path, request headers, request body, status, headers, payload, length): one
    real exchange, checked (it passes) and kept to be checked again altered."""
    conn = srv.connect(30)
    try:
        st, h, payload = exchange(conn, method, path, body, headers)
    finally:
        conn.close()
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    length = len(json.dumps(payload)) if isinstance(payload, (dict, list)) else len(payload)
    if method == "HEAD":
        length = 0
    x = [method, path, headers, data, st, h, payload, length]
    contract.check(*x)
    return x


def without(x, header, value=None):
    """Exchange x with a response header removed, or given another value."""
    x = list(x)
    x[5] = {k: v for k, v in x[5].items() if k != header}
    if value is not None:
        x[5][header] = value
    return x


def altered(alter):
    """A copy of the document, altered by alter(doc), in a temporary file: its path."""
    with open(contract.PATH) as f:
        doc = json.load(f)
    alter(doc)
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    return path


def against(path, fn, *a):
    """fn(*a) with the document at path instead of proto/openapi.json (then back)."""
    original = contract.PATH
    contract.use_document(path)
    try:
        return fn(*a)
    finally:
        contract.use_document(original)
        os.unlink(path)


@test
def contract_headers_checked(args):
    """The headers the document requires, on real answers: Allow on a 405, WWW-Authenticate
    on a 401, Retry-After on a 429 (a whole number), ETag, Cache-Control, the page's security
    headers on the page's files (200, 304, HEAD) and on the document, Content-Type among the
    listed ones (HEAD too). Each real answer passes; without the header, or with a value its
    schema refuses, it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        tokens = os.path.join(tmp, "tokens")
        new_token(args, tokens, "job", "evaluate")
        with Server(args.server, "--auth-file", tokens) as srv:
            e405 = real(srv, "DELETE", "/healthz")
            e401 = real(srv, "POST", "/v1/loss", NOTE, JSON)
            assert e405[4] == 405 and e401[4] == 401, (e405[4:7], e401[4:7])
            refused(contract.check, *without(e405, "allow"))
            refused(contract.check, *without(e405, "allow", "GET, FETCH"))
            refused(contract.check, *without(e401, "www-authenticate"))
            refused(contract.check, *without(e401, "www-authenticate", "Basic realm=x"))
            page = real(srv, "GET", "/ui/index.html")
            etag = page[5]["etag"]
            fresh = real(srv, "GET", "/ui/index.html", None, {"If-None-Match": etag})
            head = real(srv, "HEAD", "/openapi.json")
            assert (page[4], fresh[4], head[4]) == (200, 304, 200), (page[4], fresh[4], head[4])
            for x in (page, fresh, head):
                for h in ("etag", "cache-control", "content-security-policy", "x-content-type-options"):
                    refused(contract.check, *without(x, h))
            refused(contract.check, *without(page, "etag", "W/1"))
            refused(contract.check, *without(page, "cache-control", "max-age=86400"))
            refused(contract.check, *without(head, "content-type", "text/html"))
            refused(contract.check, *without(page, "content-type", "application/json"))
        with Server(args.server, "--rate-limit", "0.01", "--rate-burst", "1") as srv:
            real(srv, "GET", "/v1/losses")
            e429 = real(srv, "GET", "/v1/losses")
            assert e429[4] == 429, e429[4:7]
            refused(contract.check, *without(e429, "retry-after"))
            refused(contract.check, *without(e429, "retry-after", "soon"))
            refused(contract.check, *without(e429, "retry-after", "0"))
            # (a 429 of a path the document lacks: the shared response's headers still)
            e429 = real(srv, "GET", "/nope")
            refused(contract.check, *without(e429, "retry-after"))


@test
def contract_document_copy(args):
    """Real exchanges that pass against proto/openapi.json fail against a copy altered where
    they go: a required response header with another schema, a media type taken away, a
    status taken away, a response schema changed."""
    with Server(args.server) as srv:
        asset = real(srv, "GET", "/openapi.json")
        e405 = real(srv, "POST", "/metrics", {})
        loss = real(srv, "POST", "/v1/loss", NOTE, JSON)

    def etag(doc):
        doc["components"]["headers"]["ETag"]["schema"]["pattern"] = "^W/"
    refused(against, altered(etag), contract.check, *asset)

    def media(doc):
        doc["paths"]["/openapi.json"]["get"]["responses"]["200"]["content"] = {"text/plain": {}}
    refused(against, altered(media), contract.check, *asset)

    def allow(doc):
        doc["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"]["schema"]["pattern"] = "^PATCH$"
    refused(against, altered(allow), contract.check, *e405)

    def status(doc):
        del doc["paths"]["/v1/loss"]["post"]["responses"]["200"]
    refused(against, altered(status), contract.check, *loss)


@test
def contract_raw_sockets(args):
    """Raw-socket answers (server.parse_raw with the request): a real 413 decided from the
    headers passes, and fails against a copy of the document without 413 on /v1/loss; a
    malformed request answered 200 fails, and an error body without its code;
    libmicrohttpd's own answers (no Content-Type: its 400 and 431 pages) are not the
    contract's, but with a Content-Type they are checked (and a 431 is not the server's)."""
    big = (b"POST /v1/loss HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           b"Content-Length: 1000000000\r\n\r\n")
    bad = b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad header\r\n\r\n"
    with Server(args.server) as srv:
        out = raw(srv.port, big)  # (checked: each passes)
        mhd = raw(srv.port, bad)
        healthy = raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        long = raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    assert [parse_raw(x)[0] for x in (out, mhd, healthy, long)] == [413, 400, 200, 431], (out, mhd, long)

    def no413(doc):
        del doc["paths"]["/v1/loss"]["post"]["responses"]["413"]
    refused(against, altered(no413), contract.check_raw, big, out)
    refused(contract.check_raw, bad, healthy)
    coded = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    refused(contract.check_raw, bad, coded)
    contract.check_raw(bad, long)
    refused(contract.check_raw, bad, long.replace(b"\r\n\r\n", b"\r\nContent-Type: text/html\r\n\r\n", 1))


@test
def contract_proxy_pages(args):
    """tests_proxy's tell: nginx's own HTML page is not checked, the server's JSON answer
    through nginx is -- a 502 of the server's would fail (not a status it has)."""
    page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway" \
           "</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
    assert nginx_own(502, {"content-type": "text/html", "server": "nginx"}, page)
    err = {"error": "bad gateway", "code": "draining", "field": ""}
    hdrs = {"content-type": "application/json", "server": "nginx"}
    assert not nginx_own(502, hdrs, err)
    refused(contract.check, "POST", "/v1/loss", JSON, b"{}", 502, hdrs, err, 60)


@test
def contract_client_logs(args):
    """A client's recorded exchanges (check_log, as tests_client_python's installed package and
    make test-js-run's node tests write them): maskloss.Client's real exchanges pass, and fail
    against a copy of the document whose predictions answer needs another key."""
    import maskloss.client
    check_python_client(maskloss.client)
    with tempfile.TemporaryDirectory() as tmp, Server(args.server) as srv:
        log = os.path.join(tmp, "log.jsonl")
        once = maskloss.client.Client._request_once

        def record(self, method, path, body, headers, resend):
            resp, data = once(self, method, path, body, headers, resend)
            with open(log, "a") as f:
                f.write(json.dumps({"method": method, "path": path, "headers": headers,
                                    "body": None if body is None else base64.b64encode(body).decode(),
                                    "status": resp.status, "response_headers": dict(resp.getheaders()),
                                    "response_body": base64.b64encode(data).decode()}) + "\n")
            return resp, data
        maskloss.client.Client._request_once = record
        try:
            with maskloss.client.Client(f"http://127.0.0.1:{srv.port}") as c:
                m = c.monitor("m")
                m.create({"loss": "sigmoid_cross_entropy", "classes": ["a", "b"], "prediction_ttl": "1d"})
                m.predictions(["u1"], logits=[[0.5, 0.1]])
                m.labels([{"id": "u1", "class": "a", "value": 1}])
                c.loss("sigmoid_cross_entropy", labels=NOTE["labels"], logits=NOTE["logits"])
        finally:
            maskloss.client.Client._request_once = once
        assert contract.check_log(log) == 4, open(log).read()

        def predictions(doc):
            op = doc["paths"]["/v1/monitors/{name}/predictions"]["post"]
            op["responses"]["200"] = copy.deepcopy(op["responses"]["200"])
            op["responses"]["200"]["content"]["application/json"]["schema"] = {"required": ["nope"]}
        refused(against, altered(predictions), contract.check_log, log)


@test
def contract_relay(args):
    """A client run as a subprocess (curl here, as the README's examples are run) through
    server.recorded: its exchanges pass, a HEAD's answer included (no body whatever its
    Content-Length); the same exchanges fail against a copy of the document without the
    status /v1/loss answered; and a client that bypasses the relay fails the count."""
    import subprocess

    def curl(*argv):
        return subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *argv],
                              capture_output=True, text=True, timeout=30).stdout

    body = json.dumps(NOTE)
    with Server(args.server) as srv:
        with recorded(srv.port, 3) as rec:
            base = f"http://127.0.0.1:{rec.port}"
            assert curl("-H", "Content-Type: application/json", "-d", body, f"{base}/v1/loss") == "200"
            # (one connection: the HEAD's answer, then the next one's)
            assert curl("-I", f"{base}/openapi.json", "-o", "/dev/null", f"{base}/healthz") == "200200"
        assert rec.checked == 3, rec.checked

        def no200(doc):
            del doc["paths"]["/v1/loss"]["post"]["responses"]["200"]

        def through_altered():
            with recorded(srv.port, 1) as rec:
                curl("-H", "Content-Type: application/json", "-d", body, f"http://127.0.0.1:{rec.port}/v1/loss")
        assert "lists" in refused(against, altered(no200), through_altered)

        def bypassed():
            with recorded(srv.port, 1):
                assert curl(f"http://127.0.0.1:{srv.port}/healthz") == "200"
        assert "0 exchanges recorded" in refused(bypassed)


@test
def contract_relay_tls(args):
    """The relay in front of an HTTPS server (server.recorded: TLS at both ends, the server's
    certificate shown): curl trusting that certificate gets its answers through it, checked,
    and they fail against a document without the status; curl trusting another certificate
    is refused by the relay as by the server (exit 60), and nothing is relayed or recorded."""
    import subprocess
    from tests_tls import make_cert

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        other, _ = make_cert(tmp, "other")

        def curl(ca, url, *argv):
            return subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca,
                                   *argv, url], capture_output=True, text=True, timeout=30)

        with Server(args.server, "--tls-cert", cert, "--tls-key", key) as srv:
            with recorded(srv.port, 2) as rec:
                url = f"https://127.0.0.1:{rec.port}"
                assert curl(cert, f"{url}/v1/loss", "-H", "Content-Type: application/json",
                            "-d", json.dumps(NOTE)).stdout == "200"
                assert curl(cert, f"{url}/readyz").stdout == "200"
                assert curl(other, f"{url}/readyz").returncode == 60
            assert rec.checked == 2, rec.checked

            def no200(doc):
                del doc["paths"]["/readyz"]["get"]["responses"]["200"]

            def through_altered():
                with recorded(srv.port, 1) as rec:
                    curl(cert, f"https://127.0.0.1:{rec.port}/readyz")
            assert "lists" in refused(against, altered(no200), through_altered)


@test
def contract_batch_entries(args):
    """/v1/batch answers an entry it cannot take with an error object in its place (200 for
    the envelope): such an entry, not a request of the document's, passes; an entry answered
    with a result must be one (the same entry answered as taken fails), and the answers must
    number the requests."""
    ok = {"loss": "sigmoid_cross_entropy", "labels": [[1, 0]], "logits": [[0.2, 0.8]], "dtype": "float64"}
    bad = {"loss": 3, "labels": "x"}
    with Server(args.server) as srv:
        x = real(srv, "POST", "/v1/batch", {"requests": [ok, bad]}, JSON)
    answers = x[6]["responses"]
    assert x[4] == 200 and "error" not in answers[0] and "error" in answers[1], x[4:7]
    taken = copy.deepcopy(x)
    taken[6]["responses"][1] = answers[0]  # (as if the server had evaluated the bad entry)
    assert "does not validate" in refused(contract.check, *taken)
    short = copy.deepcopy(x)
    short[6]["responses"] = answers[:1]
    assert "1 answers to 2 requests" in refused(contract.check, *short)
