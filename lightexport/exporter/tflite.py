"""PyTorch -> LiteRT (``.tflite``, formerly TensorFlow Lite) through litert-torch: fp32, fp16 weights, int8.

Straight from the fused module through ``torch.export`` (not through ONNX):
``litert_torch.convert(module, (example,)).export(path)``. The provenance is a sidecar,
``NAME.tflite.json`` (as MNN's and TensorRT's), read back without running anything.

- Input layout: the model takes **NCHW** float32, as PyTorch does (litert-torch's default; it
  puts one TRANSPOSE to NHWC at the front of the graph). lightexport keeps it so, since parity and
  users feed what the PyTorch model takes, and records ``lightexport.input_layout = NCHW``;
  ``litert_torch.to_channel_last_io`` would make an NHWC model that misreads NCHW feeds.
- fp16: ai-edge-quantizer's ``FLOAT_CASTING`` weight-only recipe: fp16 weights behind DEQUANTIZE
  ops (TFLite's classic "float16 quantization"), 2x smaller. XNNPACK unpacks them to fp32 when the
  model loads and computes fp32 (the Python interpreter sets no FORCE_FP16 flag).
- int8: ai-edge-quantizer's static recipe (``static_wi8_ai8``: per-channel symmetric int8
  weights, per-tensor asymmetric int8 activations from moving averages of per-batch min/max) calibrated on lightexport's
  own calibration batches (:class:`lightexport.calib.ImageFolder` with the model's preprocessing),
  with the model's input and output left float32 (the ``INPUT``/``OUTPUT`` ops not quantized), so
  the artifact takes and returns what the PyTorch model does. ``--int8-keep`` keeps whole
  regions float, as ExecuTorch's does: N, every op before the graph's N-th convolution; ``auto``,
  the fewest (k, k) convolutions' regions at both ends whose calibration cosine reaches
  AUTO_TARGET. ai-edge-quantizer selects ops by scope (their output tensors' names), so the
  regions are found in the converted graph's own op order and each of their ops gets a
  ``NO_QUANTIZE`` rule; module names do not survive conversion and are refused. Trained
  MobileNetV2, 240 decision crops: everything quantized kept 87.1 % of top-1 decisions (cosine
  0.9834); two convolutions' regions at each end 92.1 % (0.9957); the default, every op before
  the third convolution, 95.0 % (0.9944); ``auto`` 95.0 % (0.9977, eight at each end).

Every file is checked by :mod:`lightexport.exporter.tflite_files` (stdlib only) after it is written.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

from lightexport.backends import install_hint
from lightexport.errors import BackendUnavailableError, ExportError, UsageError
from lightexport.exporter.base import (
    ExportResult,
    Stopwatch,
    calibration_preprocess,
    example_input,
    prepared_module,
    provenance,
    quiet_processes,
    require_model,
)
from lightexport.fileio import atomic_outputs
from lightexport.loading import LoadedModel
from lightexport.options import ExportOptions
from lightexport.precision import Precision

#: What the artifact takes: PyTorch's layout (litert-torch's default), recorded in the provenance.
INPUT_LAYOUT = "NCHW"


def _quiet_env() -> None:
    """TF/absl/XLA native logging off before their libraries load (the fd redirect catches what is left)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # jax is imported by litert-torch; never probe for a GPU/TPU


def _require(module: str, what: str):
    """``module`` imported (its logs off), or one line naming the extra that brings it (not ``pip install module``)."""
    import importlib

    _quiet_env()
    try:
        with quiet_processes():
            return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(f"{what} needs {module}; install it with: {install_hint('ai_edge_litert')}") \
            from exc


def _litert_torch():
    return _require("litert_torch", "LiteRT export")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def convert(module, example, path: Path) -> None:
    """litert-torch: ``torch.export`` of ``module`` on ``example`` -> a float32 ``.tflite`` at ``path``."""
    litert_torch = _litert_torch()
    try:
        with quiet_processes():
            edge = litert_torch.convert(module.eval(), (example,))
            edge.export(str(path))
    except Exception as exc:  # torch.export and the MLIR lowering raise many types
        raise ExportError(f"litert-torch conversion failed: {_reason(exc)}") from exc
    if not path.is_file() or not path.stat().st_size:
        raise ExportError("litert-torch wrote no model")


