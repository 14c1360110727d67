"""End-to-end tests of the native protocol (/v1), the server's operation and its metrics."""
import http.client
import json
import os
import signal
import socket
import threading
import time

from common import JSON, NOTE, NOTE_LOSS, ROOT, alone, expect_error, metric_value, ref, stop_clean, test
from server import Server, exchange, parse_raw, raw, read_checked, recorded


# ---- Endpoints -------------------------------------------------------------------------------

@test
def endpoints(args):
    with Server(args.server, "--workers", "2") as srv:
        st, h, body = srv.request("GET", "/healthz")
        assert st == 200 and body == {"status": "ok"}, (st, body)
        st, h, body = srv.request("GET", "/readyz")
        assert st == 200 and body == {"ready": True}, (st, body)

        st, h, body = srv.request("POST", "/v1/loss", NOTE, JSON)
        assert st == 200, (st, body)
        assert body["loss"] == 0.5375321135555567, body  # the README's curl example, exactly
        assert ref.close(body["loss"], NOTE_LOSS), (body, NOTE_LOSS)
        assert body["reduction"] == "SUM_BY_NONZERO_WEIGHTS" and body["dtype"] == "float64", body

        # The CLI prints the same bytes for the same request.
        import subprocess
        cli = subprocess.run([args.cli, "eval", "-"], input=json.dumps(NOTE).encode(), capture_output=True)
        conn = srv.connect()
        note = json.dumps(NOTE).encode()
        conn.request("POST", "/v1/loss", body=note)  # no Content-Type: accepted
        st, _, _, data = read_checked(conn.getresponse(), "POST", "/v1/loss", {}, note)
        assert st == 200 and data == cli.stdout.rstrip(b"\n"), "server and CLI differ"
        conn.close()

        st, h, body = srv.request("GET", "/v1/losses")
        cli = subprocess.run([args.cli, "losses"], capture_output=True)
        assert st == 200 and body == json.loads(cli.stdout), "GET /v1/losses differs from `maskloss losses`"

        # HEAD on the GET routes: headers only.
        conn = srv.connect()
        conn.request("HEAD", "/v1/losses")
        st, h, _, data = read_checked(conn.getresponse(), "HEAD", "/v1/losses")
        assert st == 200 and data == b"" and int(h["content-length"]) > 1000
        conn.close()

        st, h, text = srv.request("GET", "/metrics")
        assert st == 200 and h["content-type"].startswith("text/plain; version=0.0.4"), h
        assert "maskloss_build_info" in text

        # Batch: one bad entry does not spoil the others.
        bad = dict(NOTE, loss="no_such_loss")
        torch = dict(NOTE, loss="torch.nn.functional.binary_cross_entropy_with_logits")
        st, h, body = srv.request("POST", "/v1/batch", {"requests": [NOTE, bad, torch]}, JSON)
        assert st == 200, (st, body)
        r = body["responses"]
        assert len(r) == 3 and ref.close(r[0]["loss"], NOTE_LOSS), r
        assert r[1]["code"] == "unknown_loss" and r[1]["field"] == "loss", r[1]
        assert ref.close(r[2]["loss"], ref.torch_weighted_mean(NOTE["labels"], NOTE["logits"], NOTE["mask"])), r[2]
        st, h, body = srv.request("POST", "/v1/batch", {"requests": []}, JSON)
        assert st == 200 and body == {"responses": []}, body
        stop_clean(srv)


