"""End-to-end tests of `maskloss monitor` on a shared endpoint (issue 14): --token,
--token-file and MASKLOSS_TOKEN against a real server started with --auth-file, and https://
with --cacert (or MASKLOSS_CACERT) against its --tls-cert/--tls-key; a throwaway certificate and
tokens made as tests_tls.py and tests_auth.py make them, the server as tests_client_auth.py
starts it.

What the CLI prints is compared with what the server's API answers to the same request
(Python's ssl trusting the certificate), and the note's figures with their value computed in
common.py (not by the server). Refusals: no token, a wrong one, one without the scope (exit 2,
the server's error object on stderr); a token that cannot travel in a header (exit 64); a
certificate not trusted, or not for the host (exit 3, saying which); TLS below 1.2, plain HTTP
to the TLS port and TLS to a plain port (exit 3, at once). No token is ever printed."""
import json
import os
import socket
import subprocess
import tempfile
import time

from common import stop_clean, test
from server import Server
from tests_auth import call
from tests_cli_monitor import NOTE_TENSORS, Peer, answer, cli, note_figures_ok
from tests_client_auth import shared_server
from tests_tls import free_port, make_cert, old_tls_client, tls_conn

CONFIG = {"loss": "sigmoid_cross_entropy", "dtype": "float64", "slices": ["model_version"]}


class Outputs:
    """Every run of the CLI in a test, to check afterwards that no token was ever printed."""

    def __init__(self, args, base):
        self.args, self.base, self.seen = args, list(base), []

    def __call__(self, *argv, **kw):
        st, out, err = cli(self.args, *argv, *self.base, **kw)
        self.seen.append(out + err)
        return st, out, err

    def none_shows(self, *secrets):
        for text in self.seen:
            for s in secrets:
                assert s not in text, f"a token was printed: {text[:300]!r}"


def api(srv, cert, method, path, body=None, token=None):
    """The server's own answer to a request, over Python's ssl: (status, body)."""
    conn = tls_conn(srv, cert)
    try:
        st, _, b = call(srv, method, path, body, token, conn=conn)
    finally:
        conn.close()
    return st, b


def error_object(err):
    """The first line of the CLI's stderr: the server's error object."""
    return json.loads(err.splitlines()[0])


