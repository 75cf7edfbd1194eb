"""The ONNX file library every layer shares: read, write, check, stamp and count an ONNX model.

Kept apart from the exporter so that parity, bisection and the TensorRT path can read
ONNX files without importing torch's exporter (and without an import cycle).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

from lightexport.errors import ExportError, InputFileError
from lightexport.fileio import atomic_output

#: The single input every lightexport artifact has.
INPUT_NAME = "input"


def load_onnx(path: str | Path, load_weights: bool = True) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:
        raise InputFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.output:  # protobuf parses many byte strings, even b"", as an empty model
        raise InputFileError(f"{path} is not an ONNX model (no graph outputs)")
    return model


def read_metadata(model_or_path: onnx.ModelProto | str | Path) -> dict[str, str]:
    """``metadata_props`` as a dict (keys as stored, with their ``lightexport.`` prefix)."""
    model = model_or_path
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx(model, load_weights=False)
    return {p.key: p.value for p in model.metadata_props}


def stamp_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Set ``metadata`` on ``model`` (replacing keys it already has), in sorted order for byte-identical files."""
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key in sorted(metadata):
        model.metadata_props.add(key=key, value=metadata[key])


def op_histogram(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def check_model(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx's checker: {str(exc).splitlines()[0]}") from exc


def save_onnx(model: onnx.ModelProto, output: Path) -> None:
    with atomic_output(output) as tmp:
        onnx.save(model, str(tmp))
