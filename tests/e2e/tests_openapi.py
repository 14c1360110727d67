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
import time

import contract
from common import ROOT, test
from server import Server, exchange, read_checked

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
            st, h, _, body = read_checked(conn.getresponse(), "GET", path)  # (the bytes, checked)
            conn.close()
            assert st == 200, (path, st)
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


# A valid value for each query argument the document declares somewhere, and two it declares
# nowhere (one a user might think configures a loss).
QUERY_VALUES = {"force": "true", "step": "1m", "from": "0", "to": "60", "class": "0", "slice": "k=v",
                "x": "1", "reduction": "none"}


def declared_query(doc, template, method):
    """The query arguments the document declares for an operation (its path's and its own)."""
    item = doc["paths"][template]
    op = item["get" if method == "HEAD" else method.lower()]
    params = [contract._resolve(p) for p in item.get("parameters", []) + op.get("parameters", [])]
    return {p["name"] for p in params if p.get("in") == "query"}


def probe_query(srv, doc):
    """{(template, method, argument): whether the server refused it as one the route does not
    take} for every operation of the document and every argument of QUERY_VALUES."""
    seen = {}
    for template, item in sorted(doc["paths"].items()):
        path = re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], template)
        methods = [m.upper() for m in item if m in ("get", "put", "post", "delete")]
        for method in methods + (["HEAD"] if "GET" in methods else []):
            for name, value in QUERY_VALUES.items():
                path_m = "/v1/monitors/gone" if method == "DELETE" and template == "/v1/monitors/{name}" else path
                if path_m == "/v1/monitors/gone":
                    call(srv, "PUT", path_m, {"loss": "sigmoid_cross_entropy"})
                body = {} if method in ("POST", "PUT") else None
                st, h, payload = call(srv, method, f"{path_m}?{name}={value}", body,
                                      {"Content-Type": "application/json"} if body is not None else None)
                if method == "HEAD":  # (no body: the status, and the GET's answer)
                    payload = call(srv, "GET", f"{path_m}?{name}={value}")[2] if st == 400 else None
                refused = (st == 400 and isinstance(payload, dict) and payload.get("code") == "invalid_query"
                           and payload.get("field") == name and "not one it takes" in payload["error"])
                seen[(template, method, name)] = refused
    return seen


def compare_query(seen, doc):
    out = []
    for (template, method, name), refused in sorted(seen.items()):
        op = doc["paths"][template]["get" if method == "HEAD" else method.lower()]
        if op.get("x-query-ignored"):
            if refused:
                out.append(f"{method} {template}: the document says its query is ignored, the server refused ?{name}")
            continue
        declared = name in declared_query(doc, template, method)
        if declared and refused:
            out.append(f"{method} {template}: the document declares ?{name}, the server refuses it")
        elif not declared and not refused:
            out.append(f"{method} {template}: the server takes ?{name}, which the document does not declare")
    return out


@test
def openapi_query_arguments(args):
    """Every operation takes exactly the query arguments the document declares for it: any
    other, one declared elsewhere included (?step on GET /v1/monitors/{name}, ?reduction on
    POST /v1/loss), is refused with invalid_query naming it, never ignored -- but the static
    files' (x-query-ignored), which read no query. The comparison fails on copies of the
    document with a declaration added or taken away."""
    doc = json.loads(doc_bytes())
    with Server(args.server) as srv:
        assert call(srv, "PUT", "/v1/monitors/m", {"loss": "sigmoid_cross_entropy"})[0] == 201
        seen = probe_query(srv, doc)
        # (?to=60 alone: the default from, a day before, stops at 1970; it was -86340)
        st, _, b = call(srv, "GET", "/v1/monitors/m/series?to=60")
        assert st == 200 and (b["from"], b["to"]) == (0, 60), (st, b)
        # An empty segment asks nothing, but hides nothing after it; a value without a name
        # is refused (the server once stopped reading at either, and took what followed).
        st, _, b = call(srv, "POST", "/v1/loss?&&reduction=none", {}, {"Content-Type": "application/json"})
        assert st == 400 and b["field"] == "reduction", (st, b)
        st, _, b = call(srv, "GET", "/v1/monitors/m/series?=x&step=abc")
        assert st == 400 and b["field"] == "(no name)" and "without a name" in b["error"], (st, b)
        st, _, b = call(srv, "GET", "/v1/monitors/m/series?&step=abc")
        assert st == 400 and b["field"] == "step" and "minutes" in b["error"], (st, b)
    problems = compare_query(seen, doc)
    assert not problems, "\n".join(problems)
    ignored = {t for t, item in doc["paths"].items() for op in item.values()
               if isinstance(op, dict) and op.get("x-query-ignored")}
    taken = sorted(k for k, refused in seen.items() if not refused and k[0] not in ignored)
    assert len(taken) == 1 + 2 * 5 and len(seen) > 200 and len(ignored) == 4, (len(taken), len(seen), taken)
    print(f"    {len(seen)} (operation, argument) pairs: {len(taken)} taken, as declared, any on the "
          f"{len(ignored)} static files (ignored); the rest refused")
    for alter in (lambda d: d["paths"]["/v1/monitors/{name}/series"]["get"]["parameters"].pop(),
                  lambda d: d["paths"]["/v1/loss"]["post"].setdefault("parameters", []).append(
                      {"name": "reduction", "in": "query", "schema": {"type": "string"}}),
                  lambda d: d["paths"]["/"]["get"].pop("x-query-ignored"),
                  lambda d: d["paths"]["/healthz"]["get"].update({"x-query-ignored": True})):
        bad = copy.deepcopy(doc)
        alter(bad)
        assert compare_query(seen, bad), "an altered document passed"


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


