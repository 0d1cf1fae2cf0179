"""A private RabbitMQ node: started from our own directory, on our own ports.

Everything the node writes (data, logs, Erlang cookie, pid file) lives under
``NodeConfig.base_dir``; ``/etc/rabbitmq`` and any system-wide node are never
touched. Used by the test suite and by ``scripts/broker`` for development.
Its pieces: ``node_config`` (paths, ports, the files the node reads),
``node_log`` (why a boot failed), ``epmd`` (stopping the epmd our start
launched), ``debian`` (installing rabbitmq-server).

Stdlib only, so it can run before the project's dependencies are installed.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from . import debian, epmd, node_log
from .node_config import ADMIN_USER, NodeConfig
from .ports import accepts_connections, port_in_use
from .process import pid_exists

__all__ = ["BootError", "BrokerNode", "NodeConfig", "PortInUseError", "ensure_installed"]

logger = logging.getLogger(__name__)

RABBITMQ_BIN_DIR = Path("/usr/lib/rabbitmq/bin")
# The real start script: /usr/sbin/rabbitmq-server would switch to the
# ``rabbitmq`` user when run as root, and that user cannot write our dirs.
RABBITMQ_SERVER = RABBITMQ_BIN_DIR / "rabbitmq-server"
RABBITMQCTL = RABBITMQ_BIN_DIR / "rabbitmqctl"

_POLL_INTERVAL_S = 0.2


class PortInUseError(RuntimeError):
    """A port the node needs is already taken by some other process."""


class BootError(RuntimeError):
    """The node did not come up; the message says why, from its logs."""


def ensure_installed() -> None:
    """Install Debian's ``rabbitmq-server`` package unless it is already there.

    Needs root (or passwordless apt). If the package starts a system service on
    5672, that node is the system's business; ours never use its ports.
    """
    debian.ensure([f"{RABBITMQ_SERVER}:rabbitmq-server"])


class BrokerNode:
    """Start, stop and query one private RabbitMQ node."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        # Where this boot's lines begin in the console log and the node's log.
        self._log_starts: dict[Path, int] = {}

    def __repr__(self) -> str:
        return f"BrokerNode({self.config.node_name!r}, {self.config.amqp_endpoint!r})"

    @property
    def amqp_url(self) -> str:
        """The AMQP URL of the node's administrator."""
        return self.config.amqp_url

    @property
    def pid(self) -> int | None:
        """OS pid of our running node, or None."""
        try:
            pid = int(self.config.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_our_process(pid) else None

    def is_running(self) -> bool:
        """True if the node from our pid file is alive (it may still be booting)."""
        return self.pid is not None

    def _is_our_process(self, pid: int) -> bool:
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.parent.parent.exists():  # /proc is available
            try:
                args = cmdline.read_bytes().split(b"\0")
            except OSError:
                return False
            # erl passes HOME on as "-home <dir>", and our HOME is unique to base_dir.
            # Zombies have an empty cmdline; a recycled pid will not match.
            home = str(self.config.home_dir).encode()
            return any(a == b"-home" and b == home for a, b in itertools.pairwise(args))
        return pid_exists(pid)

    def env(self) -> dict[str, str]:
        """Environment for rabbitmq-server and rabbitmqctl aimed at our node."""
        return self.config.env()

    def _check_ports_free(self) -> None:
        cfg = self.config
        ports = {"AMQP": cfg.amqp_port, "Erlang distribution": cfg.dist_port}
        if cfg.management_port is not None:
            ports["management"] = cfg.management_port
        for what, port in ports.items():
            if port_in_use(port):
                raise PortInUseError(
                    f"{what} port {port} is already in use by another process; "
                    f"refusing to start RabbitMQ node {cfg.node_name}"
                )

    def _failure(self, reason: str) -> BootError:
        cfg = self.config
        parts = [f"RabbitMQ node {cfg.node_name} {reason}."]
        errors = node_log.first_errors(self._log_starts)
        if errors:
            parts.append("First errors in its log:")
            parts.extend(f"  {line}" for line in errors)
        parts.append(f"Its logs: {cfg.console_log} and {cfg.server_log}")
        return BootError("\n".join(parts))

    def start(self, timeout_s: float = 90) -> None:
        """Start the node and wait until it accepts AMQP connections.

        Returns at once if our node is already running. Raises PortInUseError if
        one of its ports is taken by something else (before launching anything),
        BootError (with the first errors of its log) if the node stops during boot or
        does not come up within ``timeout_s``.
        """
        cfg = self.config
        if self.is_running():
            logger.info("RabbitMQ node %s already running (pid %s)", cfg.node_name, self.pid)
            return
        self._check_ports_free()
        # Data from before the node had an administrator of its own: RabbitMQ made guest then.
        upgrading = not cfg.admin_password_file.exists() and _has_files(cfg.mnesia_dir)
        cfg.write_files()
        cfg.pid_file.unlink(missing_ok=True)
        if not epmd.is_running(cfg.epmd_port):
            cfg.epmd_marker.touch()  # the epmd our node is about to start is ours to stop
        logger.info("starting RabbitMQ node %s in %s", cfg.node_name, cfg.base_dir)
        self._log_starts = {p: node_log.size(p) for p in (cfg.console_log, cfg.server_log)}
        started_at = time.monotonic()
        deadline = started_at + timeout_s
        with open(cfg.console_log, "ab") as console:
            self._proc = subprocess.Popen(
                [*cfg.command_prefix, str(RABBITMQ_SERVER)],
                cwd=cfg.base_dir,
                # The script then execs the VM instead of waiting on it in a shell that
                # always exits 0: we see the node's own exit status.
                env={**self.env(), "RUNNING_UNDER_SYSTEMD": "true"},
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            while not accepts_connections(cfg.amqp_port, host=cfg.host):
                if self._proc.poll() is not None:
                    raise self._failure(
                        f"stopped during boot with exit status {self._proc.returncode}"
                    )
                if time.monotonic() > deadline:
                    raise self._failure(f"did not open AMQP port within {timeout_s:g} s")
                time.sleep(_POLL_INTERVAL_S)
            remaining_s = max(5, int(deadline - time.monotonic()))
            try:
                self.rabbitmqctl("await_startup", "--timeout", str(remaining_s))
            except RuntimeError as exc:
                raise self._failure(f"did not finish booting ({exc})") from None
            if upgrading:
                self._replace_guest()
        except BaseException:
            self._kill()
            self._release_epmd()
            raise
        logger.info(
            "RabbitMQ node %s up in %.1f s at %s",
            cfg.node_name,
            time.monotonic() - started_at,
            cfg.amqp_endpoint,
        )

    def _replace_guest(self) -> None:
        """Give a node made before it had an administrator one, and delete its ``guest``.

        Its ``rabbitmq.conf`` names the administrator too late: RabbitMQ creates the
        default user only with a new database. If a step fails, the password file goes,
        so the next start tries again.
        """
        cfg = self.config
        try:
            # Each rabbitmqctl call starts an Erlang VM: no list_users first.
            try:
                self.rabbitmqctl("add_user", ADMIN_USER, cfg.admin_password)
            except RuntimeError as exc:
                if "already exists" not in str(exc):
                    raise
                self.rabbitmqctl("change_password", ADMIN_USER, cfg.admin_password)
            self.rabbitmqctl("set_user_tags", ADMIN_USER, "administrator")
            self.rabbitmqctl("set_permissions", "-p", "/", ADMIN_USER, ".*", ".*", ".*")
            try:
                self.rabbitmqctl("delete_user", "guest")
            except RuntimeError as exc:
                if "does not exist" not in str(exc):
                    raise
        except BaseException:
            cfg.admin_password_file.unlink(missing_ok=True)
            raise
        logger.info("RabbitMQ node %s: user %s made, guest deleted", cfg.node_name, ADMIN_USER)

    def stop(self, timeout_s: float = 60) -> None:
        """Stop our node (the one in our pid file); no-op if it is not running."""
        cfg = self.config
        pid = self.pid
        if pid is None:
            self._reap()
            cfg.pid_file.unlink(missing_ok=True)
            self._release_epmd()
            return
        logger.info("stopping RabbitMQ node %s (pid %s)", cfg.node_name, pid)
        try:
            # Without the pid file argument: rabbitmqctl would wait for that pid to vanish,
            # and the VM, our child, stays a zombie until we reap it below.
            self.rabbitmqctl("stop", timeout_s=timeout_s)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            logger.warning("rabbitmqctl stop failed (%s); sending signals", exc)
        if not self._wait_gone(pid, 30):
            self._kill()
        self._reap()
        cfg.pid_file.unlink(missing_ok=True)
        self._release_epmd()

    def _release_epmd(self) -> None:
        """Stop the epmd our start launched, unless another node still uses it."""
        marker = self.config.epmd_marker
        if marker.exists():
            epmd.stop_if_unused(self.config.epmd_port)
            marker.unlink(missing_ok=True)

    def restart(self, timeout_s: float = 90) -> None:
        """Stop and start again, keeping the data (queues, users, ...)."""
        self.stop()
        self.start(timeout_s=timeout_s)

    def rabbitmqctl(self, *args: str, timeout_s: float = 60) -> str:
        """Run ``rabbitmqctl <args>`` against our node; return stdout.

        Raises RuntimeError on a non-zero exit status.
        """
        cmd = [
            *self.config.command_prefix,
            str(RABBITMQCTL),
            "--node",
            self.config.node_name,
            *args,
        ]
        result = subprocess.run(
            cmd,
            env=self.env(),
            cwd=self.config.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed with code {result.returncode}: {output}"
            )
        return result.stdout

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._is_our_process(pid):
            if time.monotonic() > deadline:
                return False
            self._reap(block=False)
            time.sleep(_POLL_INTERVAL_S)
        return True

    def _kill(self) -> None:
        """SIGTERM, then SIGKILL, the process group(s) of our node and start script."""
        pids = [p for p in (self.pid, self._proc.pid if self._proc else None) if p]
        groups = set()
        for pid in pids:
            try:
                groups.add(os.getpgid(pid))
            except ProcessLookupError:
                pass
        groups.discard(os.getpgrp())  # never signal our own group
        for sig, grace_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if all(self._gone(p) for p in pids):
                break
            for group in groups:
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while not all(self._gone(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(_POLL_INTERVAL_S)
        self._reap()

    def _gone(self, pid: int) -> bool:
        if self._proc is not None and pid == self._proc.pid:
            return self._proc.poll() is not None
        return not self._is_our_process(pid)

    def _reap(self, block: bool = True) -> None:
        """Collect our start script's exit status so it does not linger as a zombie."""
        if self._proc is None:
            return
        if block:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.warning("start script pid %s did not exit", self._proc.pid)
                return
        elif self._proc.poll() is None:
            return
        self._proc = None


def _has_files(directory: Path) -> bool:
    try:
        return any(directory.iterdir())
    except FileNotFoundError:
        return False


def config_from_env(environ: Mapping[str, str] | None = None) -> NodeConfig:
    """The node's config from TASKGATE_* (``infra.settings.NodeSettings``; default os.environ)."""
    from .settings import NodeSettings

    settings = NodeSettings.from_env(environ)
    try:
        return NodeConfig(
            base_dir=settings.var_dir / "broker",
            amqp_port=settings.amqp_port,
            dist_port=settings.dist_port,
            management_port=settings.management_port,
            epmd_port=settings.epmd_port,
            bind_address=settings.broker_address,
        )
    except ValueError as exc:  # the only value NodeConfig checks
        raise ValueError(f"TASKGATE_BROKER_ADDRESS: {exc}") from None
