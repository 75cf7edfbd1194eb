"""Triton's ``config.pbtxt``: written from a small description, checked against Triton's own schema.

Field names are those of Triton's ``model_config.proto`` (``max_batch_size``,
``dynamic_batching.preferred_batch_size``, ``instance_group.kind``, ``model_warmup``,
``parameters``...). The text is rendered here rather than through protobuf so that
writing a repository does not need ``tritonclient``; :func:`parse_config` parses it with
the real schema (``tritonclient``'s generated ``model_config_pb2``) wherever that is
installed, so a misspelt field is caught when the repository is written, not when a
server refuses it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightexport.errors import BackendUnavailableError, ExportError
from lightexport.triton.tensors import TensorSpec, triton_type


@dataclass(frozen=True)
class Batching:
    """Dynamic batching: the scheduler waits up to ``max_queue_delay_us`` to merge requests into preferred sizes."""

    preferred: tuple[int, ...]
    max_queue_delay_us: int


@dataclass
class ModelConfig:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    platform: str | None = None  #: "tensorrt_plan"
    backend: str | None = None  #: "onnxruntime", "openvino", "python"
    default_model_filename: str | None = None
    instance_kind: str = "KIND_CPU"
    instance_count: int = 1
    batching: Batching | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    warmup_dims: dict[str, tuple[int, ...]] = field(default_factory=dict)  #: input -> concrete dims (batch excluded)

    def dims(self, tensor: TensorSpec) -> tuple[int, ...]:
        """Dims as Triton wants them: without the batch axis when Triton batches the model."""
        return tensor.shape[1:] if self.max_batch_size > 0 else tensor.shape

    def render(self) -> str:
        lines = [f"name: {quote(self.name)}"]
        if self.platform:
            lines.append(f"platform: {quote(self.platform)}")
        if self.backend:
            lines.append(f"backend: {quote(self.backend)}")
        if self.default_model_filename:
            lines.append(f"default_model_filename: {quote(self.default_model_filename)}")
        lines.append(f"max_batch_size: {self.max_batch_size}")
        for section, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                lines += [f"{section} {{", f"  name: {quote(t.name)}", f"  data_type: {triton_type(t)}",
                          f"  dims: [ {', '.join(str(d) for d in self.dims(t))} ]", "}"]
        lines += ["instance_group {", f"  count: {self.instance_count}", f"  kind: {self.instance_kind}", "}"]
        if self.batching:
            sizes = ", ".join(str(s) for s in self.batching.preferred)
            lines += ["dynamic_batching {", f"  preferred_batch_size: [ {sizes} ]",
                      f"  max_queue_delay_microseconds: {self.batching.max_queue_delay_us}", "}"]
        for key, value in self.parameters.items():
            lines += ["parameters {", f"  key: {quote(key)}", f"  value: {{ string_value: {quote(value)} }}", "}"]
        if self.warmup_dims:
            lines += ["model_warmup {", '  name: "zero_input"', "  batch_size: 1"]
            for t in self.inputs:
                dims = ", ".join(str(d) for d in self.warmup_dims[t.name])
                lines += ["  inputs {", f"    key: {quote(t.name)}",
                          f"    value: {{ data_type: {triton_type(t)} dims: [ {dims} ] zero_data: true }}", "  }"]
            lines.append("}")
        return "\n".join(lines) + "\n"


def quote(text: str) -> str:
    """A protobuf text-format string literal (C escapes; UTF-8 passes through)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def schema() -> Any:
    """tritonclient's ``model_config_pb2``, loaded from its file.

    ``tritonclient.grpc``'s package ``__init__`` imports grpcio, which the HTTP-only install
    lacks; the generated schema module itself needs only protobuf, so it is loaded by path.
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError("tritonclient is not installed; install it with: "
                                      "pip install 'lightexport[triton]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    loader_spec = importlib.util.spec_from_file_location("lightexport_triton_model_config_pb2", path)
    if loader_spec is None or loader_spec.loader is None or not path.is_file():
        raise BackendUnavailableError(f"this tritonclient has no model configuration schema at {path}")
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module


_SCHEMA: Any = None


def parse_config(text: str) -> Any:
    """Parse ``config.pbtxt`` text into Triton's ``inference.ModelConfig`` message (raises on unknown fields)."""
    global _SCHEMA
    from google.protobuf import text_format

    _SCHEMA = _SCHEMA or schema()
    try:
        return text_format.Parse(text, _SCHEMA.ModelConfig())
    except text_format.ParseError as exc:
        raise ExportError(f"config.pbtxt does not fit Triton's model configuration schema: {exc}") from exc


def has_schema() -> bool:
    return importlib.util.find_spec("tritonclient") is not None
