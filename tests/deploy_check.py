#!/usr/bin/python3
"""deploy_check.py SERVER -- keeps the deployment files in step with the server they deploy.

No Kubernetes, Grafana or Prometheus runs here (make check), so the files are checked against
what they name instead:

- deploy/kubernetes/*.yaml: every MASKLOSS_* variable and --flag exists in `SERVER --help`
  (docker/Dockerfile's too); the probe paths are routes SERVER answers 200 with --auth-file
  on and no token; the container port is MASKLOSS_PORT, the Dockerfile's EXPOSE, and what the
  probes, the Service and the ServiceMonitor name; the selectors and the HPA's target find the
  Deployment's pods; terminationGracePeriodSeconds outlasts the preStop sleep plus the drain;
  the root file system is read-only, the user not root; the placeholder token line of
  secret.yaml is refused by the server (exit 64), so that nobody runs it unreplaced.
- docker/grafana/maskloss-dashboard.json and docker/prometheus/*.rules.yml: every PromQL
  expression parses (Grafana's variables replaced by valid values, each expression wrapped in
  a recording rule, `promtool check rules`); every metric name is a sample name of a real
  /metrics scrape of SERVER (started with a token file, quotas, and a monitor with classes,
  slices and late labels that has been observed) or a recording rule of the rules file; and
  every label in a selector, a by/on clause or a legend is one those metrics carry.

Whether the expressions return data across replicas is the cluster test's (issue 15).
"""
import atexit
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import yaml

SERVER = sys.argv[1]
FAILS = []


def fail(msg):
    FAILS.append(msg)
    print("deploy_check: " + msg, file=sys.stderr)


# --- the server's flags and variables ----------------------------------------------------------

HELP = subprocess.run([SERVER, "--help"], capture_output=True, text=True, check=True).stdout
FLAGS = set(re.findall(r"^\s+(--[a-z0-9-]+)", HELP, re.M))
ENVS = set(re.findall(r"\[(MASKLOSS_[A-Z0-9_]+)\]", HELP))
assert FLAGS and ENVS, "could not read the flags of " + SERVER + " --help"


def check_env_flags(where, env_names, args):
    for name in env_names:
        if name.startswith("MASKLOSS_") and name not in ENVS:
            fail(f"{where}: {name} is not a variable of maskloss-server --help")
    for a in args:
        flag = a.split("=", 1)[0]
        if flag.startswith("--") and flag not in FLAGS:
            fail(f"{where}: {flag} is not a flag of maskloss-server --help")


# --- Kubernetes ---------------------------------------------------------------------------------

docs = {}
for path in sorted(glob.glob("deploy/kubernetes/*.yaml")):
    with open(path) as f:
        for d in yaml.safe_load_all(f):
            if d and "kind" in d and d["kind"] != "Kustomization":
                docs.setdefault(d["kind"], []).append((path, d))
for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
             "ServiceMonitor", "Secret"):
    if kind not in docs:
        fail(f"deploy/kubernetes has no {kind}")
with open("deploy/kubernetes/kustomization.yaml") as f:
    listed = set(yaml.safe_load(f)["resources"])
for path in glob.glob("deploy/kubernetes/*.yaml"):
    name = os.path.basename(path)
    if name != "kustomization.yaml" and name not in listed:
        fail(f"deploy/kubernetes/kustomization.yaml does not list {name}")

dep_path, dep = docs["Deployment"][0]
pod = dep["spec"]["template"]
pod_labels = pod["metadata"]["labels"]
spec = pod["spec"]
(ctr,) = [c for c in spec["containers"] if c["name"] == "maskloss"]
env = {e["name"]: e for e in ctr.get("env", [])}
check_env_flags(dep_path, env, ctr.get("args", []) + ctr.get("command", []))


def env_value(name, default):
    e = env.get(name)
    return e["value"] if e and "value" in e else default


