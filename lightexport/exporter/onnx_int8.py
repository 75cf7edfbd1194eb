"""fp32 ONNX -> int8 QDQ ONNX with ONNX Runtime's static quantization, in the form each target runs well.

The QDQ form (QuantizeLinear/DequantizeLinear around each quantized op) is what both ONNX
Runtime and TensorRT's explicit-precision path consume, but they want different
activations. Measured on trained MobileNetV2 and EfficientNet-Lite0 (240 decision crops,
300 disjoint calibration crops, AMD EPYC with VNNI, ORT 1.32, 1 thread):

- **CPU (ONNX Runtime): unsigned activations.** With symmetric int8 activations the ReLU6
  clip (0..6) cannot fold into the quantize step, so ORT's optimizer leaves 15 float convs,
  35 Clip and 32 Transpose nodes, and int8 ran 1.19x *slower* than fp32. With uint8
  activations (the U8S8 path of x86 VNNI kernels) every conv fuses into QLinearConv: 1.88x
  faster than fp32 (MobileNetV2), 1.87x (EfficientNet-Lite0), 1 thread, idle machine
  (1.33x / 1.42x before the activation fold below).
- **The activation folds into the conv's output range.** Listing Clip/Relu among the ops to
  quantize lets ONNX Runtime's quantizer drop them when activations are unsigned: the conv's
  uint8 output saturates at the ReLU6 range, so each activation is quantized once, on [0, 6].
  Without them the conv output was quantized on its pre-activation range (-20..15 on a
  MobileNetV2 depthwise layer: steps of 0.14), clipped, then quantized again. Removing that
  double quantization lifted trained MobileNetV2 from 89.2 to 91.7 % agreement on all
  decision crops (logit cosine 0.988 -> 0.996, 5th percentile 0.968 -> 0.993) and
  EfficientNet-Lite0 from 86.2 to 91.7 % (0.983 -> 0.995), with fewer Q/DQ nodes to run.
  With symmetric activations the quantizer keeps the Clip (a signed range cannot stand for it).
- **TensorRT: symmetric activations**, which its explicit quantization requires.
- **Logits stay float.** Quantizing the classifier's output rounds logits to steps of ~0.14,
  so several classes tie at the maximum: top-1 agreement with fp32 fell to 24 % on
  confident crops. The ops producing graph outputs keep a float output.
- **Moving-average ranges** (per-batch min/max averaged over the calibration pass) beat
  plain MinMax, percentile and entropy: MobileNetV2 confident/all agreement 88.0/65.0 ->
  97.4/76.2 %.
- **The first convolutions stay float** (``keep``). Stem, first depthwise and first
  expansion dominate the error of every mobile network tried: keeping the first three
  float lifted MobileNetV2 to 100/86.7 % at no measurable cost in speed (before the fold
  above). With the fold, 0/2/3/12 float convs give 80.4/89.6/91.7/93.8 % on all crops;
  the rest of the error is spread thinly: no single activation tensor, promoted to 16 bits,
  recovers more than 0.0002 of logit cosine.

- **The input is quantized on the pixels' whole range** (:func:`~lightexport.exporter.base.input_range_note`),
  not on the averaged extremes of the moving average, which clip the darkest and brightest pixels: trained
  MobileNetV2 with no layer float, cosine 0.9908 -> 0.9922, agreement 85.0 -> 87.9 %; EfficientNet-Lite0
  0.9849 -> 0.9879.

- **Biases absorb the weights' rounding error** (:mod:`onnx_bias`): each quantized layer's
  bias is shifted by the mean error its int8 weights add over the calibration images
  (MobileNetV2: cosine 0.9960 -> 0.9971, all crops 91.7 -> 92.9 %; Lite0 0.9950 -> 0.9978).

- **Exact GELUs and the classifier stay float** (:func:`float_islands`). Quantized, each GELU's
  Div, Erf, Add and two Muls ran as five ops with requantizations between them; ORT cannot fuse the
  chain in a QDQ graph (each reader of a DequantizeLinear gets its own copy), so the CPU form writes
  each as ORT's own ``com.microsoft.Gelu`` (:func:`lightexport.exporter.onnx_gelu.fuse_gelu_ort`). A
  Gemm producing an output kept a float output but int8 weights, which ORT dequantized on every run
  (FasterNet-T0: 0.38 ms). FasterNet-T0 int8, 1 thread, AMD EPYC (AVX2), interleaved: 8.71 -> 7.66 ms
  (1.14x; 1.18x -> 1.34x its fp32), logit cosine 0.99687 -> 0.99696; trained MobileNetV2 /
  EfficientNet-Lite0 (classifier only) 1.016 / 1.017x, 240-crop agreement 89.2 -> 89.2 % / 92.9 -> 92.1 %
  (two crops), cosine 0.99588 -> 0.99590 / 0.99614 -> 0.99622. A 256-entry lookup table (Cast + Gather)
  in place of DequantizeLinear-Gelu-QuantizeLinear computes the same codes but ran 1.8x slower in ORT.
  The CPU form's classifier has int8 weights again, as ORT's ``MatMulIntegerToFloat`` (uint8 x int8 in
  int32, float output: :mod:`lightexport.exporter.onnx_head`), which reads a quarter of the fp32 weights' bytes:
  FasterNet-T0 8.07 -> 7.78 ms, trained MobileNetV2 6.94 -> 6.69 ms with the same decisions.

Weights are symmetric per-channel int8 in both forms; biases stay float (int32 bias
DequantizeLinear nodes are rejected by TensorRT's parser).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from lightexport.errors import ExportError, UsageError, did_you_mean
from lightexport.exporter.base import input_range_note
from lightexport.exporter.keep_search import AUTO_IMAGES, calibration_cosine, search_word
from lightexport.onnxfile import in_module, module_of
from lightexport.options import DEFAULT_KEEP, SEARCHES, is_search

# Ops TensorRT and ORT both run as int8; everything else stays in float between Q/DQ pairs. Clip and
# Relu are listed so the quantizer can fold them into their producer's output range (see the docstring).
# Split's outputs share its input's scale, so ORT splits the uint8 tensor itself; unlisted, each of
# FasterNet's 13 partial convolutions read its input through DequantizeLinear -> float Split -> two
# QuantizeLinear (FasterNet-T0: 41 -> 15 QuantizeLinear, 27 -> 14 DequantizeLinear after ORT's optimizer).
QUANTIZED_OPS = ("Conv", "Clip", "Relu", "Gemm", "MatMul", "Add", "Mul", "Concat", "Split", "GlobalAveragePool",
                 "AveragePool", "MaxPool")
#: Ops whose leading instances ``keep=N`` keeps in float (the layers that carry the most int8 error).
KEEPABLE_OPS = ("Conv", "ConvTranspose")


@dataclass
class Int8Report:
    """What quantization did: the float-kept nodes and, for a searching keep (``auto``, ``lean``), the search."""

    symmetric_activations: bool
    kept: list[str] = field(default_factory=list)
    search: list[tuple[int, float]] = field(default_factory=list)  # (kept count, calibration cosine)
    searched: str = ""  # the --int8-keep word that searched ("auto", "lean")
    bias_corrected: int = 0  # layers whose bias absorbed their weight-rounding error (onnx_bias)
    reduced_range: bool = False  # 7-bit weights: the CPU's int8 kernels saturate int16 (lightexport.cpu)
    float_outputs: list[str] = field(default_factory=list)  # output Gemm/MatMul with fp32 weights (float_islands)
    int8_outputs: list[str] = field(default_factory=list)  # output Gemm/MatMul as ORT's MatMulIntegerToFloat
    gelus_fused: int = 0  # float GELU chains written as ORT's Gelu (CPU form)
    input_range: tuple[float, float] | None = None  # the quantized model input's range, the preprocessing's whole one

    def metadata(self) -> str:
        """The provenance an int8 artifact records: its activation form and which layers stayed float."""
        import json

        return json.dumps({"activations": "int8 symmetric" if self.symmetric_activations else "uint8",
                           "kept_float": self.kept, "auto_search": self.search,
                           "bias_corrected_layers": self.bias_corrected,
                           "weight_bits": 7 if self.reduced_range else 8,
                           "float_output_layers": self.float_outputs, "int8_output_layers": self.int8_outputs,
                           "gelus_as_ort_gelu": self.gelus_fused,
                           "input_range": list(self.input_range) if self.input_range else None})

    def notes(self, images: int, source: str) -> list[str]:
        form = "symmetric int8 activations (TensorRT)" if self.symmetric_activations else "uint8 activations (CPU)"
        weights = "per-channel int8 weights"
        if self.reduced_range:
            weights += (" in 7 bits ([-64, 64]: this CPU has AVX2 but no VNNI, whose int8 kernels add weight x "
                        "activation pairs in saturating int16)")
        notes = [f"int8 QDQ, {form}, {weights}, moving-average ranges from {images} images of "
                 f"{source}; outputs stay float"]
        if self.input_range:
            notes.append(input_range_note(self.input_range))
        if self.bias_corrected:
            notes.append(f"bias correction of int8 weight rounding in {self.bias_corrected} layers")
        if self.search:
            tried = ", ".join(f"{k}: {c:.4f}" for k, c in self.search)
            notes.append(f"int8 keep {self.searched}: calibration cosine by float-kept convs {tried}")
        if self.kept:
            notes.append(f"kept in float: {', '.join(self.kept)}")
        if self.gelus_fused:
            notes.append(f"{self.gelus_fused} exact GELUs computed in float, each as ONNX Runtime's one Gelu kernel")
        if self.float_outputs:
            notes.append(f"fp32 weights in the output layer{'s' * (len(self.float_outputs) > 1)}: "
                         f"{', '.join(self.float_outputs)}")
        if self.int8_outputs:
            notes.append(f"int8 weights, float output in the output layer{'s' * (len(self.int8_outputs) > 1)} "
                         f"(ONNX Runtime's MatMulIntegerToFloat): {', '.join(self.int8_outputs)}")
        return notes


def resolve_keep(model: onnx.ModelProto, keep: int | str | list[str] | tuple[str, ...]) -> list[str]:
    """Node names to keep in float: the first ``keep`` convs, or the nodes (or module scopes) named."""
    if isinstance(keep, int) and not isinstance(keep, bool):
        convs = [n.name for n in model.graph.node if n.op_type in KEEPABLE_OPS]
        if not 0 <= keep <= len(convs):
            raise UsageError(f"--int8-keep {keep}: the graph has {len(convs)} convolutions, so from 0 to {len(convs)} "
                             "can stay float (all of them is not int8)")
        return convs[:keep]
    names = [keep] if isinstance(keep, str) else list(keep)
    nodes = [n.name for n in model.graph.node]
    chosen = []
    for name in names:
        scope = "/" + name.strip("/").replace(".", "/") if "/" not in name else name
        hits = [node for node in nodes if node == name or scope + "/" in node + "/" or in_module(node, name)]
        if not hits:
            known = [*SEARCHES, *dict.fromkeys(module_of(node) for node in nodes)]
            raise UsageError(f"int8 keep: no node or module {name!r} in the graph{did_you_mean(name, known)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def float_islands(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Nodes int8 leaves float because they run faster so, and no less exactly: the nodes of each exact GELU
    (quantized, its Div, Erf, Add and two Muls ran as five ops with requantizations between them), and each Gemm
    or MatMul producing a graph output (its output stays float anyway, and with int8 weights in the QDQ form ONNX
    Runtime dequantized all of them on every run: FasterNet-T0's classifier 0.38 ms of 8.3). The CPU form then
    quantizes the heads :mod:`onnx_head` rewrites into one int8 kernel, which reads a quarter of the bytes."""
    from lightexport.exporter.onnx_gelu import gelu_node_names

    outputs = {o.name for o in model.graph.output}
    gelus = [name for chain in gelu_node_names(model) for name in chain if name]
    heads = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul") and set(n.output) & outputs and n.name]
    return gelus, heads


