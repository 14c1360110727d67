"""Start a maskloss-server on a free port and talk HTTP to it (Python standard library only)."""
import contextlib
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref

import contract


# run.py --pg: a tests/e2e/pg.Postgres that every server's monitors go to instead of SQLite.
# Each --state gets a schema of its own (a fresh one for :memory:, the same one for the same
# file path: a restart finds its monitors, as with the file).
PG = None
_pg_schemas = {}


def pg_state(state):
    """The connection string that stands for --state `state` on PG (a schema of its own)."""
    if state in _pg_schemas.values():  # (already one: a test's own replicas of one schema)
        return state
    key = None if state == ":memory:" else os.path.abspath(state)
    if key is not None and key in _pg_schemas:
        return _pg_schemas[key]
    name = f"s{len(_pg_schemas) + 1}_{os.getpid()}_{int(time.monotonic() * 1000) % 100000}"
    PG.psql(f"CREATE SCHEMA {name} AUTHORIZATION maskloss")
    dsn = PG.dsn + f" options='-csearch_path={name}'"
    _pg_schemas[key if key is not None else name] = dsn
    return dsn


def pg_schema(state):
    """The schema that stands for state file `state` on PG."""
    dsn = _pg_schemas[os.path.abspath(state)]
    return re.search(r"search_path=(\w+)", dsn).group(1)


# The ports of the servers this process started: a client's exchanges with them are the
# server's answers, checked (check_python_client); a scripted peer's are not.
PORTS = set()
# Those of them that serve HTTPS: port -> (certificate, key) files (for a TLS Recorder).
TLS_FILES = {}


def _option(args, environ, name, variable):
    """The value of --name V, --name=V or the environment's variable, as the server reads it."""
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a[len(name) + 3:]
    return environ.get(variable)


class Server:
    """One server process. Its stderr goes to a temporary file, kept for failure reports."""

    def __init__(self, binary, *args, env=None, startup_timeout=30):
        self.stderr = tempfile.TemporaryFile()
        self.signalled = False
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MASKLOSS_")}
        environ.update(env or {})
        argv = [binary]
        if not any(a == "--port" or a.startswith("--port=") for a in args) and "MASKLOSS_PORT" not in environ:
            argv += ["--port", "0"]
        # No state file left in the working directory by tests that do not ask for one.
        if not any(a == "--state" or a.startswith("--state=") for a in args) and "MASKLOSS_STATE" not in environ:
            argv += ["--state", ":memory:" if PG is None else pg_state(":memory:")]
        args = list(args)
        for i, a in enumerate(args if PG is not None else []):
            if a == "--state" and i + 1 < len(args):
                args[i + 1] = pg_state(args[i + 1])
            elif a.startswith("--state="):
                args[i] = "--state=" + pg_state(a[len("--state="):])
        argv += args
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr, env=environ)
        self.banner = self._read_line(startup_timeout)
        m = re.search(r"listening on https?://(\S+):(\d+) \((\d+) workers, queue depth (\d+)\)", self.banner)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"no banner from {argv}: {self.banner!r}; stderr: {self.log()[-2000:]}")
        self.port = int(m.group(2))
        PORTS.add(self.port)
        if self.banner.split("listening on ", 1)[1].startswith("https://"):
            TLS_FILES[self.port] = (_option(args, environ, "tls-cert", "MASKLOSS_TLS_CERT"),
                                    _option(args, environ, "tls-key", "MASKLOSS_TLS_KEY"))
        self.workers = int(m.group(3))
        self.queue_depth = int(m.group(4))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Leaves no process behind, whatever the test did."""
        PORTS.discard(self.port)  # (another process may get the port next)
        TLS_FILES.pop(self.port, None)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return False

    def _read_line(self, timeout):
        fd = self.proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace")

    def connect(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """One request on a fresh connection: (status, headers, parsed JSON or text)."""
        conn = self.connect(timeout)
        try:
            return exchange(conn, method, path, body, headers)
        finally:
            conn.close()

    def announce(self, method, path, length, headers=None, timeout=10):
        """Sends only the headers of a request announcing a body of `length` bytes (JSON), and
        returns the answer that comes without it: (status, lower-cased headers, parsed JSON).
        For refusals decided before the body is read."""
        conn = self.connect(timeout)
        try:
            conn.putrequest(method, path)
            for k, v in dict({"Content-Type": "application/json"}, **(headers or {})).items():
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            resp = conn.getresponse()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            data = resp.read()
            payload = json.loads(data)
            if contract.ACTIVE:  # no body was sent: the request is not checked, the answer is
                contract.check(method, path, headers, None, resp.status, hdrs, payload, len(data))
            return resp.status, hdrs, payload
        finally:
            conn.close()

    def send_signal(self, sig=signal.SIGTERM):
        self.signalled = True
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signals the server and returns its exit status (killing it after timeout)."""
        PORTS.discard(self.port)
        TLS_FILES.pop(self.port, None)
        if self.proc.poll() is None and not self.signalled:
            self.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signalled = True
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the server did not exit within {timeout} s of signal {sig}")

    def log(self):
        # pread, not seek and read: the server's stderr is this file's descriptor, its offset
        # shared; moving it back to 0 while the server writes made it write over its own log.
        fd = self.stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def metrics(self):
        status, headers, text = self.request("GET", "/metrics")
        assert status == 200, status
        return headers, text


