"""Throwaway PostgreSQL clusters for tests and benchmarks.

`PostgresCluster` runs `initdb` in a fresh temporary directory and starts a server that
listens on 127.0.0.1 only, at a free port, with durability turned off (the data is thrown
away). It can be stopped and started again on the same data directory and port, so tests
can simulate the database going down and coming back. No pytest here: benchmarks use it too.

    with PostgresCluster() as pg:
        psycopg.connect(pg.url())
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote

REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
DEBIAN_ROOT = Path("/usr/lib/postgresql")
# initdb and postgres refuse to run as root, so root runs them as this user.
SERVICE_USER = "postgres"
SUPERUSER = "postgres"
LOG_TAIL_LINES = 40
# Settings appended to postgresql.conf. Durability is off because the data is throwaway;
# the port is given on the command line instead, so it can change between start attempts.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",  # wal_level=minimal requires it
    "jit": "off",  # JIT compilation only slows down short test queries
}

ShutdownMode = Literal["smart", "fast", "immediate"]
# How postgres is told to shut down in each mode (see pg_ctl's documentation).
SHUTDOWN_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
# postmaster.pid's line with the server status; "ready" once it accepts connections.
PID_FILE_STATUS_LINE = 8


class PostgresError(RuntimeError):
    """A PostgreSQL server binary failed, or the server did not come up in time."""


def find_postgres_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None if there is none.

    Looks at `$HIGHWAY_PG_BIN`, then `pg_config --bindir`, then the newest Debian install
    under /usr/lib/postgresql, then the directory of `initdb` on PATH. A `$HIGHWAY_PG_BIN`
    without the binaries raises FileNotFoundError: a wrong override must not skip tests.
    """
    override = os.environ.get("HIGHWAY_PG_BIN")
    if override:
        if not _has_binaries(Path(override)):
            raise FileNotFoundError(
                f"HIGHWAY_PG_BIN={override!r} does not hold all of {', '.join(REQUIRED_BINARIES)}"
            )
        return Path(override)

    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            bindir = ""
        # libpq-dev's pg_config answers /usr/bin, which has no server binaries: keep looking.
        if bindir and _has_binaries(Path(bindir)):
            return Path(bindir)

    debian = [
        (version, path)
        for path in DEBIAN_ROOT.glob("*/bin")
        if (version := _version_key(path.parent.name)) is not None and _has_binaries(path)
    ]
    if debian:
        return max(debian)[1]

    initdb = shutil.which("initdb")
    if initdb:
        # Resolve symlinks too: /usr/local/bin/initdb may point into the real bin directory.
        for directory in (Path(initdb).parent, Path(initdb).resolve().parent):
            if _has_binaries(directory):
                return directory
    return None


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1, in its own temporary directory.

    `start()` creates the cluster on first use; `stop()` and `start()` can then alternate on
    the same data directory and port. `destroy()` (or leaving the `with` block) stops the
    server and removes the directory. The server is also stopped and removed when this
    process exits, however it ends: at interpreter exit, and by a watchdog process if this
    one is killed.
    """

    def __init__(self, bin_dir: Path | str | None = None, *, timeout: float = 30.0) -> None:
        found = Path(bin_dir) if bin_dir is not None else find_postgres_bin()
        if found is None:
            raise PostgresError(
                "no PostgreSQL server binaries found: install Debian's `postgresql` package "
                "or set HIGHWAY_PG_BIN to the directory holding initdb"
            )
        self.bin_dir = found
        self.timeout = timeout
        # Chosen now so url() works before start(); it stays fixed once the server has run.
        self.port = _free_port()
        self.base_dir: Path | None = None
        self._user = _service_user()
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._has_run = False

    @property
    def data_dir(self) -> Path | None:
        """The cluster's data directory (its unix socket is here too), once created."""
        return None if self.base_dir is None else self.base_dir / "data"

    @property
    def log_path(self) -> Path | None:
        """The server log, once created."""
        return None if self.base_dir is None else self.base_dir / "server.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def url(self, dbname: str = "postgres") -> str:
        """A connection URL for the superuser (no password: trust authentication)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def start(self) -> None:
        """Create the cluster if needed, start the server and wait until it accepts connections.

        Does nothing if the server is already running.
        """
        if self.running:
            return
        if self.base_dir is None:
            self._create()
        # Another process may take the port between choosing and binding it. Only the first
        # start may move to a new port: afterwards callers hold URLs with this one.
        attempts = 1 if self._has_run else 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_server()
                break
            except _PortInUse:
                if attempt == attempts:
                    raise PostgresError(f"port {self.port} is in use\n{self.log_tail()}") from None
                self.port = _free_port()
        self._has_run = True

    def stop(self, mode: ShutdownMode = "immediate") -> None:
        """Stop the server; the data directory stays, so `start()` can bring it back.

        The default immediate shutdown cuts off clients at once, much like a crash; the next
        start runs a quick crash recovery. Does nothing if the server is not running.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(SHUTDOWN_SIGNALS[mode])
            try:
                process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                process.kill()  # its children exit once they see it gone
                process.wait()

    def destroy(self) -> None:
        """Stop the server and remove the cluster's directory. Safe to call more than once."""
        self.stop()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        if self._watchdog is not None:
            # Closing its pipe wakes the watchdog, which finds nothing left to clean up.
            self._watchdog.stdin.close()  # type: ignore[union-attr]
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None
        self._has_run = False
        atexit.unregister(self.destroy)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            text = ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"server log ({self.log_path}), last {lines} lines:\n{tail or '(empty)'}"

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<PostgresCluster 127.0.0.1:{self.port} {state} at {self.base_dir}>"

    def _create(self) -> None:
        """Make the temporary directory, the watchdog and the cluster itself."""
        self.base_dir = Path(tempfile.mkdtemp(prefix="highway-pg-"))
        # Registered before anything can fail, so the directory never outlives the process.
        atexit.register(self.destroy)
        if self._user is not None:
            os.chown(self.base_dir, self._user.pw_uid, self._user.pw_gid)
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(self.data_dir), str(self.base_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for the tests must not reach it.
            start_new_session=True,
        )
        initdb = [self._bin("initdb"), "-D", str(self.data_dir), "--auth=trust"]
        initdb += ["-U", SUPERUSER, "--encoding=UTF8", "--locale=C", "--no-sync"]
        try:
            status, output = self._run(initdb)
        except subprocess.TimeoutExpired as e:
            raise PostgresError(f"initdb took longer than {self.timeout:g} s") from e
        if status != 0:
            raise PostgresError(f"initdb failed (exit {status}):\n{output}")
        socket_dir = str(self.data_dir).replace("'", "''")
        settings = {**SERVER_SETTINGS, "unix_socket_directories": f"'{socket_dir}'"}
        # Appending keeps the file's owner; later lines override initdb's defaults.
        with open(self.data_dir / "postgresql.conf", "a") as conf:  # type: ignore[operator]
            conf.write("\n# Throwaway test cluster (highway.testing.postgres)\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _start_server(self) -> None:
        """Start postgres and wait until it accepts connections.

        postgres runs as our child rather than daemonized by pg_ctl: we reap it (some
        containers' init never does), see at once if it dies, and stop it with a signal.
        """
        assert self.log_path is not None and self.data_dir is not None
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._process = self._popen(
                [self._bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session, as pg_ctl does: a Ctrl-C meant for the tests must not
                # reach it; the atexit handler and the watchdog stop it instead.
                start_new_session=True,
            )
        deadline = time.monotonic() + self.timeout
        while not self._ready():
            if self._process.poll() is not None:
                self._process = None
                new_log = self._read_log(log_offset)
                if "could not bind" in new_log or "Address already in use" in new_log:
                    raise _PortInUse
                raise PostgresError(f"PostgreSQL failed to start\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise PostgresError(
                    f"PostgreSQL did not accept connections on 127.0.0.1:{self.port} within "
                    f"{self.timeout:g} s\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def _ready(self) -> bool:
        """Whether our server's pid file says it accepts connections (what pg_ctl -w checks)."""
        assert self.data_dir is not None and self._process is not None
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        # Line 1 is the pid (a stale file names an old one); line 8 the status.
        return (
            len(lines) >= PID_FILE_STATUS_LINE
            and lines[0].strip() == str(self._process.pid)
            and lines[PID_FILE_STATUS_LINE - 1].strip() == "ready"
        )

    def _read_log(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:  # type: ignore[arg-type]
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a server binary, as the service user when we are root."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"  # English messages, so the log can be matched
        if self._user is not None:
            kwargs |= {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
            env["HOME"] = self._user.pw_dir
        # Our working directory may be closed to the service user.
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, env=env, cwd=self.base_dir, **kwargs
        )

    def _run(self, command: list[str]) -> tuple[int, str]:
        """Run a server binary to completion: its exit status and output."""
        # A session of its own, so a timeout can kill the helpers it starts (initdb runs
        # postgres in bootstrap mode) along with it.
        with self._popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        ) as process:
            try:
                output, _ = process.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise
        return process.returncode, output.decode(errors="replace")


class _PortInUse(Exception):
    """The server could not bind its port."""


# Runs beside the test process, blocked reading a pipe that only that process holds. End of
# file means the owner closed it (destroy) or died, even by SIGKILL: then shut down any server
# left running (SIGQUIT: immediate shutdown) and remove the cluster's directory.
_WATCHDOG = r"""
import os, shutil, signal, sys, time

def alive(pid):
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is gone
    except ProcessLookupError:
        return False
    except OSError:
        return True

sys.stdin.buffer.read()
data_dir, base_dir = sys.argv[1], sys.argv[2]
try:
    with open(os.path.join(data_dir, "postmaster.pid")) as f:
        pid = int(f.readline())
except (OSError, ValueError):
    pid = 0
if pid > 0 and alive(pid):
    try:
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
shutil.rmtree(base_dir, ignore_errors=True)
"""


def _has_binaries(directory: Path) -> bool:
    return all(
        (directory / name).is_file() and os.access(directory / name, os.X_OK)
        for name in REQUIRED_BINARIES
    )


def _version_key(name: str) -> tuple[int, ...] | None:
    """Debian's version directory name ("15", "9.6") as a sortable tuple, or None."""
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return None


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_user() -> pwd.struct_passwd | None:
    """The account to run the server binaries as: None to run them as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresError(
            f"running as root, and PostgreSQL refuses root: need a {SERVICE_USER!r} user "
            "(Debian's postgresql package creates it)"
        ) from None
