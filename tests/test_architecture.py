"""The dependency direction of docs/architecture.md, read from the code's own imports (lazy ones
included: an import inside a function is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The run side, top to bottom; a module may import its own layer or any layer below it.
LAYERS = [
    ("edgekit.cli",),
    ("edgekit.api",),
    ("edgekit.tune",),  # the search: measures candidates through check, bench and runtimes
    ("edgekit.check",),
    ("edgekit.bench", "edgekit.report"),
    ("edgekit.targets",),
    ("edgekit.runtimes",),
    (
        "edgekit.tflite",
        "edgekit.artifacts",
        "edgekit.profiles",
        "edgekit.cores",
        "edgekit.plans",
        "edgekit.data",
        "edgekit.schema",
        "edgekit.resources",
        "edgekit.versions",
        "edgekit.keras_compat",
    ),
    ("edgekit.ui",),
    ("edgekit.errors",),
]

# No circle is allowed (the stage side's pipeline <-> stages circle went with issue 20's stage half).
KNOWN_CIRCLES: list[set[str]] = []
# What runs the stages: a stage never reaches up to the pipeline or the commands.
ABOVE_THE_STAGES = ("edgekit.pipeline", "edgekit.export_job", "edgekit.api", "edgekit.cli")


def _modules() -> dict[str, Path]:
    mods = {}
    for p in (ROOT / "edgekit").rglob("*.py"):
        if "_generated" in p.parts:
            continue
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _imports() -> dict[str, set[str]]:
    mods = _modules()

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        package = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                # `from edgekit.x import y` imports the module edgekit.x.y when there is one
                names = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            for name in names:
                target = known(name) if name.startswith("edgekit") else None
                if target and target != m:
                    edges[m].add(target)
    return edges


def _circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


def test_no_two_modules_import_each_other():
    circles = [c for c in _circles(_imports()) if c not in KNOWN_CIRCLES]
    assert not circles, f"import circles: {[sorted(c) for c in circles]}"


def test_the_stages_never_import_what_runs_them():
    upward = [
        f"{m} -> {t}"
        for m, targets in _imports().items()
        if m.startswith("edgekit.stages")
        for t in sorted(targets)
        if t in ABOVE_THE_STAGES
    ]
    assert not upward, f"stages importing what runs them: {upward}"


def test_the_run_side_never_imports_upward():
    upward = []
    for m, targets in _imports().items():
        here = _layer(m)
        if here is None:
            continue
        for t in sorted(targets):
            there = _layer(t)
            if there is not None and there < here:
                upward.append(f"{m} -> {t}")
    assert not upward, upward


def test_the_checker_sees_a_circle_and_an_upward_import():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(edges) == [{"a", "b", "c"}]
    assert _layer("edgekit.targets.ssh") > _layer("edgekit.bench.benchmark")
    assert "edgekit.targets.emulated.target" in _imports()["edgekit.targets"]
