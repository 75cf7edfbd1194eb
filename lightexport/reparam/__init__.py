"""Inference passes: each ``(module) -> (module, PassReport)``, output-preserving, for any nn.Module.

``apply_passes`` runs them on a copy in a fixed order: drop stochastic layers and training-only
branches (auxiliary classifiers), let modules fold
themselves, pick the export-friendly PConv form, then remove every BatchNorm by the cheapest
exact means available (fold into the producer, fold into the consumer, scale-and-shift).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch.nn as nn

from lightexport.errors import UsageError
from lightexport.reparam.bn_fusion import bn_to_affine, fold_bn_into_next_conv, fuse_conv_bn, fuse_linear_bn
from lightexport.reparam.bn_math import ChannelAffine
from lightexport.reparam.dropout import remove_dropout
from lightexport.reparam.pconv import pconv_for_export, set_pconv_form
from lightexport.reparam.protocol import reparameterize
from lightexport.reparam.report import PassReport
from lightexport.reparam.training_branches import remove_training_branches

Pass = Callable[[nn.Module], tuple[nn.Module, PassReport]]

PASSES: dict[str, Pass] = {
    "remove_dropout": remove_dropout,
    "remove_training_branches": remove_training_branches,
    "reparameterize": reparameterize,
    "pconv_form": pconv_for_export,
    "fuse_conv_bn": fuse_conv_bn,
    "fuse_linear_bn": fuse_linear_bn,
    "fold_bn_into_next_conv": fold_bn_into_next_conv,
    "bn_to_affine": bn_to_affine,
}
DEFAULT_PASSES: tuple[str, ...] = tuple(PASSES)


def apply_passes(model: nn.Module, names: Sequence[str] | None = None) -> tuple[nn.Module, list[PassReport]]:
    """Apply passes in order to a deep copy in eval mode; the caller keeps its unfused reference."""
    names = list(DEFAULT_PASSES if names is None else names)
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise UsageError(f"unknown pass(es) {', '.join(unknown)}; valid passes: {', '.join(PASSES)}")
    model = copy.deepcopy(model).eval()
    reports = []
    for name in names:
        model, report = PASSES[name](model)
        reports.append(report)
    return model, reports


__all__ = [
    "DEFAULT_PASSES",
    "PASSES",
    "ChannelAffine",
    "Pass",
    "PassReport",
    "apply_passes",
    "set_pconv_form",
]
