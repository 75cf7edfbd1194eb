"""The export pipeline every format shares, written once: each format's module supplies only its own step.

Like the Ultralytics exporter, every format reports the file it wrote, its size and the time
it took, and every artifact records where it came from, so ``lightexport parity`` can rebuild
the right reference without being told again. The steps between are shared too, because
copies of them drifted: the TensorRT path once exported its intermediate ONNX without the
passes asked for, and built its calibration reader without the batch size.

- :func:`default_output` and :func:`planned_outputs`: where an artifact goes, and every file it
  is made of (guarded against the inputs before any work: :mod:`lightexport.fileio`).
- :func:`export_inputs`: the files an export reads, which the output guard keeps its outputs off.
- :func:`prepared_module`: the reparameterization passes the options ask for.
- :func:`intermediate_onnx`: an ONNX made from the same options (for runtimes that convert ONNX:
  TensorRT, MNN), quantized to QDQ with :func:`calibration_reader` where int8 is asked.
- :func:`input_range_note`: why an int8 model's input quantizer spans the preprocessing's whole range.
- :func:`artifact_metadata`: the provenance.
- :class:`Stopwatch` and :class:`ExportResult`: timing and the record of what was written.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightexport import __version__
from lightexport.artifacts import META_PREFIX, file_digest, strip_prefix
from lightexport.backends import INTERCHANGE, Backend, get_backend, resolve
from lightexport.errors import LightExportError, UsageError
from lightexport.loading import RANDOM_WEIGHTS_SCHEME, LoadedModel
from lightexport.options import ExportOptions
from lightexport.precision import Precision

Source = LoadedModel | Path


@dataclass
class ExportResult:
    format: str
    path: Path
    seconds: float
    precision: Precision = Precision.FP32
    files: list[Path] = field(default_factory=list)
    op_histogram: Counter = field(default_factory=Counter)
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    passes: list[Any] = field(default_factory=list)  # reparam PassReports applied before export
    #: False for a plan (``--dry-run``): nothing was built, ``files`` lists only what was written
    built: bool = True
    #: lines a plan prints (a preflight, the equivalent trtexec command) and its JSON form
    plan_lines: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    #: raised after the result is shown (a dry run's blockers), so the user sees the plan and the exit code
    problem: LightExportError | None = None

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.is_file())

    def raise_problem(self) -> None:
        if self.problem is not None:
            raise self.problem

    def to_dict(self) -> dict[str, Any]:
        payload = {
            "format": self.format,
            "path": str(self.path),
            "files": [str(f) for f in self.files],
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 3),
            "precision": str(self.precision),
            "op_histogram": dict(self.op_histogram.most_common()),
            "metadata": self.metadata,
            "notes": self.notes,
            "passes": [r.to_dict() for r in self.passes],
            "built": self.built,
        }
        if self.plan is not None:
            payload["plan"] = self.plan
        return payload


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Third-party converters' chatter kept off the user's terminal: warnings, stdout, stderr and their loggers.

    torch's dynamo exporter prints progress on stdout and onnxscript logs a traceback on stderr
    when its optimizer skips a rewrite (the export still succeeds); neither is the user's concern,
    and a failure still surfaces as the exception it raises.
    """
    loggers = [logging.getLogger(name) for name in ("onnxscript", "torch.onnx", "torch._dynamo", "torch.export",
                                                    "torch.utils._pytree", "torchao")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


@contextlib.contextmanager
def quiet_processes() -> Iterator[None]:
    """:func:`quiet` for tools that print from native code or child processes too (fds 1 and 2 to /dev/null)."""
    from lightexport.nativeio import captured

    with captured(1, 2), quiet():
        yield


class Stopwatch:
    """Seconds since the export began (what every result reports)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def stem(source: Source) -> str:
    """The default file stem: the model's name (``_features`` in backbone mode), or the source file's stem."""
    if isinstance(source, LoadedModel):
        return f"{source.name}{'_features' if source.features else ''}"
    return Path(source).stem


def default_output(source: Source, backend: Backend, precision: Precision) -> Path:
    """``MODEL[_features][_PRECISION]SUFFIX`` in the working directory."""
    return Path(f"{stem(source)}{Precision.parse(precision).tag}{backend.suffix}")


def planned_outputs(backend: Backend, opts: ExportOptions) -> list[tuple[str, Path]]:
    """Every file an export with ``opts`` will write, each with the role a message names it by.

    The format's module may say otherwise (a dry run writes nothing; a timing cache is written
    too) through an ``outputs(opts)`` function beside its exporter.
    """
    module, _, _ = backend.exporter.partition(":")
    try:
        custom = resolve(f"{module}:planned_outputs")
    except AttributeError:
        custom = None
    if custom is not None:
        return custom(opts)
    files = backend.files(opts.output)
    roles = ["-o/--output"] + [f"{backend.name}'s {f.name} (beside -o)" for f in files[1:]]
    return list(zip(roles, files))


def export_inputs(source: LoadedModel | Path, opts: ExportOptions) -> list[tuple[str, Path | None]]:
    """The files an export reads, which none of its outputs may be."""
    inputs: list[tuple[str, Path | None]] = [("--calib", opts.calib)]
    if isinstance(source, LoadedModel):
        inputs.append(("--weights", source.weights))
        if source.entry is not None:
            inputs.append(("the model's code", source.entry.source_file()))
    else:
        from lightexport.onnxfile import external_data_files

        inputs.append(("the source ONNX", Path(source)))
        inputs += [("the source ONNX's external data", f) for f in external_data_files(source)]
    return inputs


def prepared_module(loaded: LoadedModel, opts: ExportOptions):
    """The module to export: the passes ``opts`` asks for applied (``--fuse``: all of them), and their reports.

    A user's model with nested outputs (tuples in tuples, dicts) is wrapped to return them as one flat
    tuple (:class:`lightexport.usercode.FlatOutputs`), the order parity names them in."""
    from lightexport.reparam import DEFAULT_PASSES, apply_passes
    from lightexport.usercode import FlatOutputs, is_flat

    module, reports = loaded.module, []
    if opts.applies_passes:
        module, reports = apply_passes(loaded.module, list(opts.passes or DEFAULT_PASSES))
    if loaded.user and not is_flat(loaded.output_names()):
        module = FlatOutputs(module).eval()
    return module, reports


def input_size_of(source: LoadedModel, opts: ExportOptions) -> int:
    return opts.input_size or source.spec.input_size


def example_input(source: LoadedModel, opts: ExportOptions):
    """A contiguous NCHW float32 zero tensor of the export's shape (exporters that trace need one; a
    runtime that records the example's memory layout then takes plain NCHW arrays)."""
    import torch

    size = input_size_of(source, opts)
    return torch.zeros(opts.batch, source.spec.channels, size, size).contiguous()


