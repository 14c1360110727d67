#!/usr/bin/python3
"""run.py [--build-only | --check-only] [--dir DIR] [--dockerfile FILE] -- docker/Dockerfile
built for real and its runtime stage tried, without a Docker engine (make test-image; root).

Build (--build-only, or first): a Debian bookworm base made with debootstrap from Debian's
mirror and imported under the name the Dockerfile starts from (debian:bookworm-slim), then
`podman build --isolation chroot --format docker` of the Dockerfile -- every stage, RUN and COPY
-- in a podman storage of DIR's own (vfs driver: no overlay mounts; chroot isolation: no user
namespaces or cgroups), so that nothing is cached across runs and nothing else's images are
touched. --format docker keeps HEALTHCHECK, which the OCI format drops.

Check (--check-only, or second): the image's metadata (USER 10001, VOLUME /var/lib/maskloss
with MASKLOSS_STATE in it, EXPOSE of MASKLOSS_PORT, HEALTHCHECK, ENTRYPOINT), then its
filesystem, mounted: no compiler or make and no -dev package (the rootfs's dpkg database),
every library both binaries need found by ldd inside it. Then the server run as the image
runs it -- its ENTRYPOINT and ENV, chroot'ed into the mounted image as uid:gid 10001:10001
(`podman run` cannot set its rlimits in this sandbox), a host directory owned
by 10001 bind-mounted as the state volume -- on a free port (MASKLOSS_PORT) of this host,
and, over HTTP: the note's example against tests/data/golden.json; /readyz, /metrics; the
image's HEALTHCHECK command run inside it (0 while the server answers, not 0 once it is gone);
a monitor created, observed and read back, its state file written in the volume; kill -9,
then a second server on the same volume still has the monitor and its observation (the id
remembered too); SIGTERM with requests accepted and unanswered: each answered 200 with the
right loss, exit 0. A third run with a directory mounted at /etc/maskloss (the documented
paths: tokens, tls/cert.pem, tls/key.pem, read-only): HTTPS with that certificate, 401
without a token and 200 with one. Everything checked is printed, failures too (a server that
cannot start or answer stops the run). Last, the servers are killed, the mounts undone and DIR
removed, the image with it (--keep keeps DIR); on SIGTERM too (.ci/run's time limit). Only a
directory the build made is ever removed: it holds the file .maskloss-image-test (MARKER).
"""
import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TAG = "localhost/maskloss:test"
BASE = "docker.io/library/debian:bookworm-slim"
UID = 10001
VOLUME = "/var/lib/maskloss"
CONF = "/etc/maskloss"  # the documented mount point of the token file and the certificate
T0 = time.monotonic()
# Made first in DIR by the build: cleanup removes no directory without it (--dir is the user's).
MARKER = ".maskloss-image-test"


class Fail(Exception):
    pass


def say(msg):
    print(f"test-image [{time.monotonic() - T0:5.0f} s] {msg}", flush=True)


FAILED = []


def check(cond, what, detail=""):
    """One checked fact, printed; a false one is counted and the run goes on (a server that cannot
    start or answer stops it: Fail)."""
    if not cond:
        FAILED.append(what)
    say(f"ok  {what}" if cond else f"FAIL {what} {detail}".rstrip())


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


class Podman:
    """podman with DIR's own storage: nothing shared with other users of podman here."""

    def __init__(self, d):
        self.base = ["podman", "--root", os.path.join(d, "storage"), "--runroot", os.path.join(d, "run"),
                     "--storage-driver", "vfs"]
        self.env = dict(os.environ, TMPDIR=os.path.join(d, "tmp"))
        os.makedirs(self.env["TMPDIR"], exist_ok=True)

    def __call__(self, *args, **kw):
        return run(self.base + list(args), env=self.env, **kw)

    def out(self, *args):
        return self(*args, capture_output=True, text=True).stdout.strip()


