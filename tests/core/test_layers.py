"""The layers hold: data flows one way, no package reaches back into training, no import cycles.

Imports are read from the source (ast), including imports inside functions and under
`if TYPE_CHECKING:`: a type-only import is still a dependency a reader has to follow, and a circle
hidden there is still a circle.
"""

from __future__ import annotations

import ast
from itertools import combinations
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "mura"
# Lowest first: a package may import the ones before it, never one after it. Root modules (config,
# checkpoint, prediction, ...) are below all of them.
ORDER = (
    "data",
    "models",
    "training",
    "inference",
    "evaluation",
    "experiments",
    "pacs",
    "api",
    "service",
    "cli",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) for every import of a file, type-only ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return [(module, names) for module, names in found if module == "mura" or module.startswith("mura.")]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        graph[_module_name(path)] = {module for module, _ in _imports(path)}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ORDER) else module


def test_every_package_has_its_place_in_the_order() -> None:
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert packages == set(ORDER), f"place these in ORDER: {sorted(packages ^ set(ORDER))}"


def test_no_package_imports_a_higher_one() -> None:
    rank = {package: i for i, package in enumerate(ORDER)}
    offenders = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if _package(module) in rank
        for target in targets
        if rank.get(_package(target), -1) > rank[_package(module)]
    ]
    assert not offenders, offenders


def test_only_the_workflows_above_training_import_it() -> None:
    above = ("training", "experiments", "cli")
    offenders = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if target.startswith("mura.training") and _package(module) not in above and module != "mura"
    ]
    assert not offenders, offenders


def test_no_two_packages_or_modules_import_each_other() -> None:
    graph = _graph()
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(_package(module), set()).update(_package(t) for t in targets)
    cycles = [
        f"{a} <-> {b}" for a, b in combinations(sorted(packages), 2) if b in packages[a] and a in packages[b]
    ]
    cycles += [f"{a} <-> {b}" for a, b in combinations(sorted(graph), 2) if b in graph[a] and a in graph[b]]
    assert not cycles, cycles


def test_the_neutral_root_modules_import_no_package_but_models() -> None:
    graph = _graph()
    root = [m for m in graph if m.count(".") == 1 and _package(m) == m and m != "mura.__main__"]
    offenders = [
        f"{module} -> {target}"
        for module in root
        for target in graph[module]
        if _package(target) in ORDER and not (module == "mura.checkpoint" and _package(target) == "models")
    ]
    assert not offenders, offenders


def test_no_private_names_are_imported_across_modules() -> None:
    offenders = [
        f"{_module_name(path)} imports {module}.{name}"
        for path in SRC.rglob("*.py")
        for module, names in _imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not offenders, offenders
