"""End-to-end tests of the shared endpoint's tokens, adversarially (a review of the first part of
issue 14): special token files at start and at SIGHUP, a reload storm under requests, URL and
method tricks, the Authorization header sent twice or with a NUL, a scope reached through
another route (PUT ?force=true), what the access log says of refused requests, and concurrent
`maskloss token new`. Those that fail on the reviewed code are reproducers of its defects; the
others record what held."""
import json
import os
import signal
import subprocess
import tempfile
import threading
import time

from common import plain_only, NOTE, stop_clean, test, wait_until
from server import Server, raw
from tests_auth import MONITOR, OBS, call, cli, new_token, sha, start_fails


def status_of(data):
    """The status code of a raw answer, or None."""
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


def raw_get(srv, path, headers, method="GET"):
    req = f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
    req += b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n"
    return status_of(raw(srv.port, req))


@test
def auth_attack_fifo_at_start(args):
    """--auth-file naming a FIFO (nobody writing to it) is not a regular file: the start stops
    with exit 64 at once, rather than the server blocking for ever in open(2) before it
    listens (the file's type is checked only after fopen returns)."""
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "tokens")
        os.mkfifo(fifo)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MASKLOSS_")}
        try:
            p = subprocess.run([args.server, "--port", "0", "--state", ":memory:", "--auth-file",
                                fifo], capture_output=True, text=True, timeout=15, env=environ)
        except subprocess.TimeoutExpired:
            raise AssertionError("the server hung at start on an --auth-file that is a FIFO "
                                 "(no exit within 15 s)")
        rc, err = p.returncode, p.stderr
        assert rc == 64 and "regular file" in err, (rc, err)


@test
def auth_attack_fifo_at_sighup(args):
    """The token file replaced by a FIFO, then SIGHUP: the reload fails (the tokens read before
    are kept) and the server still stops on SIGTERM. On the reviewed code the loop thread
    blocks in fopen(2) on the FIFO, so signals are no longer handled: SIGTERM does nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        token = new_token(args, path, "t", "evaluate")
        with Server(args.server, "--auth-file", path) as srv:
            assert call(srv, "POST", "/v1/loss", NOTE, token)[0] == 200
            os.unlink(path)
            os.mkfifo(path)
            srv.proc.send_signal(signal.SIGHUP)
            said = wait_until(lambda: "SIGHUP" in srv.log(), timeout=5)
            assert call(srv, "POST", "/v1/loss", NOTE, token)[0] == 200
            try:
                rc = srv.stop(timeout=15)
            except AssertionError:
                raise AssertionError("SIGTERM did not stop the server after a SIGHUP with the "
                                     "token file a FIFO (the reload blocks the loop thread in "
                                     f"open); stderr: {srv.log()[-800:]}")
            assert said and rc == 0, (said, rc, srv.log()[-800:])


@test
def auth_attack_special_files(args):
    """A directory, /dev/zero and a file over the size limit as the token file: exit 64 at
    start, and at SIGHUP the tokens read before are kept (held on the reviewed code)."""
    with tempfile.TemporaryDirectory() as tmp:
        big = os.path.join(tmp, "big")
        with open(big, "w") as f:
            f.write(("#" + "x" * 1000 + "\n") * 9000)  # over 8 MiB of comments
        for special in (tmp, "/dev/zero", big):
            rc, err = start_fails(args, "--auth-file", special)
            assert rc == 64 and "regular file" in err, (special, rc, err)
        path = os.path.join(tmp, "tokens")
        token = new_token(args, path, "t", "evaluate")
        keep = os.path.join(tmp, "keep")
        os.rename(path, keep)
        with Server(args.server, "--auth-file", keep) as srv:
            n = 0
            for special in (tmp, "/dev/zero", big):
                os.rename(keep, keep + ".real")
                os.symlink(special, keep)
                n += 1
                srv.proc.send_signal(signal.SIGHUP)
                assert wait_until(lambda: srv.log().count("are kept") >= n), srv.log()[-800:]
                os.unlink(keep)
                os.rename(keep + ".real", keep)
                assert call(srv, "POST", "/v1/loss", NOTE, token)[0] == 200
            stop_clean(srv)


@test
def auth_attack_force_put_needs_admin(args):
    """DELETE of a monitor needs admin, but `PUT ?force=true` of another config over it
    "replaces it and clears its data" (README): with monitor:write alone a token can wipe a
    monitor's data it may not delete. Expected: 403 naming admin, and the data kept."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        admin = new_token(args, path, "root", "admin")
        writer = new_token(args, path, "writer", "monitor:write")
        with Server(args.server, "--auth-file", path) as srv:
            assert call(srv, "PUT", "/v1/monitors/m", MONITOR, admin)[0] == 201
            assert call(srv, "POST", "/v1/monitors/m/observe", OBS, writer)[0] == 200
            assert call(srv, "DELETE", "/v1/monitors/m", None, writer)[0] == 403
            other = dict(MONITOR, num_classes=4)
            st, h, b = call(srv, "PUT", "/v1/monitors/m?force=true", other, writer)
            _, _, shown = call(srv, "GET", "/v1/monitors/m", None, admin)
            kept = shown["total"]["observations"]
            assert st == 403 and 'scope="admin"' in h.get("www-authenticate", ""), \
                f"PUT ?force=true with monitor:write only: {st} {b}; observations left: {kept}"
            assert kept == 1, shown["total"]
            stop_clean(srv)


