"""End-to-end tests of --http-threads: several libmicrohttpd threads, each answering the small
requests it reads. A mixed load -- small requests from several connections, probes, large
requests on the workers, per-token quotas, a token reload by SIGHUP -- must get every answer
right and every quota counted as with one thread. Expected losses come from the reference
formulas (reference.py); the quota bounds from the token bucket's definition (README)."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import reference as ref
from common import metric_value, stop_clean, test, wait_until, JSON, ROOT
from server import Server, exchange
from tests_auth import new_token
from tests_v1 import big_request


def with_token(token):
    return {**JSON, "Authorization": f"Bearer {token}"}


@test
def http_threads_mixed_load(args):
    """--http-threads 2 --workers 1 with tokens and quotas: 8 connections of one token send
    small requests (each answer checked against the reference), 2 of another flood its rate
    limit (429s within the token bucket's bounds, counted once each in /metrics), probes run
    throughout, 2 large requests occupy the worker, and a SIGHUP adds a token mid-load. No
    request of the first token is refused: its share of the queue (--queue-share 8, one per
    connection) comes back whole after each answer, whichever thread took it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        alice = new_token(args, path, "alice", "evaluate")
        bob = new_token(args, path, "bob", "evaluate")
        dave = new_token(args, path, "dave", "evaluate")
        rate, burst = 5, 600
        with Server(args.server, "--http-threads", "2", "--workers", "1", "--auth-file", path,
                    "--rate-limit", str(rate), "--rate-burst", str(burst), "--queue-share", "8",
                    "--metrics-open") as srv:
            errors, lock = [], threading.Lock()

            def fail(msg):
                with lock:
                    errors.append(msg)

            # Small requests of alice: 8 keep-alive connections, 60 random 4x5 problems each.
            def small(seed):
                rng = ref.make_rng(seed)
                conn = srv.connect()
                for _ in range(60):
                    req, want, _ = ref.random_case(rng, 4, 5, "tf")
                    st, _, b = exchange(conn, "POST", "/v1/loss", req, with_token(alice))
                    if st != 200 or not ref.close(b["loss"], want):
                        fail(f"alice: {st} {b} (want {want})")
                conn.close()

            # dave floods his bucket from 2 connections at once.
            dave_got = []

            def flood():
                conn = srv.connect()
                req, want, _ = ref.random_case(ref.make_rng(99), 4, 5, "tf")
                for _ in range(400):
                    st, h, b = exchange(conn, "POST", "/v1/loss", req, with_token(dave))
                    if st == 200 and not ref.close(b["loss"], want):
                        fail(f"dave: wrong loss {b}")
                    if st == 429 and not h.get("retry-after", "").isdigit():
                        fail(f"dave: 429 without Retry-After {h}")
                    with lock:
                        dave_got.append(st)
                conn.close()

            # Large requests of bob: the worker is busy while the rest runs.
            big_body, big_want, _ = big_request(ref.make_rng(5), 2000, 100)
            big = []

            def large():
                big.append(srv.request("POST", "/v1/loss", big_body, with_token(bob), timeout=300))

            done = threading.Event()
            probes = [0, 0.0]

            def probe():
                conn = srv.connect()
                while not done.is_set():
                    t0 = time.monotonic()
                    for p in ("/healthz", "/readyz"):
                        st, _, _ = exchange(conn, "GET", p)
                        if st != 200:
                            fail(f"probe {p}: {st}")
                    probes[0] += 1
                    probes[1] = max(probes[1], time.monotonic() - t0)
                conn.close()

            threads = ([threading.Thread(target=large) for _ in range(2)]
                       + [threading.Thread(target=small, args=(s,)) for s in range(8)]
                       + [threading.Thread(target=flood) for _ in range(2)])
            prober = threading.Thread(target=probe)
            t0 = time.monotonic()
            prober.start()
            for t in threads:
                t.start()
            # A token added and loaded while the load runs.
            erin = new_token(args, path, "erin", "evaluate")
            srv.proc.send_signal(signal.SIGHUP)
            assert wait_until(lambda: "SIGHUP: 4 token(s)" in srv.log()), srv.log()[-800:]
            req, want, _ = ref.random_case(ref.make_rng(7), 4, 5, "tf")
            st, _, b = srv.request("POST", "/v1/loss", req, with_token(erin))
            assert st == 200 and ref.close(b["loss"], want), (st, b)
            for t in threads:
                t.join()
            elapsed = time.monotonic() - t0
            done.set()
            prober.join()

            assert not errors, errors[:5]
            assert len(big) == 2 and all(a[0] == 200 and ref.close(a[2]["loss"], big_want) for a in big), \
                [a[0] for a in big]
            ok, refused = dave_got.count(200), dave_got.count(429)
            assert ok + refused == 800, sorted(set(dave_got))
            # The bucket: its burst, plus at most what refilled meanwhile.
            assert burst <= ok <= burst + int(rate * elapsed) + 1, (ok, elapsed)
            st, _, text = srv.request("GET", "/metrics")
            assert st == 200
            counted = metric_value(text, "maskloss_quota_refused_total", {"reason": "rate"})
            assert counted == refused, (counted, refused)
            assert metric_value(text, "maskloss_quota_refused_total", {"reason": "queue_share"}) == 0
            assert probes[0] >= 5, probes
            print(f"    480 small + 800 flood ({ok} ok, {refused} 429) + 2 large answered right; "
                  f"{probes[0]} probe pairs, slowest {probes[1] * 1e3:.1f} ms")
            stop_clean(srv)


@test
def http_threads_share_under_wrk(args):
    """One client address, --queue-share 8, 8 connections of wrk (Python's clients are too
    slow to make two HTTP threads meet in the quota table): every request is answered 200,
    none refused for its share -- each answer gives back its place, whichever thread took
    it. Without the quota table's mutex, lost updates of the count leaked places and
    refused thousands (and ThreadSanitizer reported the race)."""
    if not shutil.which("wrk"):
        print("    wrk not installed: skipped")
        return
    with Server(args.server, "--http-threads", "2", "--workers", "1", "--rate-limit", "1000000",
                "--queue-share", "8") as srv:
        env = dict(os.environ, BODY_FILE=os.path.join(ROOT, "examples", "masked-mean.json"))
        out = subprocess.run(["wrk", "-t2", "-c8", "-d2s", "-s",
                              os.path.join(ROOT, "tests", "bench", "post.lua"),
                              f"http://127.0.0.1:{srv.port}/v1/loss"],
                             capture_output=True, text=True, env=env, timeout=60).stdout
        count = int(re.search(r"(\d+) requests in", out).group(1))
        assert count > 100 and "Non-2xx" not in out and "Socket errors" not in out, out
        st, _, text = srv.request("GET", "/metrics")
        assert metric_value(text, "maskloss_quota_refused_total", {"reason": "queue_share"}) == 0, out
        # Every place given back: the address may still fill its whole share.
        st, _, b = srv.request("POST", "/v1/loss", open(env["BODY_FILE"]).read(), JSON)
        assert st == 200, (st, b)
        print(f"    {count} requests from 8 connections, none refused")
        stop_clean(srv)
