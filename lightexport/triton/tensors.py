"""Tensor names, data types and dims of an artifact, as Triton's model configuration spells them.

Triton refuses a model whose ``config.pbtxt`` disagrees with the file it serves, so these
are read from the artifact itself: ONNX graph inputs/outputs, OpenVINO model ports, and
for a TensorRT engine (which lightexport cannot open without TensorRT) the optimization
profile its sidecar provenance records. ``-1`` marks a dynamic dimension everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lightexport.errors import InputFileError

#: ONNX TensorProto element types -> Triton data types.
ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 11: "TYPE_FP64", 2: "TYPE_UINT8", 3: "TYPE_INT8",
              5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL"}
#: OpenVINO element type names -> Triton data types.
OV_TYPES = {"f32": "TYPE_FP32", "f16": "TYPE_FP16", "bf16": "TYPE_BF16", "f64": "TYPE_FP64", "u8": "TYPE_UINT8",
            "i8": "TYPE_INT8", "i16": "TYPE_INT16", "i32": "TYPE_INT32", "i64": "TYPE_INT64", "boolean": "TYPE_BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, Triton data type (``TYPE_FP32``) and full shape (batch axis included)."""

    name: str
    data_type: str
    shape: tuple[int, ...]

    @property
    def batch_dynamic(self) -> bool:
        return bool(self.shape) and self.shape[0] == -1

    @property
    def client_type(self) -> str:
        """The data type as the inference protocol names it (``FP32``)."""
        return self.data_type.removeprefix("TYPE_")


@dataclass(frozen=True)
class ArtifactIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]  #: empty where the artifact does not say (an engine without TensorRT)


def _onnx_io(path: Path) -> ArtifactIO:
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise InputFileError(f"{path} is not a readable ONNX file: {exc}") from exc
    initializers = {i.name for i in graph.initializer}

    def spec(value) -> TensorSpec:
        kind = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in kind.shape.dim)
        if kind.elem_type not in ONNX_TYPES:
            raise InputFileError(f"{path}: tensor {value.name} has ONNX element type {kind.elem_type}, "
                                 "which Triton's configuration cannot name")
        return TensorSpec(value.name, ONNX_TYPES[kind.elem_type], dims)

    return ArtifactIO(tuple(spec(v) for v in graph.input if v.name not in initializers),
                      tuple(spec(v) for v in graph.output))


def _openvino_io(xml: Path) -> ArtifactIO:
    from lightexport.backends import require

    ov = require("openvino")
    try:
        model = ov.Core().read_model(str(xml))
    except Exception as exc:
        raise InputFileError(f"{xml} is not a readable OpenVINO IR: {str(exc).strip().splitlines()[-1]}") from exc

    def spec(port, fallback: str) -> TensorSpec:
        names = port.get_names()
        name = port.get_any_name() if names else fallback
        element = port.get_element_type().get_type_name()
        if element not in OV_TYPES:
            raise InputFileError(f"{xml}: port {name} has element type {element}, which Triton cannot name")
        dims = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return TensorSpec(name, OV_TYPES[element], dims)

    return ArtifactIO(tuple(spec(p, f"input_{i}") for i, p in enumerate(model.inputs)),
                      tuple(spec(p, f"output_{i}") for i, p in enumerate(model.outputs)))


def _engine_io(engine: Path, metadata: dict[str, str]) -> ArtifactIO:
    """An engine's inputs from its sidecar: the profile per dynamic input, else the recorded fixed input."""
    from lightexport.onnxfile import INPUT_NAME

    dtype = "TYPE_FP16" if metadata.get("precision") == "fp16" and metadata.get("io_fp16") == "true" else "TYPE_FP32"
    profile = json.loads(metadata.get("profile") or "{}")
    if profile:
        inputs = tuple(TensorSpec(name, dtype, tuple(lo if lo == hi else -1 for lo, hi in zip(r["min"], r["max"])))
                       for name, r in profile.items())
        return ArtifactIO(inputs, ())
    size, batch = metadata.get("input_size"), metadata.get("batch")
    if not size or not batch or not batch.isdigit():
        raise InputFileError(f"{engine}: its sidecar records neither an optimization profile nor a fixed input "
                             "shape; re-export it with lightexport trt")
    return ArtifactIO((TensorSpec(INPUT_NAME, dtype, (int(batch), 3, int(size), int(size))),), ())


def read_io(path: str | Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    """The artifact's inputs and outputs; ``metadata`` (stripped provenance) is only needed for an engine."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_io(path)
    if suffix == ".xml":
        return _openvino_io(path)
    if suffix in (".engine", ".plan"):
        return _engine_io(path, metadata or {})
    raise InputFileError(f"{path}: cannot read tensors of a {suffix or 'suffix-less'} file")
