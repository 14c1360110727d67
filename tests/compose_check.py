#!/usr/bin/python3
"""compose_check.py SERVER -- keeps docker/compose.yaml and the files it mounts in step with the
server, without a Docker engine (make check, after deploy_check.py).

docker compose cannot run here, so the file is read as YAML and checked against what it names:

- Structure: postgres, three replicas built from docker/Dockerfile, nginx, prometheus, grafana;
  every depends_on names a service (the replicas wait for postgres to be healthy, its
  healthcheck is pg_isready over TCP); every named volume is declared, every bind mount's
  source exists; every secret is declared and is a file docker/make-secrets.sh makes; only
  nginx is published beyond the host's loopback, the replicas and postgres not at all.
- The replicas: every MASKLOSS_* variable and --flag exists in `SERVER --help`; MASKLOSS_STATE
  is a postgresql:// URL of the postgres service, its user and database, without a password,
  which comes from the same secret file as POSTGRES_PASSWORD_FILE; stop_grace_period outlasts
  the drain + 5 s.
- Ports and paths agree: nginx's upstream servers are the replicas at MASKLOSS_PORT, its listen
  port is the one published; Prometheus's targets are the same replicas and ports, its
  rule_files load every docker/prometheus/*.rules.yml, its token is the mounted secret;
  Grafana's data source is that Prometheus (the only and default one, so the dashboard's
  ${DS_PROMETHEUS} variable resolves to it) at its scrape interval; the dashboards provider's
  path holds docker/grafana/maskloss-dashboard.json as mounted. nginx's client_max_body_size
  is the replicas' MASKLOSS_MAX_BODY_BYTES, its keepalive_timeout below their
  --connection-timeout, its proxy_read_timeout above their --request-timeout, and it retries
  another replica on error, timeout and 503, POSTs too.
- nginx -t on docker/nginx/maskloss.conf in a main context like the image's (a temporary copy
  with the upstream host names replaced by 127.0.0.1: they resolve inside compose only);
  promtool check config on a temporary copy of docker/prometheus/prometheus.yml beside the
  rules, its credentials_file a real token file.
- A real server, started as a replica is: the compose entrypoint (the shell reading PGPASSWORD
  from the secret) and environment, with the secrets docker/make-secrets.sh makes; only the
  address (127.0.0.1, a free port) and the state's host and port changed -- a throwaway
  PostgreSQL (tests/e2e/pg.py) with the role's password from the secret when SERVER has the
  PostgreSQL backend, else an SQLite file. /healthz and /readyz answer 200 without a token;
  /metrics answers 200 with Prometheus's token and 401 without; the admin token is accepted;
  a JSON body of nginx's client_max_body_size is admitted from its headers (the memory
  budget is large enough for it), one byte more refused 413.
- That nginx configuration run for real in front of it, its upstream names as loopback ports:
  one a stand-in answering 503 (a draining replica), one the real server, one closed (a
  replica gone): every POST through nginx is answered 200 (retried on the next server, POSTs
  too), some after the stand-in's 503; nginx refuses one byte over its body limit 413.
"""
import atexit
import glob
import http.client
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

import yaml

SERVER = os.path.abspath(sys.argv[1])
ROOT = os.getcwd()
DOCKER = os.path.join(ROOT, "docker")
COMPOSE = "docker/compose.yaml"
FAILS = []


def fail(msg):
    FAILS.append(msg)
    print("compose_check: " + msg, file=sys.stderr)


HELP = subprocess.run([SERVER, "--help"], capture_output=True, text=True, check=True).stdout
FLAGS = set(re.findall(r"^\s+(--[a-z0-9-]+)", HELP, re.M))
ENVS = set(re.findall(r"\[(MASKLOSS_[A-Z0-9_]+)\]", HELP))
assert FLAGS and ENVS, "could not read the flags of " + SERVER + " --help"

with open(COMPOSE) as f:
    compose = yaml.safe_load(f)  # (the YAML merge key << is safe_load's too)
services = compose.get("services", {})
top_volumes = compose.get("volumes") or {}
top_secrets = compose.get("secrets") or {}

tmp = tempfile.mkdtemp(prefix="compose_check.")
atexit.register(shutil.rmtree, tmp, True)


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else interpolate(str(v), f"environment {k}") for k, v in env.items()}