port = int(env_value("MASKLOSS_PORT", "8080"))
ports = {p.get("name"): p["containerPort"] for p in ctr["ports"]}
if port not in ports.values():
    fail(f"{dep_path}: MASKLOSS_PORT {port} is not a containerPort ({ports})")
if env_value("MASKLOSS_BIND", "127.0.0.1") not in ("0.0.0.0", "::"):
    fail(f"{dep_path}: MASKLOSS_BIND must be every interface for the kubelet and the Service")


def port_number(p, where):
    n = ports.get(p) if isinstance(p, str) else p
    if n != port:
        fail(f"{where}: port {p!r} is not the server's port {port}")


probe_paths = {}
for probe in ("readinessProbe", "livenessProbe"):
    get = ctr.get(probe, {}).get("httpGet")
    if not get:
        fail(f"{dep_path}: {probe} is not an httpGet")
        continue
    port_number(get["port"], f"{dep_path} {probe}")
    probe_paths[probe] = get["path"]
if probe_paths.get("readinessProbe") != "/readyz" or probe_paths.get("livenessProbe") != "/healthz":
    fail(f"{dep_path}: readiness must be /readyz (503 while draining), liveness /healthz: {probe_paths}")

# The whole stop must fit in the grace period: preStop, then the drain, then at most 5 s of
# sending the last answers (README, Shutdown).
pre = ctr.get("lifecycle", {}).get("preStop", {})
cmd = pre.get("exec", {}).get("command", [])
pre_s = int(cmd[1]) if cmd[:1] == ["sleep"] else pre.get("sleep", {}).get("seconds", 0)
if not pre_s:
    fail(f"{dep_path}: no preStop sleep")
drain = int(env_value("MASKLOSS_DRAIN_TIMEOUT", "30"))
grace = spec.get("terminationGracePeriodSeconds", 30)
if grace <= pre_s + drain + 5:
    fail(f"{dep_path}: terminationGracePeriodSeconds {grace} <= preStop {pre_s} + drain {drain} + 5")
psc, csc = spec.get("securityContext", {}), ctr.get("securityContext", {})
if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")) or psc.get("runAsUser", 1) == 0:
    fail(f"{dep_path}: the pod must run as non-root")
if not csc.get("readOnlyRootFilesystem"):
    fail(f"{dep_path}: readOnlyRootFilesystem is not set")
if not ctr.get("resources", {}).get("requests") or not ctr.get("resources", {}).get("limits"):
    fail(f"{dep_path}: resources requests and limits are needed (the HPA scales on CPU requests)")
mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts", [])}
volumes = {v["name"]: v for v in spec.get("volumes", [])}
if "/var/lib/maskloss" not in mounts:
    fail(f"{dep_path}: the state directory /var/lib/maskloss (the image's VOLUME) is not mounted")
auth_file = env_value("MASKLOSS_AUTH_FILE", None)
auth_secret = None
if not auth_file:
    fail(f"{dep_path}: MASKLOSS_AUTH_FILE is not set")
else:
    d, base = os.path.split(auth_file)
    vol = volumes.get(mounts.get(d), {})
    items = {i["path"]: i["key"] for i in vol.get("secret", {}).get("items", [])}
    auth_secret = (vol.get("secret", {}).get("secretName"), items.get(base, base))
    if not auth_secret[0]:
        fail(f"{dep_path}: MASKLOSS_AUTH_FILE {auth_file} is not in a Secret volume")
st = env.get("MASKLOSS_STATE", {}).get("valueFrom", {}).get("secretKeyRef")
if not st:
    fail(f"{dep_path}: MASKLOSS_STATE does not come from a Secret")

secrets = {d["metadata"]["name"]: d for _, d in docs.get("Secret", [])}


def secret_value(name, key, where):
    s = secrets.get(name)
    v = s and ({**s.get("stringData", {}), **s.get("data", {})}).get(key)
    if v is None:
        fail(f"{where}: Secret {name} key {key} is not in deploy/kubernetes")
    return v


