"""No import cycles inside asrd and hpc. The graph counts every import in the source, those inside
functions too: an import moved into a function to dodge a cycle still ties the two modules in
both directions (neither can be understood, tested or moved without the other). Imports under
`if TYPE_CHECKING:` are left out (they never run), and so are a module's own parent packages
(Python loads those first anyway)."""

from __future__ import annotations

import ast
import importlib
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("asrd", "hpc")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    return {n for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The asrd/hpc modules that module `name` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    out = set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:  # the module named, or the module a name comes from
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t not in ancestors:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the asrd/hpc modules it imports."""
    modules = _modules()
    return {name: _imported(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle (each module imports the next; the last is the first), or None."""
    try:  # graphlib reads the sets as predecessors: it lists the cycle importer last
        TopologicalSorter(graph).prepare()
    except CycleError as e:
        return list(reversed(e.args[1]))
    return None


def test_the_packages_have_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_a_cycle_when_there_is_one():
    graph = import_graph()
    assert "asrd.merge" in graph["asrd.cli"]  # an import the code has
    graph["asrd.merge"].add("asrd.cli")
    assert find_cycle(graph) is not None


@pytest.mark.parametrize("name", sorted(_modules()))
def test_every_module_imports(name):
    importlib.import_module(name)
