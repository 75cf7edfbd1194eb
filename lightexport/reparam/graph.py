"""Where modules sit in the dataflow, for passes that must know who feeds whom.

A pass may only fold a BatchNorm into a conv when the conv's output goes nowhere else, and
module nesting does not tell us that: the forward does. torch.fx gives the dataflow; models
whose forward cannot be traced as a whole (data-dependent control flow) are traced piecewise,
descending into children until subtrees trace, so most of such a model is still covered.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn

# Modules kept opaque while tracing: the passes reason about them as units.
_LEAF_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.conv._ConvNd, nn.Linear)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAF_TYPES) or super().is_leaf_module(m, qualname)


@dataclass
class TracedRegion:
    """One traced (sub)module: its graph plus the prefix that turns node targets into model paths."""

    prefix: str
    graph: fx.Graph
    calls: Counter  # how often each module is called in this region: shared modules are never folded

    def qualname(self, node: fx.Node) -> str:
        return f"{self.prefix}.{node.target}" if self.prefix else str(node.target)


@dataclass
class Dataflow:
    regions: list[TracedRegion]
    untraceable: list[str]


def trace_dataflow(model: nn.Module) -> Dataflow:
    regions: list[TracedRegion] = []
    untraceable: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        if isinstance(module, _LEAF_TYPES) or not list(module.children()):
            return
        try:
            graph = _Tracer().trace(module)
        except Exception:  # any tracing failure means: look one level down
            untraceable.append(prefix or "<root>")
            for name, child in module.named_children():
                visit(child, f"{prefix}.{name}" if prefix else name)
            return
        calls = Counter(str(n.target) for n in graph.nodes if n.op == "call_module")
        regions.append(TracedRegion(prefix, graph, calls))

    visit(model, "")
    return Dataflow(regions, untraceable)


def module_pairs(model: nn.Module, first: tuple[type, ...], second: tuple[type, ...]):
    """Yield (first_name, second_name, region) where ``second`` consumes only ``first``'s output.

    Both modules must be called exactly once, and ``first``'s output must have no other user.
    """
    flow = trace_dataflow(model)
    for region in flow.regions:
        for node in region.graph.nodes:
            if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
                continue
            producer = node.args[0]
            if producer.op != "call_module" or len(producer.users) != 1:
                continue
            a, b = model.get_submodule(region.qualname(producer)), model.get_submodule(region.qualname(node))
            if isinstance(a, first) and isinstance(b, second):
                if region.calls[str(producer.target)] == 1 and region.calls[str(node.target)] == 1:
                    yield region.qualname(producer), region.qualname(node)


def replace_module(model: nn.Module, qualname: str, new: nn.Module) -> None:
    parent_name, _, attr = qualname.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
