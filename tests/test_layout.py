"""The package's layout: imports point one way (cli -> analysis -> experiments -> the method library).

The import graph is read from the source (every ``import`` and ``from ... import`` statement, at the top
of a module or inside a function), so an import that only runs on some code path counts too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "adapt"

#: Layers from the bottom up; a module may import its own layer and the layers below it.
LAYERS = ("library", "experiments", "analysis", "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str:
    if module in ("adapt.cli", "adapt.__main__"):
        return "cli"
    for name in ("experiments", "analysis"):
        if module == f"adapt.{name}" or module.startswith(f"adapt.{name}."):
            return name
    return "library"


def imports(path: Path) -> list:
    """``(imported module, imported names, line)`` of every import of an ``adapt`` module in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, (), node.lineno) for a in node.names if a.name.split(".")[0] == "adapt"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "adapt":
            out.append((node.module, tuple(a.name for a in node.names), node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            out.append(("<relative>", (), node.lineno))
    return out


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(target: str, names: tuple) -> set:
    """The package modules an import statement loads (``from adapt.x import y`` may import module ``adapt.x.y``)."""
    found = {target} if target in MODULES else set()
    found |= {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES}
    return found


def edges() -> dict:
    graph = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for target, names, _ in imports(path):
            for t in resolve(target, names):
                # a package importing its children, or a module its own package, is not an edge of concern
                if t != m and not t.startswith(m + ".") and not m.startswith(t + "."):
                    graph[m].add(t)
    return graph


def test_the_imports_are_absolute():
    relative = [f"{module_name(p)}:{line}" for p in MODULES.values() for t, _, line in imports(p) if t == "<relative>"]
    assert not relative, f"relative imports (write them as `from adapt.x import y`): {relative}"


def test_no_module_imports_an_upper_layer():
    upward = []
    for m, targets in edges().items():
        for t in targets:
            if LAYERS.index(layer(t)) > LAYERS.index(layer(m)):
                upward.append(f"{m} ({layer(m)}) imports {t} ({layer(t)})")
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_circle():
    graph = edges()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_check_finds_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The two checks above can fail: on a made-up package with one circle and one upward import."""
    pkg = tmp_path / "adapt"
    (pkg / "experiments").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "experiments" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from adapt.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from adapt.a import y\n")
    (pkg / "c.py").write_text("from adapt.experiments import grid\n")
    (pkg / "experiments" / "grid.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    monkeypatch.setattr(__import__(__name__), "MODULES", {module_name(p): p for p in sorted(pkg.rglob("*.py"))})
    with pytest.raises(AssertionError, match="import circles"):
        test_the_import_graph_has_no_circle()
    with pytest.raises(AssertionError, match="adapt.c .library. imports adapt.experiments.grid"):
        test_no_module_imports_an_upper_layer()


def test_no_private_name_is_imported_from_another_module():
    """A name with a leading underscore belongs to its module; the kernels are the one exception
    (private modules that only :mod:`adapt.quant` loads, on first use)."""
    found = []
    for m, path in MODULES.items():
        for target, names, line in imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in MODULES]
            if private and target != m:
                found.append(f"{m}:{line} imports {', '.join(private)} from {target}")
    assert not found, "\n".join(found)


def test_no_module_re_exports_another_through_getattr():
    facades = [m for m, p in MODULES.items()
               if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in ast.parse(p.read_text()).body)]
    assert not facades, f"module-level __getattr__ (a re-export facade): {facades}"
