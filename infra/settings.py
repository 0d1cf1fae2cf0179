"""Settings from the environment: one mechanism for every process.

A setting is a dataclass field made by ``setting(ENV_NAME, default, doc)``; a
process's settings are a frozen dataclass of such fields built once at start-up
by ``from_env()``, which parses each variable by the field's type (str, int,
float, bool, Path, ``X | None``, ``tuple[int, ...]``, ``tuple[str, ...]``,
``Literal[...]``) and names the variable when a value does not parse. A
variable several processes read is declared once as a ``Var`` and placed in
each class with ``setting(VAR)``, so it has one default and one description.

``BaseSettings`` holds what every taskgate process reads, ``ServiceSettings``
what the long-running ones (web, worker, rpc) add; each process extends one of
them. ``reference()`` renders the table in docs/configuration.md.

Standard library only: ``scripts/broker`` runs ``python3 -m infra.node_cli``
before the project is installed.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

_VAR = "taskgate_var"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Var:
    """One environment variable: its name, default, one-line description."""

    env: str
    default: Any = dataclasses.MISSING
    doc: str = ""
    # For defaults computed at start-up (e.g. the number of CPUs); ``shown`` is the
    # default as the reference table writes it.
    factory: Callable[[], Any] | None = None
    shown: str | None = None
    # Kept out of repr() and error messages.
    secret: bool = False

    def field(self) -> Any:
        """A dataclass field reading this variable."""
        metadata = {_VAR: self}
        if self.factory is not None:
            return dataclasses.field(
                default_factory=self.factory, metadata=metadata, repr=not self.secret
            )
        return dataclasses.field(default=self.default, metadata=metadata, repr=not self.secret)


def setting(
    env: str | Var,
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
    secret: bool = False,
) -> Any:
    """A dataclass field read from the variable ``env`` (or from the shared ``Var``)."""
    if isinstance(env, Var):
        return env.field()
    return Var(env, default, doc, factory, shown, secret).field()


def var_of(field: dataclasses.Field[Any]) -> Var | None:
    """The variable a settings field reads, if it reads one."""
    var = field.metadata.get(_VAR)
    return var if isinstance(var, Var) else None


@dataclass(frozen=True)
class Settings:
    """Root of every settings class: ``from_env``, and Paths made from strings."""

    # The processes that read this class's variables, for the reference table.
    read_by: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        # Paths given as strings (tests, callers) become Paths, as from_env makes them.
        for name, hint in _hints(type(self)).items():
            value = getattr(self, name)
            if hint is Path and isinstance(value, str):
                object.__setattr__(self, name, Path(value))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Build the settings from ``environ`` (default ``os.environ``); unset means default."""
        env = os.environ if environ is None else environ
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            var = var_of(field)
            if var is not None and var.env in env:
                values[field.name] = parse(var, env[var.env], hints[field.name])
        return cls(**values)


def _hints(cls: type) -> dict[str, Any]:
    names = {field.name for field in dataclasses.fields(cls)}
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in names}


def parse(var: Var, text: str, hint: Any) -> Any:
    """``text`` as a value of type ``hint``; ValueError naming ``var.env`` if it is not one."""
    shown = "(hidden)" if var.secret else repr(text)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if not text.strip():
            return None
        (inner,) = (arg for arg in args if arg is not type(None))
        return parse(var, text, inner)
    if origin is Literal:
        choices = {str(choice).lower(): choice for choice in args}
        if text.strip().lower() not in choices:
            allowed = ", ".join(repr(choice) for choice in args)
            raise ValueError(f"{var.env} must be one of {allowed}, not {shown}")
        return choices[text.strip().lower()]
    if origin is tuple:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        return tuple(parse(var, part, args[0]) for part in parts)
    if hint is bool:
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(f"{var.env} must be true or false (1/0, yes/no, on/off), not {shown}")
        return word in _TRUE
    if hint in (int, float):
        try:
            return hint(text.strip())
        except ValueError:
            kind = "an integer" if hint is int else "a number"
            raise ValueError(f"{var.env} must be {kind}, not {shown}") from None
    if hint is Path:
        return Path(text)
    if hint is str:
        return text
    raise TypeError(f"{var.env}: no parser for {hint!r}")


@dataclass(frozen=True)
class BaseSettings(Settings):
    """What every taskgate process reads."""

    amqp_url: str = setting(
        "AMQP_URL",
        "amqp://127.0.0.1:5672/",
        "The broker: `amqp://user:password@host:port/vhost` (`amqps://` for TLS);"
        " several nodes as comma-separated URLs. Without a user the client logs in as `guest`,"
        " which the private node does not have: `scripts/broker url` prints its administrator's.",
    )
    amqp_ca_file: Path | None = setting(
        "AMQP_CA_FILE",
        None,
        "PEM file of the CAs an `amqps://` broker's certificate must chain to"
        " (unset: the system's trust store).",
    )
    amqp_cert_file: Path | None = setting(
        "AMQP_CERT_FILE",
        None,
        "PEM client certificate shown to an `amqps://` broker; with `?auth_mechanism=external`"
        " in AMQP_URL it is the login.",
    )
    amqp_key_file: Path | None = setting(
        "AMQP_KEY_FILE",
        None,
        "PEM private key of AMQP_CERT_FILE (unset: the key is in AMQP_CERT_FILE).",
    )


