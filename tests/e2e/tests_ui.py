"""End-to-end tests of the status page's routes (issue 17) at the HTTP level: GET / and /ui/<file>
serve the files of server/ui byte for byte, with their content types, the Content-Security-Policy
and the other headers, ETags (304 on If-None-Match), HEAD, and 404 for any other name (path
traversal included); GET /v1/stats holds the same numbers as /metrics, its latency quantiles
those of Prometheus's histogram_quantile computed here from /metrics' buckets; the metrics scope
with tokens, none for the page's files; no quota on either; and none of it on /v1/loss's path.
Expected values come from the files themselves, cksum(1), the README's contract and
Prometheus's algorithm (promql/quantile.go bucketQuantile), not from the server's code."""
import json
import math
import os
import subprocess
import tempfile
import time

from common import JSON, NOTE, ROOT, expect_error, metric_value, stop_clean, test
from server import Server, parse_raw, raw, read_checked
from tests_auth import call, new_token

UI_DIR = os.path.join(ROOT, "server", "ui")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}


def ui_files():
    names = sorted(n for n in os.listdir(UI_DIR) if os.path.isfile(os.path.join(UI_DIR, n)))
    assert "index.html" in names, names
    return names


def get_bytes(srv, method, path, headers=None):
    """(status, lower-cased headers, body bytes) on a fresh connection."""
    conn = srv.connect()
    try:
        conn.request(method, path, headers=headers or {})
        status, h, _, data = read_checked(conn.getresponse(), method, path, headers)
        return status, h, data
    finally:
        conn.close()


def cksum_etag(path):
    """The ETag the README promises, from POSIX cksum(1): '"<crc, 8 hex digits>-<length, hex>"'."""
    crc, length = subprocess.run(["cksum", path], capture_output=True, text=True,
                                 check=True).stdout.split()[:2]
    return '"%08x-%x"' % (int(crc), int(length))


def check_page_headers(h, what):
    assert h.get("content-security-policy") == CSP, (what, h)
    assert h.get("x-content-type-options") == "nosniff", (what, h)
    assert h.get("referrer-policy") == "no-referrer", (what, h)


@test
def ui_assets(args):
    """Every file of server/ui under /ui/<name> (and index.html under /): its bytes, its type,
    the page's headers; HEAD gives the same headers and no body; If-None-Match with the ETag
    (alone, weak, in a list, or *) gives 304 without a body, any other ETag the file."""
    with Server(args.server) as srv:
        etags = {}
        for name in ui_files():
            path = os.path.join(UI_DIR, name)
            want = open(path, "rb").read()
            for url in ([f"/ui/{name}", "/"] if name == "index.html" else [f"/ui/{name}"]):
                st, h, body = get_bytes(srv, "GET", url)
                assert st == 200, (url, st, body[:200])
                assert body == want, f"{url}: {len(body)} bytes, the file has {len(want)}"
                assert h.get("content-type") == TYPES[os.path.splitext(name)[1]], (url, h)
                check_page_headers(h, url)
                assert h.get("cache-control") == "no-cache", (url, h)
                assert h.get("etag") == cksum_etag(path), (url, h.get("etag"), cksum_etag(path))
                etag = h["etag"]
                etags[name] = etag
                st, hh, body = get_bytes(srv, "HEAD", url)
                assert st == 200 and body == b"", (url, st, body[:100])
                assert hh.get("content-length") == str(len(want)), (url, hh)
                for k in ("content-type", "etag", "cache-control", "content-security-policy",
                          "x-content-type-options", "referrer-policy"):
                    assert hh.get(k) == h.get(k), (url, k, hh.get(k), h.get(k))
                for inm in (etag, "W/" + etag, f'"nope", {etag}', "*"):
                    st, hh, body = get_bytes(srv, "GET", url, {"If-None-Match": inm})
                    assert st == 304 and body == b"", (url, inm, st, body[:100])
                    assert hh.get("etag") == etag, (url, inm, hh)
                    check_page_headers(hh, url)
                for inm in ('"nope"', etag[:-2] + '"', etag + "x", "W/"):
                    st, hh, body = get_bytes(srv, "GET", url, {"If-None-Match": inm})
                    assert st == 200 and body == want, (url, inm, st)
        # Different bytes, different tags.
        by_bytes = {}
        for name, etag in etags.items():
            by_bytes.setdefault(open(os.path.join(UI_DIR, name), "rb").read(), set()).add(etag)
        assert len(set().union(*by_bytes.values())) == len(by_bytes), etags
        stop_clean(srv)


