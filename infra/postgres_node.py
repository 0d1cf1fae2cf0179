"""A private PostgreSQL server: Debian's binaries, our own data directory, a port of our own.

``initdb`` makes a cluster under ``PostgresConfig.base_dir`` whose superuser has
a generated password (kept beside the cluster, mode 600); the server listens on
127.0.0.1 only (or ``PostgresConfig.listen_address``, open to its subnets), and on a
unix socket inside its data directory, where the superuser logs in without a
password (that directory is closed to other users).
A server someone else started, the system's cluster included, is never used.
PostgreSQL refuses to run as root: as root, the cluster belongs to, and the
server runs as, the ``postgres`` user that Debian's package creates.

Used by the test suite, bench/store_drivers.py and ``scripts/postgres``
(``infra.postgres_cli``).
Stdlib only, so it can run before the project's dependencies are installed.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

from .ports import port_in_use
from .postgres_config import PostgresBootError, PostgresConfig, bin_dir, ensure_installed

__all__ = ["PostgresBootError", "PostgresConfig", "PostgresNode", "bin_dir", "ensure_installed"]

logger = logging.getLogger(__name__)

SYSTEM_USER = "postgres"  # made by Debian's postgresql-common
_POLL_INTERVAL_S = 0.05
_MAX_LOG_LINES = 12
_LOG_PROBLEM = re.compile(r"\b(FATAL|PANIC|ERROR):")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # a database name we never need to quote


class PostgresNode:
    """Create, start, stop (or kill) one private PostgreSQL server, and make databases in it."""

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._bin = bin_dir()
        # As root the server runs as the postgres user; otherwise as ourselves.
        self._run_as: pwd.struct_passwd | None = (
            pwd.getpwnam(SYSTEM_USER) if os.geteuid() == 0 else None
        )

    def __repr__(self) -> str:
        return f"PostgresNode({str(self.config.base_dir)!r}, port={self.config.port})"

    @property
    def password(self) -> str:
        return self.config.password_file.read_text().strip()

    def url(self, database: str | None = None) -> str:
        """``postgresql://`` URL of ``database`` (default: the config's) as the superuser."""
        cfg = self.config
        name = database or cfg.database
        return (
            f"postgresql://{cfg.superuser}:{self.password}@{cfg.listen_address}:{cfg.port}/{name}"
        )

    @property
    def pid(self) -> int | None:
        """The postmaster's pid if our server runs (it may still be starting), else None."""
        try:
            pid = int(self.config.pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            # A recycled pid belongs to some other program; ours names our data directory.
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if str(self.config.data_dir).encode() in args else None

    def is_running(self) -> bool:
        return self.pid is not None

    def _as_server_user(self) -> dict[str, object]:
        """Popen arguments that run a program as the server's user."""
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _own(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _check_reachable(self) -> None:
        """As root: the postgres user must be able to walk down to the data directory."""
        if self._run_as is None:
            return
        for parent in self.config.base_dir.parents:
            if not parent.stat().st_mode & 0o001:
                raise PostgresBootError(
                    f"{parent} is closed to other users, so the {SYSTEM_USER} user cannot reach "
                    f"{self.config.data_dir}: put the server's directory elsewhere (e.g. /tmp)"
                )

    def init(self) -> None:
        """``initdb`` the cluster unless it exists; generates the superuser's password."""
        cfg = self.config
        if (cfg.data_dir / "PG_VERSION").exists():
            return
        cfg.base_dir.mkdir(parents=True, exist_ok=True)
        cfg.base_dir.chmod(0o755)  # mkdtemp's 0700 would shut the server's user out
        self._check_reachable()
        cfg.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._own(cfg.data_dir)
        fd = os.open(cfg.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16) + "\n")
        # initdb reads the password from a file its user can read: one inside PGDATA would
        # make the directory non-empty, so a private one beside it, removed at once.
        pwfile = cfg.base_dir / "initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        self._own(pwfile)
        args = [
            str(self._bin / "initdb"),
            f"--pgdata={cfg.data_dir}",
            f"--username={cfg.superuser}",
            f"--pwfile={pwfile}",
            "--auth-local=trust",  # the socket's directory is the data dir (mode 700)
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
        ]
        if not cfg.fsync:
            args.append("--no-sync")
        try:
            done = subprocess.run(
                args,
                cwd=cfg.base_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                **self._as_server_user(),  # type: ignore[call-overload]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise PostgresBootError(
                f"initdb {cfg.data_dir} failed with code {done.returncode}:\n"
                + (done.stderr or done.stdout).strip()
            )

    def start(self, timeout_s: float = 60) -> None:
        """Init if needed, start the server, wait until it accepts connections, make the database.

        Returns at once if our server already runs. Raises PostgresBootError (with
        the log's complaints) if the port is taken, or the server exits or is not
        ready within ``timeout_s``.
        """
        cfg = self.config
        if self.is_running():
            logger.info("PostgreSQL in %s already running (pid %s)", cfg.data_dir, self.pid)
            return
        if port_in_use(cfg.port):
            raise PostgresBootError(
                f"port {cfg.port} is already in use by another process; refusing to start "
                f"PostgreSQL in {cfg.data_dir}"
            )
        self.init()
        if cfg.listen_address != "127.0.0.1":
            hba = cfg.data_dir / "pg_hba.conf"
            line = "host all all samenet scram-sha-256\n"
            if line not in hba.read_text():
                with hba.open("a") as f:
                    f.write(line)
        settings = {
            "listen_addresses": cfg.listen_address,
            "port": str(cfg.port),
            "unix_socket_directories": str(cfg.data_dir),
            "max_connections": str(cfg.max_connections),
            # Without fsync a commit still reaches the OS before it returns (synchronous_commit
            # stays on), so it survives a crash of the server, just not one of the machine.
            "fsync": "on" if cfg.fsync else "off",
            "full_page_writes": "on" if cfg.fsync else "off",
        }
        args = [str(self._bin / "postgres"), "-D", str(cfg.data_dir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        as_user = self._as_server_user()
        if cfg.command_prefix:
            # The prefix (ip netns exec) needs root, so the switch to the server's user comes
            # after it: setpriv execs, so the pid stays the postmaster's.
            if self._run_as is not None:
                uid, gid = self._run_as.pw_uid, self._run_as.pw_gid
                args = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *args]
            args, as_user = [*cfg.command_prefix, *args], {}
        log_start = cfg.log_file.stat().st_size if cfg.log_file.exists() else 0
        logger.info("starting PostgreSQL in %s on port %s", cfg.data_dir, cfg.port)
        started_at = time.monotonic()
        with open(cfg.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                args,
                cwd=cfg.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() takes every backend
                **as_user,  # type: ignore[call-overload]
            )
        try:
            self._wait_ready(started_at + timeout_s, log_start, timeout_s)
            self.create_database(cfg.database, exist_ok=True)
        except BaseException:
            self.kill()
            raise
        logger.info("PostgreSQL up in %.1f s", time.monotonic() - started_at)

    def _wait_ready(self, deadline: float, log_start: int, timeout_s: float) -> None:
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise self._failure(
                    f"exited during start with status {self._proc.returncode}", log_start
                )
            try:
                lines = self.config.pid_file.read_text().split("\n")
            except OSError:
                lines = []
            # Line 8 of postmaster.pid is the postmaster's state (PostgreSQL 10 and later).
            if len(lines) > 7 and lines[7].strip() == "ready" and lines[0] == str(self._proc.pid):
                return
            if time.monotonic() > deadline:
                raise self._failure(f"was not ready within {timeout_s:g} s", log_start)
            time.sleep(_POLL_INTERVAL_S)

    def _failure(self, reason: str, log_start: int) -> PostgresBootError:
        cfg = self.config
        parts = [f"PostgreSQL in {cfg.data_dir} (port {cfg.port}) {reason}."]
        try:
            with cfg.log_file.open("rb") as f:
                f.seek(log_start)
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        problems = [line for line in lines if _LOG_PROBLEM.search(line)] or lines
        if problems:
            parts.append("Its log says:")
            parts.extend(f"  {line[:200]}" for line in problems[-_MAX_LOG_LINES:])
        parts.append(f"Its log: {cfg.log_file}")
        return PostgresBootError("\n".join(parts))

    def psql(self, sql: str, database: str = "postgres", timeout_s: float = 60) -> str:
        """Run ``sql`` with psql over the unix socket as the superuser; stdout (unaligned).

        Raises RuntimeError if psql fails.
        """
        cfg = self.config
        done = subprocess.run(
            [
                str(self._bin / "psql"),
                "--no-psqlrc",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1",
                f"--host={cfg.data_dir}",
                f"--port={cfg.port}",
                f"--username={cfg.superuser}",
                f"--dbname={database}",
                "--command",
                sql,
            ],
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed with code {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        """Create database ``name`` (lower-case letters, digits, _); its URL."""
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()
        if not (exists and exist_ok):
            self.psql(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing its sessions (a test's leftover pool must not keep it)."""
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self, timeout_s: float = 30) -> None:
        """Fast shutdown (sessions ended, transactions rolled back, clean checkpoint).

        SIGKILLs the server if it has not stopped within ``timeout_s``; no-op if it is
        not running.
        """
        pid = self.pid
        if pid is not None:
            logger.info("stopping PostgreSQL in %s (pid %s)", self.config.data_dir, pid)
            try:
                os.kill(pid, signal.SIGINT)  # SIGINT is "fast" shutdown
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout_s
            while self._alive(pid) and time.monotonic() < deadline:
                time.sleep(_POLL_INTERVAL_S)
            if self._alive(pid):
                logger.warning("PostgreSQL did not stop within %g s; killing it", timeout_s)
                self.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server and every backend (a crash, for fault tests); data is kept."""
        pids = {p for p in (self.pid, self._proc.pid if self._proc else None) if p}
        victims = set(pids)
        for pid in pids:
            # Backends lead sessions of their own (PostgreSQL calls setsid), so a signal to
            # the postmaster's group misses them. Stopped, it can fork no more of them.
            _signal(pid, signal.SIGSTOP)
            victims |= _children(pid)
        for pid in victims:
            _signal(pid, signal.SIGKILL)
        # Every backend too: one still attached to the shared memory would make the next
        # start refuse ("pre-existing shared memory block is still in use").
        deadline = time.monotonic() + 10
        while any(self._alive(p) for p in victims) and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL_S)
        self._reap()

    def restart(self, timeout_s: float = 60) -> None:
        self.stop()
        self.start(timeout_s=timeout_s)

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and pid == self._proc.pid:
            return self._proc.poll() is None
        try:
            # A zombie (dead, not yet reaped by its parent) counts as gone.
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.warning("postgres pid %s did not exit", self._proc.pid)
                return
            self._proc = None


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (a postmaster's backends and helpers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid):  # state, ppid, ...
            found.add(int(entry))
    return found
