"""A private three-node RabbitMQ cluster: three private nodes that find each other by config.

Each member is an ``infra.node.BrokerNode`` with its own directories and ports;
what makes them one cluster is in their configuration files: the same Erlang
cookie, and classic config peer discovery listing all three node names. So they
boot in parallel (about as fast as one node, where ``rabbitmqctl join_cluster``
would boot them one after another and restart two); RabbitMQ's peer discovery
lock lets one node form the cluster and the others join it. ``start`` returns
once every member runs and sees the other two, so a quorum queue declared
afterwards gets a replica on each (its initial group size is the cluster's size).

A partition leaves the minority side paused (``pause_minority``): with three
nodes, a node cut off from the other two stops serving instead of accepting
work the majority never sees.

Used by the cluster tests (tests/cluster/) and by ``scripts/cluster`` for development.
Stdlib only, so it can run before the project's dependencies are installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .netns import Host
from .node import RABBITMQ_BIN_DIR, BootError, BrokerNode, ensure_installed
from .node_config import (
    ADMIN_USER,
    DEFAULT_BIND_ADDRESS,
    DEFAULT_EPMD_PORT,
    NodeConfig,
    write_private,
    write_secret,
)
from .ports import free_port, peer_ports

__all__ = ["CLUSTER_SIZE", "BrokerCluster", "ClusterNodeConfig", "spread_url"]

logger = logging.getLogger(__name__)

CLUSTER_SIZE = 3
RABBITMQ_QUEUES = RABBITMQ_BIN_DIR / "rabbitmq-queues"
_POLL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class ClusterNodeConfig(NodeConfig):
    """A node's config plus what makes it a member: the cluster's cookie, administrator
    password and member names."""

    cookie: str = ""
    admin_pass: str = ""
    peers: tuple[str, ...] = field(default=())

    def write_files(self) -> None:
        # The cluster's secrets first: the single node's write_files keeps files that exist.
        # One administrator password for all: RabbitMQ makes the user with the first node's
        # database, which the others join.
        self.home_dir.mkdir(parents=True, exist_ok=True)
        write_secret(self.home_dir / ".erlang.cookie", self.cookie, mode=0o400)
        write_secret(self.admin_password_file, self.admin_pass + "\n", mode=0o600)
        super().write_files()
        conf = self.base_dir / "rabbitmq.conf"
        lines = [
            "cluster_formation.peer_discovery_backend = classic_config",
            *(
                f"cluster_formation.classic_config.nodes.{i} = {peer}"
                for i, peer in enumerate(self.peers, 1)
            ),
            # Three nodes: the side with one node pauses, the majority goes on.
            "cluster_partition_handling = pause_minority",
        ]
        write_private(conf, conf.read_text() + "\n".join(lines) + "\n")


def spread_url(url: str, ports: Iterable[int | tuple[str, int]]) -> str:
    """``url`` (one node's) once per port, or per (address, port), comma-separated: the
    AMQP_URL naming every member."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    userinfo = host.rpartition("@")[0] + "@" if "@" in host else ""
    netlocs = [f"{userinfo}{p[0]}:{p[1]}" if isinstance(p, tuple) else f"{host}:{p}" for p in ports]
    return ",".join(
        urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        for netloc in netlocs
    )


class BrokerCluster:
    """Start, stop, kill and query the three nodes of one private cluster."""

    def __init__(self, configs: Iterable[ClusterNodeConfig]) -> None:
        self.nodes = [BrokerNode(config) for config in configs]

    @classmethod
    def configs(
        cls,
        base_dir: Path,
        ports: Iterable[tuple[int, int, int | None]],
        *,
        epmd_port: int | None = None,
        bind_address: str = DEFAULT_BIND_ADDRESS,
        hosts: Sequence[Host] = (),
    ) -> list[ClusterNodeConfig]:
        """Members under ``base_dir/node-<n>`` on the (AMQP, distribution, management) ports.

        With ``hosts`` (infra.netns), member n runs in host n, named ``taskgate@<its address>``,
        every listener on that address.

        The cookie and the administrator's password are kept in ``base_dir`` (mode 400 and
        600), so a cluster started again is the same one.
        """
        base_dir = Path(base_dir).absolute()
        base_dir.mkdir(parents=True, exist_ok=True)
        # Hex: a password starting with "-" would be read as an option by rabbitmqctl.
        write_secret(base_dir / "cookie", secrets.token_hex(20).upper(), mode=0o400)
        write_secret(base_dir / "admin.password", secrets.token_hex(24), mode=0o600)
        cookie = (base_dir / "cookie").read_text().strip()
        admin_pass = (base_dir / "admin.password").read_text().strip()
        ports = list(ports)
        if hosts:
            names = tuple(f"taskgate@{host.address}" for host in hosts)
            where = [
                {"bind_address": h.address, "dist_address": h.address, "command_prefix": h.prefix}
                for h in hosts
            ]
        else:
            names = tuple(f"taskgate-{amqp}@localhost" for amqp, _, _ in ports)
            where = [{"bind_address": bind_address}] * len(ports)
        return [
            ClusterNodeConfig(
                base_dir=base_dir / f"node-{n}",
                amqp_port=amqp,
                dist_port=dist,
                management_port=management,
                epmd_port=DEFAULT_EPMD_PORT if epmd_port is None else epmd_port,
                node_name=name,
                cookie=cookie,
                admin_pass=admin_pass,
                peers=names,
                **place,  # type: ignore[arg-type]
            )
            for n, ((amqp, dist, management), name, place) in enumerate(
                zip(ports, names, where, strict=True), 1
            )
        ]

    @classmethod
    def on_free_ports(cls, base_dir: Path, size: int = CLUSTER_SIZE) -> BrokerCluster:
        """A cluster on ports free right now (for tests and benchmarks)."""
        return cls(cls.configs(base_dir, [(free_port(), free_port(), None) for _ in range(size)]))

    def __repr__(self) -> str:
        return f"BrokerCluster({[n.config.node_name for n in self.nodes]!r})"

    @property
    def amqp_url(self) -> str:
        """Every member's URL, comma-separated (the first member's credentials)."""
        return self.spread(self.nodes[0].amqp_url)

    @property
    def amqp_ports(self) -> list[int]:
        return [node.config.amqp_port for node in self.nodes]

    def spread(self, url: str) -> str:
        """A URL for one member (with some user's credentials) made into one naming every member."""
        return spread_url(url, [(n.config.url_host, n.config.amqp_port) for n in self.nodes])

    def rabbitmqctl(self, *args: str, timeout_s: float = 60) -> str:
        """``rabbitmqctl`` against the first running member (users and queues are cluster-wide)."""
        errors = []
        for node in self.nodes:
            if node.is_running():
                try:
                    return node.rabbitmqctl(*args, timeout_s=timeout_s)
                except RuntimeError as exc:
                    errors.append(str(exc))
        raise RuntimeError("; ".join(errors) or "no member of the cluster is running")

    def start(self, timeout_s: float = 180) -> None:
        """Boot every member at once; return when each runs and sees all the others.

        Raises BootError (naming the member and its log) if one does not come up.
        """
        started = time.monotonic()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            futures = [pool.submit(node.start, timeout_s) for node in self.nodes]
            errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        if failed:
            raise failed[0]
        self.wait_formed(deadline_s=started + timeout_s)
        logger.info(
            "RabbitMQ cluster of %d up in %.1f s at %s",
            len(self.nodes),
            time.monotonic() - started,
            ",".join(node.config.amqp_endpoint for node in self.nodes),
        )

    def wait_formed(self, deadline_s: float | None = None) -> None:
        """Until every member reports all members running (``deadline_s``: monotonic, 120 s)."""
        deadline_s = deadline_s if deadline_s is not None else time.monotonic() + 120
        names = {node.config.node_name for node in self.nodes}
        while True:
            seen = {node.config.node_name: self.running_nodes(node) for node in self.nodes}
            if all(running == names for running in seen.values()):
                return
            if time.monotonic() > deadline_s:
                raise BootError(f"the cluster did not form: each member sees {seen}")
            time.sleep(_POLL_INTERVAL_S)

    def wait_quorum_safe(self, timeout_s: float = 180) -> None:
        """Until losing any one member would leave every quorum queue its majority.

        After a member (re)started, its replicas must be back before another member may go:
        ``rabbitmq-queues check_if_node_is_quorum_critical`` on each, as RabbitMQ's upgrade
        guide does before stopping a node.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            critical = [node.config.node_name for node in self.nodes if self._quorum_critical(node)]
            if not critical:
                return
            if time.monotonic() > deadline:
                raise BootError(f"quorum queues still depend on {critical} after {timeout_s:g} s")
            time.sleep(_POLL_INTERVAL_S)

    @staticmethod
    def _quorum_critical(node: BrokerNode) -> bool:
        try:
            check = ["--node", node.config.node_name, "check_if_node_is_quorum_critical"]
            result = subprocess.run(
                [*node.config.command_prefix, str(RABBITMQ_QUEUES), *check],
                env=node.env(),
                cwd=node.config.base_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return True
        return result.returncode != 0

    @staticmethod
    def running_nodes(node: BrokerNode) -> set[str]:
        """The members ``node`` sees running (none if it does not answer)."""
        try:
            status = json.loads(node.rabbitmqctl("cluster_status", "--formatter", "json"))
        # A node still booting, or too busy to answer in time (a loaded machine): ask again.
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            return set()
        return set(status.get("running_nodes", []))

    def stop(self) -> None:
        """Stop every member that runs (in parallel: none waits for the others to stop)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))

    def kill(self, node: BrokerNode) -> None:
        """SIGKILL the member's VM, as a crash or a lost host would (no clean shutdown)."""
        pid = node.pid
        if pid is None:
            raise RuntimeError(f"{node.config.node_name} is not running")
        logger.info("killing RabbitMQ node %s (pid %s)", node.config.node_name, pid)
        os.kill(pid, signal.SIGKILL)
        node.stop()  # reaps the start script and cleans the pid file; the VM is gone

    def node_of(self, pid: int) -> BrokerNode:
        """The member the client process ``pid`` is connected to (over exactly one connection).

        Read from the client's sockets: ``rabbitmqctl list_connections`` took over a minute
        on a loaded machine.
        """
        ports = [port for port in peer_ports(pid) if port in self.amqp_ports]
        if len(ports) != 1:
            raise LookupError(f"process {pid} is connected to {len(ports)} members ({ports})")
        return self.nodes[self.amqp_ports.index(ports[0])]

    def queue_members(self) -> dict[str, list[str]]:
        """Each quorum queue of the default vhost and the members that keep a replica of it."""
        listing = self.rabbitmqctl("list_queues", "name", "type", "members", "--formatter", "json")
        return {q["name"]: q["members"] for q in json.loads(listing) if q["type"] == "quorum"}


