"""Where a private PostgreSQL server keeps its files, its port, and where Debian put its binaries.

Stdlib only, so it can run before the project's dependencies are installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import debian
from .ports import free_port

DEBIAN_ROOT = Path("/usr/lib/postgresql")


class PostgresBootError(RuntimeError):
    """The server did not come up; the message says why, from its log."""


def ensure_installed() -> None:
    """Install Debian's ``postgresql`` package unless it is already there (needs root).

    The package may start a system cluster on 5432; that cluster is the system's
    business and ours never use its port.
    """
    if not _installed_bin_dirs():
        debian.ensure(["postgresql"])


def _installed_bin_dirs() -> list[Path]:
    found = [p.parent for p in DEBIAN_ROOT.glob("*/bin/postgres")]
    return sorted(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def bin_dir() -> Path:
    """The newest installed major version's binaries (Debian 12: 15, Debian 13: 17)."""
    found = _installed_bin_dirs()
    if not found:
        raise PostgresBootError(
            f"no PostgreSQL server under {DEBIAN_ROOT}: install Debian's postgresql package "
            "(scripts/ensure-deb postgresql)"
        )
    return found[-1]


@dataclass(frozen=True)
class PostgresConfig:
    """Where a server keeps its files, its port, and how much durability it pays for."""

    base_dir: Path
    port: int
    # False only for tests and throwaway benches: a crash of the machine (not of the
    # server) may then corrupt the cluster.
    fsync: bool = True
    superuser: str = "taskgate"
    database: str = "taskgate"
    max_connections: int = 200
    # The address the server listens on; other than loopback, clients on its subnets may log
    # in (with the superuser's password: pg_hba's ``samenet``).
    listen_address: str = "127.0.0.1"
    # Put before the server's command, e.g. ``ip netns exec <ns>`` (infra.netns).
    command_prefix: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_dir", Path(self.base_dir).absolute())

    @classmethod
    def on_free_port(cls, base_dir: Path, *, fsync: bool = False) -> PostgresConfig:
        """A config on a currently free port (for tests: no fsync unless asked)."""
        return cls(base_dir=Path(base_dir), port=free_port(), fsync=fsync)

    @property
    def data_dir(self) -> Path:
        """The cluster (PGDATA); its unix socket lives here too."""
        return self.base_dir / "data"

    @property
    def password_file(self) -> Path:
        return self.base_dir / "superuser.password"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"