@test
def error_classes(args):
    with Server(args.server, "--workers", "2", "--max-body-bytes", "4096", "--max-elements", "100") as srv:
        # 400: malformed JSON, with line and column.
        b = expect_error(srv.request("POST", "/v1/loss", '{\n  "loss": ', JSON), 400, "malformed_json")
        assert b["line"] == 2 and b["column"] >= 10, b
        expect_error(srv.request("POST", "/v1/loss", "", JSON), 400, "malformed_json")
        expect_error(srv.request("POST", "/v1/batch", "[1,", JSON), 400, "malformed_json")
        # 404 and 405 (with Allow).
        expect_error(srv.request("GET", "/v1/nope"), 404, "not_found", "path")
        expect_error(srv.request("POST", "/nope", "{}", JSON), 404, "not_found", "path")
        st, h, b = srv.request("GET", "/v1/loss")
        expect_error((st, h, b), 405, "method_not_allowed", "method")
        assert h.get("allow") == "POST", h
        st, h, b = srv.request("POST", "/healthz", "{}")
        expect_error((st, h, b), 405, "method_not_allowed", "method")
        assert h.get("allow") == "GET, HEAD", h
        st, h, b = srv.request("DELETE", "/metrics")
        assert st == 405 and h.get("allow") == "GET, HEAD", (st, h)
        # 413 from Content-Length, before the body is read: the connection is closed.
        data = raw(srv.port, b"POST /v1/loss HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000000000\r\n\r\n")
        st, h, body = parse_raw(data)
        assert st == 413 and json.loads(body)["code"] == "too_large", data[:300]
        assert json.loads(body)["field"] == "body"
        # 413 when a chunked body crosses the cap; the connection stays usable.
        conn = srv.connect()
        chunks = [b'{"loss": "sigmoid_cross_entropy", "labels": [' + b"0," * 1000, b"0," * 1500, b"0]}"]
        conn.request("POST", "/v1/loss", body=iter(chunks), headers=JSON, encode_chunked=True)
        st, _, body, _ = read_checked(conn.getresponse(), "POST", "/v1/loss", JSON)
        assert st == 413 and body["code"] == "too_large", (st, body)
        st, h, b = exchange(conn, "GET", "/healthz")
        assert st == 200, "the connection did not survive a chunked 413"
        conn.close()
        # 413 for too many elements.
        big = {"loss": "sigmoid_cross_entropy", "labels": [0] * 101, "logits": [0] * 101}
        expect_error(srv.request("POST", "/v1/loss", big, JSON), 413, "too_large")
        # 415: a wrong Content-Type or Content-Encoding; a missing one is fine, parameters too.
        expect_error(srv.request("POST", "/v1/loss", NOTE, {"Content-Type": "text/plain"}), 415,
                     "unsupported_media_type", "Content-Type")
        b = expect_error(srv.request("POST", "/v1/loss", NOTE,
                                     {"Content-Type": "application/x-www-form-urlencoded"}),
                         415, "unsupported_media_type", "Content-Type")
        assert "curl" in b["error"], b
        expect_error(srv.request("POST", "/v1/loss", NOTE, {"Content-Type": "application/json",
                                                            "Content-Encoding": "gzip"}),
                     415, "unsupported_media_type", "Content-Encoding")
        for ct in ("application/json; charset=utf-8", "Application/JSON"):
            st, h, b = srv.request("POST", "/v1/loss", NOTE, {"Content-Type": ct})
            assert st == 200 and ref.close(b["loss"], NOTE_LOSS), (ct, st, b)
        # 422: well-formed requests that cannot be evaluated.
        cases = [
            (dict(NOTE, loss="no_such_loss"), "unknown_loss", "loss"),
            (dict(NOTE, params={"label_smoothing": "high"}), "bad_parameter", "params.label_smoothing"),
            (dict(NOTE, params={"gamma": 2}), "unknown_parameter", "params.gamma"),
            (dict(NOTE, logits=[[0.1] * 4] * 4), "shape_mismatch", None),
            (dict(NOTE, mask=[1, 0, 1, 0, 1]), "broadcast_error", "weights"),
            (dict(NOTE, logits=[["NaN"] * 5] * 4), "non_finite_input", "logits"),
            (dict(NOTE, reduction="MEDIAN"), "unknown_reduction", "reduction"),
            ({"loss": "sigmoid_cross_entropy", "logits": [1]}, "invalid_request", "labels"),
            ([1, 2], "invalid_request", None),
        ]
        for req, code, field in cases:
            expect_error(srv.request("POST", "/v1/loss", req, JSON), 422, code, field)
        expect_error(srv.request("POST", "/v1/batch", {"reqs": []}, JSON), 422, "invalid_request", "requests")
        expect_error(srv.request("POST", "/v1/batch", {"requests": 3}, JSON), 422, "invalid_request", "requests")
        # Expect: 100-continue is honoured.
        body = json.dumps(NOTE).encode()
        head = b"POST /v1/loss HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        s = raw(srv.port, head, read=False)
        first = s.recv(100)
        assert first.startswith(b"HTTP/1.1 100"), first
        s.sendall(body)
        data = b""
        while parse_raw(data) is None:
            chunk = s.recv(65536)
            assert chunk, "closed before the answer"
            data += chunk
        s.close()
        st, h, b = parse_raw(data, head + body)
        assert st == 200 and ref.close(json.loads(b)["loss"], NOTE_LOSS)
        stop_clean(srv)


# ---- Golden vectors --------------------------------------------------------------------------

@test
def golden(args):
    cases = json.load(open(os.path.join(ROOT, "tests/data/golden.json")))["cases"]
    with Server(args.server) as srv:
        conn = srv.connect()
        failures = []
        for case in cases:
            st, h, body = exchange(conn, "POST", "/v1/loss", ref.golden_request(case), JSON)
            why = ref.golden_check(case, st == 200, body)
            if not why and case.get("expected_error") and st not in (413, 422):
                why = f"rejected with HTTP {st}, expected 422 or 413"
            if why:
                failures.append(f"/v1/loss {case['id']}: {why}")
        st, h, body = exchange(conn, "POST", "/v1/batch",
                               {"requests": [ref.golden_request(c) for c in cases]}, JSON)
        assert st == 200 and len(body["responses"]) == len(cases), st
        for case, ans in zip(cases, body["responses"]):
            why = ref.golden_check(case, "error" not in ans, ans)
            if why:
                failures.append(f"/v1/batch {case['id']}: {why}")
        conn.close()
        assert not failures, f"{len(failures)} golden failures:\n" + "\n".join(failures[:20])
        print(f"    {len(cases)} golden cases passed through /v1/loss and /v1/batch")
        stop_clean(srv)


# ---- Load ------------------------------------------------------------------------------------

def case_pool(seed, sizes, count):
    """`count` requests of the given shapes, serialized, with their expected answers."""
    rng = ref.make_rng(seed)
    kinds = ("tf", "torch", "per_element")
    pool = []
    for i in range(count):
        n, c = sizes[i % len(sizes)]
        req, want, per = ref.random_case(rng, n, c, kinds[i % 3])
        pool.append((json.dumps(req).encode(), want, per, f"{n}x{c} {kinds[i % 3]}"))
    return pool


def client_loop(srv, seed, count, results, pool, allow_503=False):
    """One keep-alive connection sending `count` requests drawn from pool, checking every answer."""
    rng = ref.make_rng(seed)
    conn = srv.connect(timeout=120)
    ok = busy = 0
    errors = []
    for i in range(count):
        body, want, per, what = rng.choice(pool)
        try:
            st, h, ans = exchange(conn, "POST", "/v1/loss", body, JSON)
        except Exception as e:  # a dropped connection is a failure
            errors.append(f"request {i}: {type(e).__name__}: {e}")
            conn.close()
            conn = srv.connect(timeout=120)
            continue
        if st == 200:
            why = ref.check_answer(ans, want, per)
            if why:
                errors.append(f"request {i} ({what}): {why}")
            ok += 1
        elif st == 503 and allow_503:
            if not h.get("retry-after", "").isdigit() or ans.get("code") != "queue_full":
                errors.append(f"request {i}: 503 without Retry-After or code queue_full: {h} {ans}")
            busy += 1
        else:
            errors.append(f"request {i}: HTTP {st}: {str(ans)[:200]}")
    conn.close()
    results.append((ok, busy, errors))


def run_clients(srv, clients, per_client, pool, allow_503=False):
    results = []
    threads = [threading.Thread(target=client_loop, args=(srv, 1000 + k, per_client, results, pool, allow_503))
               for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    ok = sum(r[0] for r in results)
    busy = sum(r[1] for r in results)
    errors = [e for r in results for e in r[2]]
    return ok, busy, errors, elapsed


@test
def concurrency(args):
    """64 clients x 200 requests of mixed sizes (50 against a sanitized build, several times
    slower: enough to overlap every step); every answer checked; only 200s."""
    each = 50 if args.sanitized else 200
    with Server(args.server) as srv:
        # Mixed sizes, from 1 element to 8192; a quarter ask for per_element too.
        sizes = [(1, 1), (4, 5), (8, 16), (32, 8), (1, 300), (64, 32), (16, 16), (128, 64)]
        ok, busy, errors, elapsed = run_clients(srv, 64, each, case_pool(5, sizes, 240))
        assert not errors, f"{len(errors)} failures, first: " + "\n".join(errors[:10])
        assert ok == 64 * each, ok
        print(f"    {ok} requests from 64 clients in {elapsed:.1f} s, all 200 and correct")
        stop_clean(srv)


@test
def tiny_queue(args):
    """A queue of one: the overflow is 503 + Retry-After at once; what was accepted is right."""
    with Server(args.server, "--workers", "1", "--queue-depth", "1") as srv:
        ok, busy, errors, elapsed = run_clients(srv, 32, 25, case_pool(6, [(64, 64), (128, 64)], 24),
                                                allow_503=True)
        assert not errors, f"{len(errors)} failures, first: " + "\n".join(errors[:10])
        assert busy > 0, "a queue of depth 1 under 32 clients never answered 503"
        assert ok > 0, "nothing was accepted"
        print(f"    {ok} answered 200, {busy} refused with 503 + Retry-After")
        stop_clean(srv)


def big_request(rng, n, c, per_element=False):
    req, want, per = ref.random_case(rng, n, c, "per_element" if per_element else "tf")
    return json.dumps(req).encode(), want, per


@test
def deadline(args):
    """Requests that waited in the queue past --request-timeout get 503, not a computation."""
    with Server(args.server, "--workers", "1", "--request-timeout", "0.05") as srv:
        body, want, _ = big_request(ref.make_rng(7), 2000, 100)
        results = []

        def one():
            results.append(srv.request("POST", "/v1/loss", body, JSON, timeout=120))
        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r[0] for r in results)
        late = [r for r in results if r[0] == 503]
        assert 200 in codes and late, f"expected both 200 and 503, got {codes}"
        for r in results:
            if r[0] == 200:
                assert ref.close(r[2]["loss"], want), r[2]
            else:
                expect_error(r, 503, "deadline_exceeded")
        print(f"    statuses {codes}")
        stop_clean(srv)


@test
def keep_alive(args):
    with Server(args.server) as srv:
        conn = srv.connect()
        conn.connect()
        sock = conn.sock
        for i in range(500):
            path = ("/v1/loss", "/healthz", "/metrics", "/v1/nope")[i % 4]
            method = "POST" if path == "/v1/loss" else "GET"
            st, h, body = exchange(conn, method, path, NOTE if method == "POST" else None, JSON)
            assert st == (404 if path == "/v1/nope" else 200), (i, st)
            assert h.get("connection", "").lower() != "close", f"request {i} closed the connection"
            assert conn.sock is sock, f"request {i} needed a new connection"
        conn.close()
        print("    500 requests (200s and 404s) over one connection")
        stop_clean(srv)


def big_requests(srv, seed, count):
    """`count` threads sending one 2000x100 request each to srv (started): (the expected loss,
    the list their (status, headers, body) are appended to, the threads)."""
    body, want, _ = big_request(ref.make_rng(seed), 2000, 100)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        srv.request("POST", "/v1/loss", body, JSON, timeout=300))) for _ in range(count)]
    for t in threads:
        t.start()
    return want, answers, threads


