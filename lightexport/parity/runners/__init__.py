"""Backends behind one runner interface, chosen by artifact suffix.

Importing this package imports no backend: each runner imports its runtime in
``activate``, and the TensorRT runner module itself is imported only for an engine,
so a machine without OpenVINO or TensorRT can still check ONNX files.
"""

from __future__ import annotations

import os
from typing import Any

from lightexport.backends import BACKENDS, backend_for_path
from lightexport.parity.runners.base import Feed, Outputs, Runner
from lightexport.parity.runners.onnxruntime import OnnxRuntimeRunner
from lightexport.parity.runners.openvino import OpenVINORunner

SUFFIXES = {suffix: b.runtime for b in BACKENDS.values() for suffix in b.suffixes}


def __getattr__(name: str) -> object:
    """``TorchRunner`` on first use: its module imports PyTorch, which the emulated arm64 worker lacks."""
    if name == "TorchRunner":
        from lightexport.parity.runners.torch import TorchRunner

        return TorchRunner
    raise AttributeError(f"module 'lightexport.parity.runners' has no attribute {name!r}")


def runner_for(path: str | os.PathLike, **kwargs: Any) -> Runner:
    """The runner for an artifact by its suffix (the backend table); ``kwargs`` are runner options
    (``threads=``, ``inference_precision=``), dropped where the runtime has no use for them."""
    return backend_for_path(path).make_runner(path, **kwargs)


__all__ = ["SUFFIXES", "Feed", "OnnxRuntimeRunner", "OpenVINORunner", "Outputs", "Runner", "TorchRunner",
           "runner_for"]
