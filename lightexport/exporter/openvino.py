"""PyTorch or ONNX -> OpenVINO IR (.xml + .bin) in fp32, fp16 (compressed weights), bf16 or int8 (NNCF PTQ).

``openvino.save_model`` compresses weights to fp16 by default; an fp32 IR must be asked
for explicitly, or "fp32" parity would silently measure an fp16 artifact.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightexport.artifacts import RT_SECTION
from lightexport.backends import require
from lightexport.errors import ExportError, InputFileError, UsageError, did_you_mean
from lightexport.exporter.base import (
    ExportResult,
    Stopwatch,
    calibration_preprocess,
    example_input,
    input_range_note,
    input_size_of,
    prepared_module,
    provenance,
    quiet,
    refuse_passes_on_file,
)
from lightexport.exporter.keep_search import AUTO_IMAGES, calibration_cosine, search_word
from lightexport.exporter.openvino_pin import fold_pads, pin_float_layers
from lightexport.fileio import atomic_outputs, output_failure
from lightexport.loading import LoadedModel
from lightexport.onnxfile import INPUT_NAME, in_module, load_onnx, module_of, read_metadata
from lightexport.options import DEFAULT_KEEP, SEARCHES, ExportOptions, is_search
from lightexport.precision import Precision


def _openvino():
    return require("openvino", "OpenVINO export")


def _convert_module(loaded: LoadedModel, opts: ExportOptions):
    """Trace the (optionally fused) PyTorch module with OpenVINO's PyTorch frontend."""
    from lightexport.exporter.onnx import output_names

    ov = _openvino()
    module, reports = prepared_module(loaded, opts)
    size = input_size_of(loaded, opts)
    shape = [-1, 3, -1, -1] if opts.dynamic else [opts.batch, 3, size, size]
    example = example_input(loaded, opts)
    with torch.no_grad():  # one call first: modules that cache per input shape (Ultralytics' Detect builds its
        module(example)  # anchors on the first call) would trace a different graph each time and fail the trace check
    try:
        with quiet():  # torch.jit.trace deprecation noise from OpenVINO's frontend
            model = ov.convert_model(module, example_input=example, input=[ov.PartialShape(shape)])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise ExportError(f"openvino.convert_model failed for {loaded.name}: {reason}") from exc
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    for port, name in zip(model.outputs, output_names(loaded)):
        port.get_tensor().set_names({name})
    return model, reports


def _convert_onnx(path: Path):
    ov = _openvino()
    # Checked as ONNX first: convert_model tries every frontend on a file it cannot place, and
    # TensorFlow's prints its text_format.cc parse errors from C++ before our one-line error.
    load_onnx(path, load_weights=False)
    try:
        return ov.convert_model(str(path))
    except Exception as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise InputFileError(f"OpenVINO cannot read {path}: {lines[-1] if lines else type(exc).__name__}") from exc


#: OpenVINO op types ``keep=N`` counts, in execution order (the stem and first block carry most int8 error).
KEEPABLE_OPS = ("Convolution", "GroupConvolution")


def _module_of(friendly_name: str) -> str:
    """The module an op came from: ``__module.features.0.0/aten::_convolution`` (PyTorch frontend) or an ONNX
    scope (``/features/features.0/...``)."""
    if friendly_name.startswith("__module."):
        return friendly_name.removeprefix("__module.").split("/", 1)[0]
    return module_of(friendly_name)