@test
@alone
def probes_under_load(args):
    """/healthz and /metrics are answered while every worker is busy and jobs are queued."""
    with Server(args.server, "--workers", "1") as srv:
        want, answers, threads = big_requests(srv, 3, 8)
        conn = srv.connect()
        seen_busy = 0
        for _ in range(2000):
            st, h, text = exchange(conn, "GET", "/metrics")
            assert st == 200
            queued = metric_value(text, "maskloss_queue_jobs")
            if queued >= 1 and metric_value(text, "maskloss_running_jobs") == 1:
                st, h, b = exchange(conn, "GET", "/healthz")
                assert st == 200 and b == {"status": "ok"}
                seen_busy += 1
            if len(answers) == 8:
                break
        conn.close()
        for t in threads:
            t.join()
        assert all(a[0] == 200 and ref.close(a[2]["loss"], want) for a in answers), [a[0] for a in answers]
        assert seen_busy >= 5, f"only {seen_busy} probes were answered while jobs were queued"
        print(f"    {seen_busy} /metrics + /healthz probes answered while the worker was busy and jobs queued")
        stop_clean(srv)


@test
@alone
def small_beside_big(args):
    """Small /v1/loss and v2 requests are answered at once while every worker is busy and
    jobs are queued (on the HTTP thread, not behind the queue); a small batch still waits
    for the worker; every answer is right (the note's loss from the reference formulas)."""
    with Server(args.server, "--workers", "1") as srv:
        want, answers, threads = big_requests(srv, 4, 6)
        v2 = {"inputs": [{"name": "LABELS", "datatype": "FP64", "shape": [4, 5], "data": NOTE["labels"]},
                         {"name": "LOGITS", "datatype": "FP64", "shape": [4, 5], "data": NOTE["logits"]},
                         {"name": "MASK", "datatype": "FP64", "shape": [4, 5], "data": NOTE["mask"]}],
              "parameters": {"dtype": "float64"}}
        conn = srv.connect()
        beside, slowest, batch = 0, 0.0, []
        for _ in range(4000):
            st, h, text = exchange(conn, "GET", "/metrics")
            assert st == 200
            if metric_value(text, "maskloss_queue_jobs") >= 1 and metric_value(text, "maskloss_running_jobs") == 1:
                t0 = time.monotonic()
                st, h, b = exchange(conn, "POST", "/v1/loss", NOTE, JSON)
                assert st == 200 and ref.close(b["loss"], NOTE_LOSS), (st, b)
                st, h, b = exchange(conn, "POST", "/v2/models/sigmoid_cross_entropy/infer", v2, JSON)
                assert st == 200 and ref.close(b["outputs"][0]["data"][0], NOTE_LOSS), (st, b)
                slowest = max(slowest, time.monotonic() - t0)
                st, h, text = exchange(conn, "GET", "/metrics")
                # Still busy and queued: the answers did not come from the worker.
                if metric_value(text, "maskloss_queue_jobs") >= 1 and metric_value(text, "maskloss_running_jobs") == 1:
                    beside += 1
                if not batch:
                    batch.append(threading.Thread(target=lambda: batch.append(
                        srv.request("POST", "/v1/batch", {"requests": [NOTE]}, JSON, timeout=300))))
                    batch[0].start()
            if len(answers) == 6:
                break
        conn.close()
        for t in threads + batch[:1]:
            t.join()
        assert all(a[0] == 200 and ref.close(a[2]["loss"], want) for a in answers), [a[0] for a in answers]
        assert beside >= 3, f"only {beside} pairs of small requests were answered beside the queue"
        assert batch and batch[1][0] == 200 and ref.close(batch[1][2]["responses"][0]["loss"], NOTE_LOSS), batch[1:]
        print(f"    {beside} pairs of small /v1/loss + v2 requests answered while the worker was busy and "
              f"jobs queued (slowest pair {slowest * 1e3:.1f} ms)")
        stop_clean(srv)


# ---- Shutdown and slow clients ---------------------------------------------------------------

