"""The TensorRT exporter, runner and test fake against the REAL TensorRT Python bindings, 10.x and 11.x.

No GPU or TensorRT library is needed (see ``trt_bindings``): the pybind11 module imports with
stand-ins for its nine C entry points, so its classes, enum members and signatures can be read.

* ``test_exporter_and_runner_use_only_what_the_bindings_have``: every ``trt.X`` / ``trt.X.Y``
  the two modules name, and every method, property and keyword argument they use on TensorRT
  objects (variables mapped to their classes below), exists in the real bindings, with the
  positional arity and keyword names of one of its pybind11 overloads.
* ``test_the_fake_offers_nothing_the_bindings_lack``: every method, property and attribute of
  the fake in ``test_tensorrt_build.py`` (which the unit tests drive the exporter with) exists on
  the real class it stands for, taking no more positional arguments than the real one.

Together: what the unit tests exercise through the fake is what real TensorRT offers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.exporter import trt_bindings

ROOT = Path(__file__).resolve().parents[2]
EXPORTER = ROOT / "lightexport" / "exporter" / "tensorrt.py"
RUNNER = ROOT / "lightexport" / "parity" / "runners" / "tensorrt.py"
FAKE = ROOT / "tests" / "exporter" / "test_tensorrt_build.py"

#: What each variable holding a TensorRT object is, per module (``self._x`` written with the dot).
OBJECTS = {
    EXPORTER: {"builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition",
               "parser": "OnnxParser", "optimization": "IOptimizationProfile", "cache": "ITimingCache",
               "error": "ParserError", "t": "ITensor"},
    RUNNER: {"self._runtime": "Runtime", "self._engine": "ICudaEngine", "engine": "ICudaEngine",
             "self._context": "IExecutionContext", "self._logger": "Logger"},
}
#: Names that mean the ``tensorrt`` module itself: ``trt`` is the module in the runner and in the exporter's
#: helpers that take a ModuleType; ``trt.module`` is it where ``trt`` is the exporter's TensorRT wrapper.
WRAPPER_ATTRIBUTES = {"module", "version", "major", "strongly_typed"}
#: Flags only the weakly typed path (TensorRT 10.x) sets; 11.x drops them, which is how the exporter tells.
WEAK_ONLY = {("BuilderFlag", "FP16"), ("BuilderFlag", "INT8")}
#: The fake's classes and the real ones they stand for.
FAKE_CLASSES = {"Config": "IBuilderConfig", "Profile": "IOptimizationProfile", "Builder": "Builder",
                "OnnxParser": "OnnxParser", "ILogger": "ILogger", "_Network": "INetworkDefinition",
                "_Tensor": "ITensor", "_ParserError": "ParserError", "_Cache": "ITimingCache"}
#: The fake's own bookkeeping (what it records for assertions), never read by lightexport.
FAKE_INTERNALS = {"inputs", "errors", "network", "shapes", "cache", "blob", "foreign", "logger", "record"}


@pytest.fixture(scope="module", params=trt_bindings.VERSIONS)
def api(request):
    try:
        return trt_bindings.api_surface(request.param)["classes"]
    except trt_bindings.BindingsUnavailable as exc:
        pytest.skip(f"TensorRT {request.param} bindings unavailable here: {exc}")


def _split_params(text: str) -> list[str]:
    depth, current, out = 0, "", []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        out.append(current.strip())
    return out


def overloads(doc: str, name: str) -> list[list[tuple[str, bool]]]:
    """Each pybind11 overload's parameters after ``self``: (name, has a default)."""
    found = []
    for match in re.finditer(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> ", doc, flags=re.M):
        params = [(p.split(":")[0].split("=")[0].strip(), "=" in p) for p in _split_params(match.group(1))]
        found.append([p for p in params if p[0] not in ("self", "*args", "**kwargs")])
    return found


def _accepts(api: dict, cls: str, method: str, positional: int, keywords: list[str]) -> bool:
    member = api[cls][method]
    if member["kind"] != "method":
        return False
    for params in overloads(member["doc"], method):
        names = [n for n, _ in params]
        required = [n for n, has_default in params if not has_default]
        if positional > len(names) or any(k not in names[positional:] for k in keywords):
            continue
        if all(n in names[:positional] or n in keywords for n in required):
            return True
    return False


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _module_chain(dotted: str) -> list[str] | None:
    """``trt.module.BuilderFlag.TF32`` / ``trt.ILogger.ERROR`` / ``flags.TF32`` -> the names inside tensorrt."""
    parts = dotted.split(".")
    if parts[0] == "flags":
        return ["BuilderFlag", *parts[1:]]
    if parts[0] != "trt" or len(parts) < 2:
        return None
    if parts[1] == "module":
        return parts[2:] or None
    return None if parts[1] in WRAPPER_ATTRIBUTES else parts[1:]


def usages(path: Path) -> list[tuple]:
    """("module", [names]) and ("member", class, name, positional, keywords | None) found in ``path``."""
    tree = ast.parse(path.read_text())
    objects = OBJECTS[path]
    found, calls = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.add(id(node.func))
            owner = _dotted(node.func.value)
            keywords = [k.arg for k in node.keywords if k.arg]
            if owner in objects:
                found.append(("member", objects[owner], node.func.attr, len(node.args), keywords))
            inner = node.func.value
            if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) and \
                    _dotted(inner.func.value) in objects:  # config.get_timing_cache().serialize()
                found.append(("returned", objects[_dotted(inner.func.value)], inner.func.attr, node.func.attr,
                              len(node.args), keywords))
            chain = _module_chain(_dotted(node.func) or "")
            if chain and len(chain) == 1 and chain[0][0].isupper():
                found.append(("member", chain[0], "__init__", len(node.args), keywords))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_module_chain(_dotted(b) or "") == ["ILogger"] for b in node.bases):
            for item in node.body:  # a logger subclass overrides what TensorRT calls back
                if isinstance(item, ast.FunctionDef) and item.name != "__init__":
                    found.append(("member", "ILogger", item.name, len(item.args.args) - 1, []))
        if isinstance(node, ast.Attribute) and id(node) not in calls:
            owner = _dotted(node.value)
            if owner in objects and not isinstance(node.ctx, ast.Store):
                found.append(("member", objects[owner], node.attr, None, None))
            chain = _module_chain(_dotted(node) or "")
            if chain and not (isinstance(node.value, ast.Attribute) and _module_chain(_dotted(node.value) or "")
                              and len(chain) > 2):
                found.append(("module", chain))
    return found


