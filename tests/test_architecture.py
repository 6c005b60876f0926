"""The layering of jaxgrad, enforced: imports only point down the table below.

Every module's ``jaxgrad`` imports are read from its source (``ast``), function-level ones
included, and checked against ``LAYERS``. A wrong-way edge (a pure function importing a
model, a model importing training, anything importing a driver) fails here with the edge
named, so the house cannot silently grow crooked again. The table is the one in
``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import jaxgrad

ROOT = Path(jaxgrad.__file__).resolve().parent
REPO = ROOT.parent

# layer -> (module prefixes, layers it may import). Within a layer, an import must point to
# a lower rank (RANK below) or stay inside the importing module's own package.
LAYERS = {
    "leaves": (
        (
            "jaxgrad.types",
            "jaxgrad._validation",
            "jaxgrad._filters",
            "jaxgrad._taps",
            "jaxgrad._second_order",
            "jaxgrad._chunking",
            "jaxgrad._random",
            "jaxgrad.paths",
        ),
        {"leaves"},
    ),
    "maths": (
        (
            "jaxgrad.gradients",
            "jaxgrad.trace_estimators",
            "jaxgrad.score_matching",
            "jaxgrad.distillation",
            "jaxgrad.attribution",
            "jaxgrad.evaluation",
        ),
        {"leaves", "maths"},
    ),
    "models": (("jaxgrad.models",), {"leaves", "models"}),
    "data": (("jaxgrad.data",), {"leaves", "data"}),
    "sharding": (("jaxgrad.sharding",), {"leaves"}),
    "training": (
        ("jaxgrad.training",),
        {"leaves", "maths", "models", "data", "sharding", "training"},
    ),
    "drivers": (
        ("jaxgrad.drivers", "jaxgrad.viz"),
        {"leaves", "maths", "models", "data", "sharding", "training", "drivers"},
    ),
}
# "Each other downward" inside a layer: a module may import one of lower rank.
RANK = {
    "jaxgrad.types": 0,
    "jaxgrad._validation": 0,
    "jaxgrad._chunking": 1,
    "jaxgrad._taps": 1,
    "jaxgrad.gradients": 0,
    "jaxgrad.trace_estimators": 1,
    "jaxgrad.score_matching": 2,
    "jaxgrad.distillation": 2,
    "jaxgrad.attribution": 3,
    "jaxgrad.evaluation": 3,
}
THIRD_PARTY_NEVER = ("experiments", "absl", "ml_collections", "tensorflow", "importlib")
# Optional packages: imported inside the functions that need them, never at module level.
OPTIONAL = ("tensorflow_datasets", "matplotlib", "skimage", "torch", "captum", "saliency")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports hide the edge's layer: refused outright
                names = ["<relative import>"]
            else:
                # `from jaxgrad import x` imports the submodule jaxgrad.x when there is one;
                # any other name imported from a package is an import of the package itself.
                subs = [f"{node.module}.{a.name}" for a in node.names]
                names = [n for n in subs if _is_module(n)]
                if len(names) < len(subs):
                    names.append(node.module)
        else:
            continue
        out += [(n, id(node) in top) for n in names]
    return out


def _is_module(name: str) -> bool:
    path = REPO / name.replace(".", "/")
    return path.with_suffix(".py").exists() or path.is_dir()


def layer_of(module: str) -> str | None:
    best = None
    for layer, (prefixes, _) in LAYERS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (layer, len(p))
    return None if best is None else best[0]


def rank_of(module: str) -> int:
    for prefix, r in RANK.items():
        if module == prefix or module.startswith(prefix + "."):
            return r
    return 0


def package_of(module: str, is_package: bool) -> str:
    """The subpackage a module belongs to; a top-level module is its own."""
    parent = module if is_package else module.rpartition(".")[0]
    return module if parent == "jaxgrad" else parent


def violations(graph: dict[str, list[tuple[str, bool]]], packages: set[str]) -> list[str]:
    """Every edge of ``graph`` (module -> imports) that the layer table forbids."""
    bad = []
    for src, targets in graph.items():
        if src == "jaxgrad":  # the package root re-exports everything
            continue
        src_layer = layer_of(src)
        if src_layer is None:
            bad.append(f"{src}: in no layer of the table")
            continue
        allowed = LAYERS[src_layer][1]
        for dst, at_top in targets:
            root = dst.split(".")[0]
            if dst == "<relative import>":
                bad.append(f"{src}: a relative import (write the absolute module path)")
                continue
            if root in THIRD_PARTY_NEVER:
                bad.append(f"{src} -> {dst}: the library never imports {root}")
            if root in OPTIONAL and at_top:
                bad.append(f"{src} -> {dst}: the optional {root} must be imported lazily")
            if root != "jaxgrad":
                continue
            if not at_top:
                bad.append(f"{src} -> {dst}: a jaxgrad import hidden inside a function")
            if dst == "jaxgrad":
                bad.append(f"{src} -> jaxgrad: import the module, not the package root")
                continue
            dst_layer = layer_of(dst)
            own = package_of(src, src in packages)
            if dst_layer not in allowed:
                bad.append(f"{src} -> {dst}: {src_layer} may not import {dst_layer}")
            elif dst_layer == src_layer and not dst.startswith(own + "."):
                if rank_of(dst) >= rank_of(src):
                    bad.append(f"{src} -> {dst}: not downward inside {src_layer}")
            private = [p for p in dst.split(".")[1:] if p.startswith("_")]
            if private and dst_layer != "leaves" and not dst.startswith(own + "."):
                bad.append(f"{src} -> {dst}: another package's private module")
    return bad


def library_graph():
    graph, packages = {}, set()
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        if path.name == "__init__.py":
            packages.add(name)
        graph[name] = imports(path)
    return graph, packages


def test_imports_only_point_down_the_layer_table():
    graph, packages = library_graph()
    assert len(graph) > 40
    assert violations(graph, packages) == []


@pytest.mark.parametrize(
    "edge, message",
    [
        (
            ("jaxgrad.attribution.gradcam", "jaxgrad.models.adapters", True),
            "maths may not import models",
        ),
        (
            ("jaxgrad.models.resnet", "jaxgrad.training.state", True),
            "models may not import training",
        ),
        (
            ("jaxgrad.training.loop", "jaxgrad.drivers.roar", True),
            "training may not import drivers",
        ),
        (("jaxgrad.gradients", "jaxgrad.score_matching", True), "not downward inside maths"),
        (
            ("jaxgrad.evaluation.perturbation", "jaxgrad.attribution._common", True),
            "private module",
        ),
        (("jaxgrad.drivers.roar", "jaxgrad.training.loop", False), "hidden inside a function"),
        (("jaxgrad.gradients", "experiments.common", True), "never imports experiments"),
        (("jaxgrad.drivers.roar", "<relative import>", True), "a relative import"),
        (("jaxgrad.viz", "matplotlib.pyplot", True), "must be imported lazily"),
        (("jaxgrad.attribution.gradcam", "importlib", True), "never imports importlib"),
        (("jaxgrad.attribution.gradcam", "jaxgrad", True), "not the package root"),
    ],
)
def test_a_wrong_way_edge_is_reported(edge, message):
    graph, packages = library_graph()
    src, dst, top = edge
    graph[src] = [*graph[src], (dst, top)]
    bad = violations(graph, packages)
    assert any(message in b and src in b for b in bad), bad


def test_the_parser_sees_relative_and_mixed_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "from ..training import loop\n"
        "from jaxgrad import sharding, LogitFn\n"
        "def f():\n    import matplotlib\n"
    )
    found = imports(path)
    assert ("<relative import>", True) in found
    assert ("jaxgrad.sharding", True) in found and ("jaxgrad", True) in found
    assert ("matplotlib", False) in found


def test_the_docs_table_is_this_table():
    """docs/architecture.md's layer table names the same modules in the same layers."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and "---" not in r][1:]
    documented = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        modules = [m.strip("` ") for m in cells[1].split(",")]
        documented[cells[0]] = {m for m in modules if m}
    for layer, (prefixes, _) in LAYERS.items():
        names = {p.removeprefix("jaxgrad.") for p in prefixes}
        assert documented.get(layer) == names, (layer, documented.get(layer), names)


def test_init_files_only_reexport():
    for path in ROOT.rglob("__init__.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            ok = isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            )
            ok = ok or (
                isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)]
                in (["__all__"], ["__version__"])
            )
            assert ok, f"{path.relative_to(REPO)}:{node.lineno} is not a re-export"


def test_the_package_exposes_every_subpackage():
    import jaxgrad as jg

    for name in (
        "attribution",
        "data",
        "drivers",
        "evaluation",
        "gradients",
        "models",
        "score_matching",
        "sharding",
        "trace_estimators",
        "training",
        "types",
        "viz",
    ):
        assert hasattr(jg, name), name
    for sub in ("attribution", "data", "drivers", "evaluation", "models", "training"):
        mod = getattr(jg, sub)
        assert sorted(mod.__all__) == sorted(set(mod.__all__)), sub
        for name in mod.__all__:
            assert hasattr(mod, name), f"jaxgrad.{sub}.{name}"


def test_experiments_and_benchmarks_use_only_public_modules():
    for folder in ("experiments", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for dst, _ in imports(path):
                if dst.split(".")[0] == "jaxgrad":
                    private = [p for p in dst.split(".")[1:] if p.startswith("_")]
                    assert not private, f"{path.relative_to(REPO)} imports {dst}"
