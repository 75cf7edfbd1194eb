"""Who feeds whom: the dataflow between modules, which module nesting alone does not tell.

A pass may fold a BatchNorm into a conv only if the conv's output goes nowhere else, both are
called once, and nothing else reads their parameters; only the forward code knows that. torch.fx
gives the dataflow. Models whose forward cannot be traced as a whole (data-dependent control
flow) are traced piecewise, with only the untraceable modules kept opaque, so most of such a
model is still covered. Modules wired together by untraceable code are never paired, so they are
left alone; the untraceable modules are reported.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

ModulePredicate = Callable[[nn.Module], bool]

# Modules whose output has the rank of their input. Together with flatten/view/reshape this proves
# the 2-D (batch, features) layout under which BatchNorm1d and Linear act on the same axis.
_RANK_PRESERVING: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Identity,
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
)
_FLATTEN = {torch.flatten, "flatten"}
_RESHAPE = {torch.reshape, "reshape", "view"}


class _Tracer(fx.Tracer):
    def __init__(self, is_unit: ModulePredicate) -> None:
        super().__init__()
        self._is_unit = is_unit

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return self._is_unit(m) or super().is_leaf_module(m, qualname)


@dataclass(frozen=True)
class Edge:
    """The output of module ``producer`` is the (first) input of module ``consumer``."""

    producer: str
    consumer: str
    rank: int | None  # rank of the tensor passed along, where the graph proves it
    hazard: str | None  # why merging the two could change the model's output; None if it cannot


@dataclass
class Dataflow:
    edges: list[Edge]
    untraceable: list[str]  # modules whose own forward fx could not trace, kept opaque


def _concrete_defaults(module: nn.Module) -> dict[str, object]:
    """Trace optional arguments at their defaults, as the model is called at inference.

    fx would otherwise make them placeholders, so ``if mask is None`` would trace the branch
    a real call never takes, and the dataflow would describe a different computation.
    """
    params = inspect.signature(module.forward).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params if p.kind in kinds and p.default is not inspect.Parameter.empty}


def _trace_regions(model: nn.Module, is_unit: ModulePredicate) -> tuple[list[tuple[str, fx.Graph]], list[str]]:
    """Graphs covering as much of the model as fx can trace, as (qualified name, graph) pairs.

    When a module fails to trace, its children are traced on their own; any of them whose own
    forward fails is then kept opaque (a leaf) and the module is traced again, so only the
    untraceable code itself is lost, not the dataflow around it. Returns the graphs and the
    names of the opaque modules.
    """
    opaque: dict[int, str] = {}  # id -> name of modules whose own forward fx cannot trace

    def trace(module: nn.Module) -> fx.Graph:
        tracer = _Tracer(lambda m: is_unit(m) or id(m) in opaque)
        return tracer.trace(module, concrete_args=_concrete_defaults(module))

    def visit(module: nn.Module, prefix: str) -> list[tuple[str, fx.Graph]]:
        if is_unit(module):
            return []
        try:
            return [(prefix, trace(module))]
        except Exception:  # any tracing failure means: find the culprit below, then retry around it
            pass
        known = len(opaque)
        children = module.named_children()
        inner = [r for name, child in children for r in visit(child, f"{prefix}.{name}" if prefix else name)]
        if len(opaque) > known:
            try:
                graph = trace(module)
            except Exception:
                pass
            else:  # ``graph`` inlines the children that traced; keep only the graphs inside opaque ones
                inside = [(p, g) for p, g in inner if any(p.startswith(f"{o}.") for o in opaque.values())]
                return [(prefix, graph), *inside]
        opaque[id(module)] = prefix or "<root>"
        return inner

    regions = visit(model, "")
    return regions, list(opaque.values())


def _rank(node: fx.Node, ranks: dict[fx.Node, int | None], region: nn.Module) -> int | None:
    """Rank of a node's output from the few ops that fix or keep it; None when not proven."""
    src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    src_rank = ranks.get(src) if src is not None else None
    if node.op == "call_module":
        module = region.get_submodule(node.target)
        if isinstance(module, nn.Flatten):
            return _flattened_rank(src_rank, module.start_dim, module.end_dim)
        keeps = isinstance(module, _RANK_PRESERVING) or type(module).__module__ == "torch.nn.modules.activation"
        return src_rank if keeps and not isinstance(module, nn.MultiheadAttention) else None
    if node.op in ("call_function", "call_method") and src is not None:
        if node.target in _FLATTEN:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return _flattened_rank(src_rank, start, end) if isinstance(start, int) and isinstance(end, int) else None
        if node.target in _RESHAPE and not node.kwargs:
            shape = node.args[1:]
            if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
                shape = shape[0]
            return len(shape) if shape and all(not isinstance(s, (tuple, list)) for s in shape) else None
    return None


