"""The Python door into lightexport; the CLI is the other door into the same functions.

    from lightexport import api
    model = api.load("fasternet_s", weights="fasternet_s.pth")
    result = api.export(model, "onnx", fuse=True)
    report = api.verify(result.path, model)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightexport.artifacts import read_artifact_metadata
from lightexport.backends import BACKENDS, backend_for_path, get_backend
from lightexport.errors import InputFileError, UsageError
from lightexport.exporter.base import ExportResult
from lightexport.loading import RANDOM_WEIGHTS_SCHEME, LoadedModel, load_model
from lightexport.options import ExportOptions, check_input_size
from lightexport.precision import Precision

FORMATS = tuple(BACKENDS)

load = load_model


def export(source: LoadedModel | str | Path, format: str = "onnx", **options: Any) -> ExportResult:  # noqa: A002
    """One entry point for every format (like Ultralytics' ``export(format=...)``).

    ``source`` is a loaded model, a registered model name (loaded with random weights), or,
    for formats that convert ONNX, an ``.onnx`` path. ``options`` are validated against the
    format's record (:class:`~lightexport.options.ExportOptions`): a misspelt option is a
    :class:`~lightexport.errors.UsageError` naming the close match.
    """
    backend = get_backend(format)
    ExportOptions.build(backend, **options)  # refuse bad options before loading anything
    if isinstance(source, (str, Path)) and not str(source).lower().endswith(".onnx"):
        source = load_model(str(source))
    elif not isinstance(source, LoadedModel) and not backend.accepts_onnx:
        raise UsageError(f"{backend.name} export takes a PyTorch model, not {source}")
    return backend.export_function()(source, **options)


def _recorded_weights(artifact: Path, meta: dict[str, str]) -> Path:
    """The checkpoint an artifact was exported from, found beside it or in the working directory by its hash."""
    import warnings

    from lightexport.artifacts import file_digest

    name, digest = Path(meta["weights"]).name, meta.get("weights_sha256")
    for folder in dict.fromkeys([artifact.parent, Path.cwd()]):
        candidate = folder / name
        if digest and candidate.is_file() and file_digest(candidate, len(digest)) == digest:
            warnings.warn(f"using {candidate}, the checkpoint {artifact.name} records (sha256 {digest} matches)",
                          stacklevel=3)
            return candidate
    raise UsageError(f"{artifact} was exported from weights {name} (sha256 {digest}), which is not beside it or in "
                     "the working directory; pass --weights with that file")


def recorded_input_size(meta: dict[str, str]) -> int | None:
    """The input size an artifact records, bounded like a requested one (a hostile file cannot ask for 100000)."""
    value = meta.get("input_size", "")
    if not value:
        return None
    if not value.isdigit():
        raise InputFileError(f"the artifact records input size {value!r}, which is not a number")
    try:
        return check_input_size(int(value), "recorded input size")
    except UsageError as exc:
        raise InputFileError(f"the artifact's {exc}") from None


def reference_for(
    artifact: str | Path,
    model: str | None = None,
    weights: str | Path | None = None,
    *,
    trust: bool = False,
    num_classes: int | None = None,
    features: bool = False,
) -> LoadedModel:
    """Rebuild the unfused PyTorch model an artifact must match, from its recorded provenance.

    Explicit arguments win over what the artifact records; an artifact exported from a
    checkpoint is only comparable with that checkpoint, so its absence is an error rather
    than a silent comparison against random weights.
    """
    meta = read_artifact_metadata(artifact)
    if not meta:
        if not (model and weights):
            raise UsageError(f"{artifact} carries no lightexport provenance (it was not exported by lightexport): "
                             "pass --model NAME and --weights CHECKPOINT, the weights it was exported from")
        meta = {"model": model}
    name = model or meta.get("model")
    if not name:
        raise UsageError(f"{artifact} records no model name; pass --model NAME")
    if weights is None and meta.get("weights"):
        weights = _recorded_weights(Path(artifact), meta)
    recorded = meta.get("random_weights", "seed-0 with default BN statistics (lightexport 0.1)")
    if weights is None and recorded != RANDOM_WEIGHTS_SCHEME:
        raise UsageError(f"{artifact} was exported with random weights made as '{recorded}' (lightexport "
                         f"{meta.get('version', '?')}); this lightexport makes them as '{RANDOM_WEIGHTS_SCHEME}', "
                         f"so they differ: re-export the artifact, or export and check with --weights")
    build = json.loads(meta.get("build_kwargs", "{}")) if model is None else {}
    return load_model(
        name,
        weights,
        num_classes=num_classes if num_classes is not None else build.get("num_classes"),
        features=features or bool(build.get("fork_feat")),
        trust=trust,
    )


def verify(
    artifact: str | Path,
    reference: LoadedModel,
    *,
    inputs: int = 8,
    images: int | None = None,
    precision: str | None = None,
    threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
    runtime_default: bool = True,
):
    """Parity of ``artifact`` against ``reference``, in the settings it was made for and those a user gets.

    Inputs are ``inputs`` real photos then seeded noise, or, with ``images=N``, the N crops
    of the decision set (:func:`lightexport.parity.inputs.decision_inputs`). The artifact is
    first run as exported (OpenVINO with the inference precision pinned to what the IR was
    made for); where the runtime's own default differs on this machine (OpenVINO runs float
    layers in bf16 on CPUs with AMX or AVX512-BF16), it is run again with the defaults and
    judged by the limits of the coarser precision: that is what a deployment executes.
    """
    from lightexport.parity import check_parity, make_inputs
    from lightexport.parity.inputs import decision_inputs
    from lightexport.parity.settings import execution_label, run_settings

    meta = read_artifact_metadata(artifact)
    backend = backend_for_path(artifact)
    size = recorded_input_size(meta) or reference.spec.input_size
    batch = int(meta["batch"]) if meta.get("batch", "").isdigit() else 1
    if images:
        feeds = decision_inputs(reference.spec, -(-images // batch), input_size=size, batch=batch)
    else:
        feeds = make_inputs(reference.spec, inputs, seed=seed, input_size=size, batch=batch)
    made = Precision.parse(precision or meta.get("precision"))
    reports = []
    for setting in run_settings(backend, made, threads=threads, runtime_default=runtime_default):
        runner = backend.make_runner(artifact, **setting.runner_options)
        report = check_parity(runner, reference.module, feeds, precision=setting.precision, progress=progress)
        report.execution = execution_label(setting, runner)
        reports.append(report)
    reports[0].also.extend(reports[1:])
    return reports[0]


def bisect(artifact: str | Path, reference: LoadedModel, *, precision: str | None = None, seed: int = 0):
    """Name the first module where an ONNX ``artifact`` departs from ``reference`` (on one input).

    An int8 artifact drifts at every quantized layer, so for it the answer is a trace of where
    the drift builds up (:func:`lightexport.parity.trace.trace_int8`) instead of a first divergence.
    """
    from lightexport.parity import make_inputs, tolerance_for
    from lightexport.parity.bisect import bisect_artifact
    from lightexport.parity.trace import trace_int8

    meta = read_artifact_metadata(artifact)
    precision = Precision.parse(precision or meta.get("precision"))
    size = recorded_input_size(meta) or reference.spec.input_size
    feed = make_inputs(reference.spec, 1, seed=seed, input_size=size)[0]
    if precision == "int8":
        return trace_int8(artifact, reference.module, feed)
    return bisect_artifact(artifact, reference.module, feed, tolerance=tolerance_for(precision).max_rel)
