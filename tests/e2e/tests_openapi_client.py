"""A client generated from /openapi.json (issue 18): the README's "Generate one from
/openapi.json" shows the shape generators make of the document (openapi_shape.py), and these
tests check that it is the document's, and that a client made from the document alone -- a
function an operationId, its path parameters filled in, its body sent as the requestBody's
media type -- works against the server with the document's own examples."""
import json
import keyword
import math
import os
import re
import time
import urllib.parse

import openapi_shape
from common import ROOT, test
from server import Server, exchange

DOC_PATH = os.path.join(ROOT, "proto", "openapi.json")
README = os.path.join(ROOT, "README.md")
BEGIN = "<!-- openapi_shape.py: begin -->"
END = "<!-- openapi_shape.py: end -->"


def load_doc():
    with open(DOC_PATH) as f:
        return json.load(f)


def readme_block():
    """The lines of the README's fenced block between the markers."""
    with open(README) as f:
        text = f.read()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, f"README: {BEGIN} ... {END} once"
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    m = re.fullmatch(r"```python\n(.*)\n```", block, re.S)
    assert m, "README: the shape is not one ```python block between the markers"
    return m.group(1)


@test
def openapi_shape_in_readme(args):
    """The README's generated shape is what the served document gives, line for line."""
    shown = readme_block().splitlines()
    want = openapi_shape.render(load_doc()).splitlines()
    for i, (a, b) in enumerate(zip(shown, want)):
        assert a == b, f"README line {i + 1} of the shape: {a!r}, the document gives {b!r} " \
                       "(python3 tests/e2e/openapi_shape.py prints it)"
    assert len(shown) == len(want), f"README shows {len(shown)} operations, the document has {len(want)}"
    # Every operation of the document is in it (and only those): one line each.
    ops = {op["operationId"] for item in load_doc()["paths"].values()
           for m, op in item.items() if m in openapi_shape.METHODS}
    assert {line.split("(", 1)[0] for line in shown} == ops


def generate(doc, srv):
    """{operationId: function(*path_values, body=None, **query) -> (status, headers, payload)},
    made from the document alone: nothing here knows a route of maskloss."""
    client = {}
    for method, path, op_id, in_path, in_query, _, _ in openapi_shape.operations(doc):
        op = doc["paths"][path][method.lower()]
        media = sorted(openapi_shape.deref(doc, op.get("requestBody", {})).get("content", {}))
        media = "application/json" if "application/json" in media else (media or [None])[0]

        def call(*values, body=None, _m=method, _p=path, _names=in_path, _q=in_query, _media=media,
                 **query):
            assert len(values) == len(_names), f"{_p} takes {_names}"
            url = _p
            for name, value in zip(_names, values):
                url = url.replace("{" + name + "}", urllib.parse.quote(str(value), safe=""))
            # from_=..., class_=...: the query parameters named as Python keywords.
            query = {k[:-1] if keyword.iskeyword(k[:-1]) else k: v for k, v in query.items()}
            unknown = set(query) - set(_q)
            assert not unknown, f"{_p}: no query parameter {sorted(unknown)} in the document"
            given = {k: v for k, v in query.items() if v is not None}
            if given:
                url += "?" + urllib.parse.urlencode(given)
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = _media
            conn = srv.connect(30)
            try:
                return exchange(conn, _m, url, body, headers)
            finally:
                conn.close()
        client[op_id] = call
    return client


def close(got, want, where):
    """got equals want, numbers within 1e-12 relative (the examples are printed decimals)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) >= set(want), f"{where}: {got!r} against {want!r}"
        for k, v in want.items():
            close(got[k], v, f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} against {want!r}"
        for i, (a, b) in enumerate(zip(got, want)):
            close(a, b, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-12), \
            f"{where}: {got!r}, the document's example says {want!r}"
    else:
        assert got == want, f"{where}: {got!r}, the document's example says {want!r}"


# Values for the path parameters, by the document's own parameter examples where it has them.
def path_value(doc, name, monitor):
    for p in doc["components"].get("parameters", {}).values():
        if p.get("name") == name and "example" in p:
            return p["example"]
    return {"name": monitor, "model": "sigmoid_cross_entropy", "version": "1", "file": "ui.js"}[name]


@test
def openapi_generated_client(args):
    """Every operation with a request example is called through the generated client, in the
    document's order (the monitor's PUT before its observations), and answers 2xx with the
    document's response example where it gives one; then every GET, then the DELETE."""
    doc = load_doc()
    monitor = "generated-client"
    with Server(args.server) as srv:
        client = generate(doc, srv)
        called = set()
        ops = openapi_shape.operations(doc)
        with_examples = []
        for method, path, op_id, in_path, _, _, _ in ops:
            op = doc["paths"][path][method.lower()]
            content = openapi_shape.deref(doc, op.get("requestBody", {})).get("content", {})
            example = content.get("application/json", {}).get("example")
            if example is not None:
                with_examples.append((op_id, in_path, op, example))
        assert len(with_examples) >= 4, [e[0] for e in with_examples]
        for op_id, in_path, op, example in with_examples:
            values = [path_value(doc, n, monitor) for n in in_path]
            status, _, payload = client[op_id](*values, body=example)
            assert 200 <= status < 300, f"{op_id} with the document's example: {status} {payload!r}"
            resp = openapi_shape.deref(doc, op["responses"][str(status)])
            want = resp.get("content", {}).get("application/json", {}).get("example")
            if want is not None:
                close(payload, want, op_id)
            called.add(op_id)
        for method, path, op_id, in_path, _, _, _ in ops:
            if method != "GET":
                continue
            status, hdrs, payload = client[op_id](*[path_value(doc, n, monitor) for n in in_path])
            assert status == 200, f"{op_id}: {status} {payload!r}"
            called.add(op_id)
        # Query parameters through the generated client, one named as a keyword (from_): the
        # answer echoes the range and step it was given.
        now = int(time.time())
        status, _, payload = client["series"](monitor, step="5m", from_=str(now - 3600), to=str(now))
        assert status == 200, (status, payload)
        assert (payload["step"], payload["from"], payload["to"]) == (300, now - 3600, now), payload
        for method, path, op_id, in_path, _, _, _ in ops:
            if method == "DELETE":
                status, _, payload = client[op_id](*[path_value(doc, n, monitor) for n in in_path])
                assert 200 <= status < 300, f"{op_id}: {status} {payload!r}"
                called.add(op_id)
        # The monitor it made is gone, through the same generated client.
        status, _, _ = client["getMonitor"](monitor)
        assert status == 404, status
    missing = {op[2] for op in ops} - called
    # Left out: operations with a body and no example (nothing in the document to send).
    no_example = {op_id for _, _, op_id, _, _, req, _ in ops if req is not None} - \
        {e[0] for e in with_examples}
    assert missing == no_example, sorted(missing - no_example)
