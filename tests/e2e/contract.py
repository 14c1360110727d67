"""The e2e traffic checked against the OpenAPI document (proto/openapi.json, generated from
proto/openapi.yaml): every exchange while ACTIVE -- the path and method are the document's
(HEAD as GET), the status is one the operation lists, the response headers the document
declares are there when required and match their schema (Retry-After, Allow,
WWW-Authenticate, ETag, Cache-Control...), the Content-Type is one it lists, the body (JSON)
validates against that status's schema, and a request the server accepted (2xx) validates
against the operation's request schema. python3-jsonschema does the bodies.

The exchanges come from server.exchange(), server.read_checked() and server.checked() (a
test's own http.client or urllib), server.parse_raw(out, request) (raw sockets: check_raw,
a malformed request by its status and error body only), and the recordings of the client
packages (check_log: tests_client_python's Python package, and `make test-js-run`'s node
tests through clients/js/test/record.js).

run.py sets ACTIVE for every e2e test, on SQLite and on PostgreSQL (--pg) -- there is no list
of suites to forget a new one in --, but not for those marked plain_only: a timing or load figure, whose
clients the checks would slow. tests_proxy's traffic goes through nginx, whose own answers
(502, 504, its HTML 400, 413 and 429) are not the server's: tests_proxy.nginx_own tells them
apart (exchange(foreign=...)).
"""
import json
import os
import re

import openapi_shape

ACTIVE = False

# python-jsonschema takes about 0.1 ms an element of a tensor (each through the schema's
# anyOf): a long array is validated by its first and last SAMPLE items (the schemas constrain
# items alike, and only short arrays -- shapes -- by their length), and a request body larger
# than this is not parsed again (its status and path are still checked): parsing megabytes in
# a test's client threads would slow the clients whose timing the test measures.
SAMPLE = 8
MAX_VALIDATED_BYTES = 256 << 10
# And a test validates the bodies of its first BODIES exchanges of each operation, status and
# direction; the rest get their path, method, status and media type checked. A load test sends
# thousands of the same exchange (tests_v1's concurrency: 12800, 333 s validated in CI instead
# of 15) and the thousandth body tells nothing the first ones did not.
BODIES = 25
_bodies = {}


def reset():
    """A new test: every operation's budget of validated bodies again (run.py)."""
    _bodies.clear()


def _take(key):
    n = _bodies.get(key, 0)
    _bodies[key] = n + 1
    return n < BODIES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH = os.path.join(ROOT, "proto", "openapi.json")
# What any request may get before its route and method are looked at (README "Errors"):
# a malformed or ambiguous request, a token missing or without the scope, a quota, a body
# too large or encoded, a Transfer-Encoding not implemented, a server draining or starting.
BEFORE_ROUTING = {400, 401, 403, 413, 415, 429, 501, 503}

_doc = None
_routes = None


def document():
    global _doc, _routes
    if _doc is None:  # (a test's client threads may get here together: both set at the end)
        with open(PATH) as f:
            doc = json.load(f)
        routes = []
        for template, item in doc["paths"].items():
            rx = "^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)) + "$"
            routes.append((template, re.compile(rx), item))
        # Literal paths before templates: /v2/health/ready is not /v2/models/{model}.
        routes.sort(key=lambda r: "{" in r[0])
        _routes = routes
        _doc = doc
    return _doc


def route(path):
    """(template, path item) of a request path (its query left out), or (None, None)."""
    document()
    path = path.split("?", 1)[0]
    for template, rx, item in _routes:
        if rx.match(path):
            return template, item
    return None, None


def _resolve(node):
    return openapi_shape.deref(document(), node)


_validators = {}  # by id() of schemas that live as long as the module: the document's, these
ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}


def sampled(x):
    """x with every list longer than 2 * SAMPLE cut to its first and last SAMPLE items."""
    if isinstance(x, list):
        if len(x) > 2 * SAMPLE:
            x = x[:SAMPLE] + x[-SAMPLE:]
        return [sampled(v) for v in x]
    if isinstance(x, dict):
        return {k: sampled(v) for k, v in x.items()}
    return x


def validate(instance, schema, what):
    """Raises AssertionError naming `what` if instance (sampled) does not validate."""
    # (imported here: server.py, which the benchmarks and the cluster test import too, imports
    # this module, and only the e2e tests need python3-jsonschema)
    import jsonschema
    import jsonschema.exceptions
    validator = _validators.get(id(schema))
    if validator is None:
        resolver = jsonschema.RefResolver("", document())
        validator = _validators[id(schema)] = jsonschema.Draft202012Validator(schema, resolver=resolver)
    error = jsonschema.exceptions.best_match(validator.iter_errors(sampled(instance)))
    if error is not None:
        raise AssertionError(f"contract: {what} does not validate against the OpenAPI document: "
                             f"{error.message} at {list(error.absolute_path)} "
                             f"(schema {list(error.absolute_schema_path)})")


def _media(headers):
    return (headers.get("content-type") or "").split(";")[0].strip().lower()


