"""Backends behind one runner interface, chosen by artifact suffix.

Importing this package imports no backend: each runner imports its runtime in
``activate``, and the TensorRT runner module itself is imported only for an engine,
so a machine without OpenVINO or TensorRT can still check ONNX files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightexport.errors import UsageError
from lightexport.parity.runners.base import Feed, Outputs, Runner
from lightexport.parity.runners.onnxruntime import OnnxRuntimeRunner
from lightexport.parity.runners.openvino import OpenVINORunner
from lightexport.parity.runners.torch import TorchRunner

SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt"}


def runner_for(path: str | os.PathLike, **kwargs: Any) -> Runner:
    """The runner for an artifact by its suffix; ``kwargs`` (``threads=`` ...) go to that runner."""
    suffix = Path(path).suffix.lower()
    backend = SUFFIXES.get(suffix)
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path, **kwargs)
    if backend == "openvino":
        return OpenVINORunner(path, **kwargs)
    if backend == "tensorrt":
        from lightexport.parity.runners.tensorrt import TensorRTRunner

        return TensorRTRunner(path, **kwargs)
    raise UsageError(f"cannot tell the backend of {path} from its suffix {suffix!r}; "
                     f"expected one of {', '.join(SUFFIXES)}")


__all__ = ["SUFFIXES", "Feed", "OnnxRuntimeRunner", "OpenVINORunner", "Outputs", "Runner", "TorchRunner",
           "runner_for"]