@test
def ui_not_found(args):
    """Any other name under /ui -- unknown, empty, with a directory, or climbing out with '..'
    plain or percent-encoded -- is 404 with the error object (and the page's headers); another
    method on a file is 405 with Allow."""
    with Server(args.server) as srv:
        for url in ("/ui/nope.js", "/ui/", "/ui", "/ui/index.html/", "/ui//index.html",
                    "/ui/./index.html", "/ui/../x", "/ui/%2e%2e/x", "/ui/%2e%2e%2fMakefile",
                    "/ui/..%2fREADME.md", "/ui/../../etc/passwd", "/ui/index.html%00",
                    "/ui/INDEX.HTML", "/index.html", "/ui/ui.c", "/ui/../server/ui.c"):
            # Raw bytes: no client library normalises the path on the way.
            st, h, body = parse_raw(raw(srv.port, f"GET {url} HTTP/1.1\r\nHost: t\r\n"
                                                  f"Connection: close\r\n\r\n".encode()))
            b = expect_error((st, h, json.loads(body)), 404, "not_found", "path")
            assert "README" not in body.decode() or "README" in url, b
            if url.startswith("/ui/"):
                check_page_headers(h, url)
        for method in ("POST", "PUT", "DELETE"):
            st, h, b = srv.request(method, "/ui/index.html", "{}", JSON)
            expect_error((st, h, b), 405, "method_not_allowed", "method")
            assert h.get("allow") == "GET, HEAD", h
        st, h, b = srv.request("POST", "/", "{}", JSON)
        expect_error((st, h, b), 405, "method_not_allowed", "method")
        # All of it under one route label, whatever the path: bounded cardinality.
        _, text = srv.metrics()
        assert metric_value(text, "maskloss_http_requests_total", {"route": "/ui", "code": "404"}) == 14
        assert metric_value(text, "maskloss_http_requests_total", {"route": "/ui", "code": "405"}) == 4
        assert metric_value(text, "maskloss_http_requests_total", {"route": "other", "code": "404"}) == 2
        stop_clean(srv)


def histogram_quantile(q, buckets):
    """Prometheus's histogram_quantile (promql/quantile.go bucketQuantile) over
    [(upper bound, cumulative count)] sorted, the last one +Inf; None when it counted nothing."""
    assert math.isinf(buckets[-1][0]), buckets
    total = buckets[-1][1]
    if total == 0:
        return None
    rank = q * total
    b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def parsed(text):
    from prometheus_client.parser import text_string_to_metric_families
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def histogram_of(samples, name, labels):
    """[(le, cumulative)], count and sum of one histogram of /metrics."""
    def match(s):
        return all(s.labels.get(k) == v for k, v in labels.items())
    buckets = sorted((float(s.labels["le"]), s.value) for s in samples
                     if s.name == name + "_bucket" and match(s))
    count = next(s.value for s in samples if s.name == name + "_count" and match(s))
    total = next(s.value for s in samples if s.name == name + "_sum" and match(s))
    return buckets, count, total


def check_latency(got, buckets, count, total, what):
    assert got["count"] == count, (what, got, count)
    assert math.isclose(got["sum_seconds"], total, rel_tol=1e-9, abs_tol=1e-12), (what, got, total)
    for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        want = histogram_quantile(q, buckets)
        if want is None:
            assert got[key] is None, (what, key, got)
        else:
            assert got[key] is not None and math.isclose(got[key], want, rel_tol=1e-12), \
                (what, key, got[key], want, buckets)


def stats_and_metrics(srv):
    """GET /v1/stats, then /metrics, on a quiet server: the second counts the first."""
    t0 = time.time()
    st, h, stats = srv.request("GET", "/v1/stats")
    t1 = time.time()
    assert st == 200 and h.get("content-type") == "application/json", (st, h, stats)
    _, text = srv.metrics()
    return stats, text, t0, t1