# ---- The exact schemas (monitors, /v1/stats, the catalogue) -------------------------------

# Keys an answer may leave out (README: the config's classes or num_classes and
# prediction_ttl, a pinned drift reference, the catalogue's alias_of, slices_per_class when
# they are left out); any other key of these answers is always sent ("labels" and "per_class"
# where the config says: the schema's conditions).
OPTIONAL_KEYS = {"slices_per_class", "classes", "num_classes", "prediction_ttl", "reference",
                 "alias_of"}
# Objects keyed by names (windows, slice values, status codes, losses, parameters): a member
# taken out is still a valid answer.
MAPS = {"windows", "slices", "codes", "elements", "params"}


_schemas = {}


def schema_of(name):
    """A reference to components/schemas/name, the same object each time (contract.validate
    keeps a validator by schema)."""
    return _schemas.setdefault(name, {"$ref": f"#/components/schemas/{name}"})


def mutations(x, optional=frozenset()):
    """(description, mutated copy) of answer x: an extra key in each object, a key taken out, a
    leaf of the wrong type, a whole number made fractional or negative -- along the first item
    of each array and map (the rest are alike), so that every kind of object is reached."""
    def at(root, p, fn):
        root = copy.deepcopy(root)
        node = root
        for k in p[:-1]:
            node = node[k]
        fn(node, p[-1])
        return root
    out = []

    def walk(node, p, key):
        if isinstance(node, dict):
            out.append((f"{'/'.join(map(str, p))}: an extra key", p + ("zz_extra",), "add"))
            # (a map's members are alike, as an array's items: its first is walked)
            for k in list(node)[:1] if key in MAPS else node:
                if key not in MAPS and k not in OPTIONAL_KEYS and (p + (k,)) not in optional:
                    out.append((f"{'/'.join(map(str, p + (k,)))} left out", p + (k,), "del"))
                walk(node[k], p + (k,), k)
        elif isinstance(node, list):
            if node:
                walk(node[0], p + (0,), key)
        elif p:
            out.append((f"{'/'.join(map(str, p))}: an object", p, "obj"))
            if isinstance(node, int) and not isinstance(node, bool):
                out.append((f"{'/'.join(map(str, p))}: fractional", p, "frac"))
                out.append((f"{'/'.join(map(str, p))}: negative", p, "neg"))
    walk(x, (), None)

    def apply(kind):
        def fn(node, k):
            if kind == "add":
                node[k] = "?"
            elif kind == "del":
                del node[k]
            elif kind == "obj":
                node[k] = {"wrong": "?"}
            elif kind == "frac":
                node[k] = node[k] + 0.5
            else:
                node[k] = -1 - node[k]
        return fn
    for what, p, kind in out:
        yield what, at(x, p, apply(kind))


def exact(name, real, extra=()):
    """The real answer validates against schema `name`; every mutation of it, and the `extra`
    (description, copy) given, is refused. (A series has "class" when asked for one.)"""
    import jsonschema
    schema = schema_of(name)
    contract.validate(real, schema, f"{name}: the real answer")
    validator = jsonschema.Draft202012Validator(schema, resolver=jsonschema.RefResolver("", contract.document()))
    n = 0
    # (v2 echoes a request's id when it has one.)
    optional = {"MonitorSeries": {("class",)}, "V2InferResponse": {("id",)}}.get(name, set())
    for what, bad in list(mutations(real, optional)) + list(extra):
        assert not validator.is_valid(bad), f"{name}: a copy with {what} validates"
        n += 1
    return n


