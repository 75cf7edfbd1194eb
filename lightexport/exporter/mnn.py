"""PyTorch or ONNX -> MNN (``.mnn``) through MNN's own converter, from lightexport's fused ONNX.

MNN's Python wheel ships its converter and quantizer as C++ entry points (``_tools.mnnconvert``,
``_tools.mnnquant``; lightexport calls only the converter), wrapped by console scripts that must not be
used: the wrappers import ``MNN.tools.utils.log``, which on an ImportError runs ``pip install -U
aliyun-log-python-sdk`` and then posts the machine id and model details to Alibaba's log service (a network
call on the user's behalf), and the ``mnnquant`` script of 3.6.1 passes its arguments wrongly and aborts
(``std::length_error``). So the entry points are called directly, each in a child process: ``mnnconvert``
returns True even for an input that does not exist and prints its errors to stdout, and a C++ abort must not
take the user's process with it; success is the output file plus the converter's "Converted Success".

- fp32: ``mnnconvert -f ONNX`` with its defaults (the input stays NCHW; ``--keepInputFormat=0``
  measured wrong results with NCHW feeds) but one: GELU computed exactly, where the converter's
  default approximation put FasterNet-T0 over the fp32 limit. MNN's exact kernel (:data:`EXACT`) computes erf
  element by element, so lightexport rebuilds each GELU from elementwise ops MNN vectorizes first
  (:mod:`lightexport.exporter.onnx_gelu`): FasterNet-T0 at 224 px 26.7 -> 14.9 ms, the tanh kernel 12.5.
- fp16: ``--fp16`` (fp16 weights, 2x smaller; MNN computes in fp32 unless precision=low).
- int8: MNN's converter quantizes the convolutions with the parameters lightexport measures
  (:mod:`lightexport.exporter.mnn_quant`, its ``--compressionParamsFile``): asymmetric per-tensor activation
  ranges from the calibration images, per-channel weights, the first ``--int8-keep`` convolutions float (5 here,
  not the 3 of other formats), each quantized convolution's bias corrected for its weight rounding first
  (:func:`_corrected_onnx`), and the classifier kept as a MatMul (``--convertMatmulToConv 0``) so it stays float.
  Trained MobileNetV2 / EfficientNet-Lite0 (240 decision crops, 300 calibration crops): 96.7 / 94.6 % of all
  decisions (keeping 3: 91.2 / 95.0 %), 100 / 100 % of confident ones, cosine 0.9978 / 0.9985. MNN's own
  ``mnnquant`` (called here before) with EMA ranges and the same correction gave 87.5 / 89.2 %, 97.9 / 100 %,
  cosine 0.9931 / 0.9934, in 290 s of export instead of 12; its
  EMA ignores ``skip_quant_op_names``, its KL ranges (which honour it) kept 63.8 / 66.7 % of MobileNetV2's
  decisions, and its script aborts in 3.6.1. MNN 3.6.1's converter aborts (``std::out_of_range``) on ONNX
  Runtime's QDQ files, so those cannot be its source.
  ``weight_only`` (``--weightQuantBits 8 --hqq``) stores int8 weights, dequantized at load: 95.4 /
  100 %, 3.7x smaller, as fast as fp32 on x86.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lightexport.backends import INTERCHANGE, get_backend, require_installed
from lightexport.errors import ExportError, UsageError
from lightexport.exporter.base import (
    ExportResult,
    Stopwatch,
    calibration_preprocess,
    input_range_note,
    intermediate_onnx,
    refuse_passes_on_file,
)
from lightexport.fileio import atomic_outputs
from lightexport.loading import LoadedModel
from lightexport.onnxfile import load_onnx, op_histogram, read_metadata
from lightexport.options import ExportOptions
from lightexport.precision import Precision

CONVERT_TIMEOUT_S = 900
_CONVERT = "import sys, _tools\nsys.exit(0 if _tools.mnnconvert(sys.argv[1:]) else 3)\n"


def _child(code: str, args: list[str], timeout: int, what: str) -> str:
    """Run an MNN entry point in a child process; its log, or an ExportError with its last lines."""
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONNOUSERSITE": "1"})
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"{what} did not finish in {timeout} s") from exc
    log = done.stdout + done.stderr
    if done.returncode != 0:
        lines = [ln for ln in log.splitlines() if ln.strip() and "device supports" not in ln]
        raise ExportError(f"{what} failed (exit {done.returncode}): {' | '.join(lines[-3:]) or 'no output'}")
    return log


#: What lightexport converts with beyond MNN's defaults: the exact (erf) GELU. By default the converter fuses
#: x * 0.5 * (1 + erf(x / sqrt 2)) into a tanh-approximated GELU kernel, 4.7e-4 off at x = 2.7, which left
#: FasterNet-T0's fp32 logits 1.04e-4 of their range from PyTorch's: over the fp32 limit, for a graph that is exact.
EXACT = ("--useGeluApproximation", "0")


def mnnconvert(onnx_path: Path, out: Path, *flags: str, exact: bool = True) -> str:
    """``mnnconvert -f ONNX`` into ``out``; judged by the file it writes and its own success line."""
    flags = (*EXACT, *flags) if exact else flags
    out.unlink(missing_ok=True)
    log = _child(_CONVERT, ["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(out),
                            "--bizCode", "lightexport", *flags], CONVERT_TIMEOUT_S, "mnnconvert")
    if not out.is_file() or not out.stat().st_size or "Converted Success" not in log:
        lines = [ln for ln in log.splitlines() if ln.strip() and "device supports" not in ln]
        raise ExportError(f"mnnconvert wrote no model: {' | '.join(lines[-3:]) or 'no output'}")
    return log


def _vectorized_gelu(path: Path, folder: Path, notes: list[str]) -> Path:
    """The ONNX at ``path`` with its exact GELUs and Erfs rebuilt from ops MNN vectorizes
    (:mod:`lightexport.exporter.onnx_gelu`; MNN's own exact kernels compute erf element by element)."""
    from lightexport.exporter.onnx_gelu import rewrite_gelu
    from lightexport.onnxfile import save_onnx

    rewrite = rewrite_gelu(load_onnx(path))
    if not rewrite.count:
        return path
    out = folder / "gelu.onnx"
    save_onnx(rewrite.model, out)
    notes.append(f"exact GELU from vectorized elementwise ops ({rewrite.gelus} GELUs"
                 + (f", {rewrite.erfs} other Erfs" if rewrite.erfs else "") + "): MNN's exact kernel is scalar")
    return out


def _calibration_batches(source, opts: ExportOptions, metadata: dict[str, str]) -> tuple[list, tuple[float, float]]:
    """The calibration images as the model takes them, in the export's batch (a fixed batch takes only it), and
    the range of values the preprocessing can give the input."""
    from lightexport.calib import ImageFolder

    images = ImageFolder(opts.calib, calibration_preprocess(source, opts, metadata))
    fixed = not opts.dynamic and opts.batch > 1
    return list(images.batches(opts.batch, opts.calib_size, drop_last=fixed)), images.preprocess.value_range


def _corrected_onnx(path: Path, batches: list, kept: list[str], folder: Path) -> tuple[Path, int]:
    """The fused ONNX with each convolution to be quantized absorbing, in its bias, the mean error its int8
    weights will add, and how many were corrected (:mod:`lightexport.exporter.onnx_bias`, input means from the
    fp32 graph on the calibration images): the weights are rounded as ONNX Runtime's (symmetric per channel, 127
    steps, :mod:`lightexport.exporter.mnn_quant`). Kept convolutions and the float classifier are left alone."""
    from lightexport.exporter.onnx_bias import correct_weight_rounding
    from lightexport.onnxfile import save_onnx

    model = load_onnx(path)
    others = [n.name for n in model.graph.node if n.op_type != "Conv" or n.name in kept]
    corrected, names = correct_weight_rounding(model, batches, others)
    out = folder / "corrected.onnx"
    save_onnx(corrected, out)
    return out, len(names)


def _int8(onnx_path: Path, source, opts: ExportOptions, metadata: dict[str, str], work: Path, exact: bool,
          converted: Path) -> list[str]:
    """Static int8 through MNN's converter with lightexport's own ranges (:mod:`lightexport.exporter.mnn_quant`);
    its notes."""
    from lightexport.exporter.mnn_quant import mnn_convolutions, plan
    from lightexport.exporter.onnx_int8 import resolve_keep

    kept = resolve_keep(load_onnx(onnx_path, load_weights=False), opts.int8_keep)
    batches, input_range = _calibration_batches(source, opts, metadata)
    corrected_onnx, corrected = _corrected_onnx(onnx_path, batches, kept, work)
    float_model = work / "float.mnn"
    mnnconvert(corrected_onnx, float_model, "--convertMatmulToConv", "0", exact=exact)
    made = plan(load_onnx(corrected_onnx), mnn_convolutions(float_model), batches, kept, input_range)
    if not made.quantized:
        raise ExportError("MNN int8: no convolution of the converted model could be matched to the ONNX graph")
    params = work / "int8.json"
    params.write_text(json.dumps(made.params))
    mnnconvert(corrected_onnx, converted, "--convertMatmulToConv", "0", "--compressionParamsFile", str(params),
               exact=exact)
    if converted.stat().st_size >= float_model.stat().st_size:  # int8 weights are a quarter of fp32's
        raise ExportError("mnnconvert applied none of the int8 parameters (the model is no smaller than fp32)")
    images = sum(len(b) for b in batches)
    notes = [f"MNN int8: {len(made.quantized)} convolutions quantized by MNN's converter with lightexport's ranges "
             f"(activations asymmetric per tensor, {made.rule}, on {images} images from {opts.calib}; weights "
             "symmetric per channel); the classifier stays float (kept as MatMul)",
             f"bias correction of int8 weight rounding in {corrected} convolutions"]
    if made.input_range:
        notes.append(input_range_note(made.input_range))
    if kept:
        notes.append(f"kept in float: {', '.join(kept)}")
    if made.unmatched:
        notes.append(f"left float (no ONNX convolution found for them): {', '.join(made.unmatched)}")
    metadata["lightexport.int8"] = json.dumps({
        "weights": "int8 symmetric per channel", "activations": f"int8 asymmetric per tensor, {made.rule}",
        "quantizer": "mnnconvert --compressionParamsFile (lightexport ranges)",
        "kept_float": [*kept, *made.unmatched, "classifier (MatMul)"], "bias_corrected": corrected,
        "input_range": list(made.input_range) if made.input_range else None})
    return notes


def export(source: LoadedModel | Path, opts: ExportOptions) -> ExportResult:
    """Write ``OUT.mnn`` (+ ``OUT.mnn.json``, the provenance) from a PyTorch model or a lightexport ONNX."""
    backend = opts.backend
    require_installed("MNN", "MNN export")
    refuse_passes_on_file(source, opts, backend)
    weight_only = bool(opts.get("weight_only"))
    exact = not opts.get("fast_gelu")
    if opts.precision is Precision.INT8:
        if weight_only and opts.int8_keep != backend.int8_keep_default:
            raise UsageError("--int8-keep goes with static int8: --weight-only keeps every activation float")
        if not weight_only:
            opts.require_calibration(source.name if isinstance(source, LoadedModel) else str(source))
    clock = Stopwatch()
    files = backend.files(opts.output)
    with tempfile.TemporaryDirectory(prefix="lightexport-mnn-") as work:
        work = Path(work)
        src = intermediate_onnx(source, opts, work, quantize=False)
        model = load_onnx(src.path, load_weights=False)
        metadata = read_metadata(model)
        metadata["lightexport.precision"] = opts.precision.value
        notes, converted = list(src.notes), work / "model.mnn"
        onnx_path = _vectorized_gelu(src.path, work, notes) if exact else src.path
        if opts.precision is Precision.FP16:
            mnnconvert(onnx_path, converted, "--fp16", exact=exact)
            notes.append("MNN --fp16: fp16 weights; MNN computes them in fp32 unless run with precision=low")
        elif opts.precision is Precision.INT8 and weight_only:
            mnnconvert(onnx_path, converted, "--weightQuantBits", "8", "--hqq", exact=exact)
            notes.append("MNN int8 weights (--weightQuantBits 8 --hqq), dequantized to fp32 at load")
            metadata["lightexport.int8"] = json.dumps({"weights": "int8 hqq", "activations": "fp32"})
        elif opts.precision is Precision.INT8:
            notes += _int8(onnx_path, source, opts, metadata, work, exact, converted)
        else:
            mnnconvert(onnx_path, converted, exact=exact)
        if not exact:
            metadata["lightexport.mnn_gelu"] = "tanh approximation"
            notes.append("MNN's tanh GELU kernel (--fast-gelu): faster, not exact (FasterNet-T0: 1.04e-4 of range "
                         "off in fp32, over the fp32 limit)")
        metadata["lightexport.outputs"] = metadata.get("lightexport.outputs") or json.dumps(
            [o.name for o in model.graph.output])
        with atomic_outputs(files) as (tmp_mnn, tmp_json):
            shutil.copyfile(converted, tmp_mnn)
            tmp_json.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return ExportResult(format=backend.name, path=files[0], seconds=clock.seconds, precision=opts.precision,
                        files=files, op_histogram=op_histogram(model), metadata=metadata, notes=notes,
                        passes=src.passes)


def planned_outputs(opts: ExportOptions) -> list[tuple[str, Path]]:
    files = opts.backend.files(opts.output)
    return [("-o/--output (the .mnn)", files[0]), ("the provenance (.mnn.json, beside -o)", files[1])]


def naive_export(loaded: LoadedModel, example, path: Path) -> Path:
    """``mnnconvert`` with its defaults on a plain ``torch.onnx.export`` of the unfused module."""
    from lightexport.exporter.onnx import naive_export as naive_onnx

    require_installed("MNN", "the MNN baseline")
    onnx_path = naive_onnx(loaded, example, path.with_name(f"{path.stem}.for-mnn{get_backend(INTERCHANGE).suffix}"))
    try:
        mnnconvert(onnx_path, path, exact=False)
    finally:
        onnx_path.unlink(missing_ok=True)
    return path