def require_model(source: Source, backend: Backend) -> LoadedModel:
    if not isinstance(source, LoadedModel):
        raise UsageError(f"{backend.name} export takes a PyTorch model, not {source}")
    return source


def refuse_passes_on_file(source: Source, opts: ExportOptions, backend: Backend) -> None:
    if not isinstance(source, LoadedModel) and opts.applies_passes:
        raise UsageError(f"--fuse applies to PyTorch models; an ONNX input is converted to {backend.name} as it is")


def artifact_metadata(loaded: LoadedModel, passes: list[str], input_size: int, batch: int, dynamic: bool,
                      precision: Precision | str) -> dict[str, str]:
    """Provenance as flat strings (ONNX metadata_props and OpenVINO rt_info both take strings).

    Nothing time- or machine-dependent goes in, so exports stay byte-identical.
    """
    spec = loaded.spec
    meta = {
        "model": spec.name,
        "family": spec.family,
        "build_kwargs": json.dumps(loaded.build_kwargs, sort_keys=True),
        "passes": json.dumps(passes),
        "input_size": str(input_size),
        "batch": "dynamic" if dynamic else str(batch),
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "crop_pct": str(spec.crop_pct),
        "precision": str(Precision.parse(precision)),
        "version": __version__,
    }
    if loaded.weights is not None:
        meta["weights"] = loaded.weights.name
        meta["weights_sha256"] = file_digest(loaded.weights)
    if loaded.initialized:  # modules the checkpoint lacked, started fresh (backbone mode's feature norms)
        meta["initialized"] = json.dumps(list(loaded.initialized))
    elif loaded.weights is None:  # how the random weights were made (a checkpoint's are its own)
        meta["random_weights"] = RANDOM_WEIGHTS_SCHEME
    if loaded.user:  # what rebuilds a user's model: its entry point, that file's hash, the arguments, its input
        meta["source"] = loaded.user_source or "module"
        meta["channels"] = str(spec.channels)
        meta["preprocess"] = str(spec.config.get("preprocess", "imagenet"))
        meta["outputs"] = json.dumps(loaded.output_names())
        if loaded.entry is not None:
            meta["entry"] = loaded.entry.spelled
            meta["entry_sha256"] = loaded.entry.sha256() or ""
            meta["model_args"] = json.dumps(loaded.entry.args, sort_keys=True)
    return {META_PREFIX + k: v for k, v in meta.items()}


