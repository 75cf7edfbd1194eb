"""PyTorch or ONNX -> TensorRT engine, with TensorRT 10.x or 11.x.

The two generations build differently. TensorRT 10.x keeps the weakly typed build: an
fp32 (or QDQ) ONNX plus ``BuilderFlag.FP16``/``INT8`` lets the builder pick lower-precision
kernels. TensorRT 11 removed those flags and the implicit int8 calibrators: every network
is strongly typed, so fp16 means an ONNX that already computes in fp16 (``onnx_fp16``) and
int8 means Q/DQ nodes. int8 always comes from a QDQ ONNX (explicit quantization, the path
TensorRT 10 recommends too), so both generations build the same int8 graph. The installed
generation is told by the presence of ``BuilderFlag.FP16``, not guessed from a version.

``tensorrt`` is imported only here and only when building: without it, or without a CUDA
device, a build stops with one ``BackendUnavailableError`` line before anything is written.
``plan_tensorrt`` (``--dry-run``) needs neither: it runs the preflight and prints the
equivalent ``trtexec`` command. An engine cannot hold metadata, so provenance goes to a
``NAME.engine.json`` sidecar, written atomically together with the engine.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from lightexport.artifacts import META_PREFIX, sidecar_path
from lightexport.errors import (
    BackendUnavailableError,
    ExportError,
    InputFileError,
    LightExportError,
    OutputError,
    UsageError,
)
from lightexport.exporter.base import ExportResult, export_inputs, intermediate_onnx, refuse_passes_on_file
from lightexport.exporter.onnx_fp16 import export_onnx_fp16, is_fp16_model
from lightexport.exporter.trt_preflight import PreflightReport, Profile, make_profile, preflight, trtexec_command
from lightexport.fileio import atomic_output, atomic_outputs, refuse_inputs, write_target
from lightexport.loading import LoadedModel
from lightexport.onnxfile import load_onnx, op_histogram, read_metadata, save_onnx
from lightexport.options import ExportOptions
from lightexport.precision import Precision

MIN_MAJOR = 10
DEFAULT_WORKSPACE_GIB = 4.0
NO_TENSORRT = ("TensorRT is not installed (no 'tensorrt' Python module): on a machine with an NVIDIA GPU run "
               "pip install 'lightexport[tensorrt]' or use docker/Dockerfile.tensorrt; --dry-run checks the model and "
               "prints the trtexec command without TensorRT")
NO_CUDA = ("TensorRT needs an NVIDIA GPU, but CUDA is not available here (torch.cuda.is_available() is False): build "
           "on a GPU machine, e.g. docker run --gpus all with docker/Dockerfile.tensorrt; --dry-run works without one")


@dataclass(frozen=True)
class TensorRT:
    """The installed ``tensorrt`` module and which API generation it speaks."""

    module: ModuleType

    @property
    def version(self) -> str:
        return str(self.module.__version__)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def strongly_typed(self) -> bool:
        """TensorRT 11: no precision flags, every network strongly typed (precision lives in the ONNX)."""
        return self.major >= 11 or not hasattr(self.module.BuilderFlag, "FP16")


def _import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer cannot be loaded
        raise BackendUnavailableError(NO_TENSORRT) from exc
    return tensorrt


def load_tensorrt() -> TensorRT:
    """TensorRT and a CUDA device, or a one-line ``BackendUnavailableError`` saying what to install or where to run."""
    trt = TensorRT(_import_tensorrt())
    if trt.major < MIN_MAJOR:
        raise BackendUnavailableError(f"TensorRT {trt.version} is too old: lightexport builds with TensorRT 10 or "
                                      "newer (pip install -U 'tensorrt>=10')")
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(NO_CUDA)
    return trt


def installed_strongly_typed() -> bool:
    """The typing of the TensorRT here; strongly typed when there is none (TensorRT 10.x and 11 both build that)."""
    try:
        return TensorRT(_import_tensorrt()).strongly_typed
    except BackendUnavailableError:
        return True


def _collecting_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that keeps errors and warnings, so a failed build can say why in one line."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.ERROR):
                self.errors.append(msg)
            elif int(severity) == int(trt.ILogger.WARNING):
                self.warnings.append(msg)

    return Logger()


def _describe_parser_error(error: Any) -> str:
    node = error.node_name() or (f"node #{error.node()}" if error.node() >= 0 else "(graph)")
    code = getattr(error.code(), "name", error.code())
    return f"{node!r} ({error.node_operator() or '?'}): {error.desc()} [{code}]"


def _parse(trt: ModuleType, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    """Network and parser; the parser owns the weights, so it must outlive the build."""
    # Flags 0: weakly typed on 10.x (precision comes from builder flags); on 11.x every network is strongly
    # typed and NetworkDefinitionCreationFlag.STRONGLY_TYPED is deprecated and ignored.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}: {'; '.join(errors) or 'no reason given'}")
    return network, parser


def _configure(trt: TensorRT, builder: Any, network: Any, config: Any, precision: Precision, profile: Profile,
               workspace_gib: float) -> None:
    flags = trt.module.BuilderFlag
    config.set_memory_pool_limit(trt.module.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision is Precision.FP32:
        config.clear_flag(flags.TF32)  # TF32 convolutions would fail fp32 parity (10-bit mantissa)
    elif not trt.strongly_typed:
        config.set_flag(flags.FP16 if precision is Precision.FP16 else flags.INT8)  # INT8 from Q/DQ: no calibrator
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t.name for t in inputs if -1 in tuple(t.shape)]
    if not dynamic:
        return
    missing = [name for name in dynamic if name not in profile]
    if missing:
        raise ExportError(f"TensorRT sees dynamic dims in input(s) {', '.join(missing)} that have no profile")
    optimization = builder.create_optimization_profile()
    for name in dynamic:
        shapes = profile[name]
        optimization.set_shape(name, shapes.min, shapes.opt, shapes.max)
    if config.add_optimization_profile(optimization) < 0:
        raise ExportError(f"TensorRT rejected the optimization profile {profile}")


def _set_timing_cache(config: Any, path: Path | None, notes: list[str]) -> None:
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    try:
        cache = config.create_timing_cache(blob)
    except Exception as exc:  # a corrupt buffer may raise rather than return None
        raise InputFileError(f"{path} is not a TensorRT timing cache ({exc}); delete it to start a new one") from exc
    if cache is None:
        raise InputFileError(f"{path} is not a TensorRT timing cache; delete it to start a new one")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        notes.append(f"timing cache {path} was made by another GPU or TensorRT version; started a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    elif blob:
        notes.append(f"timing cache: reused {path}")


def _build(trt: TensorRT, onnx_path: Path, precision: Precision, profile: Profile, workspace_gib: float,
           timing_cache: Path | None, notes: list[str]) -> tuple[Any, Any]:
    """Serialized engine and serialized timing cache (both TensorRT host memory)."""
    logger = _collecting_logger(trt.module)
    builder = trt.module.Builder(logger)
    network, _parser = _parse(trt.module, builder, logger, onnx_path)
    config = builder.create_builder_config()
    _configure(trt, builder, network, config, precision, profile, workspace_gib)
    _set_timing_cache(config, timing_cache, notes)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        reason = logger.errors[-1] if logger.errors else "no error was logged"
        raise ExportError(f"TensorRT could not build an engine from {onnx_path}: {reason}")
    notes += [f"TensorRT warning: {w}" for w in dict.fromkeys(logger.warnings)][:5]
    return engine, config.get_timing_cache().serialize()


def _write(path: Path, host_memory: Any) -> None:
    with path.open("wb") as f:
        f.write(host_memory)  # IHostMemory exposes the buffer protocol


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: Precision | str = Precision.FP32,
    *,
    profile: Profile | None = None,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    timing_cache: str | Path | None = None,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Build an engine from an ONNX file: preflight first, then the TensorRT builder; writes are atomic.

    ``precision`` int8 needs a QDQ ONNX. fp16 on TensorRT 11 converts the ONNX to fp16
    compute first (in a temporary folder). ``timing_cache`` is read if it exists and
    written back after the build. ``metadata`` (``lightexport.*`` keys) defaults to the
    ONNX's own and goes to the sidecar with the build settings.
    """
    precision = Precision.parse(precision, (Precision.FP32, Precision.FP16, Precision.INT8))
    if workspace_gib <= 0:
        raise UsageError(f"--workspace must be positive (GiB), got {workspace_gib}")
    trt = load_tensorrt()
    start = time.perf_counter()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    cache_path = Path(timing_cache) if timing_cache else None
    model = load_onnx(onnx_path)
    report = preflight(model, profile, precision=precision.value, source=str(onnx_path))
    report.raise_for_blockers()
    typing = "strongly typed" if trt.strongly_typed else "weakly typed with precision flags"
    notes = [f"TensorRT {trt.version}, {typing}", *(f"preflight warning: {w}" for w in report.warnings)]
    with tempfile.TemporaryDirectory(prefix="lightexport-trt-") as work:
        parsed = onnx_path
        if precision is Precision.FP16 and trt.strongly_typed and not is_fp16_model(model):
            converted = export_onnx_fp16(onnx_path, Path(work) / f"{onnx_path.stem}_fp16.onnx")
            parsed, notes = converted.path, notes + converted.notes
        engine, cache = _build(trt, parsed, precision, report.profile, workspace_gib, cache_path, notes)
    import torch

    meta = dict(metadata if metadata is not None else read_metadata(model))
    meta.update({META_PREFIX + "precision": precision.value, META_PREFIX + "tensorrt": trt.version,
                 META_PREFIX + "strongly_typed": str(trt.strongly_typed).lower(),
                 META_PREFIX + "device": torch.cuda.get_device_name(),
                 META_PREFIX + "profile": json.dumps({n: asdict(r) for n, r in report.profile.items()})})
    sidecar = sidecar_path(engine_path)
    with atomic_outputs([engine_path, sidecar]) as (tmp_engine, tmp_sidecar):
        _write(tmp_engine, engine)
        tmp_sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if cache_path is not None:
        with atomic_output(cache_path) as tmp:
            _write(tmp, cache)
        notes.append(f"timing cache saved to {cache_path}")
    return ExportResult(format="tensorrt", path=engine_path, seconds=time.perf_counter() - start, precision=precision,
                        files=[engine_path, sidecar], op_histogram=op_histogram(model), metadata=meta, notes=notes)