def exchange(conn, method, path, body=None, headers=None, foreign=None):
    """One request on conn: (status, lower-cased headers, parsed JSON or text). Checked against
    the document while contract.ACTIVE, unless foreign(status, headers, payload) says the answer
    is not the server's (a proxy's own page)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    status, hdrs, payload, _ = read_checked(resp, method, path, headers, body, foreign)
    return status, hdrs, payload


def read_checked(resp, method, path, headers=None, body=None, foreign=None):
    """An http.client response read whole: (status, lower-cased headers, parsed JSON or text,
    the bytes), checked against the document as exchange()'s (for tests that send with
    http.client themselves: putrequest, a chunked body)."""
    data = resp.read()
    hdrs = {k.lower(): v for k, v in resp.getheaders()}
    return (resp.status, hdrs) + checked(method, path, headers, body, resp.status, hdrs, data, foreign)


def checked(method, path, headers, body, status, hdrs, data, foreign=None):
    """(parsed JSON or text, data) of an answer read by any client, checked against the
    document while contract.ACTIVE (tests/e2e/contract.py) unless foreign(status, hdrs,
    payload) says it is not the server's."""
    payload = contract.payload_of(hdrs, data)
    if contract.ACTIVE and not (foreign and foreign(status, hdrs, payload)):
        contract.check(method, path, headers, body, status, hdrs, payload, len(data))
    return payload, data


def check_python_client(client_module):
    """Every exchange of clients/python's Client (maskloss.client, imported from the checkout)
    with a server of PORTS checked against the document while contract.ACTIVE: a hook around
    its one transport method, _request_once (idempotent)."""
    cls = client_module.Client
    once = cls._request_once
    if getattr(once, "checked", False):
        return

    def _request_once(self, method, path, body, headers, resend):
        resp, data = once(self, method, path, body, headers, resend)
        if contract.ACTIVE and self._conn.port in PORTS:
            checked(method, self._base + path, headers, body, resp.status,
                    {k.lower(): v for k, v in resp.getheaders()}, data)
        return resp, data
    _request_once.checked = True
    cls._request_once = _request_once


