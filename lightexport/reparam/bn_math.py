"""The arithmetic of folding an eval-mode BatchNorm into its neighbours, written once.

An eval BatchNorm is the per-channel affine map ``y = x * scale + shift`` with
``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale``; every BN pass is
this map composed with a linear layer on one side or the other. The products are formed in
float64 and rounded once to the layer's dtype, so a fold adds no more error than one rounding.
"""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) in float64 from the attributes every BatchNorm flavour shares."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _set(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    # New Parameters rather than in-place writes: a weight tied to another module stays intact there.
    dtype, grad = layer.weight.dtype, layer.weight.requires_grad
    layer.weight = nn.Parameter(weight.to(dtype), requires_grad=grad)
    layer.bias = nn.Parameter(bias.to(dtype), requires_grad=grad)


def _bias(layer: nn.Module, out_channels: int, like: torch.Tensor) -> torch.Tensor:
    return layer.bias.double() if layer.bias is not None else like.new_zeros(out_channels)


@torch.no_grad()
def fold_bn_after(layer: nn.Module, bn: nn.Module) -> None:
    """``bn(layer(x))`` -> ``layer'(x)``: scale each output channel, shift the bias.

    Conv weights are (out, in/groups, *k) and Linear weights (out, in): the output channel is dim 0 for both.
    """
    scale, shift = bn_affine(bn)
    weight = layer.weight.double()
    bias = _bias(layer, weight.shape[0], scale)
    _set(layer, weight * scale.view(-1, *([1] * (weight.ndim - 1))), bias * scale + shift)


@torch.no_grad()
def fold_bn_before(layer: nn.Module, bn: nn.Module) -> None:
    """``layer(bn(x))`` -> ``layer'(x)``; exact only where ``layer`` reads no zero padding (callers check)."""
    scale, shift = bn_affine(bn)
    weight = layer.weight.double()
    out_ch, in_per_group = weight.shape[:2]
    groups = getattr(layer, "groups", 1)
    # The input channel that weight[o, i] reads: the i-th channel of o's group.
    group = torch.arange(out_ch, device=weight.device) // (out_ch // groups)
    index = group[:, None] * in_per_group + torch.arange(in_per_group, device=weight.device)[None]
    view = (out_ch, in_per_group) + (1,) * (weight.ndim - 2)
    bias = _bias(layer, out_ch, scale) + (weight * shift[index].view(view)).flatten(1).sum(1)
    _set(layer, weight * scale[index].view(view), bias)


class ChannelAffine(nn.Module):
    """A BatchNorm reduced to its eval-time effect: per-channel scale and shift along dim 1.

    Exports to one Mul and one Add, which runtimes fuse into their neighbours, instead of a
    BatchNormalization node that some runtimes and quantizers treat as a training op. The
    buffers are broadcast along dim 1 of whatever rank arrives (BatchNorm1d and SyncBatchNorm
    accept several); exporters fold that reshape of a constant away.
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    @classmethod
    def from_bn(cls, bn: nn.Module) -> ChannelAffine:
        scale, shift = bn_affine(bn)
        dtype = bn.running_var.dtype
        return cls(scale.to(dtype), shift.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}"