def provenance(loaded: LoadedModel, opts: ExportOptions, reports: list, precision: Precision | None = None) -> dict:
    """:func:`artifact_metadata` for an export with ``opts`` whose passes made ``reports``."""
    return artifact_metadata(loaded, [r.name for r in reports], input_size_of(loaded, opts), opts.batch, opts.dynamic,
                             precision or opts.precision)


def preprocess_for(metadata: dict[str, str]):
    """The calibration preprocessing of the model an artifact records (for int8 from an ONNX input)."""
    from lightexport.calib import Preprocess
    from lightexport.model_defs import get_spec

    meta = strip_prefix(metadata)
    if "model" not in meta:
        raise UsageError("this ONNX records no model, so its preprocessing is unknown; export it with lightexport")
    size = meta.get("input_size", "")
    return Preprocess.from_spec(get_spec(meta["model"]), input_size=int(size) if size.isdigit() else None)


def calibration_preprocess(source: Source, opts: ExportOptions, metadata: dict[str, str] | None = None):
    """How calibration images are preprocessed: the model's own transform at the export's size."""
    from lightexport.calib import Preprocess

    if isinstance(source, LoadedModel):
        if source.spec.preprocess != "image" or source.spec.channels != 3:
            raise UsageError(f"{source.name} declares no image preprocessing (--preprocess none, or "
                             f"{source.spec.channels} input channels), so calibration images cannot feed it: declare "
                             "--preprocess imagenet or unit for an image model")
        return Preprocess.from_spec(source.spec, input_size_of(source, opts))
    return preprocess_for(metadata or {})


def input_range_note(value_range: tuple[float, float]) -> str:
    """Why the model input's quantizer has the preprocessing's whole range, in the words of an export note.

    The input is pixels, not an activation: its extremes are the camera's black and white, which every photo
    with a shadow or a highlight reaches, not outliers. Averaged per-image extremes (the activations' rule)
    clipped them: trained MobileNetV2 with no layer kept float, logit cosine on 240 decision crops ONNX Runtime
    0.99083 -> 0.99218, OpenVINO 0.99106 -> 0.99206, MNN 0.99332 -> 0.99450 (300 calibration crops).
    """
    low, high = value_range
    return (f"the model input quantized on the preprocessing's whole range [{low:.3f}, {high:.3f}]: calibration's "
            "averaged extremes clip the darkest and brightest pixels")


