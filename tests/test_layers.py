"""The package map holds: imports point down infra <- rpc <- workers <- gateway <- taskgate,
and no module grows past one concept.

Every import statement of every module is read (ast, so imports inside
functions and ``TYPE_CHECKING`` blocks count too), not what happens to be
loaded at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("infra", "rpc", "workers", "gateway", "taskgate")

# What each package may not import (its own modules are always fine).
FORBIDDEN = {
    "infra": ("rpc", "workers", "gateway", "taskgate"),
    "rpc": ("workers", "gateway", "taskgate"),
    "workers": ("gateway", "taskgate"),
    "gateway": ("taskgate",),
}
# The workers' modules the gateway may import: their contracts, not their internals.
GATEWAY_MAY_IMPORT = frozenset(
    {
        "workers.claims",  # leases in the store: the stuck-task watchdog takes them over
        "workers.dead",  # dead letters: the admin view shows, replays and discards them
        "workers.errors",  # the errors its API raises (InvalidInput, UnknownKind)
        "workers.kinds",  # the kinds workers registered (the autoscaling signal's labels)
        "workers.image_contracts",  # the thumbnail task's payload, the accepted images
        "workers.messages",  # task messages and status events
        "workers.roles",  # the broker roles: the AsyncAPI document says who sends what
        "workers.schemas",  # JSON Schema conventions the gateway's API documents share
        "workers.senders",  # who may send which messages (user_id)
        "workers.settings",  # defaults shared by the processes (the database path)
        "workers.shop.contracts",  # the shop's RPC types, order event and queues
        "workers.task_records",  # cancelling a task, forgetting one past its retention
        "workers.topology",  # broker names and declarations
    }
)


def modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module imported)`` for every import statement in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                # ``from workers.shop import contracts`` imports the module workers.shop.contracts.
                submodule = f"{target}.{alias.name}"
                if _is_module(submodule):
                    yield node.lineno, submodule
                else:
                    yield node.lineno, target


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _top(name: str) -> str:
    return name.partition(".")[0]


def violations(package: str) -> list[str]:
    found = []
    for module, path in modules(package):
        for line, target in imports(module, path):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if _top(target) in FORBIDDEN.get(package, ()):
                found.append(where)
            elif package == "gateway" and _top(target) == "workers":
                if target not in GATEWAY_MAY_IMPORT:
                    found.append(f"{where} (not a workers contract module)")
    return list(dict.fromkeys(found))  # ``from a import b, c`` is one import of ``a``


@pytest.mark.parametrize("package", ["infra", "rpc", "workers", "gateway"])
def test_imports_point_down_the_package_map(package: str) -> None:
    found = violations(package)
    assert not found, "imports against the package map:\n" + "\n".join(found)


def test_the_allowed_contract_modules_exist() -> None:
    # A contract module renamed away would leave the allow-list permitting nothing useful.
    assert [name for name in sorted(GATEWAY_MAY_IMPORT) if not _is_module(name)] == []


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import workers.shop.db\n"
        "from workers.shop import contracts\n"
        "from ..workers import runtime\n"
        "def f():\n"
        "    from gateway.app import create_app\n"
    )
    found = [target for _, target in imports("infra.sample", source)]
    assert found == ["workers.shop.db", "workers.shop.contracts", "workers.runtime", "gateway.app"]


def test_every_package_is_checked() -> None:
    assert {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} >= set(OURS)
    assert all(any(modules(package)) for package in OURS)


# Past this a module holds two concepts (shared/STYLE.md): split it.
MAX_MODULE_LINES = 400


def test_no_module_is_two_concepts_long() -> None:
    long = [
        f"{name}: {lines} lines"
        for package in OURS
        for name, path in modules(package)
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert long == [], f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)
