"""The throwaway PostgreSQL of the tests (pg.py) itself: it starts (the time printed), answers
over its socket and over TCP with the server's role and password only (in the connection
string, PGPASSWORD or PGPASSFILE), keeps a committed table across a fast restart, and recovers
it after kill -9 of every postgres process; its directory is gone afterwards."""
import os
import subprocess
import time

from common import pg_only, test
from pg import Postgres


def psql_tcp(pg, conninfo, sql, env=None):
    """psql over TCP with a connection string, never prompting (-w): (returncode, output)."""
    r = subprocess.run([os.path.join(pg.bin, "psql"), "-X", "-w", "-A", "-t", "-c", sql,
                        conninfo], capture_output=True, text=True, timeout=30,
                       env=dict({k: v for k, v in os.environ.items()
                                 if not k.startswith("PG")}, **(env or {})))
    return r.returncode, (r.stdout + r.stderr).strip()


@test
@pg_only
def pg_harness_start_restart_crash(args):
    t0 = time.monotonic()
    with Postgres() as pg:
        total = time.monotonic() - t0
        print(f"     postgres: initdb {pg.init_seconds:.2f} s, start {pg.start_seconds:.2f} s, "
              f"ready with its role {total:.2f} s")
        assert total < 30, total
        version = pg.psql("select version()")
        assert version.startswith("PostgreSQL "), version
        major = int(pg.psql("show server_version_num")) // 10000
        assert major >= 15, version  # (pipeline mode, pg_snapshot and xid8: libpq/server >= 14)
        # the server's role over TCP: its password is required, and enough, each way
        assert psql_tcp(pg, pg.dsn, "select current_user") == (0, "maskloss")
        assert psql_tcp(pg, pg.url, "select current_user") == (0, "maskloss")
        assert psql_tcp(pg, pg.dsn_nopass, "select 1",
                        {"PGPASSWORD": pg.password}) == (0, "1")
        assert psql_tcp(pg, pg.dsn_nopass, "select 2", {"PGPASSFILE": pg.passfile()}) == (0, "2")
        rc, out = psql_tcp(pg, pg.dsn_nopass, "select 3")
        assert rc != 0 and "password" in out, out
        rc, out = psql_tcp(pg, pg.dsn_nopass, "select 4", {"PGPASSWORD": "wrong"})
        assert rc != 0 and "password authentication failed" in out, out
        # a committed table survives a fast stop and start
        pg.psql("create table kept(k int primary key, v text);"
                "insert into kept values (1, 'before restart')", user="maskloss")
        restart = pg.restart()
        assert pg.psql("select v from kept") == "before restart"
        # and a crash: every postgres process killed; the start replays the WAL
        rc, _ = psql_tcp(pg, pg.dsn, "insert into kept values (2, 'before kill -9')")
        assert rc == 0
        pg.kill9()
        assert not pg.running()
        rc, out = psql_tcp(pg, pg.dsn, "select 1")
        assert rc != 0 and "Connection refused" in out, out
        recover = pg.restart()
        assert pg.psql("select string_agg(v, ',' order by k) from kept") == \
            "before restart,before kill -9"
        assert "database system was interrupted" in open(pg.logfile).read()
        print(f"     restart {restart:.2f} s, after kill -9 (crash recovery) {recover:.2f} s")
        where = pg.dir
    assert not os.path.exists(where)


@test
@pg_only
def pg_harness_cleans_up_after_failure(args):
    where = None
    try:
        with Postgres() as pg:
            where = pg.dir
            pid = pg.postmaster_pid()
            pg.psql("select nonsense_column")
        raise AssertionError("the bad SQL did not raise")
    except RuntimeError as e:
        assert "nonsense_column" in str(e), e
    assert where and not os.path.exists(where)
    st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] \
        if os.path.exists(f"/proc/{pid}") else "gone"
    assert st in ("gone", "Z"), st