@pytest.mark.parametrize("path", [EXPORTER, RUNNER], ids=["exporter", "runner"])
def test_exporter_and_runner_use_only_what_the_bindings_have(api, path):
    major = trt_bindings_major(api)
    problems, seen = [], set()
    for use in usages(path):
        if use[0] == "module":
            names = use[1]
            if names[0] not in api:
                problems.append(f"tensorrt.{names[0]} does not exist")
            elif len(names) > 1 and names[1] not in api[names[0]]:
                if (names[0], names[1]) in WEAK_ONLY and major >= 11:
                    continue
                problems.append(f"tensorrt.{'.'.join(names[:2])} does not exist")
            continue
        if use[0] == "returned":
            _, owner, method, name, positional, keywords = use
            returned = re.search(r"\) -> (?:tensorrt_bindings\.)?tensorrt\.(\w+)", api[owner][method]["doc"]) \
                if method in api[owner] else None
            if returned is None:
                problems.append(f"{owner}.{method} does not return a TensorRT object")
                continue
            use = ("member", returned.group(1), name, positional, keywords)
        _, cls, name, positional, keywords = use
        seen.add(cls)
        if name not in api[cls]:
            problems.append(f"{cls}.{name} does not exist")
        elif positional is not None and not _accepts(api, cls, name, positional, keywords):
            problems.append(f"{cls}.{name}: no overload takes {positional} positional argument(s) and "
                            f"keywords {keywords}: {api[cls][name].get('doc', '').splitlines()[:1]}")
    assert not problems, "\n".join(problems)
    assert seen, "no TensorRT object use was found: OBJECTS no longer matches the code"
    for variable in OBJECTS[path]:  # the map names only variables the code still has
        assert re.search(rf"\b{re.escape(variable)}\b", path.read_text()), f"{variable} is gone from {path.name}"


def trt_bindings_major(api: dict) -> int:
    # 11.x removed the weak-typing flags; their presence tells the generations apart in the dump
    return 10 if "FP16" in api["BuilderFlag"] else 11


def test_weak_typing_flags_exist_exactly_on_10x(api):
    """The exporter tells the generations apart by ``BuilderFlag.FP16``; the two releases must agree with it."""
    assert all(member in api["BuilderFlag"] for _, member in WEAK_ONLY) == (trt_bindings_major(api) == 10)


def _fake_members(tree: ast.Module) -> dict[str, dict[str, int | None]]:
    """For each fake class: public methods (with their positional parameter count), properties, attributes."""
    out: dict[str, dict[str, int | None]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) or node.name not in FAKE_CLASSES:
            continue
        members = out.setdefault(node.name, {})
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                is_property = any(_dotted(d) == "property" for d in item.decorator_list)
                if item.name == "__init__" or not item.name.startswith("_"):
                    members[item.name] = None if is_property else len(item.args.args) - 1
                for sub in ast.walk(item):
                    if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store) and \
                            _dotted(sub.value) == "self" and not sub.attr.startswith("_"):
                        members.setdefault(sub.attr, None)
            elif isinstance(item, ast.Assign):
                for target in item.targets:
                    for name in (target.elts if isinstance(target, ast.Tuple) else [target]):
                        if isinstance(name, ast.Name):
                            members[name.id] = None
    return out


def test_the_fake_offers_nothing_the_bindings_lack(api):
    tree = ast.parse(FAKE.read_text())
    members = _fake_members(tree)
    assert set(members) == set(FAKE_CLASSES), "FAKE_CLASSES no longer matches the fake's classes"
    problems = []
    for fake_class, fake_members in members.items():
        real = FAKE_CLASSES[fake_class]
        for name, positional in fake_members.items():
            if name in FAKE_INTERNALS:
                continue
            if name not in api[real]:
                problems.append(f"fake {fake_class}.{name}: real {real} has no {name}")
            elif positional is not None and name != "__init__" and not _accepts(api, real, name, positional, []):
                problems.append(f"fake {fake_class}.{name} takes {positional} argument(s); real {real}.{name} does not")
    # the module-level flags the fake offers, for the generation it imitates
    from tests.exporter.test_tensorrt_build import FakeTensorRT

    fake = FakeTensorRT("10.13.0" if trt_bindings_major(api) == 10 else "11.0.0")
    for enum in ("BuilderFlag", "MemoryPoolType"):
        for flag in vars(getattr(fake, enum)):
            if flag not in api[enum]:
                problems.append(f"fake {enum}.{flag}: real {enum} has no {flag}")
    assert not problems, "\n".join(problems)
