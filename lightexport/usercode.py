"""A model from the user's own code: ``path/to/file.py:factory`` or ``package.module:factory``, or a whole module.

Most people who reach for FasterNet do not deploy a bare classifier: they paste its code into
their own project and train a detector on it. Such a model comes in as an *entry point*, a
callable returning an ``nn.Module`` (keyword arguments from ``--model-arg key=value``, parsed as
Python literals). Naming a file runs it, which is what the user asked for; weights still load by
the safe rules (``--weights`` as a state dict; code-running pickles only with
``--trust-checkpoint``). An artifact records the entry point, the sha256 of its file and the
arguments, so ``lightexport parity`` rebuilds the reference from the same code, and refuses
with one line when the file changed since.

Every way this can go wrong is one line with its exit code: a file that does not exist (5), a
module that cannot be imported or a misspelt factory (2, with the close matches), a factory that
raises or returns something other than an ``nn.Module`` (5, the input is the user's code).
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lightexport.errors import InputFileError, UsageError
from lightexport.model_defs.registry import is_library_name

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")
#: The seed user code runs under, so a factory's random initialization is the same in every process
#: (an artifact exported from random weights is checked against the same random weights later).
FACTORY_SEED = 0


@dataclass(frozen=True)
class Entry:
    """Where a user's model comes from: a file or an importable module, the factory in it, its arguments."""

    target: str  #: an absolute file path ("/home/u/det/model.py") or a dotted module ("mypkg.models")
    factory: str
    args: dict[str, Any] = field(default_factory=dict)
    is_file: bool = True

    @property
    def spelled(self) -> str:
        return f"{self.target}:{self.factory}"

    @property
    def name(self) -> str:
        """A name for default file names and reports: the factory, after its file or module (``model_build``)."""
        stem = Path(self.target).stem if self.is_file else self.target.rsplit(".", 1)[-1]
        return f"{stem}_{self.factory}" if self.factory not in ("build", "create", "model", "make") else stem

    def source_file(self) -> Path | None:
        if self.is_file:
            return Path(self.target)
        spec = importlib.util.find_spec(self.target)
        return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None

    def sha256(self) -> str | None:
        path = self.source_file()
        return hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else None


def parse_entry(source: str, args: Mapping[str, Any] | None = None) -> Entry | None:
    """The entry point ``source`` spells (``file.py:factory`` or ``pkg.mod:factory``), or None when it is not one."""
    if ":" not in source or is_library_name(source):
        return None
    target, _, factory = source.rpartition(":")
    if not target or not _IDENTIFIER.match(factory):
        return None
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise InputFileError(f"{target}: no such file (the model's code, named in {source})")
        return Entry(str(path.resolve()), factory, dict(args or {}), is_file=True)
    if _DOTTED.match(target):
        return Entry(target, factory, dict(args or {}), is_file=False)
    return None