def shown(path):
    rel = os.path.relpath(os.path.abspath(path), ROOT)
    return path if rel.startswith("..") else rel


def build(d, dockerfile):
    podman = Podman(d)
    rootfs = os.path.join(d, "rootfs")
    t = time.monotonic()
    say(f"debootstrap --variant=minbase bookworm (Debian's mirror) into {rootfs}")
    run(["debootstrap", "--variant=minbase", "bookworm", rootfs], stdout=subprocess.DEVNULL)
    say(f"  {time.monotonic() - t:.0f} s; imported as {BASE}")
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    podman("import", "--quiet", "-", BASE, stdin=tar.stdout, stdout=subprocess.DEVNULL)
    if tar.wait():
        raise Fail("tar of the debootstrap rootfs failed")
    shutil.rmtree(rootfs)
    t = time.monotonic()
    say(f"podman build --isolation chroot --format docker -f {shown(dockerfile)}")
    log = os.path.join(d, "build.log")
    with open(log, "w") as f:
        # --layers=false: no layer kept per step, each a whole copy of the filesystem under vfs
        # (the build took 372 s with them, 131 s without, on a loaded 2-core machine).
        r = podman("build", "--isolation", "chroot", "--pull=never", "--format", "docker", "--layers=false",
                   "-f", dockerfile, "-t", TAG, ROOT, stdout=f, stderr=subprocess.STDOUT, check=False)
    if r.returncode:
        with open(log) as f:
            sys.stdout.write(f.read()[-6000:])
        raise Fail(f"podman build failed (exit {r.returncode})")
    say(f"  built {TAG} in {time.monotonic() - t:.0f} s")


# ---- the image's metadata and filesystem -------------------------------------------------------

def image_config(podman):
    info = json.loads(podman.out("image", "inspect", TAG))[0]
    cfg = dict(info.get("Config") or {})
    # (podman shows a docker-format image's HEALTHCHECK beside its Config, not in it)
    cfg.setdefault("Healthcheck", info.get("Healthcheck"))
    env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
    return cfg, env


def check_metadata(cfg, env):
    user = cfg.get("User", "")
    check(user.split(":")[0] == str(UID), f"USER is numeric uid {UID} ({user!r})", "(runAsNonRoot needs a number)")
    check(VOLUME in (cfg.get("Volumes") or {}), f"VOLUME {VOLUME}", str(cfg.get("Volumes")))
    state = env.get("MASKLOSS_STATE", "")
    check(state.startswith(VOLUME + "/"), f"MASKLOSS_STATE={state} is in the volume")
    port = env.get("MASKLOSS_PORT", "")
    check(f"{port}/tcp" in (cfg.get("ExposedPorts") or {}), f"EXPOSE {port} (MASKLOSS_PORT)",
          str(cfg.get("ExposedPorts")))
    hc = (cfg.get("Healthcheck") or {}).get("Test") or []
    check(hc[:1] in (["CMD"], ["CMD-SHELL"]), f"HEALTHCHECK kept (--format docker): {hc[1:2]}...", str(hc))
    check(cfg.get("Entrypoint") == ["/usr/local/bin/maskloss-server"], "ENTRYPOINT is the server",
          str(cfg.get("Entrypoint")))
    check(env.get("MASKLOSS_BIND") == "0.0.0.0", "MASKLOSS_BIND=0.0.0.0")
    check(cfg.get("StopSignal") in ("SIGTERM", "15"), f"STOPSIGNAL {cfg.get('StopSignal')} (the drain)")