@test
def cli_auth_tokens(args):
    """--token, --token-file, MASKLOSS_TOKEN over HTTPS: a writer creates and observes, a
    reader shows (the figures the server's GET gives, and the note's loss computed here);
    no token, a wrong one, one without the scope: exit 2 with the server's error object, the
    same the API answers; the option wins over the environment; a token that cannot go into a
    header: exit 64; no token in any output."""
    with tempfile.TemporaryDirectory() as tmp, shared_server(args) as (srv, url, cert, tokens):
        run = Outputs(args, ["--server", url, "--cacert", cert])
        user, reader, admin = tokens["user"], tokens["reader"], tokens["admin"]
        st, out, err = run("create", "note", "--config", "-", "--token", user,
                           stdin=json.dumps(CONFIG).encode())
        assert st == 0 and json.loads(out)["name"] == "note", (st, out, err)
        token_file = os.path.join(tmp, "user.token")
        with open(token_file, "w") as f:
            f.write(user + "\n")  # as `maskloss token new > file` leaves it
        now = int(time.time())
        st, out, err = run("observe", "note", "--time", str(now), "--slice", "model_version=7",
                           "--token-file", token_file, stdin=json.dumps(NOTE_TENSORS).encode())
        assert st == 0, (st, out, err)
        note_figures_ok(json.loads(out))

        # show with MASKLOSS_TOKEN: what the API answers, and the note's figures.
        st, out, err = run("show", "note", env={"MASKLOSS_TOKEN": reader})
        assert st == 0, (st, out, err)
        shown = json.loads(out)
        st, got = api(srv, cert, "GET", "/v1/monitors/note", token=reader)
        assert st == 200, (st, got)
        for key in ("name", "config", "total", "slices"):
            assert shown[key] == got[key], (key, shown[key], got[key])
        note_figures_ok(shown["total"])
        note_figures_ok(shown["slices"]["model_version=7"]["total"])
        series_path = f"/v1/monitors/note/series?step=1m&from={now - 600}&to={now + 120}"
        st, out, err = run("series", "note", "--step", "1m", "--from", str(now - 600),
                           "--to", str(now + 120), "--token", reader)
        assert st == 0, (st, out, err)
        assert json.loads(out)["points"] == api(srv, cert, "GET", series_path, token=reader)[1]["points"]

        # Refusals: exit 2, the server's error object on stderr as the API gives it.
        wrong = "not-a-token-of-this-server"
        cases = [  # (CLI options, env, the API call's token, method, path, body, status, code)
            ([], {}, None, "GET", "/v1/monitors/note", None, 401, "unauthorized"),
            (["--token", wrong], {}, wrong, "GET", "/v1/monitors/note", None, 401, "unauthorized"),
            (["--token", reader], {}, reader, "DELETE", "/v1/monitors/note", None, 403, "forbidden"),
            (["--token", user], {}, user, "DELETE", "/v1/monitors/note", None, 403, "forbidden"),
            ([], {"MASKLOSS_TOKEN": reader}, reader, "POST", "/v1/monitors/note/observe",
             NOTE_TENSORS, 403, "forbidden"),
        ]
        for opts, env, token, method, path, body, status, code in cases:
            argv = {"GET": ["show", "note"], "DELETE": ["delete", "note"],
                    "POST": ["observe", "note", "-"]}[method]
            st, out, err = run(*argv, *opts, env=env,
                               stdin=json.dumps(body).encode() if body else None)
            api_status, api_body = api(srv, cert, method, path, body, token)
            assert api_status == status and api_body["code"] == code, (api_status, api_body)
            assert st == 2 and out == "", (opts, st, out, err)
            assert error_object(err) == api_body, (opts, err, api_body)
            # Without a token, how to give one; with one, nothing more.
            assert ("--token, --token-file or $MASKLOSS_TOKEN" in err) == (token is None), err
        assert "scope admin" in error_object(run("delete", "note", "--token", user)[2])["error"]

        # The option wins over the environment, either way round.
        st, out, err = run("show", "note", "--token", reader, env={"MASKLOSS_TOKEN": wrong})
        assert st == 0 and json.loads(out)["name"] == "note", (st, err)
        st, out, err = run("show", "note", "--token", wrong, env={"MASKLOSS_TOKEN": reader})
        assert st == 2 and error_object(err)["code"] == "unauthorized", (st, err)
        st, out, err = run("show", "note", "--token-file", token_file, env={"MASKLOSS_TOKEN": wrong})
        assert st == 0, (st, err)

        # --token-file from a pipe (as `--token-file <(pass show maskloss)` gives it).
        rfd, wfd = os.pipe()
        os.write(wfd, reader.encode() + b"\n")
        os.close(wfd)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MASKLOSS_")}
        p = subprocess.run([args.cli, "monitor", "show", "note", "--server", url, "--cacert", cert,
                            "--token-file", f"/dev/fd/{rfd}"], pass_fds=[rfd], env=environ,
                           capture_output=True, text=True, timeout=60)
        os.close(rfd)
        run.seen.append(p.stdout + p.stderr)
        assert p.returncode == 0 and json.loads(p.stdout)["name"] == "note", (p.returncode, p.stderr)

        # Tokens that cannot travel in a header: exit 64, naming where it came from, not it.
        bad_file = os.path.join(tmp, "two-lines")
        with open(bad_file, "w") as f:
            f.write(f"{user}\nSECRET-LINE-2\n")
        for opts, env, words in [
            (["--token", "SECRET-A b"], {}, "--token: the token holds a space"),
            ([], {"MASKLOSS_TOKEN": "SECRET-B\r\nX-Admin: 1"}, "$MASKLOSS_TOKEN: the token holds"),
            (["--token", "SECRET-C\u00e9"], {}, "outside printable ASCII"),
            (["--token", "S" * 257], {}, "over 256 bytes"),
            (["--token-file", bad_file], {}, f"--token-file {bad_file}: the token holds"),
            (["--token", user, "--token-file", token_file], {}, "give --token or --token-file"),
        ]:
            st, out, err = run("show", "note", *opts, env=env)
            assert st == 64 and out == "" and words in err, (opts, st, err)
        missing = os.path.join(tmp, "absent")
        st, out, err = run("show", "note", "--token-file", missing)
        assert st == 1 and f"--token-file {missing}: cannot read it: No such file" in err, (st, err)

        st, out, err = run("delete", "note", "--token", admin)
        assert st == 0 and out == "", (st, out, err)
        run.none_shows(user, reader, admin, "SECRET")
        # nor does the server's log
        log = srv.log()
        assert all(t not in log for t in (user, reader, admin)), "a token in the server's log"
        stop_clean(srv)
    print(f"    {len(run.seen)} runs of the CLI; exit 2 with the API's 401/403 objects, 64 for "
          "tokens that cannot be sent; none printed a token")


