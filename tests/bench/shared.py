#!/usr/bin/env python3
"""make bench: what tokens and TLS cost on small requests (issue 14), side by side in one run.

usage: shared.py SERVER [--duration S] [--runs N] [--connections C] [--threads T]

Five servers started here, one of each: plain HTTP; --auth-file (one token among 100, so that
the check compares with every line of a file of a realistic size); the same with quotas that
never refuse (--rate-limit 1e9: every request takes from its token's bucket and its share of
the queue, the cost of the quotas' bookkeeping); HTTPS (--tls-cert, a
throwaway P-256 certificate made with openssl); both. wrk -tT -cC (keep-alive) POSTs the
note's 4x5 example (examples/masked-mean.json) to /v1/loss on each, N runs interleaved;
medians (min-max) of requests/s and p99, and the ratios to plain HTTP. Every answer must be
2xx: wrk's "Non-2xx" count fails the run. Targets: auth within 5 % of plain, TLS with
keep-alive within 30 %.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from server import Server  # noqa: E402
from wrk import run_wrk  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cli = os.path.join(os.path.dirname(os.path.abspath(args.server)), "maskloss")
    note = os.path.join(ROOT, "examples", "masked-mean.json")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
        tokens = os.path.join(tmp, "tokens")
        token = None
        for i in range(100):
            out = subprocess.run([cli, "token", "new", f"client-{i:03d}", "--scopes", "evaluate",
                                  "--auth-file", tokens], check=True, capture_output=True,
                                 text=True)
            token = token if i != 50 else out.stdout.strip()
        configs = [("plain", (), "http", None),
                   ("auth", ("--auth-file", tokens), "http", f"Bearer {token}"),
                   ("auth+quota", ("--auth-file", tokens, "--rate-limit", "1000000000"), "http",
                    f"Bearer {token}"),
                   ("tls", ("--tls-cert", cert, "--tls-key", key), "https", None),
                   ("auth+tls", ("--auth-file", tokens, "--tls-cert", cert, "--tls-key", key),
                    "https", f"Bearer {token}")]
        servers = [Server(args.server, *flags) for _, flags, _, _ in configs]
        try:
            print(f"{servers[0].banner.strip()}")
            print(f"POST /v1/loss, the note's example, wrk -t{args.threads} -c{args.connections} "
                  f"-d{args.duration}s (keep-alive), {args.runs} runs per server, interleaved")
            results = {name: [] for name, _, _, _ in configs}
            for _ in range(args.runs):
                for (name, _, scheme, auth), srv in zip(configs, servers):
                    env = {"AUTHORIZATION": auth} if auth else {}
                    results[name].append(run_wrk(f"{scheme}://127.0.0.1:{srv.port}/v1/loss",
                                                 args, note, env_extra=env))
            base = statistics.median(r[0] for r in results["plain"])
            print(f"{'server':10} {'req/s median (min-max)':>30} {'p99':>10} {'vs plain':>9}")
            for name, _, _, _ in configs:
                rps = [r[0] for r in results[name]]
                p99 = statistics.median(r[2] for r in results[name])
                print(f"{name:10} {statistics.median(rps):>12,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"
                      f" {p99 * 1e3:>8.2f}ms {statistics.median(rps) / base:>8.2f}x")
            print("targets: auth >= 0.95x plain; tls (keep-alive) >= 0.70x plain; auth+quota "
                  "about auth")
            for srv in servers:
                rc = srv.stop()
                if rc != 0:
                    sys.exit(f"server exit status {rc}")
        finally:
            for srv in servers:
                if srv.proc.poll() is None:
                    srv.proc.kill()
                    srv.proc.wait()


if __name__ == "__main__":
    main()
