"""Tensor names, data types and dims of an artifact, as Triton's model configuration spells them.

Triton refuses a model whose ``config.pbtxt`` disagrees with the file it serves, so these are
read from the artifact itself by its format's own reader (the record's ``io``: ONNX graph
inputs/outputs, OpenVINO ports, a TensorRT engine's sidecar profile); this module only turns
NumPy dtypes into Triton's names. ``-1`` marks a dynamic dimension everywhere.
"""

from __future__ import annotations

from pathlib import Path

from lightexport.backends import backend_for_path
from lightexport.errors import InputFileError
from lightexport.parity.runners.base import ArtifactIO, TensorSpec

#: NumPy dtype names -> Triton data types.
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
                "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
                "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}


def triton_type(tensor: TensorSpec) -> str:
    """``TYPE_FP32`` and so on; an error naming the tensor for a dtype Triton cannot name."""
    if tensor.dtype not in TRITON_TYPES:
        raise InputFileError(f"tensor {tensor.name} has data type {tensor.dtype}, which Triton's configuration "
                             "cannot name")
    return TRITON_TYPES[tensor.dtype]


def client_type(tensor: TensorSpec) -> str:
    """The data type as the inference protocol names it (``FP32``)."""
    return triton_type(tensor).removeprefix("TYPE_")


def read_io(path: str | Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    """The artifact's inputs and outputs, read by its format's reader; ``metadata`` is its stripped provenance."""
    path = Path(path)
    io = backend_for_path(path).read_io(path, metadata)
    for tensor in (*io.inputs, *io.outputs):
        triton_type(tensor)
    return io


__all__ = ["TRITON_TYPES", "ArtifactIO", "TensorSpec", "client_type", "read_io", "triton_type"]
