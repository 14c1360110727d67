"""`maskloss monitor` (the CLI's HTTP client, cli/http_client.c) and the Python client's
monitor API, end to end.

Two parts: the CLI against a scripted HTTP peer (the framings the server may use or a proxy
may add, the bounds, the failures and their exit statuses), then the CLI and
clients/python/maskloss_client.py against the real server, checked against the server's own
GET and against the note's 4x5 example computed here (common.NOTE_LOSS, math.fsum of the
formula) and in the README (0.5375321135555567). Last, docker/prometheus/maskloss.rules.yml
evaluated by promtool on the counters that two such servers export."""
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import contract
from common import NOTE, NOTE_LOSS, ROOT, ref, stop_clean, test
from server import PORTS, TLS_FILES, Server, recorded

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

README_NOTE_LOSS = 0.5375321135555567  # the README's value of the note's example (float64)
NOTE_TENSORS = {k: NOTE[k] for k in ("labels", "logits", "mask")}


def cli(args, *argv, stdin=None, env=None, timeout=60):
    """Runs `maskloss monitor ARGV...`: (exit status, stdout, stderr). Its traffic with a server
    of the test's (--server http[s]://127.0.0.1|localhost:PORT) goes through a server.Recorder
    and is checked against the document; what it prints names the server's port, not the
    relay's."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MASKLOSS_")}
    environ.update(env or {})
    argv = list(argv)
    i = argv.index("--server") + 1 if "--server" in argv[:-1] else None
    m = i and re.fullmatch(r"(https?)://(127\.0\.0\.1|localhost):([0-9]+)(/.*)?", argv[i])
    port = m and int(m.group(3))
    relay = m and contract.ACTIVE and port in PORTS and (m.group(1) == "https") == (port in TLS_FILES)
    with recorded(port, 0) if relay else contextlib.nullcontext() as rec:
        if rec is not None:
            argv[i] = f"{m.group(1)}://{m.group(2)}:{rec.port}{m.group(4) or ''}"
        p = subprocess.run([args.cli, "monitor", *argv], input=stdin, capture_output=True,
                           env=environ, timeout=timeout)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    if rec is not None:
        assert rec.checked >= 1 or p.returncode != 0, (argv, "no exchange recorded")
        out, err = (re.sub(rf":{rec.port}(?![0-9])", f":{port}", x) for x in (out, err))
    return p.returncode, out, err


# ---- A scripted HTTP peer -------------------------------------------------------------------


class Peer:
    """Listens on a free port of 127.0.0.1; each connection gets the next scripted answer
    (bytes; None: accept, read the request, then stay silent until the test ends). Records the
    requests: (request line and header lines, body)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_request(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return lines, body

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set() and self.answers:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(10)
                self.requests.append(self._read_request(conn))
                answer = self.answers.pop(0)
                if answer is None:
                    self.stop.wait(30)
                    continue
                # The client may close early (an answer over its bounds): nothing to report.
                with contextlib.suppress(OSError):
                    conn.sendall(answer)
                    conn.shutdown(socket.SHUT_WR)
                    # Wait for the client's close, so that nothing resets the connection early.
                    while conn.recv(65536):
                        pass

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


def answer(status, body=b"", headers=(), reason="X"):
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode() + b"\r\n" + body


ERROR = b'{"error":"no monitor named ctr","code":"monitor_not_found","field":"name"}'


@test
def cli_monitor_http_framing(args):
    """The CLI reads a body by Content-Length, chunked framing (with extensions and trailers)
    and up to the close, skips a 100 Continue, and sends what the contract says."""
    figures = json.dumps({"name": "ctr", "total": {"loss": 0.1, "per_class": []},
                          "windows": {}}, separators=(",", ":")).encode()
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (figures[:7], figures[7:]))
    chunked += b"0\r\nX-Trailer: 1\r\n\r\n"
    answers = [
        answer(200, figures, [("Content-Type", "application/json"),
                              ("Content-Length", len(figures))]),
        answer(200, chunked, [("Content-Type", "application/json"),
                              ("Transfer-Encoding", "chunked")]),
        answer(200, figures, [("Content-Type", "application/json")]),  # ends at the close
        b"HTTP/1.1 100 Continue\r\n\r\n" + answer(200, figures, [
            ("Content-Type", "application/json"), ("Content-Length", len(figures))]),
    ]
    with Peer(answers) as peer:
        for i in range(len(answers)):
            st, out, err = cli(args, "show", "ctr", "--server", peer.url + "/")
            assert st == 0, (i, st, err)
            # Indented, numbers as the server wrote them (0.1, not 0.10000000000000001).
            assert out == ('{\n  "name": "ctr",\n  "total": {\n    "loss": 0.1,\n'
                           '    "per_class": []\n  },\n  "windows": {}\n}\n'), (i, out)
            assert json.loads(out) == json.loads(figures)
        lines, body = peer.requests[0]
        assert lines[0] == "GET /v1/monitors/ctr HTTP/1.1", lines
        assert f"Host: 127.0.0.1:{peer.port}" in lines and body == b"", lines

    # observe: the file's tensors with --time, --slice and --id added (replacing the file's
    # own), POSTed with Content-Length; the name percent-encoded; a path prefix kept;
    # MASKLOSS_SERVER read.
    reply = b'{"monitor":"a b","loss":0.5,"duplicate":false}'
    with Peer([answer(200, reply, [("Content-Type", "application/json"),
                                   ("Content-Length", len(reply))])] * 2) as peer:
        request = dict(NOTE_TENSORS, time=1, id="old")
        st, out, err = cli(args, "observe", "a b", "--time", "2026-12-01T09:00:00Z", "--slice",
                           "model_version=7", "--slice", "region=eu=west", "--id", "k1", "-",
                           stdin=json.dumps(request).encode(),
                           env={"MASKLOSS_SERVER": peer.url + "/prefix"})
        assert st == 0 and out == reply.decode() + "\n", (st, out, err)
        lines, body = peer.requests[0]
        assert lines[0] == "POST /prefix/v1/monitors/a%20b/observe HTTP/1.1", lines
        assert f"Content-Length: {len(body)}" in lines, lines
        assert "Content-Type: application/json" in lines, lines
        sent = json.loads(body)
        assert sent == dict(NOTE_TENSORS, time="2026-12-01T09:00:00Z", id="k1",
                            slice={"model_version": "7", "region": "eu=west"}), sent
        # A number is Unix seconds; without options the file goes byte for byte.
        tmp = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
        tmp.write(b'{"labels": [1], "logits": [0.1]}')
        tmp.close()
        try:
            st, out, err = cli(args, "observe", "c", "--server", peer.url, tmp.name)
        finally:
            os.unlink(tmp.name)
        assert st == 0, err
        assert peer.requests[1][1] == b'{"labels": [1], "logits": [0.1]}', peer.requests[1]

    # series: the query, percent-encoded; create: PUT with ?force=true; delete: 204, no output.
    ok = answer(200, b"{}", [("Content-Type", "application/json"), ("Content-Length", 2)])
    with Peer([ok, ok, answer(204), ok]) as peer:
        st, out, err = cli(args, "series", "ctr", "--server", peer.url, "--step", "5m",
                           "--from", "2026-12-01T09:00:00+01:00", "--to", "1764579600",
                           "--slice", "model_version=7", "--class", "dog cat")
        assert st == 0 and out == "{}\n", (st, out, err)
        assert peer.requests[0][0][0] == (
            "GET /v1/monitors/ctr/series?step=5m&from=2026-12-01T09%3A00%3A00%2B01%3A00"
            "&to=1764579600&slice=model_version%3D7&class=dog%20cat HTTP/1.1"), peer.requests[0]
        config = b'{"loss": "sigmoid_cross_entropy"}'
        st, out, err = cli(args, "create", "ctr", "--config", "-", "--force", "--server",
                           peer.url, stdin=config)
        assert st == 0 and out == "{}\n", (st, out, err)
        assert peer.requests[1][0][0] == "PUT /v1/monitors/ctr?force=true HTTP/1.1"
        assert peer.requests[1][1] == config
        st, out, err = cli(args, "delete", "ctr", "--server", peer.url)
        assert st == 0 and out == "" and err == "", (st, out, err)
        assert peer.requests[2][0][0] == "DELETE /v1/monitors/ctr HTTP/1.1"
        st, out, err = cli(args, "list", "--server", peer.url)
        assert st == 0 and peer.requests[3][0][0] == "GET /v1/monitors HTTP/1.1"
    print("    Content-Length, chunked, close-delimited, 100 Continue; observe/series/create/"
          "delete/list requests")


