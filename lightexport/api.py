"""The Python door into lightexport; the CLI is the other door into the same functions.

    from lightexport import api
    model = api.load("fasternet_s", weights="fasternet_s.pth")
    result = api.export(model, "onnx", fuse=True)
    report = api.verify(result.path, model)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from lightexport.artifacts import Provenance, read_provenance
from lightexport.backends import BACKENDS, INTERCHANGE, backend_for_path, get_backend, is_interchange, readable_name
from lightexport.errors import InputFileError, UsageError
from lightexport.exporter import memory
from lightexport.exporter.base import ExportResult, default_output, export_inputs, planned_outputs
from lightexport.fileio import guard_outputs
from lightexport.loading import RANDOM_WEIGHTS_SCHEME, LoadedModel, from_module, load_model
from lightexport.options import ExportOptions, check_int
from lightexport.precision import Precision

FORMATS = tuple(BACKENDS)

load = load_model
#: a plain nn.Module as a loaded model (``input_shape=``, ``preprocess=``), e.g. the reference for ``verify``
from_module = from_module


def export(source: LoadedModel | nn.Module | str | Path, format: str = INTERCHANGE, *,  # noqa: A002
           input_shape: tuple[int, ...] | str | None = None, preprocess: str | None = None,
           model_args: dict[str, Any] | None = None, **options: Any) -> ExportResult:
    """One entry point for every format (like Ultralytics' ``export(format=...)``).

    ``source`` is a loaded model, a plain ``nn.Module`` (``input_shape=(N, C, H, W)`` unless the module
    has an ``input_shape`` attribute; ``preprocess`` "imagenet", "unit" or "none"), a registered model
    name (loaded with random weights), a user's entry point (``"file.py:factory"`` with
    ``model_args``), or, for formats that convert ONNX, an ``.onnx`` path. ``options`` are validated
    once against the format's record (:class:`~lightexport.options.ExportOptions`): a misspelt option
    is a :class:`~lightexport.errors.UsageError` naming the close match. The outputs are guarded
    against the inputs before any work (:func:`lightexport.fileio.guard_outputs`).
    """
    backend = get_backend(format)
    ExportOptions.build(backend, **options)  # refuse bad options before loading anything
    source = export_source(source, backend, input_shape=input_shape, preprocess=preprocess, model_args=model_args)
    opts = _options_for(source, backend, options)
    guard_outputs(planned_outputs(backend, opts), export_inputs(source, opts))
    readable_name(backend, opts.output)
    if isinstance(source, LoadedModel):
        images = memory.calib_images_in(opts.calib, opts.calib_size) if opts.precision is Precision.INT8 else 0
        memory.require(memory.export_estimate(source.module, source.name, opts.input_size or source.spec.input_size,
                                              opts.batch, calib_images=images, channels=source.spec.channels))
    return backend.export_function()(source, opts)


def _options_for(source: LoadedModel | Path, backend, options: dict[str, Any]) -> ExportOptions:
    """The options record for this source: a user's model's input shape gives the batch, and the output name."""
    if isinstance(source, LoadedModel) and source.user:
        shaped = source.spec.config.get("batch", 1)
        if "batch" not in options:
            options = {**options, "batch": shaped}
        elif shaped != 1 and options["batch"] != shaped:
            raise UsageError(f"batch {options['batch']} and the input shape's batch {shaped} conflict: give one")
    elif isinstance(source, Path):
        fixed = [flag for flag, given in (("--input-size", options.get("input_size") is not None),
                                          ("--batch", options.get("batch", 1) != 1),
                                          ("--dynamic", bool(options.get("dynamic")))) if given]
        if fixed:
            raise UsageError(f"{' and '.join(fixed)} cannot change the ONNX file {source.name}: its input shape is "
                             "fixed in it; export the ONNX again with them, or pass the PyTorch model")
    opts = ExportOptions.build(backend, **options)
    return opts.with_output(opts.output or default_output(source, backend, opts.precision))


def export_source(source: LoadedModel | nn.Module | str | Path, backend, *, input_shape=None, preprocess=None,
                  model_args=None) -> LoadedModel | Path:
    """What an exporter takes: a loaded model, or an ONNX file for formats that convert ONNX."""
    if isinstance(source, LoadedModel):
        return source
    if isinstance(source, nn.Module):
        if model_args:
            raise UsageError("model_args go with an entry point (file.py:factory); a module is already built")
        return from_module(source, input_shape=input_shape, preprocess=preprocess)
    if isinstance(source, (str, Path)) and is_interchange(source):
        if not backend.accepts_onnx:
            raise UsageError(f"{backend.name} export takes a PyTorch model, not the ONNX file {source}")
        return Path(source)
    if isinstance(source, (str, Path)):
        return load_model(str(source), model_args=model_args, input_shape=input_shape, preprocess=preprocess)
    raise UsageError(f"{backend.name} export takes a model name, a loaded model, an nn.Module or an ONNX file, not "
                     f"{source!r}")


def planned_export(source: LoadedModel | str | Path, format: str = INTERCHANGE, **options: Any  # noqa: A002
                   ) -> tuple[list[tuple[str, Path]], list[tuple[str, Path | None]]]:
    """The (role, path) outputs an export would write and the inputs it reads, without writing anything:
    what a caller with outputs of its own (the CLI's ``--json``) guards together with them."""
    backend = get_backend(format)
    source = export_source(source, backend)
    opts = _options_for(source, backend, options)
    return planned_outputs(backend, opts), export_inputs(source, opts)


def _recorded_weights(artifact: Path, prov: Provenance) -> Path:
    """The checkpoint an artifact was exported from, found beside it or in the working directory by its hash."""
    import warnings

    from lightexport.artifacts import file_digest

    name, digest = Path(prov.weights).name, prov.weights_sha256
    for folder in dict.fromkeys([artifact.parent, Path.cwd()]):
        candidate = folder / name
        if digest and candidate.is_file() and file_digest(candidate, len(digest)) == digest:
            warnings.warn(f"using {candidate}, the checkpoint {artifact.name} records (sha256 {digest} matches)",
                          stacklevel=3)
            return candidate
    raise UsageError(f"{artifact} was exported from weights {name} (sha256 {digest}), which is not beside it or in "
                     "the working directory; pass --weights with that file")


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
    prov = read_provenance(artifact)
    if prov.source is not None and model is None:
        return _user_reference(Path(artifact), prov, weights, trust)
    if not prov.raw:
        if not (model and weights):
            raise UsageError(f"{artifact} carries no lightexport provenance (it was not exported by lightexport): "
                             "pass --model NAME and --weights CHECKPOINT, the weights it was exported from")
    name = model or prov.model
    if not name:
        raise UsageError(f"{artifact} records no model name; pass --model NAME")
    if model is None and _names_code(name):
        raise UsageError(f"{artifact} names the code {name} as its model without the provenance that pins it (a "
                         f"hash of the file): lightexport runs code only where you name it, --model {name}")
    if weights is None and prov.weights:
        weights = _recorded_weights(Path(artifact), prov)
    recorded = prov.random_weights or "seed-0 with default BN statistics (lightexport 0.1)"
    if weights is None and recorded != RANDOM_WEIGHTS_SCHEME:
        raise UsageError(f"{artifact} was exported with random weights made as '{recorded}' (lightexport "
                         f"{prov.version or '?'}); this lightexport makes them as '{RANDOM_WEIGHTS_SCHEME}', "
                         f"so they differ: re-export the artifact, or export and check with --weights")
    build = prov.build_kwargs if model is None else {}
    return load_model(
        name,
        weights,
        num_classes=num_classes if num_classes is not None else build.get("num_classes"),
        features=features or bool(build.get("fork_feat")),
        trust=trust,
    )


def _names_code(name: str) -> bool:
    """Whether a model name is a user's entry point (``file.py:factory``, ``pkg.mod:factory``): code to run."""
    from lightexport.model_defs.registry import is_library_name

    return ":" in name and not is_library_name(name)


def _user_reference(artifact: Path, prov: Provenance, weights: str | Path | None, trust: bool) -> LoadedModel:
    """A user's model rebuilt as the artifact records it: the same entry point (refused when its file changed),
    arguments, weights and input; a whole-model checkpoint or a .pt2 found by its hash."""
    shape = (prov.batch or 1, prov.channels, prov.input_size, prov.input_size) if prov.input_size else None
    if prov.source == "entry":
        from lightexport.usercode import parse_entry

        entry = parse_entry(prov.entry, prov.model_args)
        now = entry.sha256() if entry else None
        if entry is not None and now and not prov.entry_sha256:
            raise UsageError(f"{artifact.name} records the code {prov.entry} without its sha256, so nothing shows it "
                             f"is the code the artifact was made from: name it to run it, --model {prov.entry}")
        if entry is not None and prov.entry_sha256 and now and now != prov.entry_sha256:
            where = Path(entry.target).name if entry.is_file else entry.target
            raise InputFileError(f"{where} changed since {artifact.name} was exported from it (sha256 "
                             f"{prov.entry_sha256[:12]}... recorded, {now[:12]}... now): re-export the artifact from "
                             "the current code, or restore the file it was made from")
        if weights is None and prov.weights:
            weights = _recorded_weights(artifact, prov)
        return load_model(prov.entry, weights, trust=trust, model_args=prov.model_args, input_shape=shape,
                          preprocess=prov.preprocess)
    if prov.source in ("checkpoint", "program"):
        path = Path(weights) if weights else _recorded_weights(artifact, prov)
        if prov.source == "checkpoint" and not trust:
            raise UsageError(f"{artifact} was exported from the whole-model checkpoint {path.name}, which only "
                             "--trust-checkpoint loads (it unpickles code)")
        return load_model(str(path), trust=trust, input_shape=shape, preprocess=prov.preprocess)
    raise UsageError(f"{artifact} was exported from a module built in Python (api.export(module, ...)), which it "
                     "cannot rebuild: check it with api.verify(artifact, api.from_module(module, ...))")


def _feeds(reference: LoadedModel, prov: Provenance, inputs: int, images: int | None, seed: int):
    from lightexport.parity import make_inputs
    from lightexport.parity.inputs import decision_inputs

    check_int("inputs", inputs)
    check_int("seed", seed)
    size = prov.input_size or reference.spec.input_size
    batch = prov.batch or 1
    if images:
        check_int("images", images)
        return decision_inputs(reference.spec, -(-images // batch), input_size=size, batch=batch)
    return make_inputs(reference.spec, inputs, seed=seed, input_size=size, batch=batch)


def verify(
    artifact: str | Path,
    reference: LoadedModel,
    *,
    inputs: int = 8,
    images: int | None = None,
    precision: str | Precision | None = None,
    threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
    runtime_default: bool = True,
):
    """Parity of ``artifact`` against ``reference``, in the settings it was made for and those a user gets.

    Inputs are ``inputs`` real photos then seeded noise, or, with ``images=N``, the N crops
    of the decision set (:func:`lightexport.parity.inputs.decision_inputs`), made as they are
    used. The artifact is first run as exported (OpenVINO with the inference precision pinned
    to what the IR was made for); where the runtime's own default differs on this machine
    (OpenVINO runs float layers in bf16 on CPUs with AMX or AVX512-BF16), it is run again with
    the defaults and judged by the limits of the coarser precision: that is what a deployment
    executes.
    """
    from lightexport.parity import check_parity
    from lightexport.parity.settings import execution_label, machine_caveat, run_settings

    prov = read_provenance(artifact)
    backend = backend_for_path(artifact)
    if threads is not None:
        check_int("threads", threads)
    feeds = _feeds(reference, prov, inputs, images, seed)
    size = prov.input_size or reference.spec.input_size
    memory.require(memory.parity_estimate(reference.module, reference.name, size, prov.batch or 1, len(feeds)))
    made = Precision.parse(precision) if precision is not None else prov.precision
    reports = []
    for setting in run_settings(backend, made, threads=threads, runtime_default=runtime_default):
        runner = backend.make_runner(artifact, **setting.runner_options)
        report = check_parity(runner, reference.module, feeds, precision=setting.precision, progress=progress,
                              decisions=reference.decision_outputs())
        report.execution = execution_label(setting, runner, made)
        reports.append(report)
    reports[0].also.extend(reports[1:])
    caveat = None if reports[0].passed else machine_caveat(backend, made, prov.get("int8"))
    if caveat:
        reports[0].failures.append(caveat)
    return reports[0]


def bisect(artifact: str | Path, reference: LoadedModel, *, precision: str | Precision | None = None, seed: int = 0):
    """Name the first module where an ONNX ``artifact`` departs from ``reference`` (on one input).

    An int8 artifact drifts at every quantized layer, so for it the answer is a trace of where
    the drift builds up (:func:`lightexport.parity.trace.trace_int8`) instead of a first divergence.
    """
    from lightexport.parity import make_inputs, tolerance_for
    from lightexport.parity.bisect import bisect_artifact
    from lightexport.parity.trace import trace_int8

    prov = read_provenance(artifact)
    precision = Precision.parse(precision) if precision is not None else prov.precision
    feed = make_inputs(reference.spec, 1, seed=check_int("seed", seed),
                       input_size=prov.input_size or reference.spec.input_size)[0]
    if precision is Precision.INT8:
        return trace_int8(artifact, reference.module, feed)
    return bisect_artifact(artifact, reference.module, feed, tolerance=tolerance_for(precision).max_rel)
