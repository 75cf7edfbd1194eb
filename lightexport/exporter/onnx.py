"""PyTorch -> ONNX: export, simplify, check, stamp provenance, write atomically.

The TorchScript-based exporter is the default: it is ~30x faster than the dynamo
exporter on these CNNs, it is deterministic, and its node names carry module paths
(``/stages/stages.0/blocks/blocks.0/mlp/mlp.0/Conv``) that bisection maps back to
PyTorch modules. ``exporter="dynamo"`` is there for torch releases that drop it.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn as nn

from lightexport.backends import get_backend
from lightexport.errors import ExportError, UsageError
from lightexport.exporter.base import ExportResult, artifact_metadata
from lightexport.exporter.onnx_cleanup import drop_noop_slices
from lightexport.exporter.onnx_guard import Candidate, guarded_simplify
from lightexport.loading import LoadedModel
from lightexport.model_defs.features import output_names as feature_output_names
from lightexport.onnxfile import INPUT_NAME, check_model, op_histogram, save_onnx, stamp_metadata
from lightexport.options import ExportOptions

#: 17, not 20 (whose native Gelu the naive dynamo export uses): with the simplification guard ONNX
#: Runtime fuses FasterNet-T0's GELUs at 17 too (14 Gelu kernels, 100 nodes, as naive), opset 20
#: measured no faster (ShuffleNetV2, MobileNetV3-Small: within the ~3 % session noise of 17), and
#: 17 is the newest opset TensorRT 8.6's parser and older ONNX Runtimes read. ``--opset`` takes 9-20.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 9, 20
EXPORTERS = ("torchscript", "dynamo")


def output_names(loaded: LoadedModel) -> list[str]:
    """``logits``, or in backbone mode one ``featN`` per feature map the module declares."""
    return feature_output_names(loaded.module) if loaded.features else ["logits"]


def torch_to_onnx(
    module: nn.Module,
    example: torch.Tensor,
    outputs: list[str],
    *,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
) -> onnx.ModelProto:
    """Run torch's exporter and return the in-memory graph (nothing touches the disk yet)."""
    if exporter not in EXPORTERS:
        raise UsageError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                dim = torch.export.Dim
                shapes = ({0: dim("batch", max=1024), 2: dim("height", min=32), 3: dim("width", min=32)},)
                program = torch.onnx.export(
                    module, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                    output_names=outputs, dynamic_shapes=shapes if dynamic else None, verbose=False,
                )
                return program.model_proto
            buffer = io.BytesIO()
            torch.onnx.export(
                module, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=outputs, do_constant_folding=True,
                dynamic_axes={name: axes for name in [INPUT_NAME, *outputs]} if dynamic else None,
            )
            return onnx.load_from_string(buffer.getvalue())
    except Exception as exc:  # torch raises many unrelated types here; keep the cause for --debug
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export ({exporter}) failed: {reason}") from exc


def _onnxsim(model: onnx.ModelProto, **kwargs: Any) -> onnx.ModelProto:
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model, **kwargs)
    except Exception as exc:
        raise ExportError(f"onnxsim failed: {exc}") from exc
    if not ok:
        raise ExportError("onnxsim produced a graph that does not match the original; rerun with --no-simplify")
    return simplified


