"""One small interface for every backend, after Polygraphy's runners.

``with SomeRunner(...) as r: outputs = r.infer({"input": x})``. Subclasses implement
``activate_impl`` (load the artifact, pay one-time costs) and ``infer_impl``; the base
class owns the context-manager protocol and the input checks, so backends stay short
and comparisons treat them all alike. Outputs are returned in the artifact's output
order, keyed by output name, as float32/float16/... numpy arrays on the host.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lightexport.errors import UsageError

Feed = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an artifact: its name, NumPy dtype name and full shape (-1 where dynamic)."""

    name: str
    dtype: str  #: "float32", "float16", "uint8", ...
    shape: tuple[int, ...]

    @property
    def batch_dynamic(self) -> bool:
        return bool(self.shape) and self.shape[0] == -1


@dataclass(frozen=True)
class ArtifactIO:
    """An artifact's tensors as it declares them (each format's ``read_io`` reads them without running it)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]  #: empty where the artifact does not say (an engine without TensorRT)


class Runner(ABC):
    #: short backend name shown in reports ("onnxruntime", "openvino", "tensorrt", "torch")
    backend: str = "base"

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.backend
        self.is_active = False
        self.input_names: list[str] = []
        self.output_names: list[str] = []

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def infer(self, feed: Feed) -> Outputs:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: infer() called before activate()")
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise UsageError(f"{self.name}: feed lacks inputs {missing}; the artifact expects {self.input_names}")
        return self.infer_impl(feed)

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, feed: Feed) -> Outputs: ...

    def deactivate_impl(self) -> None:
        """Release backend resources; most backends need nothing beyond garbage collection."""


def reason(exc: BaseException) -> str:
    """The informative line of a backend exception (runtimes put it last, after a C++ backtrace or banner)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
