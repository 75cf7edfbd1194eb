"""Exact GELU and erf rebuilt from elementwise ops, for a runtime whose own exact kernels are scalar (MNN);
and the same GELU chains found for int8 (:func:`gelu_node_names`: they stay float) and written as ONNX Runtime's
one fused kernel (:func:`fuse_gelu_ort`).

MNN 3.6.1's CPU backend has two GELU kernels: the tanh approximation (vectorized, 4.7e-4 off at
x = 2.7, which put FasterNet-T0's fp32 logits 1.04e-4 of their range from PyTorch's, over the fp32
limit) and the exact one (``--useGeluApproximation 0``), which calls erf element by element; an
``Erf`` op left unfused runs the same scalar loop. FasterNet-T0 at 224 px ran 2.2x slower with the
exact kernel than with the tanh one, most of its time in 14 GELUs.

The rewrite computes the same function with ops every runtime vectorizes (Abs, Mul, Add,
Reciprocal, Exp, Relu, Sub), from Abramowitz & Stegun 7.1.26,
``erfc(z) = P(t) exp(-z^2)``, ``t = 1 / (1 + p z)`` for ``z >= 0``, ``|error| <= 1.5e-7``; computed in float32,
erf lands within 4e-7 of Python's ``math.erf`` and GELU within 3e-7 (tests/exporter/test_onnx_gelu.py), a few
float32 steps at those values. A GELU needs no sign: ``x Phi(x) = relu(x) - |x|/2 erfc(|x|/sqrt 2)`` for every x,
20 ops; any other ``Erf`` becomes ``sign(z) (1 - erfc(|z|))``, 19 ops. Measured on FasterNet-T0
(224 px, MNN fp32, 1 thread, AMD EPYC, interleaved): exact kernel 26.7 ms, rewritten GELU 14.9 ms, tanh
kernel 12.5 ms; every Erf rewritten alone instead of whole GELUs: 1.5x the GELU rewrite's time, still 1.6x
faster than the scalar loop. Error against the erf graph in ONNX Runtime: 3.8e-7 of the logits' range
(tanh kernel: 7.5e-5). Infinite inputs give NaN where GELU gives +inf (|x| * 0): finite networks only.

Matched: ``Erf`` of ``x / sqrt 2`` (``Div`` or ``Mul`` by ``1/sqrt 2``), ``+ 1``, times ``x`` and ``0.5`` in
any of the orders PyTorch's exporters and hand-written models produce; ``Gelu`` (opset 20) with
``approximate="none"``. An intermediate that is also read elsewhere keeps the erf-only form. float32 only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lightexport.onnxfile import drop_dead_nodes

#: Abramowitz & Stegun 7.1.26: erfc(z) ~ t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2), t = 1/(1 + P z).
P = 0.3275911
A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
SQRT2 = math.sqrt(2.0)
_CLOSE = 1e-5  # how near a constant must be to sqrt 2, 1/sqrt 2, 1 or 0.5 to be read as it


@dataclass(frozen=True)
class GeluRewrite:
    model: onnx.ModelProto
    gelus: int  # whole GELUs rebuilt (the shorter form)
    erfs: int  # Erf ops rebuilt alone

    @property
    def count(self) -> int:
        return self.gelus + self.erfs


class _Graph:
    """Producers, consumers and scalar constants of a graph, for matching."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.scalars: dict[str, float] = {}
        tensors = [(i.name, i) for i in g.initializer]
        tensors += [(n.output[0], n.attribute[0].t) for n in g.node
                    if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"]
        for name, tensor in tensors:
            if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
                value = numpy_helper.to_array(tensor)
                if value.size == 1:
                    self.scalars[name] = float(value.reshape(-1)[0])
        inferred = onnx.shape_inference.infer_shapes(model)
        self.float32 = {v.name for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
                        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}

    def is_const(self, name: str | None, value: float) -> bool:
        return name in self.scalars and abs(self.scalars[name] - value) <= _CLOSE * max(1.0, abs(value))

    def only_reader(self, name: str) -> onnx.NodeProto | None:
        """The single node reading ``name``, if nothing else (a graph output included) does."""
        readers = self.consumers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.outputs else None

    def other(self, node: onnx.NodeProto, name: str) -> str | None:
        """The input of a two-input ``node`` that is not ``name``."""
        if len(node.input) != 2 or name not in node.input:
            return None
        return node.input[1] if node.input[0] == name else node.input[0]


def _gelu_input(graph: _Graph, erf: onnx.NodeProto) -> str | None:
    """x, where the Erf reads x / sqrt 2 (Div by sqrt 2 or Mul by 1/sqrt 2)."""
    scaled = graph.producer.get(erf.input[0])
    if scaled is None or graph.only_reader(scaled.output[0]) is not erf:
        return None
    if scaled.op_type == "Div" and graph.is_const(scaled.input[1], SQRT2):
        return scaled.input[0]
    if scaled.op_type == "Mul":
        for a, b in (scaled.input, reversed(scaled.input)):
            if graph.is_const(b, 1 / SQRT2):
                return a
    return None


def _match_gelu(graph: _Graph, erf: onnx.NodeProto) -> tuple[str, str] | None:
    """(x, y) where the nodes from the Erf on compute y = x * 0.5 * (1 + erf(x / sqrt 2)), else None."""
    x = _gelu_input(graph, erf)
    add = graph.only_reader(erf.output[0])
    if x is None or add is None or add.op_type != "Add" or not graph.is_const(graph.other(add, erf.output[0]), 1.0):
        return None
    first = graph.only_reader(add.output[0])
    if first is None or first.op_type != "Mul":
        return None
    factor = graph.other(first, add.output[0])
    half = graph.producer.get(factor or "")
    # (x * 0.5) * (1 + erf): the half taken first
    if half is not None and half.op_type == "Mul" and x in half.input and graph.is_const(graph.other(half, x), 0.5):
        return x, first.output[0]
    second = graph.only_reader(first.output[0])
    if second is None or second.op_type != "Mul":
        return None
    last = graph.other(second, first.output[0])
    if (factor == x and graph.is_const(last, 0.5)) or (graph.is_const(factor, 0.5) and last == x):
        return x, second.output[0]
    return None


class _Builder:
    """New nodes and their constants, each name prefixed so rewrites never collide."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.constants = prefix, [], []

    def const(self, tag: str, value: float) -> str:
        name = self.prefix + tag
        self.constants.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], tag: str, output: str | None = None) -> str:
        out = output or self.prefix + tag
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.prefix + tag))
        return out

    def erfc_poly(self, a: str, p: float, scale: float) -> str:
        """scale * t * (a1 + t (a2 + ...)), t = 1 / (1 + p a), for a >= 0."""
        t = self.op("Reciprocal", [self.op("Add", [self.op("Mul", [a, self.const("p", p)], "pa"),
                                                   self.const("one", 1.0)], "den")], "t")
        acc = self.op("Mul", [t, self.const("a5", scale * A[4])], "h4")
        for i in (3, 2, 1, 0):
            acc = self.op("Mul", [self.op("Add", [acc, self.const(f"a{i + 1}", scale * A[i])], f"s{i}"), t], f"h{i}")
        return acc


def _gelu_nodes(b: _Builder, x: str, y: str) -> None:
    """y = relu(x) - |x|/2 * erfc(|x| / sqrt 2), with erfc(z) = P(t) exp(-z^2)."""
    a = b.op("Abs", [x], "abs")
    poly = b.erfc_poly(a, P / SQRT2, 0.5)
    gauss = b.op("Exp", [b.op("Mul", [b.op("Mul", [x, x], "xx"), b.const("neg_half", -0.5)], "arg")], "exp")
    tail = b.op("Mul", [b.op("Mul", [a, poly], "ap"), gauss], "tail")
    b.op("Sub", [b.op("Relu", [x], "relu"), tail], "gelu", output=y)


def _erf_nodes(b: _Builder, z: str, y: str) -> None:
    """y = sign(z) * (1 - P(t) exp(-z^2))."""
    a = b.op("Abs", [z], "abs")
    poly = b.erfc_poly(a, P, 1.0)
    gauss = b.op("Exp", [b.op("Neg", [b.op("Mul", [z, z], "zz")], "arg")], "exp")
    body = b.op("Sub", [b.const("unit", 1.0), b.op("Mul", [poly, gauss], "erfc")], "body")
    b.op("Mul", [b.op("Sign", [z], "sign"), body], "erf", output=y)


def rewrite_gelu(model: onnx.ModelProto) -> GeluRewrite:
    """A copy of ``model`` whose exact GELUs and Erfs are computed by vectorizable ops; counts of each."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = _Graph(out)
    replaced: dict[int, _Builder] = {}  # index of the node a rewrite is inserted before -> its nodes
    gelus = erfs = 0
    nodes = list(out.graph.node)
    position = {id(n): i for i, n in enumerate(nodes)}
    for node in nodes:
        if node.op_type not in ("Gelu", "Erf") or node.domain not in ("", "ai.onnx") \
                or node.input[0] not in graph.float32:
            continue
        builder = _Builder(f"lightexport_gelu{gelus + erfs}/")
        if node.op_type == "Gelu":
            approximate = next((a.s.decode() for a in node.attribute if a.name == "approximate"), "none")
            if approximate != "none":
                continue
            _gelu_nodes(builder, node.input[0], node.output[0])
            node.output[0] = builder.prefix + "replaced"
            gelus += 1
            replaced[position[id(node)]] = builder
        elif node.op_type == "Erf":
            match = _match_gelu(graph, node)
            if match is not None:
                x, y = match
                _gelu_nodes(builder, x, builder.prefix + "y")
                last = graph.producer[y]
                last.output[0] = builder.prefix + "replaced"
                for n in builder.nodes:  # the chain's value keeps its name, so readers need no change
                    n.output[:] = [y if o == builder.prefix + "y" else o for o in n.output]
                gelus += 1
                replaced[position[id(last)]] = builder
            else:
                _erf_nodes(builder, node.input[0], node.output[0])
                node.output[0] = builder.prefix + "replaced"
                erfs += 1
                replaced[position[id(node)]] = builder
    if not replaced:
        return GeluRewrite(out, 0, 0)
    rebuilt = []
    for i, node in enumerate(nodes):
        if i in replaced:
            rebuilt += replaced[i].nodes
        clone = onnx.NodeProto()
        clone.CopyFrom(node)  # detached before the graph's own list is cleared
        rebuilt.append(clone)
    del out.graph.node[:]
    out.graph.node.extend(rebuilt)
    out.graph.initializer.extend(c for b in replaced.values() for c in b.constants)
    drop_dead_nodes(out.graph)
    return GeluRewrite(out, gelus, erfs)


def _chain(graph: _Graph, x: str, y: str) -> list[onnx.NodeProto]:
    """The nodes computing ``y`` from ``x`` (constants excluded), walked back from ``y``'s producer."""
    nodes, stack = [], [graph.producer[y]]
    while stack:
        n = stack.pop()
        if any(n is m for m in nodes) or n.op_type == "Constant":
            continue
        nodes.append(n)
        stack += [graph.producer[i] for i in n.input if i != x and i in graph.producer]
    return nodes


def _gelus(model: onnx.ModelProto) -> list[tuple[str, str, list[onnx.NodeProto]]]:
    """(x, y, nodes) of each erf-chain GELU of ``model``."""
    graph = _Graph(model)
    found = []
    for node in model.graph.node:
        if node.op_type == "Erf" and node.domain in ("", "ai.onnx") and (match := _match_gelu(graph, node)):
            found.append((*match, _chain(graph, *match)))
    return found


def gelu_node_names(model: onnx.ModelProto) -> list[list[str]]:
    """The node names of each exact GELU in ``model``, one list per GELU: an opset-20 ``Gelu``, or the erf
    chain from ``x / sqrt 2`` to ``x * 0.5 * (1 + erf)`` (its constants excluded)."""
    chains = [[n.name for n in nodes] for _, _, nodes in _gelus(model)]
    return chains + [[n.name] for n in model.graph.node if n.op_type == "Gelu" and n.domain in ("", "ai.onnx")]


def fuse_gelu_ort(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with each erf-chain GELU replaced by ONNX Runtime's own ``com.microsoft.Gelu`` (the
    node ORT's optimizer makes of such a chain in a float graph), and how many. ORT-only, for graphs ORT runs.

    Why: in a QDQ graph ORT cannot fuse the chain itself (it gives each reader of a DequantizeLinear its own
    copy, so the chain's two readers of x no longer share it, and the match fails), and the five ops ran
    unfused: FasterNet-T0 int8, 14 GELUs, 1 thread, AMD EPYC (AVX2): see :mod:`lightexport.exporter.onnx_int8`.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    found = _gelus(out)
    if not found:
        return out, 0
    drop = {id(n) for _, _, nodes in found for n in nodes}
    position = {id(n): i for i, n in enumerate(out.graph.node)}
    last = {id(max(nodes, key=lambda n: position[id(n)])): (x, y) for x, y, nodes in found}  # where y is made
    rebuilt = []
    for node in out.graph.node:
        if id(node) in last:
            x, y = last[id(node)]
            rebuilt.append(helper.make_node("Gelu", [x], [y], name=node.name + "_gelu", domain="com.microsoft"))
        elif id(node) not in drop:
            clone = onnx.NodeProto()
            clone.CopyFrom(node)
            rebuilt.append(clone)
    del out.graph.node[:]
    out.graph.node.extend(rebuilt)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    drop_dead_nodes(out.graph)
    return out, len(found)
