"""The OpenAPI document (issue 18): served byte for byte, generated from its YAML source, and
the same routes, methods and statuses as the server -- a route or status the server has but
the document lacks, or the reverse, fails here. (contract.py checks the traffic of the suites
it lists against the document; this module's is checked too.)"""
import copy
import hashlib
import importlib.util
import json
import os
import re

import contract
from common import ROOT, test
from server import Server, exchange

DOC_PATH = os.path.join(ROOT, "proto", "openapi.json")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
# Values for the templates' parameters: a loss, its one version, a monitor that exists, a file.
PARAMS = {"model": "sigmoid_cross_entropy", "version": "1", "name": "m", "file": "ui.js"}


def load_generator():
    spec = importlib.util.spec_from_file_location("openapi_gen", os.path.join(ROOT, "scripts", "openapi.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def doc_bytes():
    with open(DOC_PATH, "rb") as f:
        return f.read()


def call(srv, method, path, body=None, headers=None):
    conn = srv.connect(30)
    try:
        return exchange(conn, method, path, body, headers)
    finally:
        conn.close()


@test
def openapi_generated_from_yaml(args):
    """proto/openapi.json is what scripts/openapi.py makes of proto/openapi.yaml, and the JSON
    Schemas of the protocol are in it as the files are (one source, referenced by $ref)."""
    gen = load_generator()
    assert doc_bytes().decode() == gen.generate(), \
        "proto/openapi.json differs from proto/openapi.yaml's conversion: run scripts/openapi.py"
    doc = json.loads(doc_bytes())
    with open(os.path.join(ROOT, "proto", "openapi.yaml")) as f:
        yaml_text = f.read()
    for name, comp in gen.EXTERNAL.items():
        assert f"$ref: '{name}" in yaml_text, f"the YAML does not refer to {name}"
        with open(os.path.join(ROOT, "proto", name)) as f:
            schema = json.load(f)
        schema.pop("$id")
        schema.pop("$schema")
        # The copy, its references pointed back at its own root, is the file.
        copied = json.dumps(doc["components"]["schemas"][comp], sort_keys=True)
        copied = copied.replace(f'"#/components/schemas/{comp}/', '"#/')
        assert json.loads(copied) == schema, comp
    # Every local reference resolves; operation ids are unique.
    refs = re.findall(r'"\$ref": "([^"]+)"', doc_bytes().decode())
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            if isinstance(node, list):
                assert part.isdigit() and int(part) < len(node), f"{ref}: no {part}"
                part = int(part)
            else:
                assert part in node, f"{ref}: no {part}"
            node = node[part]
    ops = [op["operationId"] for item in doc["paths"].values() for m, op in item.items() if m in
           ("get", "put", "post", "delete")]
    assert len(ops) == len(set(ops)), sorted(ops)
    assert doc["openapi"].startswith("3.1"), doc["openapi"]


@test
def openapi_served(args):
    """GET /openapi.json and /v1/openapi.json: the committed file's bytes, as JSON, with an
    ETag and 304; HEAD; no token even with --auth-file."""
    want = doc_bytes()
    with Server(args.server) as srv:
        etags = set()
        for path in ("/openapi.json", "/v1/openapi.json"):
            conn = srv.connect(30)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            h = {k.lower(): v for k, v in resp.getheaders()}
            conn.close()
            assert resp.status == 200, (path, resp.status)
            assert body == want, (path, len(body), len(want))
            assert h["content-type"] == "application/json", h
            etags.add(h["etag"])
            st, h304, _ = call(srv, "GET", path, headers={"If-None-Match": h["etag"]})
            assert st == 304, (path, st)
            st, hh, text = call(srv, "HEAD", path)
            assert st == 200 and text == "" and hh["content-length"] == str(len(want)), (st, hh)
            st, _, _ = call(srv, "POST", path, body={})
            assert st == 405, st
        assert len(etags) == 1, etags
    auth = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"openapi-auth-{os.getpid()}.txt")
    with open(auth, "w") as f:
        f.write(hashlib.sha256(b"tok-evaluate-0123456789abcdef").hexdigest() + " ci evaluate\n")
    try:
        with Server(args.server, "--auth-file", auth) as srv:
            st, _, doc = call(srv, "GET", "/openapi.json")
            assert st == 200 and doc["openapi"].startswith("3.1"), st
            st, _, _ = call(srv, "GET", "/v1/losses")
            assert st == 401, st
    finally:
        os.unlink(auth)


def server_route_paths():
    """The server's route table (server/metrics.c route_paths), as it names routes."""
    with open(os.path.join(ROOT, "server", "metrics.c")) as f:
        text = f.read()
    table = re.search(r"route_paths\[MLS_ROUTE_COUNT\] = \{(.*?)\};", text, re.S).group(1)
    return [p for p in re.findall(r'"([^"]*)"', table) if p != "other"]


def server_statuses():
    """The statuses the server sends: its errors' (server/errors.c) and the successes it
    counts (server/metrics.h MLS_CODES below 400; 408 and 500 are counted but never sent)."""
    with open(os.path.join(ROOT, "server", "errors.c")) as f:
        errors = {int(s) for s in re.findall(r"\[MLS_ERR_\w+\] = \{[^}]*, (\d{3})\}", f.read())}
    with open(os.path.join(ROOT, "server", "metrics.h")) as f:
        codes = re.search(r"#define MLS_CODES[^{]*\{([^}]*)\}", f.read()).group(1)
    return errors | {int(c) for c in re.findall(r"\d+", codes) if int(c) < 400}


def server_error_codes():
    with open(os.path.join(ROOT, "server", "errors.c")) as f:
        return set(re.findall(r'\[MLS_ERR_\w+\] = \{"(\w+)"', f.read()))


def probe(srv, doc):
    """What the server answers to every method on every path of the document and of its own
    route table: {(template, method): (status, code, Allow)}."""
    templates = set(doc["paths"]) | {p for p in server_route_paths() if p != "/ui"} | {"/", "/ui/{file}"}
    seen = {}
    for template in sorted(templates):
        path = re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], template)
        for method in METHODS:
            if method == "DELETE" and template == "/v1/monitors/{name}":
                path_m = "/v1/monitors/gone"  # delete another, so that m stays for the rest
                assert call(srv, "PUT", path_m, {"loss": "sigmoid_cross_entropy"})[0] == 201
            else:
                path_m = path
            body = {} if method in ("POST", "PUT", "PATCH") else None
            st, h, payload = call(srv, method, path_m, body,
                                  {"Content-Type": "application/json"} if body is not None else None)
            code = payload.get("code") if isinstance(payload, dict) else None
            seen[(template, method)] = (st, code, h.get("allow"))
    return seen