def interpolate(v, where="compose"):
    """Compose's own interpolation: $$ is a literal $; a ${VAR} or $VAR would come from the
    environment of `docker compose`, which this file must not need."""
    if re.search(r"(?<!\$)\$(?:\{|[A-Za-z_])", re.sub(r"\$\$", "", v)):
        fail(f"{where}: {v!r} needs a variable from the environment of docker compose")
    return v.replace("$$", "$")


def as_list(v):
    if v is None:
        return []
    return [interpolate(x) for x in (shlex.split(v) if isinstance(v, str) else [str(x) for x in v])]


def seconds(v, where):
    """A compose duration (40s, 1m30s) or nginx time (50s, 1m) in seconds."""
    total, rest = 0.0, str(v).strip()
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)?", rest):
        total += float(num) * {"ms": 0.001, "h": 3600, "m": 60, "s": 1, "": 1}[unit]
    if not re.fullmatch(r"(\d+(\.\d+)?(ms|h|m|s)?)+", rest):
        fail(f"{where}: cannot read the duration {v!r}")
    return total


def size_bytes(v, where):
    """nginx's size (k, m, g) or the server's (K, M, G): both binary."""
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", str(v).strip())
    if not m:
        fail(f"{where}: cannot read the size {v!r}")
        return None
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def mounts(svc):
    """(source, target) of every volume; a bind mount's source as a path on this machine."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            src, dst = v.get("source"), v["target"]
        else:
            parts = v.split(":")
            src, dst = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
        if src and (src.startswith(".") or src.startswith("/")):
            src = os.path.normpath(os.path.join(DOCKER, src))
        out.append((src, dst))
    return out


def host_path(name, path):
    """Where a path inside the container of service `name` comes from in this repository
    (through its bind mounts), or None."""
    best = None
    for src, dst in mounts(services.get(name, {})):
        if src and src.startswith("/") and (path == dst or path.startswith(dst.rstrip("/") + "/")):
            if best is None or len(dst) > len(best[1]):
                best = (src, dst)
    if best is None:
        return None
    return best[0] + path[len(best[1]):]


def secret_file(name, path, where):
    """The secret name mounted in service `name` at /run/secrets/X, or None."""
    m = re.fullmatch(r"/run/secrets/([\w.-]+)", path or "")
    used = {s if isinstance(s, str) else s.get("target", s["source"]): s if isinstance(s, str) else s["source"]
            for s in services.get(name, {}).get("secrets") or []}
    if not m or m.group(1) not in used:
        fail(f"{where}: {path} is not a secret mounted in {name}")
        return None
    return used[m.group(1)]


# --- structure ----------------------------------------------------------------------------------

replicas = sorted(n for n, s in services.items()
                  if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == "docker/Dockerfile")
if len(replicas) != 3:
    fail(f"{COMPOSE}: {len(replicas)} services are built from docker/Dockerfile, not 3: {replicas}")
for need in ("postgres", "nginx", "prometheus", "grafana"):
    if need not in services:
        fail(f"{COMPOSE}: no service {need}")
if FAILS:
    sys.exit(1)

for name, svc in services.items():
    where = f"{COMPOSE} {name}"
    if "image" not in svc and "build" not in svc:
        fail(f"{where}: neither image nor build")
    deps = svc.get("depends_on") or {}
    for dep in deps:
        if dep not in services:
            fail(f"{where}: depends_on {dep}, which is no service")
    for src, dst in mounts(svc):
        if src is None:
            continue
        if src.startswith("/"):
            if not os.path.exists(src):
                fail(f"{where}: the bind mount's source {os.path.relpath(src, ROOT)} does not exist")
        elif src not in top_volumes:
            fail(f"{where}: the volume {src} is not declared under volumes:")
    for s in svc.get("secrets") or []:
        src = s if isinstance(s, str) else s["source"]
        if src not in top_secrets:
            fail(f"{where}: the secret {src} is not declared under secrets:")
    for p in svc.get("ports") or []:
        spec = str(p if not isinstance(p, dict) else f"{p.get('host_ip', '')}:{p.get('published', '')}:{p['target']}")
        if name != "nginx" and not spec.startswith("127.0.0.1:"):
            fail(f"{where}: publishes {spec} beyond the host's loopback (nginx is the way in)")
    if name in replicas + ["postgres"] and svc.get("ports"):
        fail(f"{where}: publishes ports: only nginx reaches it")
used_volumes = {src for s in services.values() for src, _ in mounts(s) if src and not src.startswith("/")}
for v in top_volumes:
    if v not in used_volumes:
        fail(f"{COMPOSE}: the volume {v} is declared and used by no service")

# The secrets: make-secrets.sh makes each file compose names (and runs twice without a change).
secrets_dir = os.path.join(tmp, "secrets")
for _ in range(2):
    r = subprocess.run(["sh", "docker/make-secrets.sh", secrets_dir], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"docker/make-secrets.sh failed: {r.stdout}{r.stderr}")
made = set(os.listdir(secrets_dir))
if "already holds every secret" not in r.stdout:
    fail(f"docker/make-secrets.sh run again changed something: {r.stdout}")
for s, spec in top_secrets.items():
    path = os.path.normpath(os.path.join(DOCKER, spec.get("file", "")))
    if os.path.dirname(path) != os.path.join(DOCKER, "secrets") or os.path.basename(path) not in made:
        fail(f"{COMPOSE}: the secret {s} ({spec.get('file')}) is not a file docker/make-secrets.sh makes")
    elif os.stat(os.path.join(secrets_dir, os.path.basename(path))).st_mode & 0o004 == 0:
        fail(f"docker/make-secrets.sh: {os.path.basename(path)} is not readable by the containers' users")


def local(secret):
    """The file make-secrets.sh made for a compose secret."""
    return os.path.join(secrets_dir, os.path.basename(top_secrets[secret]["file"]))


# --- postgres -----------------------------------------------------------------------------------

pg = services["postgres"]
pg_env = env_of(pg)
test = as_list((pg.get("healthcheck") or {}).get("test"))
if "pg_isready" not in test:
    fail(f"{COMPOSE} postgres: the healthcheck is not pg_isready: {test}")
elif "-h" not in test and "--host" not in test:
    fail(f"{COMPOSE} postgres: pg_isready over the Unix socket calls the image's init server ready")
if not any(dst == "/var/lib/postgresql/data" and src and not src.startswith("/") for src, dst in mounts(pg)):
    fail(f"{COMPOSE} postgres: /var/lib/postgresql/data is not a named volume")
if "POSTGRES_PASSWORD" in pg_env:
    fail(f"{COMPOSE} postgres: POSTGRES_PASSWORD inline: use POSTGRES_PASSWORD_FILE and a secret")
pg_secret = secret_file("postgres", pg_env.get("POSTGRES_PASSWORD_FILE"), f"{COMPOSE} postgres POSTGRES_PASSWORD_FILE")
pg_port = int(pg_env.get("PGPORT", 5432))

# --- the replicas -------------------------------------------------------------------------------

renv = None
for name in replicas:
    svc = services[name]
    where = f"{COMPOSE} {name}"
    env = env_of(svc)
    if renv is None:
        renv, rsvc = env, svc
    elif env != renv or as_list(svc.get("entrypoint")) != as_list(rsvc.get("entrypoint")):
        fail(f"{where}: environment or entrypoint differs from {replicas[0]}'s")
    for var in env:
        if var.startswith("MASKLOSS_") and var not in ENVS:
            fail(f"{where}: {var} is not a variable of maskloss-server --help")
    for a in as_list(svc.get("entrypoint")) + as_list(svc.get("command")):
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", a):
            if flag not in FLAGS:
                fail(f"{where}: {flag} is not a flag of maskloss-server --help")
    cond = (svc.get("depends_on") or {}).get("postgres")
    if not isinstance(cond, dict) or cond.get("condition") != "service_healthy":
        fail(f"{where}: does not wait for postgres to be healthy (depends_on condition)")
    drain = int(env.get("MASKLOSS_DRAIN_TIMEOUT", 30))
    grace = seconds(svc.get("stop_grace_period", "10s"), where)
    if grace <= drain + 5:
        fail(f"{where}: stop_grace_period {grace:g} s <= the drain {drain} s + 5 s: SIGKILL mid-drain")
    if env.get("MASKLOSS_BIND") not in ("0.0.0.0", "::"):
        fail(f"{where}: MASKLOSS_BIND must be every interface for nginx and Prometheus")
    if not env.get("MASKLOSS_AUTH_FILE") or env.get("MASKLOSS_INSECURE_NO_AUTH", "0") not in ("0", "false"):
        fail(f"{where}: without MASKLOSS_AUTH_FILE (or with MASKLOSS_INSECURE_NO_AUTH) anyone may do anything")
    else:
        secret_file(name, env["MASKLOSS_AUTH_FILE"], f"{where} MASKLOSS_AUTH_FILE")

rport = int(renv.get("MASKLOSS_PORT", 8080))
entry = as_list(rsvc.get("entrypoint"))
script = " ".join(entry)
state = urlsplit(renv.get("MASKLOSS_STATE", ""))
if state.scheme not in ("postgresql", "postgres"):
    fail(f"{COMPOSE} {replicas[0]}: MASKLOSS_STATE is not a postgresql:// URL")
else:
    if state.password is not None:
        fail(f"{COMPOSE} {replicas[0]}: a password in MASKLOSS_STATE: it belongs in a secret")
    if (state.hostname, state.port or 5432) != ("postgres", pg_port):
        fail(f"{COMPOSE}: MASKLOSS_STATE names {state.hostname}:{state.port}, not the postgres service at {pg_port}")
    if state.username != pg_env.get("POSTGRES_USER", "postgres") or \
            state.path.lstrip("/") != pg_env.get("POSTGRES_DB", pg_env.get("POSTGRES_USER", "postgres")):
        fail(f"{COMPOSE}: MASKLOSS_STATE's user/database {state.username}/{state.path} are not "
             f"postgres's POSTGRES_USER/POSTGRES_DB")
m = re.search(r"PGPASSWORD=\$\(cat (/run/secrets/[\w.-]+)\)", script)
if "PGPASSWORD" not in renv and "PGPASSFILE" not in renv and not m:
    fail(f"{COMPOSE} {replicas[0]}: no password for PostgreSQL (PGPASSWORD from a secret, or PGPASSFILE)")
elif m and secret_file(replicas[0], m.group(1), f"{COMPOSE} {replicas[0]} entrypoint") != pg_secret:
    fail(f"{COMPOSE}: the replicas read PGPASSWORD from another secret than POSTGRES_PASSWORD_FILE")
if "exec " not in script:
    fail(f"{COMPOSE} {replicas[0]}: the entrypoint's shell must exec the server (SIGTERM must reach it)")
replica_addrs = {(n, rport) for n in replicas}

# --- nginx --------------------------------------------------------------------------------------

ng = services["nginx"]
conf_path = None
for src, dst in mounts(ng):
    if src and re.fullmatch(r"/etc/nginx/conf\.d/[^/]+\.conf", dst):
        conf_path = src
if conf_path != os.path.join(DOCKER, "nginx", "maskloss.conf"):
    fail(f"{COMPOSE} nginx: docker/nginx/maskloss.conf is not mounted as /etc/nginx/conf.d/*.conf")
conf_path = os.path.join(DOCKER, "nginx", "maskloss.conf")
with open(conf_path) as f:
    nconf = f.read()
ncode = re.sub(r"#[^\n]*", "", nconf)


def directive(name):
    return [v.strip() for v in re.findall(rf"(?:^|[;{{}}\s]){name}\s+([^;{{]*);", ncode)]


up = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", ncode)
ups = set()
if not up:
    fail("docker/nginx/maskloss.conf: no upstream block")
else:
    for host, port in re.findall(r"\bserver\s+([\w.-]+):(\d+)", up.group(2)):
        ups.add((host, int(port)))
    if ups != replica_addrs:
        fail(f"docker/nginx/maskloss.conf: upstream servers {sorted(ups)} are not the replicas {sorted(replica_addrs)}")
    if f"proxy_pass http://{up.group(1)}" not in ncode:
        fail(f"docker/nginx/maskloss.conf: no proxy_pass to the upstream {up.group(1)}")
listens = {int(re.match(r"(?:[\d.]+:)?(\d+)", v).group(1)) for v in directive("listen")}
published = set()
for p in ng.get("ports") or []:
    target = p["target"] if isinstance(p, dict) else int(str(p).rsplit(":", 1)[-1].split("/")[0])
    published.add(int(target))
if not published or published != listens:
    fail(f"{COMPOSE} nginx: publishes the container ports {sorted(published)}, nginx listens on {sorted(listens)}")
body = [size_bytes(v, "client_max_body_size") for v in directive("client_max_body_size")]
server_body = size_bytes(renv.get("MASKLOSS_MAX_BODY_BYTES", "64M"), "MASKLOSS_MAX_BODY_BYTES")
if body != [server_body]:
    fail(f"docker/nginx/maskloss.conf: client_max_body_size {body} is not the replicas' "
         f"MASKLOSS_MAX_BODY_BYTES ({server_body})")
nxt = set(" ".join(directive("proxy_next_upstream")).split())
for need in ("error", "timeout", "http_503", "non_idempotent"):
    if need not in nxt:
        fail(f"docker/nginx/maskloss.conf: proxy_next_upstream lacks {need}")
ka = [seconds(v, "keepalive_timeout") for v in re.findall(r"keepalive_timeout\s+([^;]*);", up.group(2) if up else "")]
if not ka or ka[0] >= int(renv.get("MASKLOSS_CONNECTION_TIMEOUT", 60)):
    fail("docker/nginx/maskloss.conf: the upstream's keepalive_timeout must be below the replicas' "
         "--connection-timeout (a POST on a connection the server closes is not retried)")
rt = [seconds(v, "proxy_read_timeout") for v in directive("proxy_read_timeout")]
if not rt or rt[0] <= int(renv.get("MASKLOSS_REQUEST_TIMEOUT", 30)):
    fail("docker/nginx/maskloss.conf: proxy_read_timeout must be above the replicas' --request-timeout")

# nginx -t: the image's main context (nginx.conf includes conf.d inside http {}), every path in
# the temporary directory; the upstream names resolve inside compose only, so 127.0.0.1 here.
nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
ndir = os.path.join(tmp, "nginx")
os.makedirs(os.path.join(ndir, "conf.d"))


def write_nginx(upstream_ports=None, listen_port=None):
    """The main context and a copy of docker/nginx/maskloss.conf in ndir: each upstream host
    as 127.0.0.1 (at upstream_ports[host] if given), listening on listen_port if given."""
    text = nconf
    for host, port in ups:
        to = (upstream_ports or {}).get(host, port)
        text = re.sub(rf"\bserver\s+{re.escape(host)}:{port}\b", f"server 127.0.0.1:{to}", text)
    if listen_port:
        text = re.sub(r"\blisten\s+[^;]*;", f"listen 127.0.0.1:{listen_port};", text)
    with open(os.path.join(ndir, "conf.d", "maskloss.conf"), "w") as f:
        f.write(text)
    with open(os.path.join(ndir, "nginx.conf"), "w") as f:
        f.write(f"""worker_processes 1;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {ndir}/client_body;
    proxy_temp_path {ndir}/proxy;
    fastcgi_temp_path {ndir}/fastcgi;
    uwsgi_temp_path {ndir}/uwsgi;
    scgi_temp_path {ndir}/scgi;
    access_log off;
    include {ndir}/conf.d/*.conf;
}}
""")
    return [nginx, "-p", ndir, "-e", os.path.join(ndir, "error.log"), "-c", os.path.join(ndir, "nginx.conf")]


if not nginx:
    fail("nginx not found (Debian: nginx-light, in the Makefile's DEPS_TEST)")
else:
    r = subprocess.run(write_nginx() + ["-t", "-g", f"pid {ndir}/nginx.pid;"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"nginx -t refuses docker/nginx/maskloss.conf:\n{r.stderr}")

# --- prometheus ---------------------------------------------------------------------------------

pr = services["prometheus"]
pargs = as_list(pr.get("command"))
cfg_arg = next((a.split("=", 1)[1] for a in pargs if a.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
listen = next((a.split("=", 1)[1] for a in pargs if a.startswith("--web.listen-address=")), ":9090")
prom_port = int(listen.rsplit(":", 1)[1])
prom_yml = host_path("prometheus", cfg_arg)
if prom_yml != os.path.join(DOCKER, "prometheus", "prometheus.yml"):
    fail(f"{COMPOSE} prometheus: --config.file {cfg_arg} is not docker/prometheus/prometheus.yml as mounted")
prom_yml = os.path.join(DOCKER, "prometheus", "prometheus.yml")
with open(prom_yml) as f:
    pconf = yaml.safe_load(f)
scrape_interval = (pconf.get("global") or {}).get("scrape_interval", "1m")
rule_globs = [os.path.join(os.path.dirname(prom_yml), g) for g in pconf.get("rule_files") or []]
loaded = {os.path.realpath(p) for g in rule_globs for p in glob.glob(g)}
for path in glob.glob(os.path.join(DOCKER, "prometheus", "*.rules.yml")):
    if os.path.realpath(path) not in loaded:
        fail(f"docker/prometheus/prometheus.yml: rule_files do not load {os.path.relpath(path, ROOT)}")
(job,) = [j for j in pconf.get("scrape_configs", []) if j.get("job_name") == "maskloss"] or [None]
if not job:
    fail("docker/prometheus/prometheus.yml: no scrape job maskloss")
else:
    targets = set()
    for sc in job.get("static_configs", []):
        for t in sc.get("targets", []):
            h, p = t.rsplit(":", 1)
            targets.add((h, int(p)))
    if targets != replica_addrs:
        fail(f"docker/prometheus/prometheus.yml: targets {sorted(targets)} are not the replicas {sorted(replica_addrs)}")
    if job.get("metrics_path", "/metrics") != "/metrics" or job.get("scheme", "http") != "http":
        fail("docker/prometheus/prometheus.yml: the replicas serve http://.../metrics")
    cred = (job.get("authorization") or {}).get("credentials_file")
    tok_secret = secret_file("prometheus", cred, "docker/prometheus/prometheus.yml credentials_file")
    # promtool check config: a copy beside copies of the rules (as mounted), the token a real file.
    pdir = os.path.join(tmp, "prometheus")
    os.makedirs(pdir)
    for path in glob.glob(os.path.join(DOCKER, "prometheus", "*")):
        if os.path.isfile(path):
            shutil.copy(path, pdir)
    if tok_secret:
        job["authorization"]["credentials_file"] = local(tok_secret)
    with open(os.path.join(pdir, "prometheus.yml"), "w") as f:
        yaml.safe_dump(pconf, f)
    r = subprocess.run(["promtool", "check", "config", os.path.join(pdir, "prometheus.yml")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"promtool check config refuses docker/prometheus/prometheus.yml:\n{r.stdout}{r.stderr}")

# --- grafana ------------------------------------------------------------------------------------

gr = services["grafana"]
genv = env_of(gr)
prov = host_path("grafana", "/etc/grafana/provisioning")
if prov != os.path.join(DOCKER, "grafana", "provisioning"):
    fail(f"{COMPOSE} grafana: docker/grafana/provisioning is not mounted at /etc/grafana/provisioning")
prov = os.path.join(DOCKER, "grafana", "provisioning")
sources = []
for path in glob.glob(os.path.join(prov, "datasources", "*.y*ml")):
    with open(path) as f:
        sources += (yaml.safe_load(f) or {}).get("datasources") or []
proms = [d for d in sources if d.get("type") == "prometheus"]
if len(proms) != 1 or not proms[0].get("isDefault"):
    fail("docker/grafana/provisioning/datasources: the dashboard's ${DS_PROMETHEUS} takes the default "
         f"Prometheus data source: one, isDefault, is needed ({len(proms)} found)")
else:
    u = urlsplit(proms[0].get("url", ""))
    if (u.hostname, u.port or 80) != ("prometheus", prom_port):
        fail(f"docker/grafana/provisioning/datasources: url {proms[0].get('url')} is not the prometheus service at {prom_port}")
    ti = (proms[0].get("jsonData") or {}).get("timeInterval")
    if ti is None or seconds(ti, "timeInterval") != seconds(scrape_interval, "scrape_interval"):
        fail(f"docker/grafana/provisioning/datasources: timeInterval {ti} is not prometheus.yml's "
             f"scrape_interval {scrape_interval} ($__rate_interval depends on it)")
dash_src = os.path.join(DOCKER, "grafana", "maskloss-dashboard.json")
provided = []
for path in glob.glob(os.path.join(prov, "dashboards", "*.y*ml")):
    with open(path) as f:
        for p in (yaml.safe_load(f) or {}).get("providers") or []:
            cpath = (p.get("options") or {}).get("path", "").rstrip("/")
            if p.get("type", "file") != "file" or not cpath:
                continue
            d = host_path("grafana", cpath)  # a directory mounted there, or above
            if d:
                provided += [os.path.normpath(x) for x in glob.glob(os.path.join(d, "**", "*.json"), recursive=True)]
            provided += [src for src, dst in mounts(gr) if src and dst.startswith(cpath + "/")]
if dash_src not in provided:
    fail("docker/grafana/provisioning/dashboards: no provider's path holds docker/grafana/maskloss-dashboard.json as mounted")
home = genv.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
if home and host_path("grafana", home) != dash_src:
    fail(f"{COMPOSE} grafana: GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH {home} is not the dashboard as mounted")
for var, val in genv.items():
    if var.endswith("__FILE"):
        secret_file("grafana", val, f"{COMPOSE} grafana {var}")
with open(dash_src) as f:
    dash_text = f.read()
if '"__inputs"' in dash_text:
    fail("docker/grafana/maskloss-dashboard.json: __inputs are resolved by the import dialog, never by provisioning")
dash = json.loads(dash_text)
ds_vars = [v for v in dash.get("templating", {}).get("list", []) if v.get("name") == "DS_PROMETHEUS"]
if not ds_vars or ds_vars[0].get("type") != "datasource" or ds_vars[0].get("query") != "prometheus":
    fail("docker/grafana/maskloss-dashboard.json: ${DS_PROMETHEUS} must be a variable of type datasource, query prometheus")
for uid in set(re.findall(r'"uid"\s*:\s*"([^"]*)"', dash_text)) - {dash.get("uid")}:
    if uid not in ("${DS_PROMETHEUS}", "$DS_PROMETHEUS", proms[0].get("uid") if proms else None):
        fail(f"docker/grafana/maskloss-dashboard.json: the data source uid {uid!r} resolves to nothing provisioned")

# --- a real server, started as a replica is ----------------------------------------------------

tokens = {}
for n in ("admin_token", "prometheus_token"):
    with open(os.path.join(secrets_dir, n)) as f:
        tokens[n] = f.read().strip()
run_env = dict(os.environ)
for k in list(run_env):
    if k.startswith("MASKLOSS_") or k.startswith("PG"):
        del run_env[k]
run_env.update(renv)
run_env["MASKLOSS_BIND"] = "127.0.0.1"
run_env["MASKLOSS_PORT"] = "0"
run_env["MASKLOSS_AUTH_FILE"] = local(secret_file(replicas[0], renv.get("MASKLOSS_AUTH_FILE"), "auth") or "maskloss_tokens")
argv = [a.replace("/usr/local/bin/maskloss-server", SERVER) for a in entry] + as_list(rsvc.get("command"))
for s in top_secrets:
    argv = [a.replace(f"/run/secrets/{s}", local(s)) for a in argv]
pg_ctx = None
if re.search(r"postgres", HELP, re.I):
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    from pg import Postgres  # noqa: E402

    with open(local(pg_secret)) as f:
        pg_ctx = Postgres(user_password=f.read().strip()).__enter__()
    atexit.register(pg_ctx.cleanup)
    run_env["MASKLOSS_STATE"] = state._replace(netloc=f"{state.username}@{pg_ctx.host}:{pg_ctx.port}").geturl()
    backend = "a throwaway PostgreSQL, password from the secret"
else:
    run_env["MASKLOSS_STATE"] = os.path.join(tmp, "state.db")
    backend = "SQLite (SERVER has no PostgreSQL backend yet)"
proc = subprocess.Popen(argv, env=run_env, stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "server.log"), "w"),
                        text=True, start_new_session=True)


def stop_server():
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


atexit.register(stop_server)


def server_log():
    with open(os.path.join(tmp, "server.log"), errors="replace") as f:
        return f.read()[-2000:]


banner = proc.stdout.readline()
m = re.search(r"listening on http://[^ ]*:(\d+) ", banner)
if not m:
    proc.wait(timeout=10)
    fail(f"the server does not start with the replicas' entrypoint and environment "
         f"(exit {proc.returncode}): {banner}{server_log()}")
    sys.exit(1)
sport = int(m.group(1))


def call(method, path, token=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", sport, timeout=30)
    try:
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        c.request(method, path, headers=h)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


# /readyz may wait for the first connection to the database.
deadline = time.monotonic() + 15
while call("GET", "/readyz") != 200 and time.monotonic() < deadline:
    time.sleep(0.1)
probes = {"/healthz", "/readyz"}
for path in ("docker/Dockerfile", "docker/healthcheck.sh"):  # the image's HEALTHCHECK's probe
    with open(path) as f:
        probes |= set(re.findall(r"GET (/\w+) HTTP", f.read()))
for s in [rsvc] + [services[n] for n in ("nginx",)]:
    probes |= set(re.findall(r"(/(?:healthz|readyz))\b", " ".join(as_list((s.get("healthcheck") or {}).get("test")))))
for path in sorted(probes):
    code = call("GET", path)
    if code != 200:
        fail(f"{path} answers {code} without a token on a replica, not 200{server_log()}")
for path, token, want in (("/metrics", tokens["prometheus_token"], 200), ("/metrics", None, 401),
                          ("/v1/monitors", tokens["admin_token"], 200), ("/v1/monitors", tokens["prometheus_token"], 403)):
    code = call("GET", path, token)
    if code != want:
        fail(f"GET {path} with {'a token' if token else 'no token'} of make-secrets.sh answers {code}, not {want}")
def answer_to_length(length, wait):
    """The status line a replica answers a POST announcing `length` bytes with, from its
    headers alone (the body is never sent), or None when it waits for the body."""
    c = socket.create_connection(("127.0.0.1", sport), timeout=wait)
    c.sendall((f"POST /v1/loss HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens['admin_token']}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode())
    try:
        return c.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
    except socket.timeout:
        return None
    finally:
        c.close()


# nginx's client_max_body_size against the replica's own arithmetic (--max-body-bytes and the
# memory budget, JSON counted at its decoding cost): a JSON body of exactly that size is
# admitted (the server waits for it), one byte more is refused 413 from Content-Length.
if body and body[0]:
    got = answer_to_length(body[0], 1)
    if got is not None:
        fail(f"a JSON body of nginx's client_max_body_size ({body[0]} bytes) is answered {got!r} by a "
             f"replica from its headers: MASKLOSS_MAX_BODY_BYTES or MASKLOSS_MAX_INFLIGHT_BYTES(_PER_IP) "
             f"too small for it")
    got = answer_to_length(body[0] + 1, 5)
    if got is None or " 413 " not in got + " ":
        fail(f"a body one byte over client_max_body_size is answered {got!r} by a replica, not 413")


# --- the nginx of compose in front of it --------------------------------------------------------
# Its upstream names as three loopback ports: the first a stand-in that answers every request
# 503 (a draining replica), the second the real server, the third a closed port (a replica
# that is gone). Every POST through nginx must reach the real server: the refused connection
# and the 503 are both retried on the next server, POSTs too (non_idempotent).
class Draining(http.server.BaseHTTPRequestHandler):
    posts = 0

    def answer(self):
        if self.command == "POST":
            Draining.posts += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(503)
        self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = answer

    def log_message(self, *a):
        pass


def free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


if nginx and len(replicas) == 3 and ups == replica_addrs:
    standin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Draining)
    threading.Thread(target=standin.serve_forever, daemon=True).start()
    nport = free_port()
    argv_n = write_nginx({replicas[0]: standin.server_address[1], replicas[1]: sport, replicas[2]: free_port()},
                         nport) + ["-g", f"daemon off; pid {ndir}/nginx.pid;"]
    nproc = subprocess.Popen(argv_n, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", nport), timeout=1).close()
                break
            except OSError:
                if nproc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("nginx with docker/nginx/maskloss.conf does not listen: "
                                         + open(os.path.join(ndir, "error.log")).read())
                time.sleep(0.05)
        codes = []
        for i in range(6):
            c = http.client.HTTPConnection("127.0.0.1", nport, timeout=30)
            c.request("POST", "/v1/loss", body=b'{"loss":"sigmoid_cross_entropy","labels":[1,0],"logits":[0.5,-1]}',
                      headers={"Authorization": "Bearer " + tokens["admin_token"], "Content-Type": "application/json"})
            codes.append(c.getresponse().status)
            c.close()
        if codes != [200] * 6 or Draining.posts == 0:
            fail(f"POSTs through docker/nginx/maskloss.conf with one replica answering 503 and one gone: "
                 f"{codes}, {Draining.posts} sent to the 503 one (all 200 after it, through the next, wanted)")
        got = None
        if body and body[0]:
            c = socket.create_connection(("127.0.0.1", nport), timeout=5)
            c.sendall((f"POST /v1/loss HTTP/1.1\r\nHost: x\r\nContent-Length: {body[0] + 1}\r\n\r\n").encode())
            got = c.recv(4096).split(b"\r\n", 1)[0]
            c.close()
            if b" 413 " not in got:
                fail(f"nginx answers a body one byte over client_max_body_size {got!r}, not 413")
    finally:
        nproc.terminate()
        nproc.wait(timeout=30)
        standin.shutdown()

stop_server()
if proc.returncode != 0:
    fail(f"the replica did not drain and exit 0 on SIGTERM (exit {proc.returncode}){server_log()}")

if FAILS:
    sys.exit(1)
print(f"compose_check: {COMPOSE} matches {sys.argv[1]}: {len(services)} services, "
      f"nginx -t and promtool check config pass, a replica started as compose starts it answers, "
      f"behind that nginx too "
      f"(state: {backend})")