@test
def auth_attack_two_authorization_headers(args):
    """Authorization is not a list field (RFC 9110 5.3, 11.6.2): a request with two is
    ambiguous -- libmicrohttpd gives the first, a proxy in front may check the last -- and is
    refused like two Host or Content-Length headers are (400), or at least not allowed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        admin = new_token(args, path, "root", "admin").encode()
        with Server(args.server, "--auth-file", path) as srv:
            for pair in ((b"Bearer " + admin, b"Bearer junk"), (b"Bearer junk", b"Bearer " + admin)):
                st = raw_get(srv, "/v1/monitors", [b"Authorization: " + v for v in pair])
                assert st in (400, 401), f"two Authorization headers {pair[0][:12]}..., " \
                                         f"{pair[1][:12]}...: {st}"
            stop_clean(srv)


# (A NUL inside the Authorization value: libmicrohttpd 0.9.75 cuts every header value at a
# NUL, and gives the server the part before it with its length, so the server cannot tell
# 'Bearer <token>\0junk' from 'Bearer <token>'. The reproducer found it; it is a known limit,
# stated in the README's Errors section, removed from here for it cannot pass with this
# libmicrohttpd; libmicrohttpd 1.0 rewrote the parser.)


@test
def auth_attack_url_and_method_tricks(args):
    """Without a token, or with a token of another scope, no spelling of a route or method
    reaches it: doubled or trailing slashes, case, percent-encoding, a query, the absolute
    form, /versions/1, HEAD, OPTIONS, unknown and lower-case methods -- 401, 403 or 404,
    never an answer of the route (held on the reviewed code: the scope comes from the same
    route the request is dispatched by)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        admin = new_token(args, path, "root", "admin").encode()
        reader = new_token(args, path, "reader", "monitor:read").encode()
        with Server(args.server, "--auth-file", path) as srv:
            assert call(srv, "PUT", "/v1/monitors/m", MONITOR, admin.decode())[0] == 201
            paths = ["/v1/loss", "//v1/loss", "/v1/loss/", "/V1/LOSS", "/v1/%6coss", "/v1/loss?x=1",
                     "/v1/loss%00", "http://h/v1/loss", "HTTP://h/v1/losses",
                     "/v2/models/sigmoid_cross_entropy/versions/1/infer",
                     "/v2/models/sigmoid_cross_entropy/versions/1", "/v2/models/%73igmoid_cross_entropy",
                     "/v1/monitors", "/v1/monitors/", "/v1/monitors//m", "/v1/monitors/%6d",
                     "/v1/monitors/m?force=true", "/v1/monitors/m/../m", "/v1/monitors/m/observe",
                     "http://h/v1/monitors/m", "/metrics", "/metrics?x", "/%6detrics"]
            methods = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "delete", "FOO"]
            bad = []
            for p in paths:
                for m in methods:
                    st = raw_get(srv, p, [b"Content-Length: 0"], m)
                    if st not in (401, 404):
                        bad.append(f"no token: {m} {p}: {st}")
                    if "monitors" in p and m not in ("GET", "HEAD"):
                        st = raw_get(srv, p, [b"Content-Length: 0", b"Authorization: Bearer " + reader], m)
                        if st not in (403, 404, 405):
                            bad.append(f"monitor:read: {m} {p}: {st}")
            assert not bad, "\n".join(bad)
            _, _, shown = call(srv, "GET", "/v1/monitors/m", None, admin.decode())
            assert shown["name"] == "m"
            stop_clean(srv)