def simplify_candidates() -> list[Candidate]:
    """onnxsim in full, then with only constant folding and shape inference (its graph rewrites
    are what can cost ONNX Runtime a fusion), each followed by the removal of Slices that copy
    their whole input (onnx_cleanup); onnxslim where onnxsim is unavailable."""
    try:
        import onnxsim  # noqa: F401
    except ImportError:
        import onnxslim

        return [Candidate("onnxslim", onnxslim.slim)]
    return [Candidate("onnxsim", lambda m: drop_noop_slices(_onnxsim(m))[0]),
            Candidate("onnxsim without graph rewrites",
                      lambda m: drop_noop_slices(_onnxsim(m, perform_optimization=False))[0])]


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Constant-fold and clean the graph, keeping only a simplification that leaves ONNX Runtime's
    optimized graph no larger and with no fewer fused kernels (see :mod:`onnx_guard`).

    Returns the graph and a note naming what was kept and what was dropped, and why.
    """
    decision = guarded_simplify(model, simplify_candidates())
    return decision.model, decision.note


def default_output(loaded: LoadedModel, suffix: str, tag: str = "") -> Path:
    mode = "_features" if loaded.features else ""
    return Path(f"{loaded.name}{mode}{tag}{suffix}")


def export_onnx(loaded: LoadedModel, output: str | Path | None = None, **options: Any) -> ExportResult:
    """Export a loaded model to a checked, simplified, provenance-stamped ONNX file.

    ``options`` are those of :class:`~lightexport.options.ExportOptions` plus ``opset``,
    ``simplify_graph`` and ``exporter``. ``precision="fp16"`` converts compute to fp16 with
    explicit casts (sensitive ops stay fp32); ``"int8"`` calibrates on the images in ``calib``
    and writes QDQ ONNX (what TensorRT consumes).
    """
    from lightexport.reparam import DEFAULT_PASSES, apply_passes

    opts = ExportOptions.build(get_backend("onnx"), output=output, **options)
    if not isinstance(loaded, LoadedModel):
        raise UsageError(f"ONNX export takes a PyTorch model, got {loaded!r}")
    opts.require_calibration(loaded.name)
    opset = opts.extra.get("opset", DEFAULT_OPSET)
    exporter = opts.extra.get("exporter", "torchscript")
    simplify_graph = opts.extra.get("simplify_graph", True)
    fuse, passes, batch, dynamic = opts.fuse, opts.passes, opts.batch, opts.dynamic
    precision, calib, calib_size = opts.precision, opts.calib, opts.calib_size
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset must be from {MIN_OPSET} to {MAX_OPSET} (what torch's exporter writes), got {opset}")
    start = time.perf_counter()
    input_size = opts.input_size or loaded.spec.input_size
    module, reports = loaded.module, []
    if fuse or passes:
        module, reports = apply_passes(loaded.module, passes or list(DEFAULT_PASSES))
    example = torch.zeros(batch, 3, input_size, input_size)
    model = torch_to_onnx(module, example, output_names(loaded), dynamic=dynamic, opset=opset, exporter=exporter)
    notes = [r.summary() for r in reports if r.count]
    if simplify_graph:
        model, simplify_note = simplify(model)
        notes.append(simplify_note)
    model, precision_notes = _lower_precision(model, precision, loaded, input_size, batch, calib, calib_size,
                                              {k: v for k, v in opts.extra.items() if k.startswith("int8_")})
    notes += precision_notes
    applied = [r.name for r in reports]
    stamp_metadata(model, artifact_metadata(loaded, applied, input_size, batch, dynamic, precision))
    if simplify_graph:  # which simplification the runtime check kept, and why
        stamp_metadata(model, {"lightexport.simplify": simplify_note})
    check_model(model)
    output = opts.output or default_output(loaded, ".onnx", precision.tag)
    save_onnx(model, output)
    return ExportResult(
        format="onnx",
        path=output,
        seconds=time.perf_counter() - start,
        precision=precision.value,
        files=[output],
        op_histogram=op_histogram(model),
        metadata={p.key: p.value for p in model.metadata_props},
        notes=notes,
        passes=reports,
    )


def _lower_precision(model: onnx.ModelProto, precision: str, loaded: LoadedModel, input_size: int, batch: int,
                     calib: str | Path | None, calib_size: int, int8: dict) -> tuple[onnx.ModelProto, list[str]]:
    if precision == "fp16":
        from lightexport.exporter.onnx_fp16 import convert_to_fp16

        model, report = convert_to_fp16(model)
        return model, report.notes()
    if precision == "int8":
        from lightexport.calib import ImageFolder, OrtCalibrationReader, Preprocess
        from lightexport.exporter.onnx_int8 import DEFAULT_KEEP, quantize_qdq

        source = ImageFolder(calib, Preprocess.from_spec(loaded.spec, input_size))
        reader = OrtCalibrationReader(source, INPUT_NAME, calib_size, batch_size=batch)
        model, report = quantize_qdq(model, reader, symmetric_activations=bool(int8.get("int8_symmetric")),
                                     keep=int8.get("int8_keep", DEFAULT_KEEP))
        stamp_metadata(model, {"lightexport.int8": report.metadata()})
        return model, report.notes(min(calib_size, len(source)), str(calib))
    return model, []
