"""The table of backends: one record per artifact format, read by every layer.

A format's name, file suffixes, the precisions it makes, its exporter, how its
provenance is read back, which runner executes it and how to install what it needs
live in one :class:`Backend` record. The API, parity, the suite, bench and the CLI all
look formats up here, so adding a format is adding a record plus its own module.
Callables are named as ``"module:attribute"`` strings and imported on first use, so a
machine without OpenVINO or TensorRT can still list formats and export ONNX.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightexport.errors import BackendUnavailableError, UsageError
from lightexport.precision import Precision

F32, F16, BF16, I8 = Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8


def _resolve(ref: str) -> Any:
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Backend:
    """One artifact format and the runtime that executes it."""

    name: str  #: the format as ``api.export`` and the CLI name it ("onnx", "openvino", "tensorrt")
    runtime: str  #: the runtime that runs it, as reports name it ("onnxruntime", ...)
    suffixes: tuple[str, ...]  #: file suffixes, the first being the default
    precisions: tuple[Precision, ...]  #: precisions the exporter makes
    exporter: str  #: "module:function" taking (source, output=None, **options)
    options: tuple[str, ...]  #: keyword options the exporter takes beyond the common ones
    runner: str  #: "module:Class" taking (path, **runner options)
    runner_options: tuple[str, ...]  #: which of threads / inference_precision the runner takes
    metadata: str  #: "module:function" reading the raw (prefixed) provenance of a file
    module: str  #: the Python module the runtime needs (checked by :func:`require`)
    install_hint: str
    accepts_onnx: bool = False  #: whether an ONNX file is a valid source besides a PyTorch model

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    def export_function(self):
        return _resolve(self.exporter)

    def make_runner(self, path: str | Path, **options: Any):
        """The runner for ``path``; options this runtime has no use for (threads on a GPU) are dropped."""
        kept = {k: v for k, v in options.items() if k in self.runner_options}
        unknown = sorted(set(options) - {"threads", "inference_precision", "name"})
        if unknown:
            raise UsageError(f"unknown runner option(s) {', '.join(unknown)}")
        if options.get("name"):
            kept["name"] = options["name"]
        return _resolve(self.runner)(path, **kept)

    def read_metadata(self, path: Path) -> dict[str, str]:
        return _resolve(self.metadata)(path)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            name="onnx", runtime="onnxruntime", suffixes=(".onnx",), precisions=(F32, F16, I8),
            exporter="lightexport.exporter.onnx:export_onnx",
            options=("passes", "opset", "simplify_graph", "exporter", "int8_keep", "int8_symmetric"),
            runner="lightexport.parity.runners.onnxruntime:OnnxRuntimeRunner", runner_options=("threads",),
            metadata="lightexport.artifacts:read_onnx_provenance", module="onnxruntime",
            install_hint="pip install onnxruntime",
        ),
        Backend(
            name="openvino", runtime="openvino", suffixes=(".xml",), precisions=(F32, F16, BF16, I8),
            exporter="lightexport.exporter.openvino:export_openvino",
            options=("passes", "preprocess", "progress", "int8_keep"),
            runner="lightexport.parity.runners.openvino:OpenVINORunner",
            runner_options=("threads", "inference_precision"),
            metadata="lightexport.artifacts:read_ir_provenance", module="openvino",
            install_hint="pip install 'lightexport[openvino]'", accepts_onnx=True,
        ),
        Backend(
            name="tensorrt", runtime="tensorrt", suffixes=(".engine", ".plan"), precisions=(F32, F16, I8),
            exporter="lightexport.exporter.tensorrt:export_tensorrt",
            options=("passes", "profile", "workspace_gib", "timing_cache", "opset", "int8_keep"),
            runner="lightexport.parity.runners.tensorrt:TensorRTRunner", runner_options=(),
            metadata="lightexport.artifacts:read_sidecar_provenance", module="tensorrt",
            install_hint="pip install tensorrt (on a machine with an NVIDIA GPU)", accepts_onnx=True,
        ),
    )
}
#: Runtimes by their report names, for the suite and bench ("onnxruntime" -> the onnx record).
RUNTIMES: dict[str, Backend] = {b.runtime: b for b in BACKENDS.values()}


def _suggest(value: str, names: list[str]) -> str:
    close = difflib.get_close_matches(value, names, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def get_backend(name: str) -> Backend:
    """The record for a format name (``onnx``) or a runtime name (``onnxruntime``)."""
    backend = BACKENDS.get(name) or RUNTIMES.get(name)
    if backend is None:
        names = sorted(set(BACKENDS) | set(RUNTIMES))
        raise UsageError(f"unknown format {name!r}{_suggest(str(name), names)} (choose one of {', '.join(BACKENDS)})")
    return backend


def backend_for_path(path: str | Path) -> Backend:
    """The record whose suffixes include ``path``'s."""
    suffix = Path(path).suffix.lower()
    for backend in BACKENDS.values():
        if suffix in backend.suffixes:
            return backend
    known = [s for b in BACKENDS.values() for s in b.suffixes]
    raise UsageError(f"{path}: lightexport cannot tell an artifact's format from suffix {suffix or '(none)'!r}; "
                     f"supported artifacts end in {', '.join(known)}")


def disable_openvino_telemetry() -> None:
    """Keep OpenVINO's and NNCF's usage telemetry from phoning home on our users' behalf.

    ``openvino.convert_model`` and NNCF report usage through ``openvino_telemetry``, which,
    with no consent file (``opt_in_out``'s choice in ``~/intel``), counts as consent: a plain
    FasterNet-T0 export forked 21 processes that each called ``urlopen`` on Google Analytics,
    and wrote ``~/intel/openvino_ga_cid``. Both libraries fall back to a silent stub when
    ``openvino_telemetry`` cannot be imported (as when it is not installed), so marking it
    unimportable before either loads switches telemetry off for this process without
    touching the user's settings. Called when lightexport is imported; harmless to repeat.
    Where the caller imported ``openvino_telemetry`` first, its singleton is declined instead.
    """
    loaded = sys.modules.get("openvino_telemetry")
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import now raises ImportError
    elif loaded is not None:
        try:
            telemetry = loaded.Telemetry()
            telemetry.consent = False
        except Exception:  # noqa: BLE001  # never configured: nothing of ours will configure it with consent
            pass
    os.environ.setdefault("NNCF_CI", "1")  # NNCF's documented switch to its telemetry stub (read at import)


def require(module: str) -> Any:
    """Import a backend's runtime module, or say in one line how to install it."""
    disable_openvino_telemetry()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = next((b.install_hint for b in BACKENDS.values() if b.module == module), f"pip install {module}")
        raise BackendUnavailableError(f"{module} is not installed; install it with: {hint}") from exc
