"""PyTorch -> ONNX: export, simplify, check, stamp provenance, write atomically.

The TorchScript-based exporter is the default: it is ~30x faster than the dynamo
exporter on these CNNs, it is deterministic, and its node names carry module paths
(``/stages/stages.0/blocks/blocks.0/mlp/mlp.0/Conv``) that bisection maps back to
PyTorch modules. ``exporter="dynamo"`` is there for torch releases that drop it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn as nn

from lightexport.errors import ExportError, UsageError
from lightexport.exporter.base import (
    ExportResult,
    Stopwatch,
    calibration_preprocess,
    example_input,
    prepared_module,
    provenance,
    quantize_onnx,
    quiet,
    require_model,
)
from lightexport.exporter.onnx_cleanup import drop_noop_slices
from lightexport.exporter.onnx_guard import Candidate, guarded_simplify
from lightexport.loading import LoadedModel
from lightexport.onnxfile import INPUT_NAME, check_model, op_histogram, save_onnx, stamp_metadata
from lightexport.options import ExportOptions
from lightexport.precision import Precision

#: 17, not 20 (whose native Gelu the naive dynamo export uses): with the simplification guard ONNX
#: Runtime fuses FasterNet-T0's GELUs at 17 too (14 Gelu kernels, 100 nodes, as naive), opset 20
#: measured no faster (ShuffleNetV2, MobileNetV3-Small: within the ~3 % session noise of 17), and
#: 17 is the newest opset TensorRT 8.6's parser and older ONNX Runtimes read. ``--opset`` takes 9-20.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 9, 20
EXPORTERS = ("torchscript", "dynamo")


def output_names(loaded: LoadedModel) -> list[str]:
    """``logits``, in backbone mode one ``featN`` per feature map, for a user's model its flattened outputs."""
    return loaded.output_names()


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
        with quiet():
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


def export(loaded: LoadedModel, opts: ExportOptions) -> ExportResult:
    """Export a loaded model to a checked, simplified, provenance-stamped ONNX file.

    ``opts`` takes ``opset``, ``simplify_graph`` and ``exporter`` beyond the common options.
    ``precision="fp16"`` converts compute to fp16 with explicit casts (sensitive ops stay fp32);
    ``"int8"`` calibrates on the images in ``calib`` and writes QDQ ONNX (what TensorRT consumes).
    """
    backend = opts.backend
    loaded = require_model(loaded, backend)
    opts.require_calibration(loaded.name)
    clock = Stopwatch()
    module, reports = prepared_module(loaded, opts)
    exporter = opts.get("exporter")
    model = torch_to_onnx(module, example_input(loaded, opts), output_names(loaded), dynamic=opts.dynamic,
                          opset=opts.get("opset"), exporter=exporter)
    notes = [r.summary() for r in reports if r.count]
    if exporter == "dynamo":
        written = model.opset_import[0].version if model.opset_import else None
        if written != opts.get("opset") and "opset" in opts.extra:  # asked for: a runtime needs that opset
            raise UsageError(f"--exporter dynamo wrote opset {written}, not the {opts.get('opset')} asked for (it "
                             f"cannot write older opsets): drop --exporter dynamo for opset {opts.get('opset')}")
        if written != opts.get("opset"):
            notes.append(f"the dynamo exporter wrote opset {written} (the default is {opts.get('opset')})")
    simplify_note = None
    if opts.get("simplify_graph"):
        model, simplify_note = simplify(model)
        notes.append(simplify_note)
    model, precision_notes = _lower_precision(model, loaded, opts)
    notes += precision_notes
    stamp_metadata(model, provenance(loaded, opts, reports))
    if simplify_note is not None:  # which simplification the runtime check kept, and why
        stamp_metadata(model, {"lightexport.simplify": simplify_note})
    check_model(model)
    save_onnx(model, opts.output)
    return ExportResult(
        format=backend.name,
        path=opts.output,
        seconds=clock.seconds,
        precision=opts.precision,
        files=[opts.output],
        op_histogram=op_histogram(model),
        metadata={p.key: p.value for p in model.metadata_props},
        notes=notes,
        passes=reports,
    )


def naive_export(loaded: LoadedModel, example: torch.Tensor, path: Path) -> Path:
    """``torch.onnx.export(model, (x,), path)`` with every default, as a user without lightexport calls it
    (in torch 2.14 the dynamo exporter at its default opset, with its ONNX optimizer), from the unfused module."""
    module = loaded.module.eval()
    try:
        with quiet(), torch.inference_mode(False):
            torch.onnx.export(module, (example,), str(path))
    except Exception as exc:  # torch raises many unrelated types
        raise ExportError(f"naive torch.onnx.export of {loaded.name} failed: {str(exc).strip()[:200]}") from exc
    return path


def _lower_precision(model: onnx.ModelProto, loaded: LoadedModel, opts: ExportOptions
                     ) -> tuple[onnx.ModelProto, list[str]]:
    if opts.precision is Precision.FP16:
        from lightexport.exporter.onnx_fp16 import convert_to_fp16

        model, report = convert_to_fp16(model)
        return model, report.notes()
    if opts.precision is Precision.INT8:
        return quantize_onnx(model, opts, calibration_preprocess(loaded, opts), symmetric=opts.get("int8_symmetric"))
    return model, []