# A status answered before the route's operation is known (BEFORE_ROUTING, 404, 405): its
# headers are those of the shared response the document gives it.
SHARED = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
          405: "MethodNotAllowed", 413: "TooLarge", 415: "UnsupportedMediaType",
          429: "TooManyRequests", 501: "NotImplemented", 503: "Unavailable"}


def _header_value(value, schema):
    """A header's text as the instance its schema describes (a header is always text: an
    integer is its digits)."""
    if _resolve(schema).get("type") == "integer":
        return int(value) if re.fullmatch(r"[0-9]+", value) else value
    return value


def _headers(resp, resp_headers, what):
    """The response headers the document declares: present when required, and matching their
    schema when present (Retry-After, Allow, WWW-Authenticate, ETag, Cache-Control...)."""
    for name, spec in (resp.get("headers") or {}).items():
        spec = _resolve(spec)
        value = resp_headers.get(name.lower())
        if value is None:
            assert not spec.get("required"), f"contract: {what}: no {name} header, which the document requires"
            continue
        if "schema" in spec:
            validate(_header_value(value, spec["schema"]), spec["schema"], f"{what}: header {name}: {value!r}")


def _error_body(status, payload, what, resp_headers=None):
    if resp_headers is not None and status in SHARED:
        _headers(_resolve({"$ref": f"#/components/responses/{SHARED[status]}"}), resp_headers, what)
    if isinstance(payload, dict) and _take(("error", status)):
        validate(payload, ERROR_SCHEMA, f"{what}: the {status} body")


def check(method, path, req_headers, req_body, status, resp_headers, payload, raw_len=0):
    """Checks one exchange against the document; AssertionError says what differs."""
    method = method.upper()
    what = f"{method} {path} -> {status}"
    template, item = route(path)
    if template is None:
        assert status == 404 or status in BEFORE_ROUTING, f"contract: {what}: no such path in the document, so 404"
        return _error_body(status, payload, what, resp_headers)
    if method == "OPTIONS":  # a CORS preflight (--cors-origin): 204, or refused
        assert status in {204, 405} | BEFORE_ROUTING, f"contract: {what}: a preflight is 204 or an error"
        return None
    op = item.get("get" if method == "HEAD" else method.lower())
    if op is None:
        assert status in {405} | BEFORE_ROUTING, f"contract: {what}: {template} has no {method}, so 405"
        return _error_body(status, payload, what, resp_headers)
    responses = op["responses"]
    assert str(status) in responses, (f"contract: {what}: {method} {template} lists "
                                      f"{sorted(responses)}, not {status}")
    resp = _resolve(responses[str(status)])
    _headers(resp, resp_headers, what)
    content = resp.get("content")
    body_present = raw_len > 0 and method != "HEAD"
    media = _media(resp_headers)
    if not content:
        assert not body_present, f"contract: {what}: the document says no body"
    elif body_present or media:  # (HEAD: the Content-Type GET's body would have)
        assert media in content, f"contract: {what}: Content-Type {media!r}, the document lists {sorted(content)}"
    if content and body_present:
        schema = content[media].get("schema")
        if media == "application/json" and schema and _take((template, method, status, "response")):
            validate(payload, schema, f"{what}: the response")
    # A request the server took must be one the document describes: its query, its body.
    if 200 <= status < 300:
        _query(path, item, op, what)
    rb = op.get("requestBody")
    if rb and 200 <= status < 300 and req_body is not None and len(req_body) <= MAX_VALIDATED_BYTES:
        hdrs = {k.lower(): v for k, v in (req_headers or {}).items()}
        if "inference-header-content-length" in hdrs:
            return None  # v2 binary tensor data: a JSON header and bytes
        media = _media(hdrs) or "application/json"
        if media not in rb["content"] and "*/*" in rb["content"]:
            media = "*/*"  # (v2 reads no Content-Type: its body is JSON whatever it says)
        assert media in rb["content"], f"contract: {what}: request Content-Type {media!r} not in the document"
        schema = rb["content"][media].get("schema")
        if media in ("application/json", "*/*") and schema and _take((template, method, status, "request")):
            body = _taken(template, json.loads(req_body), payload)
            validate(body, schema, f"{what}: the request")
    return None


def _query(path, item, op, what):
    """The query arguments of a request taken: each one the operation (or its path) declares,
    its value valid against the parameter's schema (an array's repeated, form style); none of
    an operation marked x-query-ignored (the static files) is read."""
    import urllib.parse
    query = path.partition("?")[2]
    if not query or op.get("x-query-ignored"):
        return  # (a static file reads no query)
    declared = {}
    for p in item.get("parameters", []) + op.get("parameters", []):
        p = _resolve(p)
        if p.get("in") == "query":
            declared[p["name"]] = _resolve(p["schema"])
    given = {}
    for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
        given.setdefault(k, []).append(v)
    for k, values in given.items():
        assert k in declared, (f"contract: {what}: query argument {k!r} taken, but the operation "
                               f"declares {sorted(declared) or 'none'}")
        schema = declared[k]
        value = values if schema.get("type") == "array" else values[0]
        assert schema.get("type") == "array" or len(values) == 1, \
            f"contract: {what}: query argument {k!r} taken {len(values)} times"
        validate(value, schema, f"{what}: query argument {k!r}")


