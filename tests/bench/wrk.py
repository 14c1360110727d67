#!/usr/bin/env python3
"""make bench: wrk against a maskloss-server started here on a free port.

usage: wrk.py SERVER [--duration S] [--runs N] [--connections C] [--threads T] [--nginx]
                     [--http-threads 1,2] [--split]

With --nginx (make bench-server): POST /v1/loss with the note's 4x5 example against nginx
serving a static file of the same response, same wrk settings, interleaved in one run, with
wrk -t1 and with -t2 (--threads is not used), and the CPU time each server spent a request
(user + system of all its threads and processes, from /proc: a figure that other load on the
machine moves less than the rates); with --http-threads 1,2, one server per value, each its
own row, interleaved with the others; then
one client sending 1000x1000 float32 binary v2 requests back to back (wrk -t1 -c1), whose
latency is the end-to-end time of one such request; then --split.

With --split (alone, or after --nginx): one 16M-element float32 binary v2 request (4096x4096
labels, logits and mask, 201 MB) sent to a server with --workers 1 and one with --workers 2,
one request at a time, alternating, --runs times each: the end-to-end time of each (medians)
and its part after the client's last byte was sent (the rest is sending and receiving the
body, the same whatever the workers), and the ratios.

Small requests, wrk -t2 -c64 (each scenario run N times, interleaved; medians, min-max):
  healthz  GET /healthz (the HTTP layer alone)
  note     POST /v1/loss with the note's 4x5 masked example (examples/masked-mean.json)
  n16384   POST /v1/loss, sigmoid cross-entropy on a 128x128 float32 request with a mask
Large requests, wrk -t1 -c2: one 1000x1000 masked sigmoid cross-entropy (labels, logits and
mask all float32, 12 MB of data) sent three ways, side by side:
  json     POST /v1/loss, JSON numbers
  b64      POST /v1/loss, {"shape", "dtype", "b64"} tensors
  binary   POST /v2/models/sigmoid_cross_entropy/infer, binary tensor data
and the server's peak memory (VmHWM) for one such request on a fresh server, against the
request's size. Every response must be 2xx: wrk's "Non-2xx" count fails the run.
"""
import base64
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from server import Server  # noqa: E402


