"""Where a private RabbitMQ node keeps its files, which ports it uses, and the files it reads.

Stdlib only, so it can run before the project's dependencies are installed.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port

# Erlang's port mapper daemon's port unless ERL_EPMD_PORT says otherwise.
DEFAULT_EPMD_PORT = 4369
# Where the node's client listeners (AMQP, AMQPS, management) bind unless told otherwise.
DEFAULT_BIND_ADDRESS = "127.0.0.1"
# Where Erlang distribution and an epmd the node starts listen (see NodeConfig).
LOOPBACK = "127.0.0.1"
# The administrator the node creates at its first boot instead of RabbitMQ's ``guest``.
ADMIN_USER = "admin"
# How soon an at-least-once dead-lettering queue offers a refused message again (see write_files).
DEAD_LETTER_RETRY_MS = 5_000


@dataclass(frozen=True)
class TlsListener:
    """An AMQPS listener: its port and the node's PEM files.

    Peers are verified when they show a certificate, not required to show one, so
    a client certificate can be the login (EXTERNAL, its common name the user name).
    """

    port: int
    cacertfile: Path
    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class NodeConfig:
    """Where a node keeps its files, which addresses and ports it listens on, who administers it.

    The client listeners (AMQP, AMQPS, management) bind to ``bind_address`` only.
    Erlang distribution, and an epmd the node starts, bind to loopback whatever
    ``bind_address`` says: the node is named ``...@localhost``, so only this host can
    address it (and rabbitmqctl reaches it there). The node has no ``guest``: at its
    first boot RabbitMQ creates ``admin`` instead, with the password that
    ``write_files`` generated into ``admin_password_file`` (mode 600), and that user
    logs in over loopback only (``loopback_users``), as RabbitMQ's access-control
    guide has ``guest`` do.
    """

    base_dir: Path
    amqp_port: int
    dist_port: int
    management_port: int | None = None  # None: management plugin disabled (faster boot)
    node_name: str = field(default="")  # default: "taskgate-<amqp_port>@localhost"
    # The epmd (Erlang's port mapper) this node registers with.
    epmd_port: int = DEFAULT_EPMD_PORT
    tls: TlsListener | None = None  # None: plain AMQP only
    # An IP address: "0.0.0.0" or "::" for every interface.
    bind_address: str = DEFAULT_BIND_ADDRESS
    # Where Erlang distribution and the epmd the node starts listen. Other than loopback: the
    # node takes a long name (RABBITMQ_USE_LONGNAME), so its name can be ``name@<this address>``.
    dist_address: str = LOOPBACK
    # Put before every command run for the node, e.g. ``ip netns exec <ns>`` (infra.netns).
    command_prefix: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_dir", Path(self.base_dir).absolute())
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError:
            raise ValueError(f"bind address {self.bind_address!r} is not an IP address") from None
        if not self.node_name:
            object.__setattr__(self, "node_name", f"taskgate-{self.amqp_port}@localhost")

    @classmethod
    def on_free_ports(cls, base_dir: Path, *, management: bool = False) -> NodeConfig:
        """A config on currently free ports (for tests)."""
        return cls(
            base_dir=Path(base_dir),
            amqp_port=free_port(),
            dist_port=free_port(),
            management_port=free_port() if management else None,
        )

    @property
    def host(self) -> str:
        """The address clients on this host reach the listeners at (loopback for a wildcard)."""
        address = ipaddress.ip_address(self.bind_address)
        if address.is_unspecified:
            address = ipaddress.ip_address("::1" if address.version == 6 else LOOPBACK)
        return str(address)

    @property
    def url_host(self) -> str:
        """``host`` as it goes into a URL (an IPv6 address in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def amqp_endpoint(self) -> str:
        """The AMQP listener's URL without credentials (safe to print)."""
        return f"amqp://{self.url_host}:{self.amqp_port}/"

    @property
    def admin_password_file(self) -> Path:
        return self.base_dir / "admin.password"

    @property
    def admin_password(self) -> str:
        """The administrator's password; ValueError before the node's first start made it."""
        try:
            return self.admin_password_file.read_text().strip()
        except FileNotFoundError:
            raise ValueError(
                f"node {self.node_name} has no administrator yet (no {self.admin_password_file}):"
                " start it first"
            ) from None

    @property
    def amqp_url(self) -> str:
        """The AMQP URL of the node's administrator."""
        return f"amqp://{ADMIN_USER}:{self.admin_password}@{self.url_host}:{self.amqp_port}/"

    @property
    def amqps_url(self) -> str:
        """The TLS listener's URL for the host name ``localhost``; ValueError if it has none."""
        if self.tls is None:
            raise ValueError(f"node {self.node_name} has no TLS listener")
        return f"amqps://{ADMIN_USER}:{self.admin_password}@localhost:{self.tls.port}/"

    @property
    def management_url(self) -> str | None:
        """The management plugin's HTTP address (None without the plugin)."""
        if self.management_port is None:
            return None
        return f"http://{self.url_host}:{self.management_port}/"

    @property
    def home_dir(self) -> Path:
        return self.base_dir / "home"

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "log"

    @property
    def mnesia_dir(self) -> Path:
        return self.base_dir / "mnesia"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "rabbitmq.pid"

    @property
    def server_log(self) -> Path:
        """The node's own log file."""
        return self.log_dir / "rabbit.log"

    @property
    def console_log(self) -> Path:
        """stdout/stderr of the start script (early boot failures land here)."""
        return self.log_dir / "console.log"

    @property
    def epmd_marker(self) -> Path:
        """Exists while the epmd this node uses is one that our start launched."""
        return self.base_dir / "epmd.ours"

    def env(self) -> dict[str, str]:
        """Environment for rabbitmq-server and rabbitmqctl aimed at this node."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RABBITMQ_") and k not in {"CONF_ENV_FILE", "ERL_LIBS"}
        }
        env.update(
            HOME=str(self.home_dir),
            ERL_EPMD_PORT=str(self.epmd_port),
            # An epmd our node starts listens on loopback only (it always adds loopback).
            ERL_EPMD_ADDRESS=self.dist_address,
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.mnesia_dir),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_CONFIG_FILE=str(self.base_dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base_dir / "enabled_plugins"),
        )
        if self.dist_address != LOOPBACK:
            env["RABBITMQ_USE_LONGNAME"] = "true"
        return env

    def write_files(self) -> None:
        """Create the node's directories, cookie and configuration files."""
        for d in (self.base_dir, self.home_dir, self.log_dir, self.mnesia_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Both kept across restarts. Hex: a password starting with "-" would be read as an
        # option by rabbitmqctl.
        write_secret(self.home_dir / ".erlang.cookie", secrets.token_hex(20).upper(), mode=0o400)
        write_secret(self.admin_password_file, secrets.token_hex(24) + "\n", mode=0o600)
        address = self.bind_address
        conf = [
            f"listeners.tcp.1 = {address}:{self.amqp_port}",
            # Used at the first boot only, when the node's database is made: our administrator
            # instead of guest/guest (this file is mode 600 for that reason).
            f"default_user = {ADMIN_USER}",
            f"default_pass = {self.admin_password}",
            "default_user_tags.administrator = true",
            f"loopback_users.{ADMIN_USER} = true",
            "log.console = false",
            "log.file = rabbit.log",
            "log.file.level = info",
            # CQv2 (opt-in on 3.10, the default from 3.13): the status journal takes every
            # persistent status event, and v2 spends less broker CPU on each.
            "classic_queue.default_version = 2",
        ]
        if self.management_port is not None:
            conf += [
                f"management.tcp.ip = {address}",
                f"management.tcp.port = {self.management_port}",
            ]
        plugins = [
            "rabbitmq_consistent_hash_exchange"
        ]  # status journal shards (workers/topology.py)
        if self.management_port is not None:
            plugins.append("rabbitmq_management")
        if self.tls is not None:
            # Keys both 3.10 (Erlang 25) and 4.0 (Erlang 27) accept.
            conf += [
                f"listeners.ssl.1 = {address}:{self.tls.port}",
                f"ssl_options.cacertfile = {self.tls.cacertfile}",
                f"ssl_options.certfile = {self.tls.certfile}",
                f"ssl_options.keyfile = {self.tls.keyfile}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
                # EXTERNAL: a client certificate's common name is the user it logs in as.
                "auth_mechanisms.1 = PLAIN",
                "auth_mechanisms.2 = AMQPLAIN",
                "auth_mechanisms.3 = EXTERNAL",
                "ssl_cert_login_from = common_name",
            ]
            plugins.append("rabbitmq_auth_mechanism_ssl")
        write_private(self.base_dir / "rabbitmq.conf", "\n".join(conf) + "\n")
        # A retry tier keeps an expired retry that its full task queue refused and offers it
        # again after this many ms (RabbitMQ's default: 180 s, on 3.10 as on 4.0).
        (self.base_dir / "advanced.config").write_text(
            f"[{{rabbit, [{{dead_letter_worker_publisher_confirm_timeout, "
            f"{DEAD_LETTER_RETRY_MS}}}]}}].\n"
        )
        # No scheduler busy-waiting: spinning Erlang schedulers take CPU from the
        # Python processes that share these cores (RabbitMQ's runtime tuning guide).
        # Erlang distribution on loopback (or dist_address) only (RabbitMQ's networking guide).
        interface = "{" + self.dist_address.replace(".", ",") + "}"
        (self.base_dir / "rabbitmq-env.conf").write_text(
            'SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none'
            f' -kernel inet_dist_use_interface {interface}"\n'
        )
        (self.base_dir / "enabled_plugins").write_text(f"[{','.join(plugins)}].\n")


def write_secret(path: Path, text: str, *, mode: int) -> None:
    """Create ``path`` with ``text``, readable by its owner only; keep it if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_private(path: Path, text: str) -> None:
    """Write ``path`` whole, readable and writable by its owner only (it holds a secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file an older version wrote may be world-readable
    with os.fdopen(fd, "w") as f:
        f.write(text)