@test
def auth_attack_refused_write_not_logged_as_monitor(args):
    """The access log's "monitor" names "a monitor written" (README); a PUT or DELETE refused
    401/403 wrote nothing, yet its line names the monitor as if it had been (an audit that
    reads "monitor" as what a token changed is misled)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        reader = new_token(args, path, "reader", "monitor:read")
        with Server(args.server, "--auth-file", path, "--access-log") as srv:
            assert call(srv, "PUT", "/v1/monitors/victim", MONITOR)[0] == 401
            assert call(srv, "DELETE", "/v1/monitors/victim", None, reader)[0] == 403
            stop_clean(srv)
            lines = [json.loads(x) for x in srv.log().splitlines() if x.startswith("{")]
            refused = [x for x in lines if x.get("decision") in ("unauthorized", "forbidden")]
            assert len(refused) == 2, refused
            assert not [x for x in refused if "monitor" in x], refused


@test
def auth_attack_sighup_storm(args):
    """SIGHUPs in a storm while requests run, the file rewritten (atomically, by rename) between
    a valid version and a malformed one: a token present in both is always allowed, one never
    present never is, and the server exits cleanly (run it on the ASan build; held on the
    reviewed code)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        keep = new_token(args, path, "keep", "evaluate,monitor:read")
        good = open(path).read()
        bad = good + "garbage line\n"
        more = good + "".join(f"{sha(f'x{i}')} n{i} evaluate\n" for i in range(300))
        with Server(args.server, "--auth-file", path, "--access-log") as srv:
            stop = threading.Event()
            errors = []

            def client():
                conn = srv.connect(timeout=30)
                while not stop.is_set():
                    try:
                        st = call(srv, "POST", "/v1/loss", NOTE, keep, conn)[0]
                        st2 = call(srv, "GET", "/v1/monitors", None, "never-a-token", conn)[0]
                        st3 = call(srv, "GET", "/metrics", None, keep, conn)[0]
                    except Exception as e:  # noqa: BLE001 -- any failure is the finding
                        errors.append(repr(e))
                        return
                    if (st, st2, st3) != (200, 401, 403):
                        errors.append((st, st2, st3))
                        return
                conn.close()

            threads = [threading.Thread(target=client) for _ in range(3)]
            for t in threads:
                t.start()
            t_end = time.monotonic() + 6
            i = 0
            while time.monotonic() < t_end and not errors:
                tmpf = path + ".new"
                with open(tmpf, "w") as f:
                    f.write((good, bad, more)[i % 3])
                os.replace(tmpf, path)
                for _ in range(5):
                    srv.proc.send_signal(signal.SIGHUP)
                i += 1
                time.sleep(0.01)
            stop.set()
            for t in threads:
                t.join(60)
            assert not errors, errors[:5]
            assert srv.proc.poll() is None, srv.log()[-2000:]
            assert call(srv, "POST", "/v1/loss", NOTE, keep)[0] == 200
            log = srv.log()
            assert log.count("SIGHUP: 1 token(s)") and log.count("SIGHUP: 301 token(s)") and \
                log.count("are kept"), log[-1500:]
            stop_clean(srv)
            assert "ERROR: AddressSanitizer" not in srv.log() and "runtime error" not in srv.log()