def _quantizer():
    _require("ai_edge_quantizer", "LiteRT fp16/int8 export")
    with quiet_processes():
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe_manager
    return algorithm_manager, qtyping, quantizer, recipe_manager


def _fp16_recipe():
    algorithm_manager, qtyping, _, recipe_manager = _quantizer()
    manager = recipe_manager.RecipeManager()
    manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                   algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe()


def _int8_recipe(floating: list[str] = ()):
    """Static int8 everywhere but the float32 input/output and the ops whose scopes are in ``floating``."""
    import re

    algorithm_manager, qtyping, _, recipe_manager = _quantizer()
    manager = recipe_manager.RecipeManager()
    manager.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                              activation_num_bits=8, weight_num_bits=8)
    for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):  # float32 in and out
        manager.add_quantization_config(regex=".*", operation_name=op,
                                        algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    for scope in floating:  # a later rule wins over the global one
        manager.add_quantization_config(regex=f"^{re.escape(scope)}$",
                                        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                        algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


#: the ops a keep count counts (what --int8-keep calls convolutions)
KEEPABLE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED")


def graph_ops(float_path: Path) -> list[tuple[str, str]]:
    """The converted graph's ops in execution order: (op name, ai-edge-quantizer's scope for it)."""
    _quantizer()
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as flat

    model = flat.read_model(str(float_path))
    graph = model.subgraphs[0]
    ops = []
    for op in graph.operators:
        name = flat.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode)
        ops.append((getattr(name, "value", str(name)), flat.get_op_scope(op, graph.tensors)))
    return ops


def float_ends(ops: list[tuple[str, str]], lead: int, trail: int) -> list[str]:
    """Scopes of every op before the ``lead``-th convolution and after the last ``trail``: the float regions."""
    convs = [i for i, (name, _) in enumerate(ops) if name in KEEPABLE_OPS]
    if not lead and not trail:
        return []
    if lead + trail >= len(convs):
        return [scope for _, scope in ops]
    lo, hi = (convs[lead] if lead else 0), (convs[len(convs) - trail - 1] if trail else len(ops))
    return [scope for i, (_, scope) in enumerate(ops) if i < lo or i > hi]


def quantize(float_path: Path, out: Path, recipe, calibration: dict | None = None) -> None:
    """ai-edge-quantizer on the float model at ``float_path`` with ``recipe`` (calibrated on ``calibration``)."""
    _, _, quantizer, _ = _quantizer()
    try:
        with quiet_processes():
            q = quantizer.Quantizer(str(float_path), recipe)
            ranges = q.calibrate(calibration, num_threads=max(1, min(8, os.cpu_count() or 1))) if calibration \
                else None
            result = q.quantize(ranges, enable_progress_report=False)
            result.export_model(str(out), overwrite=True)
    except Exception as exc:  # noqa: BLE001  # the quantizer raises ValueError/RuntimeError/KeyError
        raise ExportError(f"ai-edge-quantizer failed: {_reason(exc)}") from exc
    if not out.is_file() or not out.stat().st_size:
        raise ExportError("ai-edge-quantizer wrote no model")


def _calibration(loaded: LoadedModel, opts: ExportOptions, input_name: str) -> tuple[dict, int]:
    """lightexport's calibration batches (the model's preprocessing, the export's batch) as the quantizer's feed."""
    from lightexport.calib import ImageFolder

    source = ImageFolder(opts.calib, calibration_preprocess(loaded, opts))
    fixed = opts.batch > 1  # a .tflite has a fixed batch: a short last batch is dropped
    batches = list(source.batches(opts.batch, opts.calib_size, drop_last=fixed))
    return {"serving_default": [{input_name: b} for b in batches]}, sum(len(b) for b in batches)


def op_names(info: dict) -> Counter:
    """The model's operators by name (``CONV_2D``), from the builtin codes :mod:`tflite_files` reads."""
    try:
        from ai_edge_litert import schema_py_generated as schema

        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    except ImportError:
        names = {}
    counts: Counter = Counter()
    for sub in info["subgraphs"]:
        for code, n in sub["operators"].items():
            counts[names.get(int(code), f"builtin {code}") if code.isdigit() else code] += n
    return counts


def export(source: LoadedModel, opts: ExportOptions) -> ExportResult:
    """Write ``OUT.tflite`` (+ ``OUT.tflite.json``, the provenance) from the fused PyTorch module."""
    backend = opts.backend
    loaded = require_model(source, backend)
    if opts.dynamic:
        raise UsageError("LiteRT export takes a fixed input shape here (drop --dynamic)")
    if opts.precision is Precision.INT8 and isinstance(opts.int8_keep, tuple):
        raise UsageError("LiteRT int8 keeps float regions by count (--int8-keep N or auto): module names do not "
                         "survive the conversion to a .tflite graph")
    opts.require_calibration(loaded.name)
    _litert_torch()
    if opts.precision is not Precision.FP32:
        _quantizer()
    clock = Stopwatch()
    module, reports = prepared_module(loaded, opts)
    module = copy.deepcopy(module) if not reports else module  # .eval() and tracing must not touch the user's model
    example = example_input(loaded, opts)
    notes = [r.summary() for r in reports if r.count]
    meta = provenance(loaded, opts, reports)
    meta["lightexport.outputs"] = json.dumps(loaded.output_names())
    meta["lightexport.input_layout"] = INPUT_LAYOUT
    files = backend.files(opts.output)
    from lightexport.exporter.tflite_files import describe, entry

    with tempfile.TemporaryDirectory(prefix="lightexport-tflite-") as work:
        work = Path(work)
        converted = work / "float.tflite"
        convert(module, example, converted)
        if opts.precision is Precision.FP16:
            final = work / "fp16.tflite"
            quantize(converted, final, _fp16_recipe())
            notes.append("fp16 weights (ai-edge-quantizer FLOAT_CASTING, DEQUANTIZE at load); XNNPACK computes fp32")
            meta["lightexport.fp16"] = json.dumps({"weights": "fp16", "compute": "fp32 (XNNPACK unpacks at load)"})
        elif opts.precision is Precision.INT8:
            inputs, _ = entry(describe(converted))
            calibration, images = _calibration(loaded, opts, inputs[0]["signature_name"])
            final = work / "int8.tflite"
            ends, search, corrected = _int8(module, example, converted, final, calibration, opts)
            notes.append(f"int8 (ai-edge-quantizer static_wi8_ai8: per-channel int8 weights, int8 activations from "
                         f"moving averages of per-batch min/max) on {images} images from {opts.calib}; float32 "
                         "input and output")
            if corrected:
                notes.append(f"bias correction of int8 weight rounding in {corrected} layers")
            if search:
                notes.append("int8 keep auto: calibration cosine by float-kept convs " +
                             ", ".join(f"{k}: {c:.4f}" for k, c in search))
            if any(ends):
                notes.append(f"kept in float: every op before convolution {ends[0]}" +
                             (f" and after the last {ends[1]}" if ends[1] else "") + " of the graph")
            meta["lightexport.int8"] = json.dumps({"weights": "int8 per-channel", "activations": "int8 min/max EMA",
                                                   "kept_float": ["input", "output"], "float_ends": list(ends),
                                                   "auto_search": search, "bias_corrected_layers": corrected})
        else:
            final = converted
        info = describe(final)
        inputs, outputs = entry(info)
        if [t["dtype"] for t in inputs] != ["float32"] * len(inputs) or \
                any(t["dtype"] != "float32" for t in outputs):
            raise ExportError(f"the LiteRT model's inputs/outputs are not float32: "
                              f"{[t['dtype'] for t in inputs]} -> {[t['dtype'] for t in outputs]}")
        shape = tuple(example.shape)
        if inputs[0]["shape"] != shape:
            raise ExportError(f"the LiteRT model takes {inputs[0]['shape']}, not the NCHW {shape} it was exported "
                              "from (its input layout changed)")
        with atomic_outputs(files) as (tmp_model, tmp_json):
            tmp_model.write_bytes(final.read_bytes())
            tmp_json.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    notes.append(f"input {INPUT_LAYOUT} float32 {list(shape)} (PyTorch's layout; one TRANSPOSE to NHWC inside)")
    return ExportResult(format=backend.name, path=files[0], seconds=clock.seconds, precision=opts.precision,
                        files=files, op_histogram=op_names(info), metadata=meta, notes=notes, passes=reports)


def _int8(module, example, converted: Path, final: Path, calibration: dict, opts: ExportOptions
          ) -> tuple[tuple[int, int], list[tuple[int, float]], int]:
    """Quantize into ``final`` with the float regions ``opts.int8_keep`` asks for, each candidate converted from the
    module with the biases of the layers it quantizes corrected for their weight rounding
    (:mod:`lightexport.exporter.torch_bias`; ai-edge-quantizer's weights are symmetric per-channel int8 too).

    Returns the regions (leading, trailing convolutions), for ``auto`` the search, and the corrected layer count.
    """
    import shutil

    import numpy as np
    import torch

    from lightexport.exporter.keep_search import AUTO_ENDS, AUTO_IMAGES, calibration_cosine, search_keep

    ops = graph_ops(converted)
    convs = sum(name in KEEPABLE_OPS for name, _ in ops)
    feeds = next(iter(calibration.values()))
    convert_for = _corrected_conversions(module, example, converted, feeds, convs)
    if opts.int8_keep != "auto":
        if opts.int8_keep > convs:
            raise UsageError(f"--int8-keep {opts.int8_keep}: the model has {convs} convolutions, so from 0 to "
                             f"{convs} can stay float (all of them is not int8)")
        ends = (opts.int8_keep, 0)
        source, corrected = convert_for(ends)
        quantize(source, final, _int8_recipe(float_ends(graph_ops(source), *ends)), calibration)
        return ends, [], corrected
    check = feeds[: max(1, AUTO_IMAGES // opts.batch)]
    with torch.no_grad():
        firsts = [module(torch.from_numpy(next(iter(f.values())))) for f in check]
        reference = [np.concatenate([(out[0] if isinstance(out, (tuple, list)) else out).numpy() for out in firsts])]

    def build(k: int):
        candidate = final.with_name(f"keep{k}.tflite")
        source, corrected = convert_for((k, k))
        quantize(source, candidate, _int8_recipe(float_ends(graph_ops(source), k, k)), calibration)
        return calibration_cosine(reference, [_run(candidate, check)]), (candidate, corrected)

    chosen, results = search_keep((convs - 1) // 2, build, steps=AUTO_ENDS)
    shutil.copyfile(results[chosen][1][0], final)
    return (chosen, chosen), sorted((2 * k, cosine) for k, (cosine, _) in results.items()), results[chosen][1][1]


def _corrected_conversions(module, example, converted: Path, feeds: list[dict], convs: int):
    """``ends -> (float .tflite, layers corrected)``: the module converted with the biases of the layers outside the
    float ``ends`` corrected, one conversion per ``ends`` asked. The graph's convolutions and the module's conv and
    linear layers are matched by order; where their counts differ nothing is corrected (``converted`` is used)."""
    import torch
    from torch import nn

    from lightexport.exporter.torch_bias import correct_biases, input_means

    order = [n for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(order) != convs:
        return lambda ends: (converted, 0)
    means = input_means(module, (torch.from_numpy(next(iter(f.values()))) for f in feeds), order)
    made: dict[tuple[int, int], tuple[Path, int]] = {}

    def convert_for(ends: tuple[int, int]) -> tuple[Path, int]:
        if ends not in made:
            lead, trail = ends
            quantized = order[lead:len(order) - trail] if lead + trail < len(order) else []
            corrected, count = correct_biases(module, {n: means[n] for n in quantized if n in means})
            path = converted.with_name(f"float-{lead}-{trail}.tflite")
            convert(corrected, example, path)
            made[ends] = (path, count)
        return made[ends]

    return convert_for


def _run(path: Path, feeds: list[dict]):
    """The first output of the .tflite at ``path`` over ``feeds`` (LiteRT's interpreter, its default XNNPACK)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    outputs = []
    for feed in feeds:
        result = runner(**feed)
        outputs.append(result[sorted(result)[0]] if len(result) > 1 else next(iter(result.values())))
    return np.concatenate(outputs)


def planned_outputs(opts: ExportOptions) -> list[tuple[str, Path]]:
    files = opts.backend.files(opts.output)
    return [("-o/--output (the .tflite)", files[0]), ("the provenance (.tflite.json, beside -o)", files[1])]


def naive_export(loaded: LoadedModel, example, path: Path) -> Path:
    """What litert-torch's README does: ``litert_torch.convert(model.eval(), (sample,)).export(path)``, unfused."""
    convert(copy.deepcopy(loaded.module), example, Path(path))
    return Path(path)
