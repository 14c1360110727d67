#!/usr/bin/env python3
"""End-to-end tests of maskloss-server: start the real server on free ports, talk HTTP to it.

usage: run.py --server build/maskloss-server [--cli build/maskloss] [-k NAME] [--jobs N] [--after FILE]

Each test starts the servers it needs (on ports of their own, with state of their own), so tests
are independent: with --jobs N, N of them run at once, each in a forked process whose output is
printed whole when it ends. Most of a test's time is waiting (timeouts, drains, a client that
trickles): two at a time on two cores take about a third less. The tests that measure a timing
or a load, and those that stop or kill the shared PostgreSQL of --pg, run afterwards, one at a
time, in this process (runs_alone); --after FILE waits for FILE before the first of them.
Prints one line per test and exits 1 if any failed.
"""
import argparse
import os
import signal
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TESTS  # noqa: E402
import contract  # noqa: E402
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
import tests_openapi  # noqa: E402,F401
import tests_contract  # noqa: E402,F401
import tests_openapi_client  # noqa: E402,F401
import tests_client_auth  # noqa: E402,F401
import tests_client_python  # noqa: E402,F401
import tests_cli_auth  # noqa: E402,F401
import tests_pg_harness  # noqa: E402,F401
import tests_pg_replicas  # noqa: E402,F401
import tests_pg_attacks  # noqa: E402,F401


# The suites run.py --pg runs again on PostgreSQL: every test of monitors and late labels.
PG_SUITES = {"tests_monitors", "tests_monitor_rollup", "tests_monitor_reference",
             "tests_monitor_guards", "tests_monitor_attacks", "tests_late", "tests_late_attacks",
             "tests_late_review2", "tests_cli_monitor", "tests_pg_harness", "tests_pg_replicas",
             "tests_pg_attacks"}


def runs_alone(fn):
    """Whether fn runs by itself, in this process, after the others: a timing or load figure
    (plain_only), a count of what happens under a load the test makes (alone), or a test of PostgreSQL's own failures (tests_pg_*: they stop, hang and kill
    the one PostgreSQL every test of run.py --pg shares, a child of this process)."""
    return (getattr(fn, "plain_only", False) or getattr(fn, "alone", False) or
            fn.__module__.startswith("tests_pg_"))


def run_one(fn, args):
    """Runs one test here; prints its line (and traceback); whether it passed."""
    t0 = time.monotonic()
    # Its traffic against proto/openapi.json; not a timing's (the checks slow its clients).
    contract.ACTIVE = not getattr(fn, "plain_only", False)
    contract.reset()
    try:
        fn(args)
        print(f"ok   {fn.__name__} ({time.monotonic() - t0:.1f} s)", flush=True)
        return True
    except Exception:
        print(f"FAIL {fn.__name__} ({time.monotonic() - t0:.1f} s)", flush=True)
        traceback.print_exc()
        sys.stderr.flush()
        return False


def run_parallel(fns, args):
    """Runs fns args.jobs at a time, each in a forked child whose stdout and stderr (its
    servers' too) go to a file of its own, printed whole when the child ends, in the order they
    end. The number that failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    pending = list(fns)
    running = {}
    failed = 0
    while pending or running:
        while pending and len(running) < args.jobs:
            fn = pending.pop(0)
            out = tempfile.TemporaryFile()
            pid = os.fork()
            if pid == 0:
                ok = False
                try:
                    os.setpgid(0, 0)  # a group of its own, the parent's to kill at the deadline
                    os.dup2(out.fileno(), 1)
                    os.dup2(out.fileno(), 2)
                    ok = run_one(fn, args)
                finally:
                    # Whatever happened (even a BaseException run_one lets through), never
                    # return into the parent's loop or run its exit handlers (--pg's cleanup).
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(0 if ok else 1)
            running[pid] = (fn, out, time.monotonic() + args.test_timeout)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            late = [p for p, (_, _, deadline) in running.items() if time.monotonic() > deadline]
            for p in late:  # a hung test: its output so far, and a FAIL that names it
                try:
                    os.killpg(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
            continue
        if pid not in running:
            continue  # (a process a test started and left: not ours to report)
        fn, out, deadline = running.pop(pid)
        out.seek(0)
        text = out.read().decode(errors="replace")
        out.close()
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            failed += 1
            if time.monotonic() > deadline:
                text += f"FAIL {fn.__name__} (still running after {args.test_timeout} s: killed)\n"
            elif not text.startswith("FAIL") and "\nFAIL " not in text:
                text += f"FAIL {fn.__name__} (its process ended with status {status:#x})\n"
        sys.stdout.write(text)
        sys.stdout.flush()
    return failed


def wait_after(args):
    """--after FILE: wait until FILE exists, at most --after-timeout seconds (.ci/run: the
    container image's build, in the background, has ended; the tests that run alone measure
    timings and loads and must not share the two cores with it). Whether it came in time."""
    t0 = time.monotonic()
    while not os.path.exists(args.after):
        if time.monotonic() - t0 >= args.after_timeout:
            print(f"FAIL e2e: {args.after} still absent after {args.after_timeout} s (the image "
                  f"build not ended): the tests that run alone are not run beside it", flush=True)
            return False
        time.sleep(1)
    print(f"== e2e waited {time.monotonic() - t0:.0f} s for the image build", flush=True)
    args.after = None  # once
    return True


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
    ap.add_argument("--jobs", type=int, default=1,
                    help="tests run at once, each in a process of its own (timing tests alone)")
    ap.add_argument("--test-timeout", type=int, default=900,
                    help="with --jobs: seconds after which a test's process is killed and failed")
    ap.add_argument("--after", metavar="FILE",
                    help="before the first test that runs alone, wait until FILE exists; the "
                         "others (with --jobs) do not wait")
    ap.add_argument("--after-timeout", type=int, default=600,
                    help="seconds --after waits at most; then the tests that run alone fail unrun")
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
    chosen = []
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
        chosen.append(fn)
    if args.jobs > 1:
        serial = [fn for fn in chosen if runs_alone(fn)]
        failed = run_parallel([fn for fn in chosen if fn not in serial], args)
    else:
        failed, serial = 0, chosen
    for i, fn in enumerate(serial):
        if args.after and runs_alone(fn) and not wait_after(args):
            failed += len(serial) - i
            break
        failed += not run_one(fn, args)
    if pg is not None:
        pg.__exit__(None, None, None)
    print(f"e2e: {'all passed' if not failed else f'{failed} failed'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
