"""The project's architecture rules, checked on the source: which way imports go, no import
cycles (function-level imports included), and short functions.

Parsed with ``ast`` (nothing is imported), so a rule broken anywhere fails here with the
module, line and name that broke it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("geopak_core", "geopak_data", "geopak_model")
MAX_COMPLEXITY = 25
# Every module of the three packages and every benchmark: no function above
# MAX_COMPLEXITY (radon's cyclomatic complexity), i.e. each one readable in one screen.
COMPLEXITY_FILES = (
    "geopak_core/*.py",
    "geopak_data/*.py",
    "geopak_data/*/*.py",
    "geopak_model/*.py",
    "bench/*.py",
    "bench/run_all",
)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """Every project module ``name`` imports, anywhere in the file, with the line."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # the longest known module that t names (pkg.mod.attr -> pkg.mod)
            parts = t.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in known:
                    if cand != name:
                        out.append((cand, node.lineno))
                    break
    return out


def _graph() -> dict[str, list[tuple[str, int]]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def test_model_tower_imports_nothing_from_the_data_tower() -> None:
    bad = [
        f"{name} line {line}: imports {target}"
        for name, edges in _graph().items()
        if name.startswith("geopak_model")
        for target, line in edges
        if target.startswith("geopak_data")
    ]
    assert not bad, "\n".join(bad)


def test_core_imports_neither_tower() -> None:
    bad = [
        f"{name} line {line}: imports {target}"
        for name, edges in _graph().items()
        if name.startswith("geopak_core")
        for target, line in edges
        if not target.startswith("geopak_core")
    ]
    assert not bad, "\n".join(bad)


# The applications on top of both towers: the offline demo and the web viewer.
APPS = ("geopak_data.demo", "geopak_data.view")


def test_data_tower_imports_the_model_tower_only_in_the_apps() -> None:
    bad = [
        f"{name} line {line}: imports {target}"
        for name, edges in _graph().items()
        if name.startswith("geopak_data") and name not in APPS
        for target, line in edges
        if target.startswith("geopak_model")
    ]
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w, _ in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(graph.get(w, []))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_function_level_cycle() -> None:
    g = {"a": [("b", 1)], "b": [("c", 2)], "c": [("a", 3)], "d": [("a", 4)]}
    assert _cycles(g) == [["a", "b", "c"]]
    assert _cycles({"a": [("b", 1)], "b": []}) == []


def test_no_import_cycles_even_through_function_level_imports() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    detail = []
    for comp in cycles:
        members = set(comp)
        edges = [f"  {a} -> {b} (line {ln})" for a in comp for b, ln in graph[a] if b in members]
        detail.append(" <-> ".join(comp) + "\n" + "\n".join(edges))
    assert not cycles, "\n".join(detail)


def _complexity_targets() -> list[Path]:
    files: list[Path] = []
    for pattern in COMPLEXITY_FILES:
        files += sorted(ROOT.glob(pattern))
    return files


@pytest.mark.parametrize(
    "path", _complexity_targets(), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_functions_stay_under_the_complexity_limit(path: Path) -> None:
    from radon.complexity import cc_visit

    blocks = cc_visit(path.read_text("utf-8"))
    flat = []
    for b in blocks:
        flat.append(b)
        flat += getattr(b, "methods", [])
    too = [
        f"{path.name}:{b.lineno} {b.name} has complexity {b.complexity}"
        for b in flat
        if b.complexity > MAX_COMPLEXITY
    ]
    assert not too, "\n".join(too)
