"""MNN behind the runner interface: a ``.mnn`` through ``MNN.nn.load_module_from_file`` and a runtime manager.

MNN's precision modes are the setting that matters: ``normal`` (its default) and ``high`` compute
fp32; ``low`` computes fp16 where the CPU has fp16 arithmetic (ARMv8.2; on x86 it stays fp32).
Mobile builds commonly set ``low`` for speed, so where the CPU has fp16 the artifact is judged
pinned (``high``) and at ``low``. The modes go in as integers: the string form knows only
``"low"``, ``"high"`` and ``"Low_BF16"`` and silently turns anything else into normal.

A ``.mnn`` is a FlatBuffer without a file identifier; MNN verifies it on load and raises
``SystemError`` for junk, empty or truncated files (no crash), but a file whose body is zeroed
loads and returns its input. So a file is checked structurally first (root and vtable inside the
file), load errors are one ``InputFileError``, and outputs are checked against the shapes the
provenance records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lightexport.backends import require
from lightexport.errors import InputFileError
from lightexport.nativeio import captured
from lightexport.parity.runners.base import ArtifactIO, Feed, Outputs, Runner, TensorSpec
from lightexport.parity.settings import RunSetting
from lightexport.parity.tolerances import coarser
from lightexport.precision import Precision

PRECISION = {"normal": 0, "high": 1, "low": 2}  # MNN::BackendConfig::PrecisionMode
WINOGRAD_MEMORY_LEVEL = 3  # MNN::Interpreter::HintMode: Winograd tile candidates (default 3; 0: the smallest)


def _mnn():
    """MNN, imported with its C++ banner ("The device supports: ...", printed to fd 1) kept off the user's stdout."""
    import sys

    if "MNN" in sys.modules:
        return sys.modules["MNN"]
    with captured(1):
        return require("MNN", "an MNN artifact")


def has_fp16_arithmetic() -> bool:
    """Whether this CPU computes fp16 natively (ARMv8.2 ``asimdhp``): where MNN's precision=low means fp16."""
    import platform

    if platform.machine().lower() not in ("aarch64", "arm64"):
        return False
    try:
        return "asimdhp" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def check_mnn(path: Path) -> None:
    """A FlatBuffer's root table and vtable must lie inside the file (MNN has no file identifier to check)."""
    data = path.read_bytes()
    size = len(data)
    if size < 16:
        raise InputFileError(f"{path} is not an MNN model ({size} bytes)")
    root = int.from_bytes(data[0:4], "little")
    vtable = root - int.from_bytes(data[root:root + 4], "little", signed=True) if 8 <= root <= size - 4 else -1
    if root % 4 or not 8 <= root <= size - 4 or vtable % 2 or not 0 <= vtable <= size - 4:
        raise InputFileError(f"{path} is not an MNN model (its FlatBuffer root is outside the file)")
    table_size, object_size = (int.from_bytes(data[vtable + i:vtable + i + 2], "little") for i in (0, 2))
    if table_size < 4 or table_size % 2 or vtable + table_size > size or object_size < 4 or root + object_size > size:
        raise InputFileError(f"{path} is not an MNN model (its FlatBuffer vtable is malformed)")


def read_metadata(path: Path) -> dict[str, str]:
    """The provenance sidecar ``NAME.mnn.json`` beside the model."""
    from lightexport.artifacts import read_sidecar_provenance

    return read_sidecar_provenance(Path(path))


def _names(meta: dict[str, str]) -> list[str]:
    try:
        names = json.loads(meta.get("lightexport.outputs") or meta.get("outputs") or '["logits"]')
    except ValueError:
        raise InputFileError("the MNN sidecar's output names are not JSON") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InputFileError("the MNN sidecar's output names are not a list of names")
    return names


