"""Check an ONNX file against TensorRT's ONNX parser, and plan the build, without TensorRT.

A TensorRT build needs a GPU and minutes; the reasons it fails are mostly visible in the
ONNX itself. This module finds them on any machine, names the node of each, turns
``--min/--opt/--max-shape`` options into a validated optimization profile, and prints
the ``trtexec`` command that builds the same engine where only trtexec exists (Jetson).

The support table is data, taken from onnx-tensorrt's ``docs/operators.md`` for TensorRT
10.15 (opset 9-24) and its importer (``onnxOpImporters.cpp``): op types, the attribute
values the importer accepts, inputs that must be build-time constants, and the data types
``convertDtype`` maps. TensorRT 9+ imports INT64 natively (onnx-tensorrt changelog: "The
ONNX parser no longer automatically casts INT64 to INT32"), so int64 weights are fine;
DOUBLE is what still gets cast down (to FLOAT, clamped to +-FLT_MAX), so that is checked.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from lightexport.errors import ExportError, UsageError
from lightexport.precision import Precision

OPSET_RANGE = (9, 24)  # onnx-tensorrt docs/operators.md, TensorRT 10.15
PARSER_DOC = "onnx-tensorrt operators.md (TensorRT 10.15)"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

SUPPORTED_OPS: frozenset[str] = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization BlackmanWindow Cast
CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu
Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow
HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

UNSUPPORTED_OPS: frozenset[str] = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())

# ONNX element types the importer's convertDtype maps (DOUBLE becomes FLOAT); anything else cannot be parsed.
SUPPORTED_DTYPES = frozenset({
    TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8,
    TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT8E4M3FN,
    TensorProto.INT4, TensorProto.FLOAT4E2M1,
})
FLOAT_INPUTS = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16})
FLT_MAX = float(np.finfo(np.float32).max)

Shape = tuple[int, ...]


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimization-profile shapes; TensorRT tunes for ``opt`` and accepts min..max."""

    min: Shape
    opt: Shape
    max: Shape

    def spec(self, which: str) -> str:
        return "x".join(str(d) for d in getattr(self, which))


Profile = dict[str, ShapeRange]


def parse_shapes(spec: str, option: str = "--opt-shape") -> dict[str, Shape]:
    """Parse trtexec's shape syntax ``name:1x3x224x224[,name2:...]``.

    Like trtexec, a name may contain ``:`` (the dims follow the last one) and may be wrapped
    in single quotes.
    """
    shapes: dict[str, Shape] = {}
    for entry in (e.strip() for e in spec.split(",")):
        name, sep, dims = entry.rpartition(":")
        name = name.replace("'", "")
        try:
            shape = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise UsageError(f"{option} {entry!r}: expected NAME:DIMS with positive dims, e.g. input:1x3x224x224")
        if name in shapes:
            raise UsageError(f"{option} names input {name!r} twice")
        shapes[name] = shape
    return shapes


def make_profile(
    min_shapes: str | Mapping[str, Shape] | None = None,
    opt_shapes: str | Mapping[str, Shape] | None = None,
    max_shapes: str | Mapping[str, Shape] | None = None,
) -> Profile | None:
    """Combine shape options the way trtexec does: only ``opt`` (min = max = opt), or all three for every input."""
    given = {"min": min_shapes, "opt": opt_shapes, "max": max_shapes}
    if all(v is None for v in given.values()):
        return None
    parsed = {k: parse_shapes(v, f"--{k}-shape") if isinstance(v, str) else dict(v or {}) for k, v in given.items()}
    if min_shapes is None and max_shapes is None:
        return {name: ShapeRange(s, s, s) for name, s in parsed["opt"].items()}
    if any(v is None for v in given.values()):
        raise UsageError("give only --opt-shape, or all three of --min-shape, --opt-shape and --max-shape")
    names = set(parsed["min"]) | set(parsed["opt"]) | set(parsed["max"])
    uneven = sorted(n for n in names if not all(n in parsed[k] for k in given))
    if uneven:
        raise UsageError(f"input(s) {', '.join(uneven)} need a shape in each of --min-shape, --opt-shape, --max-shape")
    profile = {name: ShapeRange(parsed["min"][name], parsed["opt"][name], parsed["max"][name])
               for name in parsed["opt"]}
    for name, shapes in profile.items():
        if not len(shapes.min) == len(shapes.opt) == len(shapes.max):
            raise UsageError(f"input {name}: --min-shape, --opt-shape and --max-shape must have the same rank")
        if not all(lo <= opt <= hi for lo, opt, hi in zip(shapes.min, shapes.opt, shapes.max)):
            raise UsageError(f"input {name}: each dimension needs min <= opt <= max, got min "
                             f"{'x'.join(map(str, shapes.min))}, opt {'x'.join(map(str, shapes.opt))}, max "
                             f"{'x'.join(map(str, shapes.max))}")
    return profile


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    severity: str  # "blocker": the parser or builder will fail; "warning": it builds, but read this
    node: str  # node name (or input/initializer name for graph-level findings)
    op: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.node!r} ({self.op})" if self.op else repr(self.node)
        return f"{where}: {self.reason}"