def parse_model_args(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``key=value`` pairs, each value a Python literal (``3``, ``0.5``, ``(1, 3, 640, 640)``, ``'n'``); a bare word
    that is no literal is taken as a string (``scale=n``)."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not _IDENTIFIER.match(key):
            raise UsageError(f"--model-arg takes KEY=VALUE with KEY a Python name, got {pair!r}")
        if key in args:
            raise UsageError(f"--model-arg names {key} twice")
        try:
            args[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            if not _IDENTIFIER.match(text.strip()):
                raise UsageError(f"--model-arg {key}={text!r}: the value is neither a Python literal nor a bare word "
                                 "(quote strings: key='a b')") from None
            args[key] = text.strip()
    return args


@contextlib.contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    """The file's own folder on ``sys.path`` while it runs, so it imports its siblings as it does at home."""
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if added and str(folder) in sys.path:
            sys.path.remove(str(folder))


def _where(exc: BaseException, path: str | None) -> str:
    """``file.py, line 12`` of the innermost frame in the user's file, when there is one."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if path is None or f.filename == path]
    return f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def describe_failure(exc: BaseException, path: str | None = None) -> str:
    """An exception from the user's code as one line: its type, its first line, and where in ``path`` it rose."""
    return f"{_one_line(exc)}{_where(exc, path)}"


def load_module_of(entry: Entry):
    """Run the entry's file, or import its module; one line for each way that fails."""
    if not entry.is_file:
        try:
            return importlib.import_module(entry.target)
        except ModuleNotFoundError as exc:
            if exc.name and entry.target.startswith(exc.name):
                raise UsageError(f"no module named {entry.target!r} (is it installed, or on PYTHONPATH?)") from None
            raise InputFileError(f"importing {entry.target} failed: {_one_line(exc)}") from exc
        except Exception as exc:  # noqa: BLE001  # the user's module raised while importing
            raise InputFileError(f"importing {entry.target} failed: {_one_line(exc)}{_where(exc, None)}") from exc
    path = Path(entry.target)
    name = f"lightexport_user_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputFileError(f"{path}: cannot be loaded as Python code")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and torch.fx look classes up by module name
    try:
        with _importable_from(path.parent):
            spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        if exc.lineno is None:  # no line to point at: not text (null bytes, another encoding)
            raise InputFileError(f"{path.name} is not Python source ({exc.msg})") from exc
        raise InputFileError(f"{path.name} has a syntax error at line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:  # noqa: BLE001  # running the user's file raised
        sys.modules.pop(name, None)
        raise InputFileError(f"running {path.name} failed: {_one_line(exc)}{_where(exc, str(path))}") from exc
    return module


def build_from_entry(entry: Entry) -> nn.Module:
    """Call the entry's factory with its arguments under a fixed seed; the ``nn.Module`` it returns, in eval mode."""
    module = load_module_of(entry)
    factory = getattr(module, entry.factory, None)
    if factory is None:
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        close = difflib.get_close_matches(entry.factory, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else (f" (it defines {', '.join(sorted(names)[:8])})"
                                                                    if names else "")
        raise UsageError(f"{Path(entry.target).name if entry.is_file else entry.target} has no {entry.factory!r}{hint}")
    if not callable(factory):
        raise UsageError(f"{entry.spelled}: {entry.factory} is a {type(factory).__name__}, not a callable")
    if not isinstance(factory, type) or not issubclass(factory, nn.Module):
        _check_arguments(factory, entry)
    try:  # arguments the signature cannot take are the user's mistake; a TypeError from inside is the code's
        inspect.signature(factory).bind(**entry.args)
    except TypeError as exc:
        raise UsageError(f"{entry.spelled} does not take these arguments ({_one_line(exc)}): check --model-arg") \
            from exc
    except ValueError:  # no signature to read (a builtin): the call says
        pass
    path = entry.target if entry.is_file else None
    given = f" (with --model-arg {', '.join(f'{k}={v!r}' for k, v in entry.args.items())})" if entry.args else ""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(FACTORY_SEED)
            built = factory(**entry.args)
    except Exception as exc:  # noqa: BLE001  # the factory raised: the user's code, said in one line
        raise InputFileError(f"{entry.spelled} raised {_one_line(exc)}{_where(exc, path)}{given}") from exc
    if not isinstance(built, nn.Module):
        raise InputFileError(f"{entry.spelled} returned a {type(built).__name__}, not a torch.nn.Module")
    return built.eval()


def _check_arguments(factory: Any, entry: Entry) -> None:
    """Refuse --model-arg names the factory does not take, before running it (with the names it does take)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in entry.args if k not in params]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(params), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"{entry.spelled} takes no argument {unknown[0]!r}{hint} (it takes: "
                         f"{', '.join(params) or 'none'})")


def whole_module(obj: Any, source: str) -> nn.Module | None:
    """The model inside a trusted whole-model checkpoint: ``torch.save(model)`` itself, or the training
    frameworks' wrappers (Ultralytics' ``{'model': ..., 'ema': ...}``: the EMA weights first, in float)."""
    if isinstance(obj, nn.Module):
        return obj.float().eval()
    if isinstance(obj, Mapping):
        for key in ("ema", "model_ema", "model", "module", "net"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner.float().eval()
    return None


class ProgramModule(nn.Module):
    """A ``torch.export``-ed program as a module: ``ExportedProgram.module()`` refuses ``eval()``/``train()`` (the
    program was captured in one mode for good), so this holds it and keeps the mode flag for callers."""

    def __init__(self, program: nn.Module, example_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.program = program
        if example_shape is not None:
            self.input_shape = example_shape

    def train(self, mode: bool = True) -> ProgramModule:
        self.training = mode
        return self

    def forward(self, *args: Any) -> Any:
        return self.program(*args)


def load_exported_program(path: Path) -> nn.Module:
    """A ``torch.export``-ed program (``.pt2``) as the module it runs, with its example input's shape."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001  # torch raises many types for a file that is no program
        raise InputFileError(f"{path} is not a torch.export program (.pt2): {_one_line(exc)}") from exc
    shape = None
    example = getattr(program, "example_inputs", None)
    if example and example[0] and isinstance(example[0][0], torch.Tensor):
        shape = tuple(example[0][0].shape)
    return ProgramModule(program.module(), shape)


def flat_outputs(result: Any) -> list[tuple[str, torch.Tensor]]:
    """A module's result as (name, tensor) pairs in the order exporters flatten it, named stably: a tensor is
    ``out0``; a tuple or list gives ``out0``, ``out1`` ... with nested items ``out1_0``; a dict its keys
    (nested ``key_0``, ``key_sub``)."""
    return _flat(result, None)


def _flat(result: Any, prefix: str | None) -> list[tuple[str, torch.Tensor]]:
    if isinstance(result, torch.Tensor):
        return [(prefix or "out0", result)]
    if isinstance(result, Mapping):
        return [pair for key, value in result.items()
                for pair in _flat(value, _name(str(key)) if prefix is None else f"{prefix}_{_name(str(key))}")]
    if isinstance(result, (tuple, list)):
        return [pair for i, value in enumerate(result)
                for pair in _flat(value, f"out{i}" if prefix is None else f"{prefix}_{i}")]
    if result is None:
        return []
    raise InputFileError(f"the model returns a {type(result).__name__}; outputs must be tensors, or tuples, lists "
                         "or dicts of them")


def _name(key: str) -> str:
    cleaned = re.sub(r"\W", "_", key)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"out_{cleaned}"


def is_flat(names: list[str]) -> bool:
    """Whether outputs named ``names`` (:func:`flat_outputs`) came as one tensor or a flat tuple/list of them."""
    return names == [f"out{i}" for i in range(len(names))]


class FlatOutputs(nn.Module):
    """``module`` returning its outputs as one flat tuple of tensors, in :func:`flat_outputs` order.

    ONNX's exporter flattens nested outputs itself; OpenVINO's frontend and pnnx trace with
    ``torch.jit.trace``, which refuses a dict of mixed values (a detector's ``{'boxes': t, 'feats': [...]}``)
    and ExecuTorch keeps the pytree. Every exporter sees this flat form, so every format has the same
    outputs in the same order as the reference.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for _, t in flat_outputs(self.module(x)))
