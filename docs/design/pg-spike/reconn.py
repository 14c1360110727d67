# What libpq reports when the database goes away, and how long detection takes.
import ctypes, os, select, signal, sys, time
sys.path.insert(0, "/work/main/tests/e2e"); sys.path.insert(0, "/tmp/pgspike")
import lpq; from pg import Postgres
L = lpq.L
L.PQreset.argtypes = [ctypes.c_void_p]; L.PQsocket.argtypes = [ctypes.c_void_p]
L.PQtransactionStatus.argtypes = [ctypes.c_void_p]
def T(f):
    t = time.monotonic(); r = f(); return r, (time.monotonic() - t) * 1e3
def exec_(c, sql):
    r = L.PQexec(c.c, sql.encode()); st = L.PQresultStatus(r) if r else -1
    msg = L.PQresultErrorMessage(r).decode().strip() if r else L.PQerrorMessage(c.c).decode().strip()
    L.PQclear(r); return st, msg.replace("\n", " | ")
def exec_deadline(c, sql, seconds):
    """PQsendQuery + poll() on PQsocket with a deadline: what a writer thread must do."""
    L.PQsendQuery(c.c, sql.encode()); sock = L.PQsocket(c.c)
    end = time.monotonic() + seconds
    while True:
        L.PQconsumeInput(c.c)
        if not L.PQisBusy(c.c):
            return "answered"
        left = end - time.monotonic()
        if left <= 0:
            return "deadline passed"
        select.select([sock], [], [], left)
with Postgres() as pg:
    opts = " connect_timeout=2 keepalives=1 keepalives_idle=5 keepalives_interval=1 keepalives_count=3 tcp_user_timeout=5000"
    c = lpq.Conn(pg.dsn + opts)
    print("connected, PQstatus", L.PQstatus(c.c))
    pg.kill9()
    (st, msg), ms = T(lambda: exec_(c, "select 1"))
    print(f"A. kill -9 of the server: next PQexec fails in {ms:.2f} ms ({msg!r}); PQstatus {L.PQstatus(c.c)} (1 = CONNECTION_BAD)")
    _, ms = T(lambda: L.PQreset(c.c))
    print(f"B. PQreset while it is down: {ms:.2f} ms, PQstatus {L.PQstatus(c.c)} ({L.PQerrorMessage(c.c).decode().strip()[:90]!r})")
    pg.restart()
    _, ms = T(lambda: L.PQreset(c.c))
    print(f"C. PQreset once it is back: {ms:.2f} ms, PQstatus {L.PQstatus(c.c)}; select 1 -> {exec_(c, 'select 1')}")
    pid = int(pg.psql("select pid from pg_stat_activity where usename = 'maskloss'"))
    pg.psql(f"select pg_terminate_backend({pid})")
    (st, msg), ms = T(lambda: exec_(c, "select 1"))
    print(f"D. pg_terminate_backend: next PQexec fails in {ms:.2f} ms ({msg[:80]!r}), PQstatus {L.PQstatus(c.c)}; PQreset -> ", end="")
    L.PQreset(c.c); print(L.PQstatus(c.c))
    # a hung server: the kernel still accepts and acknowledges, so neither keepalives nor
    # tcp_user_timeout fire; only a deadline of our own does
    procs = [pg.postmaster_pid()] + pg._children(pg.postmaster_pid())
    for p in procs: os.kill(p, signal.SIGSTOP)
    r, ms = T(lambda: exec_deadline(c, "select 1", 3))
    print(f"E. server stopped (SIGSTOP): select 1 with a 3 s deadline of our own -> {r} after {ms:.0f} ms")
    c2, ms = T(lambda: L.PQconnectdb((pg.dsn + " connect_timeout=2").encode()))
    print(f"F. a new connection with connect_timeout=2 to the stopped server: PQstatus {L.PQstatus(c2)} after {ms:.0f} ms ({L.PQerrorMessage(c2).decode().strip()[:80]!r})")
    L.PQfinish(c2)
    for p in procs: os.kill(p, signal.SIGCONT)
    time.sleep(0.2)
    L.PQconsumeInput(c.c)
    r = L.PQgetResult(c.c); print("   after SIGCONT the query is answered: status", L.PQresultStatus(r)); L.PQclear(r)
    while L.PQgetResult(c.c): pass
    c.close()
