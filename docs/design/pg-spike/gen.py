# A group commit into generation g holds the monitor row FOR SHARE: a concurrent replace
# (?force=true: a new generation) waits for it, and a group commit that started after the
# replace sees the new generation (and retries against it) instead of writing orphans.
import sys, threading, time; sys.path.insert(0, "/tmp/pgspike"); import lpq
ci = lpq.conninfo().replace("dbname=maskloss", "dbname=feed")
a, b = lpq.Conn(ci), lpq.Conn(ci)
a.q("delete from monitors where name = 'gm'")
g0 = a.q("insert into monitors(name, generation, config) values ('gm', nextval('generations'), '{}') returning generation")[0][0]
a.q("begin")
print("A (group commit) locks:", a.q("select generation from monitors where name = 'gm' for share"))
t0 = time.monotonic()
b.send("""insert into monitors(name, generation, config) values ('gm', nextval('generations'), '{"v":2}')
          on conflict (name) do update set generation = excluded.generation, config = excluded.config,
          xid = pg_current_xact_id() returning generation""")
time.sleep(0.5)
print("B (replace) still waiting after 0.5 s:", b.busy())
a.q("commit")
g1 = b.finish()[0][0]
print(f"B done after A's commit ({time.monotonic() - t0:.2f} s): generation {g0} -> {g1}")
a.q("begin")
print("A's next group commit sees:", a.q("select generation from monitors where name = 'gm' for share"))
a.q("commit")
