"""fp32 ONNX -> ONNX that computes in fp16, with explicit Casts and sensitive ops kept in fp32.

TensorRT 11 only builds strongly typed networks: an engine computes in exactly the types
the ONNX declares, so "fp16" has to be in the graph before the build. The same file runs
in ONNX Runtime, which makes its parity measurable on a CPU, and TensorRT 10 can build it
strongly typed too. Graph inputs and outputs stay fp32, so callers feed and read the same
arrays as for the fp32 model.

Every node computes in fp16 unless its op is in ``KEEP_FP32``. A float tensor is stored
in the precision of the node that produces it; a consumer that wants the other precision
reads it through one Cast shared by all such consumers. Weights (initializers, Constant
nodes) become fp16 only when every consumer computes in fp16, so an fp32 island never
sees a rounded weight. Weights beyond fp16's range are clamped to +-65504 and weights
too small for fp16 round to zero; both are counted in the report, never silent.

Written here rather than taken from onnxconverter-common (whose default clamps every
weight above 1e4 and which mistypes an initializer shared by a kept and a converted node)
or from onnxruntime.transformers (which appends Casts out of topological order and edits
``sys.path`` on import).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lightexport.artifacts import META_PREFIX
from lightexport.errors import ExportError, InputFileError, UsageError
from lightexport.exporter.base import ExportResult
from lightexport.onnxfile import load_onnx, op_histogram, save_onnx, stamp_metadata

FP16_MAX = float(np.finfo(np.float16).max)  # 65504

#: Ops that compute in fp32 inside an fp16 graph (their inputs are cast up, outputs down). Bounded or
#: piecewise-linear activations (Erf, Tanh, HardSigmoid, HardSwish) have nothing to overflow and stay fp16.
KEEP_FP32: frozenset[str] = frozenset({
    # normalization: sums of squares overflow fp16 and small variances underflow
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization", "RMSNormalization",
    "LpNormalization", "MeanVarianceNormalization", "LRN",
    # exponentials and logarithms: exp overflows fp16 above ~11, softmax and sigmoid saturate early
    "Softmax", "LogSoftmax", "Sigmoid", "Exp", "Log", "Pow", "Softplus", "Mish",
    # long reductions accumulate rounding error; sqrt/reciprocal appear inside decomposed norms
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceProd", "CumSum", "Sqrt", "Reciprocal",
    # coordinates and indices need fp32 resolution (and Resize's scales input must be fp32)
    "Resize", "Upsample", "Range", "RoiAlign", "NonMaxSuppression", "TopK", "GridSample",
    # the output type comes from a dtype attribute, not from the inputs
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "EyeLike", "Bernoulli", "Multinomial",
})
# Ops whose float input only contributes its shape: they accept either precision as it is.
_TYPE_AGNOSTIC = frozenset({"Shape", "Size"})
# Quantized graphs already fix their precision; their scales must stay fp32.
_QUANTIZED = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                        "ConvInteger", "MatMulInteger"})
_FP16, _FP32 = "fp16", "fp32"
_ONNX_TYPE = {_FP16: TensorProto.FLOAT16, _FP32: TensorProto.FLOAT}


@dataclass
class Fp16Report:
    fp16_nodes: int = 0
    fp32_nodes: Counter = field(default_factory=Counter)  # op type -> nodes kept in fp32
    casts: int = 0
    clamped: dict[str, int] = field(default_factory=dict)  # weight -> values clamped to +-65504
    flushed: dict[str, int] = field(default_factory=dict)  # weight -> nonzero values that became 0

    def notes(self) -> list[str]:
        kept = ", ".join(f"{op} {n}" for op, n in self.fp32_nodes.most_common()) or "none"
        notes = [f"fp16 compute: {self.fp16_nodes} nodes in fp16, kept in fp32: {kept}; {self.casts} Casts inserted"]
        if self.clamped:
            notes.append(f"clamped {sum(self.clamped.values())} weight values beyond fp16 range to +-65504 in "
                         f"{_some(self.clamped)}")
        if self.flushed:
            notes.append(f"{sum(self.flushed.values())} nonzero weight values below fp16 resolution became 0 in "
                         f"{_some(self.flushed)}")
        return notes


def _some(counts: dict[str, int], n: int = 3) -> str:
    names = list(counts)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def is_fp16_model(model: onnx.ModelProto) -> bool:
    """Whether the graph already holds fp16 tensors (converting twice would cast fp16 weights as if fp32)."""
    graph = model.graph
    typed = [*graph.input, *graph.output, *graph.value_info]
    if any(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in typed):
        return True
    if any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer):
        return True
    return any(n.op_type == "Cast" and _cast_target(n) == TensorProto.FLOAT16 for n in graph.node)


def _cast_target(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "to"), TensorProto.UNDEFINED)


def _refuse(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise InputFileError(f"not a valid ONNX model (onnx.checker): {str(exc).splitlines()[0]}") from exc
    if is_fp16_model(model):
        raise UsageError("this ONNX already computes in fp16 (it has fp16 tensors or Casts); convert the fp32 model")
    if any(n.op_type in _QUANTIZED for n in model.graph.node):
        raise UsageError("this ONNX is quantized (int8 ops or Q/DQ nodes); fp16 conversion applies to fp32 models")
    for node in model.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(f"fp16 conversion does not handle control flow; node {node.name!r} ({node.op_type}) "
                              "has a subgraph")


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of fp32 tensors, from ONNX type inference; an untyped tensor would make a Cast impossible to place."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # onnx raises InferenceError and plain RuntimeErrors here
        raise ExportError(f"fp16 conversion needs ONNX type inference, which failed: {exc}") from exc
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    untyped = [out for node in model.graph.node for out in node.output if out and not types.get(out)]
    if untyped:
        raise ExportError(f"fp16 conversion cannot type tensor(s) {', '.join(untyped[:3])}: ONNX type inference gave "
                          "none (simplify the graph with onnxsim first)")
    return {name for name, elem in types.items() if elem == TensorProto.FLOAT}


def _role(node: onnx.NodeProto) -> str | None:
    """fp16/fp32 for nodes that compute; "source" for nodes that emit a float from attributes; None: takes any."""
    if node.op_type in _TYPE_AGNOSTIC:
        return None
    if node.op_type == "Cast":
        return "source" if _cast_target(node) == TensorProto.FLOAT else None
    if node.op_type in ("Constant", "ConstantOfShape"):
        return "source"
    if node.domain not in ("", "ai.onnx") or node.op_type in KEEP_FP32:
        return _FP32
    return _FP16


class _Names:
    """Fresh tensor and node names that cannot collide with the graph's own."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.taken = {n.name for n in graph.node} | {t.name for t in graph.initializer} | {v.name for v in graph.input}
        self.taken |= {o for n in graph.node for o in n.output}

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def _to_fp16(values: np.ndarray, name: str, report: Fp16Report) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    over = np.isfinite(values) & (np.abs(values) > FP16_MAX)
    if over.any():
        report.clamped[name] = int(over.sum())
        values = np.where(over, np.clip(values, -FP16_MAX, FP16_MAX), values)
    half = values.astype(np.float16)
    flushed = int(((values != 0) & (half == 0)).sum())
    if flushed:
        report.flushed[name] = flushed
    return half


