"""The arithmetic of folding an eval-mode BatchNorm into its neighbours, written once.

An eval BatchNorm is the per-channel affine map ``y = x * scale + shift`` with
``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale``; every BN pass is
this map composed with a linear layer on one side or the other.
"""

from __future__ import annotations

import torch
import torch.nn as nn

_BatchNorm = nn.modules.batchnorm._BatchNorm


def foldable(bn: nn.Module) -> bool:
    """Only a BN that normalizes with stored statistics is a fixed affine map."""
    return isinstance(bn, _BatchNorm) and not bn.training and bn.running_mean is not None


@torch.no_grad()
def bn_affine(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _set(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    dtype = layer.weight.dtype
    layer.weight = nn.Parameter(weight.to(dtype))
    layer.bias = nn.Parameter(bias.to(dtype))


@torch.no_grad()
def fold_bn_after(layer: nn.Conv2d | nn.Linear, bn: _BatchNorm) -> None:
    """``bn(layer(x))`` -> ``layer'(x)``: scale each output channel, shift the bias."""
    scale, shift = bn_affine(bn)
    weight = layer.weight.double()
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    # Conv weights are (out, in/groups, *k) and Linear weights (out, in): output channel is dim 0 for both.
    _set(layer, weight * scale.view(-1, *([1] * (weight.ndim - 1))), bias * scale + shift)


@torch.no_grad()
def fold_bn_before(layer: nn.Conv2d | nn.Linear, bn: _BatchNorm) -> None:
    """``layer(bn(x))`` -> ``layer'(x)``; exact only when ``layer`` sees no padding (callers check)."""
    scale, shift = bn_affine(bn)
    weight = layer.weight.double()
    out_ch, in_per_group = weight.shape[:2]
    groups = getattr(layer, "groups", 1)
    # Input channel feeding weight[o, i]: the i-th channel of o's group.
    index = (torch.arange(out_ch)[:, None] // (out_ch // groups)) * in_per_group + torch.arange(in_per_group)[None]
    spatial = [1] * (weight.ndim - 2)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros(out_ch, dtype=torch.float64)
    bias = bias + (weight * shift[index].view(out_ch, in_per_group, *spatial)).flatten(1).sum(1)
    _set(layer, weight * scale[index].view(out_ch, in_per_group, *spatial), bias)


class ChannelAffine(nn.Module):
    """A BatchNorm reduced to its eval-time effect: per-channel scale and shift along dim 1.

    Exports to a Mul and an Add, which every runtime fuses into its neighbours, instead of
    a BatchNormalization node that some runtimes and quantizers treat as a training op.
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    @classmethod
    def from_bn(cls, bn: _BatchNorm) -> ChannelAffine:
        scale, shift = bn_affine(bn)
        return cls(scale.to(bn.running_var.dtype), shift.to(bn.running_var.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}"
