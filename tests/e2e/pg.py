"""A real, throwaway PostgreSQL for the tests: a cluster made with initdb in a temporary
directory, listening on a unix socket there and on a free loopback TCP port, removed on exit.

    with Postgres() as pg:
        pg.psql("select version()")          # as the superuser, over the unix socket
        server(["--state", pg.dsn])         # the role the server uses (password over TCP)
        pg.kill9(); pg.restart()            # a crash, then crash recovery

PostgreSQL refuses to run as root, so as root (CI) initdb, pg_ctl and postgres run as the
`postgres` system user (Debian's packages create it) with runuser or setpriv, in a directory
that user owns; as anyone else they run as that user. The binaries are found with pg_config
--bindir, else under /usr/lib/postgresql/<version>/bin (Debian keeps them off the PATH).

Connections over the unix socket are trusted (the harness's own psql, as the superuser);
over TCP every role needs its password (scram-sha-256), so that the server's way of getting
it (in the connection string, PGPASSWORD, PGPASSFILE) is exercised as in production. fsync and
synchronous_commit keep their defaults: a commit is durable, as the crash tests expect.
"""
import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SUPERUSER = "postgres"
ROLE = "maskloss"
DATABASE = "maskloss"


def bindir(version=None):
    """The directory of initdb, pg_ctl, postgres and psql: pg_config's (Debian's wrapper
    names the newest installed server's), else the newest (or `version`'s) of
    /usr/lib/postgresql/*/bin."""
    cands = []
    if version is None:
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                 timeout=10)
            if out.returncode == 0:
                cands.append(out.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    pattern = f"/usr/lib/postgresql/{version or '*'}/bin"
    found = glob.glob(pattern)
    found.sort(key=lambda p: [int(x) for x in p.split("/")[-2].split(".") if x.isdigit()],
               reverse=True)
    cands += found
    for d in cands:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl, postgres) not found "
                       f"(pg_config --bindir, {pattern}): install postgresql")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A PostgreSQL cluster of its own; a context manager (start on enter, removed on exit).

    .dsn           libpq connection string of the server's role, with its password
    .dsn_nopass    the same without the password (give it by PGPASSWORD or PGPASSFILE)
    .url           the same as a postgresql:// URI (with the password)
    .password      that role's password; .passfile() writes a PGPASSFILE holding it
    .host, .port   the TCP address; .sockdir the unix socket's directory
    .start_seconds how long the last start (or initdb + start) took
    """

    def __init__(self, version=None, user_password="mls-test-pw'\\ x"):
        self.bin = bindir(version)
        # (a password with a quote, a backslash and a space: the dsn quotes it as libpq wants)
        self.password = user_password
        self.dir = None
        self.port = None
        self.host = "127.0.0.1"
        self.start_seconds = None
        self.init_seconds = None
        self.proc = None
        self._launcher = None

    # ---- running things as the cluster's owner ------------------------------------------
    def _owner_cmd(self, argv):
        if os.geteuid() != 0:
            return argv
        # setpriv execs the program (postgres stays our child); runuser forks it
        if shutil.which("setpriv"):
            self._launcher = "setpriv"
            return ["setpriv", f"--reuid={SUPERUSER}", f"--regid={SUPERUSER}", "--init-groups",
                    "--reset-env", "--"] + argv
        self._launcher = "runuser"
        return ["runuser", "-u", SUPERUSER, "--"] + argv

    def _run(self, argv, timeout=60, check=True, owner=True, **kw):
        cmd = self._owner_cmd(argv) if owner else argv
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir,
                           **kw)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}{r.stderr}"
                               f"{self.log_tail()}")
        return r

    def _b(self, name):
        return os.path.join(self.bin, name)

    @property
    def data(self):
        return os.path.join(self.dir, "data")

    @property
    def sockdir(self):
        return self.dir

    @property
    def logfile(self):
        return os.path.join(self.dir, "postgres.log")

    def log_tail(self, n=30):
        try:
            with open(self.logfile, errors="replace") as f:
                lines = f.readlines()[-n:]
            return "\n-- postgres.log (tail):\n" + "".join(lines)
        except OSError:
            return ""

    # ---- life cycle ------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.create()
            self.start()
            self._make_role()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def create(self):
        t0 = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix="mls-pg-")
        atexit.register(self.cleanup)  # (a test that forgot the with: still no server left)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(SUPERUSER)  # KeyError: no postgres user (install postgresql)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        # --no-sync: initdb's own final flush of the new files (half of its time); the server
        # itself keeps fsync on. --auth-host: passwords over TCP, trust on the socket.
        self._run([self._b("initdb"), "-D", self.data, "-U", SUPERUSER, "-E", "UTF8",
                   "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256",
                   "--no-sync", "--no-instructions"])
        self.port = free_port()
        conf = (
            "\n# maskloss tests (pg.py)\n"
            f"listen_addresses = '{self.host}'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.dir}'\n"
            "max_connections = 100\n"
            "shared_buffers = 32MB\n"
            "log_min_messages = warning\n"
            "log_connections = off\n"
            "log_line_prefix = '%m [%p] '\n"
        )
        # (written by the owner: as root the file must stay the postgres user's)
        self._run(["sh", "-c", 'cat >> "$1"', "sh", os.path.join(self.data, "postgresql.conf")],
                  input=conf)
        self.init_seconds = time.monotonic() - t0

    def start(self, timeout=60):
        """Starts postgres as a child of this process (not through pg_ctl start, whose server
        is left to init: where init reaps nothing, as in some containers, a killed server
        stays a zombie whose pid in postmaster.pid stops the next start). Returns once it
        accepts connections (postmaster.pid says ready), with the seconds it took."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("postgres is already running")
        t0 = time.monotonic()
        log = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(self._owner_cmd([self._b("postgres"), "-D", self.data]),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.dir, start_new_session=True)
        finally:
            log.close()
        pidfile = os.path.join(self.data, "postmaster.pid")
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode} at start"
                                   f"{self.log_tail()}")
            try:
                with open(pidfile) as f:
                    lines = f.read().split("\n")
                # (line 8: the postmaster's status, "ready" once it takes connections)
                if len(lines) > 7 and lines[0].strip() == str(self._server_pid()) and \
                        lines[7].strip() == "ready":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready after {timeout} s{self.log_tail()}")
            time.sleep(0.005)
        self.start_seconds = time.monotonic() - t0
        return self.start_seconds

    def _server_pid(self):
        # (setpriv execs postgres: same pid; runuser forks it: its child)
        if self.proc is None:
            return None
        kids = self._children(self.proc.pid)
        if os.geteuid() == 0 and self._launcher == "runuser" and kids:
            return kids[0]
        return self.proc.pid

    def stop(self, mode="fast", timeout=60):
        """pg_ctl stop -m fast: running transactions rolled back, a checkpoint, exit."""
        self._run([self._b("pg_ctl"), "-D", self.data, "-m", mode, "-w", "-t", str(timeout),
                   "stop"], timeout=timeout + 10)
        self._reap(timeout)

    def _reap(self, timeout=30):
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def postmaster_pid(self):
        return self._server_pid() if self.running() else None

    def _children(self, pid):
        kids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/stat") as f:
                    st = f.read()
                if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                    kids.append(int(p))
            except (OSError, ValueError):
                continue
        return kids

    def kill9(self, timeout=30):
        """A crash: SIGKILL to the postmaster and every backend (as an OOM kill would leave
        it: no shutdown checkpoint, shared buffers lost); the next start runs crash recovery
        from the WAL. Returns once they are all gone."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("postgres is not running")
        procs = [pid] + self._children(pid)
        for p in procs:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap(timeout)
        # the backends were the postmaster's children: now init's to reap; gone or zombies
        deadline = time.monotonic() + timeout
        for p in procs[1:]:
            while time.monotonic() < deadline:
                try:
                    with open(f"/proc/{p}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                            break
                except OSError:
                    break
                time.sleep(0.01)

    def restart(self):
        """Stops (fast) if running, then starts on the same port and socket; after kill9 the
        start replays the WAL. Returns the start's seconds."""
        if self.running():
            self.stop()
        return self.start()

    def cleanup(self):
        if self.dir is None:
            return
        try:
            if self.running():
                try:
                    self.stop(mode="immediate", timeout=20)
                except Exception:
                    self.kill9()
        except Exception:
            pass
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # ---- SQL ---------------------------------------------------------------------------------
    def psql(self, sql, db=DATABASE, user=SUPERUSER, timeout=60, check=True):
        """Runs sql (one or more statements) with psql over the unix socket; returns its
        output unaligned, tuples only ('|' between columns), stripped."""
        r = subprocess.run([self._b("psql") if os.access(self._b("psql"), os.X_OK) else "psql",
                            "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir,
                            "-p", str(self.port), "-U", user, "-d", db],
                           input=sql, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        if check and r.returncode != 0:
            raise RuntimeError(f"psql: exit {r.returncode}: {r.stderr.strip()}\n-- sql: {sql}")
        return r.stdout.strip() if check else r

    def _make_role(self):
        lit = self.password.replace("'", "''")
        self.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{lit}';"
                  f"CREATE DATABASE {DATABASE} OWNER {ROLE};", db="postgres")

    # ---- how the server reaches it -------------------------------------------------------------
    @staticmethod
    def _quote(v):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    @property
    def dsn_nopass(self):
        return f"host={self.host} port={self.port} dbname={DATABASE} user={ROLE}"

    @property
    def dsn(self):
        return f"{self.dsn_nopass} password={self._quote(self.password)}"

    @property
    def url(self):
        from urllib.parse import quote
        return (f"postgresql://{ROLE}:{quote(self.password, safe='')}@{self.host}:{self.port}"
                f"/{DATABASE}")

    def passfile(self, path=None):
        """Writes a PGPASSFILE (mode 0600, as libpq requires) for the server's role; returns
        its path (default: in the cluster's directory)."""
        path = path or os.path.join(self.dir, "pgpass")
        esc = lambda v: v.replace("\\", "\\\\").replace(":", "\\:")  # noqa: E731
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.host}:{self.port}:{DATABASE}:{ROLE}:{esc(self.password)}\n")
        return path