@test
def drain(args):
    """SIGTERM with at least 16 large requests accepted and unanswered: each gets its correct 200;
    requests still uploading and new ones get 503 draining (or a refused connection); /readyz
    turns 503 while /healthz stays 200; exit status 0."""
    with Server(args.server, "--workers", "2") as srv:
        rng = ref.make_rng(11)
        payloads = [big_request(rng, 2500, 100, per_element=True) for _ in range(2)]
        results = {}

        def one(k):
            body, want, per = payloads[k % 2]
            try:
                st, h, ans = srv.request("POST", "/v1/loss", body, JSON, timeout=300)
                if st == 200:
                    results[k] = (st, ref.check_answer(ans, want, per))
                else:
                    results[k] = (st, ans.get("code") if isinstance(ans, dict) else str(ans)[:200])
            except Exception as e:
                results[k] = (None, f"{type(e).__name__}: {e}")
        threads = [threading.Thread(target=one, args=(k,)) for k in range(20)]
        for t in threads:
            t.start()
        # Wait until at least 16 are accepted (queued or computing) and none answered yet.
        deadline = time.monotonic() + 120
        while True:
            _, text = srv.metrics()
            jobs = metric_value(text, "maskloss_queue_jobs") + metric_value(text, "maskloss_running_jobs")
            if jobs >= 16:
                break
            assert time.monotonic() < deadline and not results, \
                f"never had 16 requests in flight (now {jobs}, {len(results)} answered)"
            time.sleep(0.005)
        srv.send_signal(signal.SIGTERM)
        t_signal = time.monotonic()
        # The signal is handled asynchronously: /readyz turns 503 soon, not at once.
        turned = None
        while time.monotonic() - t_signal < 10:
            try:
                if srv.request("GET", "/readyz", timeout=10)[0] == 503:
                    turned = time.monotonic() - t_signal
                    break
            except (ConnectionError, socket.timeout, OSError):
                break
            time.sleep(0.001)
        assert turned is not None, "/readyz did not turn 503 after SIGTERM"
        # During the drain: readiness fails, new work is refused, liveness still answers.
        probes = []
        for path, method in (("/readyz", "GET"), ("/v1/loss", "POST"), ("/healthz", "GET")):
            try:
                st, h, b = srv.request(method, path, NOTE if method == "POST" else None, JSON, timeout=30)
                probes.append((path, st, h, b))
            except (ConnectionError, socket.timeout, OSError) as e:
                probes.append((path, None, None, str(e)))
        for t in threads:
            t.join()
        rc = srv.stop(timeout=120)
        took = time.monotonic() - t_signal
        ok = [k for k, v in results.items() if v == (200, None)]
        wrong = {k: v for k, v in results.items() if v[0] == 200 and v[1] is not None}
        other = {k: v for k, v in results.items() if v[0] != 200 and v != (503, "draining")}
        assert len(results) == 20 and not wrong and not other, f"wrong answers {wrong}, failures {other}"
        assert len(ok) >= jobs, f"{jobs} requests were in flight at SIGTERM but only {len(ok)} got 200"
        for path, st, h, b in probes:
            if st is None:
                continue  # refused: allowed for new connections
            if path == "/healthz":
                assert st == 200, (path, st)
            else:
                expect_error((st, h, b), 503, "draining")
                assert h.get("connection", "").lower() == "close", h
        assert rc == 0, f"exit status {rc}:\n{srv.log()[-3000:]}"
        assert "draining" in srv.log(), srv.log()
        print(f"    SIGTERM with {int(jobs)} requests in flight: {len(ok)} answered 200 and correct, "
              f"{20 - len(ok)} still uploading got 503 draining; exit 0 after {took:.1f} s; "
              f"/readyz 503 after {turned * 1000:.1f} ms; probes {[(p[0], p[1]) for p in probes]}")


@test
def drain_refuses_new_connections(args):
    """After the drain, the port no longer accepts connections."""
    srv = Server(args.server)
    port = srv.port
    stop_clean(srv)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        raise AssertionError("the port still accepts connections after exit")
    except ConnectionRefusedError:
        pass


@test
def slow_client(args):
    """A body trickled byte by byte is cut off after --connection-timeout; others are unaffected."""
    with Server(args.server, "--connection-timeout", "2") as srv:
        s = raw(srv.port, b"POST /v1/loss HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 1000\r\n\r\n", read=False)
        idle = raw(srv.port, b"POST /v1/loss HTTP/1.1\r\nHost: t\r\n", read=False)  # stops mid-headers
        lat = []
        stop = threading.Event()

        def others():
            conn = srv.connect(timeout=10)
            while not stop.is_set():
                t0 = time.monotonic()
                st, h, b = exchange(conn, "POST", "/v1/loss", NOTE, JSON)
                lat.append((time.monotonic() - t0, st))
                time.sleep(0.02)
            conn.close()
        th = threading.Thread(target=others)
        th.start()
        t0 = time.monotonic()
        cut = None
        s.settimeout(0.05)
        for i in range(1000):  # 1000 bytes at 10 per second would take 100 s
            try:
                s.sendall(b" ")
                data = s.recv(4096)
                if data == b"":
                    cut = time.monotonic() - t0
                    break
            except socket.timeout:
                pass
            except (ConnectionResetError, BrokenPipeError):
                cut = time.monotonic() - t0
                break
            time.sleep(0.1)
            if time.monotonic() - t0 > 20:
                break
        idle.settimeout(10)
        try:
            idle_data = idle.recv(4096)
        except (ConnectionResetError, socket.timeout) as e:
            idle_data = repr(e).encode()
        idle_cut = time.monotonic() - t0
        stop.set()
        th.join()
        s.close()
        idle.close()
        assert cut is not None and 1.9 < cut < 10, f"the trickling client was not cut off at 2 s: {cut}"
        assert idle_cut < 10, f"the idle client was not cut off: {idle_data!r}"
        assert lat and all(st == 200 for _, st in lat), lat[:5]
        worst = max(t for t, _ in lat)
        # A stall behind the trickler would last until it is cut, 2 s.
        assert worst < 1.5, f"other clients stalled: worst latency {worst:.3f} s"
        _, text = srv.metrics()
        assert metric_value(text, "maskloss_http_requests_aborted_total", {"reason": "timeout"}) >= 1
        print(f"    trickler cut after {cut:.2f} s, idle client after {idle_cut:.2f} s; "
              f"{len(lat)} other requests, worst {worst * 1000:.1f} ms")
        stop_clean(srv)


# ---- Metrics, access log, configuration ------------------------------------------------------