def _flattened_rank(rank: int | None, start: int, end: int) -> int | None:
    if end == -1 and start >= 0:
        return start + 1  # whatever came in, the dims from ``start`` on become one
    if rank is None:
        return None
    start, end = start % rank, end % rank
    return rank - (end - start)


def trace_dataflow(model: nn.Module, is_unit: ModulePredicate) -> Dataflow:
    """Module-to-module edges between ``is_unit`` modules (kept opaque while tracing)."""
    regions, untraceable = _trace_regions(model, is_unit)
    aliases = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    calls: Counter[int] = Counter()
    read_params: set[str] = set()  # modules whose parameters the code reads directly (get_attr)
    for prefix, graph in regions:
        region = model.get_submodule(prefix)
        for node in graph.nodes:
            if node.op == "call_module":
                calls[id(region.get_submodule(node.target))] += 1
            elif node.op == "get_attr":
                owner = str(node.target).rpartition(".")[0]
                read_params.add(f"{prefix}.{owner}" if prefix and owner else prefix or owner)

    def hazard(name: str) -> str | None:
        module = model.get_submodule(name)
        if aliases[id(module)] > 1 or calls[id(module)] > 1:
            return "shared"
        if module._forward_hooks or module._forward_pre_hooks:
            return "hooked"
        if name in read_params:
            return "param_access"
        return None

    edges: list[Edge] = []
    for prefix, graph in regions:
        region = model.get_submodule(prefix)
        ranks: dict[fx.Node, int | None] = {}
        for node in graph.nodes:
            ranks[node] = _rank(node, ranks, region)
            if node.op != "call_module":
                continue
            src, sole = _source(node, region)
            if src is None or src.op != "call_module":
                continue
            producer, consumer = (f"{prefix}.{n.target}" if prefix else str(n.target) for n in (src, node))
            if not (is_unit(model.get_submodule(producer)) and is_unit(model.get_submodule(consumer))):
                continue
            reason = None if sole else "fanout"
            reason = reason or ("extra_inputs" if len(node.args) > 1 or node.kwargs else None)
            reason = reason or hazard(producer) or hazard(consumer)
            edges.append(Edge(producer, consumer, ranks[src], reason))
    return Dataflow(edges, untraceable)


def _passthrough(module: nn.Module) -> bool:
    """Modules that hand their input on unchanged, such as the Identity left where a Dropout was."""
    if module._forward_hooks or module._forward_pre_hooks:
        return False
    return type(module) is nn.Identity or (isinstance(module, nn.modules.dropout._DropoutNd) and not module.training)


def _source(node: fx.Node, region: nn.Module) -> tuple[fx.Node | None, bool]:
    """The node whose value ``node`` consumes, seen through pass-throughs, and whether only ``node`` uses it."""
    src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    sole = True
    while src is not None and src.op == "call_module" and _passthrough(region.get_submodule(src.target)):
        sole = sole and len(src.users) == 1
        src = src.args[0] if src.args and isinstance(src.args[0], fx.Node) else None
    return src, sole and src is not None and len(src.users) == 1


def replace_modules(model: nn.Module, replacements: dict[nn.Module, nn.Module]) -> None:
    """Swap modules (identity-keyed) for their replacements under every name they are registered as.

    A replacement takes the train/eval mode of the module it replaces, as if it had always been there.
    """
    for parent in list(model.modules()) if replacements else []:
        for attr, child in list(parent._modules.items()):  # not named_children(): it skips aliases
            if child is not None and child in replacements:
                setattr(parent, attr, replacements[child].train(child.training))