def _taken(template, body, payload):
    """What of a request body the server took: all of it, but for /v1/batch, whose entries
    answered by an error object in their place were refused one by one (the envelope still
    200): only the others must be requests the document describes."""
    if template == "/v1/batch" and isinstance(body, dict) and isinstance(body.get("requests"), list) \
            and isinstance(payload, dict) and isinstance(payload.get("responses"), list):
        answers = payload["responses"]
        assert len(answers) == len(body["requests"]), \
            f"contract: POST /v1/batch: {len(answers)} answers to {len(body['requests'])} requests"
        kept = [e for e, a in zip(body["requests"], answers) if not (isinstance(a, dict) and "error" in a)]
        return dict(body, requests=kept)
    return body


def parse_response(data, head_only=False):
    """(status, lower-cased headers, body bytes) of the first complete HTTP response in data,
    or None if it is not whole yet (a Content-Length body; the server sends no other). The
    answer to a HEAD (head_only) has no body whatever its Content-Length says."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = 0 if head_only else int(headers.get("content-length", "0"))
    if len(body) < n:
        return None
    return status, headers, body[:n]


def payload_of(headers, body):
    """The body as exchange() gives it: parsed JSON for application/json, else text."""
    if _media(headers) == "application/json" and body:
        return json.loads(body)
    return body.decode(errors="replace")


# libmicrohttpd's own answers to HTTP it cannot parse (the document's description: "not part
# of this contract"): on these statuses only, and without a Content-Type (the server's
# answers all have one, but 204 and 304).
MHD_STATUSES = {400, 413, 414, 431, 501, 505}


def _mhd_page(status, headers, body):
    return status in MHD_STATUSES and "content-type" not in headers


def check_raw(request, response):
    """Checks a response read from a socket (bytes) against the document, given the bytes of
    the request sent for it: a request whose line and headers parse is checked as exchange()'s
    are (its body when it has a Content-Length); one that does not parse -- deliberately
    malformed -- only by its status (one any request may get) and error body. A response not
    whole is not checked (the test says why it has none)."""
    got = parse_response(response, request.startswith(b"HEAD "))
    if got is None:
        return
    status, headers, body = got
    if _mhd_page(status, headers, body):
        return
    head, sep, rest = request.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    # (the absolute form of a target, RFC 9112 3.2.2, routed by its path)
    m = re.fullmatch(r"([A-Z]+) (?:[A-Za-z][A-Za-z0-9+.-]*://[^/\s]*)?(/\S*) HTTP/1\.[01]", lines[0])
    req_headers = {}
    for line in lines[1:]:
        k, colon, v = line.partition(":")
        if not colon or k != k.strip():
            m = None  # (a malformed header line)
            break
        req_headers[k.strip().lower()] = v.strip()
    payload = payload_of(headers, body)
    if m is None or not sep:
        assert status in {404, 405} | BEFORE_ROUTING, f"contract: a malformed request answered {status}"
        return _error_body(status, payload, f"a malformed request -> {status}", headers)
    req_body = None
    n = req_headers.get("content-length", "")
    if n.isdigit() and "transfer-encoding" not in req_headers and len(rest) >= int(n):
        req_body = rest[:int(n)]
    return check(m.group(1), m.group(2), req_headers, req_body, status, headers, payload, len(body))


def check_log(path):
    """Checks the exchanges a client recorded, one JSON object a line: method, path, request
    headers, request body (base64 or null), status, response headers, response body (base64).
    The number checked."""
    import base64
    n = 0
    with open(path) as f:
        for line in f:
            x = json.loads(line)
            req = None if x.get("body") is None else base64.b64decode(x["body"])
            headers = {k.lower(): v for k, v in x["response_headers"].items()}
            data = base64.b64decode(x["response_body"])
            check(x["method"], x["path"], x["headers"], req, x["status"], headers,
                  payload_of(headers, data), len(data))
            n += 1
    return n


def use_document(path):
    """Checks against the document at path from now on (a copy altered on purpose, to see a
    check fail)."""
    global PATH, _doc, _routes
    PATH, _doc, _routes = path, None, None
    _validators.clear()
    _bodies.clear()


if __name__ == "__main__":
    # python3 tests/e2e/contract.py LOG [MIN] [--document PATH]: a client's recorded exchanges
    # checked (make test-js-run); fails with fewer than MIN of them (a recorder that recorded
    # nothing), or on any exchange the document does not describe.
    import sys
    argv = sys.argv[1:]
    if "--document" in argv:
        i = argv.index("--document")
        use_document(argv[i + 1])
        del argv[i:i + 2]
    checked = check_log(argv[0])
    least = int(argv[1]) if len(argv) > 1 else 1
    assert checked >= least, f"{argv[0]}: {checked} exchanges recorded, fewer than {least}"
    print(f"contract: {checked} exchanges of {argv[0]} checked against {PATH}")
