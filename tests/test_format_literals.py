"""No layer outside a format's own modules spells a format's name, runtime or suffix (that is what would make a
new format touch them), and the README's format table is the table's own rendering.

Kept apart from ``test_backends.py``: its fake format stays registered for that whole module, and neither
check here may see it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lightexport
from lightexport.backends import BACKENDS, INTERCHANGE, RUNTIMES

ROOT = Path(lightexport.__file__).parent

# --------------------------------------------------------------------------- no format spelled outside its modules

#: Files that may spell a format for a reason of their own, and the reason.
ALLOWED = {
    "backends.py": "the table itself",
    "triton/python_model.py": "copied verbatim into Triton repositories: it cannot import lightexport's table",
}


def _own_modules(record) -> set[str]:
    refs = [record.exporter, record.runner, record.metadata, record.io, record.settings, record.naive, record.layers,
            record.ceiling, record.aarch64_setup, *record.helpers]
    return {ref.partition(":")[0] for ref in refs if ref}


def _path_module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _string_constants(tree: ast.AST):
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_no_format_is_spelled_outside_its_record_and_modules():
    """Issue #25: 'onnxruntime', 'openvino', '.xml', '.engine' were spelt in about 20 places outside the table."""
    spelled = {}
    every_format = set().union(*(_own_modules(r) for r in BACKENDS.values()))
    for record in BACKENDS.values():
        # the interchange format (ONNX) is what other formats' converters start from: their modules may name it
        owners = every_format if record.name == INTERCHANGE else _own_modules(record)
        for word in (record.name, record.runtime, *record.suffixes):
            spelled.setdefault(word, set()).update(owners)
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative in ALLOWED:
            continue
        module = _path_module(path)
        for node in _string_constants(ast.parse(path.read_text())):
            owners = spelled.get(node.value)
            if owners is not None and module not in owners:
                found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert not found, "format literals outside their record and modules:\n" + "\n".join(found)


def test_every_runtime_is_a_record():
    assert set(RUNTIMES) == {b.runtime for b in BACKENDS.values()}


def test_readme_format_table_is_current():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "format_table.py"
    spec = importlib.util.spec_from_file_location("format_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.readme_table() == module.render(), "run: python benchmarks/format_table.py --write-readme"