def cluster_from_env() -> BrokerCluster:
    """The development cluster: ``$TASKGATE_VAR/cluster/node-{1,2,3}``, on the private node's
    ports plus 1, 2 and 3 (so it can run beside ``scripts/broker``'s node)."""
    from .settings import NodeSettings

    settings = NodeSettings.from_env()
    management = settings.management_port
    ports = [
        (
            settings.amqp_port + n,
            settings.dist_port + n,
            management + n if management is not None else None,
        )
        for n in range(1, CLUSTER_SIZE + 1)
    ]
    return BrokerCluster(
        BrokerCluster.configs(settings.var_dir / "cluster", ports, epmd_port=settings.epmd_port)
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.cluster start|stop|status|url``; config from TASKGATE_* env.

    ``url`` prints the administrator's AMQP URL naming every member (with its password);
    the others print no password.
    """
    parser = argparse.ArgumentParser(
        prog="python -m infra.cluster",
        description="Manage the private 3-node RabbitMQ cluster under $TASKGATE_VAR/cluster.",
    )
    parser.add_argument("command", choices=["start", "stop", "status", "url"])
    parser.add_argument("--timeout-s", type=float, default=180, help="start timeout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cluster = cluster_from_env()
    try:
        if args.command == "url":
            print(cluster.amqp_url)
            return 0
        if args.command == "status":
            up = 0
            for node in cluster.nodes:
                running = sorted(cluster.running_nodes(node)) if node.is_running() else []
                up += bool(running)
                state = f"running, sees {', '.join(running)}" if running else "stopped"
                print(f"{node.config.node_name}: {state}")
            return 0 if up == len(cluster.nodes) else 3
        if args.command == "stop":
            cluster.stop()
            print("cluster: stopped")
            return 0
        ensure_installed()
        cluster.start(timeout_s=args.timeout_s)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(",".join(node.config.amqp_endpoint for node in cluster.nodes))  # no password
    admin_file = cluster.nodes[0].config.admin_password_file.parent.parent / "admin.password"
    print(
        f"administrator: {ADMIN_USER}, password in {admin_file}"
        " (the url command prints its AMQP URL)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