if st and not secret_value(st["name"], st["key"], dep_path).startswith("postgresql://"):
    fail(f"{dep_path}: the Secret behind MASKLOSS_STATE does not hold a postgresql:// URL")
placeholder_tokens = secret_value(*auth_secret, dep_path) if auth_secret and auth_secret[0] else None


def selects(selector, where):
    match = selector.get("matchLabels", selector)
    if not match or any(pod_labels.get(k) != v for k, v in match.items()):
        fail(f"{where}: selector {match} does not select the Deployment's pods {pod_labels}")


selects(dep["spec"]["selector"], dep_path)
svc_ports = {}
for path, svc in docs.get("Service", []):
    selects(svc["spec"]["selector"], path)
    for p in svc["spec"]["ports"]:
        port_number(p.get("targetPort", p["port"]), f"{path} targetPort")
        svc_ports[p.get("name")] = svc["metadata"]["labels"]
for path, pdb in docs.get("PodDisruptionBudget", []):
    selects(pdb["spec"]["selector"], path)
for path, hpa in docs.get("HorizontalPodAutoscaler", []):
    t = hpa["spec"]["scaleTargetRef"]
    if (t["kind"], t["name"]) != ("Deployment", dep["metadata"]["name"]):
        fail(f"{path}: scaleTargetRef {t} is not the Deployment")
    if hpa["spec"].get("minReplicas", 1) > dep["spec"]["replicas"]:
        fail(f"{path}: minReplicas above the Deployment's replicas")
for path, sm in docs.get("ServiceMonitor", []):
    if sm["apiVersion"] != "monitoring.coreos.com/v1":
        fail(f"{path}: apiVersion {sm['apiVersion']}")
    match = sm["spec"]["selector"]["matchLabels"]
    for ep in sm["spec"]["endpoints"]:
        labels = svc_ports.get(ep["port"])
        if labels is None or any(labels.get(k) != v for k, v in match.items()):
            fail(f"{path}: no Service port {ep['port']!r} with the labels {match}")
        if ep.get("path") != "/metrics":
            fail(f"{path}: path {ep.get('path')} is not /metrics")
        b = ep.get("bearerTokenSecret") or ep.get("authorization", {}).get("credentials")
        if not b:
            fail(f"{path}: /metrics needs a token (scope metrics), none is sent")
        else:
            secret_value(b["name"], b["key"], path)

# The Dockerfile's variables and port.
with open("docker/Dockerfile") as f:
    dockerfile = f.read()
check_env_flags("docker/Dockerfile", re.findall(r"\b(MASKLOSS_[A-Z0-9_]+)=", dockerfile), [])
if f"EXPOSE {port}" not in dockerfile or f"MASKLOSS_PORT={port}" not in dockerfile:
    fail(f"docker/Dockerfile does not expose the port {port} of the Deployment")

# --- a real server: probes, the placeholder token line, a /metrics scrape --------------------