def _output_producers(model: onnx.ModelProto) -> list[str]:
    outputs = {o.name for o in model.graph.output}
    return sorted({n.op_type for n in model.graph.node if set(n.output) & outputs} & set(QUANTIZED_OPS))


def quantize_qdq(
    model: onnx.ModelProto,
    reader,
    *,
    symmetric_activations: bool = False,
    keep: int | str | list[str] = DEFAULT_KEEP,
    per_channel: bool = True,
    reduce_range: bool | None = None,
    input_range: tuple[float, float] | None = None,
) -> tuple[onnx.ModelProto, Int8Report]:
    """Calibrate on ``reader`` (an ORT CalibrationDataReader) and return the QDQ model with its report.

    ``keep``: how many leading convs stay float (int), which nodes or module scopes (names),
    or a search: ``"auto"`` (the fewest leading convs whose calibration-set logit cosine reaches
    ``AUTO_TARGET``), ``"lean"`` (the same rule over DEFAULT_KEEP and none; see
    :mod:`lightexport.exporter.keep_search`). ``reduce_range``: 7-bit weights;
    by default exactly where the CPU's int8 kernels saturate (uint8 activations on AVX2 without
    VNNI, :func:`lightexport.cpu.int8_saturates`), never for TensorRT's symmetric form. ``input_range``: the
    values the model's input can take (the preprocessing's :attr:`~lightexport.calib.Preprocess.value_range`), which
    its quantizer then covers instead of the calibration's averaged extremes
    (see :func:`lightexport.exporter.base.input_range_note`).
    """
    from lightexport.cpu import int8_saturates

    report = Int8Report(symmetric_activations, input_range=input_range)
    report.reduced_range = (not symmetric_activations and int8_saturates()) if reduce_range is None else reduce_range
    if is_search(keep):
        report.searched = keep
        quantized, report = _quantize_auto(model, reader, report, symmetric_activations, per_channel)
    else:
        report.kept = resolve_keep(model, keep)
        quantized = _quantize(model, reader, report, report.kept, symmetric_activations, per_channel)
    if not _input_quantized(quantized):
        report.input_range = None  # the first layers stayed float: the input is never quantized
    return quantized, report


