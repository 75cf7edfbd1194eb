"""The import graph reads top-down: each layer imports only layers below it, and no module cycle exists.

model_defs -> loading -> reparam -> exporter -> parity -> api -> suite/bench/triton -> cli, with the
small shared modules (errors, precision, fileio, backends, options, artifacts, onnxfile) underneath.
Checked statically (every import statement, including the lazy ones inside functions), so a lazy
import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lightexport

ROOT = Path(lightexport.__file__).parent
#: Layer of each top-level module or package; an import must go to the same or a lower layer.
LAYERS = {
    "errors": 0, "precision": 0, "fileio": 0, "__init__": 0,
    "model_defs": 1,
    "calib": 2,
    "backends": 3, "options": 3, "artifacts": 3, "onnxfile": 3,
    "loading": 4,
    "reparam": 5,
    "exporter": 6,
    "parity": 7,
    "api": 8,
    "suite": 9, "bench": 9, "triton": 9,
    "cli": 10,
}
#: Layer-crossing lazy imports that are deliberate (the lower module names the upper one as a plug-in).
ALLOWED_UP = {
    ("backends", "exporter"), ("backends", "parity"),  # the table names each format's exporter and runner
    ("artifacts", "backends"),
    ("__init__", "backends"),  # the package switches OpenVINO's telemetry off before anything imports it
}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT.parent).with_suffix("").parts): p for p in ROOT.rglob("*.py")}


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightexport"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lightexport"))
    return found


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return top, LAYERS[top]


def test_every_module_has_a_layer():
    assert {_layer(m)[0] for m in _modules()} <= set(LAYERS)


def test_imports_only_point_down():
    wrong = []
    for module, path in _modules().items():
        top, layer = _layer(module)
        for target in _imports(path):
            if target == "lightexport" or target.split(".")[1] not in LAYERS:
                continue
            other, other_layer = _layer(target)
            if other_layer > layer and (top, other) not in ALLOWED_UP:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "upward imports:\n" + "\n".join(sorted(wrong))


def test_model_definitions_import_only_themselves():
    for module, path in _modules().items():
        if _layer(module)[0] == "model_defs":
            outside = {t for t in _imports(path) if _layer(t)[0] not in ("model_defs", "errors", "__init__")}
            assert not outside, f"{module} imports {outside}"


def test_no_import_cycle_at_module_level():
    modules = _modules()
    graph = {m: {t for t in _imports(p, top_level_only=True) if t in modules and t != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
