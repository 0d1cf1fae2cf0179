"""TCP ports on this host: find a free one, tell whether one is taken.

Stdlib only (``scripts/broker`` runs before the project is installed).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_ESTABLISHED = "01"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """True if something listens on ``port`` (any interface, IPv4 or dual-stack).

    Uses SO_REUSEADDR like Erlang's listeners, so TIME_WAIT leftovers of a
    previous run of our own node do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def accepts_connections(port: int, timeout_s: float = 1.0, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def peer_ports(pid: int) -> set[int]:
    """The remote ports of the TCP connections process ``pid`` has established (Linux /proc).

    Read on the client's side, so it costs the server nothing.
    """
    proc = Path(f"/proc/{pid}")
    inodes = set()
    for fd in (proc / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        lines = (proc / "net" / table).read_text().splitlines()[1:]
        for fields in (line.split() for line in lines):
            # local_address rem_address st ... inode (the 10th field)
            if fields[3] == _ESTABLISHED and fields[9] in inodes:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports
