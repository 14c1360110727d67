"""Shared pieces of the end-to-end tests: the test registry, the note's example, checks."""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def plain_only(fn):
    """Marks a test whose point is a timing or a load figure, which a sanitized build (several
    times slower, make test's second run) only takes longer to show: run.py --sanitized skips
    it. Memory errors in its code paths are the other tests' to find there."""
    fn.plain_only = True
    return fn


def alone(fn):
    """Marks a test that counts what happens during a load it makes itself (requests answered
    while its jobs keep the workers busy): run.py --jobs runs it by itself, after the others,
    so that another test's load does not shorten or crowd its window. Sanitized builds run it
    too."""
    fn.alone = True
    return fn


def sqlite_only(fn):
    """Marks a test of the SQLite state itself (its file read, cut or made read-only, its
    cache and map flags): run.py --pg, which runs the monitor suites again with every server on
    PostgreSQL, skips it."""
    fn.sqlite_only = True
    return fn


def pg_only(fn):
    """Marks a test of replicas on PostgreSQL (server.PG): only run.py --pg runs it."""
    fn.pg_only = True
    return fn


NOTE = {"loss": "sigmoid_cross_entropy", "dtype": "float64",
        "labels": [[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]],
        "logits": [[0.2, 0.2, 0.2, 0, 0.8], [0, 0.5, 0.5, 0.2, 0], [0, 0.5, 0.1, 0.0, 0.9],
                   [0.9, 0.9, 0.7, 0.1, 0.0]],
        "mask": [[1, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 0, 1], [0, 1, 1, 1, 1]]}
NOTE_LOSS = ref.tf_masked_mean(NOTE["labels"], NOTE["logits"], NOTE["mask"])
JSON = {"Content-Type": "application/json"}


def expect_error(resp, status, code, field=None):
    st, headers, body = resp
    assert st == status, f"status {st}, expected {status}: {body}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    assert body.get("code") == code, f"code {body.get('code')!r}, expected {code!r}: {body}"
    assert "field" in body, body
    if field is not None:
        assert body["field"] == field, f"field {body['field']!r}, expected {field!r}"
    if status == 503:
        assert headers.get("retry-after", "").isdigit(), f"503 without Retry-After: {headers}"
    return body


def stop_clean(srv, timeout=60):
    rc = srv.stop(timeout=timeout)
    assert rc == 0, f"exit status {rc}; stderr:\n{srv.log()[-3000:]}"



def wait_until(fn, timeout=20, every=0.1):
    """fn()'s last value once it is true, or after `timeout` seconds: for what the server
    finishes after the answer (a lingering close, an access-log line), on a loaded machine."""
    end = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() >= end:
            return got
        time.sleep(every)


def metric_value(text, name, labels=None):
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())):
                return s.value
    return None


def json_call(srv, method, path, body=None):
    """One request with a JSON body (or none) on a fresh connection: (status, headers, body)."""
    import json
    return srv.request(method, path, json.dumps(body) if body is not None else None,
                       JSON if body is not None else {})