@test
def ui_stats_against_metrics(args):
    """After known traffic -- 7 /v1/loss answered, 2 malformed, a batch of 3, a 404 and page
    files -- /v1/stats says what was sent, and every figure equals /metrics' (the routes and
    their codes, the latency histograms' counts, sums and quantiles, the gauges, the elements)."""
    # One HTTP thread: a request is counted when its answer has gone (libmicrohttpd's
    # completion callback), and with two threads the next request, on another connection, may
    # be read by the other thread before that -- the counts would be one short, at random.
    # (1 is not the default here, so the field still shows the flag.)
    with Server(args.server, "--workers", "2", "--http-threads", "1") as srv:
        sent = 0
        for _ in range(7):
            body = json.dumps(NOTE)
            sent += len(body)
            st, _, b = srv.request("POST", "/v1/loss", body, JSON)
            assert st == 200, b
        for bad in ('{"loss": ', "[1,"):
            sent += len(bad)
            expect_error(srv.request("POST", "/v1/loss", bad, JSON), 400, "malformed_json")
        body = json.dumps({"requests": [NOTE, NOTE, dict(NOTE, loss="nope")]})
        sent += len(body)
        assert srv.request("POST", "/v1/batch", body, JSON)[0] == 200
        expect_error(srv.request("GET", "/v1/nope"), 404, "not_found")
        for url in ("/", "/ui/index.html", "/ui/nope"):
            srv.request("GET", url)

        stats, text, t0, t1 = stats_and_metrics(srv)
        samples = parsed(text)
        routes = {r["route"]: r for r in stats["routes"]}
        # What was sent, counted by hand.
        assert routes["/v1/loss"]["codes"] == {"200": 7, "400": 2}, routes["/v1/loss"]
        assert routes["/v1/loss"]["requests"] == 9
        assert routes["/v1/batch"]["codes"] == {"200": 1}
        assert routes["other"]["codes"] == {"404": 1}
        assert routes["/ui"]["codes"] == {"200": 2, "404": 1}, routes["/ui"]
        assert "/v1/stats" not in routes and "/metrics" not in routes, list(routes)
        assert set(routes) == {"/v1/loss", "/v1/batch", "other", "/ui"}, list(routes)
        # 4x5 logits a request: 7 answered, 2 in the batch (its third names no loss).
        assert stats["elements"] == {"sigmoid_cross_entropy": 9 * 20}, stats["elements"]
        assert stats["batch_entries"] == 3
        assert stats["bytes_received"] == sent, (stats["bytes_received"], sent)

        # The same numbers in /metrics.
        for s in samples:
            if s.name == "maskloss_http_requests_total" and s.labels["route"] not in ("/metrics",):
                want = routes.get(s.labels["route"], {"codes": {}})["codes"].get(s.labels["code"], 0)
                if s.labels["route"] == "/v1/stats":
                    want = 1 if s.labels["code"] == "200" else 0  # the request just made
                assert s.value == want, (s, want)
        for r in stats["routes"]:
            assert r["requests"] == sum(r["codes"].values()), r
            check_latency(r["latency"], *histogram_of(samples, "maskloss_http_request_duration_seconds",
                                                      {"route": r["route"]}), r["route"])
        check_latency(stats["queue_wait"], *histogram_of(samples, "maskloss_queue_wait_seconds", {}),
                      "queue_wait")
        assert stats["queue_wait"]["count"] >= 1, stats["queue_wait"]
        buckets = histogram_of(samples, "maskloss_http_request_duration_seconds", {"route": "/v1/loss"})[0]
        assert stats["latency_buckets"] == [le for le, _ in buckets[:-1]], stats["latency_buckets"]
        for loss, n in stats["elements"].items():
            assert metric_value(text, "maskloss_elements_evaluated_total", {"loss": loss}) == n
        gauges = {"workers": "maskloss_workers", "in_flight": None,
                  "inflight_bytes": "maskloss_inflight_bytes",
                  "inflight_limit": "maskloss_inflight_bytes_limit",
                  "batch_entries": "maskloss_batch_entries_total",
                  "bytes_received": "maskloss_http_received_bytes_total"}
        for key, name in gauges.items():
            if name:
                assert stats[key] == metric_value(text, name), (key, stats[key], metric_value(text, name))
        assert stats["queue"] == {"queued": 0, "running": 0, "capacity": srv.queue_depth}, stats["queue"]
        assert metric_value(text, "maskloss_queue_capacity") == srv.queue_depth
        assert stats["in_flight"] == 1, stats  # itself
        assert stats["workers"] == srv.workers == 2 and stats["http_threads"] == 1, stats
        # bytes_sent: everything answered before it, not yet its own answer, which /metrics counts.
        assert 0 < stats["bytes_sent"] < metric_value(text, "maskloss_http_sent_bytes_total"), stats
        assert stats["state"] == {
            "commits": metric_value(text, "maskloss_state_commits_total"),
            "observations": metric_value(text, "maskloss_state_observations_total"),
            "failures": metric_value(text, "maskloss_state_failures_total")}, stats["state"]
        assert stats["ready"] is True and metric_value(text, "maskloss_ready") == 1
        assert stats["started"] == metric_value(text, "maskloss_start_time_seconds"), stats["started"]
        assert t0 - 1 <= stats["now"] <= t1 + 1, (t0, stats["now"], t1)
        assert math.isclose(stats["uptime_seconds"], stats["now"] - stats["started"], abs_tol=1e-6), stats
        version = next(s.labels["version"] for s in samples if s.name == "maskloss_build_info")
        assert stats["version"] == version, (stats["version"], version)
        assert isinstance(stats["build"], str) and stats["build"], stats["build"]
        assert stats["build"] == "unknown" or all(c.isalnum() or c in "._+-" for c in stats["build"]), stats
        want_keys = {"version", "build", "now", "started", "uptime_seconds", "workers", "http_threads",
                     "queue", "in_flight", "inflight_bytes", "inflight_limit", "bytes_received",
                     "bytes_sent", "ready", "routes", "latency_buckets", "elements", "batch_entries",
                     "queue_wait", "state"}
        assert set(stats) == want_keys, set(stats) ^ want_keys

        # The quantiles of a spread of latencies: slow and fast requests on one route.
        big = {"loss": "sigmoid_cross_entropy", "labels": [[0, 1] * 500] * 300,
               "logits": [[0.5, -1.0] * 500] * 300}
        for i in range(6):
            assert srv.request("POST", "/v1/loss", big if i % 3 == 0 else NOTE, JSON)[0] == 200
        stats, text, _, _ = stats_and_metrics(srv)
        samples = parsed(text)
        r = next(r for r in stats["routes"] if r["route"] == "/v1/loss")
        buckets, count, total = histogram_of(samples, "maskloss_http_request_duration_seconds",
                                             {"route": "/v1/loss"})
        assert count == 15, count
        check_latency(r["latency"], buckets, count, total, "/v1/loss")
        stop_clean(srv)