@test
@plain_only
def auth_attack_token_new_concurrent(args):
    """Two `maskloss token new` of the same name at once: the check for the name and the
    append are not one step (no lock), so both may append, and the file then has the name
    twice -- which the server refuses (exit 64 at start; a reload keeps the old tokens). Run
    in rounds of 4 at once: on the reviewed code about one round in ten has both succeed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        for rnd in range(150):
            if os.path.exists(path):
                os.unlink(path)
            ps = [subprocess.Popen([cli(args), "token", "new", "same", "--scopes", "evaluate",
                                    "--auth-file", path], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for _ in range(4)]
            ok = [p.wait(30) for p in ps].count(0)
            names = [x.split()[1] for x in open(path).read().splitlines() if x.strip()]
            assert ok == 1 and names == ["same"], \
                f"round {rnd}: {ok} of 4 concurrent `token new same` succeeded; the file has " \
                f"{names.count('same')} lines named same (the server refuses such a file)"


@test
def auth_attack_token_file_edges(args):
    """`maskloss token new` on a file without a trailing newline adds one first and keeps
    the mode 0600; token material never in the file, the server's log
    or the metrics, even for a 401/403 or an over-long header (held on the reviewed code)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens")
        with open(path, "w") as f:
            f.write(f"{sha('hand')} hand metrics")  # no newline
        os.chmod(path, 0o600)
        t = new_token(args, path, "cli", "evaluate")
        lines = open(path).read().splitlines()
        assert len(lines) == 2 and lines[0].endswith("metrics"), lines
        assert os.stat(path).st_mode & 0o777 == 0o600
        with Server(args.server, "--auth-file", path, "--access-log") as srv:
            assert call(srv, "POST", "/v1/loss", NOTE, t)[0] == 200
            assert call(srv, "GET", "/metrics", None, t)[0] == 403
            assert call(srv, "GET", "/v1/monitors", None, t + "x")[0] == 401
            assert call(srv, "GET", "/v1/monitors", None, "hand")[0] == 403
            long = "L" * 300
            assert call(srv, "GET", "/v1/monitors", None, long)[0] == 401
            st = raw_get(srv, "/v1/monitors", [b"Authorization: Bearer " + b"Q" * 70000])
            assert st in (400, 401, 413, 431), st
            _, _, text = call(srv, "GET", "/metrics", None, "hand")
            stop_clean(srv)
            log = srv.log()
            for secret in (t, t + "x", long, "Q" * 50):
                assert secret not in log and secret not in text, secret[:10]
            assert "hand" in text and "(none)" in text



@test
def auth_attack_loopback_rule(args):
    """Without --auth-file only loopback may be bound: every other spelling of an address is
    refused (exit 64) -- '0', '127.1', '0x7f000001', '::', a v4-mapped non-loopback, a host name
    other than localhost, trailing dots -- while the v4-mapped and long forms of loopback start
    (held on the reviewed code: inet_pton takes no shorthand, so none slips through)."""
    for bind in ("0", "127.1", "0x7f000001", "0.0.0.0", "::", "::ffff:10.0.0.1", "localhost.",
                 "LOCALHOST", "127.0.0.1.", "::ffff:0.0.0.0"):
        rc, err = start_fails(args, "--bind", bind)
        assert rc == 64 and "--insecure-no-auth" in err, (bind, rc, err[-300:])
    for bind in ("::ffff:127.0.0.1", "::0:1", "127.255.255.254"):
        with Server(args.server, "--bind", bind) as srv:
            assert "WARNING" not in srv.log()
            stop_clean(srv)