# --------------------------------------------------------------------------- models and ONNX files in


def _check_source(source: LoadedModel | Path, opts: ExportOptions) -> None:
    """What only a TensorRT build can say about its source (the options record checked the rest)."""
    if isinstance(source, LoadedModel):
        opts.require_calibration(source.name)
    refuse_passes_on_file(source, opts, opts.backend)


def profile_of(opts: ExportOptions) -> Profile | None:
    """The optimization profile from ``--min/--opt/--max-shape`` (trtexec syntax)."""
    return make_profile(opts.get("min_shape"), opts.get("opt_shape"), opts.get("max_shape"))


def planned_outputs(opts: ExportOptions) -> list[tuple[str, Path]]:
    """The engine and its provenance sidecar, and the timing cache it updates; a dry run writes at most the
    ONNX trtexec builds from (``--write-onnx``)."""
    if opts.get("write_onnx") and not opts.get("dry_run"):
        raise UsageError("--write-onnx goes with --dry-run (a build keeps its intermediate ONNX in a temporary folder)")
    if opts.get("dry_run"):
        return [("--write-onnx's ONNX", trtexec_onnx_path(opts.output))] if opts.get("write_onnx") else []
    outputs = [("-o/--output (the engine)", opts.output), ("the engine's provenance sidecar (beside -o)",
                                                            sidecar_path(opts.output))]
    if opts.get("timing_cache"):
        outputs.append(("--timing-cache", Path(opts.get("timing_cache"))))
    return outputs