@test
def openapi_schemas_exact(args):
    """The monitors' answers and requests, /v1/stats, the catalogue and v2's answers are described exactly:
    the server's real answers (and the requests it took) validate, and a copy with a key added
    to any object, a required key taken out, a leaf of the wrong type, a whole number made
    fractional or negative, a value outside its enum, is refused."""
    H = {"Content-Type": "application/json"}
    movies = {"loss": "sigmoid_cross_entropy", "classes": ["drama", "comedy", "action", "horror", "scifi"],
              "slices": ["model_version"], "windows": ["5m", "1h", "24h"], "prediction_ttl": "7d"}
    # A pinned baseline two hours ago, and a drift threshold any change passes: "drift" lists.
    now = int(time.time())
    plain = {"loss": "mean_squared_error",
             "drift": {"z": 0.001, "min_weight": 0, "reference": {
                 "from": now - 7200, "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))}}}
    ce = {"loss": "cross_entropy", "num_classes": 3, "prediction_ttl": "2h"}
    obs = {"labels": [[1, 1, 0, 0, 0], [0, 1, 1, 1, 0]],
           "logits": [[0.2, 0.2, 0.2, 0, 0.8], [0, 0.5, 0.5, 0.2, 0]],
           "mask": [[1, 0, 0, 0, 0], [0, 0, 1, 1, 0]], "slice": {"model_version": "7"}, "id": "b1"}
    preds = {"ids": ["u1", "u2", "u1"], "logits": [[0.2, 0.2, 0.2, 0, 0.8], [0, 0.5, 0.5, 0.2, 0], [0, 0.5, 0.5, 0.2, 0]]}
    sparse = {"labels": [{"id": "u1", "class": "drama", "value": 1}, {"id": "u9", "class": 0, "value": 1, "weight": 2}]}
    dense = {"ids": ["u1", "u2"], "labels": [[1, 1, 0, 0, 0], [0, 1, 1, 1, 0]],
             "mask": [[1, 0, 0, 0, 0], [0, 0, 1, 1, 0]], "id": "l2"}
    answers = {}
    with Server(args.server) as srv:
        def ok(method, path, body=None, want=200):
            st, _, payload = call(srv, method, path, body, H if body is not None else None)
            assert st == want, (method, path, st, payload)
            return payload
        answers["Monitor"] = [ok("PUT", "/v1/monitors/movies", movies, 201),
                              ok("PUT", "/v1/monitors/plain", plain, 201), ok("PUT", "/v1/monitors/ce", ce, 201)]
        answers["ObserveAnswer"] = [ok("POST", "/v1/monitors/movies/observe", obs),
                                    ok("POST", "/v1/monitors/movies/observe", obs),
                                    ok("POST", "/v1/monitors/plain/observe",
                                       {"labels": [1, 2], "predictions": [1.5, 2], "time": now - 5400}),
                                    ok("POST", "/v1/monitors/plain/observe", {"labels": [1, 2], "predictions": [3, 2.5]})]
        assert answers["ObserveAnswer"][1]["duplicate"] is True
        answers["PredictionsAnswer"] = [ok("POST", "/v1/monitors/movies/predictions", preds),
                                        ok("POST", "/v1/monitors/ce/predictions", {"ids": ["a"], "logits": [[0.2, 0.2, 0.2]]})]
        assert answers["PredictionsAnswer"][0]["refused"], answers["PredictionsAnswer"][0]
        answers["LabelsAnswer"] = [ok("POST", "/v1/monitors/movies/labels", sparse),
                                   ok("POST", "/v1/monitors/movies/labels", dense)]
        answers["MonitorFigures"] = [ok("GET", f"/v1/monitors/{m}") for m in ("movies", "plain", "ce")]
        answers["MonitorSeries"] = [ok("GET", "/v1/monitors/movies/series?step=1h&class=drama"),
                                    ok("GET", "/v1/monitors/plain/series")]
        answers["MonitorList"] = [ok("GET", "/v1/monitors")]
        answers["Catalogue"] = [ok("GET", "/v1/losses")]
        answers["Stats"] = [ok("GET", "/v1/stats")]
        # v2: a model's metadata, an evaluation with an id and outputs of both kinds, and one
        # that feeds a monitor (its parameters name it, and say whether its id was seen).
        v2_inputs = [{"name": "LABELS", "datatype": "FP32", "shape": [2, 5], "data": sum(obs["labels"], [])},
                     {"name": "LOGITS", "datatype": "FP32", "shape": [2, 5], "data": sum(obs["logits"], [])},
                     {"name": "MASK", "datatype": "BOOL", "shape": [2, 5], "data": sum(obs["mask"], [])}]
        infer = "/v2/models/sigmoid_cross_entropy/infer"
        answers["V2ModelMetadata"] = [ok("GET", "/v2/models/sigmoid_cross_entropy")]
        answers["V2InferResponse"] = [
            ok("POST", infer, {"id": "r1", "inputs": v2_inputs, "parameters": {"reduction": "SUM"},
                               "outputs": [{"name": "LOSS"}, {"name": "PER_SAMPLE"}, {"name": "NUM_NONZERO_WEIGHTS"}]}),
            ok("POST", infer, {"inputs": v2_inputs, "parameters": {"monitor": "movies", "monitor_id": "v2-1"}})]
        assert answers["V2InferResponse"][1]["parameters"]["monitor_duplicate"] is False, answers["V2InferResponse"][1]
    # What the answers hold, so that the mutations reach every part: a figure with classes and
    # without, slices, late labels, a NaN loss (torch's mean of nothing), a refused row.
    figs = answers["MonitorFigures"]
    assert figs[0]["slices"] and "labels" in figs[0] and "per_class" in figs[0]["windows"]["5m"], figs[0]
    assert "z" in figs[1]["windows"]["5m"] and figs[1]["config"]["drift"]["reference"], figs[1]
    assert figs[1]["drift"] and figs[1]["drift"][0]["class"] is None, figs[1]["drift"]
    assert figs[2]["total"]["loss"] == "NaN", figs[2]["total"]
    enum_cases = {
        "Monitor": [("dtype float16", lambda a: a["config"].update(dtype="float16")),
                    ("classes and num_classes", lambda a: a["config"].update(num_classes=5, classes=["a"]))],
        "MonitorFigures": [("a window's figure without its comparison",
                            lambda a: [a["windows"]["5m"].pop(k, None) for k in ("z", "per_class")]),
                           ("slices_per_class true", lambda a: a.update(slices_per_class=True))],
        "PredictionsAnswer": [("another reason", lambda a: a["refused"] and a["refused"][0].update(reason="other"))],
        "Catalogue": [("another framework", lambda a: a["losses"][0].update(framework="jax")),
                      ("another reduction", lambda a: a["losses"][0].update(default_reduction="median")),
                      ("a param neither default nor required", lambda a: a["losses"][0]["params"][0].pop("default"))],
        "Stats": [("a route the server has not", lambda a: a["routes"][0].update(route="/v1/nope")),
                  ("a status it never sends", lambda a: a["routes"][0]["codes"].update({"418": 1}))],
    }
    refused = 0
    for name, reals in answers.items():
        for i, real in enumerate(reals):
            extra = []
            for what, fn in enum_cases.get(name, []):
                bad = copy.deepcopy(real)
                fn(bad)
                if bad != real:
                    extra.append((what, bad))
            refused += exact(name, real, extra)
    # The requests the server took validate; with an unknown key, a wrong type, they do not.
    requests = {"MonitorConfigRequest": [movies, plain, ce], "Observation": [obs],
                "PredictionsRequest": [preds], "LabelsRequest": [sparse, dense]}
    for name, reals in requests.items():
        for real in reals:
            bads = [("an unknown key", dict(real, loss_scale=2)),
                    ("a key of the wrong type", {k: ({"wrong": "?"} if k in ("loss", "ids", "labels", "logits") else v)
                                                 for k, v in real.items()})]
            if name == "MonitorConfigRequest":
                bads.append(("no loss", {k: v for k, v in real.items() if k != "loss"}))
            if name == "Observation":
                bads.append(("the config's loss", dict(real, loss="log_loss")))
            if name == "LabelsRequest":
                bads.append(("a mask without ids", {"labels": real["labels"], "mask": [[1]]}))
            schema = schema_of(name)
            contract.validate(real, schema, f"{name}: the request the server took")
            for what, bad in bads:
                try:
                    contract.validate(bad, schema, what)
                except AssertionError:
                    refused += 1
                    continue
                raise AssertionError(f"{name}: a request with {what} validates")
    assert refused > 500, refused
    # The reductions are the library's (each named by some loss of the catalogue); /v1/stats's
    # route names and status codes are the server's tables (metrics.c, MLS_CODES).
    schemas = contract.document()["components"]["schemas"]
    named = {r for loss in answers["Catalogue"][0]["losses"] for r in loss["reductions"]}
    assert set(schemas["Reduction"]["enum"]) == named, sorted(set(schemas["Reduction"]["enum"]) ^ named)
    doc = schemas["Stats"]["properties"]["routes"]["items"]["properties"]
    assert set(doc["route"]["enum"]) == set(server_route_paths()) | {"other"}, doc["route"]["enum"]
    with open(os.path.join(ROOT, "server", "metrics.h")) as f:
        codes = re.search(r"#define MLS_CODES[^{]*\{([^}]*)\}", f.read()).group(1)
    assert doc["codes"]["propertyNames"]["enum"] == re.findall(r"\d+", codes), doc["codes"]