def read_io(path: Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    meta = metadata or {k.removeprefix("lightexport."): v for k, v in read_metadata(path).items()}
    size, batch, channels = meta.get("input_size", ""), meta.get("batch", "1"), meta.get("channels", "3")
    shape = (int(batch), int(channels), int(size), int(size)) if size.isdigit() and batch.isdigit() else (-1, 3, -1, -1)
    return ArtifactIO((TensorSpec("input", "float32", shape),),
                      tuple(TensorSpec(n, "float32", ()) for n in _names({"outputs": meta.get("outputs", "")})
                            if meta.get("outputs")))


def run_settings(made: Precision, *, threads: int | None = None, runtime_default: bool = True) -> list[RunSetting]:
    """Pinned fp32 (precision high, Winograd restricted), MNN's defaults, and where the CPU has fp16 arithmetic
    precision low, judged as fp16.

    MNN's default 3x3 convolutions pick large Winograd tiles, whose fp32 transforms are not exact: the seed's
    YOLOv8 detector at 640 px came out 1.7e-4 to 6.2e-4 of range off (over the fp32 limit) with every precision
    and memory mode, and 2.7e-6 to 5.3e-6 with the ``WINOGRAD_MEMORY_LEVEL`` hint at 0 (the smallest tiles). So
    pinned sets that hint, and MNN's defaults are judged too, as the fp32 they are."""
    settings = [RunSetting("fp32 pinned (MNN precision high, WINOGRAD_MEMORY_LEVEL 0)",
                           {"threads": threads, "inference_precision": "high"}, made, tag="fp32")]
    if runtime_default and made is not Precision.INT8:
        settings.append(RunSetting("fp32: MNN's defaults (precision normal, its Winograd tiles)",
                                   {"threads": threads, "inference_precision": "normal"}, made, tag="default",
                                   pinned=False))
    if runtime_default and has_fp16_arithmetic():
        settings.append(RunSetting("fp16: MNN precision low, what mobile builds set for speed",
                                   {"threads": threads, "inference_precision": "low"},
                                   coarser(made, Precision.FP16), tag="low", pinned=False))
    return settings


class MnnRunner(Runner):
    """One MNN module; ``inference_precision`` is MNN's mode ("high", "normal", "low"; None: MNN's default).

    "high" also sets the ``WINOGRAD_MEMORY_LEVEL`` hint to 0 (:func:`run_settings` says why): the most exact
    fp32 MNN computes."""

    backend = "mnn"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, inference_precision: str | None = "high",
                 name: str | None = None) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.threads = threads
        self.inference_precision = inference_precision or "normal"

    def activate_impl(self) -> None:
        _mnn()
        import MNN.expr as expr
        import MNN.nn as nn

        if not self.path.is_file():
            raise InputFileError(f"MNN model not found: {self.path}")
        check_mnn(self.path)
        self.expr = expr
        config = {"backend": "CPU", "numThread": int(self.threads or 1),
                  "precision": PRECISION[self.inference_precision], "memory": 0}
        self.runtime = nn.create_runtime_manager((config,))
        if self.inference_precision == "high":
            self.runtime.set_hint(WINOGRAD_MEMORY_LEVEL, 0)
        with captured(1, 2) as said:  # MNN says why a load failed on stdout ("Invalidate buffer ..."), nothing else
            try:  # empty name lists: the model's own inputs and outputs, in its order
                self.module = nn.load_module_from_file(str(self.path), [], [], runtime_manager=self.runtime)
                info = self.module.get_info() if self.module is not None else {}
            except (SystemError, RuntimeError, ValueError):
                self.module, info = None, {"failed": True}
        why = f": MNN says {said.reason()!r}" if said.reason() else ""
        if info.get("failed"):
            raise InputFileError(f"MNN cannot load {self.path} (not an MNN model, or truncated){why}")
        if self.module is None or not info.get("inputNames") or not info.get("outputNames"):
            raise InputFileError(f"MNN cannot load {self.path} (it names no inputs or outputs){why}")
        self.blob_in = info["inputNames"][0]
        recorded = read_metadata(self.path)
        names = _names(recorded) if recorded.get("lightexport.outputs") else list(info["outputNames"])
        self.output_names = names if len(names) == len(info["outputNames"]) else list(info["outputNames"])
        self.input_names = ["input"]
        fp16 = self.inference_precision == "low" and has_fp16_arithmetic()
        self.execution_precision = "fp16" if fp16 else "fp32"

    def deactivate_impl(self) -> None:
        del self.module, self.runtime

    def infer_impl(self, feed: Feed) -> Outputs:
        expr = self.expr
        x = np.ascontiguousarray(feed["input"], dtype=np.float32)  # a float64 const raises SystemError
        try:
            # a list in, a list out: given a bare Var, forward returns only the first output
            result = self.module.forward([expr.const(x, list(x.shape), expr.NCHW)])
        except (SystemError, RuntimeError) as exc:
            raise InputFileError(f"{self.path} cannot run on an input of shape {x.shape}") from exc
        results = result if isinstance(result, (list, tuple)) else [result]
        outputs = {}
        for name, value in zip(self.output_names, results):
            if value.data_format == expr.NC4HW4:
                value = expr.convert(value, expr.NCHW)
            outputs[name] = np.array(value.read(), copy=True)
        return outputs