def _calibration_batches(reader) -> Iterator[np.ndarray]:
    """The calibration batches, one at a time (a list of 10,000 images was 6 GB of float32)."""
    if hasattr(reader, "rewind"):
        reader.rewind()
    return (next(iter(feed.values())) for feed in iter(reader.get_next, None))


def _quantize(model: onnx.ModelProto, reader, report: Int8Report, exclude: list[str], symmetric: bool,
              per_channel: bool, means: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from lightexport.exporter.onnx_bias import FULL_RANGE, REDUCED_RANGE, correct_weight_rounding
    from lightexport.exporter.onnx_gelu import fuse_gelu_ort
    from lightexport.exporter.onnx_head import fuse_int8_heads, head_candidates

    gelus, heads = float_islands(model)
    # the CPU form quantizes a classifier ORT can run as MatMulIntegerToFloat (onnx_head); others keep fp32 weights
    int8_heads = [] if symmetric else [h for h in heads if h in head_candidates(model)]
    report.float_outputs = [h for h in heads if h not in int8_heads]
    if per_channel and hasattr(reader, "rewind"):  # the rounding it corrects is the per-channel one
        qmax = REDUCED_RANGE if report.reduced_range else FULL_RANGE  # float layers have no rounding to absorb
        model, corrected = correct_weight_rounding(model, _calibration_batches(reader),
                                                   [*exclude, *report.float_outputs], means, qmax)
        report.bias_corrected = len(corrected)

    with tempfile.TemporaryDirectory(prefix="lightexport-int8-") as work:
        source, prepared, quantized = (Path(work) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(model, str(source))
        try:
            # The graph is already simplified; pre-processing only adds the shape information the quantizer needs.
            quant_pre_process(str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
            if hasattr(reader, "rewind"):
                reader.rewind()
            quantize_static(
                prepared,
                quantized,
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                reduce_range=report.reduced_range,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=[*exclude, *gelus, *report.float_outputs],
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={
                    "ActivationSymmetric": symmetric,
                    "WeightSymmetric": True,
                    "QuantizeBias": False,
                    "CalibMovingAverage": True,
                    "OpTypesToExcludeOutputQuantization": _output_producers(model),
                    "TensorQuantOverrides": _input_overrides(model, report.input_range),
                },
            )
        except Exception as exc:
            raise ExportError(f"ONNX Runtime static quantization failed: {str(exc).strip().splitlines()[-1]}") from exc
        result = onnx.load(str(quantized))
    if not symmetric:  # the CPU form: ORT's fused GELU and int8 classifier (TensorRT knows no com.microsoft ops)
        result, report.gelus_fused = fuse_gelu_ort(result)
        result, report.int8_outputs = fuse_int8_heads(result, int8_heads)
    return result


def _input_overrides(model: onnx.ModelProto, value_range: tuple[float, float] | None) -> dict:
    """ORT's TensorQuantOverrides giving each graph input ``value_range`` (nothing without one)."""
    if value_range is None:
        return {}
    low, high = value_range
    return {i.name: [{"rmin": np.float32(low), "rmax": np.float32(high)}] for i in model.graph.input}


def _input_quantized(model: onnx.ModelProto) -> bool:
    inputs = {i.name for i in model.graph.input}
    return any(n.op_type == "QuantizeLinear" and n.input[0] in inputs for n in model.graph.node)


def _run(model: onnx.ModelProto, batches: list[np.ndarray], input_name: str) -> list[np.ndarray]:
    """Every output of ``model`` over ``batches``, each concatenated along the batch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    runs = [session.run(None, {input_name: x}) for x in batches]
    return [np.concatenate([run[k] for run in runs]) for k in range(len(runs[0]))]


def _quantize_auto(model: onnx.ModelProto, reader, report: Int8Report, symmetric: bool,
                   per_channel: bool) -> tuple[onnx.ModelProto, Int8Report]:
    """Keep the fewest leading convs float (of those ``report.searched`` tries) whose int8 model reaches AUTO_TARGET
    cosine on calibration images (:func:`~lightexport.exporter.keep_search.search_word`)."""
    input_name = model.graph.input[0].name
    if not hasattr(reader, "rewind"):
        raise UsageError(f"int8 keep {report.searched!r} needs a calibration reader that can rewind")
    reader.rewind()
    batches = []
    for feed in iter(reader.get_next, None):
        batches.append(feed[input_name])
        if sum(len(b) for b in batches) >= AUTO_IMAGES:
            break
    reference = _run(model, batches, input_name)
    convs = [n.name for n in model.graph.node if n.op_type in KEEPABLE_OPS]
    means: dict[str, np.ndarray] = {}  # bias correction's input means, measured once for every candidate

    def build(count: int) -> tuple[float, tuple[onnx.ModelProto, int]]:
        candidate = _quantize(model, reader, report, convs[:count], symmetric, per_channel, means)
        return calibration_cosine(reference, _run(candidate, batches, input_name)), (candidate, report.bias_corrected)

    chosen, results = search_word(report.searched, len(convs), build)
    report.search = sorted((count, cosine) for count, (cosine, _) in results.items())
    report.kept, (best, report.bias_corrected) = convs[:chosen], results[chosen][1]
    return best, report
