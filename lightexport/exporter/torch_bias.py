"""Bias correction for int8 weight rounding, on a PyTorch module before a quantizer rounds its weights.

The same correction as :mod:`lightexport.exporter.onnx_bias` (each layer's bias absorbs the mean
error ``(W_q - W) E[x]`` its rounded weights add, with ``E[x]`` the per-channel input mean of the
float module on the calibration images), for quantizers that take a PyTorch module and keep the
bias in float or int32 at the activation-times-weight scale: PT2E with XNNPACK's quantizer rounds
weights symmetric per output channel to [-127, 127] with scale ``max|w| / 127``, which is what
:func:`rounded_weights` emulates, so the rounding corrected is the rounding that happens. Only the
layers that will be quantized are corrected: a float-kept layer given a correction would carry an
error it never had.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from lightexport.exporter.onnx_bias import FULL_RANGE, rounded_weights

_LAYERS = (nn.Conv2d, nn.Linear)


def input_means(module: nn.Module, batches: Iterable[torch.Tensor], names: Iterable[str]) -> dict[str, np.ndarray]:
    """Per-input-channel means of the named conv/linear layers' inputs over ``batches`` (float64)."""
    layers = dict(module.named_modules())
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str, layer: nn.Module):
        def record(_module, args):
            x = args[0].detach().double()  # (channels, values): dim 1 of a conv's input, the last of a linear's
            x = x.transpose(0, 1).reshape(x.shape[1], -1) if isinstance(layer, nn.Conv2d) \
                else x.reshape(-1, x.shape[-1]).T
            sums[name] = sums.get(name, 0) + x.sum(dim=1).numpy()
            counts[name] = counts.get(name, 0) + x.shape[1]
        return record

    for name in names:
        if isinstance(layers.get(name), _LAYERS):
            hooks.append(layers[name].register_forward_pre_hook(hook(name, layers[name])))
    try:
        with torch.no_grad():
            for batch in batches:
                module(batch)
    finally:
        for h in hooks:
            h.remove()
    return {name: sums[name] / counts[name] for name in sums}


def weight_rounding_shift(layer: nn.Module, mean: np.ndarray, qmax: int = FULL_RANGE) -> np.ndarray:
    """The mean output shift per output channel that rounding ``layer``'s weights adds, given its input mean."""
    weight = layer.weight.detach().double().numpy()
    error = rounded_weights(weight, qmax).astype(np.float64) - weight
    if isinstance(layer, nn.Linear):
        return error @ mean
    groups = layer.groups
    per_group = error.shape[1]
    summed = error.sum(axis=(2, 3))  # (out, in / groups): each weight sees its input channel's mean
    means = mean.reshape(groups, per_group).repeat(error.shape[0] // groups, axis=0)
    return (summed * means).sum(axis=1)


def correct_biases(module: nn.Module, means: dict[str, np.ndarray], qmax: int = FULL_RANGE) -> tuple[nn.Module, int]:
    """A copy of ``module`` whose layers named in ``means`` have biases corrected; the copy and how many changed."""
    corrected = copy.deepcopy(module)
    layers = dict(corrected.named_modules())
    for name, mean in means.items():
        layer = layers[name]
        shift = torch.from_numpy(weight_rounding_shift(layer, mean, qmax)).to(layer.weight.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype))
        with torch.no_grad():
            layer.bias -= shift
    return corrected, len(means)
