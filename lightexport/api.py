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
from lightexport.backends import BACKENDS, get_backend
from lightexport.errors import UsageError
from lightexport.exporter.base import ExportResult
from lightexport.loading import RANDOM_WEIGHTS_SCHEME, LoadedModel, load_model
from lightexport.options import ExportOptions

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
    name = model or meta.get("model")
    if not name:
        raise UsageError(f"{artifact} records no model name; pass --model NAME")
    if weights is None and meta.get("weights"):
        raise UsageError(f"{artifact} was exported from weights {meta['weights']}; pass --weights with that file")
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
    precision: str | None = None,
    threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
):
    """Parity of ``artifact`` against ``reference`` on real photos plus seeded noise."""
    from lightexport.parity import check_parity, make_inputs, runner_for

    meta = read_artifact_metadata(artifact)
    size = int(meta.get("input_size", 0)) or reference.spec.input_size
    feeds = make_inputs(reference.spec, inputs, seed=seed, input_size=size)
    return check_parity(runner_for(artifact, threads=threads), reference.module, feeds,
                        precision=precision or meta.get("precision", "fp32"), progress=progress)


def bisect(artifact: str | Path, reference: LoadedModel, *, precision: str | None = None, seed: int = 0):
    """Name the first module where an ONNX ``artifact`` departs from ``reference`` (on one input).

    An int8 artifact drifts at every quantized layer, so for it the answer is a trace of where
    the drift builds up (:func:`lightexport.parity.trace.trace_int8`) instead of a first divergence.
    """
    from lightexport.parity import make_inputs, tolerance_for
    from lightexport.parity.bisect import bisect_artifact
    from lightexport.parity.trace import trace_int8

    meta = read_artifact_metadata(artifact)
    precision = precision or meta.get("precision", "fp32")
    size = int(meta.get("input_size", 0)) or reference.spec.input_size
    feed = make_inputs(reference.spec, 1, seed=seed, input_size=size)[0]
    if precision == "int8":
        return trace_int8(artifact, reference.module, feed)
    return bisect_artifact(artifact, reference.module, feed, tolerance=tolerance_for(precision).max_rel)