@test
def metrics(args):
    """/metrics parses with prometheus_client and counts exactly what was sent."""
    from prometheus_client.parser import text_string_to_metric_families
    with Server(args.server) as srv:
        sent = 0
        for _ in range(3):
            body = json.dumps(NOTE).encode()
            sent += len(body)
            assert srv.request("POST", "/v1/loss", body, JSON)[0] == 200
        bad = json.dumps(dict(NOTE, loss="nope")).encode()
        sent += len(bad)
        assert srv.request("POST", "/v1/loss", bad, JSON)[0] == 422
        batch = json.dumps({"requests": [NOTE, NOTE]}).encode()
        sent += len(batch)
        assert srv.request("POST", "/v1/batch", batch, JSON)[0] == 200
        assert srv.request("GET", "/nope")[0] == 404
        for _ in range(100):  # completions are counted just after the last byte is sent
            h, text = srv.metrics()
            if metric_value(text, "maskloss_http_requests_in_flight") == 1:
                break
            time.sleep(0.01)
        assert h["content-type"] == "text/plain; version=0.0.4; charset=utf-8", h
        assert text.endswith("\n")
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        want_types = {
            "maskloss_build_info": "gauge", "maskloss_http_requests": "counter",
            "maskloss_http_request_duration_seconds": "histogram", "maskloss_queue_wait_seconds": "histogram",
            "maskloss_http_requests_in_flight": "gauge", "maskloss_queue_jobs": "gauge",
            "maskloss_running_jobs": "gauge", "maskloss_elements_evaluated": "counter",
            "maskloss_http_received_bytes": "counter", "maskloss_http_sent_bytes": "counter",
            "maskloss_start_time_seconds": "gauge", "maskloss_ready": "gauge",
        }
        for name, typ in want_types.items():
            assert name in fams and fams[name].type == typ, (name, fams.get(name))
        # Histograms: cumulative buckets, +Inf equal to _count.
        for fam in fams.values():
            if fam.type != "histogram":
                continue
            series = {}
            for s in fam.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                series.setdefault(key, {"buckets": []})
                if s.name.endswith("_bucket"):
                    series[key]["buckets"].append((float(s.labels["le"]), s.value))
                else:
                    series[key][s.name.rsplit("_", 1)[1]] = s.value
            for key, d in series.items():
                les = [le for le, _ in d["buckets"]]
                vals = [v for _, v in d["buckets"]]
                assert les == sorted(les) and les[-1] == float("inf"), (fam.name, key)
                assert vals == sorted(vals) and vals[-1] == d["count"], (fam.name, key, vals, d)
        v = lambda name, **labels: metric_value(text, name, labels)  # noqa: E731
        assert v("maskloss_http_requests_total", route="/v1/loss", code="200") == 3
        assert v("maskloss_http_requests_total", route="/v1/loss", code="422") == 1
        assert v("maskloss_http_requests_total", route="/v1/batch", code="200") == 1
        assert v("maskloss_http_requests_total", route="other", code="404") == 1
        assert v("maskloss_http_request_duration_seconds_count", route="/v1/loss") == 4
        assert v("maskloss_queue_wait_seconds_count") == 5
        assert v("maskloss_elements_evaluated_total", loss="sigmoid_cross_entropy") == 5 * 20
        assert v("maskloss_batch_entries_total") == 2
        assert v("maskloss_http_received_bytes_total") == sent, (v("maskloss_http_received_bytes_total"), sent)
        import subprocess
        version = subprocess.run([args.server, "--version"], capture_output=True, text=True).stdout.split()[-1]
        assert v("maskloss_build_info", version=version) == 1, version
        assert v("maskloss_ready") == 1 and v("maskloss_queue_jobs") == 0
        stop_clean(srv)


@test
def access_log(args):
    with Server(args.server, "--access-log") as srv:
        assert srv.request("POST", "/v1/loss", NOTE, JSON)[0] == 200
        assert srv.request("GET", "/nope")[0] == 404
        stop_clean(srv)
        lines = [json.loads(l) for l in srv.log().splitlines() if l.startswith("{")]
        assert len(lines) == 2, srv.log()
        # In the order the requests completed, which with several HTTP threads (the default)
        # may differ from the order the client saw their answers in.
        a, b = sorted(lines, key=lambda l: l["path"] != "/v1/loss")
        for key in ("time", "remote", "method", "path", "status", "bytes_in", "bytes_out",
                    "queue_seconds", "total_seconds", "loss"):
            assert key in a, (key, a)
        assert a["method"] == "POST" and a["path"] == "/v1/loss" and a["status"] == 200, a
        assert a["loss"] == "sigmoid_cross_entropy" and a["bytes_in"] == len(json.dumps(NOTE)), a
        assert a["remote"] == "127.0.0.1" and a["total_seconds"] >= a["queue_seconds"] >= 0, a
        assert b["status"] == 404 and b["loss"] is None, b


