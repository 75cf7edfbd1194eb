"""BatchNorm removal: fold into the producing conv/linear, else into the consuming one, else scale-and-shift.

Run in that order, the passes leave no BatchNorm behind while choosing the cheapest exact form
for each: a fold costs nothing at inference, a ChannelAffine one Mul and one Add. A fold happens
only where the dataflow proves it exact; every pair seen but left alone is counted by reason in
the report's details (``skipped_<reason>``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from lightexport.reparam.bn_math import ChannelAffine, bn_affine, fold_bn_after, fold_bn_before
from lightexport.reparam.graph import Edge, replace_modules, trace_dataflow
from lightexport.reparam.match import class_path
from lightexport.reparam.report import PassReport

_BatchNorm = nn.modules.batchnorm._BatchNorm
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

# A module is an eval BatchNorm if its forward is torch's own BN forward, or its class is listed
# here with the submodules it applies after normalizing (timm's norm+act layers, frozen BNs).
# Exact classes only: a subclass may change the forward.
_TORCH_BN_FORWARDS = (_BatchNorm.forward, nn.SyncBatchNorm.forward)
_BN_THEN: dict[str, tuple[str, ...]] = {
    "timm.layers.norm_act.BatchNormAct2d": ("drop", "act"),
    "timm.layers.norm_act.SyncBatchNormAct": ("drop", "act"),
    "timm.layers.norm_act.FrozenBatchNormAct2d": ("drop", "act"),
    "torchvision.ops.misc.FrozenBatchNorm2d": (),
}

# Layers whose output is ``weight * input + bias`` per output channel: torch's own forwards, and
# convs that pad their input themselves first. A BN after either folds; a BN before the latter
# does not, since they pad with zeros the BN never shifted.
_PLAIN_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward)
_PAD_THEN_CONV = frozenset({"timm.layers.conv2d_same.Conv2dSame", "timm.layers.conv2d_same.Conv2dSameExport"})


def bn_tail(module: nn.Module) -> list[nn.Module] | None:
    """What a BatchNorm-like module applies after normalizing, or None if it is no BN we can fold."""
    if type(module).forward in _TORCH_BN_FORWARDS:
        return []
    attrs = _BN_THEN.get(class_path(type(module)))
    if attrs is None:
        return None
    parts = [getattr(module, a, None) for a in attrs]
    return [p for p in parts if isinstance(p, nn.Module) and not isinstance(p, nn.Identity)]


def uses_running_stats(bn: nn.Module) -> bool:
    """Only a BN that normalizes with stored statistics is a fixed affine map (frozen BNs always do)."""
    if isinstance(bn, _BatchNorm):
        return not bn.training and bn.running_mean is not None and bn.running_var is not None
    return True


def _is_unit(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or bn_tail(module) is not None


def _sequence(parts: list[nn.Module]) -> nn.Module:
    return nn.Identity() if not parts else parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def _reads_zero_padding(conv: nn.Module) -> bool:
    if conv.padding_mode != "zeros" or conv.padding == "valid":
        return False  # reflect/replicate/circular pad with BN'd values, so the BN commutes with them
    if conv.padding == "same":
        return any(d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size))
    return any(conv.padding)


def _why_not(layer: nn.Module, bn: nn.Module, bn_first: bool, rank: int | None) -> str | None:
    """Why folding ``bn`` into ``layer`` would not be exact; None if it would be."""
    if not uses_running_stats(bn):
        return "batch_stats"
    plain = type(layer).forward in _PLAIN_FORWARDS
    if not plain and (bn_first or class_path(type(layer)) not in _PAD_THEN_CONV):
        return "custom_forward"  # e.g. weight-standardized convs renormalize any weight we fold in
    channels = layer.weight.shape[1] * getattr(layer, "groups", 1) if bn_first else layer.weight.shape[0]
    if channels != bn.running_mean.numel():
        return "channels"
    if isinstance(layer, nn.Linear) and (rank != 2 or not isinstance(bn, _BatchNorm)):
        return "rank"  # BN normalizes dim 1, Linear acts on the last: the same axis only for 2-D input
    if bn_first and bn_tail(bn):
        return "activation"  # the BN's own activation sits between it and the layer
    if bn_first and isinstance(layer, _CONVS) and _reads_zero_padding(layer) and bool(bn_affine(bn)[1].any()):
        return "padding"  # the border would read the BN's shift instead of zeros
    return None


@dataclass(frozen=True)
class _Fold:
    """BN folds across one kind of edge: after ``layers`` (their output feeds the BN) or before them."""

    layers: tuple[type[nn.Module], ...]
    bn_first: bool

    def sides(self, model: nn.Module, edge: Edge) -> tuple[str, str] | None:
        """(layer name, BN name) if the edge is of this kind."""
        layer, bn = (edge.consumer, edge.producer) if self.bn_first else (edge.producer, edge.consumer)
        if isinstance(model.get_submodule(layer), self.layers) and bn_tail(model.get_submodule(bn)) is not None:
            return layer, bn
        return None


def _fold_pass(model: nn.Module, name: str, *folds: _Fold) -> tuple[nn.Module, PassReport]:
    report = PassReport(name)
    flow = trace_dataflow(model, _is_unit)
    replacements: dict[nn.Module, nn.Module] = {}
    for edge in flow.edges:
        for fold in folds:
            sides = fold.sides(model, edge)
            if sides is None:
                continue
            layer, bn = (model.get_submodule(n) for n in sides)
            if bn in replacements:  # Linear -> BN1d -> Linear: the BN folds into one side only
                continue
            reason = edge.hazard or _why_not(layer, bn, fold.bn_first, edge.rank)
            if reason:
                report.skip(reason, f"{edge.producer}+{edge.consumer}")
                continue
            (fold_bn_before if fold.bn_first else fold_bn_after)(layer, bn)
            replacements[bn] = _sequence(bn_tail(bn))
            report.changed.append(f"{edge.producer}+{edge.consumer}")
    replace_modules(model, replacements)
    if flow.untraceable:
        report.details["untraceable"] = ", ".join(flow.untraceable)
    return model, report


def fuse_conv_bn(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Conv -> BN becomes one conv (any groups, stride, dilation, padding, padding mode, bias)."""
    return _fold_pass(model, "fuse_conv_bn", _Fold(_CONVS, bn_first=False))


def fuse_linear_bn(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Linear -> BN1d and BN1d -> Linear become one Linear, where the tensor is provably (batch, features)."""
    return _fold_pass(model, "fuse_linear_bn", _Fold((nn.Linear,), bn_first=False), _Fold((nn.Linear,), bn_first=True))


def fold_bn_into_next_conv(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """A BN whose output feeds only a conv folds into that conv's input side, where no zero padding interferes."""
    return _fold_pass(model, "fold_bn_into_next_conv", _Fold(_CONVS, bn_first=True))


def bn_to_affine(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Every BN still left becomes a ChannelAffine, so no BatchNormalization op reaches the export."""
    report = PassReport("bn_to_affine")
    replacements: dict[nn.Module, nn.Module] = {}
    for name, module in model.named_modules():
        tail = bn_tail(module)
        if tail is None:
            continue
        if not uses_running_stats(module):
            report.skip("batch_stats", name)
            continue
        replacements[module] = _sequence([ChannelAffine.from_bn(module), *tail])
        report.changed.append(name)
    replace_modules(model, replacements)
    return model, report
