"""Several hosts on one machine: Linux network namespaces on one bridge (iproute2, as root).

Each ``Host`` is a network namespace with one veth interface on a private /24
(``10.<a>.<b>.0/24``, from our pid, one no route uses yet); the other end of every
veth is on a bridge in the root namespace, which holds ``.1``, so this process (the
test driver) reaches every host and every host reaches services bound to ``.1``.
Processes run in a host with ``nsenter --net`` (not ``ip netns exec`` or ``ip -n``:
those remount ``/`` and ``/sys`` first, which fails where ``/`` is no mount point, as
in a chroot); ``power_off`` is a host losing power; ``isolate`` blackholes routes to
some peers inside the host's namespace (a partition both ways for TCP: nothing the
host sends to them leaves, so neither side completes a handshake or an
acknowledgement) until ``heal``.

Everything is named ``tg<pid>...``, so ``remove_stale`` (run by ``Network.create``)
removes what a killed run of ours left behind, and never what a live one uses.
Stdlib only.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .process import pid_exists

__all__ = ["Host", "Network", "remove_stale"]

logger = logging.getLogger(__name__)

_PREFIX = "tg"
_OURS = re.compile(rf"^{_PREFIX}(\d+)[bv-]")


def _enter(netns: str) -> tuple[str, ...]:
    """What runs a command inside network namespace ``netns`` when put before it."""
    return ("nsenter", f"--net=/run/netns/{netns}")


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = [*(_enter(netns) if netns else ()), "ip", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass(frozen=True)
class Host:
    """One namespace: its name, its address on the network, what runs in it."""

    name: str
    netns: str
    address: str

    @property
    def prefix(self) -> tuple[str, ...]:
        """What runs a command inside this host when put before it."""
        return _enter(self.netns)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host."""
        return [*self.prefix, *argv]

    def pids(self) -> list[int]:
        """Every process whose network namespace is this host's."""
        return [int(p) for p in _ip("netns", "pids", self.netns, check=False).split()]

    def kill_all(self) -> int:
        """SIGKILL everything running in this host, as a power loss would; how many went."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        logger.info("host %s: killed %d processes", self.name, len(pids))
        return len(pids)

    def power_off(self) -> int:
        """Down its link first (no FIN or RST goes out: peers notice only by timeouts), then
        ``kill_all``; how many processes went."""
        _ip("link", "set", "eth0", "down", netns=self.netns)
        return self.kill_all()

    def power_on(self) -> None:
        """Its link up again (start its processes anew)."""
        _ip("link", "set", "eth0", "up", netns=self.netns)

    def isolate(self, peers: Iterable[Host]) -> None:
        """Cut this host off from ``peers`` (it still reaches and is reached by the rest)."""
        for peer in peers:
            _ip("route", "add", "blackhole", f"{peer.address}/32", netns=self.netns)

    def heal(self, peers: Iterable[Host]) -> None:
        """Undo ``isolate(peers)``."""
        for peer in peers:
            _ip("route", "del", "blackhole", f"{peer.address}/32", netns=self.netns, check=False)


class Network:
    """A bridge and hosts on it; ``close`` kills what runs in them and removes everything."""

    def __init__(self, tag: str, subnet: str, hosts: dict[str, Host]) -> None:
        self.tag = tag
        self.subnet = subnet
        self.hosts = hosts

    @property
    def gateway_address(self) -> str:
        """The root namespace's address on the bridge (services bound here serve every host)."""
        return f"{self.subnet}.1"

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    @classmethod
    def create(cls, names: Iterable[str]) -> Network:
        """One host per name, at ``.2``, ``.3``, ... in name order."""
        remove_stale()
        pid = os.getpid()
        tag = f"{_PREFIX}{pid}"
        # From our pid, so concurrent runs differ; past any subnet this machine routes already.
        routed = _ip("-4", "route", check=False)
        n = pid & 0xFFFF
        while f"10.{n >> 8}.{n & 0xFF}.0/" in routed:
            n = (n + 1) & 0xFFFF
        subnet = f"10.{n >> 8}.{n & 0xFF}"
        network = cls(tag, subnet, {})
        bridge = f"{tag}b"
        try:
            _ip("link", "add", bridge, "type", "bridge")
            _ip("addr", "add", f"{network.gateway_address}/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
            for n, name in enumerate(names, 2):
                host = Host(name, f"{tag}-{name}", f"{subnet}.{n}")
                network.hosts[name] = host
                _ip("netns", "add", host.netns)
                _ip(
                    "link", "add", f"{tag}v{n}", "type", "veth", "peer", "eth0", "netns", host.netns
                )
                _ip("link", "set", f"{tag}v{n}", "master", bridge, "up")
                _ip("addr", "add", f"{host.address}/24", "dev", "eth0", netns=host.netns)
                _ip("link", "set", "eth0", "up", netns=host.netns)
                _ip("link", "set", "lo", "up", netns=host.netns)
        except BaseException:
            network.close()
            raise
        logger.info(
            "network %s.0/24: %s", subnet, {h.name: h.address for h in network.hosts.values()}
        )
        return network

    def close(self) -> None:
        """Kill every process in our hosts, delete the namespaces, the veths and the bridge."""
        _remove(self.tag)


def _remove(tag: str) -> None:
    for netns in _ip("netns", "list", check=False).split("\n"):
        name = netns.split(" ")[0]
        if name.startswith(f"{tag}-"):
            Host(name, name, "").kill_all()
            _ip("netns", "delete", name, check=False)
    # Deleting a namespace deletes the veth ends in it and so their peers; then the bridge.
    for line in _ip("-o", "link", "show", check=False).splitlines():
        link = line.split(":")[1].strip().split("@")[0]
        if link.startswith(tag) and link[len(tag) :][:1] in ("b", "v"):
            _ip("link", "delete", link, check=False)


def remove_stale() -> None:
    """Remove the namespaces and links of runs whose process is gone."""
    names = [n.split(" ")[0] for n in _ip("netns", "list", check=False).split("\n") if n]
    names += [
        line.split(":")[1].strip().split("@")[0]
        for line in _ip("-o", "link", "show", check=False).splitlines()
    ]
    for pid in {int(m.group(1)) for n in names if (m := _OURS.match(n))}:
        if pid != os.getpid() and not pid_exists(pid):
            logger.info("removing the network of a dead run (pid %d)", pid)
            _remove(f"{_PREFIX}{pid}")
