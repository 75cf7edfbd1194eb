"""The import graph reads top-down: each layer imports only layers below it, and no module cycle exists.

model_defs -> loading -> reparam -> exporter -> parity -> api -> suite/bench/triton -> cli, with the
small shared modules (errors, precision, fileio, backends, options, artifacts, onnxfile) underneath.
Checked statically, over every import statement (the lazy ones inside functions too, so a lazy
import cannot hide an upward dependency) and every ``"lightexport.module:attribute"`` reference
(the format table names its exporters and runners that way). A package is the module its
``__init__`` is, so an import of ``lightexport.calib`` is an edge to ``calib/__init__.py``: without
that, a cycle through a package was invisible (a planted one is caught below).
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

import lightexport

ROOT = Path(lightexport.__file__).parent
#: Layer of each top-level module or package; an import must go to the same or a lower layer.
LAYERS = {
    "errors": 0, "precision": 0, "fileio": 0, "nativeio": 0, "cpu": 0, "__init__": 0,
    "model_defs": 1,
    "calib": 2,
    "backends": 3, "options": 3, "artifacts": 3, "onnxfile": 3,
    "loading": 4, "usercode": 4,
    "reparam": 5,
    "exporter": 6,
    "parity": 7,
    "api": 8,
    "suite": 9, "bench": 9, "triton": 9,
    "cli": 10,
}
#: Layer-crossing imports that are deliberate (the lower module names the upper one as a plug-in).
ALLOWED_UP = {
    ("backends", "exporter"), ("backends", "parity"),  # the table names each format's exporter and runner
    ("backends", "bench"),  # ... and a format's arm64 set-up hook (bench/arm64_executorch.py), built on bench/arm64
    ("__init__", "backends"),  # the package switches OpenVINO's telemetry off before anything imports it
}
REFERENCE = re.compile(r"^(lightexport(?:\.\w+)+):\w+$")


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module names, a package named as itself (``lightexport.calib``, not ``lightexport.calib.__init__``)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path], top_level_only: bool = False) -> set[str]:
    """The lightexport modules ``path`` imports: ``from pkg import name`` is ``pkg.name`` where that is a
    module, else ``pkg``; string references ``"pkg.module:attr"`` count as imports of ``pkg.module``."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightexport"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lightexport"))
        elif not top_level_only and isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = REFERENCE.match(node.value)
            if match:
                found.add(match.group(1))
    return found


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return top, LAYERS[top]


def upward_imports(root: Path = ROOT) -> tuple[list[str], set[tuple[str, str]]]:
    """Imports that point up, and which allowed crossings were used."""
    modules = _modules(root)
    wrong, used = [], set()
    for module, path in modules.items():
        top, layer = _layer(module)
        for target in _imports(path, modules):
            if target == "lightexport" or target.split(".")[1] not in LAYERS:
                continue
            other, other_layer = _layer(target)
            if other_layer > layer:
                if (top, other) in ALLOWED_UP:
                    used.add((top, other))
                else:
                    wrong.append(f"{module} -> {target}")
    return wrong, used


def find_cycle(root: Path = ROOT) -> list[str] | None:
    """A module-level import cycle (what makes ``import`` fail with a circular ImportError), or None."""
    modules = _modules(root)
    graph = {m: {t for t in _imports(p, modules, top_level_only=True) if t in modules and t != m}
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state:
                cycle = visit(nxt, [*trail, node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            if cycle:
                return cycle
    return None


def test_every_module_has_a_layer():
    assert {_layer(m)[0] for m in _modules()} <= set(LAYERS)


def test_imports_only_point_down():
    wrong, used = upward_imports()
    assert not wrong, "upward imports:\n" + "\n".join(sorted(wrong))
    assert used == ALLOWED_UP, f"allowances no import uses any more: {sorted(ALLOWED_UP - used)}"


def test_model_definitions_import_only_themselves():
    modules = _modules()
    for module, path in modules.items():
        if _layer(module)[0] == "model_defs":
            outside = {t for t in _imports(path, modules) if _layer(t)[0] not in ("model_defs", "errors", "__init__")}
            assert not outside, f"{module} imports {outside}"


def test_no_import_cycle_at_module_level():
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_table_references_resolve_to_modules():
    modules = _modules()
    refs = {m.group(1) for node in ast.walk(ast.parse((ROOT / "backends.py").read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and (m := REFERENCE.match(node.value))}
    assert refs and refs <= set(modules), sorted(refs - set(modules))


@pytest.fixture
def package_copy(tmp_path):
    copy = tmp_path / "lightexport"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_planted_cycle_through_a_package_is_caught(package_copy):
    """Issue #25: `from lightexport.calib import ImageFolder` in calib/preprocess.py made `import lightexport.calib`
    fail with a circular ImportError while the old check passed."""
    assert find_cycle(package_copy) is None
    preprocess = package_copy / "calib" / "preprocess.py"
    preprocess.write_text(preprocess.read_text().replace(
        "from lightexport.errors import", "from lightexport.calib import ImageFolder  # noqa: F401\n"
                                          "from lightexport.errors import", 1))
    cycle = find_cycle(package_copy)
    assert cycle is not None and "lightexport.calib" in cycle and "lightexport.calib.preprocess" in cycle


def test_a_planted_upward_reference_is_caught(package_copy):
    """A "module:attr" string in a low layer is an import like any other."""
    errors = package_copy / "fileio.py"
    errors.write_text(errors.read_text() + '\nPLUGIN = "lightexport.suite.run:run_suite"\n')
    wrong, _ = upward_imports(package_copy)
    assert wrong == ["lightexport.fileio -> lightexport.suite.run"]
