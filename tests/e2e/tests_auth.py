"""End-to-end tests of the shared endpoint's tokens (--auth-file): every route against no token,
a wrong one, one without the scope and one with it; the token file made by `maskloss token new`
and read again on SIGHUP; the start-up rules; no token in logs or metrics. The expected scope of
each route is written here from the contract (README), not read from the server's code."""
import hashlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time

from common import JSON, NOTE, ROOT, stop_clean, test, wait_until
from server import Server, exchange, recorded

SCOPES = ("evaluate", "monitor:read", "monitor:write", "admin", "metrics")
MONITOR = {"loss": "sigmoid_cross_entropy", "num_classes": 5}
OBS = {"labels": NOTE["labels"], "logits": NOTE["logits"], "mask": NOTE["mask"]}
PRED = {"ids": ["u1"], "logits": [[0.1, 0.2, 0.3, 0.4, 0.5]]}
LAB = {"labels": [{"id": "u1", "class": 2, "value": 1}]}

# (method, path, body, the scope it needs: None for none); the monitor "m" exists.
ROUTES = [
    ("POST", "/v1/loss", NOTE, "evaluate"),
    ("POST", "/v1/batch", {"requests": [NOTE]}, "evaluate"),
    ("GET", "/v1/losses", None, "evaluate"),
    ("POST", "/v2/models/sigmoid_cross_entropy/infer",
     {"inputs": [{"name": "LABELS", "shape": [2], "datatype": "FP32", "data": [1, 0]},
                 {"name": "LOGITS", "shape": [2], "datatype": "FP32", "data": [0.5, -1]}]}, "evaluate"),
    ("GET", "/v2", None, "evaluate"),
    ("GET", "/v2/models/sigmoid_cross_entropy", None, "evaluate"),
    ("GET", "/v2/models/sigmoid_cross_entropy/ready", None, "evaluate"),
    ("GET", "/v1/monitors", None, "monitor:read"),
    ("GET", "/v1/monitors/m", None, "monitor:read"),
    ("GET", "/v1/monitors/m/series", None, "monitor:read"),
    ("PUT", "/v1/monitors/m2", MONITOR, "monitor:write"),
    ("POST", "/v1/monitors/m/observe", OBS, "monitor:write"),
    ("POST", "/v1/monitors/late/predictions", PRED, "monitor:write"),
    ("POST", "/v1/monitors/late/labels", LAB, "monitor:write"),
    ("DELETE", "/v1/monitors/m3", None, "admin"),
    ("GET", "/metrics", None, "metrics"),
    ("GET", "/v1/stats", None, "metrics"),
    ("GET", "/", None, None),  # the status page's files: no token (its own API calls need one)
    ("GET", "/ui/ui.js", None, None),
    ("GET", "/healthz", None, None),
    ("GET", "/readyz", None, None),
    ("GET", "/v2/health/live", None, None),
    ("GET", "/v2/health/ready", None, None),
]


def sha(token):
    return hashlib.sha256(token.encode()).hexdigest()


def cli(args):
    return os.path.join(os.path.dirname(os.path.abspath(args.server)), "maskloss")


def new_token(args, path, name, scopes):
    """`maskloss token new`: the token it printed (its line checked against hashlib)."""
    p = subprocess.run([cli(args), "token", "new", name, "--scopes", scopes, "--auth-file", path],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, (p.returncode, p.stderr)
    token = p.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token), token  # 256 bits, base64url
    last = open(path).read().splitlines()[-1].split()
    assert last[0] == sha(token) and last[1] == name, (last, name)
    assert token not in open(path).read()
    return token


def call(srv, method, path, body=None, token=None, conn=None):
    headers = dict(JSON) if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if conn is not None:
        return exchange(conn, method, path, body, headers)
    return srv.request(method, path, body, headers)


def tokens_file(args, tmp):
    """A file with one token per scope (named by it) and one more without any use here."""
    path = os.path.join(tmp, "tokens")
    tokens = {s: new_token(args, path, s.replace(":", "-"), s) for s in SCOPES}
    tokens["two"] = new_token(args, path, "two", "evaluate,monitor:read")
    return path, tokens