@dataclass
class PreflightReport:
    source: str
    opset: int
    findings: list[Finding] = field(default_factory=list)
    profile: Profile = field(default_factory=dict)  # validated shapes for every dynamic input

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "blocker"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.blockers

    def lines(self) -> list[str]:
        head = (f"TensorRT preflight of {self.source}: {len(self.blockers)} blocker(s), {len(self.warnings)} "
                f"warning(s), opset {self.opset}")
        return [head, *(f"  {f.severity.upper()} {f}" for f in self.blockers + self.warnings)]

    def to_dict(self) -> dict:
        return {"source": self.source, "opset": self.opset, "ok": self.ok,
                "findings": [asdict(f) for f in self.findings],
                "profile": {name: asdict(r) for name, r in self.profile.items()}}

    def raise_for_blockers(self) -> None:
        if self.blockers:
            raise PreflightError(self)


class PreflightError(ExportError):
    """The ONNX cannot become a TensorRT engine as it is; ``report`` lists every reason, by node."""

    def __init__(self, report: PreflightReport) -> None:
        self.report = report
        listed = "; ".join(str(f) for f in report.blockers)
        super().__init__(f"{report.source} cannot be built by TensorRT ({len(report.blockers)} blocker(s)): {listed}")


# --------------------------------------------------------------------------- per-op rules

Check = Callable[[onnx.NodeProto, "_Graph"], "str | None"]