@test
def ui_stats_empty_and_head(args):
    """A fresh server: no route yet but the one asking; the queue's quantiles null (nothing
    counted); HEAD answers the headers alone. (One HTTP thread, as above: exact counts.)"""
    with Server(args.server, "--http-threads", "1") as srv:
        st, h, stats = srv.request("GET", "/v1/stats")
        assert st == 200, stats
        assert stats["routes"] == [] and stats["elements"] == {}, stats
        assert stats["queue_wait"] == {"count": 0, "sum_seconds": 0.0, "p50": None, "p90": None,
                                       "p99": None}, stats["queue_wait"]
        st, h, body = get_bytes(srv, "HEAD", "/v1/stats")
        assert st == 200 and body == b"" and h.get("content-type") == "application/json", (st, h)
        st, h, stats = srv.request("GET", "/v1/stats")
        r = stats["routes"][0]
        assert r["route"] == "/v1/stats" and r["codes"] == {"200": 2}, stats["routes"]
        assert r["latency"]["count"] == 2 and r["latency"]["p50"] > 0, r
        st, h, b = srv.request("POST", "/v1/stats", "{}", JSON)
        expect_error((st, h, b), 405, "method_not_allowed", "method")
        assert h.get("allow") == "GET, HEAD", h
        stop_clean(srv)


