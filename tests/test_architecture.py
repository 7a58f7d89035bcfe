"""The house rules a change must keep: no import cycle between modules, no module doing too much, layers apart."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "recoverable"
MAX_LINES = 460
"""About 450 lines: a module longer than that does more than one job (split it, named after what each holds)."""


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package `name` imports, anywhere in it (functions and TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            module = target
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module and module != name:
                found.add(module)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph, or [] when there is none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_no_import_cycle_between_modules_type_only_imports_included() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycle(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert sorted(set(_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}))) == ["a", "b", "c"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_module_over_about_450_lines() -> None:
    lengths = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {path: n for path, n in lengths.items() if n > MAX_LINES} == {}


def test_the_layers_stay_apart() -> None:
    """The storage layer never imports the events or the state; the server never imports a client's modules."""
    modules = _modules()
    for name, path in modules.items():
        imported = _imports(name, path, modules)
        if name.startswith("recoverable.storages"):
            assert not any(m.startswith(("recoverable.events", "recoverable._recoverable_state")) for m in imported), (
                name
            )
        if name.startswith("recoverable.server"):
            assert not any(m.startswith("recoverable.storages._") and m.count(".") > 2 for m in imported), (
                name,
                imported,
            )
