# Late labels on two replicas for one prediction: each locks the prediction (FOR UPDATE), reads
# its labels, computes the row's difference and writes; the second waits and then sees the
# first's label (READ COMMITTED: each statement a new snapshot), so the old row it subtracts is
# the right one. Same id claimed by two replicas at once: the second waits and is refused.
import sys, time; sys.path.insert(0, "/tmp/pgspike"); import lpq
ci = lpq.conninfo().replace("dbname=maskloss", "dbname=feed")
a, b = lpq.Conn(ci), lpq.Conn(ci)
a.q("truncate predictions, labels, ids")
pred = a.q("insert into predictions(generation, id, t, combo, outputs) values "
           "(1, 'p1', 0, '[]', decode(repeat('00', 4000), 'hex')) returning pred")[0][0]
LOCK = f"select pred, t, combo from predictions where generation = 1 and id = 'p1' for update"
a.q("begin"); a.q(LOCK); print("A sees labels:", a.q(f"select slot, value from labels where pred = {pred}"))
b.q("begin"); b.send(LOCK); time.sleep(0.3); print("B waits on the lock:", b.busy())
a.q(f"insert into labels values ({pred}, 3, 1, 1, 10) on conflict (pred, slot) do update set value = excluded.value")
a.q("commit"); b.finish()
print("B then sees labels:", b.q(f"select slot, value from labels where pred = {pred}"))
b.q("commit")
print("outputs bytes 400..407 by substring (EXTERNAL storage):", a.q(f"select length(substring(outputs from 401 for 8)) from predictions where pred = {pred}"))
a.q("begin"); print("A claims id x:", a.q("insert into ids values (1, 'x', 0) on conflict do nothing returning 1"))
b.q("begin"); b.send("insert into ids values (1, 'x', 0) on conflict do nothing returning 1")
time.sleep(0.3); print("B, same id, waits:", b.busy())
a.q("commit"); print("B after A commits:", b.finish(), "(no row: a duplicate)"); b.q("commit")
a.q("begin"); a.q("insert into ids values (1, 'y', 0) on conflict do nothing returning 1")
b.q("begin"); b.send("insert into ids values (1, 'y', 0) on conflict do nothing returning 1")
time.sleep(0.3); a.q("rollback"); print("B after A rolls back:", b.finish(), "(its own: counted once)"); b.q("commit")
