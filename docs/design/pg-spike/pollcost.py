import sys, time; sys.path.insert(0, "/tmp/pgspike"); import lpq
ci = lpq.conninfo().replace("dbname=maskloss", "dbname=big").replace(lpq.conninfo().split()[0], "host=127.0.0.1") + " password=spike"
c = lpq.Conn(ci); L = lpq.L
F = "xid >= pg_snapshot_xmin('{p}') and not pg_visible_in_snapshot(xid, '{p}')"
POLL = ("begin isolation level repeatable read read only;"
        "select pg_current_snapshot();"
        "select name, generation, config from monitors where " + F + ";"
        "select generation, combo, start, width, weighted_sum, denominator, sum_weights, num_nonzero_weights,"
        " sum_sq, elements, samples, observations, classes from buckets where " + F + ";"
        "select d.generation, d.combo, d.start, d.width from bucket_drops d where " + F.replace("xid", "d.xid") +
        " and not exists (select 1 from buckets b where (b.generation, b.combo, b.start, b.width) ="
        " (d.generation, d.combo, d.start, d.width));"
        "select generation, predictions, positions, labelled from live where " + F + ";"
        "commit")
def poll(snap):
    L.PQsendQuery(c.c, POLL.format(p=snap).encode()); res = []
    while True:
        r = L.PQgetResult(c.c)
        if not r: break
        res.append(c._rows(r))
    return res[1][0][0], sum(len(x) for x in res[2:6])
snap = c.q("select pg_current_snapshot()")[0][0]
ts = []
for i in range(200):
    t = time.monotonic(); snap, n = poll(snap); ts.append((time.monotonic() - t) * 1e3)
ts.sort(); print(f"idle poll over TCP (one round trip, 4 feeds): median {ts[100]:.2f} ms, p95 {ts[190]:.2f} ms, rows {n}")
w = lpq.Conn(ci)
for k in (10, 1000):
    w.q(f"update buckets set observations = observations + 1, xid = pg_current_xact_id() where start = 1700000000 + 1439 * 60 and generation <= {k}")
    t = time.monotonic(); snap, n = poll(snap); print(f"poll after a commit of {k} buckets: {(time.monotonic() - t) * 1e3:.2f} ms, {n} rows")
t = time.monotonic(); rows = c.q("select generation, combo, start, width, weighted_sum, denominator, sum_weights, num_nonzero_weights, sum_sq, elements, samples, observations, classes from buckets")
print(f"full reload (1.44M buckets, 100k of them with 50 class doubles) through text results in Python: {(time.monotonic() - t):.1f} s")
