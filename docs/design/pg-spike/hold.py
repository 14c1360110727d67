import sys, signal, time
sys.path.insert(0, "/work/main/tests/e2e")
from pg import Postgres
p = Postgres()
p.__enter__()
open("/tmp/pgspike/env", "w").write(f"export PGHOST={p.sockdir} PGPORT={p.port} PGUSER=postgres PGDATABASE=maskloss\nDSN='{p.dsn}'\nBIN={p.bin}\nDIR={p.dir}\n")
signal.signal(signal.SIGTERM, lambda *a: (p.cleanup(), sys.exit(0)))
print("ready", flush=True)
while True:
    time.sleep(3600)