DATABASE_PATH = Var(
    "DATABASE_PATH",
    Path("./var/taskgate.db"),
    "SQLite file of the store (tasks, orders, outbox, the shop's tables, the workers'"
    " outcomes) when DATABASE_URL is unset; every process must see the same file.",
)
DATABASE_URL = Var(
    "DATABASE_URL",
    None,
    "The shared store of processes on several hosts: `postgresql://user:password@host:port/db`"
    " (or `postgres://`), through asyncpg, each process with a pool of connections"
    " (unset: the SQLite file DATABASE_PATH)."
    " `scripts/postgres start` starts a private development server and prints its URL.",
)


@dataclass(frozen=True)
class ServiceSettings(BaseSettings):
    """What the long-running processes (web, worker, rpc) add."""

    reconnect_interval_s: float = setting(
        "AMQP_RECONNECT_INTERVAL_S",
        1.0,
        "First delay between attempts to reach the broker; it doubles (with jitter) up to"
        " AMQP_RECONNECT_MAX_S.",
    )
    reconnect_max_s: float = setting(
        "AMQP_RECONNECT_MAX_S", 30.0, "Longest delay between attempts to reach the broker."
    )
    database_path: Path = setting(DATABASE_PATH)
    database_url: str | None = setting(DATABASE_URL)
    log_format: Literal["text", "json"] = setting(
        "LOG_FORMAT", "text", "`text` for people, `json` for one JSON object per line."
    )
    metrics_port: int | None = setting(
        "METRICS_PORT",
        None,
        "Serve this process's Prometheus metrics over HTTP on this port (unset: not served).",
    )
    metrics_host: str = setting(
        "METRICS_HOST", "127.0.0.1", "The address the METRICS_PORT server listens on."
    )
    presence_interval_s: float = setting(
        "PRESENCE_INTERVAL_S",
        5.0,
        "How often worker and rpc processes write their heartbeat (who they are, what they"
        " run) to the store; the web process counts one gone after three intervals without.",
    )

    @property
    def database(self) -> str:
        """What ``infra.database.open_database`` opens: DATABASE_URL, else DATABASE_PATH."""
        return self.database_url or str(self.database_path)


@dataclass(frozen=True)
class NodeSettings(Settings):
    """The private development RabbitMQ node (``scripts/broker``, ``taskgate broker``)."""

    read_by = ("scripts", "cli")

    var_dir: Path = setting(
        "TASKGATE_VAR",
        Path("./var"),
        "Directory of the private broker node (under `broker/`) and PostgreSQL (`postgres/`).",
    )
    amqp_port: int = setting("TASKGATE_AMQP_PORT", 5672, "The private node's AMQP port.")
    dist_port: int = setting(
        "TASKGATE_DIST_PORT", 25672, "The private node's Erlang distribution port."
    )
    broker_address: str = setting(
        "TASKGATE_BROKER_ADDRESS",
        "127.0.0.1",
        "The IP address the private node's AMQP, AMQPS and management listeners bind to"
        " (`0.0.0.0` or `::`: every interface). Erlang distribution and epmd stay on loopback;"
        " the node's administrator logs in over loopback only.",
    )
    management_port: int | None = setting(
        "TASKGATE_MANAGEMENT_PORT",
        15672,
        "The private node's management plugin port; empty disables the plugin.",
    )
    postgres_port: int = setting(
        "TASKGATE_POSTGRES_PORT",
        5433,
        "The private PostgreSQL server's port (`scripts/postgres`; 5432 is left to a system one).",
    )
    epmd_port: int = setting(
        "ERL_EPMD_PORT",
        4369,
        "The port of Erlang's port mapper (epmd) the private node registers with.",
    )


def variables(classes: Iterable[type[Settings]]) -> dict[str, tuple[Var, list[str], Any]]:
    """Each variable the classes read: its Var, the processes reading it, and its type."""
    found: dict[str, tuple[Var, list[str], Any]] = {}
    for cls in classes:
        hints = _hints(cls)
        for field in dataclasses.fields(cls):
            var = var_of(field)
            if var is None:
                raise TypeError(f"{cls.__name__}.{field.name} is not a setting()")
            known, processes, hint = found.setdefault(var.env, (var, [], hints[field.name]))
            if known is not var or hint != hints[field.name]:
                raise ValueError(f"{var.env} is declared twice, differently: {known} and {var}")
            processes.extend(p for p in cls.read_by if p not in processes)
    return found


def reference(classes: Iterable[type[Settings]]) -> str:
    """The Markdown reference table of every variable the classes read."""
    rows = [
        "| Variable | Default | Type | Read by | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for env, (var, processes, hint) in sorted(variables(classes).items()):
        cells = (f"`{env}`", _default(var), _type(hint), ", ".join(processes), var.doc)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def _default(var: Var) -> str:
    value = var.default
    if var.shown is not None:
        return var.shown
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        value = ",".join(map(str, value))
    if isinstance(value, Path) and not value.is_absolute():
        value = f"./{value}"
    return f"`{value}`" if str(value) else "(empty)"


def _type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(arg) for arg in args if arg is not type(None))
    if origin is Literal:
        return " or ".join(f"`{choice}`" for choice in args)
    if origin is tuple:
        return "comma-separated " + {int: "integers", float: "numbers"}.get(args[0], "strings")
    names = {str: "text", int: "integer", float: "number", bool: "boolean", Path: "path"}
    return names.get(hint, str(hint))
