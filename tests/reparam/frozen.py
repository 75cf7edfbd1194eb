"""Random statistics for BatchNorm flavours that ``randomize_bn`` does not see (they are no _BatchNorm)."""

import torch
import torch.nn as nn

from tests.conftest import randomize_bn


@torch.no_grad()
def randomize_like_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Copy ``randomize_bn``'s statistics into a module holding BN tensors (frozen BNs keep them as buffers)."""
    source = randomize_bn(nn.BatchNorm2d(module.running_mean.numel()), seed)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(module, name).copy_(getattr(source, name))
    return module
