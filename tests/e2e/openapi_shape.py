#!/usr/bin/python3
"""openapi_shape.py [DOC] -- the shape of a client generated from the OpenAPI document: one
function an operation, as generators make them (openapi-generator, openapi-python-client...),
printed one line an operation:

    operationId(path parameters, body: RequestType, *, query parameters) -> ResponseType

Types are named as those generators name them: a schema of components/schemas by its name;
an inline schema by the operation (`<OperationId>Request`, `<OperationId><status>Response`);
text as `str`, raw bytes as `bytes`, no content as `None`. Where an operation takes or answers
several media types the JSON form is shown (v2's binary form is the same operation).

The README's "Generate one from /openapi.json" shows this output for proto/openapi.json, and
tests_openapi_client.py checks that it is still what the document gives and that a client
made from the document this way works against the server. Standard library only.
"""
import json
import keyword
import os
import sys

METHODS = ("get", "put", "post", "delete", "patch")


def lookup(doc, ref):
    """The object a local reference ("#/components/...", a JSON Pointer) names."""
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def deref(doc, node):
    """node, or what its $ref names (a parameter, a response, a schema), until no $ref."""
    while isinstance(node, dict) and "$ref" in node:
        node = lookup(doc, node["$ref"])
    return node


def cap(op_id):
    return op_id[:1].upper() + op_id[1:]


def type_name(content, inline):
    """The type a generator gives a body of these media types (inline: the name it makes up)."""
    if not content:
        return "None"
    media = "application/json" if "application/json" in content else sorted(content)[0]
    if media.startswith("text/"):
        return "str"
    if media == "application/json":
        schema = content[media].get("schema", {})
        ref = schema.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            return ref.rsplit("/", 1)[1]
        if schema.get("type") == "string":
            return "str"
        return inline
    return "bytes"


def operations(doc):
    """(method, path, operationId, path parameters, query parameters, request type or None,
    response type) of every operation, in the document's order."""
    out = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            op_id = op["operationId"]
            params = [deref(doc, p) for p in item.get("parameters", []) + op.get("parameters", [])]
            in_path = [p["name"] for p in params if p["in"] == "path"]
            in_query = [p["name"] for p in params if p["in"] == "query"]
            body = op.get("requestBody")
            request = None
            if body is not None:
                request = type_name(deref(doc, body).get("content", {}), cap(op_id) + "Request")
            answers = []
            for status, resp in op["responses"].items():
                if not status.startswith("2"):
                    continue
                name = type_name(deref(doc, resp).get("content", {}),
                                 f"{cap(op_id)}{status}Response")
                if name not in answers:
                    answers.append(name)
            out.append((method.upper(), path, op_id, in_path, in_query, request,
                        " | ".join(answers) or "None"))
    return out


def signature(op_id, in_path, in_query, request):
    args = list(in_path)
    if request is not None:
        args.append(f"body: {request}")
    if in_query:
        args.append("*")
        # A parameter named as a keyword of the language (from, class) gets a trailing _, as
        # openapi-python-client names it.
        args += [f"{q}_=None" if keyword.iskeyword(q) else f"{q}=None" for q in in_query]
    return f"{op_id}({', '.join(args)})"


def render(doc):
    """The lines the README shows (no trailing newline)."""
    return "\n".join(f"{signature(op_id, in_path, in_query, request)} -> {response}  # {method} {path}"
                     for method, path, op_id, in_path, in_query, request, response in operations(doc))


def main(argv):
    path = argv[1] if len(argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "openapi.json")
    with open(path) as f:
        print(render(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
