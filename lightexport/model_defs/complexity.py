"""Parameter and FLOP counts, measured rather than quoted, so every registered model gets them."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gmacs(model: nn.Module, input_size: int) -> float:
    """Multiply-accumulates (the 'FLOPs' papers quote) for one image, in billions."""
    counter = FlopCounterMode(display=False)
    with counter:
        model.eval()(torch.zeros(1, 3, input_size, input_size))
    return counter.get_total_flops() / 2 / 1e9
