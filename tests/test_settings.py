"""The one settings layer: parsing, one declaration per variable, the generated reference."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from gateway.settings import GatewaySettings
from infra.settings import (
    BaseSettings,
    NodeSettings,
    ServiceSettings,
    Settings,
    reference,
    setting,
    variables,
)
from rpc.settings import RpcSettings
from taskgate.settings import PROCESS_SETTINGS, REFERENCE, CliSettings, render
from workers.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("infra", "rpc", "workers", "gateway", "taskgate")


@dataclass(frozen=True)
class Sample(Settings):
    count: int = setting("SAMPLE_COUNT", 3, "an int")
    ratio: float = setting("SAMPLE_RATIO", 0.5, "a float")
    enabled: bool = setting("SAMPLE_ENABLED", False, "a bool")
    mode: Literal["fast", "safe"] = setting("SAMPLE_MODE", "safe", "a choice")
    sizes: tuple[int, ...] = setting("SAMPLE_SIZES", (1, 2), "ints")
    names: tuple[str, ...] = setting("SAMPLE_NAMES", (), "strings")
    port: int | None = setting("SAMPLE_PORT", 80, "an optional int")
    where: Path = setting("SAMPLE_PATH", Path("./here"), "a path")
    password: str = setting("SAMPLE_PASSWORD", "", "a secret", secret=True)


def test_unset_variables_keep_their_defaults():
    assert Sample.from_env({}) == Sample()


def test_a_bad_int_names_the_variable():
    with pytest.raises(ValueError, match=r"^SAMPLE_COUNT must be an integer, not 'three'$"):
        Sample.from_env({"SAMPLE_COUNT": "three"})


def test_a_bad_float_names_the_variable():
    with pytest.raises(ValueError, match=r"^SAMPLE_RATIO must be a number"):
        Sample.from_env({"SAMPLE_RATIO": "half"})


def test_a_choice_outside_the_literal_is_refused():
    with pytest.raises(ValueError, match=r"^SAMPLE_MODE must be one of 'fast', 'safe', not 'slow'"):
        Sample.from_env({"SAMPLE_MODE": "slow"})


def test_a_choice_is_matched_without_case():
    assert Sample.from_env({"SAMPLE_MODE": "FAST"}).mode == "fast"


def test_tuples_are_comma_separated_and_blanks_are_skipped():
    settings = Sample.from_env({"SAMPLE_SIZES": " 800, 256,,64 ", "SAMPLE_NAMES": "a, b"})

    assert settings.sizes == (800, 256, 64)
    assert settings.names == ("a", "b")
    assert Sample.from_env({"SAMPLE_SIZES": ""}).sizes == ()


def test_a_bad_tuple_item_names_the_variable():
    with pytest.raises(ValueError, match=r"^SAMPLE_SIZES must be an integer, not 'x'"):
        Sample.from_env({"SAMPLE_SIZES": "1,x"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
        ("", False),
    ],
)
def test_bools(text, value):
    assert Sample.from_env({"SAMPLE_ENABLED": text}).enabled is value


def test_a_word_that_is_no_bool_is_refused():
    with pytest.raises(ValueError, match=r"^SAMPLE_ENABLED must be true or false"):
        Sample.from_env({"SAMPLE_ENABLED": "maybe"})


def test_an_empty_optional_is_none():
    assert Sample.from_env({"SAMPLE_PORT": ""}).port is None
    assert Sample.from_env({"SAMPLE_PORT": "8080"}).port == 8080


def test_paths_are_paths_also_when_given_as_strings():
    assert Sample.from_env({"SAMPLE_PATH": "/srv"}).where == Path("/srv")
    assert Sample(where="/srv").where == Path("/srv")  # type: ignore[arg-type]


def test_a_secret_stays_out_of_repr():
    assert "hunter2" not in repr(Sample.from_env({"SAMPLE_PASSWORD": "hunter2"}))


def test_each_process_parses_a_bad_value_with_the_variable_named():
    for cls in (GatewaySettings, WorkerSettings, RpcSettings, CliSettings):
        with pytest.raises(ValueError, match=r"^AMQP_RECONNECT_INTERVAL_S|^RPC_TIMEOUT_S"):
            cls.from_env({"AMQP_RECONNECT_INTERVAL_S": "soon", "RPC_TIMEOUT_S": "soon"})


def test_every_variable_is_declared_once_with_one_default():
    found = variables(PROCESS_SETTINGS)  # raises if a name is declared twice

    assert found["RPC_TIMEOUT_S"][1] == ["web", "cli"]
    assert GatewaySettings().rpc_timeout_s == CliSettings().rpc_timeout_s


def test_a_variable_declared_twice_is_refused():
    @dataclass(frozen=True)
    class Again(BaseSettings):
        again: str = setting("AMQP_URL", "amqp://elsewhere/", "a second default")

    with pytest.raises(ValueError, match="AMQP_URL is declared twice"):
        variables([BaseSettings, Again])


def test_every_settings_class_of_a_process_is_in_the_reference():
    def subclasses(cls: type[Settings]) -> set[type[Settings]]:
        direct = set(cls.__subclasses__())
        return direct.union(*(subclasses(sub) for sub in direct))

    processes = {cls for cls in subclasses(Settings) if cls.read_by}

    assert processes == set(PROCESS_SETTINGS)
    assert {BaseSettings, ServiceSettings, NodeSettings} <= set(subclasses(Settings))


def test_the_reference_is_up_to_date():
    current = REFERENCE.read_text() if REFERENCE.exists() else ""

    assert current == render(), "run: python -m taskgate.settings --write docs/configuration.md"


def test_the_reference_names_each_variable_default_and_reader():
    row = next(line for line in reference([Sample]).splitlines() if "SAMPLE_SIZES" in line)

    assert row == "| `SAMPLE_SIZES` | `1,2` | comma-separated integers |  | ints |"


def environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read a variable: os.getenv, os.environ[...], .get(...), ``in os.environ``.

    Handing the whole environment to a child process ({**os.environ}, .items()) reads none.
    """
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for alias in node.names if alias.name in ("environ", "getenv")]
        if isinstance(node, ast.Attribute) and node.attr in ("getenv", "getenvb"):
            lines.append(node.lineno)
        if isinstance(node, ast.Subscript) and _is_environ(node.value):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.Attribute)
            and _is_environ(node.value)
            and node.attr in ("get", "setdefault", "pop", "__getitem__", "__contains__")
        ):
            lines.append(node.lineno)
        if isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            lines.append(node.lineno)
    return sorted(lines)


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in ("environ", "environb")


def test_nothing_reads_the_environment_outside_the_settings_modules():
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name == "settings.py":
                continue
            lines = environment_reads(ast.parse(path.read_text(), str(path)))
            found += [f"{path.relative_to(REPO)}:{line}" for line in lines]

    assert found == [], "read settings through the process's settings class (infra/settings.py)"


def test_the_environment_check_sees_each_kind_of_read():
    source = """
import os
from os import getenv
a = os.environ.get("A")
b = os.environ["B"]
c = "C" in os.environ
d = os.getenv("D")
child = {**os.environ, "E": "1"}
also_child = dict(os.environ.items())
"""
    assert environment_reads(ast.parse(source)) == [3, 4, 5, 6, 7]
