"""The e2e traffic checked against the OpenAPI document (proto/openapi.json, generated from
proto/openapi.yaml): every exchange of server.exchange() while ACTIVE -- the path and method
are the document's (HEAD as GET), the status is one the operation lists, the body (JSON)
validates against that status's schema, and a request the server accepted (2xx) validates
against the operation's request schema. python3-jsonschema does the bodies.

run.py sets ACTIVE for the tests of the modules in SUITES -- every suite but tests_proxy and
the PostgreSQL harness's tests_pg_* (not yet checked) --, but not for those marked
plain_only: a timing or load figure, whose clients the checks would slow. tests_proxy's
traffic goes through nginx, whose own answers (502, its HTML 413 and 429) are not the
server's.
"""
import json
import os
import re

SUITES = {"tests_v1", "tests_v2", "tests_hardening", "tests_http_threads", "tests_monitors",
          "tests_monitor_rollup", "tests_monitor_reference", "tests_monitor_guards",
          "tests_monitor_attacks", "tests_late", "tests_late_attacks", "tests_late_review2",
          "tests_cli_monitor", "tests_auth", "tests_auth_attacks", "tests_tls", "tests_quota",
          "tests_quota_attacks", "tests_ui", "tests_client_auth", "tests_client_python",
          "tests_cli_auth", "tests_openapi"}
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
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = document()
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


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


def _error_body(status, payload, what):
    if isinstance(payload, dict) and _take(("error", status)):
        validate(payload, ERROR_SCHEMA, f"{what}: the {status} body")


def check(method, path, req_headers, req_body, status, resp_headers, payload, raw_len=0):
    """Checks one exchange against the document; AssertionError says what differs."""
    method = method.upper()
    what = f"{method} {path} -> {status}"
    template, item = route(path)
    if template is None:
        assert status == 404 or status in BEFORE_ROUTING, f"contract: {what}: no such path in the document, so 404"
        return _error_body(status, payload, what)
    if method == "OPTIONS":  # a CORS preflight (--cors-origin): 204, or refused
        assert status in {204, 405} | BEFORE_ROUTING, f"contract: {what}: a preflight is 204 or an error"
        return None
    op = item.get("get" if method == "HEAD" else method.lower())
    if op is None:
        assert status in {405} | BEFORE_ROUTING, f"contract: {what}: {template} has no {method}, so 405"
        return _error_body(status, payload, what)
    responses = op["responses"]
    assert str(status) in responses, (f"contract: {what}: {method} {template} lists "
                                      f"{sorted(responses)}, not {status}")
    resp = _resolve(responses[str(status)])
    content = resp.get("content")
    body_present = raw_len > 0 and method != "HEAD"
    if not content:
        assert not body_present, f"contract: {what}: the document says no body"
    elif body_present:
        media = _media(resp_headers)
        assert media in content, f"contract: {what}: Content-Type {media!r}, the document lists {sorted(content)}"
        schema = content[media].get("schema")
        if media == "application/json" and schema and _take((template, method, status, "response")):
            validate(payload, schema, f"{what}: the response")
    # A request the server took must be one the document describes.
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
            body = json.loads(req_body)
            validate(body, schema, f"{what}: the request")
    return None
