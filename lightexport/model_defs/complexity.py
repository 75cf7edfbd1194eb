"""Parameter and MAC counts, measured rather than quoted, so every registered model gets them.

Counting runs on the meta device: shapes propagate, nothing is computed or allocated,
so even the large variants cost milliseconds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lightexport.model_defs.registry import ModelSpec


def complexity(spec: ModelSpec, input_size: int | None = None, **build_kwargs: Any) -> tuple[int, float]:
    """Return (parameters, GMACs for one image); GMACs are what papers call 'FLOPs'."""
    size = input_size or spec.input_size
    with torch.device("meta"):
        model = spec.build(**build_kwargs).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2 / 1e9