class Recorder:
    """A TCP relay from a free port of 127.0.0.1 to a server's port that keeps both directions
    of every connection, so that a client run as a subprocess (the CLI) has its traffic checked:
    check() checks each answer against its request, in order on each connection.

    To a server of HTTPS (tls: its certificate and key files) it relays HTTP in TLS at both
    ends: it shows the client the server's own certificate (so a client trusts it, or refuses
    it, as it would the server) and keeps the plaintext. The TLS is then its own, not the
    server's: tests of the server's TLS talk to it directly."""

    def __init__(self, port, tls=None):
        self.target = port
        self.tls = None
        if tls:
            import ssl
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*tls)
            self.upstream_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.upstream_tls.load_verify_locations(tls[0])
            self.upstream_tls.check_hostname = False  # (the server's certificate, checked)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.streams = []  # [bytearray sent by the client, bytearray sent by the server]
        self.threads = []
        self.conns = []  # the sockets of each connection, cut by close()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # (closed)
            if self.tls:
                t = threading.Thread(target=self._tls_relay, args=(client,), daemon=True)
                self.threads.append(t)
                t.start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()  # the server is gone: the client sees its connection closed
                continue
            stream = [bytearray(), bytearray()]
            self.streams.append(stream)
            self.conns.append((client, upstream))
            for a, b, kept in ((client, upstream, stream[0]), (upstream, client, stream[1])):
                t = threading.Thread(target=self._pump, args=(a, b, kept), daemon=True)
                self.threads.append(t)
                t.start()

    @staticmethod
    def _pump(a, b, kept):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                kept += data
                b.sendall(data)
        except OSError:
            pass
        for s, how in ((b, socket.SHUT_WR), (a, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def _tls_relay(self, raw_client):
        """One connection through TLS: the client's handshake with the server's certificate
        (one it refuses ends here, as with the server), then one to the server, then the
        plaintext relayed both ways by one thread (an SSL socket is not for two)."""
        client = None
        try:
            raw_client.settimeout(30)
            client = self.tls.wrap_socket(raw_client, server_side=True, do_handshake_on_connect=False)
            self.conns.append((client,))  # (cut by close() even mid-handshake)
            client.do_handshake()
        except OSError:
            (client or raw_client).close()  # (wrapping took raw_client's descriptor)
            return
        try:
            upstream = self.upstream_tls.wrap_socket(
                socket.create_connection(("127.0.0.1", self.target), timeout=30))
        except OSError:
            client.close()
            return
        stream = [bytearray(), bytearray()]
        self.streams.append(stream)
        self.conns.append((client, upstream))
        ends = {client: (upstream, stream[0]), upstream: (client, stream[1])}
        try:
            while ends:
                ready = [s for s in ends if s.pending()] or select.select(list(ends), [], [], 60)[0]
                if not ready:
                    break  # (60 s idle)
                for a in ready:
                    b, kept = ends[a]
                    data = a.recv(65536)
                    if not data:
                        return
                    kept += data
                    b.sendall(data)
        except (OSError, ValueError):
            pass  # (a reset, or closed by close())
        finally:
            for x in (client, upstream):
                try:
                    x.close()
                except OSError:
                    pass

    def close(self, grace=2.0):
        """Stops accepting; gives the connections still open grace seconds to end (an answer
        on its way), then cuts them (a browser's idle keep-alive ones never end by
        themselves)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
        except OSError:
            pass
        self.sock.close()
        deadline = time.monotonic() + grace
        for t in list(self.threads):
            t.join(max(0.0, deadline - time.monotonic()))
        for pair in list(self.conns):
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        deadline = time.monotonic() + 10
        for t in list(self.threads):
            t.join(max(0.0, deadline - time.monotonic()))
        for pair in list(self.conns):
            for s in pair:
                s.close()

    def check(self):
        """Checks every answer recorded against its request (contract.check_raw); the number.
        A whole answer left over with no request fails it (the split went wrong); requests are
        split by Content-Length (the clients relayed send no chunked body: one that did fails).
        Answers cut short are not checked: no client is waiting for them."""
        n = 0
        for sent_bytes, got in self.streams:
            requests, answers = bytes(sent_bytes), bytes(got)
            while requests and answers:
                head, sep, rest = requests.partition(b"\r\n\r\n")
                assert not re.search(rb"(?im)^transfer-encoding:", head), \
                    "contract: the relay cannot split a chunked request: " + head[:200].decode(errors="replace")
                length = re.search(rb"(?im)^content-length:\s*([0-9]+)\s*$", head)
                size = len(head) + len(sep) + (int(length.group(1)) if length else 0)
                request, requests = requests[:size], requests[size:]
                while answers.startswith(b"HTTP/1.1 1"):  # (100 Continue)
                    answers = answers.partition(b"\r\n\r\n")[2]
                head_only = request.startswith(b"HEAD ")  # (its Content-Length is GET's body's)
                got_one = contract.parse_response(answers, head_only)
                if got_one is None:
                    break
                contract.check_raw(request, answers)
                answers = answers[answers.index(b"\r\n\r\n") + 4 + len(got_one[2]):]
                n += 1
            # (an answer cut short -- a server killed -- cannot be checked; a whole one with no
            # request left means the split went wrong, and would hide the rest)
            assert requests or not answers or contract.parse_response(answers) is None, \
                "contract: an answer recorded with no request left for it: " + answers[:200].decode(errors="replace")
        return n


@contextlib.contextmanager
def recorded(port, at_least=1):
    """A Recorder in front of a server's port, for a client run as a subprocess (curl, the CLI,
    a browser) to use instead (its .port): the exchanges are checked against the document when
    the block ends (their number then in .checked), and must number at least at_least (a
    client that bypassed it fails)."""
    rec = Recorder(port, TLS_FILES.get(port))
    try:
        yield rec
    finally:
        rec.close()
    rec.checked = rec.check()
    assert rec.checked >= at_least, \
        f"contract: {rec.checked} exchanges recorded through the relay, expected at least {at_least}"


_sent = weakref.WeakKeyDictionary()


def send(s, data):
    """s.sendall(data), the bytes kept for sent(s): the request an answer read from the socket
    is checked against (parse_raw(out, sent(s)))."""
    s.sendall(data)
    _sent[s] = _sent.get(s, b"") + data


def sent(s):
    """The bytes send() has sent on s since the last sent(s)."""
    return _sent.pop(s, b"")


def raw(port, data, timeout=10, read=True):
    """Sends raw bytes on a new socket; returns what the server sent before closing or timing out."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return s
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if contract.parse_response(out, data.startswith(b"HEAD ")) is not None:
                break
        parse_raw(out, data)  # (checked against the document)
        return out
    finally:
        if read:
            s.close()


def parse_raw(data, request=None):
    """(status, headers, body) of a complete HTTP response in data, or None if incomplete.
    Given the bytes of the request it answers, checked against the document while
    contract.ACTIVE (contract.check_raw: a malformed request by its status and error body)."""
    if request is not None and contract.ACTIVE:
        contract.check_raw(request, data)
    return contract.parse_response(data, request is not None and request.startswith(b"HEAD "))
