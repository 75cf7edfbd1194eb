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


def external_data_files(path: str | Path) -> list[Path]:
    """The files an ONNX model keeps its weights in beside it (``external_data`` locations), which are as much
    the user's input as the ``.onnx`` itself: no output may overwrite them. Nothing for an unreadable file (its
    reader says why)."""
    path = Path(path)
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return []
    found: dict[Path, None] = {}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location:
                found[path.parent / location] = None
    return list(found)


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


def module_of(node_name: str) -> str:
    """The PyTorch module a node of torch's ONNX export came from, as ``named_modules`` names it.

    The exporter names each scope level by the module's name within the nearest enclosing module that is not a
    container: ``features.1.conv.0.0``'s convolution is ``/features/features.1/conv/conv.0/conv.0.0/Conv``. A
    level that extends the previous one by ``.`` (``conv`` -> ``conv.0``) is a container's child and replaces it.
    """
    parts: list[str] = []
    for level in node_name.strip("/").split("/")[:-1]:
        if parts and level.startswith(parts[-1] + "."):
            parts[-1] = level
        else:
            parts.append(level)
    return ".".join(parts)


def in_module(node_name: str, module: str) -> bool:
    """Whether a node of torch's ONNX export belongs to ``module`` (as ``named_modules`` names it) or one inside it."""
    found = module_of(node_name)
    return found == module or found.startswith(module + ".")


def drop_dead_nodes(graph: onnx.GraphProto, initializers: bool = False) -> None:
    """Remove nodes none of whose outputs is read or returned (what a rewrite replaced, and the constants only they
    read), and with ``initializers`` the initializers no node reads any more."""
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [i for i, n in enumerate(graph.node) if not any(o in read for o in n.output)]
        if not dead:
            break
        for i in reversed(dead):
            del graph.node[i]
    if initializers:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        kept = [i for i in graph.initializer if i.name in read]
        del graph.initializer[:]
        graph.initializer.extend(kept)