@test
def ui_stats_tokens(args):
    """With tokens: /v1/stats needs the metrics scope as /metrics does (401 without a token or
    with a wrong one, 403 naming the scope with another, 200 with metrics or admin; none with
    --metrics-open); the page's files need none."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        tokens = {s: new_token(args, path, s.replace(":", "-"), s)
                  for s in ("metrics", "admin", "monitor:read", "evaluate")}
        with Server(args.server, "--auth-file", path) as srv:
            for method in ("GET", "HEAD"):
                st, h, _ = get_bytes(srv, method, "/v1/stats")
                assert st == 401 and h.get("www-authenticate") == 'Bearer realm="maskloss"', (st, h)
            expect_error(call(srv, "GET", "/v1/stats"), 401, "unauthorized", "Authorization")
            st, h, b = call(srv, "GET", "/v1/stats", token="not-a-token-of-this-server")
            expect_error((st, h, b), 401, "unauthorized", "Authorization")
            assert "invalid_token" in h.get("www-authenticate", ""), h
            for scope in ("monitor:read", "evaluate"):
                st, h, b = call(srv, "GET", "/v1/stats", token=tokens[scope])
                expect_error((st, h, b), 403, "forbidden", "Authorization")
                assert 'scope="metrics"' in h.get("www-authenticate", ""), h
            for scope in ("metrics", "admin"):
                st, h, b = call(srv, "GET", "/v1/stats", token=tokens[scope])
                assert st == 200 and "routes" in b, (scope, st, b)
            for url in ["/"] + [f"/ui/{n}" for n in ui_files()]:
                st, h, _ = get_bytes(srv, "GET", url)
                assert st == 200, (url, st)
                st, h, _ = get_bytes(srv, "GET", url, {"Authorization": "Bearer not-a-token"})
                assert st == 200, (url, st)  # a stale token in the tab does not break the page
            expect_error(call(srv, "GET", "/ui/nope"), 404, "not_found", "path")
            stop_clean(srv)
        with Server(args.server, "--auth-file", path, "--metrics-open") as srv:
            st, h, b = call(srv, "GET", "/v1/stats")
            assert st == 200 and "routes" in b, (st, b)
            expect_error(call(srv, "GET", "/v1/monitors"), 401, "unauthorized")
            stop_clean(srv)


@test
def ui_stats_no_quota_and_cors(args):
    """--rate-limit: /v1/stats and the page's files are never refused (as /metrics and the
    probes), while a quota'd route is; --cors-origin: the listed origin is answered on both, a
    preflight names GET, HEAD."""
    origin = "https://dash.example"
    with Server(args.server, "--rate-limit", "1", "--rate-burst", "1", "--cors-origin", origin) as srv:
        for _ in range(5):
            for url in ("/v1/stats", "/", "/ui/index.html"):
                st, _, _ = get_bytes(srv, "GET", url)
                assert st == 200, (url, st)
        codes = [srv.request("GET", "/v1/losses")[0] for _ in range(3)]
        assert 429 in codes, codes
        for url in ("/v1/stats", "/ui/index.html"):
            st, h, _ = get_bytes(srv, "GET", url, {"Origin": origin})
            assert st == 200 and h.get("access-control-allow-origin") == origin, (url, h)
            st, h, _ = get_bytes(srv, "GET", url, {"Origin": "https://other.example"})
            assert st == 200 and "access-control-allow-origin" not in h, (url, h)
            st, h, _ = get_bytes(srv, "OPTIONS", url, {"Origin": origin,
                                                      "Access-Control-Request-Method": "GET"})
            assert st == 204 and h.get("access-control-allow-methods") == "GET, HEAD", (url, st, h)
        stop_clean(srv)


@test
def ui_off_the_hot_path(args):
    """The page's routes never reach the workers or the queue (no queue wait counted), and a
    /v1/loss answer is what it was: none of the page's headers, the same bytes as a server that
    was never asked for the page."""
    with Server(args.server) as a, Server(args.server) as b:
        for _ in range(20):
            for url in ("/", "/ui/index.html", "/v1/stats", "/ui/nope"):
                a.request("GET", url)
        _, text = a.metrics()
        assert metric_value(text, "maskloss_queue_wait_seconds_count") == 0, text
        answers = []
        for srv in (a, b):
            conn = srv.connect()
            conn.request("POST", "/v1/loss", json.dumps(NOTE), JSON)
            st, h, _, data = read_checked(conn.getresponse(), "POST", "/v1/loss", JSON, json.dumps(NOTE).encode())
            answers.append((st, data, sorted(k for k in h if k != "date")))
            conn.close()
            for k in ("content-security-policy", "x-content-type-options", "referrer-policy", "etag"):
                assert k not in h, (k, h)
        assert answers[0] == answers[1], answers
        stop_clean(a)
        stop_clean(b)
