"""End-to-end tests of the README's reverse proxy ("A shared endpoint", "Behind a reverse proxy"):
its server command and nginx blocks run as written -- only the ports, the paths and a throwaway
certificate substituted -- with a real nginx (Debian's nginx-light) terminating TLS in front of
a real maskloss-server with --auth-file, and each point the README makes about them checked
through nginx. nginx runs as the current user: its own prefix, pid, logs and every *_temp_path
in a temporary directory (as root its workers drop to nobody, so that directory is made
searchable). Expected losses come from reference.py and numpy, not from the server."""
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import numpy as np

from common import JSON, NOTE, NOTE_LOSS, ROOT, expect_error, metric_value, stop_clean, test, \
    wait_until
from server import Server, exchange, read_checked
from tests_auth import new_token
from tests_tls import make_cert

MIB64 = 64 << 20  # the server's --max-body-bytes default (64M) and nginx's client_max_body_size 64m


def readme_section():
    """The text of README.md's "Behind a reverse proxy", up to the next heading."""
    lines = open(os.path.join(ROOT, "README.md")).read().split("\n")
    start = lines.index("#### Behind a reverse proxy")
    fenced = False
    for end in range(start + 1, len(lines)):
        if lines[end].lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,4} ", lines[end]):
            break
    return "\n".join(lines[start:end])


def blocks(lang):
    return re.findall(r"^ *```%s\n(.*?)\n *```" % lang, readme_section(), re.S | re.M)


def sub_once(text, old, new):
    """text with old replaced by new, which must be there exactly once (else the README and this
    test have drifted apart)."""
    assert text.count(old) == 1, f"{old!r} is {text.count(old)} times in the README's block:\n{text}"
    return text.replace(old, new)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_binary():
    # /usr/sbin is not on a Debian user's PATH.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin:/usr/local/sbin")
    assert found, "nginx not found: these tests need it (Debian: apt-get install nginx-light; " \
        "make test installs it as root)"
    return found


class Setup:
    """A temporary directory with tokens (made with `maskloss token new`) and a certificate."""

    def __init__(self, args, tmp):
        self.tmp = tmp
        # As root, nginx's workers run as nobody: they must reach the temp paths in here.
        os.chmod(tmp, 0o755)
        self.tokens = os.path.join(tmp, "tokens")
        self.job = new_token(args, self.tokens, "job", "evaluate,monitor:read,monitor:write")
        self.reader = new_token(args, self.tokens, "reader", "monitor:read")
        self.ops = new_token(args, self.tokens, "ops", "metrics")
        self.cert, self.key = make_cert(tmp)

    def server(self, args, *extra, port=0):
        """The README's maskloss-server command, its port and token file replaced, plus the
        test's flags (--access-log and those of a phase)."""
        cmd = blocks("sh")[0]
        assert cmd.startswith("maskloss-server "), cmd
        argv = shlex.split(cmd.replace("\\\n", " "))
        assert argv[argv.index("--port") + 1] == "8080" and "/etc/maskloss/tokens" in argv, argv
        argv[argv.index("--port") + 1] = str(port)
        argv[argv.index("/etc/maskloss/tokens")] = self.tokens
        return Server(args.server, *argv[1:], "--access-log", *extra)