tmp = tempfile.mkdtemp(prefix="deploy_check.")
atexit.register(shutil.rmtree, tmp, True)
if placeholder_tokens is not None:
    p = os.path.join(tmp, "placeholder")
    with open(p, "w") as f:
        f.write(placeholder_tokens)
    try:
        r = subprocess.run([SERVER, "--port", "0", "--state", ":memory:", "--auth-file", p],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 64:
            fail(f"the placeholder auth file of secret.yaml is not refused (exit {r.returncode}, not 64)")
    except subprocess.TimeoutExpired:  # run() has killed it
        fail("the server starts with the placeholder auth file of secret.yaml: make it invalid")

# A token made as `maskloss token new` makes it: its SHA-256 in hex, a name, scopes.
TOKEN = "deploy-check-token-0123456789abcdefghijklmnopq"
tokens = os.path.join(tmp, "tokens")
with open(tokens, "w") as f:
    f.write(f"{hashlib.sha256(TOKEN.encode()).hexdigest()} checker admin,metrics\n")
proc = subprocess.Popen([SERVER, "--port", "0", "--workers", "1", "--state", os.path.join(tmp, "state.db"),
                         "--auth-file", tokens, "--rate-limit", "1000", "--queue-share", "4"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    banner = proc.stdout.readline()
    m = re.search(r"listening on http://[^ ]*:(\d+) ", banner)
    assert m, "no port in the banner: " + banner
    base = f"http://127.0.0.1:{m.group(1)}"

    def call(method, path, body=None, token=TOKEN):
        req = urllib.request.Request(base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    for probe, path in probe_paths.items():
        code, _ = call("GET", path, token=None)
        if code != 200:
            fail(f"{dep_path}: {probe} {path} answers {code} without a token, not 200")

    # Every family the server can export: a loss, a refused token, a monitor with classes,
    # slices and exported classes, observed, with a prediction labelled.
    assert call("POST", "/v1/loss", {"loss": "sigmoid_cross_entropy", "labels": [1, 0], "logits": [0.5, -1]})[0] == 200
    call("GET", "/v1/losses", token="not-a-token")
    cfg = {"loss": "sigmoid_cross_entropy", "classes": ["a", "b"], "slices": ["region"], "export_classes": True}
    code, text = call("PUT", "/v1/monitors/m1", cfg)
    assert code in (200, 201), text
    code, text = call("POST", "/v1/monitors/m1/observe",
                      {"labels": [[1, 0]], "logits": [[0.5, -1]], "slice": {"region": "eu"}})
    assert code == 200, text
    code, text = call("POST", "/v1/monitors/m1/predictions", {"ids": ["p1"], "logits": [[0.5, -1]]})
    assert code == 200, text
    code, text = call("POST", "/v1/monitors/m1/labels", {"labels": [{"id": "p1", "class": 0, "value": 1}]})
    assert code == 200, text
    code, scrape = call("GET", "/metrics")
    assert code == 200, scrape
finally:
    proc.terminate()
    proc.wait(timeout=60)

# Sample names (a histogram's _bucket, _sum, _count) and the labels each carries; Prometheus
# adds instance and job to every series it scrapes.
EXPORTED = {}
# (Read line by line rather than by prometheus_client's parser, which renames the samples of a
# counter whose name ends in _sum.)
for line in scrape.splitlines():
    m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s", line)
    if m:
        labels = re.findall(r'([a-zA-Z_]\w*)="(?:\\.|[^"\\])*"', m.group(2) or "")
        EXPORTED.setdefault(m.group(1), {"instance", "job"}).update(labels)

# --- PromQL -------------------------------------------------------------------------------------

with open("docker/grafana/maskloss-dashboard.json") as f:
    dash = json.load(f)
exprs = []  # (where, expr, legend)


def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append((f"dashboard panel {p.get('title')!r}", t["expr"], t.get("legendFormat", "")))
        walk(p.get("panels", []))


walk(dash["panels"])
var_names = set()
for v in dash.get("templating", {}).get("list", []):
    var_names.add(v["name"])
    q = v.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    m = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*", q or "")
    if v["type"] == "query":
        if not m:
            fail(f"dashboard variable {v['name']}: {q!r} is not label_values(metric, label)")
        elif m.group(2) not in EXPORTED.get(m.group(1), ()):
            fail(f"dashboard variable {v['name']}: {m.group(1)} does not export the label {m.group(2)}")
if "DS_PROMETHEUS" not in var_names or "monitor" not in var_names:
    fail("the dashboard needs the variables DS_PROMETHEUS and monitor")
for p in dash["panels"]:
    ds = p.get("datasource")
    if p["type"] != "row" and ds != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}:
        fail(f"dashboard panel {p.get('title')!r}: datasource {ds} is not ${{DS_PROMETHEUS}}")

RULES = {}  # recorded name -> its expression
for path in sorted(glob.glob("docker/prometheus/*.rules.yml")):
    with open(path) as f:
        for g in yaml.safe_load(f)["groups"]:
            for r in g["rules"]:
                if "record" in r:
                    RULES[r["record"]] = r["expr"]
                exprs.append((f"{path} {r.get('record') or r.get('alert')}", r["expr"], ""))

# Grafana's variables by valid values: a duration for the intervals, a name for the rest.
GRAFANA = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "monitor": "m1"}


def substitute(expr):
    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return GRAFANA.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", one, expr)


TOKEN_RE = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`|\{[^}]*\}|\[[^\]]*\]'
                      r'|[a-zA-Z_:][a-zA-Z0-9_:]*|[0-9][0-9a-zA-Z.]*|\S')
KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan", "atan2"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def analyse(expr):
    """The metric names of expr with the labels of their selectors, and the grouping labels."""
    toks = TOKEN_RE.findall(expr)
    selectors, grouping = [], set()
    i = 0
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t in GROUPING:
            if nxt == "(":
                j = i + 2
                while j < len(toks) and toks[j] != ")":
                    if toks[j] != ",":
                        grouping.add(toks[j])
                    j += 1
                i = j
        elif re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", t) and t.lower() not in KEYWORDS \
                and nxt not in ("(", "by", "without"):
            labels = set()
            if nxt.startswith("{"):
                labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", re.sub(r'"(?:\\.|[^"\\])*"', "", nxt)))
            selectors.append((t, labels))
        i += 1
    return selectors, grouping


def labels_of(name, seen=()):
    if name in EXPORTED:
        return EXPORTED[name]
    if name in RULES and name not in seen:  # a rule keeps its grouping labels
        sels, grouping = analyse(RULES[name])
        return grouping or set().union(*(labels_of(n, seen + (name,)) for n, _ in sels))
    return None


rules_file = os.path.join(tmp, "expressions.rules.yml")
checked = []
for n, (where, expr, legend) in enumerate(exprs):
    concrete = substitute(expr)
    if "$" in concrete.replace("$labels", "").replace("$value", ""):
        fail(f"{where}: a Grafana variable is left in {expr!r}")
    checked.append({"record": f"deploy_check:expr_{n}", "expr": concrete})
    sels, grouping = analyse(concrete)
    if not sels:
        fail(f"{where}: no metric found in {expr!r}")
    available = set()
    for name, labels in sels:
        have = labels_of(name)
        if have is None:
            fail(f"{where}: {name} is neither exported by the server nor a recording rule")
            continue
        available |= have
        for label in labels - have:
            fail(f"{where}: {name} has no label {label!r} (it has {sorted(have)})")
    for label in grouping - available - {"le"}:
        fail(f"{where}: grouping by {label!r}, which none of its metrics carries")
    for label in set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)):
        if label not in available:
            fail(f"{where}: the legend shows {label!r}, which the result does not carry")



def promtool_check(rules):
    with open(rules_file, "w") as f:
        yaml.safe_dump({"groups": [{"name": "deploy_check", "rules": rules}]}, f)
    return subprocess.run(["promtool", "check", "rules", rules_file], capture_output=True, text=True)


# All at once; when that fails, one at a time to name the expression.
if promtool_check(checked).returncode != 0:
    for (where, expr, _), rule in zip(exprs, checked):
        r = promtool_check([rule])
        if r.returncode != 0:
            fail(f"{where}: promtool check rules refuses {rule['expr']!r}:\n{r.stdout}{r.stderr}")
if FAILS:
    sys.exit(1)
print(f"deploy_check: deploy/kubernetes, docker/grafana and the rules match {SERVER}: "
      f"{len(exprs)} PromQL expressions parse, their {len({n for _, e, _ in exprs for n, _ in analyse(substitute(e))[0]})} "
      f"metric names exported or recorded")
