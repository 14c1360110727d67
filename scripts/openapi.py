#!/usr/bin/python3
"""openapi.py [--check] -- writes proto/openapi.json from proto/openapi.yaml, the source.

The YAML refers to proto/request.schema.json and proto/response.schema.json by $ref (one
source for the JSON protocol's schemas); the JSON the server serves must stand alone, so
each referenced file is copied once under components/schemas and every reference to it,
and its own internal references, are rewritten to point there. YAML anchors and merge keys
are expanded. The server embeds proto/openapi.json at build time (scripts/embed.sh):
`make` needs no Python, so the generated file is committed. --check: exit 1 if the file
differs from what the YAML gives (tests/e2e/tests_openapi.py runs the same comparison).
Needs python3-yaml.
"""
import copy
import json
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO = os.path.join(ROOT, "proto")
# The files the YAML may refer to, and their names in components/schemas.
EXTERNAL = {"request.schema.json": "LossRequest", "response.schema.json": "LossResponseOrError"}


def _rewrite(node, fn):
    """Applies fn to every $ref string in node (in place)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                node[k] = fn(v)
            else:
                _rewrite(v, fn)
    elif isinstance(node, list):
        for v in node:
            _rewrite(v, fn)


def bundle(doc):
    """The document with the external schemas copied in and every reference local."""
    doc = copy.deepcopy(doc)
    used = set()

    def outer(ref):
        name, _, frag = ref.partition("#")
        if name not in EXTERNAL:
            if name:
                raise SystemExit(f"openapi.py: $ref {ref!r}: only {sorted(EXTERNAL)} may be referenced")
            return ref
        used.add(name)
        return f"#/components/schemas/{EXTERNAL[name]}{frag}"

    _rewrite(doc, outer)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in sorted(used):
        with open(os.path.join(PROTO, name)) as f:
            schema = json.load(f)
        schema.pop("$schema", None)  # OpenAPI 3.1's dialect is 2020-12 already
        schema.pop("$id", None)  # its references now resolve against this document
        base = f"#/components/schemas/{EXTERNAL[name]}"
        _rewrite(schema, lambda ref: base + ref[1:] if ref.startswith("#/") else ref)
        if EXTERNAL[name] in schemas:
            raise SystemExit(f"openapi.py: components/schemas/{EXTERNAL[name]} is {name}'s place")
        schemas[EXTERNAL[name]] = schema
    return doc


def generate():
    """The text of proto/openapi.json."""
    with open(os.path.join(PROTO, "openapi.yaml")) as f:
        doc = yaml.safe_load(f)
    return json.dumps(bundle(doc), indent=1, ensure_ascii=False) + "\n"


def main():
    path = os.path.join(PROTO, "openapi.json")
    text = generate()
    if sys.argv[1:] == ["--check"]:
        with open(path) as f:
            same = f.read() == text
        if not same:
            print("proto/openapi.json differs from proto/openapi.yaml: run scripts/openapi.py", file=sys.stderr)
        sys.exit(0 if same else 1)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
