"""LiteRT (``.tflite``) behind the runner interface: ``ai_edge_litert.interpreter.Interpreter`` on the CPU.

Every file is read and checked first by :mod:`lightexport.exporter.tflite_files` (stdlib only):
the interpreter trusts the FlatBuffer it maps, so a junk or truncated file is refused in one line
before native code sees it. The model takes NCHW float32 (what lightexport's exporter writes and
records as ``lightexport.input_layout``); a model recorded as NHWC is refused rather than fed the
wrong layout.

Settings: the interpreter applies LiteRT's default XNNPACK delegate, sized by ``num_threads``
(its pthreadpool: ``threads - 1`` workers beside the caller). The Python ``Interpreter`` exposes
no XNNPACK flags (only ``num_threads`` and the op resolver), so nothing here can force fp16
arithmetic (XNNPACK's ``FORCE_FP16`` flag, reachable only through the newer ``CompiledModel``
API's ``CpuOptions.xnnpack_flags``) and nothing needs pinning: XNNPACK computes fp32 for fp32
operators unless that flag is set (or the model asks for reduced precision, which these do not),
on x86 and ARM alike. So the record has one setting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lightexport.backends import require
from lightexport.errors import InputFileError
from lightexport.exporter.tflite_files import describe, entry
from lightexport.nativeio import captured
from lightexport.parity.runners.base import ArtifactIO, Feed, Outputs, Runner, TensorSpec, reason


def _native_stderr_off():
    """LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to fd 2: not ours to show."""
    return captured(2)


def read_metadata(path: Path) -> dict[str, str]:
    """The provenance sidecar ``NAME.tflite.json`` beside the model (the model itself is checked first)."""
    from lightexport.artifacts import read_sidecar_provenance

    describe(path)
    return read_sidecar_provenance(Path(path))


def _names(meta: dict[str, str], count: int) -> list[str]:
    try:
        names = json.loads(meta.get("lightexport.outputs") or "null")
    except ValueError:
        raise InputFileError("the LiteRT sidecar's output names are not JSON") from None
    if isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names):
        return names
    return ["logits"] if count == 1 else [f"out{i}" for i in range(count)]


def read_io(path: Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    """The model's tensors as it declares them, the outputs named as the provenance records."""
    inputs, outputs = entry(describe(path))
    meta = {"lightexport." + k.removeprefix("lightexport."): v for k, v in metadata.items()} if metadata \
        else read_metadata(path)  # the record passes {} when it has none: the sidecar's then
    names = _names(meta, len(outputs))
    return ArtifactIO(tuple(TensorSpec(f"input{i}" if i else "input", t["dtype"], tuple(t["shape"]))
                            for i, t in enumerate(inputs)),
                      tuple(TensorSpec(n, t["dtype"], tuple(t["shape"])) for n, t in zip(names, outputs)))


class LiteRTRunner(Runner):
    """One ``.tflite`` through LiteRT's interpreter (XNNPACK, its default CPU delegate); ``threads`` sizes it."""

    backend = "litert"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.threads = threads

    def activate_impl(self) -> None:
        info = describe(self.path)  # before any native code touches the file
        inputs, outputs = entry(info)
        if len(inputs) != 1 or not outputs:
            raise InputFileError(f"{self.path} takes {len(inputs)} inputs and returns {len(outputs)} outputs; "
                                 "lightexport runs one image input")
        meta = read_metadata(self.path)
        layout = meta.get("lightexport.input_layout", "NCHW")
        if layout != "NCHW":
            raise InputFileError(f"{self.path} takes {layout} input; lightexport feeds NCHW (PyTorch's layout): "
                                 "export it without to_channel_last_io")
        with _native_stderr_off():
            require("ai_edge_litert", "a LiteRT model")  # its hint is the record's: the extra
            from ai_edge_litert import interpreter as module
        try:
            with _native_stderr_off():
                self.interpreter = module.Interpreter(model_path=str(self.path),
                                                      num_threads=int(self.threads) if self.threads else None)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InputFileError(f"LiteRT cannot load {self.path}: {reason(exc)}") from exc
        self.input_index = inputs[0]["index"]
        self.output_indices = [t["index"] for t in outputs]
        self.input_dtype = np.dtype(inputs[0]["dtype"])
        self.input_shape = tuple(inputs[0]["shape"])
        self.input_names = ["input"]
        self.output_names = _names(meta, len(outputs))
        self.threads_used = int(self.threads) if self.threads else None
        ops = self.interpreter._get_ops_details()  # noqa: SLF001  # the only view of the delegated graph
        self.delegate_partitions = sum(1 for op in ops if op.get("op_name") == "DELEGATE")
        made = meta.get("lightexport.precision", "fp32")
        self.execution_precision = "int8" if made == "int8" else "fp32"  # fp16 weights are computed in fp32

    def deactivate_impl(self) -> None:
        del self.interpreter

    def infer_impl(self, feed: Feed) -> Outputs:
        x = np.ascontiguousarray(feed["input"], dtype=self.input_dtype)
        if x.shape != self.input_shape:  # never resized: litert-torch bakes the batch into SLICE sizes, and a
            # resized batch of 2 measured its second image wrong (0.25 of the logits' range off) without an error
            raise InputFileError(f"{self.path} takes NCHW {self.input_shape}, not an input of shape {x.shape} "
                                 "(a .tflite has the fixed shape it was exported with: re-export with --batch)")
        try:
            self.interpreter.set_tensor(self.input_index, x)
            self.interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise InputFileError(f"{self.path} cannot run on an input of shape {x.shape}: {reason(exc)}") from exc
        return {n: np.array(self.interpreter.get_tensor(i), dtype=np.float32, copy=True)
                for n, i in zip(self.output_names, self.output_indices)}