def _retype_source(node: onnx.NodeProto, report: Fp16Report) -> None:
    """Make a float-emitting node emit fp16: Cast's target, or the tensor a Constant(OfShape) holds."""
    if node.op_type == "Cast":
        for attr in node.attribute:
            if attr.name == "to":
                attr.i = TensorProto.FLOAT16
        return
    value = None
    for attr in list(node.attribute):
        if attr.name == "value":
            value = numpy_helper.to_array(attr.t)
        elif attr.name in ("value_float", "value_floats"):
            value = np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
        else:
            continue
        node.attribute.remove(attr)
    if value is None:  # ConstantOfShape without a value fills with float32 zeros
        value = np.zeros(1, dtype=np.float32)
    half = _to_fp16(value, node.name or node.output[0], report)
    node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(half)))


def convert_to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Fp16Report]:
    """Return a checked copy of ``model`` computing in fp16 with fp32 inputs/outputs, and what changed."""
    _refuse(model)
    floats = _float_tensors(model)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    roles = [_role(node) for node in graph.node]

    wants: dict[str, list[str]] = defaultdict(list)  # tensor -> precisions its consumers compute in
    for node, role in zip(graph.node, roles):
        for name in node.input:
            if name in floats and role in (_FP16, _FP32):
                wants[name].append(role)
    storage = {v.name: _FP32 for v in graph.input if v.name not in initializers}

    def shared(name: str) -> str:  # weights and source outputs: fp16 only when every consumer is fp16
        ok = wants[name] and all(w == _FP16 for w in wants[name]) and name not in outputs
        return _FP16 if ok else _FP32

    for node, role in zip(graph.node, roles):
        for out in node.output:
            if out in floats:
                storage[out] = shared(out) if role in ("source", None) else role
    storage.update({name: shared(name) for name in initializers if name in floats})

    report = Fp16Report()
    names = _Names(graph)
    renamed = {o: names.fresh(f"{o}_fp16") for o in outputs if storage.get(o) == _FP16}
    casts = {(o, _FP32): o for o in renamed}  # the graph output itself becomes the fp32 copy

    def current(name: str) -> str:
        return renamed.get(name, name)

    new_nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: str) -> str:
        if (name, to) not in casts:
            out = names.fresh(f"{name}_{to}")
            new_nodes.append(helper.make_node("Cast", [current(name)], [out], name=out, to=_ONNX_TYPE[to]))
            report.casts += 1
            casts[(name, to)] = out
        return casts[(name, to)]

    for original, role in zip(graph.node, roles):
        node = onnx.NodeProto()
        node.CopyFrom(original)
        for i, name in enumerate(original.input):
            if name in floats and role in (_FP16, _FP32) and storage[name] != role:
                node.input[i] = cast(name, role)
            elif name:
                node.input[i] = current(name)
        node.output[:] = [current(o) for o in original.output]
        if role == "source" and any(storage.get(o) == _FP16 for o in original.output):
            _retype_source(node, report)
        if role == _FP32:
            report.fp32_nodes[node.op_type] += 1
        elif role == _FP16:
            report.fp16_nodes += 1
        new_nodes.append(node)
        for out in original.output:
            if out in renamed:
                new_nodes.append(helper.make_node("Cast", [renamed[out]], [out], name=renamed[out] + "_to_fp32",
                                                  to=TensorProto.FLOAT))
                report.casts += 1

    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    del converted.graph.node[:]
    converted.graph.node.extend(new_nodes)
    del converted.graph.value_info[:]  # stale fp32 types would contradict the new ones; consumers re-infer
    for init in converted.graph.initializer:
        if storage.get(init.name) == _FP16:
            init.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(init), init.name, report), init.name))
    stamp_metadata(converted, {META_PREFIX + "precision": "fp16"})
    try:
        onnx.checker.check_model(converted, full_check=True)
    except onnx.checker.ValidationError as exc:
        reason = str(exc).splitlines()[0]
        raise ExportError(f"fp16 conversion produced an invalid graph (a lightexport bug): {reason}") from exc
    return converted, report


def export_onnx_fp16(source: str | Path, output: str | Path | None = None) -> ExportResult:
    """Convert an fp32 ONNX file to fp16 compute and write it atomically (default: ``NAME_fp16.onnx`` beside it)."""
    start = time.perf_counter()
    source = Path(source)
    converted, report = convert_to_fp16(load_onnx(source))
    output = Path(output) if output else source.with_name(f"{source.stem}_fp16.onnx")
    save_onnx(converted, output)
    return ExportResult(format="onnx", path=output, seconds=time.perf_counter() - start, precision="fp16",
                        files=[output], op_histogram=op_histogram(converted),
                        metadata={p.key: p.value for p in converted.metadata_props}, notes=report.notes())