def seed(srv, admin):
    for name, cfg in (("m", MONITOR), ("m3", MONITOR), ("late", dict(MONITOR, prediction_ttl="1h"))):
        st, _, b = call(srv, "PUT", f"/v1/monitors/{name}", cfg, admin)
        assert st == 201, (st, b)


@test
def auth_routes(args):
    """Every route x {no token, a wrong one, a token without the scope, one with it}: 401 with
    WWW-Authenticate: Bearer (error="invalid_token" for a wrong one), 403 with the scope
    named, and with the scope (or admin) the route's own answer; the probes and the status
    page's files need nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        path, tokens = tokens_file(args, tmp)
        with Server(args.server, "--auth-file", path) as srv:
            failures = []
            for method, url, body, need in ROUTES:
                seed_needed = method in ("PUT", "DELETE") or "monitors" in url
                if seed_needed:
                    for name in ("m", "m3", "m2", "late"):
                        call(srv, "DELETE", f"/v1/monitors/{name}", None, tokens["admin"])
                    seed(srv, tokens["admin"])
                    call(srv, "POST", "/v1/monitors/late/predictions", PRED, tokens["admin"])
                what = f"{method} {url}"
                if need is None:
                    st, h, b = call(srv, method, url)
                    if st != 200:
                        failures.append(f"{what}: no token: {st}, expected 200 (no token needed)")
                    continue
                st, h, b = call(srv, method, url, body)
                if st != 401 or h.get("www-authenticate") != 'Bearer realm="maskloss"' or \
                        not isinstance(b, dict) or b.get("code") != "unauthorized":
                    failures.append(f"{what}: no token: {st} {h.get('www-authenticate')} {b}")
                st, h, b = call(srv, method, url, body, "not-a-token-of-this-server")
                if st != 401 or "invalid_token" not in h.get("www-authenticate", "") or \
                        b.get("code") != "unauthorized":
                    failures.append(f"{what}: wrong token: {st} {h.get('www-authenticate')} {b}")
                for scope in SCOPES:
                    st, h, b = call(srv, method, url, body, tokens[scope])
                    allowed = scope == need or scope == "admin"
                    if allowed and st in (401, 403):
                        failures.append(f"{what}: token with {scope}: {st} {b}")
                    if not allowed:
                        if st != 403 or b.get("code") != "forbidden" or \
                                f'scope="{need}"' not in h.get("www-authenticate", "") or \
                                need not in b.get("error", ""):
                            failures.append(f"{what}: token with {scope} only: {st} "
                                            f"{h.get('www-authenticate')} {b}")
                    elif st >= 400:
                        failures.append(f"{what}: token with {scope}: {st} {b}")
                    if seed_needed and allowed and method in ("PUT", "DELETE", "POST"):
                        for name in ("m", "m3", "m2", "late"):
                            call(srv, "DELETE", f"/v1/monitors/{name}", None, tokens["admin"])
                        seed(srv, tokens["admin"])
                        call(srv, "POST", "/v1/monitors/late/predictions", PRED, tokens["admin"])
            assert not failures, "\n".join(failures)
            # A token with two scopes has both, and no other.
            assert call(srv, "POST", "/v1/loss", NOTE, tokens["two"])[0] == 200
            assert call(srv, "GET", "/v1/monitors/m", None, tokens["two"])[0] == 200
            assert call(srv, "POST", "/v1/monitors/m/observe", OBS, tokens["two"])[0] == 403
            # The scheme's case does not matter (RFC 9110); a token alone, or Basic, is not one.
            for header, want in ((f"bearer {tokens['evaluate']}", 200),
                                 (f"BEARER   {tokens['evaluate']}  ", 200),
                                 (tokens["evaluate"], 401), (f"Basic {tokens['evaluate']}", 401),
                                 ("Bearer", 401), ("Bearer ", 401)):
                st, _, b = srv.request("POST", "/v1/loss", NOTE, dict(JSON, Authorization=header))
                assert st == want, (header, st, b)
            stop_clean(srv)


@test
def auth_body_not_read(args):
    """A refused request's body is not read: a 401 to a POST announcing 1 GB comes at once."""
    with tempfile.TemporaryDirectory() as tmp:
        path, tokens = tokens_file(args, tmp)
        with Server(args.server, "--auth-file", path) as srv:
            t0 = time.monotonic()
            st, _, body = srv.announce("POST", "/v1/loss", 10 ** 9)
            assert st == 401 and body["code"] == "unauthorized", (st, body)
            assert time.monotonic() - t0 < 5
            stop_clean(srv)