class Nginx:
    """nginx with the README's site block (upstream and server), as the current user."""

    def __init__(self, setup, upstream_port, site=None, workers=2):
        self.tmp = tempfile.mkdtemp(dir=setup.tmp)
        os.chmod(self.tmp, 0o755)
        self.port = free_port()
        site = site if site is not None else blocks("nginx")[0]
        site = sub_once(site, "server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};")
        site = sub_once(site, "listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;")
        site = sub_once(site, "/etc/nginx/tls/maskloss.pem", setup.cert)
        site = sub_once(site, "/etc/nginx/tls/maskloss.key", setup.key)
        t = self.tmp
        # The main context Debian's /etc/nginx/nginx.conf gives, but every path in here: as
        # another user than root nginx cannot write /var/lib/nginx or /run.
        conf = (f"worker_processes {workers};\n"
                "events { worker_connections 512; }\n"
                "http {\n"
                f"    access_log {t}/access.log;\n"
                f"    client_body_temp_path {t}/client_body;\n"
                f"    proxy_temp_path {t}/proxy;\n"
                f"    fastcgi_temp_path {t}/fastcgi;\n"
                f"    uwsgi_temp_path {t}/uwsgi;\n"
                f"    scgi_temp_path {t}/scgi;\n"
                f"{site}\n"
                "}\n")
        self.conf = os.path.join(t, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.error_log = os.path.join(t, "error.log")
        # -e: the log of the start itself (else /var/log/nginx/error.log, not writable).
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", t, "-e", self.error_log, "-c", self.conf,
             "-g", f"daemon off; pid {t}/nginx.pid;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}: "
                                     f"{self.proc.stderr.read().decode()}{self.log()}\n{conf}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < end, f"nginx does not listen: {self.log()}"
                time.sleep(0.05)
        self.ctx = ssl.create_default_context(cafile=setup.cert)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return False

    def log(self):
        try:
            return open(self.error_log).read()
        except OSError:
            return ""

    def connect(self, timeout=120):
        return http.client.HTTPSConnection("localhost", self.port, context=self.ctx, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        """(status, headers, body) through nginx, on conn or a fresh connection."""
        own = conn is None
        conn = conn or self.connect()
        try:
            return exchange(conn, method, path, body, headers, foreign=nginx_own)
        finally:
            if own:
                conn.close()


def nginx_own(status, headers, payload):
    """Whether an answer is nginx's own page (its 400, 413, 429, 502, 504), not the server's:
    HTML with nginx's signature. The server's answers are JSON but for its page's files (200,
    304), and are checked against the document (contract.py) as they come through nginx."""
    return headers.get("content-type") == "text/html" and isinstance(payload, str) \
        and re.search(r"<hr><center>nginx(/[0-9.]+)?</center>", payload) is not None and status >= 400


def bearer(token, json_body=True):
    h = {"Authorization": f"Bearer {token}"}
    return dict(h, **JSON) if json_body else h


def access_lines(srv):
    return [json.loads(line) for line in srv.log().splitlines() if line.startswith('{"time"')]


def is_nginx_page(resp, status):
    st, h, body = resp
    assert st == status and h.get("content-type") == "text/html" and h.get("server", "").startswith("nginx") \
        and f"<title>{status} " in body, f"not nginx's own {status} page: {resp}"


def same_as_direct(srv, via, method, path, body, headers):
    """The answer through nginx is the server's own: status, body and the headers that say
    something about it (nginx's own Server, Date, Connection aside)."""
    direct = srv.request(method, path, body, headers)
    for name in ("www-authenticate", "retry-after", "content-type", "allow", "inference-header-content-length"):
        assert via[1].get(name) == direct[1].get(name), f"{name}: {via[1]} vs {direct[1]}"
    assert via[0] == direct[0] and via[2] == direct[2], f"through nginx {via}, direct {direct}"


def v2_binary(n, total=None, seed=1):
    """A v2 request of two FP32 tensors of n elements in binary, its header padded with spaces
    to make the body `total` bytes: (header length, body, labels, logits)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(np.float32)
    logits = rng.standard_normal(n).astype(np.float32)
    meta = {"inputs": [{"name": name, "shape": [n], "datatype": "FP32",
                        "parameters": {"binary_data_size": 4 * n}} for name in ("LABELS", "LOGITS")]}
    js = json.dumps(meta).encode()
    if total is not None:
        js += b" " * (total - len(js) - 8 * n)
    return len(js), js + labels.tobytes() + logits.tobytes(), labels, logits


def sce_mean(labels, logits):
    """The mean sigmoid cross-entropy, in float64 with numpy (TensorFlow's stable formula)."""
    x, z = logits.astype(np.float64), labels.astype(np.float64)
    return float(np.mean(np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))))


def upstream_connections(port):
    """The client-side ports of the TCP connections to `port` the kernel knows (established,
    closing or in TIME_WAIT; the listening socket aside): one per connection nginx opened."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), f[3]
            if state == "0A":  # LISTEN
                continue
            if remote == port:
                ports.add(local)
            elif local == port:
                ports.add(remote)
    return ports


def new_upstream_connections(nx, srv, n, token):
    """How many connections nginx opened to the server for n requests (the note's example over
    n // 20 client connections)."""
    before = upstream_connections(srv.port)
    conn = None
    for i in range(n):
        if i % 20 == 0:
            if conn:
                conn.close()
            conn = nx.connect()
        st, _, b = nx.request("POST", "/v1/loss", NOTE, bearer(token), conn=conn)
        assert st == 200 and abs(b["loss"] - NOTE_LOSS) <= 1e-12 * NOTE_LOSS, (st, b)
    conn.close()
    return len(upstream_connections(srv.port) - before)


@test
def proxy_nginx(args):
    """The README's nginx in front of the README's server command: its curl example; the note's
    example; 401, 403 and the server's 413 passed through as the server wrote them; two
    Authorization headers refused by nginx; a monitor created, observed, read; a body of exactly
    64 MiB computed and one byte more refused by nginx (413, its HTML page, the server never
    sees it); a chunked body; keep-alive to the server (200 requests over 2 connections of
    nginx's, against hundreds without the README's keep-alive lines); /readyz."""
    with tempfile.TemporaryDirectory() as tmp:
        s = Setup(args, tmp)
        with s.server(args) as srv, Nginx(s, srv.port) as nx:
            # The README's curl example, through nginx: its exact output, and the note's loss.
            cmd = blocks("sh")[1]
            want = blocks("json")[0]
            assert abs(json.loads(want)["loss"] - NOTE_LOSS) <= 1e-12 * NOTE_LOSS, want
            lines = [line for line in cmd.splitlines() if not line.startswith("#")]
            assert len(lines) == 1 and lines[0].startswith("curl "), cmd
            line = sub_once(lines[0], "https://maskloss.example.org", f"https://localhost:{nx.port}")
            out = subprocess.run(line, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60,
                                 env=dict(os.environ, TOKEN=s.job, CURL_CA_BUNDLE=s.cert))
            assert out.stdout.rstrip("\n") == want, f"README example\n  {line}\nprinted\n  {out}\nnot\n  {want}"

            st, h, b = nx.request("POST", "/v1/loss", NOTE, bearer(s.job))
            assert st == 200 and abs(b["loss"] - NOTE_LOSS) <= 1e-12 * NOTE_LOSS, (st, b)
            st, _, b = nx.request("GET", "/readyz")
            assert st == 200 and b == {"ready": True}, (st, b)

            # Refusals pass through as the server wrote them: body, WWW-Authenticate.
            for headers, status in (({}, 401), (bearer("not-a-token", False), 401),
                                    (bearer(s.reader), 403)):
                via = nx.request("POST", "/v1/loss", NOTE, dict(JSON, **headers))
                expect_error(via, status, "unauthorized" if status == 401 else "forbidden", "Authorization")
                assert via[1]["www-authenticate"].startswith('Bearer realm="maskloss"'), via
                same_as_direct(srv, via, "POST", "/v1/loss", NOTE, dict(JSON, **headers))
            # A wrong token on a kept-alive connection: the server closes its own after the 401
            # (Connection: close), nginx keeps the client's, and the next request on it is served.
            conn = nx.connect()
            st, h, _ = nx.request("POST", "/v1/loss", NOTE, bearer("x"), conn=conn)
            assert st == 401 and 'error="invalid_token"' in h["www-authenticate"], (st, h)
            assert srv.request("POST", "/v1/loss", NOTE, bearer("x"))[1].get("connection") == "close"
            assert h.get("connection") == "keep-alive", h
            st, _, b = nx.request("GET", "/v1/losses", None, bearer(s.job, False), conn=conn)
            assert st == 200 and any(x["name"] == "sigmoid_cross_entropy" for x in b["losses"]), st
            conn.close()
            # A 405 with its Allow; a v2 answer in binary with its Inference-Header-Content-Length.
            via = nx.request("GET", "/v1/loss", None, bearer(s.job, False))
            expect_error(via, 405, "method_not_allowed")
            same_as_direct(srv, via, "GET", "/v1/loss", None, bearer(s.job, False))
            v2 = {"parameters": {"binary_data_output": True},
                  "inputs": [{"name": name, "shape": [4, 5], "datatype": "FP64", "data": sum(NOTE[key], [])}
                             for name, key in (("LABELS", "labels"), ("LOGITS", "logits"), ("MASK", "mask"))]}
            via = nx.request("POST", "/v2/models/sigmoid_cross_entropy/infer", v2, bearer(s.job))
            assert via[0] == 200 and via[1].get("inference-header-content-length", "").isdigit(), via
            same_as_direct(srv, via, "POST", "/v2/models/sigmoid_cross_entropy/infer", v2, bearer(s.job))
            # A 401 decided from the headers, with a 20 MB body nginx received in full first.
            big = b'{"loss":"sigmoid_cross_entropy","labels":[' + b"0," * 10_000_000 + b'0],"logits":[0]}'
            expect_error(nx.request("POST", "/v1/loss", big, JSON), 401, "unauthorized")
            # Two Authorization headers: nginx's own 400; the server never sees the request.
            seen = len(access_lines(srv))
            conn = nx.connect()
            conn.putrequest("GET", "/v1/losses")
            conn.putheader("Authorization", f"Bearer {s.job}")
            conn.putheader("Authorization", "Bearer other")
            conn.endheaders()
            resp = conn.getresponse()
            is_nginx_page((resp.status, {k.lower(): v for k, v in resp.getheaders()},
                           resp.read().decode()), 400)
            conn.close()

            # Monitors: create, observe the note's example, read it back.
            mon = {"loss": "sigmoid_cross_entropy", "num_classes": 5}
            st, _, b = nx.request("PUT", "/v1/monitors/movies", mon, bearer(s.job))
            assert st == 201 and b["name"] == "movies", (st, b)
            obs = {k: NOTE[k] for k in ("labels", "logits", "mask")}
            st, _, b = nx.request("POST", "/v1/monitors/movies/observe", obs, bearer(s.job))
            assert st == 200 and abs(b["loss"] - NOTE_LOSS) <= 1e-6 * NOTE_LOSS, (st, b)
            st, _, b = nx.request("GET", "/v1/monitors/movies", None, bearer(s.reader, False))
            assert st == 200 and b["total"]["observations"] == 1, (st, b)
            assert abs(b["total"]["loss"] - NOTE_LOSS) <= 1e-6 * NOTE_LOSS, b["total"]
            expect_error(nx.request("DELETE", "/v1/monitors/movies", None, bearer(s.job, False)),
                         403, "forbidden")
            assert len(access_lines(srv)) >= seen + 4
            assert not any(line["path"] == "/v1/losses" and line["status"] == 400
                           for line in access_lines(srv)), "the server saw the two Authorization headers"

            # Exactly 64 MiB: through nginx (the whole body buffered, in its temporary file)
            # to the server, computed; numpy's loss. One byte more: nginx's own 413.
            n = 8_000_000
            hlen, body, labels, logits = v2_binary(n, total=MIB64)
            assert len(body) == MIB64
            head = dict(bearer(s.job, False), **{"Inference-Header-Content-Length": str(hlen)})
            st, _, b = nx.request("POST", "/v2/models/sigmoid_cross_entropy/infer", body, head)
            assert st == 200, (st, b)
            got = b["outputs"][0]["data"][0]
            want_loss = sce_mean(labels, logits)
            assert abs(got - want_loss) <= 1e-5 * abs(want_loss), (got, want_loss)
            assert any(line["bytes_in"] == MIB64 and line["status"] == 200 for line in access_lines(srv))
            seen = len(access_lines(srv))
            hlen, body, _, _ = v2_binary(n, total=MIB64 + 1)
            head["Inference-Header-Content-Length"] = str(hlen)
            is_nginx_page(nx.request("POST", "/v2/models/sigmoid_cross_entropy/infer", body, head), 413)
            del body
            assert wait_until(lambda: "client intended to send too large body: 67108865 bytes" in nx.log()), nx.log()
            assert len(access_lines(srv)) == seen, access_lines(srv)[seen:]
            # A tensor over --max-elements within that size: the server's JSON 413, unchanged.
            m = 16777217
            meta = {"inputs": [{"name": name, "shape": [m], "datatype": "BOOL",
                                "parameters": {"binary_data_size": m}} for name in ("LABELS", "LOGITS")]}
            js = json.dumps(meta).encode()
            head["Inference-Header-Content-Length"] = str(len(js))
            body = js + bytes(2 * m)
            via = nx.request("POST", "/v2/models/sigmoid_cross_entropy/infer", body, head)
            expect_error(via, 413, "too_large", "labels")
            same_as_direct(srv, via, "POST", "/v2/models/sigmoid_cross_entropy/infer", body, head)
            del body

            # A chunked body (nginx reads it whole and sends it with a Content-Length).
            conn = nx.connect()
            data = json.dumps(NOTE).encode()
            conn.request("POST", "/v1/loss", body=iter([data[:50], data[50:]]),
                         headers=bearer(s.job), encode_chunked=True)
            st, _, b, _ = read_checked(conn.getresponse(), "POST", "/v1/loss", bearer(s.job), data)
            assert st == 200 and abs(b["loss"] - NOTE_LOSS) <= 1e-12 * NOTE_LOSS, b
            conn.close()

            # Keep-alive to the server: 200 requests over 10 client connections use at most
            # one connection per nginx worker (2).
            opened = new_upstream_connections(nx, srv, 200, s.job)
            assert opened <= 2, f"nginx opened {opened} connections to the server for 200 requests"
            stop_clean(srv)
        assert "[emerg]" not in nx.log() and "[alert]" not in nx.log(), nx.log()

        # The control: without the README's keep-alive lines, a connection per request -- the
        # count above does see connections.
        site = blocks("nginx")[0]
        for line in ("keepalive 16;", "keepalive_timeout 50s;", "proxy_http_version 1.1;",
                     'proxy_set_header Connection "";'):
            site = "\n".join(x for x in site.splitlines() if not x.strip().startswith(line))
        with s.server(args) as srv, Nginx(s, srv.port, site=site) as nx:
            opened = new_upstream_connections(nx, srv, 60, s.job)
            assert opened >= 55, f"without keep-alive nginx opened only {opened} connections for 60 requests"
            stop_clean(srv)


def slow_body(n=2_500_000):
    """/v1/loss of n labels 0 and logits 1 in JSON, each logit written with 21 significant
    digits (1.00000000000000000001, which is 1.0 in double: its loss is softplus(1)): beyond the
    decoder's exact path for up to 2^53 (proto/numarray.c), each goes through strtod, about half
    a second of parsing on a worker here (short "1"s parse in a fraction of that since issue 16).
    62 MB: under the README's 64 MiB body limit."""
    return (b'{"loss":"sigmoid_cross_entropy","labels":[' + b"0," * (n - 1) + b'0],"logits":['
            + b"1.00000000000000000001," * (n - 1) + b'1.00000000000000000001]}')


def metrics(srv, ops):
    st, _, text = srv.request("GET", "/metrics", None, bearer(ops, False))
    assert st == 200, (st, text)
    return text


@test
def proxy_drain(args):
    """SIGTERM to the server behind the README's nginx: the requests it accepted (one computing,
    three batches queued behind it) are answered through nginx; meanwhile /readyz and new requests get
    503 (`draining`, with Retry-After) through nginx; once the server has exited nginx answers
    its own 502; a server started again on the port is reached again, and its 429 (--rate-limit)
    passes through with Retry-After."""
    with tempfile.TemporaryDirectory() as tmp:
        s = Setup(args, tmp)
        with s.server(args, "--workers", "1") as srv, Nginx(s, srv.port) as nx:
            port = srv.port
            # One long request, then three batches of the note's example queued behind it (a
            # small /v1/loss would be answered on the HTTP thread while the worker is busy).
            long_body = slow_body()
            results = {}

            def send(key, body, path="/v1/loss"):
                try:
                    results[key] = nx.request("POST", path, body, bearer(s.job))
                except Exception as e:  # reported by the assertion below
                    results[key] = e

            threads = [threading.Thread(target=send, args=("long", long_body))]
            threads[0].start()
            assert wait_until(lambda: metric_value(metrics(srv, s.ops), "maskloss_running_jobs") == 1,
                              timeout=60, every=0.02), "the long request never ran"
            for i in range(3):
                threads.append(threading.Thread(target=send, args=(i, {"requests": [NOTE]}, "/v1/batch")))
                threads[-1].start()
            assert wait_until(lambda: metric_value(metrics(srv, s.ops), "maskloss_queue_jobs") == 3,
                              timeout=30, every=0.02), f"three requests not queued: {metrics(srv, s.ops)}"
            assert metric_value(metrics(srv, s.ops), "maskloss_running_jobs") == 1, \
                "the long request ended before SIGTERM: make it longer"
            srv.send_signal(signal.SIGTERM)
            # (the server says so on stderr once the drain has started)
            assert wait_until(lambda: nx.request("GET", "/readyz")[0] == 503, timeout=10), nx.request("GET", "/readyz")
            via = nx.request("POST", "/v1/loss", NOTE, bearer(s.job))
            expect_error(via, 503, "draining")
            for t in threads:
                t.join(120)
            assert results["long"][0] == 200, results["long"]
            softplus1 = float(np.log1p(np.exp(1.0)))  # labels 0, logits 1
            assert abs(results["long"][2]["loss"] - softplus1) <= 1e-6 * softplus1, results["long"]
            for i in range(3):
                st, _, b = results[i]
                assert st == 200 and abs(b["responses"][0]["loss"] - NOTE_LOSS) <= 1e-12 * NOTE_LOSS, results[i]
            stop_clean(srv)
            is_nginx_page(nx.request("POST", "/v1/loss", NOTE, bearer(s.job)), 502)

            # Started again on the same port: nginx reaches it at once (one server in the
            # upstream is never marked down). Its 429 passes through with Retry-After.
            with s.server(args, "--rate-limit", "0.01", "--rate-burst", "1", port=port) as srv2:
                st, _, b = nx.request("POST", "/v1/loss", NOTE, bearer(s.job))
                assert st == 200 and abs(b["loss"] - NOTE_LOSS) <= 1e-12 * NOTE_LOSS, (st, b)
                via = nx.request("POST", "/v1/loss", NOTE, bearer(s.job))
                expect_error(via, 429, "too_many_requests")
                assert via[1].get("retry-after", "").isdigit(), via
                # Another token has its own bucket, through the same nginx address.
                st, _, b = nx.request("GET", "/v1/monitors", None, bearer(s.reader, False))
                assert st == 200, (st, b)
                stop_clean(srv2)
        assert "[emerg]" not in nx.log() and "[alert]" not in nx.log(), nx.log()


@test
def proxy_limits(args):
    """The README's limit_req lines added to its nginx block: a flood from one address gets
    nginx's own 429 page (no Retry-After) past the burst, and the server sees only the requests
    nginx let through. And proxy_read_timeout: past it (here 200 ms instead of 60 s), nginx's 504."""
    with tempfile.TemporaryDirectory() as tmp:
        s = Setup(args, tmp)
        zone, *in_server = blocks("nginx")[1].splitlines()
        zone = zone.split("#")[0].strip()
        assert zone.startswith("limit_req_zone $binary_remote_addr "), zone
        in_server = [line.split("#")[0].strip() for line in in_server]
        assert in_server[0].startswith("limit_req zone=") and in_server[1] == "limit_req_status 429;", in_server
        site = blocks("nginx")[0]
        site = sub_once(site, "upstream maskloss {", zone + "\n\nupstream maskloss {")
        site = sub_once(site, "server {\n", "server {\n    " + "\n    ".join(in_server) + "\n")
        burst = int(re.search(r"burst=(\d+)", in_server[0]).group(1))
        with s.server(args) as srv, Nginx(s, srv.port, site=site) as nx:
            conn = nx.connect()
            statuses = []
            while statuses.count(429) < 5 and len(statuses) < burst + 2000:
                st, h, b = nx.request("GET", "/v1/losses", None, bearer(s.job, False), conn=conn)
                statuses.append(st)
                if st == 429:
                    is_nginx_page((st, h, b), 429)
                    assert "retry-after" not in h, h
                    conn.close()
                    conn = nx.connect()
            conn.close()
            assert statuses.count(429) > 0 and set(statuses) == {200, 429}, statuses
            assert statuses[:burst + 1] == [200] * (burst + 1), statuses[:burst + 1]
            ok = statuses.count(200)
            assert wait_until(lambda: sum(line["path"] == "/v1/losses" for line in access_lines(srv)) == ok), \
                (ok, len(access_lines(srv)))
            stop_clean(srv)

        site = sub_once(blocks("nginx")[0], "proxy_read_timeout 60s;", "proxy_read_timeout 200ms;")
        with s.server(args, "--workers", "1") as srv, Nginx(s, srv.port, site=site) as nx:
            is_nginx_page(nx.request("POST", "/v1/loss", slow_body(), bearer(s.job)), 504)
            assert "upstream timed out" in nx.log(), nx.log()
            # The server computed it anyway, for nobody (its answer went to a socket nginx had
            # closed: the access log's line may well say 200).
            assert wait_until(lambda: any(line["path"] == "/v1/loss" and line["total_seconds"] > 0.2
                                          for line in access_lines(srv)), timeout=60), access_lines(srv)
            stop_clean(srv)


class Capture:
    """A stand-in for the server, on a free port: records the head and body of every request
    nginx sends it and answers each 200 {} on the same connection (what nginx forwards, seen
    from the server's side)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
                length = int(dict((k.lower(), v) for k, v in headers).get("content-length", 0))
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append((lines[0], headers, buf[:length]))
                buf = buf[length:]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    def close(self):
        self.sock.close()


@test
def proxy_forwarded_request(args):
    """What the README's nginx sends the server, recorded by a stand-in: HTTP/1.1 without a
    Connection header (keep-alive), the client's Authorization as it was sent, and a chunked
    body whole, with a Content-Length and no Transfer-Encoding (request buffering)."""
    with tempfile.TemporaryDirectory() as tmp:
        s = Setup(args, tmp)
        cap = Capture()
        try:
            with Nginx(s, cap.port, workers=1) as nx:
                data = json.dumps(NOTE).encode()
                for _ in range(3):
                    conn = nx.connect()
                    conn.request("POST", "/v1/loss", body=iter([data[:50], data[50:]]),
                                 headers=bearer(s.job), encode_chunked=True)
                    resp = conn.getresponse()
                    assert resp.status == 200 and resp.read() == b"{}", resp.status
                    conn.close()
                assert len(cap.requests) == 3, cap.requests
                for line, headers, body in cap.requests:
                    names = [k.lower() for k, _ in headers]
                    assert line == "POST /v1/loss HTTP/1.1", line
                    assert ("Authorization", f"Bearer {s.job}") in headers and names.count("authorization") == 1, headers
                    assert ("Content-Length", str(len(data))) in headers and "transfer-encoding" not in names, headers
                    assert "connection" not in names, headers
                    assert body == data
                assert cap.connections == 1, f"{cap.connections} connections for 3 requests (1 nginx worker)"
        finally:
            cap.close()