class _Graph:
    """What the rules look up: the constant value behind a tensor name (initializers, Constant nodes)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.constants: dict[str, onnx.TensorProto] = {t.name: t for t in model.graph.initializer}
        for node in _walk(model.graph):
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = value

    def value(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _allowed(name: str, values: frozenset, default: object) -> Check:
    def check(node: onnx.NodeProto, graph: _Graph) -> str | None:
        value = _attr(node, name, default)
        if value not in values:
            return f"{name}={value!r} is unsupported (supported: {', '.join(map(repr, sorted(values, key=str)))})"
        return None

    return check


def _all_ones(name: str) -> Check:
    def check(node: onnx.NodeProto, graph: _Graph) -> str | None:
        value = _attr(node, name, [])
        return None if all(v == 1 for v in value) else f"{name}={list(value)} is unsupported (must be all ones)"

    return check


def _forbidden(*names: str) -> Check:
    def check(node: onnx.NodeProto, graph: _Graph) -> str | None:
        found = [a.name for a in node.attribute if a.name in names]
        return f"attribute {found[0]} is unsupported" if found else None

    return check


def _pool_2d_3d(node: onnx.NodeProto, graph: _Graph) -> str | None:
    rank = len(_attr(node, "kernel_shape", []))
    return None if rank in (2, 3) else f"{rank}D pooling is unsupported (2D or 3D only)"


def _constant_input(index: int, what: str) -> Check:
    def check(node: onnx.NodeProto, graph: _Graph) -> str | None:
        if len(node.input) > index and node.input[index] and node.input[index] not in graph.constants:
            return f"input {what} must be an initializer or Constant (a build-time constant)"
        return None

    return check


def _outputs_unused(first: int, what: str) -> Check:
    def check(node: onnx.NodeProto, graph: _Graph) -> str | None:
        return f"{what} is unsupported" if any(node.output[first:]) else None

    return check


def _symmetric_int8(node: onnx.NodeProto, graph: _Graph) -> str | None:
    """TensorRT quantizes symmetrically to INT8: a zero point must be a constant of zeros, not UINT8."""
    if node.op_type == "DequantizeLinear" and node.input[0] in graph.constants:
        dtype = graph.constants[node.input[0]].data_type
        if dtype not in (TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1):
            return (f"dequantizes a constant of type {TensorProto.DataType.Name(dtype)}; TensorRT dequantizes INT8, "
                    "FP8, INT4 and FP4 only (an INT32 bias comes from ONNX Runtime's QuantizeBias: set it False)")
    if len(node.input) < 3 or not node.input[2]:
        return None
    zero_point = graph.constants.get(node.input[2])
    if zero_point is None:
        return "zero point must be a constant"
    if zero_point.data_type == TensorProto.UINT8:
        return "UINT8 zero point: TensorRT quantizes to INT8 only (quantize with QuantType.QInt8, symmetric)"
    if np.any(numpy_helper.to_array(zero_point).astype(np.float64) != 0):
        return "nonzero zero point: TensorRT supports symmetric quantization only (ActivationSymmetric=True)"
    return None


def _dropout_inference(node: onnx.NodeProto, graph: _Graph) -> str | None:
    if len(node.input) < 3 or not node.input[2]:
        return None
    training = graph.value(node.input[2])
    return None if training is not None and not training.any() else "training_mode must be a constant False"


def _topk_k(node: onnx.NodeProto, graph: _Graph) -> str | None:
    k = graph.value(node.input[1]) if len(node.input) > 1 else None
    return None if k is None or int(k.max(initial=0)) < 3840 else f"K={int(k.max())} must be less than 3840"


_REDUCE_AXES = _constant_input(1, "axes")
CHECKS: dict[str, tuple[Check, ...]] = {
    "AveragePool": (_pool_2d_3d, _all_ones("dilations")),
    "MaxPool": (_pool_2d_3d, _all_ones("dilations"), _outputs_unused(1, "the Indices output")),
    "LpPool": (_all_ones("dilations"),),
    "Resize": (
        _allowed("mode", frozenset({"nearest", "linear"}), "nearest"),
        _allowed("coordinate_transformation_mode", frozenset({"half_pixel", "pytorch_half_pixel",
                                                              "tf_half_pixel_for_nn", "asymmetric", "align_corners"}),
                 "half_pixel"),
        _allowed("keep_aspect_ratio_policy", frozenset({"stretch"}), "stretch"),
        _allowed("antialias", frozenset({0}), 0),
    ),
    "QuantizeLinear": (_symmetric_int8,),
    "DequantizeLinear": (_symmetric_int8,),
    "Dropout": (_dropout_inference,),
    "CumSum": (_constant_input(1, "axis"),),
    "TopK": (_allowed("sorted", frozenset({1}), 1), _topk_k),
    "ScatterND": (_allowed("reduction", frozenset({"none"}), "none"),),
    "LayerNormalization": (_outputs_unused(1, "the Mean/InvStdDev outputs"),),
    "LSTM": (_allowed("input_forget", frozenset({0}), 0), _allowed("layout", frozenset({0}), 0)),
    "Constant": (_forbidden("sparse_value", "value_string", "value_strings"),),
    "OneHot": (_constant_input(1, "depth"),),
    **{op: (_REDUCE_AXES,) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                      "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
}


# --------------------------------------------------------------------------- the checks


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those inside If/Loop/Scan bodies (the parser imports those too)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from _walk(sub)


def _label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"<unnamed node #{index}>"


def _check_opset(model: onnx.ModelProto) -> tuple[int, list[Finding]]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    low, high = OPSET_RANGE
    if opset < low:
        return opset, [Finding("blocker", "(graph)", "", f"opset {opset} is below {low}, the oldest the parser "
                               f"supports ({PARSER_DOC}); re-export with --opset 17")]
    if opset > high:
        return opset, [Finding("warning", "(graph)", "", f"opset {opset} is newer than {high}, the newest in "
                               f"{PARSER_DOC}; an older TensorRT may not parse it")]
    return opset, []


def _check_nodes(model: onnx.ModelProto, graph: _Graph) -> Iterator[Finding]:
    for index, node in enumerate(_walk(model.graph)):
        label = _label(node, index)
        if node.domain not in ("", "ai.onnx"):
            yield Finding("blocker", label, node.op_type, f"custom domain {node.domain!r}: needs a TensorRT plugin "
                          f"registered as {node.op_type!r}")
        elif node.op_type in UNSUPPORTED_OPS:
            yield Finding("blocker", label, node.op_type, f"op type not supported by TensorRT's ONNX parser "
                          f"({PARSER_DOC})")
        elif node.op_type not in SUPPORTED_OPS:
            yield Finding("blocker", label, node.op_type, f"op type not in the parser's support matrix ({PARSER_DOC})")
        for check in CHECKS.get(node.op_type, ()):
            reason = check(node, graph)
            if reason:
                yield Finding("blocker", label, node.op_type, reason)


def _consumers(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """First consumer (name, op type) of each tensor, so weight findings can name a node."""
    first: dict[str, tuple[str, str]] = {}
    for index, node in enumerate(_walk(model.graph)):
        for name in node.input:
            first.setdefault(name, (_label(node, index), node.op_type))
    return first


def _check_weights(model: onnx.ModelProto, graph: _Graph) -> Iterator[Finding]:
    consumers = _consumers(model)
    for name, tensor in graph.constants.items():
        node, op = consumers.get(name, (name, "initializer"))
        dtype = TensorProto.DataType.Name(tensor.data_type)
        if tensor.data_type not in SUPPORTED_DTYPES:
            yield Finding("blocker", node, op, f"weight {name!r} is {dtype}, a type TensorRT cannot import")
        elif tensor.data_type == TensorProto.DOUBLE:
            values = numpy_helper.to_array(tensor)
            if np.any(np.isfinite(values) & (np.abs(values) > FLT_MAX)):
                yield Finding("blocker", node, op, f"DOUBLE weight {name!r} holds values beyond float32 range; "
                              "TensorRT casts DOUBLE to FLOAT and would clamp them to +-FLT_MAX")
            else:
                yield Finding("warning", node, op, f"DOUBLE weight {name!r} is cast to FLOAT by TensorRT")


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _check_io(model: onnx.ModelProto, graph: _Graph) -> Iterator[Finding]:
    inputs = [("input", v) for v in model.graph.input if v.name not in graph.constants]
    for kind, value in [*inputs, *(("output", v) for v in model.graph.output)]:
        elem = value.type.tensor_type.elem_type
        name = TensorProto.DataType.Name(elem)
        if elem not in SUPPORTED_DTYPES:
            yield Finding("blocker", value.name, kind, f"{name} {kind}: TensorRT cannot bind this type")
        elif elem == TensorProto.DOUBLE:
            yield Finding("warning", value.name, kind, f"DOUBLE {kind}: TensorRT binds it as FLOAT (float32)")
        elif kind == "input" and elem not in FLOAT_INPUTS:
            yield Finding("warning", value.name, kind, f"{name} input: lightexport's parity and bench feed float "
                          "images, so they cannot drive this engine")


def _check_profile(model: onnx.ModelProto, graph: _Graph, profile: Profile, report: PreflightReport) -> None:
    inputs = {v.name: _dims(v) for v in model.graph.input if v.name not in graph.constants}
    for value in model.graph.input:
        if value.name in inputs and not value.type.tensor_type.HasField("shape"):
            report.findings.append(Finding("blocker", value.name, "input", "no shape (unknown rank); TensorRT needs "
                                           "the rank of every input"))
            del inputs[value.name]
    for name in profile.keys() - inputs.keys():
        report.findings.append(Finding("blocker", name, "input", f"the profile names {name!r}, which is not an input "
                                       f"of this ONNX (inputs: {', '.join(inputs)})"))
    for name, dims in inputs.items():
        dynamic = [f"{d}@{i}" for i, d in enumerate(dims) if not isinstance(d, int)]
        if name not in profile:
            if dynamic:
                report.findings.append(Finding("blocker", name, "input", f"dynamic dims {', '.join(dynamic)} have no "
                                               f"optimization profile: pass --min-shape/--opt-shape/--max-shape "
                                               f"{name}:..."))
            continue
        problem = _profile_problem(dims, profile[name])
        if problem:
            report.findings.append(Finding("blocker", name, "input", problem))
        elif dynamic:
            report.profile[name] = profile[name]


def _profile_problem(dims: list[int | str], shapes: ShapeRange) -> str | None:
    for which in ("min", "opt", "max"):
        shape = getattr(shapes, which)
        if len(shape) != len(dims):
            return f"{which} shape {shape} has rank {len(shape)}, the input has rank {len(dims)} {dims}"
        fixed = [i for i, d in enumerate(dims) if isinstance(d, int) and shape[i] != d]
        if fixed:
            return f"{which} shape {shape} changes static dim(s) {fixed} of {dims}"
    for i, (lo, mid, hi) in enumerate(zip(shapes.min, shapes.opt, shapes.max)):
        if not lo <= mid <= hi:
            return f"dim {i}: needs min <= opt <= max, got {lo}, {mid}, {hi}"
    return None


def _check_precision(model: onnx.ModelProto, precision: Precision) -> Iterator[Finding]:
    from lightexport.exporter.onnx_fp16 import is_fp16_model

    quantized = any(node.op_type in QDQ_OPS for node in _walk(model.graph))
    if precision is Precision.INT8 and not quantized:
        yield Finding("blocker", "(graph)", "", "int8 needs explicit quantization (QuantizeLinear/DequantizeLinear "
                      "nodes): build from the QDQ ONNX of `lightexport onnx MODEL --int8 --calib DIR`, or pass --calib "
                      "to `lightexport trt`")
    elif precision is not Precision.INT8 and quantized:
        yield Finding("blocker", "(graph)", "", f"this ONNX is quantized (Q/DQ nodes) but precision is {precision}: "
                      "build it with --int8")
    elif precision is Precision.FP32 and is_fp16_model(model):
        yield Finding("warning", "(graph)", "", "this ONNX computes in fp16, and so will the engine: build it with "
                      "--fp16 so that parity judges it as fp16")


def preflight(
    model: onnx.ModelProto | str | Path,
    profile: Profile | None = None,
    *,
    precision: Precision | str = Precision.FP32,
    source: str | None = None,
) -> PreflightReport:
    """Every reason TensorRT would refuse ``model``, by node, plus the validated profile for its dynamic inputs."""
    if not isinstance(model, onnx.ModelProto):
        from lightexport.onnxfile import load_onnx

        source = source or str(model)
        model = load_onnx(model)
    opset, findings = _check_opset(model)
    report = PreflightReport(source or model.graph.name or "model", opset, findings)
    graph = _Graph(model)
    report.findings += [*_check_nodes(model, graph), *_check_weights(model, graph), *_check_io(model, graph),
                        *_check_precision(model, Precision.parse(precision))]
    _check_profile(model, graph, profile or {}, report)
    return report


# --------------------------------------------------------------------------- trtexec


def trtexec_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: Precision | str = Precision.FP32,
    profile: Profile | None = None,
    workspace_gib: float | None = None,
    timing_cache: str | Path | None = None,
    strongly_typed: bool = True,
) -> str:
    """The trtexec line that builds the same engine as ``lightexport trt`` (shell-quoted).

    Strongly typed (``--stronglyTyped``: required by TensorRT 11, accepted by 10.x) the ONNX
    carries the precision: an fp16-converted or a QDQ file. Weakly typed (TensorRT 10.x
    flags) the same fp32 or QDQ file gets ``--fp16``/``--int8``. fp32 turns TF32 off so the
    engine really computes in fp32, as ``lightexport trt`` does.
    """
    precision = Precision.parse(precision)
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if strongly_typed:
        args.append("--stronglyTyped")
    elif precision is not Precision.FP32:
        args.append(f"--{precision.value}")
    if precision is Precision.FP32:
        args.append("--noTF32")
    for which, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")) if profile else ():
        args.append(f"{flag}=" + ",".join(f"{name}:{r.spec(which)}" for name, r in profile.items()))
    if workspace_gib:
        args.append(f"--memPoolSize=workspace:{round(workspace_gib * 1024)}M")
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    args.append("--skipInference")
    return shlex.join(args)