@test
def cli_auth_https(args):
    """https:// with --cacert or MASKLOSS_CACERT; without, or with another certificate: exit
    3, "certificate not trusted (issuer unknown): pass --cacert"; a --cacert that cannot be
    read or holds no certificate: exit 1; --cacert with http://: exit 64; plain HTTP to the
    TLS port and TLS to a plain port: exit 3 at once, saying so; a port closed: refused."""
    with tempfile.TemporaryDirectory() as tmp, shared_server(args) as (srv, url, cert, tokens):
        reader = tokens["reader"]
        run = Outputs(args, ["--token", reader, "--timeout", "20"])
        st, out, err = run("list", "--server", url, "--cacert", cert)
        assert st == 0 and json.loads(out) == api(srv, cert, "GET", "/v1/monitors", token=reader)[1]
        st, out, err = run("list", "--server", f"https://127.0.0.1:{srv.port}",
                           env={"MASKLOSS_CACERT": cert})
        assert st == 0 and "monitors" in json.loads(out), (st, err)

        other, _ = make_cert(tmp, "other")
        for opts, env in [([], {}), (["--cacert", other], {}), ([], {"MASKLOSS_CACERT": other})]:
            st, out, err = run("list", "--server", url, *opts, env=env)
            assert st == 3 and out == "", (opts, st, out, err)
            assert err == (f"maskloss monitor: localhost:{srv.port}: certificate not trusted "
                           "(issuer unknown): pass --cacert FILE, the PEM certificate of the CA "
                           "that signed it (or the server's own, if self-signed)\n"), err

        junk = os.path.join(tmp, "junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        _, key = make_cert(tmp, "k")
        for path, words in [(os.path.join(tmp, "absent.pem"), "cannot read it: No such file"),
                            (junk, "no PEM certificate"), (key, "no PEM certificate"),
                            (tmp, "cannot read it")]:
            st, out, err = run("list", "--server", url, "--cacert", path)
            assert st == 1 and f"--cacert {path}: " in err and words in err, (path, st, err)
        st, out, err = run("list", "--server", f"http://127.0.0.1:{srv.port}", "--cacert", cert)
        assert st == 64 and "--cacert is for https://" in err, (st, err)

        # Plain HTTP to the TLS port: closed without an answer (the subprocess timeout is the
        # guard against a hang).
        st, out, err = run("list", "--server", f"http://127.0.0.1:{srv.port}", timeout=30)
        assert st == 3 and "closed the connection without answering (an https:// server?" in err, \
            (st, err)
        with Server(args.server) as plain:
            st, out, err = run("list", "--server", f"https://127.0.0.1:{plain.port}", "--cacert",
                               cert, timeout=30)
            assert st == 3 and f"TLS handshake with 127.0.0.1:{plain.port} failed" in err, (st, err)
            assert "does it serve HTTPS on that port?" in err, err
            stop_clean(plain)
        port = free_port()
        st, out, err = run("list", "--server", f"https://127.0.0.1:{port}", "--cacert", cert)
        assert st == 3 and err == f"maskloss monitor: cannot connect to 127.0.0.1:{port}: " \
                                  "Connection refused\n", (st, err)
        # The server served on through all of it.
        st, out, err = run("list", "--server", url, "--cacert", cert)
        assert st == 0, (st, err)
        run.none_shows(reader)
        stop_clean(srv)


def cert_for_localhost_only(tmp):
    """A self-signed certificate whose subjectAltName is DNS:localhost alone; its common name
    is 127.0.0.1, which must not count (RFC 6125: an address matches an iPAddress SAN only)."""
    cert, key = os.path.join(tmp, "named.pem"), os.path.join(tmp, "named.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=DNS:localhost"], check=True, capture_output=True, timeout=60)
    return cert, key


