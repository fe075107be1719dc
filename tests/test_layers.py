"""The layers of ``src/banking`` point one way (docs/architecture.md):

    domain, config  <-  ledger, fraud  <-  storage, events, cache, observability, auth,
        notifications  <-  container  <-  rest, grpc, workers (the doors)  <-  bootstrap  <-  cli

A module may import its own layer and the layers below it, never one above; and no two
packages import each other (no cycles between packages, even within a layer). Imports inside
functions count too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import banking

SOURCE = Path(banking.__file__).parent
LAYERS: dict[str, int] = {
    "domain": 0,
    "config": 0,
    "ledger": 1,
    "fraud": 1,
    "storage": 2,
    "events": 2,
    "cache": 2,
    "observability": 2,
    "auth": 2,
    "notifications": 2,
    "audit": 2,
    "analytics": 2,
    "container": 3,
    "rest": 4,
    "grpc": 4,
    "workers": 4,
    "bootstrap": 5,
    "cli": 6,
}


def _part_of(module: str) -> str | None:
    """The top-level part of ``banking`` that ``module`` belongs to (None for ``banking``)."""
    parts = module.split(".")
    if parts[0] != "banking" or len(parts) < 2:
        return None
    return parts[1]


def _imports() -> dict[str, set[tuple[str, str]]]:
    """For each part, the (importing file, imported part) pairs."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE)
        if relative.parts[0] == "grpc" and "gen" in relative.parts:
            continue  # generated stubs
        own = relative.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                part = _part_of(name)
                if part is not None and part != own:
                    found[own].add((str(relative), part))
    return found


def test_every_part_has_a_layer() -> None:
    parts = {
        path.name.removesuffix(".py")
        for path in SOURCE.iterdir()
        if (path.is_dir() and (path / "__init__.py").exists()) or path.suffix == ".py"
    } - {"__init__"}
    assert parts - set(LAYERS) == set(), "give every new package a layer in LAYERS"


def test_no_layer_imports_a_higher_one() -> None:
    upward = sorted(
        f"{file} imports banking.{imported} (layer {LAYERS[imported]} > {LAYERS[own]})"
        for own, pairs in _imports().items()
        for file, imported in pairs
        if LAYERS[imported] > LAYERS[own]
    )
    assert upward == []


def test_no_two_packages_import_each_other() -> None:
    edges = {(own, imported) for own, pairs in _imports().items() for _, imported in pairs}
    cycles = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert cycles == []


def test_the_check_sees_imports() -> None:
    """The checker itself: the ledger does import the domain (so an empty result above means
    no violation, not a checker that reads nothing)."""
    assert ("ledger/movements.py", "domain") in _imports()["ledger"]
