# A plain sequence misses a row committed out of order; the xid8/snapshot poll does not.
import sys; sys.path.insert(0, "/tmp/pgspike"); import lpq
ci = lpq.conninfo().replace("dbname=maskloss", "dbname=feed")
a, b, poller = lpq.Conn(ci), lpq.Conn(ci), lpq.Conn(ci)
poller.q("create table if not exists demo(seq bigserial primary key, v text, "
         "xid xid8 not null default pg_current_xact_id())")
poller.q("create index if not exists demo_xid on demo(xid)")
poller.q("truncate demo restart identity")
seen_seq, seen_xid = {}, {}
last_seq = 0
snap = poller.q("select pg_current_snapshot()")[0][0]
def poll_seq():
    global last_seq
    for s, v in poller.q(f"select seq, v from demo where seq > {last_seq} order by seq"):
        seen_seq[int(s)] = v; last_seq = max(last_seq, int(s))
FEED = """select seq, v from demo where xid >= pg_snapshot_xmin('{p}') and
          not pg_visible_in_snapshot(xid, '{p}')"""
def poll_xid():
    global snap
    poller.q("begin isolation level repeatable read read only")
    new = poller.q("select pg_current_snapshot()")[0][0]
    rows = poller.q(FEED.format(p=snap))
    poller.q("commit")
    for s, v in rows: seen_xid[int(s)] = v
    print(f"   poll: previous snapshot {snap}, now {new}: read {rows}")
    snap = new
a.q("begin"); a.q("insert into demo(v) values ('A, the slow one')")   # seq 1
b.q("begin"); b.q("insert into demo(v) values ('B')"); b.q("commit")  # seq 2, committed first
poll_seq(); poll_xid()
a.q("commit")                                                          # seq 1 commits now
poll_seq(); poll_xid()
truth = {int(s): v for s, v in poller.q("select seq, v from demo")}
print("truth       ", truth)
print("plain seq   ", seen_seq, "MISSES", sorted(set(truth) - set(seen_seq)))
print("xid/snapshot", seen_xid, "misses", sorted(set(truth) - set(seen_xid)))
