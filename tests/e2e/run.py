#!/usr/bin/env python3
"""End-to-end tests of maskloss-server: start the real server on free ports, talk HTTP to it.

usage: run.py --server build/maskloss-server [--cli build/maskloss] [-k NAME]

Each test starts the servers it needs. Prints one line per test and exits 1 if any failed.
"""
import argparse
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TESTS  # noqa: E402
import tests_v1  # noqa: E402,F401  (registers its tests)
import tests_v2  # noqa: E402,F401
import tests_hardening  # noqa: E402,F401
import tests_cli_monitor  # noqa: E402,F401
import tests_monitor_rollup  # noqa: E402,F401
import tests_monitor_reference  # noqa: E402,F401
import tests_monitor_guards  # noqa: E402,F401
import tests_monitors  # noqa: E402,F401
import tests_monitor_attacks  # noqa: E402,F401
import tests_late  # noqa: E402,F401
import tests_late_attacks  # noqa: E402,F401
import tests_late_review2  # noqa: E402,F401
import tests_auth  # noqa: E402,F401
import tests_auth_attacks  # noqa: E402,F401
import tests_tls  # noqa: E402,F401
import tests_proxy  # noqa: E402,F401
import tests_quota  # noqa: E402,F401
import tests_quota_attacks  # noqa: E402,F401
import tests_http_threads  # noqa: E402,F401
import tests_ui  # noqa: E402,F401
import tests_client_auth  # noqa: E402,F401
import tests_cli_auth  # noqa: E402,F401
import tests_pg_harness  # noqa: E402,F401
import tests_pg_replicas  # noqa: E402,F401
import tests_pg_attacks  # noqa: E402,F401


# The suites run.py --pg runs again on PostgreSQL: every test of monitors and late labels.
PG_SUITES = {"tests_monitors", "tests_monitor_rollup", "tests_monitor_reference",
             "tests_monitor_guards", "tests_monitor_attacks", "tests_late", "tests_late_attacks",
             "tests_late_review2", "tests_cli_monitor", "tests_pg_harness", "tests_pg_replicas",
             "tests_pg_attacks"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--cli")
    ap.add_argument("-k", dest="only")
    ap.add_argument("--sanitized", action="store_true",
                    help="the server is a sanitized build: skip the tests marked plain_only")
    ap.add_argument("--pg", action="store_true",
                    help="the monitor and late-label suites again, every server's state on a "
                         "throwaway PostgreSQL (skips the tests marked sqlite_only)")
    args = ap.parse_args()
    pg = None
    if args.pg:
        import server as server_mod
        from pg import Postgres
        pg = Postgres()
        pg.__enter__()
        server_mod.PG = pg
        print(f"PostgreSQL {pg.port}: initdb {pg.init_seconds:.1f} s, start {pg.start_seconds:.1f} s")
    if not args.cli:
        args.cli = os.path.join(os.path.dirname(args.server), "maskloss")
    failed = 0
    for fn in TESTS:
        if args.only and args.only not in fn.__name__:
            continue
        if args.pg and fn.__module__ not in PG_SUITES:
            continue
        if not args.pg and getattr(fn, "pg_only", False):
            continue
        if args.pg and getattr(fn, "sqlite_only", False):
            print(f"skip {fn.__name__} (of the SQLite file itself)")
            continue
        if args.sanitized and getattr(fn, "plain_only", False):
            print(f"skip {fn.__name__} (a timing or load figure: run against the plain build)")
            continue
        t0 = time.monotonic()
        try:
            fn(args)
            print(f"ok   {fn.__name__} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__} ({time.monotonic() - t0:.1f} s)", flush=True)
            traceback.print_exc()
    if pg is not None:
        pg.__exit__(None, None, None)
    print(f"e2e: {'all passed' if not failed else f'{failed} failed'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