def calibration_reader(opts: ExportOptions, preprocess, input_name: str):
    """ONNX Runtime's calibration reader over ``opts.calib``, in batches of the export's batch size
    (a fixed-batch graph takes nothing else: the size is never left to a caller to remember; the
    TensorRT path once forgot it and ended in ONNX Runtime's InvalidArgument at ``--batch 2``)."""
    from lightexport.calib import ImageFolder, OrtCalibrationReader

    source = ImageFolder(opts.calib, preprocess)
    # a fixed batch of B takes batches of exactly B: a short last batch is dropped
    fixed = not opts.dynamic and opts.batch > 1
    return OrtCalibrationReader(source, input_name, opts.calib_size, batch_size=opts.batch, drop_last=fixed), source


def quantize_onnx(model, opts: ExportOptions, preprocess, *, symmetric: bool):
    """fp32 ONNX -> QDQ int8 ONNX calibrated on ``opts.calib`` (ONNX Runtime's, or TensorRT's symmetric form).

    Returns the model (provenance ``lightexport.int8`` stamped) and notes.
    """
    from lightexport.exporter.onnx_int8 import quantize_qdq
    from lightexport.onnxfile import stamp_metadata

    reader, images = calibration_reader(opts, preprocess, model.graph.input[0].name)
    quantized, report = quantize_qdq(model, reader, symmetric_activations=symmetric, keep=opts.int8_keep,
                                     input_range=images.preprocess.value_range)
    stamp_metadata(quantized, {META_PREFIX + "int8": report.metadata(), META_PREFIX + "precision": "int8"})
    return quantized, report.notes(min(opts.calib_size, len(images)), str(opts.calib))


@dataclass
class Intermediate:
    """The ONNX a converter starts from: the file given, or one exported (and quantized) into a work folder."""

    path: Path
    exported: ExportResult | None = None  #: set when exported here from a PyTorch model
    notes: list[str] = field(default_factory=list)

    @property
    def passes(self) -> list:
        return self.exported.passes if self.exported else []


def intermediate_onnx(source: Source, opts: ExportOptions, folder: Path, *, quantize: bool = True,
                      symmetric: bool = False) -> Intermediate:
    """The ONNX a format converts, made from ``opts`` itself (passes, size, batch, opset carry over).

    A PyTorch model is exported to ``folder``; an ONNX file is used as it is. With int8 asked and
    ``quantize``, an fp32 ONNX is quantized to QDQ on ``opts.calib`` in batches of ``opts.batch``;
    an ONNX that already has Q/DQ nodes is taken as the int8 source it is.
    """
    from lightexport.onnxfile import load_onnx, read_metadata, save_onnx

    onnx_backend = get_backend(INTERCHANGE)
    if isinstance(source, LoadedModel):
        derived = opts.derive(onnx_backend, output=folder / f"{stem(source)}{onnx_backend.suffix}",
                              precision=Precision.FP32, calib=None, int8_keep=None)
        exported = onnx_backend.export_function()(source, derived)
        result = Intermediate(exported.path, exported, list(exported.notes))
    else:
        result = Intermediate(Path(source))
    if not (quantize and opts.precision is Precision.INT8):
        return result
    model = load_onnx(result.path)
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node):
        if opts.calib is not None:
            raise UsageError(f"{result.path} is already quantized (Q/DQ nodes): export it with --int8, without --calib")
        result.notes.append("int8: built from the given QDQ ONNX")
        return result
    if opts.calib is None:
        raise UsageError(f"{result.path} is fp32: --int8 needs --calib DIR, or a QDQ ONNX from "
                         "`lightexport onnx MODEL --int8 --calib DIR`")
    quantized, notes = quantize_onnx(model, opts, calibration_preprocess(source, opts, read_metadata(model)),
                                     symmetric=symmetric)
    result.path = folder / f"{result.path.stem}_int8.onnx"
    save_onnx(quantized, result.path)
    result.notes += notes
    return result