@test
def configuration(args):
    import subprocess
    out = subprocess.run([args.server, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("bind", "port", "workers", "queue-depth", "max-body-bytes", "max-elements",
                 "request-timeout", "connection-timeout", "drain-timeout", "access-log"):
        assert f"--{flag}" in out.stdout, flag
        assert "MASKLOSS_" + flag.upper().replace("-", "_") in out.stdout, flag
    assert "default" in out.stdout
    out = subprocess.run([args.server, "--workers", "0"], capture_output=True, text=True)
    assert out.returncode == 64 and "--workers" in out.stderr, out
    out = subprocess.run([args.server, "--bogus"], capture_output=True, text=True)
    assert out.returncode == 64 and "--bogus" in out.stderr, out
    env = dict(os.environ, MASKLOSS_QUEUE_DEPTH="abc")
    out = subprocess.run([args.server], capture_output=True, text=True, env=env)
    assert out.returncode == 64 and "MASKLOSS_QUEUE_DEPTH" in out.stderr, out
    # The environment sets, a flag overrides.
    with Server(args.server, "--queue-depth", "7", env={"MASKLOSS_WORKERS": "3", "MASKLOSS_QUEUE_DEPTH": "5"}) as srv:
        assert srv.workers == 3 and srv.queue_depth == 7, srv.banner
        assert srv.request("GET", "/readyz")[0] == 200
        # A busy port is a clear error.
        out = subprocess.run([args.server, "--port", str(srv.port)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and "cannot listen" in out.stderr, out
        rc = srv.stop(signal.SIGINT)  # SIGINT drains like SIGTERM
        assert rc == 0 and "SIGINT: draining" in srv.log(), (rc, srv.log())
    # IPv6 (dual stack on "::").
    with Server(args.server, "--bind", "::1") as srv:
        conn = http.client.HTTPConnection("::1", srv.port, timeout=10)
        st, h, b = exchange(conn, "POST", "/v1/loss", NOTE, JSON)
        assert st == 200 and ref.close(b["loss"], NOTE_LOSS), (st, b)
        conn.close()
        assert "http://[::1]:" in srv.banner, srv.banner
        stop_clean(srv)


@test
def readme_examples(args):
    """Every curl example of README.md, answered exactly as the README shows."""
    import re
    import subprocess
    text = open(os.path.join(ROOT, "README.md")).read()
    # (the shared endpoint's examples need a server started as they say: tests_auth's
    # auth_readme_examples and tests_quota's quota_readme_examples run them)
    shared = text.index("### A shared endpoint")
    text = text[:shared] + text[text.index("\n### ", shared + 1):]
    # In order, since later examples use what earlier ones made: a ```json answer is the exact
    # text; a ```text one (a clock in it) is the same JSON but for the members that are times.
    pairs = re.findall(r"```sh\n(curl [^\n]*)\n```\n\n```(json|text)\n(.*?)\n```", text, re.S)
    # (those with a token are for a server with --auth-file: tests_auth.auth_readme_examples)
    pairs = [p for p in pairs if "Authorization: Bearer $" not in p[0]]
    assert len(pairs) >= 5, f"found only {len(pairs)} curl examples in README.md"
    clocks = {"time", "bucket", "now", "from", "to", "t"}

    def same(got, want, where):
        if isinstance(want, list):
            assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} vs {want}"
            for i, (g, w) in enumerate(zip(got, want)):
                same(g, w, f"{where}[{i}]")
        elif isinstance(want, dict):
            assert isinstance(got, dict) and set(got) == set(want), f"{where}: {got} vs {want}"
            for k in want:
                if k in clocks:
                    assert isinstance(got[k], (int, float)), f"{where}.{k}: {got[k]}"
                else:
                    same(got[k], want[k], f"{where}.{k}")
        else:
            assert got == want, f"{where}: {got} vs {want}"

    exact = loose = 0
    with Server(args.server) as srv:
        # (through a relay that checks curl's exchanges against the document)
        with recorded(srv.port, len(pairs)) as rec:
            for cmd, kind, want in pairs:
                cmd = cmd.replace("localhost:8080", f"127.0.0.1:{rec.port}")
                out = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=30)
                if kind == "json":
                    assert out.stdout.rstrip("\n") == want, \
                        f"README example\n  {cmd}\nprinted\n  {out.stdout}\nnot\n  {want}"
                    exact += 1
                else:
                    same(json.loads(out.stdout), json.loads(want), cmd[:60])
                    loose += 1
        print(f"    {exact} curl examples answered exactly, {loose} but for their clocks")
        stop_clean(srv)


# ---- Scalar parameters of every dtype (issue 10, defect 1) ------------------------------------

FOCAL = {"loss": "sigmoid_focal_loss", "reduction": "mean",
         "labels": [[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]],
         "logits": [[0.5, -1.25, 2.0, -0.75], [3.5, 0.125, -2.5, 1.0], [0.0, 4.0, -3.0, 0.25]]}


def b64_scalar(dtype, value):
    """A rank-0 tensor of dtype as {"shape": [], "dtype", "b64"} (little-endian bytes)."""
    import base64
    import struct
    fmt = {"float32": "<f", "float64": "<d", "uint8": "<B", "bool": "<?", "int32": "<i", "int64": "<q"}[dtype]
    value = bool(value) if dtype == "bool" else value
    return {"shape": [], "dtype": dtype, "b64": base64.b64encode(struct.pack(fmt, value)).decode()}


@test
def scalar_param_dtypes(args):
    with Server(args.server) as srv:
        conn = srv.connect()
        # The issue's request: gamma an int32 2 in base64 (a heap overflow before the fix).
        issue = dict(FOCAL, params={"gamma": {"shape": [], "dtype": "int32", "b64": "AgAAAA=="}})
        st, h, got = exchange(conn, "POST", "/v1/loss", issue, JSON)
        st2, h, want = exchange(conn, "POST", "/v1/loss", dict(FOCAL, params={"gamma": 2}), JSON)
        assert st == 200 and st2 == 200, (st, got, st2, want)
        assert got["loss"] == want["loss"], (got, want)
        # Every dtype, for a numeric parameter and for pos_weight, on the fused path (loss only)
        # and the general one (per_element too), in float32 and float64: the plain number's bits.
        bce = {"loss": "binary_cross_entropy_with_logits", "labels": FOCAL["labels"], "logits": FOCAL["logits"]}
        for base, name, value in ((FOCAL, "gamma", 2), (FOCAL, "alpha", 1), (bce, "pos_weight", 3)):
            for dtype in ("float32", "float64", "uint8", "bool", "int32", "int64"):
                v = 1 if dtype == "bool" else value
                for precision in ("float32", "float64"):
                    for outputs in (["loss"], ["loss", "per_element"]):
                        req = dict(base, dtype=precision, outputs=outputs)
                        st, h, got = exchange(conn, "POST", "/v1/loss", dict(req, params={name: b64_scalar(dtype, v)}), JSON)
                        st2, h, want = exchange(conn, "POST", "/v1/loss", dict(req, params={name: v}), JSON)
                        ctx = (name, dtype, precision, outputs, got, want)
                        assert st == 200 and st2 == 200 and got == want, ctx
        # A rank-0 JSON tensor is a number too; a tensor of rank 1 is not.
        st, h, got = exchange(conn, "POST", "/v1/loss", dict(FOCAL, params={"gamma": {"shape": [], "data": 2}}), JSON)
        assert st == 200 and got["loss"] == want_loss(conn, FOCAL, {"gamma": 2}), got
        expect_error(exchange(conn, "POST", "/v1/loss", dict(FOCAL, params={"gamma": [2]}), JSON),
                     422, "bad_parameter", "params.gamma")
        expect_error(exchange(conn, "POST", "/v1/loss",
                              dict(FOCAL, params={"gamma": {"shape": [1], "dtype": "int32", "b64": "AgAAAA=="}}), JSON),
                     422, "bad_parameter", "params.gamma")
        conn.close()
        stop_clean(srv)


def want_loss(conn, base, params):
    st, h, body = exchange(conn, "POST", "/v1/loss", dict(base, params=params), JSON)
    assert st == 200, body
    return body["loss"]


# ---- Empty tensors and the element limit (issue 10, defect 2) ---------------------------------

def empty_request(shape, outputs, loss="sigmoid_cross_entropy"):
    t = {"shape": shape, "data": []}
    return {"loss": loss, "labels": t, "logits": t, "outputs": outputs}


@test
def zero_size_limits(args):
    p40 = 2 ** 40
    # The server's default limit (16777216 elements).
    with Server(args.server) as srv:
        conn = srv.connect(timeout=30)
        issue = empty_request([p40, 0], ["per_element"])
        assert len(json.dumps(issue, separators=(",", ":"))) < 200
        # The message names the limit: the server's, or the absolute 2^40 that the decoder
        # applies before any size is computed.
        for req, limit in ((issue, "16777216"), (empty_request([0, 67108864], ["per_class"]), "16777216"),
                           (empty_request([p40, 0, p40], ["per_class"]), "2^40"),
                           (empty_request([p40, 0, p40], ["per_sample"]), "2^40"),
                           (dict(empty_request([p40, 0], ["loss"]), reduction="NONE"), "16777216")):
            b = expect_error(exchange(conn, "POST", "/v1/loss", req, JSON), 413, "too_large", "labels")
            assert limit in b["error"], b
        # The same through v2 (its JSON inputs).
        v2 = {"inputs": [{"name": n, "shape": [p40, 0], "datatype": "FP32", "data": []} for n in ("LABELS", "LOGITS")],
              "outputs": [{"name": "PER_ELEMENT"}]}
        st, h, b = exchange(conn, "POST", "/v2/models/sigmoid_cross_entropy/infer", v2, JSON)
        assert st == 413 and b["code"] == "too_large", (st, b)
        # Ordinary empty requests keep their frameworks' answers: TF divides with div_no_nan
        # (0), torch's mean of nothing is NaN.
        st, h, b = exchange(conn, "POST", "/v1/loss", empty_request([0, 5], ["loss", "per_element", "per_class"]), JSON)
        assert st == 200 and b["loss"] == 0.0 and b["per_element"] == [] and b["per_class"] == [0.0] * 5, (st, b)
        st, h, b = exchange(conn, "POST", "/v1/loss", empty_request([0, 5], ["loss"], "binary_cross_entropy_with_logits"), JSON)
        assert st == 200 and b["loss"] == "NaN", (st, b)
        conn.close()
        stop_clean(srv)
    # A limit of 100.
    with Server(args.server, "--max-elements", "100") as srv:
        conn = srv.connect(timeout=30)
        b = expect_error(exchange(conn, "POST", "/v1/loss", empty_request([0, 4000000], ["per_class"]), JSON),
                         413, "too_large", "labels")
        assert "100" in b["error"], b
        st, h, b = exchange(conn, "POST", "/v1/loss", empty_request([0, 100], ["per_class"]), JSON)
        assert st == 200 and b["per_class"] == [0.0] * 100, (st, b)
        conn.close()
        stop_clean(srv)