@test
def cli_auth_host_name(args):
    """A trusted certificate for localhost only: https://localhost works; https://127.0.0.1
    (an address it does not list) is refused with exit 3, naming what it is for, before any
    request is sent."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = cert_for_localhost_only(tmp)
        path = os.path.join(tmp, "tokens")
        from tests_auth import new_token
        reader = new_token(args, path, "reader", "monitor:read")
        with Server(args.server, "--tls-cert", cert, "--tls-key", key, "--auth-file", path,
                    "--access-log") as srv:
            run = Outputs(args, ["--cacert", cert, "--token", reader])
            st, out, err = run("list", "--server", f"https://localhost:{srv.port}")
            assert st == 0 and json.loads(out) == {"monitors": []}, (st, out, err)
            st, out, err = run("list", "--server", f"https://127.0.0.1:{srv.port}")
            assert st == 3 and out == "", (st, out, err)
            assert err == (f"maskloss monitor: 127.0.0.1:{srv.port}: host name mismatch: the "
                           "certificate is not for 127.0.0.1 (it names localhost); connect by a "
                           "name it names\n"), err
            run.none_shows(reader)
            time.sleep(0.5)
            # One request reached the server, the first.
            assert srv.log().count("/v1/monitors") == 1, srv.log()[-2000:]
            stop_clean(srv)


@test
def cli_auth_tls_versions(args):
    """The CLI speaks TLS 1.2 and 1.3 and refuses 1.1: against openssl s_server limited to
    each (shown able to agree on TLS 1.1 with openssl's own client first)."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        for flag, works in (("-tls1_2", True), ("-tls1_3", True), ("-tls1_1", False)):
            port = free_port()
            server = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", cert,
                                       "-key", key, flag, "-cipher", "DEFAULT@SECLEVEL=0", "-www"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                for _ in range(50):  # until it listens
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                if flag == "-tls1_1":
                    assert old_tls_client(port, cert, flag) == "TLSv1.1", "the control failed"
                st, out, err = cli(args, "list", "--server", f"https://127.0.0.1:{port}",
                                   "--cacert", cert, "--timeout", "20", timeout=60)
                if works:  # s_server -www answers any GET with its status page
                    assert st == 0 and "s_server" in out, (flag, st, out[:300], err)
                else:
                    assert st == 3 and f"TLS handshake with 127.0.0.1:{port} failed" in err \
                        and "speaks TLS 1.2 and 1.3 only" in err, \
                        (flag, st, err)
            finally:
                server.kill()
                server.wait()


@test
def cli_auth_scripted(args):
    """Against a scripted peer: every command sends "Authorization: Bearer TOKEN" (and none
    without a token); a 429 prints the error object and the Retry-After; an error page that
    quotes the token back is printed with the token replaced."""
    token = "Xq3_0-ZpL9sR2vW8yT1uK4mN7bC6dF5gH0jA2eI9oQw"
    ok = answer(200, b"{}", [("Content-Type", "application/json"), ("Content-Length", 2)])
    commands = [["create", "m", "--config", "-"], ["observe", "m", "-"], ["show", "m"],
                ["series", "m"], ["list"], ["delete", "m"]]
    with Peer([ok] * (len(commands) + 1)) as peer:
        for argv in commands:
            st, out, err = cli(args, *argv, "--server", peer.url, "--token", token, stdin=b"{}")
            assert st == 0, (argv, st, err)
        st, out, err = cli(args, "list", "--server", peer.url)
        assert st == 0, (st, err)
        for (lines, _), argv in zip(peer.requests, commands):
            assert [h for h in lines if h.lower().startswith("authorization")] == \
                [f"Authorization: Bearer {token}"], (argv, lines)
        assert not any(h.lower().startswith("authorization") for h in peer.requests[-1][0])

    limited = b'{"error":"token ci is over its rate limit","code":"too_many_requests","field":null}'
    echo = f"<html>401: bad credentials Bearer {token}</html>".encode()
    with Peer([answer(429, limited, [("Content-Type", "application/json"), ("Retry-After", 7),
                                     ("Content-Length", len(limited))]),
               answer(401, echo, [("Content-Type", "text/html"), ("Content-Length", len(echo))]),
               ]) as peer:
        st, out, err = cli(args, "show", "m", "--server", peer.url, "--token", token)
        assert st == 2 and out == "", (st, out, err)
        assert err == limited.decode() + "\nmaskloss monitor: the server asks to retry after 7 s\n", err
        st, out, err = cli(args, "show", "m", "--server", peer.url, "--token", token)
        assert st == 2 and token not in err, (st, err)
        assert err == "maskloss monitor: HTTP 401: <html>401: bad credentials Bearer <token></html>\n", err


@test
def cli_auth_rate_limited(args):
    """A real 429 (--rate-limit): the second request of a token over its quota prints the
    server's too_many_requests object and its Retry-After, exit 2."""
    help_text = subprocess.run([args.server, "--help"], capture_output=True, text=True).stdout
    if "--rate-limit" not in help_text:
        print("    skipped: this server has no --rate-limit")
        return
    with shared_server(args, "--rate-limit", "0.001", "--rate-burst", "1") as (srv, url, cert, tokens):
        base = ["--server", url, "--cacert", cert, "--token", tokens["reader"]]
        st, out, err = cli(args, "list", *base)
        assert st == 0, (st, err)
        st, out, err = cli(args, "list", *base)
        assert st == 2 and out == "", (st, out, err)
        assert error_object(err)["code"] == "too_many_requests", err
        lines = err.splitlines()
        assert len(lines) == 2 and lines[1].startswith("maskloss monitor: the server asks to "
                                                       "retry after ") and lines[1].endswith(" s"), err
        assert tokens["reader"] not in err
        stop_clean(srv)
