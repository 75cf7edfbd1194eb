"""Stochastic regularizers are identities at inference; removing them keeps them out of exported graphs."""

from __future__ import annotations

import torch.nn as nn

from lightexport.model_defs.layers import DropPath
from lightexport.reparam.graph import replace_modules
from lightexport.reparam.match import lineage
from lightexport.reparam.report import PassReport

_STOCHASTIC_TYPES: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd, DropPath)
# Third-party stochastic-depth layers, by class path (old timm kept them under timm.models.layers).
_STOCHASTIC_PATHS = frozenset({
    "timm.layers.drop.DropPath",
    "timm.layers.drop.DropBlock2d",
    "timm.models.layers.drop.DropPath",
    "timm.models.layers.drop.DropBlock2d",
    "torchvision.ops.stochastic_depth.StochasticDepth",
})


def is_stochastic(module: nn.Module) -> bool:
    return (isinstance(module, _STOCHASTIC_TYPES) or not lineage(module).isdisjoint(_STOCHASTIC_PATHS)
            or _own_drop_layer(module))


def _own_drop_layer(module: nn.Module) -> bool:
    """A user's own DropPath/Dropout (pasted from a paper's code, not timm's class): stateless, named for dropping,
    and the identity in eval mode on a probe input."""
    import torch

    named = "drop" in type(module).__name__.lower()
    if not named or any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
        return False
    was_training = module.training
    probe = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = module.eval()(probe)
    except Exception:  # noqa: BLE001  # not a layer of one tensor in, one out: not ours to remove
        return False
    finally:
        module.train(was_training)
    return isinstance(out, torch.Tensor) and out.shape == probe.shape and bool(torch.equal(out, probe))


def remove_dropout(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Dropout, DropPath, DropBlock and StochasticDepth become ``nn.Identity``."""
    report = PassReport("remove_dropout")
    replacements: dict[nn.Module, nn.Module] = {}
    for name, module in model.named_modules():
        if name and is_stochastic(module):
            replacements[module] = nn.Identity()
            report.changed.append(name)
    replace_modules(model, replacements)
    return model, report
