"""End-to-end tests of HTTPS (--tls-cert, --tls-key): a throwaway certificate made here with
openssl; clients that trust it (Python's ssl, curl) get the note's loss, one that does not is
refused, TLS below 1.2 is refused, plain HTTP on the TLS port is closed without harm (and
counted, not logged), and tokens work over it."""
import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile

import contract
from common import JSON, NOTE, NOTE_LOSS, metric_value, stop_clean, test, wait_until
from server import Server, checked, exchange
from tests_hardening import recv_all


def make_cert(tmp, name="localhost"):
    """A self-signed P-256 certificate for localhost and 127.0.0.1: (cert path, key path)."""
    cert, key = os.path.join(tmp, f"{name}.pem"), os.path.join(tmp, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def tls_conn(srv, cafile, **kw):
    ctx = ssl.create_default_context(cafile=cafile)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=30)


@test
def tls_basics(args):
    """Over HTTPS, the note's example on one kept-alive connection (Python's ssl, trusting the
    certificate) and with curl --cacert; a client that does not trust it is refused (Python:
    certificate verify failed; curl: exit 60); the banner says https."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        with Server(args.server, "--tls-cert", cert, "--tls-key", key) as srv:
            assert "https://" in srv.banner, srv.banner
            conn = tls_conn(srv, cert)
            for _ in range(3):
                st, _, ans = exchange(conn, "POST", "/v1/loss", NOTE, JSON)
                assert st == 200 and abs(ans["loss"] - NOTE_LOSS) <= 1e-12 * abs(NOTE_LOSS), (st, ans)
            assert conn.sock.version() in ("TLSv1.2", "TLSv1.3"), conn.sock.version()
            conn.close()
            # (curl -i: its exchange checked against the document, as the relay's are)
            out = subprocess.run(["curl", "-s", "-i", "--cacert", cert, "-H", "Content-Type: application/json",
                                  f"https://127.0.0.1:{srv.port}/v1/loss", "-d", json.dumps(NOTE)],
                                 capture_output=True, timeout=30)
            got = contract.parse_response(out.stdout)
            assert out.returncode == 0 and got and abs(json.loads(got[2])["loss"] - NOTE_LOSS) < 1e-12, out
            checked("POST", "/v1/loss", JSON, json.dumps(NOTE).encode(), *got)
            # No trust: refused by the client, and the server goes on.
            try:
                http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=30,
                                            context=ssl.create_default_context()).request("GET", "/healthz")
                raise AssertionError("a client that does not trust the certificate was not refused")
            except ssl.SSLCertVerificationError as e:
                assert "certificate verify failed" in str(e), e
            out = subprocess.run(["curl", "-s", f"https://127.0.0.1:{srv.port}/healthz"],
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 60, out
            conn = tls_conn(srv, cert)
            assert exchange(conn, "GET", "/readyz")[0] == 200
            conn.close()
            stop_clean(srv)


def old_tls_client(port, cafile, flag):
    """openssl s_client offering only TLS 1.1 (-tls1_1) or 1.0 (-tls1), allowed to (security
    level 0): the protocol it agreed on, or None."""
    out = subprocess.run(["openssl", "s_client", flag, "-cipher", "DEFAULT@SECLEVEL=0",
                          "-connect", f"127.0.0.1:{port}", "-CAfile", cafile],
                         input="", capture_output=True, text=True, timeout=30)
    for line in out.stdout.splitlines():
        if line.strip().startswith("Protocol  :") and out.returncode == 0:
            return line.split(":", 1)[1].strip()
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@test
def tls_versions(args):
    """TLS 1.2 and 1.3 are taken; TLS 1.1 and 1.0 are refused by the server. The old client is
    shown able to agree on them first, with openssl s_server allowing them (else the refusal
    could be the client's own)."""
    import time
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        for flag, proto in (("-tls1_1", "TLSv1.1"), ("-tls1", "TLSv1")):
            port = free_port()
            control = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", cert,
                                        "-key", key, flag, "-cipher", "DEFAULT@SECLEVEL=0", "-www"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                got = None
                for _ in range(50):
                    got = old_tls_client(port, cert, flag)
                    if got:
                        break
                    time.sleep(0.1)
                assert got == proto, f"the control: openssl s_client {flag} agreed on {got}"
            finally:
                control.kill()
                control.wait()
        with Server(args.server, "--tls-cert", cert, "--tls-key", key) as srv:
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                conn = tls_conn(srv, cert, minimum_version=version, maximum_version=version)
                assert exchange(conn, "GET", "/healthz")[0] == 200
                assert conn.sock.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                               ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
                conn.close()
            for flag in ("-tls1_1", "-tls1"):
                got = old_tls_client(srv.port, cert, flag)
                assert got is None, f"maskloss-server agreed on {got} with s_client {flag}"
            conn = tls_conn(srv, cert)
            assert exchange(conn, "GET", "/healthz")[0] == 200
            conn.close()
            stop_clean(srv)


@test
def tls_plain_http_on_tls_port(args):
    """Plain HTTP sent to the TLS port: the connection is closed, no HTTP answer in clear, and
    the server keeps serving HTTPS."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        with Server(args.server, "--tls-cert", cert, "--tls-key", key) as srv:
            for data in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                         b"POST /v1/loss HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{}{}{",
                         b"\x16\x03\x01\x00\x05hello", b"\x00" * 100):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=3)
                s.sendall(data)
                got, _ = recv_all(s, timeout=3)
                s.close()
                assert b"HTTP/1." not in got, got[:200]
            # Connections that close without a word (a TCP probe, the image's HEALTHCHECK).
            for _ in range(3):
                socket.create_connection(("127.0.0.1", srv.port), timeout=3).close()
            assert srv.proc.poll() is None
            conn = tls_conn(srv, cert)
            assert exchange(conn, "POST", "/v1/loss", NOTE, JSON)[0] == 200
            # Each of the 7 failed handshakes counted, none logged (libmicrohttpd's line for them
            # names neither peer nor cause); the good one not counted.
            failed = lambda: metric_value(exchange(conn, "GET", "/metrics")[2],
                                          "maskloss_tls_handshake_failures_total")
            assert wait_until(lambda: failed() == 7), failed()
            conn.close()
            stop_clean(srv)
            assert "handshake" not in srv.log(), srv.log()


@test
def tls_start_errors(args):
    """--tls-cert without --tls-key (or the reverse), a missing file or one that is not PEM:
    exit 64 naming it; a key that does not match the certificate: no start, and stderr says
    why."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MASKLOSS_")}

    def start(*argv):
        p = subprocess.run([args.server, "--port", "0", "--state", ":memory:", *argv],
                           capture_output=True, text=True, timeout=30, env=environ)
        return p.returncode, p.stderr

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        cert2, key2 = make_cert(tmp, "other")
        rc, err = start("--tls-cert", cert)
        assert rc == 64 and "--tls-key" in err and "together" in err, (rc, err)
        rc, err = start("--tls-key", key)
        assert rc == 64 and "--tls-cert" in err, (rc, err)
        rc, err = start("--tls-cert", os.path.join(tmp, "absent.pem"), "--tls-key", key)
        assert rc == 64 and "absent.pem" in err and "No such file" in err, (rc, err)
        junk = os.path.join(tmp, "junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        rc, err = start("--tls-cert", junk, "--tls-key", key)
        assert rc == 64 and "not PEM" in err, (rc, err)
        rc, err = start("--tls-cert", cert, "--tls-key", key2)
        assert rc != 0 and "--tls-cert" in err, (rc, err)


@test
def tls_with_tokens(args):
    """Tokens over HTTPS: 401 without one, 200 with it."""
    import tests_auth
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        path = os.path.join(tmp, "tokens")
        token = tests_auth.new_token(args, path, "ci", "evaluate")
        with Server(args.server, "--tls-cert", cert, "--tls-key", key, "--auth-file", path,
                    "--bind", "0.0.0.0") as srv:
            conn = tls_conn(srv, cert)
            st, h, b = exchange(conn, "POST", "/v1/loss", NOTE, JSON)
            assert st == 401 and h.get("www-authenticate", "").startswith("Bearer"), (st, h, b)
            conn.close()
            conn = tls_conn(srv, cert)
            st, _, b = exchange(conn, "POST", "/v1/loss", NOTE, dict(JSON, Authorization=f"Bearer {token}"))
            assert st == 200 and abs(b["loss"] - NOTE_LOSS) < 1e-12, (st, b)
            conn.close()
            stop_clean(srv)
