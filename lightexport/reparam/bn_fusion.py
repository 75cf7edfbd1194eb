"""BatchNorm removal: fold into the producing conv/linear, else into the consuming one, else scale-and-shift.

Run in that order, the three passes leave no BatchNorm behind while choosing the cheapest
exact form for each: a fold costs nothing at inference, a ChannelAffine one Mul and one Add.
"""

from __future__ import annotations

import torch.nn as nn

from lightexport.reparam.bn_math import ChannelAffine, fold_bn_after, fold_bn_before, foldable
from lightexport.reparam.graph import module_pairs, replace_module
from lightexport.reparam.report import PassReport

_BatchNorm = nn.modules.batchnorm._BatchNorm
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _remainder(bn: nn.Module, affine: nn.Module | None = None) -> nn.Module | None:
    """What must stay in the graph once the normalization itself is folded away.

    Plain BatchNorms leave nothing (or just the affine map). timm's BatchNormAct2d and
    relatives also apply ``drop`` and ``act`` after normalizing, so those stay. A subclass
    with any other custom forward is left alone (None).
    """
    tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    if not tail and type(bn).forward is not _BatchNorm.forward:
        return None
    parts = ([affine] if affine is not None else []) + tail
    if not parts:
        return nn.Identity()
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def _fuse_pairs(model: nn.Module, name: str, first, second, fold, bn_is_second: bool, exact=None) -> PassReport:
    report = PassReport(name)
    skipped = 0
    for a, b in list(module_pairs(model, first, second)):
        layer_name, bn_name = (a, b) if bn_is_second else (b, a)
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        channels = layer.weight.shape[0] if bn_is_second else layer.weight.shape[1] * getattr(layer, "groups", 1)
        remainder = _remainder(bn)
        if not foldable(bn) or channels != bn.num_features or remainder is None or (exact and not exact(layer)):
            skipped += 1
            continue
        fold(layer, bn)
        replace_module(model, bn_name, remainder)
        report.changed.append(f"{layer_name}+{bn_name}")
    report.details["skipped"] = skipped
    return report


def fuse_conv_bn(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Conv -> BN becomes one conv (any groups, stride, dilation, padding, with or without bias)."""
    return model, _fuse_pairs(model, "fuse_conv_bn", _CONVS, (_BatchNorm,), fold_bn_after, bn_is_second=True)


def fuse_linear_bn(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Linear -> BN1d and BN1d -> Linear become one Linear.

    BN1d normalizes dim 1 and Linear acts on the last dim; the channel-count check makes
    them the same axis for the 2-D (batch, features) tensors classifier heads use.
    """
    after = _fuse_pairs(model, "fuse_linear_bn", (nn.Linear,), (nn.BatchNorm1d,), fold_bn_after, bn_is_second=True)
    before = _fuse_pairs(model, "fuse_linear_bn", (nn.BatchNorm1d,), (nn.Linear,), fold_bn_before, bn_is_second=False)
    after.changed += before.changed
    after.details["skipped"] = int(after.details["skipped"]) + int(before.details["skipped"])
    return model, after


def _unpadded(conv: nn.Module) -> bool:
    """Folding a BN into the *next* conv is exact only if no output reads padding, which the BN would shift."""
    padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,)
    return padding != "same" and all(p == 0 for p in padding)


def fold_bn_into_next_conv(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """A BN whose output feeds only an unpadded conv is folded into that conv's input side."""
    report = _fuse_pairs(model, "fold_bn_into_next_conv", (_BatchNorm,), _CONVS, fold_bn_before, bn_is_second=False,
                         exact=_unpadded)
    return model, report


def bn_to_affine(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Every BN still left becomes a ChannelAffine, so no BatchNormalization op reaches the export."""
    report = PassReport("bn_to_affine")
    skipped = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, _BatchNorm):
            continue
        remainder = _remainder(module, ChannelAffine.from_bn(module)) if foldable(module) else None
        if remainder is None:
            skipped += 1
            continue
        replace_module(model, name, remainder)
        report.changed.append(name)
    report.details["skipped"] = skipped
    return model, report