def keep_scope(model, keep: int | list[str] | tuple[str, ...] | str) -> list[str]:
    """Friendly names of the ops to leave in float: the first ``keep`` convolutions, or those of named modules."""
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() in KEEPABLE_OPS]
    if isinstance(keep, int) and not isinstance(keep, bool):
        if not 0 <= keep <= len(ops):
            raise UsageError(f"--int8-keep {keep}: the model has {len(ops)} convolutions, so from 0 to {len(ops)} "
                             "can stay float (all of them is not int8)")
        return [op.get_friendly_name() for op in ops[:keep]]
    if is_search(keep):
        raise ValueError(f"int8 keep {keep!r} is a search, not a scope: _quantize resolves it")
    chosen = []
    for name in [keep] if isinstance(keep, str) else keep:
        # the PyTorch frontend names ops "__module.features.0.0/aten::_convolution/...", ONNX ones "/features/..."
        scopes = (f"__module.{name}/", f"__module.{name}.", "/" + name.replace(".", "/") + "/", f"/{name}/")
        hits = [op.get_friendly_name() for op in ops if any(sc in op.get_friendly_name() for sc in scopes)
                or in_module(op.get_friendly_name(), name)]
        if not hits:
            known = [*SEARCHES, *dict.fromkeys(_module_of(op.get_friendly_name()) for op in ops)]
            raise UsageError(f"int8 keep: no convolution of module {name!r} in the model{did_you_mean(name, known)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


#: from this many calibration images on, activation ranges average the per-image extremes (see _quantize)
MEAN_RANGE_IMAGES = 32


@dataclass
class QuantizedModel:
    """What NNCF made, the convolutions left float, the activation range rule and, for a search, its results."""

    model: Any
    kept: list[str]
    ranges: str
    search: list[tuple[int, float]] = field(default_factory=list)
    searched: str = ""  # the --int8-keep word that searched ("auto", "lean")
    every_layer_7bit: bool = False  # NNCF's overflow fix in every layer, not the first alone


def _quantize(model, calib_dir: str | Path, calib_size: int, preprocess, progress: bool, keep=DEFAULT_KEEP):
    """Post-training int8 quantization with NNCF on images preprocessed exactly as the model expects.

    Activation ranges depend on how many images calibrate. With a few dozen or more
    (``MEAN_RANGE_IMAGES``), NNCF's default mean of per-image extremes, the same rule as ONNX
    Runtime's moving average: on trained MobileNetV2 (300 calibration crops, 240 decision
    crops) it lifted logit cosine 0.989 -> 0.997 (5th percentile 0.977 -> 0.994) and
    agreement on all crops 87.5 -> 92.5 % over the global min/max, which stretches each range
    to fit one outlying crop. EfficientNet-Lite0: cosine 0.9977 either way, 5th percentile
    0.9947 -> 0.9959. With fewer images the mean of extremes clips every image brighter or
    darker than the average, so the global min/max is used: at 224 px on 15 photos, logit
    cosine (worst image) FasterNet-T0 0.9959 (0.973) -> 0.9980 (0.996).

    On trained networks two more settings keep decisions (MobileNetV2, agreement
    confident/all): full bias correction instead of the fast one (98.3/82.5 -> 98.3/86.2 %)
    and the first ``keep`` convolutions left in float, the layers whose int8 error every
    later layer inherits (MobileNetV2 with none kept: 97.9/83.8 %); ``keep="auto"`` chooses how
    many, ``"lean"`` whether the default's or none (:mod:`lightexport.exporter.keep_search`), each
    candidate a full NNCF run. With the
    float layers pinned to f32 (:mod:`lightexport.exporter.openvino_pin`), int8 ran 1.62-1.66x
    faster than f32 and 0.97-1.04x OpenVINO's own bf16 default (1 thread, idle AMD EPYC;
    benchmarks/precision_table.py).
    """
    nncf = require("nncf", "OpenVINO int8")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from lightexport.calib import ImageFolder, to_nncf_dataset
    from lightexport.cpu import int8_saturates

    nncf.set_log_level(logging.WARNING)  # its INFO lines ("Not adding activation input quantizer ...") drown ours
    source = ImageFolder(calib_dir, preprocess=preprocess)
    batch = _fixed_batch(model)
    dataset = to_nncf_dataset(source, calib_size, batch_size=batch)
    images = min(calib_size, len(source))
    mean = images >= MEAN_RANGE_IMAGES
    # NNCF's default is the mean for per-tensor ranges but global min/max for per-channel ones;
    # forcing the mean on those too (MEAN_MINMAX) dropped MobileNetV2's cosine to 0.960.
    # NNCF halves the weights' range (its overflow fix) only in the first layer by default; on a CPU whose int8
    # kernels add pairs in saturating int16 (AVX2 without VNNI, lightexport.cpu) every layer needs it: trained
    # MobileNetV2 cosine 0.9914 -> above 0.993 on an AVX2-only EPYC.
    overflow = OverflowFix.ENABLE if int8_saturates() else OverflowFix.FIRST_LAYER
    ranges = AdvancedQuantizationParameters(overflow_fix=overflow) if mean else AdvancedQuantizationParameters(
        overflow_fix=overflow, activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)

    def quantize(kept: list[str]):
        try:
            quantized = nncf.quantize(model.clone(), dataset, subset_size=max(images // batch, 1),
                                 preset=nncf.QuantizationPreset.MIXED, model_type=None, fast_bias_correction=False,
                                 ignored_scope=nncf.IgnoredScope(names=kept) if kept else None,
                                 advanced_parameters=ranges)
        except Exception as exc:
            raise ExportError(f"NNCF quantization failed: {str(exc).strip().splitlines()[-1]}") from exc
        widen_input_quantizers(quantized, preprocess.value_range)
        return quantized

    rule = "mean of per-image extremes" if mean else "global min/max"
    if not is_search(keep):
        kept = keep_scope(model, keep)
        return QuantizedModel(quantize(kept), kept, rule, every_layer_7bit=overflow is OverflowFix.ENABLE)
    # a search: the fewest leading convolutions float whose int8 model reaches the target cosine on calibration images
    check = list(source.batches(batch, max(min(images, AUTO_IMAGES), batch), drop_last=True))
    reference = _outputs(model, check)
    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in KEEPABLE_OPS]

    def build(count: int):
        candidate = quantize(convs[:count])
        return calibration_cosine(reference, _outputs(candidate, check)), candidate

    chosen, results = search_word(keep, len(convs), build)
    search = sorted((count, cosine) for count, (cosine, _) in results.items())
    return QuantizedModel(results[chosen][1], convs[:chosen], rule, search, keep, overflow is OverflowFix.ENABLE)


def input_quantizers(model) -> list:
    """The FakeQuantize nodes reading a model input (none where the first layers stay float)."""
    readers = [target.get_node() for parameter in model.get_parameters()
               for target in parameter.output(0).get_target_inputs()]
    return [node for node in readers if node.get_type_name() == "FakeQuantize"]


def widen_input_quantizers(model, value_range: tuple[float, float]) -> None:
    """Give each FakeQuantize reading a model input ``value_range`` (at least), with zero on a code as NNCF has it.

    NNCF ranges the input like an activation, by averaged per-image extremes, which clips the pixels the
    preprocessing maps to its ends (see :func:`lightexport.exporter.base.input_range_note`).
    """
    from openvino import opset13

    for fq in input_quantizers(model):
        old_low, old_high = (float(fq.input_value(port).get_node().get_data().min()) for port in (1, 2))
        low, high = min(old_low, value_range[0]), max(old_high, value_range[1])
        half = fq.get_levels() // 2  # codes -half .. half - 1 signed, 0 .. 2 half - 1 unsigned
        if np.isclose(-old_low * (half - 1), old_high * half, rtol=1e-3):  # symmetric stays symmetric
            scale = max(-low / half, high / (half - 1))
            low, high = -half * scale, (half - 1) * scale
        else:  # asymmetric: the zero point an integer code, the range still covering [low, high]
            steps = 2 * half - 1
            zero = min(max(round(-low / (high - low) * steps), 1), steps - 1)
            scale = max(-low / zero, high / (steps - zero))
            low, high = -zero * scale, (steps - zero) * scale
        for port, value in ((1, low), (2, high), (3, low), (4, high)):
            like = fq.input_value(port).get_node().get_data()
            fq.input(port).replace_source_output(opset13.constant(np.full_like(like, value)).output(0))


def _fixed_batch(model) -> int:
    """The batch a static-shape model was exported with (calibration feeds it that many images at once), else 1."""
    dimension = model.inputs[0].get_partial_shape()[0]
    return dimension.get_length() if dimension.is_static else 1


def _outputs(model, batches: list[np.ndarray]) -> list[np.ndarray]:
    """Every output of ``model`` over ``batches``, compiled as it was made (f32 hint, int8 layers in int8)."""
    compiled = _openvino().Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runs = [compiled(x) for x in batches]
    return [np.concatenate([np.asarray(run[port]) for run in runs]) for port in compiled.outputs]


def _stamp(model, metadata: dict[str, str]) -> None:
    for key in sorted(metadata):
        model.set_rt_info(metadata[key], [RT_SECTION, key.removeprefix(RT_SECTION + ".")])


def export(source: LoadedModel | Path, opts: ExportOptions) -> ExportResult:
    """Write an OpenVINO IR from a loaded PyTorch model or from an ONNX file.

    ``opts`` takes ``preprocess`` (int8 calibration preprocessing for an ONNX that records none)
    and ``progress`` beyond the common options. For an ONNX input the provenance recorded by
    ``lightexport onnx`` is carried over, and int8 calibration uses the preprocessing of the model
    it names (or ``preprocess``).
    """
    backend = opts.backend
    ov = _openvino()
    opts.require_calibration(source.name if isinstance(source, LoadedModel) else str(source))
    refuse_passes_on_file(source, opts, backend)
    precision = opts.precision
    clock = Stopwatch()
    notes: list[str] = []
    if isinstance(source, LoadedModel):
        model, reports = _convert_module(source, opts)
        metadata = provenance(source, opts, reports)
        notes += [r.summary() for r in reports if r.count]
    else:
        model, reports = _convert_onnx(Path(source)), []
        metadata = read_metadata(Path(source))
        metadata["lightexport.precision"] = precision.value
    if precision is Precision.INT8:
        preprocess = opts.get("preprocess") or calibration_preprocess(source, opts, metadata)
        if fold_pads(model):  # else OpenVINO folds them at compile time into convolutions that lose the f32 pin
            notes.append("zero Pads folded into the convolutions they feed")
        made = _quantize(model, opts.calib, opts.calib_size, preprocess, opts.get("progress"), opts.int8_keep)
        model, kept, ranges = made.model, made.kept, made.ranges
        notes.append(f"int8 post-training quantization with NNCF (full bias correction, activation ranges: {ranges}) "
                     f"on up to {opts.calib_size} images from {opts.calib}")
        input_range = list(preprocess.value_range) if input_quantizers(model) else None
        if input_range:
            notes.append(input_range_note(preprocess.value_range))
        if made.every_layer_7bit:
            notes.append("int8 weights in 7 bits in every layer (NNCF's overflow fix): this CPU has AVX2 but no VNNI, "
                         "whose int8 kernels add weight x activation pairs in saturating int16")
        if made.search:
            tried = ", ".join(f"{k}: {c:.4f}" for k, c in made.search)
            notes.append(f"int8 keep {made.searched}: calibration cosine by float-kept convs {tried}")
        if kept:
            notes.append(f"kept in float: {', '.join(kept)}")
        notes.append("float layers pinned to f32 in the IR: they stay f32 where OpenVINO's default is bf16")
        metadata["lightexport.int8"] = json.dumps({"activations": "nncf mixed", "ranges": ranges,
                                                   "kept_float": kept, "auto_search": made.search,
                                                   "weight_bits": "7" if made.every_layer_7bit
                                                   else "8, 7 in the first layer",
                                                   "float_layers": "f32, pinned in the IR",
                                                   "input_range": input_range})
    if precision is Precision.BF16:
        # An IR cannot pin its execution precision (OpenVINO ignores INFERENCE_PRECISION_HINT in rt_info);
        # the precision is the compile-time hint. The IR keeps fp32 weights (bf16 rounding happens once, in
        # the plugin) and records bf16, so parity pins the bf16 hint and judges by the bf16 limits.
        notes.append("bf16: fp32 weights; run with INFERENCE_PRECISION_HINT=bf16 (OpenVINO's default on CPUs "
                     "with AMX or AVX512-BF16)")
    _stamp(model, metadata)
    files = backend.files(opts.output)
    with atomic_outputs(files) as (tmp_xml, *_):
        try:
            ov.save_model(model, str(tmp_xml), compress_to_fp16=(precision is Precision.FP16))
        except Exception as exc:
            failure = output_failure(exc, files[0])  # a full disk surfaces as "basic_ios::clear: iostream error"
            if failure is not None:
                raise failure from exc
            raise ExportError(f"openvino.save_model failed: {str(exc).strip().splitlines()[-1]}") from exc
        if precision is Precision.INT8:
            pin_float_layers(tmp_xml)  # the layers kept float for accuracy would otherwise run bf16 by default
    histogram = Counter(op.get_type_name() for op in model.get_ops())
    return ExportResult(format=backend.name, path=files[0], seconds=clock.seconds, precision=precision, files=files,
                        op_histogram=histogram, metadata=metadata, notes=notes, passes=reports)


def planned_outputs(opts: ExportOptions) -> list[tuple[str, Path]]:
    """The IR's .xml and the .bin OpenVINO names after it."""
    xml = opts.output
    if xml.suffix.lower() != ".xml":
        raise UsageError(f"an OpenVINO IR is written as .xml + .bin; got output {xml}")
    return [("-o/--output (the IR's .xml)", xml), ("the IR's .bin (beside -o)", xml.with_suffix(".bin"))]


def naive_export(loaded: LoadedModel, example, path: Path) -> Path:
    """``ov.convert_model(model, example_input=x)`` of the unfused module, as a user without lightexport calls it.

    Without ``example_input`` the frontend scripts the module, which fails on ordinary Python in
    these models. Saved uncompressed only so the same runner loads it: ``compress_to_fp16`` applies
    to saving, and a user compiling the converted model in memory gets fp32 weights.
    """
    ov = require("openvino", "the OpenVINO baseline")
    try:
        with quiet():
            model = ov.convert_model(loaded.module.eval(), example_input=example)
        ov.save_model(model, str(path), compress_to_fp16=False)
    except Exception as exc:
        raise ExportError(f"naive ov.convert_model of {loaded.name} failed: {str(exc).strip()[:200]}") from exc
    return path
