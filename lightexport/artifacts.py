"""Artifact provenance in one place: what lightexport stamps into a file and how it is read back.

Every artifact records where it came from (model, build arguments, passes, input size,
precision, weights and their hash) so that ``lightexport parity`` can rebuild the right
reference without being told again. ONNX keeps it in ``metadata_props``, OpenVINO IR in
``rt_info``, and a TensorRT engine, which cannot hold it, in a ``.json`` sidecar. Which of
these a file uses is the backend table's business (:mod:`lightexport.backends`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lightexport.errors import InputFileError

META_PREFIX = "lightexport."
#: The rt_info section of an OpenVINO IR that holds the provenance.
RT_SECTION = "lightexport"


def strip_prefix(metadata: dict[str, str]) -> dict[str, str]:
    return {k[len(META_PREFIX) :]: v for k, v in metadata.items() if k.startswith(META_PREFIX)}


def add_prefix(metadata: dict[str, str]) -> dict[str, str]:
    return {k if k.startswith(META_PREFIX) else META_PREFIX + k: v for k, v in metadata.items()}


def file_digest(path: Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def sidecar_path(engine: str | Path) -> Path:
    """Where an engine's provenance lives: ``NAME.engine.json`` beside it."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_onnx_provenance(path: Path) -> dict[str, str]:
    from lightexport.onnxfile import read_metadata

    return read_metadata(path)


def _check_ir_xml(xml: Path) -> None:
    """Refuse a file whose root element is not an IR's ``<net>`` before OpenVINO sees it.

    ``read_model`` tries every frontend on a file its IR reader rejects, and TensorFlow's
    prints ``text_format.cc`` parse errors from C++ to stderr ahead of our one-line error.
    """
    from xml.etree.ElementTree import ParseError, parse

    try:
        root = parse(str(xml)).getroot()  # the weights are in the .bin: an IR's XML is small
    except (ParseError, OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{xml} is not a readable OpenVINO IR (not XML: {exc})") from exc
    if root.tag != "net":
        raise InputFileError(f"{xml} is not an OpenVINO IR (its root element is <{root.tag}>, not <net>)")


def read_ir_provenance(xml: Path) -> dict[str, str]:
    """The provenance an IR carries in ``rt_info``, keyed like ONNX metadata (``lightexport.*``)."""
    from lightexport.backends import require

    ov = require("openvino")
    _check_ir_xml(xml)
    try:
        model = ov.Core().read_model(str(xml))
    except Exception as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise InputFileError(f"{xml} is not a readable OpenVINO IR: {lines[-1] if lines else type(exc).__name__}") \
            from exc
    section = model.get_rt_info()[RT_SECTION] if model.has_rt_info([RT_SECTION]) else {}
    return {f"{RT_SECTION}.{k}": (v.astype(str) if hasattr(v, "astype") else str(v)) for k, v in section.items()}


def read_sidecar_provenance(engine: Path) -> dict[str, str]:
    sidecar = sidecar_path(engine)
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{sidecar} is not a readable provenance file: {exc}") from exc
    if not isinstance(data, dict):
        raise InputFileError(f"{sidecar} is not a provenance file (expected a JSON object)")
    return {str(k): str(v) for k, v in data.items()}


def read_artifact_metadata(path: str | Path) -> dict[str, str]:
    """Provenance recorded in an artifact (prefix stripped); empty when it records none."""
    from lightexport.backends import backend_for_path

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"artifact not found: {path}")
    return strip_prefix(backend_for_path(path).read_metadata(path))