def compare(seen, doc):
    """The differences between what the server answered (probe) and the document."""
    out = []
    for (template, method), (st, code, allow) in sorted(seen.items()):
        item = doc["paths"].get(template)
        routed = code != "not_found"
        if item is None:
            if routed:
                out.append(f"the server answers {method} {template} ({st}), the document has no such path")
            continue
        documented = ("get" if method == "HEAD" else method.lower()) in item
        if documented and not routed:
            out.append(f"the document has {method} {template}, the server answers 404 not_found")
        elif not documented and st != 405:
            out.append(f"the server answers {method} {template} with {st}, the document has no {method} there")
        elif not documented:
            want = {m.upper() for m in item if m in ("get", "put", "post", "delete")}
            want |= {"HEAD"} if "GET" in want else set()
            got = {m.strip() for m in (allow or "").split(",") if m.strip()}
            if got != want:
                out.append(f"{template}: the server allows {sorted(got)}, the document {sorted(want)}")
        elif str(st) not in item["get" if method == "HEAD" else method.lower()]["responses"]:
            out.append(f"{method} {template}: the server answered {st}, which the document does not list")
    for p in server_route_paths():
        if p != "/ui" and p not in doc["paths"]:
            out.append(f"the server's route {p} is not in the document")
    statuses = {int(s) for item in doc["paths"].values() for m, op in item.items()
                if isinstance(op, dict) and "responses" in op for s in op["responses"]}
    have = server_statuses()
    if statuses != have:
        out.append(f"statuses: the server's not in the document {sorted(have - statuses)}, "
                   f"the document's not the server's {sorted(statuses - have)}")
    enum = set(doc["components"]["schemas"]["Error"]["properties"]["code"]["anyOf"][1]["enum"])
    if enum != server_error_codes():
        out.append(f"error codes: the server's not in the document {sorted(server_error_codes() - enum)}, "
                   f"the document's not the server's {sorted(enum - server_error_codes())}")
    return out


@test
def openapi_routes_and_statuses(args):
    """Every route and method the server answers is in the document and every one the document
    has is answered (not 404); the others are 405 with the document's methods in Allow; the
    statuses and error codes of the server (errors.c, MLS_CODES) are the document's. A document
    missing a path, a method or a status fails (checked on altered copies)."""
    doc = json.loads(doc_bytes())
    with Server(args.server) as srv:
        assert call(srv, "PUT", "/v1/monitors/m", {"loss": "sigmoid_cross_entropy"})[0] == 201
        seen = probe(srv, doc)
    problems = compare(seen, doc)
    assert not problems, "\n".join(problems)
    # The comparison can fail: a path, a method, a status and an error code taken out.
    for alter in (lambda d: d["paths"].pop("/v1/batch"),
                  lambda d: d["paths"]["/v1/monitors/{name}"].pop("delete"),
                  lambda d: [op["responses"].pop("409", None) for item in d["paths"].values()
                             for op in item.values() if isinstance(op, dict) and "responses" in op],
                  lambda d: d["components"]["schemas"]["Error"]["properties"]["code"]["anyOf"][1]["enum"].pop()):
        bad = copy.deepcopy(doc)
        alter(bad)
        assert compare(seen, bad), "an altered document passed"


@test
def openapi_contract_catches(args):
    """contract.check refuses what the document does not say: an unlisted status, a body of
    the wrong shape, a request the document does not describe that the server took."""
    ok = {"loss": 0.5, "shape": [], "loss_name": "x", "reduction": "mean", "dtype": "float64"}
    contract.check("POST", "/v1/loss", {}, b'{"loss": "x"}', 200, {"content-type": "application/json"}, ok, 10)
    bad = [
        ("POST", "/v1/loss", b'{"loss": "x"}', 409, ok),  # a status /v1/loss does not have
        ("POST", "/v1/loss", b'{"loss": "x"}', 200, dict(ok, dtype="float16")),  # the body
        ("POST", "/v1/loss", b'{"labels": [1]}', 200, ok),  # a request without its loss
        ("GET", "/v1/loss", None, 200, ok),  # a method the path does not have
        ("GET", "/v1/nope", None, 200, ok),  # a path the document does not have
        ("GET", "/healthz", None, 200, {"status": "ok", "extra": 1}),
        ("POST", "/v1/loss", b'{"loss": "x"}', 422, {"error": "e", "code": "no_such_code", "field": ""}),
    ]
    for method, path, req, st, payload in bad:
        try:
            contract.check(method, path, {}, req, st, {"content-type": "application/json"}, payload, 10)
        except AssertionError:
            continue
        raise AssertionError(f"contract.check passed {method} {path} {st} {payload}")