def check_filesystem(mnt):
    # Every installed package, from the rootfs's own dpkg database.
    out = run(["dpkg-query", "--admindir", os.path.join(mnt, "var/lib/dpkg"), "-W",
               "-f", "${Package}\t${db:Status-Status}\n"], capture_output=True, text=True).stdout
    pkgs = sorted(p for p, st in (line.split("\t") for line in out.splitlines()) if st == "installed")
    dev = [p for p in pkgs if p.endswith("-dev") or re.sub(r":.*", "", p).endswith("-dev")]
    check(len(pkgs) > 20 and not dev, f"no -dev package among the {len(pkgs)} installed", str(dev))
    tools = re.compile(r"^(gcc|gcc-\d+|cpp|cpp-\d+|g\+\+|clang.*|make|binutils.*|tcc|libc6-dev)$")
    compilers = [p for p in pkgs if tools.match(p)]
    check(not compilers, "no compiler, binutils or make package", str(compilers))
    found = [os.path.join(b, n) for b in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin")
             for n in ("cc", "c99", "gcc", "cpp", "clang", "tcc", "make", "ld", "as")
             if os.path.lexists(os.path.join(mnt, b, n))]
    check(not found, "no cc, gcc, clang, make, ld or as on the PATH", str(found))
    for exe in ("/usr/local/bin/maskloss-server", "/usr/local/bin/maskloss"):
        r = run(["chroot", f"--userspec={UID}:{UID}", mnt, "ldd", exe], capture_output=True, text=True, check=False)
        libs = [line.split()[0] for line in r.stdout.splitlines() if "=>" in line]
        missing = [line.strip() for line in r.stdout.splitlines() if "not found" in line]
        check(r.returncode == 0 and libs and not missing,
              f"ldd {exe} inside the image: none of its {len(libs)} libraries not found",
              f"{missing}, exit {r.returncode}: {r.stderr.strip()}")
        say(f"      {' '.join(sorted(libs))}")


