"""One import direction, and no import cycle at all.

Every module of the shipped packages is parsed with `ast`; every import counts, those inside
functions too, except imports under `if TYPE_CHECKING:` (annotations only, never run). An import
of a package's submodule is an edge to that submodule, not to the package's __init__ (Python runs
the __init__ first, but that is packaging, not a dependency of the importing code).

Layers, lowest first (docs/ARCHITECTURE.md); a module may import its own layer or lower:
  0  synth/core/         foundations: errors, records, store, units, LLM client, ...
  0  tools/server/       the runner shipped into sandboxes: imports nothing of the project outside itself
  1  sandboxes/
  2  tools/
  3  judges/
  4  synth/              config, context, episode, stages, commands, run
  5  cli.py
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synth", "tools", "sandboxes", "judges")
LAYERS = {"synth.core": 0, "tools.server": 0, "sandboxes": 1, "tools": 2, "judges": 3, "synth": 4, "cli": 5}
CLOSED = ("synth.core", "tools.server")  # leaves: they import nothing of the project outside themselves


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {"cli": root / "cli.py"}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (resolved to the deepest module that exists)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def layer_of(module: str) -> tuple[str, int]:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return prefix, LAYERS[prefix]


def bad_edges(edges: dict[str, set[str]]) -> list[str]:
    """Upward edges, and edges out of a closed leaf."""
    bad = []
    for source, targets in sorted(edges.items()):
        (home, level) = layer_of(source)
        for target in sorted(targets):
            there, target_level = layer_of(target)
            if target_level > level:
                bad.append(f"{source} (layer {level}) -> {target} (layer {target_level})")
            elif home in CLOSED and there != home:
                bad.append(f"{source} ({home} is closed) -> {target}")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            strongconnect(node)
    return found


def test_every_import_points_down_or_stays_in_its_layer():
    bad = bad_edges(graph())
    assert not bad, "imports against the layer order:\n  " + "\n  ".join(bad)


def test_there_is_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in found)


def test_the_parser_sees_every_kind_of_import():
    edges = graph()
    assert "synth.stages.rollout" in edges["synth.run"]  # `from synth.stages import rollout`
    assert "sandboxes.k8s_api" in edges["sandboxes.k8s"]  # inside a function
    assert "sandboxes.k8s" not in edges["sandboxes.k8s_api"]  # under TYPE_CHECKING only
    assert "tools.server.toolset" in edges["tools.server"] or "tools.server" in edges["tools.server.toolset"]
    assert {layer_of(m)[1] for m in edges} == {0, 1, 2, 3, 4, 5}


def test_an_upward_edge_and_a_cycle_are_reported_by_name(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "cli.py").write_text("")
    (tmp_path / "synth" / "core").mkdir()
    (tmp_path / "synth" / "core" / "store.py").write_text("from synth.run import STAGES\n")
    (tmp_path / "synth" / "run.py").write_text("def f():\n    from synth.core import store\n")
    (tmp_path / "tools" / "server").mkdir()
    (tmp_path / "tools" / "server" / "host.py").write_text("import synth.core.store\n")
    edges = graph(tmp_path)
    assert bad_edges(edges) == ["synth.core.store (layer 0) -> synth.run (layer 4)",
                                "tools.server.host (tools.server is closed) -> synth.core.store"]
    assert cycles(edges) == [["synth.core.store", "synth.run"]]