@test
def cli_monitor_failures(args):
    """Exit 2 with the error object on stderr for an HTTP error; 3 when the server cannot be
    reached or its answer cannot be read (bounded before allocation); 64 for usage; 1 for a
    local failure."""
    err_answer = answer(404, ERROR, [("Content-Type", "application/json"),
                                     ("Content-Length", len(ERROR))], "Not Found")
    cases = [
        (err_answer, 2, ERROR.decode() + "\n"),
        (answer(502, b"<html>bad gateway</html>", [("Content-Type", "text/html"),
                                                   ("Content-Length", 24)]),
         2, "maskloss monitor: HTTP 502: <html>bad gateway</html>\n"),
        (answer(200, b"", [("Content-Length", "99999999999999999999999")]), 3,
         "announced a body of 99999999999999999999999 bytes, over the limit"),
        (answer(200, b"fff\r\n", [("Transfer-Encoding", "chunked")]), 3,
         "closed the connection before the answer was complete"),
        (answer(200, b"ffffffffffffffffffff\r\n", [("Transfer-Encoding", "chunked")]), 3,
         "over the limit of"),
        (answer(200, b"zz\r\n", [("Transfer-Encoding", "chunked")]), 3, "a bad chunk size"),
        (answer(200, b"{}", [("Content-Length", 5)]), 3,
         "closed the connection before the answer was complete"),
        (answer(200, b"", [("Content-Length", "2, 3")]), 3, "Content-Length values that differ"),
        (answer(200, b"", [("Transfer-Encoding", "gzip")]), 3, "Transfer-Encoding 'gzip'"),
        (b"SSH-2.0-OpenSSH\r\n", 3, "malformed answer: no HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 3, "header line over 8192"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 20000 + b"\r\n", 3, "header over 65536"),
        (None, 3, "did not answer within 1 s"),
    ]
    with Peer([c[0] for c in cases]) as peer:
        for i, (_, status, text) in enumerate(cases):
            # 1 s for the silent peer; the others answer at once, whatever the machine's load.
            wait = "1" if cases[i][0] is None else "20"
            st, out, err = cli(args, "show", "ctr", "--server", peer.url, "--timeout", wait)
            assert st == status and out == "", (i, st, out, err)
            assert (err == text) if text.endswith("\n") else (text in err), (i, err)
            if status == 3:
                assert err.startswith(f"maskloss monitor: 127.0.0.1:{peer.port} ") or \
                    "cannot" in err, err
    # Nothing listens on a port just closed.
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    st, out, err = cli(args, "list", "--server", f"127.0.0.1:{port}")
    assert st == 3 and err == f"maskloss monitor: cannot connect to 127.0.0.1:{port}: " \
                              "Connection refused\n", (st, err)
    st, out, err = cli(args, "list", "--server", "http://no-such-host.invalid")
    assert st == 3 and "cannot resolve no-such-host.invalid" in err, (st, err)
    for argv, words in [(["show"], "needs the monitor's NAME"),
                        (["show", "a", "b"], "unexpected argument 'b'"),
                        (["observe", "a", "--config", "x"], "--config does not apply"),
                        (["create", "a"], "needs --config"),
                        (["frob"], "unknown command 'frob'"),
                        (["list", "--server", "ftp://h"], "must start with http:// or https://"),
                        (["list", "--server", "http://h:0"], "port must be a number"),
                        (["list", "--timeout", "0"], "--timeout takes seconds"),
                        (["observe", "a", "--slice", "novalue"], "--slice takes KEY=VALUE"),
                        ([], "usage: maskloss monitor")]:
        st, out, err = cli(args, *argv)
        assert st == 64 and words in err and out == "", (argv, st, out, err)
    st, out, err = cli(args, "--help")
    assert st == 0 and "Exit status" in out, (st, out)
    st, out, err = cli(args, "observe", "a", "/no/such/file.json", "--server", "127.0.0.1:1")
    assert st == 1 and "cannot open /no/such/file.json" in err, (st, err)
    st, out, err = cli(args, "observe", "a", "--id", "x", "-", "--server", "127.0.0.1:1",
                       stdin=b"[1, 2]")
    assert st == 1 and "must be a JSON object" in err, (st, err)
    print("    exit 2 (error object on stderr), 3 (refused, unresolved, timeout, malformed, "
          "over the bounds), 64, 1")


# ---- Against the server -------------------------------------------------------------------


@contextlib.contextmanager
def monitor_server(args):
    d = tempfile.mkdtemp(prefix="maskloss-cli-mon-")
    try:
        with Server(args.server, "--state", os.path.join(d, "state.db")) as srv:
            yield srv
            stop_clean(srv)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def note_figures_ok(f, loss_rtol=1e-12):
    """f (a figures object or an observe answer) holds the note's example once, observed
    under SUM_BY_NONZERO_WEIGHTS: 9 non-zero weights of 1 out of 20 elements in 4 samples."""
    assert ref.close(f["loss"], NOTE_LOSS, rtol=loss_rtol), (f["loss"], NOTE_LOSS)
    assert ref.close(f["loss"], README_NOTE_LOSS, rtol=loss_rtol), f["loss"]
    assert ref.close(f["weighted_sum"], 9 * NOTE_LOSS, rtol=loss_rtol), f
    assert f["denominator"] == 9 and f["sum_weights"] == 9 and f["num_nonzero_weights"] == 9, f
    assert f["elements"] == 20 and f["samples"] == 4, f


@test
def cli_monitor_server(args):
    """create, observe, show, series, list and delete through the CLI against the server."""
    config = {"loss": "sigmoid_cross_entropy", "dtype": "float64", "slices": ["model_version"]}
    with monitor_server(args) as srv:
        url = f"http://127.0.0.1:{srv.port}"
        st, out, err = cli(args, "create", "note", "--config", "-", "--server", url,
                           stdin=json.dumps(config).encode())
        assert st == 0, (st, out, err)
        created = json.loads(out)
        assert created["name"] == "note" and created["config"]["loss"] == "sigmoid_cross_entropy"
        assert created["config"]["reduction"] == "SUM_BY_NONZERO_WEIGHTS", created
        # The same config again: 200, no change; another one: 409, exit 2.
        st, out, err = cli(args, "create", "note", "--config", "-", "--server", url,
                           stdin=json.dumps(config).encode())
        assert st == 0 and json.loads(out) == created, (st, out, err)
        st, out, err = cli(args, "create", "note", "--config", "-", "--server", url,
                           stdin=json.dumps(dict(config, dtype="float32")).encode())
        assert st == 2 and out == "" and json.loads(err)["code"] == "monitor_conflict", (st, err)

        now = int(time.time())
        note = json.dumps(NOTE_TENSORS).encode()
        st, out, err = cli(args, "observe", "note", "--time", str(now), "--slice",
                           "model_version=7", "--id", "obs-1", "--server", url, stdin=note)
        assert st == 0, (st, out, err)
        obs = json.loads(out)
        note_figures_ok(obs)
        assert obs["monitor"] == "note" and obs["duplicate"] is False, obs
        assert obs["time"] == now and obs["bucket"] == now // 60 * 60, obs
        # The same id again: answered, counted once.
        st, out, err = cli(args, "observe", "note", "--time", str(now), "--slice",
                           "model_version=7", "--id", "obs-1", "--server", url, stdin=note)
        assert st == 0 and json.loads(out)["duplicate"] is True, (st, out, err)
        # A slice key the config does not have: 422 from the server, exit 2.
        st, out, err = cli(args, "observe", "note", "--slice", "region=eu", "--server", url,
                           stdin=note)
        assert st == 2 and out == "", (st, out, err)
        e = json.loads(err)
        assert e["code"] == "invalid_observation" and e["field"] == "slice.region", e

        # show: the CLI's indented JSON is the server's GET, figure for figure.
        st, out, err = cli(args, "show", "note", "--server", url)
        assert st == 0 and out.startswith("{\n  \"name\": \"note\""), (st, out[:200], err)
        shown = json.loads(out)
        got = srv.request("GET", "/v1/monitors/note")[2]
        for key in ("name", "config", "total", "slices"):
            assert shown[key] == got[key], (key, shown[key], got[key])
        note_figures_ok(shown["total"])
        assert shown["total"]["observations"] == 1, shown["total"]
        note_figures_ok(shown["windows"]["5m"])
        note_figures_ok(shown["slices"]["model_version=7"]["total"])

        # series: one point, the minute of the observation.
        st, out, err = cli(args, "series", "note", "--server", url, "--step", "1m",
                           "--from", str(now - 3600), "--to", str(now + 120),
                           "--slice", "model_version=7")
        assert st == 0, (st, out, err)
        series = json.loads(out)
        assert series["step"] == 60 and len(series["points"]) == 1, series
        point = series["points"][0]
        assert point["t"] == now // 60 * 60 and point["observations"] == 1, point
        note_figures_ok(dict(point, samples=4))
        st, out, err = cli(args, "series", "note", "--server", url, "--slice", "model_version=8")
        assert st == 0 and json.loads(out)["points"] == [], (st, out, err)

        st, out, err = cli(args, "list", "--server", url)
        assert st == 0 and [m["name"] for m in json.loads(out)["monitors"]] == ["note"], out
        st, out, err = cli(args, "delete", "note", "--server", url)
        assert st == 0 and out == "", (st, out, err)
        st, out, err = cli(args, "show", "note", "--server", url)
        assert st == 2 and json.loads(err)["code"] == "monitor_not_found", (st, err)
        st, out, err = cli(args, "delete", "note", "--server", url)
        assert st == 2 and json.loads(err)["code"] == "monitor_not_found", (st, err)
    print(f"    the note's example observed through the CLI: {obs['loss']!r} "
          f"(computed here {NOTE_LOSS!r}, README {README_NOTE_LOSS!r})")


def column_loss(j):
    """The masked mean of the note's column j (TF's SUM_BY_NONZERO_WEIGHTS on that class)."""
    terms = [ref.sigmoid_ce(NOTE["labels"][i][j], NOTE["logits"][i][j])
             for i in range(4) if NOTE["mask"][i][j]]
    return sum(terms) / len(terms) if terms else 0.0


@test
def python_client_monitor(args):
    """Client.monitor(name).create / observe / show / series / delete and Client.monitors()."""
    from maskloss_client import Client, MasklossError
    config = {"loss": "sigmoid_cross_entropy", "dtype": "float64", "slices": ["model_version"],
              "classes": ["c0", "c1", "c2", "c3", "c4"]}
    with monitor_server(args) as srv, Client(f"http://127.0.0.1:{srv.port}") as c:
        assert c.monitors() == []
        mon = c.monitor("note")
        created = mon.create(config)
        assert created["name"] == "note" and created["config"]["classes"] == config["classes"]
        assert mon.create(config) == created
        try:
            mon.create(dict(config, dtype="float32"))
            raise AssertionError("no conflict")
        except MasklossError as e:
            assert e.status == 409 and e.code == "monitor_conflict", e
        y = np.array(NOTE["labels"], np.uint8)
        x = np.array(NOTE["logits"], np.float64)
        m = np.array(NOTE["mask"], bool)
        now = time.time()
        # numpy arrays (base64 tensors) and nested lists give the same observation.
        a = mon.observe(labels=y, logits=x, mask=m, time=now, slice={"model_version": "7"},
                        id="py-1")
        note_figures_ok(a)
        assert a["duplicate"] is False and abs(a["time"] - now) < 1e-3, a
        b = mon.observe(labels=NOTE["labels"], logits=NOTE["logits"], weights=NOTE["mask"],
                        time=now, slice={"model_version": "8"})
        assert b["loss"] == a["loss"], (a, b)
        assert mon.observe(labels=y, logits=x, mask=m, time=now, slice={"model_version": "7"},
                           id="py-1")["duplicate"] is True
        try:
            mon.observe(labels=y, logits=x[:, :4], mask=m)
            raise AssertionError("no error")
        except MasklossError as e:
            assert e.status in (400, 422) and e.field in ("logits", "labels"), e

        shown = mon.show()
        got = srv.request("GET", "/v1/monitors/note")[2]
        for key in ("name", "config", "total", "slices"):
            assert shown[key] == got[key], (key, shown[key], got[key])
        total = shown["total"]
        assert total["observations"] == 2, total
        assert ref.close(total["loss"], NOTE_LOSS) and total["num_nonzero_weights"] == 18, total
        # Per class: the masked mean of each column of the note's example, by the formula.
        assert len(total["per_class"]) == 5, total
        for j, (cls, entry) in enumerate(zip(config["classes"], total["per_class"])):
            want = column_loss(j)
            assert entry["class"] == cls, entry
            assert entry["num_nonzero_weights"] == 2 * sum(r[j] for r in NOTE["mask"]), entry
            assert ref.close(entry["loss"], want), (cls, entry, want)
        assert ref.close(shown["slices"]["model_version=8"]["total"]["loss"], NOTE_LOSS)

        series = mon.series(step=60, from_=now - 3600, to=now + 120,
                            slice={"model_version": "7"})
        assert series["step"] == 60 and len(series["points"]) == 1, series
        assert ref.close(series["points"][0]["loss"], NOTE_LOSS), series
        per_class = mon.series(step="1m", class_="c2")
        assert ref.close(per_class["points"][0]["loss"], column_loss(2)), per_class

        assert [m["name"] for m in c.monitors()] == ["note"]
        assert mon.delete() is None and c.monitors() == []
        try:
            mon.show()
            raise AssertionError("no error")
        except MasklossError as e:
            assert e.status == 404 and e.code == "monitor_not_found" and e.field == "name", e
    print("    create / observe (numpy and lists) / show (per class by hand) / series / delete")


@test
def cli_monitor_large_answer(args):
    """An answer over the server's 64 KiB block (sent a block at a time): a monitor of 2000
    named classes, its figures shown by the CLI equal to the server's GET, per class by hand."""
    from maskloss_client import Client
    C = 2000
    classes = [f"class-{j:04d}-" + "x" * 40 for j in range(C)]
    config = {"loss": "sigmoid_cross_entropy", "dtype": "float64", "classes": classes}
    rng = np.random.default_rng(12)
    y = (rng.random((3, C)) < 0.5).astype(np.float64)
    x = np.round(rng.normal(0, 2, (3, C)), 6)
    m = (rng.random((3, C)) < 0.7).astype(np.float64)
    with monitor_server(args) as srv:
        url = f"http://127.0.0.1:{srv.port}"
        st, out, err = cli(args, "create", "wide", "--config", "-", "--server", url,
                           stdin=json.dumps(config).encode())
        assert st == 0, (st, err)
        with Client(url) as c:
            c.monitor("wide").observe(labels=y, logits=x, mask=m)
        st, out, err = cli(args, "show", "wide", "--server", url)
        assert st == 0 and len(out) > 4 * 65536, (st, len(out), err[:500])
        shown_bytes = len(out)
        shown = json.loads(out)
        got = srv.request("GET", "/v1/monitors/wide")[2]
        for key in ("name", "config", "total", "slices"):
            assert shown[key] == got[key], key
        per_class = shown["total"]["per_class"]
        assert [e["class"] for e in per_class] == classes
        for j in (0, 1, 777, C - 1):
            terms = [ref.sigmoid_ce(y[i, j], x[i, j]) for i in range(3) if m[i, j]]
            want = sum(terms) / len(terms) if terms else 0.0
            assert ref.close(per_class[j]["loss"], want), (j, per_class[j], want)
        st, out, err = cli(args, "list", "--server", url)
        assert st == 0 and json.loads(out)["monitors"][0]["config"]["classes"] == classes
    print(f"    {shown_bytes} bytes of figures through the CLI, equal to the server's GET")


@test
def prometheus_rules_on_server_metrics(args):
    """docker/prometheus/maskloss.rules.yml on the counters two real servers export (promtool
    test rules, with the scraped values as the series): the windowed ratio across the replicas
    and slices is the note's masked mean for a TF monitor and torch's mean (÷ all 20 elements)
    for a torch one, and the per-non-zero-weight ratio is the masked mean for both."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus; make deps-test)"
    tf = {"loss": "sigmoid_cross_entropy", "dtype": "float64", "slices": ["model_version"]}
    torch = {"loss": "torch.nn.functional.binary_cross_entropy_with_logits", "dtype": "float64",
             "slices": ["model_version"]}
    # Replica a: the note 3 times in model_version 7; replica b: once in 8, once without a
    # slice (model_version=""): 5 observations of 9 non-zero weights and 20 elements each.
    plan = {"a": ["7", "7", "7"], "b": ["8", None]}
    scraped = {}
    with monitor_server(args) as sa, monitor_server(args) as sb:
        for replica, srv in (("a", sa), ("b", sb)):
            api = f"http://127.0.0.1:{srv.port}"
            for name, config in (("tf", tf), ("torch", torch)):
                st, _, err = cli(args, "create", name, "--config", "-", "--server", api,
                                 stdin=json.dumps(config).encode())
                assert st == 0, err
                for version in plan[replica]:
                    extra = ["--slice", f"model_version={version}"] if version else []
                    st, _, err = cli(args, "observe", name, *extra, "--server", api,
                                     stdin=json.dumps(NOTE_TENSORS).encode())
                    assert st == 0, err
            scraped[replica] = [line for line in srv.metrics()[1].splitlines()
                                if line.startswith("maskloss_monitor_")]
    series = []
    for replica, lines in scraped.items():
        for line in lines:
            m = re.fullmatch(r"(maskloss_monitor_\w+)\{(.*)\} (\S+)", line)
            assert m, line
            # No sample before minute 6, then the scraped value: the increase over [5m, 10m].
            series.append({"series": f'{m.group(1)}{{instance="{replica}",{m.group(2)}}}',
                           "values": f"0+0x5 {m.group(3)}+0x10"})
    assert len(series) == 2 * 3 * 6, scraped  # 2 monitors x 3 slice values x 6 families

    torch_mean = ref.torch_weighted_mean(NOTE["labels"], NOTE["logits"], NOTE["mask"])
    tests = [
        {"expr": f"abs(maskloss:monitor_loss:ratio_rate5m{{monitor='{name}'}} - {want!r})"
                 f" <= bool {want * 1e-12!r}",
         "eval_time": "10m", "exp_samples": [{"labels": f'{{monitor="{name}"}}', "value": 1}]}
        for name, want in (("tf", NOTE_LOSS), ("torch", torch_mean))
    ] + [
        {"expr": f"abs(maskloss:monitor_loss_per_nonzero_weight:ratio_rate5m{{monitor='{name}'}}"
                 f" - {NOTE_LOSS!r}) <= bool {NOTE_LOSS * 1e-12!r}",
         "eval_time": "10m", "exp_samples": [{"labels": f'{{monitor="{name}"}}', "value": 1}]}
        for name in ("tf", "torch")
    ] + [
        {"expr": "maskloss:monitor_nonzero_weights:increase5m", "eval_time": "10m",
         "exp_samples": [{"labels": f'maskloss:monitor_nonzero_weights:increase5m'
                                    f'{{monitor="{name}"}}', "value": 45}
                         for name in ("tf", "torch")]},
    ]
    doc = {"rule_files": [os.path.join(ROOT, "docker", "prometheus", "maskloss.rules.yml")],
           "evaluation_interval": "1m",
           "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}
    d = tempfile.mkdtemp(prefix="maskloss-promtool-")
    try:
        path = os.path.join(d, "scraped.test.yml")
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)  # JSON is YAML
        p = subprocess.run([promtool, "test", "rules", path], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"    the rules on scraped counters: tf {NOTE_LOSS!r}, torch {torch_mean!r}, "
          "per non-zero weight the masked mean for both")