# ---- the server, run as the image runs it ------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """The image's ENTRYPOINT with its ENV (plus `extra`), chroot'ed into the image as 10001."""

    def __init__(self, mnt, cfg, env, extra, log):
        self.env = dict(env, **extra)
        self.port = int(self.env["MASKLOSS_PORT"])
        self.log_path = log
        self.mnt, self.cfg = mnt, cfg
        self.tls = None
        with open(log, "w") as f:
            # chroot and env exec: the pid is the server's own, signals reach it as in a container.
            self.proc = subprocess.Popen(
                ["chroot", f"--userspec={UID}:{UID}", mnt, "/usr/bin/env", "-i"]
                + [f"{k}={v}" for k, v in self.env.items()] + (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or []),
                stdout=f, stderr=subprocess.STDOUT)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def conn(self, timeout=30):
        if self.tls:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.tls, timeout=timeout)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, token=None, timeout=30):
        c = self.conn(timeout)
        try:
            h = {"Content-Type": "application/json"} if body is not None else {}
            if token:
                h["Authorization"] = f"Bearer {token}"
            if body is not None and not isinstance(body, bytes):
                body = json.dumps(body).encode()
            c.request(method, path, body, h)
            r = c.getresponse()
            data = r.read()
            try:
                return r.status, json.loads(data)
            except ValueError:
                return r.status, data.decode(errors="replace")
        finally:
            c.close()

    def wait_ready(self, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise Fail(f"the server exited {self.proc.returncode} at start:\n{self.log()[-3000:]}")
            try:
                if self.request("GET", "/readyz", timeout=2)[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise Fail(f"the server was not ready within {timeout} s:\n{self.log()[-3000:]}")

    def healthcheck(self):
        """The image's HEALTHCHECK command, run inside it as its user with its ENV."""
        test = (self.cfg.get("Healthcheck") or {}).get("Test") or ["NONE"]
        if test[0] not in ("CMD", "CMD-SHELL"):
            return None
        cmd = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        return run(["chroot", f"--userspec={UID}:{UID}", self.mnt, "/usr/bin/env", "-i"]
                   + [f"{k}={v}" for k, v in self.env.items()] + cmd,
                   check=False, capture_output=True, timeout=30).returncode

    def stop(self, sig, timeout=60):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Fail(f"the server did not exit within {timeout} s of signal {sig}")


def golden_note():
    """The note's request (examples/masked-mean.json) and its expected loss and tolerance, taken
    from tests/data/golden.json: the case with the same labels, logits and mask (float64)."""
    with open(os.path.join(ROOT, "examples", "masked-mean.json")) as f:
        note = json.load(f)
    with open(os.path.join(ROOT, "tests", "data", "golden.json")) as f:
        cases = json.load(f)["cases"]
    for c in cases:
        if (c.get("dtype") == note.get("dtype") and c["labels"]["data"] == note["labels"]
                and c["logits"]["data"] == note["logits"] and (c.get("weights") or {}).get("data") == note["mask"]
                and c.get("reduction") == "SUM_BY_NONZERO_WEIGHTS" and "sigmoid" in c["loss"]):
            return note, c["expected"], c["tolerance"]
    raise Fail("no golden case matches examples/masked-mean.json")


def close(got, want, tol):
    return isinstance(got, float) and abs(got - want) <= tol["atol"] + tol["rtol"] * abs(want)


def metric(text, name):
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def try_server(podman, cfg, env, d):
    note, want, tol = golden_note()
    state_dir = os.path.join(d, "volume")
    state_file = os.path.join(state_dir, os.path.relpath(env["MASKLOSS_STATE"], VOLUME))
    port = str(free_port())
    monitor = {"loss": "sigmoid_cross_entropy", "dtype": "float64", "classes": ["a", "b", "c", "d", "e"]}
    obs = {k: note[k] for k in ("labels", "logits", "mask")}
    obs["id"] = "image-test-1"

    say(f"run 1: {' '.join(cfg.get('Entrypoint') or [])} as {UID}:{UID} in a new container, the image's ENV "
        f"with MASKLOSS_PORT={port}, the volume a host directory")
    srv = Served(container(podman, d, "maskloss-test-1"), cfg, env, {"MASKLOSS_PORT": port}, os.path.join(d, "server1.log"))
    SERVERS.append(srv)
    srv.wait_ready()
    st, ans = srv.request("POST", "/v1/loss", note)
    check(st == 200 and close(ans.get("loss"), want, tol),
          f"POST /v1/loss, the note's example: {ans.get('loss') if st == 200 else st} (golden {want!r})", str(ans))
    st, ans = srv.request("GET", "/readyz")
    check(st == 200, "GET /readyz 200", f"{st} {ans}")
    st, text = srv.request("GET", "/metrics")
    n = metric(text, "maskloss_http_requests_total") if st == 200 else 0
    check(st == 200 and n >= 2, f"GET /metrics 200: maskloss_http_requests_total {n:.0f}", f"{st} {str(text)[:300]}")
    check(srv.healthcheck() == 0, "the image's HEALTHCHECK command inside it: exit 0")
    st, ans = srv.request("PUT", "/v1/monitors/image", monitor)
    check(st == 201, "PUT /v1/monitors/image 201", f"{st} {ans}")
    st, ans = srv.request("POST", "/v1/monitors/image/observe", obs)
    check(st == 200 and close(ans.get("loss"), want, tol) and ans.get("duplicate") is False,
          f"observe the note: loss {ans.get('loss')}", f"{st} {ans}")
    st, ans = srv.request("GET", "/v1/monitors/image")
    total = ans.get("total", {}) if st == 200 else {}
    check(total.get("observations") == 1 and close(total.get("loss"), want, tol),
          f"GET /v1/monitors/image: 1 observation, loss {total.get('loss')}", f"{st} {ans}")
    ok = os.path.exists(state_file) and os.stat(state_file).st_uid == UID
    check(ok, f"the state {env['MASKLOSS_STATE']} written in the volume, owned by {UID}",
          str(os.listdir(state_dir)))
    srv.stop(signal.SIGKILL)
    check(srv.healthcheck() not in (0, None), "kill -9; the HEALTHCHECK command now fails")

    say("run 2: another new container on the same volume, MASKLOSS_WORKERS=1")
    srv = Served(container(podman, d, "maskloss-test-2"), cfg, env, {"MASKLOSS_PORT": port, "MASKLOSS_WORKERS": "1"}, os.path.join(d, "server2.log"))
    SERVERS.append(srv)
    srv.wait_ready()
    st, ans = srv.request("GET", "/v1/monitors/image")
    total = ans.get("total", {}) if st == 200 else {}
    check(st == 200 and ans.get("config", {}).get("dtype") == "float64" and total.get("observations") == 1
          and close(total.get("loss"), want, tol),
          f"after kill -9 and a restart the monitor is there: 1 observation, loss {total.get('loss')}", f"{st} {ans}")
    st, ans = srv.request("POST", "/v1/monitors/image/observe", obs)
    check(st == 200 and ans.get("duplicate") is True, "its observation id is remembered: duplicate", f"{st} {ans}")
    drain(srv, note, want, tol)


def drain(srv, note, want, tol):
    """SIGTERM with large requests accepted and unanswered (one worker): each accepted is answered
    200 with the note's loss (the note tiled: the same masked mean), exit 0. When every request
    was answered before two were seen in flight (a fast machine), again with larger ones."""
    rows = 40000  # 200,000 elements a request
    for _ in range(3):
        big = {"loss": note["loss"], "dtype": "float64"}
        for k in ("labels", "logits", "mask"):
            big[k] = note[k] * (rows // len(note[k]))
        body = json.dumps(big).encode()  # once: the threads send at the same time
        results = {}

        def one(k):
            try:
                results[k] = srv.request("POST", "/v1/loss", body, timeout=300)
            except (OSError, http.client.HTTPException) as e:
                results[k] = (None, f"{type(e).__name__}: {e}")
        threads = [threading.Thread(target=one, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        end = time.monotonic() + 60
        jobs = 0
        while jobs < 2 and len(results) < len(threads) and time.monotonic() < end:
            st, text = srv.request("GET", "/metrics")
            jobs = metric(text, "maskloss_queue_jobs") + metric(text, "maskloss_running_jobs") if st == 200 else 0
            time.sleep(0.002)
        if jobs >= 2:
            break
        for t in threads:
            t.join()
        rows *= 4
    else:
        raise Fail(f"never had 2 requests in flight ({jobs} now, {len(results)} answered)")
    rc = srv.stop(signal.SIGTERM, timeout=120)
    for t in threads:
        t.join()
    m = re.search(r"SIGTERM: draining (\d+) accepted", srv.log())
    accepted = int(m.group(1)) if m else 0
    good = [k for k, (st, ans) in results.items() if st == 200 and close(ans.get("loss"), want, tol)]
    other = {k: v for k, v in results.items()
             if k not in good and not (v[0] == 503 and isinstance(v[1], dict) and v[1].get("code") == "draining")
             and v[0] is not None}
    check(rc == 0 and accepted >= 2 and len(good) >= accepted and not other,
          f"SIGTERM with {accepted} requests accepted ({rows * 5} elements each): {len(good)} answered 200 "
          f"with the note's loss, {len(threads) - len(good)} others 503 draining or refused; exit {rc}",
          f"{results if other else ''} log: {srv.log()[-2000:]}")


def try_auth_tls(mnt, cfg, env, d):
    """A directory mounted read-only at /etc/maskloss: tokens and tls/{cert,key}.pem."""
    note, want, tol = golden_note()
    conf = os.path.join(d, "conf")
    os.makedirs(os.path.join(conf, "tls"))
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    with open(os.path.join(conf, "tokens"), "w") as f:  # the documented format, written by hand
        f.write(f"# image test\n{hashlib.sha256(token.encode()).hexdigest()} image-test evaluate,metrics\n")
    cert, key = os.path.join(conf, "tls", "cert.pem"), os.path.join(conf, "tls", "key.pem")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], capture_output=True, timeout=60)
    for p in (os.path.join(conf, "tokens"), key):
        os.chown(p, UID, UID)
        os.chmod(p, 0o600)
    target = mnt + CONF
    check(os.path.isdir(target) and os.path.isdir(target + "/tls"), f"{CONF} and {CONF}/tls exist in the image")
    mount_bind(conf, target, ro=True)
    extra = {"MASKLOSS_PORT": str(free_port()), "MASKLOSS_AUTH_FILE": f"{CONF}/tokens",
             "MASKLOSS_INSECURE_NO_AUTH": "0", "MASKLOSS_TLS_CERT": f"{CONF}/tls/cert.pem",
             "MASKLOSS_TLS_KEY": f"{CONF}/tls/key.pem"}
    say(f"run 3: a directory mounted read-only at {CONF}: " + " ".join(f"{k}={v}" for k, v in extra.items()
                                                                     if k != "MASKLOSS_PORT"))
    srv = Served(mnt, cfg, env, extra, os.path.join(d, "server3.log"))
    SERVERS.append(srv)
    srv.tls = ssl.create_default_context(cafile=cert)
    srv.wait_ready()
    st, _ = srv.request("GET", "/healthz")
    check(st == 200, "HTTPS with the mounted certificate (verified): GET /healthz 200 without a token")
    st, ans = srv.request("POST", "/v1/loss", note)
    check(st == 401 and isinstance(ans, dict) and ans.get("code") == "unauthorized",
          "POST /v1/loss without a token: 401 unauthorized", f"{st} {ans}")
    st, ans = srv.request("POST", "/v1/loss", note, token=token[:-1] + ("A" if token[-1] != "A" else "B"))
    check(st == 401, "with a token the file does not hold: 401", f"{st} {ans}")
    st, ans = srv.request("POST", "/v1/loss", note, token=token)
    check(st == 200 and close(ans.get("loss"), want, tol),
          f"with the mounted file's token: 200, loss {ans.get('loss') if st == 200 else ''}", f"{st} {ans}")
    st, _ = srv.request("GET", "/metrics")
    st2, _ = srv.request("GET", "/metrics", token=token)
    check((st, st2) == (401, 200), "GET /metrics: 401 without the token, 200 with it", f"{st} {st2}")
    check(srv.healthcheck() == 0, "the HEALTHCHECK command with TLS on (its handshake probe): exit 0")
    rc = srv.stop(signal.SIGTERM)
    check(rc == 0, f"SIGTERM: exit {rc}", srv.log()[-2000:])
    # The probe's unfinished handshakes are counted by the server, not logged at every probe.
    check("handshake" not in srv.log(), "the probe's handshakes not in the server's log", srv.log()[-2000:])
    check(srv.healthcheck() not in (0, None), "the HEALTHCHECK command once it has stopped: fails")


# ---- mounts and cleanup ------------------------------------------------------------------------

MOUNTS = []
SERVERS = []
CONTAINERS = []


def container(podman, d, name):
    """A new container of the image (never started: its filesystem, a fresh copy of the image's
    as a new `docker run` has), mounted, with DIR/volume bind-mounted as its volume."""
    podman("create", "--name", name, TAG, stdout=subprocess.DEVNULL)
    CONTAINERS.append(name)
    mnt = podman.out("mount", name)
    mount_bind(os.path.join(d, "volume"), mnt + VOLUME)
    return mnt


def mount_bind(src, dst, ro=False):
    run(["mount", "--bind", src, dst])
    MOUNTS.append(dst)
    if ro:
        run(["mount", "-o", "remount,bind,ro", dst])


def ours(d):
    return os.path.isfile(os.path.join(d, MARKER))


def cleanup(d, podman, mounted, remove=True):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # (a second SIGTERM must not cut it short)
    for s in SERVERS:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
    for m in reversed(MOUNTS):
        run(["umount", m], check=False)
    for c in CONTAINERS:
        podman("umount", c, check=False, stdout=subprocess.DEVNULL)
        # (stderr: podman cannot reach systemd here to remove the healthcheck timers it never made)
        podman("rm", "-f", c, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if mounted:
        podman("image", "unmount", TAG, check=False, stdout=subprocess.DEVNULL)
    if not remove:
        return
    if not ours(d):
        say(f"{d} has no {MARKER} (not made by this test): not removed")
        return
    # Anything still mounted under DIR (an interrupted run) is let go before DIR is removed.
    with open("/proc/self/mounts") as f:
        left = [line.split()[1] for line in f if line.split()[1].startswith(d.rstrip("/") + "/")]
    for m in sorted(left, reverse=True):
        run(["umount", "-l", m], check=False)
    shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/maskloss-image", help="work directory (removed at the end)")
    ap.add_argument("--dockerfile", default=os.path.join(ROOT, "docker", "Dockerfile"))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--build-only", action="store_true", help="build, keep DIR for --check-only")
    mode.add_argument("--check-only", action="store_true", help="check what --build-only built")
    ap.add_argument("--keep", action="store_true", help="keep DIR (the image) at the end")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("test-image: skipped: needs root (debootstrap, podman build, mount and chroot)")
        return 0
    d = os.path.abspath(args.dir)
    if os.path.exists(d) and not ours(d) and (args.check_only or os.listdir(d)):
        print(f"test-image: {d} exists and has no {MARKER}: not a directory this test made; "
              f"nothing done, nothing removed")
        return 1
    if args.check_only and not ours(d):
        print(f"test-image: {d} holds no image: run with --build-only first")
        return 1
    if not args.check_only:
        if ours(d):  # nothing cached from a past run
            cleanup(d, Podman(d), False)
        os.makedirs(d, exist_ok=True)  # (an empty directory may be given)
        open(os.path.join(d, MARKER), "w").close()
    # timeout(1)'s SIGTERM (.ci/run) ends the run through the finally below: unmounted, removed.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    podman = Podman(d)
    mounted, keep = False, args.keep
    try:
        if not args.check_only:
            build(d, os.path.abspath(args.dockerfile))
            if args.build_only:
                keep = True
                return 0
        elif not os.path.isdir(os.path.join(d, "storage")):
            raise Fail(f"{d} holds no image: run with --build-only first")
        cfg, env = image_config(podman)
        check_metadata(cfg, env)
        mnt = podman.out("image", "mount", TAG)
        mounted = True
        say(f"the image mounted at {mnt}")
        check_filesystem(mnt)
        podman("image", "unmount", TAG, stdout=subprocess.DEVNULL)
        mounted = False
        volume = os.path.join(d, "volume")
        for old in (volume, os.path.join(d, "conf")):  # a past --keep's
            shutil.rmtree(old, ignore_errors=True)
        os.makedirs(volume)
        os.chown(volume, UID, UID)
        try_server(podman, cfg, env, d)
        try_auth_tls(container(podman, d, "maskloss-test-3"), cfg, env, d)
        if FAILED:
            say(f"FAILED: {len(FAILED)} checks: " + "; ".join(FAILED))
            return 1
        say(f"passed: {shown(args.dockerfile)} built and tried")
        return 0
    except Exception as e:  # (a Fail, a command that failed, or this script's own bug)
        err = getattr(e, "stderr", None)
        if not isinstance(e, (Fail, subprocess.CalledProcessError)):
            traceback.print_exc()
        say(f"FAILED: {e}" + (f"\n{err}" if err else "") + "".join(f"\n  and: {f}" for f in FAILED))
        return 1
    finally:
        if keep:
            cleanup(d, podman, mounted, remove=False)
        else:
            cleanup(d, podman, mounted)


if __name__ == "__main__":
    sys.exit(main())