@test
def auth_metrics_open_and_logs(args):
    """--metrics-open: /metrics needs no token, the rest still do. The access log names the
    token, the decision and the monitor written, never the token itself; neither do the
    metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        path, tokens = tokens_file(args, tmp)
        with Server(args.server, "--auth-file", path, "--metrics-open", "--access-log") as srv:
            st, _, text = srv.request("GET", "/metrics")
            assert st == 200
            assert call(srv, "POST", "/v1/loss", NOTE)[0] == 401
            assert call(srv, "POST", "/v1/loss", NOTE, tokens["monitor:read"])[0] == 403
            assert call(srv, "POST", "/v1/loss", NOTE, "wrong")[0] == 401
            seed(srv, tokens["admin"])
            assert call(srv, "POST", "/v1/monitors/m/observe", OBS, tokens["monitor:write"])[0] == 200
            assert call(srv, "GET", "/v1/monitors/m", None, tokens["monitor:read"])[0] == 200
            _, _, text = srv.request("GET", "/metrics")
            stop_clean(srv)
            log = srv.log()
            lines = [json.loads(x) for x in log.splitlines() if x.startswith("{")]
            for t in tokens.values():
                assert t not in log and t not in text, "a token in the log or the metrics"
            got = [(x["method"], x["path"], x.get("token"), x.get("decision"), x.get("monitor"))
                   for x in lines]
            counts = dict(((m.group(1), m.group(2)), float(m.group(3))) for m in re.finditer(
                r'^maskloss_auth_requests_total\{token="([^"]*)",decision="([^"]*)"\} (\S+)$', text, re.M))
            for key, n in ((("(none)", "unauthorized"), 2), (("monitor-read", "forbidden"), 1),
                           (("monitor-read", "allowed"), 1), (("monitor-write", "allowed"), 1),
                           (("admin", "allowed"), 3), (("admin", "forbidden"), 0)):
                assert counts.get(key) == n, f"{key}: {counts.get(key)}, expected {n}: {counts}"
            for want in (("GET", "/metrics", None, None, None),
                         ("POST", "/v1/loss", None, "unauthorized", None),
                         ("POST", "/v1/loss", "monitor-read", "forbidden", None),
                         ("PUT", "/v1/monitors/m", "admin", "allowed", "m"),
                         ("POST", "/v1/monitors/m/observe", "monitor-write", "allowed", "m"),
                         ("GET", "/v1/monitors/m", "monitor-read", "allowed", None)):
                assert want in got, f"{want} not in the access log: {got}"


@test
def auth_reload_on_sighup(args):
    """SIGHUP reads the file again without dropping connections: a token added by `maskloss
    token new` works, one removed is refused, and a malformed file keeps the tokens read
    before (stderr says which line is wrong)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        first = new_token(args, path, "first", "evaluate")
        with Server(args.server, "--auth-file", path) as srv:
            conn = srv.connect()
            assert call(srv, "POST", "/v1/loss", NOTE, first, conn)[0] == 200
            second = new_token(args, path, "second", "evaluate")
            assert call(srv, "POST", "/v1/loss", NOTE, second, conn)[0] == 401

            def reloaded(n):
                srv.proc.send_signal(signal.SIGHUP)
                return wait_until(lambda: srv.log().count("SIGHUP") >= n)

            assert reloaded(1)
            assert "2 token(s)" in srv.log()
            # The same connection, kept alive across the reload.
            assert call(srv, "POST", "/v1/loss", NOTE, second, conn)[0] == 200
            lines = open(path).read().splitlines()
            with open(path, "w") as f:
                f.write("\n".join(x for x in lines if " first " not in x) + "\n")
            assert reloaded(2)
            assert call(srv, "POST", "/v1/loss", NOTE, first, conn)[0] == 401
            assert call(srv, "POST", "/v1/loss", NOTE, second, conn)[0] == 200
            with open(path, "a") as f:
                f.write("zz not-a-hash evaluate\n")
            assert reloaded(3)
            assert re.search(r"line 2: the hash has 2 characters.*kept", srv.log()), srv.log()[-600:]
            assert call(srv, "POST", "/v1/loss", NOTE, second, conn)[0] == 200
            conn.close()
            stop_clean(srv)