def export(source: LoadedModel | Path, opts: ExportOptions) -> ExportResult:
    """Build an engine from a loaded PyTorch model (exported to ONNX first) or from an ONNX file.

    ``opts`` takes the profile shapes, ``workspace_gib``, ``timing_cache`` and ``opset`` beyond
    the common options; ``dry_run`` plans instead (:func:`plan_tensorrt`). TensorRT and CUDA are
    checked before any export work, so a machine without them fails at once and writes nothing.
    Intermediate ONNX files live in a temporary folder, made by the shared pipeline from the same
    options (passes included) and, for int8, quantized in batches of the export's batch size.
    """
    _check_source(source, opts)
    profile = profile_of(opts)
    if opts.get("dry_run"):
        # it writes nothing, but the trtexec command it prints writes the engine and the timing cache
        printed = [("the printed command's --saveEngine (-o)", opts.output)]
        if opts.get("timing_cache"):
            printed.append(("the printed command's --timingCacheFile (--timing-cache)", Path(opts.get("timing_cache"))))
        landed = [(role, write_target(path)) for role, path in printed]
        if len(landed) == 2 and landed[0][1] == landed[1][1]:
            raise UsageError(f"-o and --timing-cache are the same file ({landed[0][1]}); one would overwrite the "
                             "other: give them different names")
        refuse_inputs(landed, export_inputs(source, opts))
        return _plan_result(plan_tensorrt(source, opts))
    load_tensorrt()
    with tempfile.TemporaryDirectory(prefix="lightexport-trt-") as work:
        src = intermediate_onnx(source, opts, Path(work), symmetric=True)
        result = build_engine(src.path, opts.output, opts.precision, profile=profile,
                              workspace_gib=opts.get("workspace_gib"), timing_cache=opts.get("timing_cache"))
    result.passes = src.passes
    result.notes = [*src.notes, *result.notes]
    return result