def seconds(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def run_wrk(url, args, body_file=None, threads=None, connections=None, env_extra=None):
    cmd = ["wrk", f"-t{threads or args.threads}", f"-c{connections or args.connections}",
           f"-d{args.duration}s", "--latency", url]
    env = dict(os.environ)
    env.update(env_extra or {})
    if body_file:
        cmd[1:1] = ["-s", os.path.join(HERE, "post.lua")]
        env["BODY_FILE"] = body_file
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = seconds(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = seconds(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        sys.exit(f"wrk reported failures:\n{out}")
    count = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, p50, p99, count


def cpu_seconds(pid):
    """User + system CPU seconds of process pid (all its threads) and of its children's
    processes (nginx's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [pid]
    try:
        pids += [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        pass
    for p in pids:
        fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nginx", action="store_true")
    ap.add_argument("--split", action="store_true")
    ap.add_argument("--http-threads", default="",
                    help="with --nginx: comma-separated --http-threads values, one server each, "
                         "interleaved (default: the server's own default)")
    args = ap.parse_args()
    if args.nginx:
        return vs_nginx(args)
    if args.split:
        return split_large(args)

    tmp = tempfile.mkdtemp()
    rng = random.Random(1)
    big = {"loss": "sigmoid_cross_entropy",
           "labels": [[rng.randint(0, 1) for _ in range(128)] for _ in range(128)],
           "logits": [[round(rng.uniform(-4, 4), 4) for _ in range(128)] for _ in range(128)],
           "mask": [[rng.randint(0, 1) for _ in range(128)] for _ in range(128)]}
    big_file = os.path.join(tmp, "n16384.json")
    with open(big_file, "w") as f:
        json.dump(big, f)
    note_file = os.path.join(ROOT, "examples", "masked-mean.json")
    scenarios = [("healthz", "/healthz", None), ("note", "/v1/loss", note_file),
                 ("n16384", "/v1/loss", big_file)]

    with Server(args.server) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        print(f"{srv.banner.strip()}")
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency, "
              f"{args.runs} runs per scenario, interleaved")
        results = {name: [] for name, _, _ in scenarios}
        for run in range(args.runs):
            for name, path, body in scenarios:
                results[name].append(run_wrk(base + path, args, body))
        print(f"{'scenario':10} {'req/s median (min-max)':>28} {'p50 median':>12} {'p99 median':>12}")
        for name, _, _ in scenarios:
            rps = [r[0] for r in results[name]]
            p50 = statistics.median(r[1] for r in results[name])
            p99 = statistics.median(r[2] for r in results[name])
            print(f"{name:10} {statistics.median(rps):>12,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"
                  f" {p50 * 1e3:>10.2f}ms {p99 * 1e3:>10.2f}ms")
        large = large_requests(tmp)
        lresults = {name: [] for name, _, _, _ in large}
        for run in range(args.runs):
            for name, path, body, env in large:
                lresults[name].append(run_wrk(base + path, args, body, 1, 2, env))
        print(f"\n1000x1000 float32 (1,000,000 elements), wrk -t1 -c2 -d{args.duration}s")
        print(f"{'path':8} {'body MB':>8} {'req/s median':>13} {'M elements/s':>13} {'p50':>10}  vs json")
        base_rps = statistics.median(r[0] for r in lresults["json"])
        for name, _, body, _ in large:
            rps = statistics.median(r[0] for r in lresults[name])
            p50 = statistics.median(r[1] for r in lresults[name])
            print(f"{name:8} {os.path.getsize(body) / 1e6:>8.1f} {rps:>13.2f} {rps:>13.2f} "
                  f"{p50 * 1e3:>8.1f}ms  {rps / base_rps:>5.1f}x")
        rc = srv.stop()
        if rc != 0:
            sys.exit(f"server exit status {rc}")
    print("\npeak server memory for one 1000x1000 request (VmHWM growth over an idle server)")
    for name, path, body, env in large_requests(tmp):
        grown = peak_memory(args.server, path, body, env)
        size = os.path.getsize(body)
        print(f"{name:8} body {size / 1e6:6.1f} MB, data 12.0 MB: peak +{grown / 1e6:7.1f} MB "
              f"({grown / size:.2f}x the body)")


def large_requests(tmp):
    """The three encodings of one 1000x1000 request, written once to files."""
    files = os.path.join(tmp, "large")
    rng = np.random.default_rng(1)
    y = (rng.random((1000, 1000)) < 0.3).astype(np.float32)
    x = rng.normal(0, 2, (1000, 1000)).astype(np.float32)
    m = (rng.random((1000, 1000)) < 0.5).astype(np.float32)
    if not os.path.exists(files):
        os.makedirs(files)
        # JSON numbers as short as they can be: float32's shortest round-trip text.
        xs = np.array([float(str(v)) for v in x.ravel()]).reshape(x.shape)
        assert np.array_equal(xs.astype(np.float32), x)
        with open(os.path.join(files, "json"), "w") as f:
            json.dump({"loss": "sigmoid_cross_entropy", "labels": y.astype(int).tolist(),
                       "logits": xs.tolist(), "mask": m.astype(int).tolist()}, f)

        def b64(a):
            return {"shape": list(a.shape), "dtype": "float32",
                    "b64": base64.b64encode(a.tobytes()).decode()}
        with open(os.path.join(files, "b64"), "w") as f:
            json.dump({"loss": "sigmoid_cross_entropy", "labels": b64(y), "logits": b64(x),
                       "mask": b64(m)}, f)
        header = json.dumps({"inputs": [
            {"name": n, "shape": [1000, 1000], "datatype": "FP32",
             "parameters": {"binary_data_size": 4000000}} for n in ("LABELS", "LOGITS", "MASK")],
            "outputs": [{"name": "LOSS", "parameters": {"binary_data": True}}]}).encode()
        with open(os.path.join(files, "binary"), "wb") as f:
            f.write(header + y.tobytes() + x.tobytes() + m.tobytes())
        with open(os.path.join(files, "ihcl"), "w") as f:
            f.write(str(len(header)))
    ihcl = open(os.path.join(files, "ihcl")).read()
    return [("json", "/v1/loss", os.path.join(files, "json"), None),
            ("b64", "/v1/loss", os.path.join(files, "b64"), None),
            ("binary", "/v2/models/sigmoid_cross_entropy/infer", os.path.join(files, "binary"),
             {"IHCL": ihcl, "CONTENT_TYPE": "application/octet-stream"})]


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_memory(server, path, body_file, env):
    """VmHWM growth of a fresh server answering one request (its answer checked 200)."""
    with Server(server, "--workers", "1") as srv:
        before = vm_hwm(srv.proc.pid)
        body = open(body_file, "rb").read()
        headers = {"Content-Type": (env or {}).get("CONTENT_TYPE", "application/json")}
        if env and "IHCL" in env:
            headers["Inference-Header-Content-Length"] = env["IHCL"]
        conn = srv.connect()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            sys.exit(f"{path}: HTTP {resp.status}")
        conn.close()
        after = vm_hwm(srv.proc.pid)
        srv.stop()
    return after - before



NGINX_CONF = """daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location / {{ default_type application/json; }}
    }}
}}
"""


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vs_nginx(args):
    import contextlib
    tmp = tempfile.mkdtemp()
    os.chmod(tmp, 0o755)  # nginx's workers drop root for www-data: let them read the file
    note_file = os.path.join(ROOT, "examples", "masked-mean.json")
    # One server per --http-threads value ("maskloss" alone: the server's default).
    variants = [v for v in args.http_threads.split(",") if v]
    with contextlib.ExitStack() as stack:
        names = [f"maskloss h{v}" for v in variants] or ["maskloss"]
        servers = {name: stack.enter_context(Server(args.server, *(["--http-threads", v] if v else [])))
                   for name, v in zip(names, variants or [""])}
        srv = servers[names[0]]
        base = f"http://127.0.0.1:{srv.port}"
        # nginx serves the very bytes maskloss answers, from a file.
        conn = srv.connect()
        conn.request("POST", "/v1/loss", body=open(note_file, "rb").read(),
                     headers={"Content-Type": "application/json"})
        answer = conn.getresponse().read()
        conn.close()
        os.makedirs(os.path.join(tmp, "www"))
        with open(os.path.join(tmp, "www", "note.json"), "wb") as f:
            f.write(answer)
        port = free_port()
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=port))
        nginx = subprocess.Popen(["nginx", "-c", os.path.join(tmp, "nginx.conf")],
                                 stderr=subprocess.PIPE)
        try:
            import time
            for _ in range(100):
                try:
                    import urllib.request
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/note.json", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.05)
            print(srv.banner.strip())
            print(f"nginx 1.22, 1 worker, static file of the same {len(answer)}-byte answer")
            print(f"wrk -c{args.connections} -d{args.duration}s --latency, -t1 and -t2, "
                  f"{args.runs} runs each, interleaved; CPU: user + system a request")

            def one(name, threads, url, body):
                pid = nginx.pid if name == "nginx" else servers[name].proc.pid
                before = cpu_seconds(pid)
                r = run_wrk(url, args, body, threads)
                return r + ((cpu_seconds(pid) - before) / r[3],)
            res = {(name, t): [] for t in (1, 2) for name in ["nginx"] + names}
            for _ in range(args.runs):
                for t in (1, 2):
                    res["nginx", t].append(one("nginx", t, f"http://127.0.0.1:{port}/note.json", None))
                    for name in names:
                        res[name, t].append(one(name, t, f"http://127.0.0.1:{servers[name].port}/v1/loss",
                                                note_file))
        finally:
            nginx.terminate()
            nginx.wait()
        print(f"{'server':18} {'req/s median (min-max)':>28} {'p50':>9} {'p99':>9} {'CPU':>9}")
        med = {}
        for (name, t), rows in res.items():
            rps = [r[0] for r in rows]
            med[name, t] = statistics.median(rps), statistics.median(r[4] for r in rows)
            print(f"{name + f' -t{t}':18} {med[name, t][0]:>12,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"
                  f" {statistics.median(r[1] for r in rows) * 1e3:>7.2f}ms"
                  f" {statistics.median(r[2] for r in rows) * 1e3:>7.2f}ms"
                  f" {med[name, t][1] * 1e6:>7.1f}us")
        for name in names:
            for t in (1, 2):
                print(f"{name} / nginx, -t{t}: {med[name, t][0] / med['nginx', t][0]:.2f} of the "
                      f"requests/s; nginx's CPU a request / maskloss's: "
                      f"{med['nginx', t][1] / med[name, t][1]:.2f}")

        large = {name: (path, body, env) for name, path, body, env in large_requests(tmp)}
        path, body, env = large["binary"]
        rows = [run_wrk(base + path, args, body, 1, 1, env) for _ in range(args.runs)]
        print(f"\none 1000x1000 float32 binary v2 request at a time (wrk -t1 -c1 -d{args.duration}s):"
              f" {statistics.median(r[0] for r in rows):.1f} req/s, end-to-end latency p50 "
              f"{statistics.median(r[1] for r in rows) * 1e3:.1f} ms, p99 "
              f"{statistics.median(r[2] for r in rows) * 1e3:.1f} ms")
        for name, server in servers.items():
            rc = server.stop()
            if rc != 0:
                sys.exit(f"{name}: server exit status {rc}")
    print()
    split_large(args)


def split_large(args):
    """One 16M-element binary v2 request, --workers 1 against --workers 2 (module docstring)."""
    import socket
    import time
    n = 4096
    rng = np.random.default_rng(1)
    header = json.dumps({"inputs": [
        {"name": name, "shape": [n, n], "datatype": "FP32",
         "parameters": {"binary_data_size": n * n * 4}} for name in ("LABELS", "LOGITS", "MASK")],
        "outputs": [{"name": "LOSS"}]}).encode()
    body = b"".join([header, (rng.random((n, n)) < 0.3).astype(np.float32).tobytes(),
                     rng.normal(0, 2, (n, n)).astype(np.float32).tobytes(),
                     (rng.random((n, n)) < 0.5).astype(np.float32).tobytes()])

    def one(port):
        """(end-to-end seconds, seconds after the last byte was sent, the loss)."""
        head = (f"POST /v2/models/sigmoid_cross_entropy/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/octet-stream\r\n"
                f"Inference-Header-Content-Length: {len(header)}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            t0 = time.perf_counter()
            sock.sendall(head)
            sock.sendall(body)
            t1 = time.perf_counter()
            with sock.makefile("rb") as f:
                answer = f.read()  # (Connection: close: up to the server's end of stream)
            t2 = time.perf_counter()
        status, _, doc = answer.partition(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 200"):
            sys.exit(f"16M-element request: {answer[:300]!r}")
        return t2 - t0, t2 - t1, json.loads(doc)["outputs"][0]["data"][0]

    limits = ("--max-body-bytes", "256M", "--max-elements", str(n * n))
    with Server(args.server, "--workers", "1", *limits) as w1, \
            Server(args.server, "--workers", "2", *limits) as w2:
        one(w1.port)  # (the first touches of everything)
        one(w2.port)
        rows = {1: [], 2: []}
        for _ in range(args.runs):
            rows[1].append(one(w1.port))
            rows[2].append(one(w2.port))
        helped = metric_value(w2, "maskloss_split_parts_helped_total")
        for srv in (w1, w2):
            rc = srv.stop()
            if rc != 0:
                sys.exit(f"server exit status {rc}")
    losses = {r[2] for w in rows for r in rows[w]}
    if len(losses) != 1:
        sys.exit(f"the 16M-element request's loss differs between runs or workers: {losses}")
    med = {w: (statistics.median(r[0] for r in rows[w]), statistics.median(r[1] for r in rows[w]))
           for w in rows}
    print(f"one 16M-element float32 binary v2 request ({len(body) / 1e6:.0f} MB), one at a time, "
          f"{args.runs} runs each, alternating; medians (min-max)")
    for w in (1, 2):
        e2e = [r[0] for r in rows[w]]
        print(f"--workers {w}: end to end {med[w][0] * 1e3:7.1f} ms ({min(e2e) * 1e3:.0f}-"
              f"{max(e2e) * 1e3:.0f}), after the last byte sent {med[w][1] * 1e3:6.1f} ms")
    print(f"2 workers / 1: {med[1][0] / med[2][0]:.2f}x end to end, "
          f"{med[1][1] / med[2][1]:.2f}x after the last byte sent "
          f"({int(helped)} parts run by the second worker); the same loss {losses.pop()!r}")


def metric_value(srv, name):
    """A counter of srv's /metrics (0 when absent)."""
    for line in srv.metrics()[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