def start_fails(args, *argv, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MASKLOSS_")}
    environ.update(env or {})
    p = subprocess.run([args.server, "--port", "0", "--state", ":memory:", *argv],
                       capture_output=True, text=True, timeout=30, env=environ)
    return p.returncode, p.stderr


@test
def auth_start_rules(args):
    """A missing or malformed token file stops the start (exit 64, naming the file and the
    line); without a token file a non-loopback address needs --insecure-no-auth, which warns;
    loopback addresses need nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        missing = os.path.join(tmp, "absent")
        rc, err = start_fails(args, "--auth-file", missing)
        assert rc == 64 and "absent" in err and "No such file" in err, (rc, err)
        bad = os.path.join(tmp, "bad")
        with open(bad, "w") as f:
            f.write("# tokens\n\n%s ok evaluate\n%s dup metrics\n" % (sha("a"), sha("a")))
        rc, err = start_fails(args, "--auth-file", bad)
        assert rc == 64 and "line 4" in err and "twice" in err, (rc, err)
        with open(bad, "w") as f:
            f.write("%s ok evaluate,monitor:everything\n" % sha("a"))
        rc, err = start_fails(args, "--auth-file", bad)
        assert rc == 64 and "line 1" in err and "unknown scope 'monitor:everything'" in err, (rc, err)
        rc, err = start_fails(args, "--bind", "0.0.0.0")
        assert rc == 64 and "--insecure-no-auth" in err and "--auth-file" in err, (rc, err)
        rc, err = start_fails(args, env={"MASKLOSS_BIND": "::"})
        assert rc == 64, (rc, err)
        with Server(args.server, "--bind", "0.0.0.0", "--insecure-no-auth") as srv:
            assert "WARNING" in srv.log() and "no authentication" in srv.log()
            assert srv.request("POST", "/v1/loss", NOTE, JSON)[0] == 200
            stop_clean(srv)
        path = os.path.join(tmp, "tokens")
        token = new_token(args, path, "t", "evaluate")
        with Server(args.server, "--bind", "0.0.0.0", "--auth-file", path) as srv:
            assert "WARNING" not in srv.log()
            assert call(srv, "POST", "/v1/loss", NOTE, token)[0] == 200
            assert call(srv, "POST", "/v1/loss", NOTE)[0] == 401
            stop_clean(srv)
        for loop in ("127.0.0.1", "127.0.0.2", "::1"):
            with Server(args.server, "--bind", loop) as srv:
                assert "WARNING" not in srv.log()
                stop_clean(srv)


@test
def auth_token_cli(args):
    """`maskloss token new`: refuses a name already in the file, an unknown scope, a bad name,
    a missing file name, and a file with a malformed line (nothing appended); the file is
    created 0600; two tokens never repeat."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        a = new_token(args, path, "a", "admin")
        b = new_token(args, path, "b", "metrics")
        assert a != b
        assert os.stat(path).st_mode & 0o777 == 0o600
        size = os.path.getsize(path)
        for argv, rc, says in ((["a", "--scopes", "evaluate", "--auth-file", path], 1, "already has"),
                               (["c", "--scopes", "evaluate,all", "--auth-file", path], 64, "unknown scope 'all'"),
                               (["c d", "--scopes", "evaluate", "--auth-file", path], 64, "name 'c d'"),
                               (["c", "--auth-file", path], 64, "--scopes"),
                               (["c", "--scopes", "evaluate"], 64, "--auth-file")):
            environ = {k: v for k, v in os.environ.items() if k != "MASKLOSS_AUTH_FILE"}
            p = subprocess.run([cli(args), "token", "new", *argv], capture_output=True, text=True,
                               timeout=30, env=environ)
            assert p.returncode == rc and says in p.stderr and not p.stdout, (argv, p.returncode, p.stderr)
        assert os.path.getsize(path) == size
        with open(path, "a") as f:
            f.write("garbage\n")
        p = subprocess.run([cli(args), "token", "new", "c", "--scopes", "evaluate", "--auth-file", path],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "line 3" in p.stderr and not p.stdout, (p.returncode, p.stderr)
        # MASKLOSS_AUTH_FILE names the file when --auth-file does not.
        other = os.path.join(tmp, "other")
        p = subprocess.run([cli(args), "token", "new", "e", "--scopes", "evaluate"], capture_output=True,
                           text=True, timeout=30, env=dict(os.environ, MASKLOSS_AUTH_FILE=other))
        assert p.returncode == 0 and sha(p.stdout.strip()) in open(other).read(), p.stderr


@test
def auth_constant_time_compare(args):
    """The comparison of hashes reads the code path (timing is not measured): the check
    compares the hash sent with every line's through mlp_hash_equal, without leaving the loop
    early, and mlp_hash_equal folds every byte into one value before it decides."""
    src = open(os.path.join(ROOT, "server", "auth.c")).read()
    fn = src[src.index("enum mls_decision mls_auth_check("):]
    fn = fn[:fn.index("\n}\n")]
    loop = fn[fn.index("for (size_t i = 0; i < a->count; i++)"):]
    loop = loop[:loop.index("}") + 1]
    assert "mlp_hash_equal(a->tokens[i].hash, h)" in loop, loop
    for word in ("break", "return", "goto", "if (", "?"):
        assert word not in loop, f"the comparison loop branches ({word!r}):\n{loop}"
    assert "memcmp" not in fn and "strcmp" not in fn, fn
    proto = open(os.path.join(ROOT, "proto", "auth.c")).read()
    eq = proto[proto.index("int mlp_hash_equal("):]
    eq = eq[:eq.index("\n}\n")]
    body = eq[eq.index("for ("):eq.index("return")]
    assert "volatile" in eq and "|" in body, eq
    for word in ("break", "return", "if (", "?"):
        assert word not in body, f"mlp_hash_equal branches ({word!r}):\n{eq}"


@test
def auth_readme_examples(args):
    """The README's curl examples with a token ($TOKEN: evaluate,monitor:read; $READER, named
    reader: monitor:read), answered exactly as it shows, by a server with --auth-file."""
    text = open(os.path.join(ROOT, "README.md")).read()
    pairs = re.findall(r"```sh\n(curl [^\n]*)\n```\n\n```json\n(.*?)\n```", text, re.S)
    pairs = [p for p in pairs if "Authorization: Bearer $" in p[0]]
    assert len(pairs) >= 2, f"found {len(pairs)} curl examples with a token in README.md"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        env = dict(os.environ, TOKEN=new_token(args, path, "ci-job", "evaluate,monitor:read"),
                   READER=new_token(args, path, "reader", "monitor:read"))
        with Server(args.server, "--auth-file", path) as srv:
            with recorded(srv.port, len(pairs)) as rec:  # (curl's exchanges checked)
                for cmd, want in pairs:
                    cmd = cmd.replace("localhost:8080", f"127.0.0.1:{rec.port}")
                    out = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True,
                                         timeout=30, env=env)
                    assert out.stdout.rstrip("\n") == want, \
                        f"README example\n  {cmd}\nprinted\n  {out.stdout}\nnot\n  {want}"
            stop_clean(srv)
