"""MNN int8 from lightexport's own calibration: per-layer quantization parameters for MNN's converter.

MNN's converter takes a compression-parameters file (``--compressionParamsFile``, the
``MNN.Compression.Pipeline`` message of its ``MNN_compression.proto``, read as JSON): for each
convolution, named by its output tensor, the input and output activations' scale and zero point and the
weights' per-channel scales. It quantizes exactly those convolutions (``FullQuantAndCoding``) and leaves
every other op float, converting between int8 and float where they meet. This is the file MNN's own
quantization-aware training tools write; here lightexport writes it from the ranges it measures itself:

- activations: asymmetric int8 per tensor over the mean of per-image extremes on the calibration
  images (the rule ONNX Runtime's and NNCF's int8 use here; below :data:`MEAN_RANGE_IMAGES` images the
  global min/max), measured with ONNX Runtime on the fused fp32 graph;
- weights: symmetric per output channel, ``max |w| / 127``, the rounding the bias correction emulates;
- the first ``--int8-keep`` convolutions stay float, as in ONNX Runtime's and OpenVINO's int8 (5 by default here).

Measured on trained MobileNetV2 / EfficientNet-Lite0 (240 decision crops, 300 calibration crops, 1 thread,
AMD EPYC), keeping 3 convolutions float: agreement with PyTorch on all crops 91.2 / 95.0 %, on confident ones
100 / 100 %, logit cosine 0.9970 / 0.9982 (keeping 5, MNN's default: 96.7 / 94.6 %, 0.9978 / 0.9985), where
``mnnquant`` (EMA ranges, every convolution int8, biases corrected) gave 87.5 / 89.2 %, 97.9 / 100 %,
0.9931 / 0.9934, in 290 s of export instead of 12 (MobileNetV2, same machine). Quantizing
every convolution with these ranges (keep 0) gave 90.0 / 91.2 %, cosine 0.9933 / 0.9941;
global min/max ranges 81.7 % (MobileNetV2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

#: from this many calibration images on, ranges average the per-image extremes (as OpenVINO's int8 does here)
MEAN_RANGE_IMAGES = 32
#: single-input ops MNN's converter folds into the convolution before them (its output then names the conv)
FOLDED_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "PRelu"})
#: how MNN's converter names a layout conversion it inserts before a tensor's reader (NCHW -> NC4HW4)
CONVERSION_SUFFIX = "___tr"
WEIGHT_STEPS = 127


@dataclass
class QuantPlan:
    """What MNN's converter is asked to quantize, and what stays float and why."""

    params: dict
    quantized: list[str] = field(default_factory=list)  # ONNX Conv node names
    kept: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # MNN convolutions with no ONNX Conv found: left float
    rule: str = ""
    input_range: tuple[float, float] | None = None  # the quantized model input's range: the preprocessing's whole one


def mnn_convolutions(float_mnn: Path) -> list[tuple[str, str]]:
    """(output tensor, input tensor) of every convolution in a converted float MNN model."""
    import MNN.expr as expr

    tensors = expr.load_as_dict(str(float_mnn))
    return [(name, var.inputs[0].name) for name, var in tensors.items()
            if var.op_type in ("Convolution", "ConvolutionDepthwise") and var.inputs]


def _onnx_conv(producer: dict[str, onnx.NodeProto], tensor: str) -> onnx.NodeProto | None:
    """The ONNX Conv whose output ``tensor`` is, directly or through the activations MNN folds into it."""
    node = producer.get(tensor)
    while node is not None and node.op_type in FOLDED_ACTIVATIONS:
        node = producer.get(node.input[0])
    return node if node is not None and node.op_type == "Conv" else None


def activation_ranges(model: onnx.ModelProto, tensors: Sequence[str], batches: Sequence[np.ndarray]
                      ) -> tuple[dict[str, tuple[float, float]], str]:
    """Each tensor's range over ``batches``, run in ONNX Runtime on the float graph, and the rule used."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph_input = model.graph.input[0].name
    present = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in present and name != graph_input:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every named tensor computed
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    lows: dict[str, list[float]] = {t: [] for t in tensors}
    highs: dict[str, list[float]] = {t: [] for t in tensors}
    for batch in batches:
        values = dict(zip(names, session.run(None, {graph_input: batch})))
        values[graph_input] = batch
        for name in tensors:
            for image in values[name]:  # per image, so a batch of 2 averages like two of 1
                lows[name].append(float(image.min()))
                highs[name].append(float(image.max()))
    images = len(next(iter(lows.values()), []))
    mean = images >= MEAN_RANGE_IMAGES
    pick = (np.mean, np.mean) if mean else (np.min, np.max)
    ranges = {t: (float(pick[0](lows[t])), float(pick[1](highs[t]))) for t in tensors}
    return ranges, "mean of per-image extremes" if mean else "global min/max"


def _activation(name: str, low: float, high: float) -> dict:
    """Asymmetric int8: zero exactly representable, the range spread over 255 steps."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / 255.0, 1e-12)
    zero = int(np.clip(round(-128 - low / scale), -128, 127))
    return {"name": name, "bits": 8, "scales": [scale], "zeroPoint": zero, "clampMin": -128, "clampMax": 127}


def _weights(name: str, weight: np.ndarray) -> dict:
    scales = np.abs(weight.astype(np.float64)).reshape(weight.shape[0], -1).max(axis=1) / WEIGHT_STEPS
    scales[scales == 0] = 1.0
    return {"name": name, "bits": 8, "scales": scales.tolist(), "clampMin": -WEIGHT_STEPS, "clampMax": WEIGHT_STEPS}


def plan(model: onnx.ModelProto, convolutions: list[tuple[str, str]], batches: Sequence[np.ndarray],
         kept: Sequence[str], input_range: tuple[float, float] | None = None) -> QuantPlan:
    """The compression parameters quantizing every MNN convolution but those of the ``kept`` ONNX nodes.

    ``input_range``: the values the model input can take, which its quantizer covers instead of the averaged
    extremes that clip the darkest and brightest pixels (:func:`lightexport.exporter.base.input_range_note`).
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    known = set(producer) | {model.graph.input[0].name}
    weights = {i.name: i for i in model.graph.initializer}
    result = QuantPlan(params={}, kept=list(kept))
    chosen = []
    for output, source in convolutions:
        conv = _onnx_conv(producer, output)
        source = source.split(CONVERSION_SUFFIX)[0]
        if conv is None or source not in known or conv.input[1] not in weights:
            result.unmatched.append(output)
        elif conv.name not in kept:
            chosen.append((output, source, conv))
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    chosen.sort(key=lambda c: order[c[2].name])
    ranges, result.rule = activation_ranges(model, sorted({t for o, s, _ in chosen for t in (o, s)}), batches)
    graph_input = model.graph.input[0].name
    if input_range is not None and graph_input in ranges:
        ranges[graph_input] = result.input_range = input_range
    layers = []
    for output, source, conv in chosen:
        weight = numpy_helper.to_array(weights[conv.input[1]])
        layers.append({"input": [_activation(source, *ranges[source])],
                       "output": [_activation(output, *ranges[output])], "weight": [_weights(conv.input[1], weight)]})
        result.quantized.append(conv.name)
    result.params = {"version": "0.0.0", "algo": [{"type": "QUANTIZE", "quantParams": {"layer": layers}}]}
    return result
