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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightexport.errors import InputFileError, LightExportError
from lightexport.precision import Precision

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


def check_ir(xml: Path) -> None:
    """Refuse an IR whose files do not fit together before OpenVINO sees it: an XML that is not an IR's
    ``<net>``, or a ``.bin`` of another size than the XML's constants need.

    ``read_model`` tries every frontend on a file its IR reader rejects, and TensorFlow's prints
    ``text_format.cc`` parse errors from C++ to stderr ahead of our one-line error; an IR given
    another model's ``.bin`` loaded and failed much later with "Axis 4386978295482606990 out of the
    tensor rank range". ``save_model`` writes exactly the bytes the constants address.
    """
    from xml.etree.ElementTree import ParseError, parse

    try:
        root = parse(str(xml)).getroot()  # the weights are in the .bin: an IR's XML is small
    except (ParseError, OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{xml} is not a readable OpenVINO IR (not XML: {exc})") from exc
    if root.tag != "net":
        raise InputFileError(f"{xml} is not an OpenVINO IR (its root element is <{root.tag}>, not <net>)")
    try:
        needed = max((int(d.get("offset")) + int(d.get("size")) for layer in root.iter("layer")
                      if layer.get("type") == "Const" for d in layer.iter("data") if d.get("offset") is not None),
                     default=0)
    except (TypeError, ValueError):
        raise InputFileError(f"{xml}: a constant's offset or size is not a number") from None
    weights = xml.with_suffix(".bin")
    if needed and weights.is_file() and weights.stat().st_size != needed:
        raise InputFileError(f"{weights} holds {weights.stat().st_size} bytes but {xml.name}'s constants address "
                             f"{needed}: the .bin belongs to another IR (or is truncated); keep each .xml with the "
                             ".bin saved beside it")


def read_ir_provenance(xml: Path) -> dict[str, str]:
    """The provenance an IR carries in ``rt_info``, keyed like ONNX metadata (``lightexport.*``)."""
    from lightexport.backends import require

    ov = require("openvino")
    check_ir(xml)
    try:
        model = ov.Core().read_model(str(xml))
    except Exception as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise InputFileError(f"{xml} is not a readable OpenVINO IR: {lines[-1] if lines else type(exc).__name__}") \
            from exc
    section = model.get_rt_info()[RT_SECTION] if model.has_rt_info([RT_SECTION]) else {}
    return {f"{RT_SECTION}.{k}": (v.astype(str) if hasattr(v, "astype") else str(v)) for k, v in section.items()}


def read_sidecar_provenance(engine: Path) -> dict[str, str]:
    """The provenance sidecar ``NAME.SUFFIX.json`` of an artifact that holds no metadata (an engine, a .mnn)."""
    return read_sidecar(sidecar_path(engine))


def read_sidecar(sidecar: Path) -> dict[str, str]:
    """A provenance sidecar's fields as strings; {} when there is none; a bad one is an InputFileError."""
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


#: Keyword arguments a recorded build may hold, with the check each value must pass.
_BUILD_KEYS = {
    "num_classes": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100_000,
    "fork_feat": lambda v: isinstance(v, bool),
    "out_indices": lambda v: isinstance(v, list) and all(isinstance(i, int) and 0 <= i < 16 for i in v),
}


@dataclass(frozen=True)
class Provenance:
    """An artifact's recorded provenance, every field parsed and checked like user input.

    A file is not trusted because lightexport once wrote it: a crafted ``build_kwargs`` of
    ``"[1,2]"`` or a class count of 1e9 gave tracebacks and a 5 TB allocation, and a recorded
    precision ``fp64`` was reported as a usage error. Each bad field is an ``InputFileError``
    (exit 5) naming the field and the file.
    """

    model: str | None = None
    precision: Precision = Precision.FP32
    input_size: int | None = None
    batch: int | None = 1  #: None: dynamic
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    passes: tuple[str, ...] = ()
    weights: str | None = None
    weights_sha256: str | None = None
    random_weights: str | None = None
    version: str | None = None
    #: a user's model: how it came in ("entry", "checkpoint", "program", "module"), and what rebuilds it
    source: str | None = None
    entry: str | None = None
    entry_sha256: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    channels: int = 3
    preprocess: str | None = None
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def dynamic(self) -> bool:
        return self.batch is None

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.raw.get(key, default)


def _json_field(meta: dict[str, str], key: str, kind: type, source: str) -> Any:
    text = meta.get(key)
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InputFileError(f"{source}: the recorded {key} {text[:80]!r} is not JSON") from None
    if not isinstance(value, kind):
        raise InputFileError(f"{source}: the recorded {key} {text[:80]!r} is not a JSON {kind.__name__}")
    return value


def parse_provenance(meta: dict[str, str], source: str | Path = "the artifact") -> Provenance:
    """``meta`` (prefix stripped) checked field by field; see :class:`Provenance`."""
    from lightexport.options import BOUNDS

    source = str(source)
    try:
        precision = Precision.parse(meta.get("precision"))
    except LightExportError:
        raise InputFileError(f"{source}: the recorded precision {meta.get('precision')!r} is not one of "
                             f"{', '.join(p.value for p in Precision)}") from None
    size = meta.get("input_size") or None
    low, high = BOUNDS["input_size"]
    if size is not None and not (size.isdigit() and low <= int(size) <= high):
        raise InputFileError(f"{source}: the recorded input size {size!r} is not a number from {low} to {high}")
    batch_text = meta.get("batch", "1") or "1"
    blow, bhigh = BOUNDS["batch"]
    if batch_text != "dynamic" and not (batch_text.isdigit() and blow <= int(batch_text) <= bhigh):
        raise InputFileError(f"{source}: the recorded batch {batch_text!r} is neither 'dynamic' nor a number from "
                             f"{blow} to {bhigh}")
    build = _json_field(meta, "build_kwargs", dict, source)
    for key, value in build.items():
        check = _BUILD_KEYS.get(key)
        if check is None or not check(value):
            raise InputFileError(f"{source}: the recorded build argument {key}={value!r} is not one lightexport "
                                 "makes (re-export the artifact)")
    passes = _json_field(meta, "passes", list, source)
    if not all(isinstance(p, str) for p in passes):
        raise InputFileError(f"{source}: the recorded passes {meta.get('passes')!r} are not a list of names")
    for key in ("mean", "std"):
        values = _json_field(meta, key, list, source) if key in meta else [0.0, 0.0, 1.0]
        if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise InputFileError(f"{source}: the recorded {key} {meta.get(key)!r} is not three finite numbers")
    digest = meta.get("weights_sha256")
    if digest is not None and not (digest and all(c in "0123456789abcdef" for c in digest)):
        raise InputFileError(f"{source}: the recorded weights_sha256 {digest[:80]!r} is not a hex digest")
    model = meta.get("model")
    if model is not None and (not model or len(model) > 300 or any(ord(c) < 32 for c in model)):
        raise InputFileError(f"{source}: the recorded model name {model[:80]!r} is not a name")
    user = _user_fields(meta, source)
    return Provenance(model=model, precision=precision, input_size=int(size) if size else None,
                      batch=None if batch_text == "dynamic" else int(batch_text), build_kwargs=build,
                      passes=tuple(passes), weights=meta.get("weights"), weights_sha256=digest,
                      random_weights=meta.get("random_weights"), version=meta.get("version"), raw=dict(meta), **user)


#: What a user's model's provenance may say about how it came in.
USER_SOURCES = ("entry", "checkpoint", "program", "module")


def _user_fields(meta: dict[str, str], source: str) -> dict[str, Any]:
    """The fields that rebuild a user's model, each checked (an entry point is run at parity time)."""
    fields: dict[str, Any] = {}
    kind = meta.get("source")
    if kind is None:
        return fields
    if kind not in USER_SOURCES:
        raise InputFileError(f"{source}: the recorded source {kind[:40]!r} is not one of {', '.join(USER_SOURCES)}")
    fields["source"] = kind
    entry = meta.get("entry")
    if entry is not None:
        if ":" not in entry or len(entry) > 4096 or any(ord(c) < 32 for c in entry):
            raise InputFileError(f"{source}: the recorded entry point {entry[:80]!r} is not FILE_OR_MODULE:FACTORY")
        fields["entry"] = entry
        digest = meta.get("entry_sha256") or None
        if digest is not None and not all(c in "0123456789abcdef" for c in digest):
            raise InputFileError(f"{source}: the recorded entry_sha256 {digest[:80]!r} is not a hex digest")
        fields["entry_sha256"] = digest
        fields["model_args"] = _json_field(meta, "model_args", dict, source)
    channels = meta.get("channels", "3")
    if not channels.isdigit() or not 1 <= int(channels) <= 64:
        raise InputFileError(f"{source}: the recorded channels {channels[:20]!r} is not a number from 1 to 64")
    fields["channels"] = int(channels)
    preprocess = meta.get("preprocess")
    if preprocess is not None and preprocess not in ("imagenet", "unit", "none"):
        raise InputFileError(f"{source}: the recorded preprocess {preprocess[:40]!r} is not imagenet, unit or none")
    fields["preprocess"] = preprocess
    outputs = _json_field(meta, "outputs", list, source)
    if not all(isinstance(o, str) for o in outputs):
        raise InputFileError(f"{source}: the recorded outputs {meta.get('outputs')!r} are not a list of names")
    return fields


def read_provenance(path: str | Path) -> Provenance:
    """The artifact's provenance, validated (an artifact without any gives the defaults, with an empty ``raw``)."""
    return parse_provenance(read_artifact_metadata(path), path)
