"""Stochastic regularizers are identities at inference; removing them keeps them out of exported graphs."""

from __future__ import annotations

import torch.nn as nn

from lightexport.reparam.graph import replace_module
from lightexport.reparam.report import PassReport

# Third-party stochastic-depth modules, matched by class name so timm/torchvision stay optional imports.
_STOCHASTIC_NAMES = {"DropPath", "StochasticDepth", "DropBlock2d", "DropBlock"}


def _is_stochastic(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.dropout._DropoutNd) or type(module).__name__ in _STOCHASTIC_NAMES


def remove_dropout(model: nn.Module) -> tuple[nn.Module, PassReport]:
    report = PassReport("remove_dropout")
    for name, module in list(model.named_modules()):
        if name and _is_stochastic(module):
            replace_module(model, name, nn.Identity())
            report.changed.append(name)
    return model, report
