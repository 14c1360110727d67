#!/usr/bin/env python3
"""Seeds a maskloss-server for the status page's test (tests/ui/run.py), through its API only.

usage: seed.py URL      (e.g. http://127.0.0.1:8080: a server to look at by hand)

Three monitors, with observations over the last half hour (their `time` in the past):
- movies: sigmoid_cross_entropy over five classes, sliced by model_version. Version 7 served
  the whole half hour; version 8 came 4 minutes ago and gets "horror" wrong, so that class's
  loss in the 5m window is far above the 5 minutes before it: the API lists it in "drift"
  (and no other class: the others see the same data in both halves, z = 0).
- recs: the note's example with late labels: predictions logged 20 and 3 minutes ago, labels
  sent now (coverage, label delays).
- latency: mean_squared_error without classes.
Plus a few /v1/loss calls (elements per loss, a 422) for the server view.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CLASSES = ["drama", "comedy", "action", "horror", "scifi"]
SAMPLES = 8


def call(base, method, path, body=None, token=None):
    """(status, parsed JSON) of one request; HTTP errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def ok(base, method, path, body=None, expect=(200, 201)):
    status, doc = call(base, method, path, body)
    if status not in expect:
        raise AssertionError(f"{method} {path}: HTTP {status} {doc}")
    return doc


def batch(horror_wrong, shift):
    """SAMPLES rows of the five classes: labels alternate, logits agree with them by a margin
    that varies per row (so that each class's losses have a variance); horror's disagree when
    horror_wrong."""
    labels, logits = [], []
    for i in range(SAMPLES):
        row_l, row_x = [], []
        for c, name in enumerate(CLASSES):
            y = (i + c + shift) % 2
            margin = 0.5 + 0.25 * ((i + c) % 4)
            x = margin if y else -margin
            if name == "horror" and horror_wrong:
                x = -x
            row_l.append(y)
            row_x.append(x)
        labels.append(row_l)
        logits.append(row_x)
    return labels, logits


def seed(base, now=None):
    now = time.time() if now is None else now
    minute = int(now // 60) * 60
    ok(base, "PUT", "/v1/monitors/movies?force=true", {
        "loss": "sigmoid_cross_entropy", "classes": CLASSES, "slices": ["model_version"],
        "windows": ["5m", "1h", "24h"], "drift": {"z": 3, "min_weight": 20}})
    for k in range(30, 0, -1):
        t = minute - 60 * k + 20
        labels, logits = batch(False, k)
        ok(base, "POST", "/v1/monitors/movies/observe", {
            "labels": labels, "logits": logits, "mask": [[1] * 5] * SAMPLES, "time": t,
            "slice": {"model_version": "7"}, "id": f"v7-{k}"})
        for j in range(2 if k <= 4 else 0):  # version 8 takes twice version 7's traffic
            labels, logits = batch(True, k + j)
            ok(base, "POST", "/v1/monitors/movies/observe", {
                "labels": labels, "logits": logits, "mask": [[1] * 5] * SAMPLES, "time": t + 5 + j,
                "slice": {"model_version": "8"}, "id": f"v8-{k}-{j}"})

    ok(base, "PUT", "/v1/monitors/recs?force=true", {
        "loss": "sigmoid_cross_entropy", "classes": CLASSES, "prediction_ttl": "7d"})
    note_logits = [[0.2, 0.2, 0.2, 0, 0.8], [0, 0.5, 0.5, 0.2, 0], [0, 0.5, 0.1, 0.0, 0.9],
                   [0.9, 0.9, 0.7, 0.1, 0.0]]
    ok(base, "POST", "/v1/monitors/recs/predictions", {
        "ids": ["u1", "u2", "u3", "u4"], "logits": note_logits, "time": minute - 20 * 60 + 10})
    ok(base, "POST", "/v1/monitors/recs/predictions", {
        "ids": ["u5", "u6"], "logits": note_logits[:2], "time": minute - 3 * 60 + 10})
    ok(base, "POST", "/v1/monitors/recs/labels", {
        "ids": ["u1", "u2", "u3", "u4"], "labels": [[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 1],
                                                    [1, 1, 1, 1, 1]],
        "mask": [[1, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 0, 1], [0, 1, 1, 1, 1]], "id": "labels-1"})
    ok(base, "POST", "/v1/monitors/recs/labels", {
        "labels": [{"id": "u5", "class": "drama", "value": 1}, {"id": "u6", "class": "comedy", "value": 0}]})

    ok(base, "PUT", "/v1/monitors/latency?force=true", {
        "loss": "mean_squared_error", "windows": ["5m", "1h"]})
    for k in (25, 12, 2):
        ok(base, "POST", "/v1/monitors/latency/observe", {
            "labels": [[1.0, 2.0], [0.5, 0.0]], "predictions": [[1.5, 1.0], [0.5, 0.25 * k]],
            "time": minute - 60 * k + 30})

    with open(os.path.join(ROOT, "examples", "masked-mean.json")) as f:
        note = json.load(f)
    for _ in range(3):
        ok(base, "POST", "/v1/loss", note)
    ok(base, "POST", "/v1/loss", {"loss": "mean_squared_error", "labels": [1, 2], "predictions": [1, 3]})
    status, _ = call(base, "POST", "/v1/loss", {"loss": "sigmoid_cross_entropy", "labels": [[1, 0]],
                                                "logits": [[0.2, 0.8, 0.1]]})
    assert status == 422, status


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    seed(sys.argv[1].rstrip("/"))
    print("seeded", sys.argv[1])
