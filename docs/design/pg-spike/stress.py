# Writers commit additive upserts, idempotency claims and rollups (delete + tombstone + add to
# the hour) concurrently, out of order (random pauses inside transactions); a poller keeps a
# memory copy with the xid8/snapshot feed. After every poll, memory must equal the whole table
# read in the poll's own snapshot; at the end, the table must equal the client-side sum of
# every committed, non-duplicate delta.
import random, sys, threading, time
sys.path.insert(0, "/tmp/pgspike"); import lpq
ci = lpq.conninfo().replace("dbname=maskloss", "dbname=feed")
NC = 10
setup = lpq.Conn(ci)
setup.q("truncate buckets, bucket_drops, ids")
KEYS = [(s * 60, 60) for s in range(20)]
UPSERT = """insert into buckets(generation, combo, start, width, weighted_sum, denominator,
  sum_weights, num_nonzero_weights, sum_sq, elements, samples, observations, classes)
select 1, 'c', s, w, ws, 0, 0, 0, 0, 0, 0, 1, cl::float8[]
  from unnest('{S}'::bigint[], '{W}'::int[], '{WS}'::float8[], '{CL}'::text[]) as u(s, w, ws, cl)
  order by s, w
on conflict (generation, combo, start, width) do update set
  weighted_sum = buckets.weighted_sum + excluded.weighted_sum,
  observations = buckets.observations + excluded.observations,
  classes = mls_addv(buckets.classes, excluded.classes),
  xid = pg_current_xact_id(), seq = nextval('feed_seq')"""
ROLLUP = """with d as (delete from buckets where generation = 1 and combo = 'c' and start = {s}
                       and width = 60 returning *),
  t as (insert into bucket_drops(generation, combo, start, width)
        select generation, combo, start, width from d)
insert into buckets(generation, combo, start, width, weighted_sum, denominator, sum_weights,
  num_nonzero_weights, sum_sq, elements, samples, observations, classes)
select generation, combo, 0, 3600, weighted_sum, 0, 0, 0, 0, 0, 0, observations, classes from d
on conflict (generation, combo, start, width) do update set
  weighted_sum = buckets.weighted_sum + excluded.weighted_sum,
  observations = buckets.observations + excluded.observations,
  classes = mls_addv(buckets.classes, excluded.classes), xid = pg_current_xact_id(), seq = nextval('feed_seq')"""
expected = {"ws": 0.0, "obs": 0.0, "cl": [0.0] * NC}
lock = threading.Lock()
stats = {"commits": 0, "dups": 0, "deadlocks": 0, "rollups": 0}
stop = False

def writer(seed):
    rnd = random.Random(seed); c = lpq.Conn(ci)
    for n in range(150):
        keys = sorted(rnd.sample(KEYS + [(0, 3600)], rnd.randint(1, 4)))
        ws = [float(rnd.randint(1, 100)) for _ in keys]
        cls = [[float(rnd.randint(0, 9)) for _ in range(NC)] for _ in keys]
        oid = f"obs-{rnd.randint(0, 300)}"  # shared pool: duplicates across writers
        try:
            c.q("begin")
            new = c.q(f"insert into ids values (1, '{oid}', 0) on conflict do nothing returning 1")
            if new:
                if rnd.random() < 0.5: time.sleep(rnd.random() * 0.02)  # commit out of order
                c.q(UPSERT.format(S="{%s}" % ",".join(str(k[0]) for k in keys),
                                  W="{%s}" % ",".join(str(k[1]) for k in keys),
                                  WS="{%s}" % ",".join(map(str, ws)),
                                  CL="{%s}" % ",".join('"{%s}"' % ",".join(map(str, x)) for x in cls)))
            roll = rnd.random() < 0.1
            if roll:
                c.q(ROLLUP.format(s=rnd.choice(KEYS)[0]))
            if rnd.random() < 0.5: time.sleep(rnd.random() * 0.02)
            c.q("commit")
        except RuntimeError as e:
            c.q("rollback")
            assert "deadlock" in str(e), e
            with lock: stats["deadlocks"] += 1
            continue
        with lock:
            stats["commits"] += 1; stats["rollups"] += roll
            if new:
                expected["ws"] += sum(ws); expected["obs"] += len(keys)
                for x in cls: expected["cl"] = [a + b for a, b in zip(expected["cl"], x)]
            else:
                stats["dups"] += 1

ALL = "select start, width, weighted_sum, observations, classes from buckets"
FEED = ALL + " where xid >= pg_snapshot_xmin('{p}') and not pg_visible_in_snapshot(xid, '{p}')"
DROPS = """select d.start, d.width from bucket_drops d where d.xid >= pg_snapshot_xmin('{p}')
  and not pg_visible_in_snapshot(d.xid, '{p}') and not exists (select 1 from buckets b
  where (b.generation, b.combo, b.start, b.width) = (d.generation, d.combo, d.start, d.width))"""
mem, polls, reread, bad = {}, 0, 0, 0
p = lpq.Conn(ci)
snap = p.q("select pg_current_snapshot()")[0][0]
def poll(check=True):
    global snap, polls, reread, bad
    p.q("begin isolation level repeatable read read only")
    new = p.q("select pg_current_snapshot()")[0][0]
    rows = p.q(FEED.format(p=snap)); drops = p.q(DROPS.format(p=snap))
    truth = {(int(r[0]), int(r[1])): r[2:] for r in p.q(ALL)} if check else None
    p.q("commit")
    for s, w in drops: mem.pop((int(s), int(w)), None)
    for r in rows: mem[(int(r[0]), int(r[1]))] = r[2:]
    polls += 1; reread += len(rows); snap = new
    if check and mem != truth:
        bad += 1
        print("MISMATCH at", new, sorted(set(truth.items()) ^ set(mem.items()))[:4])

p2 = lpq.Conn(ci); mem2 = {}; last = [0]
def poll_seq():
    rows = p2.q(f"select start, width, weighted_sum, observations, classes, seq from buckets where seq > {last[0]}")
    drops = p2.q("select start, width from bucket_drops d where not exists (select 1 from buckets b where (b.start, b.width) = (d.start, d.width))")
    for s_, w in drops: mem2.pop((int(s_), int(w)), None)
    for r in rows:
        mem2[(int(r[0]), int(r[1]))] = r[2:5]; last[0] = max(last[0], int(r[5]))
def seq_loop():
    while any(t.is_alive() for t in ts): poll_seq()
    poll_seq()
ts = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
for t in ts: t.start()
sq = threading.Thread(target=seq_loop); sq.start()
while any(t.is_alive() for t in ts): poll()
sq.join()
poll()
final = p.q("select sum(weighted_sum), sum(observations), "
            "(select array_agg(s order by i) from (select i, sum(x) s from buckets, "
            "unnest(classes) with ordinality u(x, i) group by i) z) from buckets")[0]
print(stats, f"polls {polls}, rows read by the feed {reread}, mismatching polls {bad}")
print("db      ", final)
print("expected", expected["ws"], expected["obs"], expected["cl"])
assert float(final[0]) == expected["ws"] and float(final[1]) == expected["obs"]
assert [float(x) for x in final[2].strip("{}").split(",")] == expected["cl"]
assert bad == 0
truth = {(int(r[0]), int(r[1])): r[2:] for r in p.q(ALL)}
miss = sum(1 for k in truth if mem2.get(k) != truth[k])
print(f"plain-sequence poller: {miss} of {len(truth)} buckets wrong at the end; xid8 feed: {sum(1 for k in truth if mem.get(k) != truth[k])}")
print("OK")