def _plan_result(plan: TrtPlan) -> ExportResult:
    """A dry run as a result: nothing built, the plan's lines to print, its blockers raised after showing them."""
    problem = None
    try:
        plan.report.raise_for_blockers()
    except LightExportError as exc:
        problem = exc
    written = [plan.onnx] if any(n.startswith("wrote ") for n in plan.notes) else []
    return ExportResult(format="tensorrt", path=plan.engine, seconds=0.0, precision=plan.precision, files=written,
                        notes=[], built=False, plan_lines=plan.lines(), plan=plan.to_dict(), problem=problem)


# --------------------------------------------------------------------------- --dry-run


@dataclass
class TrtPlan:
    """What ``--dry-run`` found: the preflight, and how to build the same engine with trtexec."""

    onnx: Path  # the file trtexec builds from (ENGINE_STEM.trtexec.onnx when exported here; written if asked)
    engine: Path
    precision: Precision
    strongly_typed: bool
    report: PreflightReport
    trtexec: str
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [*self.report.lines(), *self.notes, "build it where only trtexec exists (e.g. a Jetson) with:",
                f"  {self.trtexec}"]

    def to_dict(self) -> dict:
        return {"onnx": str(self.onnx), "engine": str(self.engine), "precision": str(self.precision),
                "strongly_typed": self.strongly_typed, "preflight": self.report.to_dict(), "trtexec": self.trtexec,
                "notes": self.notes}


def trtexec_onnx_path(engine: str | Path) -> Path:
    """Where ``--dry-run --write-onnx`` writes the ONNX trtexec builds from: named after the engine."""
    engine = Path(engine)
    return engine.with_name(f"{engine.stem}.trtexec.onnx")


def plan_tensorrt(source: LoadedModel | Path, opts: ExportOptions, *, strongly_typed: bool | None = None) -> TrtPlan:
    """``--dry-run`` on any machine: preflight the ONNX and give the equivalent trtexec command.

    A dry run writes nothing by default: an ONNX exported from a PyTorch model (and its QDQ
    or fp16 form) is made and checked in a temporary folder. With ``write_onnx`` the one
    trtexec builds from is kept as ``ENGINE_STEM.trtexec.onnx`` beside the engine path,
    never over an existing file (an earlier export of the same name is the user's, and a
    dry run once replaced a fused export with an unfused one). An ONNX given as the source
    and used as it is, is not copied. ``strongly_typed`` defaults to the installed
    TensorRT's typing, or strongly typed (valid for 10.x and 11) where there is none.
    """
    _check_source(source, opts)
    precision, engine = opts.precision, opts.output
    strongly_typed = installed_strongly_typed() if strongly_typed is None else strongly_typed
    target = trtexec_onnx_path(engine)
    with tempfile.TemporaryDirectory(prefix="lightexport-trt-") as work:
        src = intermediate_onnx(source, opts, Path(work), symmetric=True)
        onnx_path, notes = src.path, []
        if precision is Precision.FP16 and strongly_typed and not is_fp16_model(load_onnx(onnx_path)):
            converted = export_onnx_fp16(onnx_path, Path(work) / f"{onnx_path.stem}_fp16.onnx")
            onnx_path, notes = converted.path, [*converted.notes]
        report = preflight(onnx_path, profile_of(opts), precision=precision.value)
        made_here = Path(work) in onnx_path.parents
        if made_here:
            if opts.get("write_onnx"):
                if target.exists():
                    raise OutputError(f"{target} exists; a dry run does not overwrite files "
                                      "(remove it, or pass -o to name the engine differently)")
                save_onnx(load_onnx(onnx_path), target)
                notes.append(f"wrote {target}")
            else:
                notes.append(f"wrote nothing; add --write-onnx to write the ONNX it builds from as {target}")
            onnx_path = target
            report.source = str(target)  # not the temporary folder's path, gone when this returns
    line = trtexec_command(onnx_path, engine, precision.value, report.profile, opts.get("workspace_gib"),
                           opts.get("timing_cache"), strongly_typed)
    return TrtPlan(onnx_path, engine, precision, strongly_typed, report, line, notes)
