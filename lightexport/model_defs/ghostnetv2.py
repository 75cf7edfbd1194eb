"""GhostNetV2 (Tang et al., NeurIPS 2022) at widths 1.0, 1.3, 1.6, with the official parameter names.

A Ghost module makes half its channels with a 1x1 conv and the other half from those with
a cheap depthwise 3x3; from the third bottleneck on, the first Ghost module is gated by
DFC attention: a 2x-downsampled copy of the input through a 1x1 conv and depthwise (1, 5)
and (5, 1) convs (each with BN), a sigmoid, and nearest upsampling back. Names follow the
official release, which timm's port keeps (``conv_stem``, ``blocks.i.j.ghost1``,
``short_conv``, ``conv_head``, ``classifier``); counters that profiling tools leave in
checkpoints (``total_ops``, ``total_params``) are dropped on load.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.features import pyramid_features
from lightexport.model_defs.layers import make_divisible, torchvision_init
from lightexport.model_defs.registry import ModelSpec, StateDict, register

# Stages of bottlenecks: kernel, expanded width, output width, squeeze-excitation ratio, stride.
STAGES = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)),
)  # fmt: skip
ReLU = partial(nn.ReLU, inplace=True)


def _conv_bn(cin: int, cout: int, kernel, groups: int = 1, act: bool = True, stride: int = 1) -> list[nn.Module]:
    padding = (kernel[0] // 2, kernel[1] // 2) if isinstance(kernel, tuple) else kernel // 2
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [ReLU()] if act else layers


class GhostModule(nn.Module):
    """Half the output from a 1x1 conv, half from a depthwise 3x3 of that half; optionally DFC-gated."""

    def __init__(self, cin: int, cout: int, act: bool = True, attention: bool = False) -> None:
        super().__init__()
        self.out_chs = cout
        primary = math.ceil(cout / 2)
        self.primary_conv = nn.Sequential(*_conv_bn(cin, primary, 1, act=act))
        self.cheap_operation = nn.Sequential(*_conv_bn(primary, primary, 3, groups=primary, act=act))
        self.short_conv = nn.Sequential(
            *_conv_bn(cin, cout, 1, act=False), *_conv_bn(cout, cout, (1, 5), groups=cout, act=False),
            *_conv_bn(cout, cout, (5, 1), groups=cout, act=False),
        ) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary_conv(x)
        out = torch.cat((primary, self.cheap_operation(primary)), dim=1)[:, : self.out_chs]
        if self.short_conv is None:
            return out
        gate = torch.sigmoid(self.short_conv(nn.functional.avg_pool2d(x, kernel_size=2, stride=2)))
        return out * nn.functional.interpolate(gate, size=out.shape[-2:], mode="nearest")


class SqueezeExcite(nn.Module):
    """The official/timm SE of GhostNet: mean-pool, reduce + ReLU, expand, hard-sigmoid gate."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        reduced = make_divisible(channels * ratio, 4)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = ReLU()
        self.conv_expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class GhostBottleneck(nn.Module):
    """Ghost module (expand) -> depthwise (stride 2 only) -> SE -> Ghost module (project), plus a shortcut."""

    def __init__(self, cin: int, mid: int, cout: int, kernel: int, stride: int, se_ratio: float, attention: bool):
        super().__init__()
        self.ghost1 = GhostModule(cin, mid, attention=attention)
        self.conv_dw = nn.Conv2d(mid, mid, kernel, stride, (kernel - 1) // 2, groups=mid, bias=False) \
            if stride > 1 else None
        self.bn_dw = nn.BatchNorm2d(mid) if stride > 1 else None
        self.se = SqueezeExcite(mid, se_ratio) if se_ratio else None
        self.ghost2 = GhostModule(mid, cout, act=False)
        if cin == cout and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cin, kernel, groups=cin, act=False, stride=stride),
                                          *_conv_bn(cin, cout, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)
        if self.conv_dw is not None:
            y = self.bn_dw(self.conv_dw(y))
        if self.se is not None:
            y = self.se(y)
        return self.ghost2(y) + self.shortcut(x)


class ConvBnAct(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class GhostNetV2(nn.Module):
    """GhostNetV2 classifier; ``with_head=False`` builds the trunk for backbone mode (no last 1x1 stage, no head)."""

    feature_trunk = ("conv_stem", "bn1", "act1", "blocks")

    def __init__(self, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2, with_head: bool = True,
                 in_chans: int = 3) -> None:
        super().__init__()
        self.dropout = dropout
        cin = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(in_chans, cin, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = ReLU()
        stages, strides, channels, index = [], [], [], 0
        for stage in STAGES:
            blocks = []
            for kernel, expanded, c, se_ratio, stride in stage:
                cout = make_divisible(c * width, 4)
                blocks.append(GhostBottleneck(cin, make_divisible(expanded * width, 4), cout, kernel, stride,
                                              se_ratio, attention=index > 1))
                cin, index = cout, index + 1
            stages.append(nn.Sequential(*blocks))
            strides.append((strides[-1] if strides else 2) * max(b[4] for b in stage))
            channels.append(cin)
        self.feature_info = pyramid_features("blocks", strides, channels)
        if with_head:
            width_out = make_divisible(STAGES[-1][-1][1] * width, 4)
            stages.append(nn.Sequential(ConvBnAct(cin, width_out)))
            self.conv_head = nn.Conv2d(width_out, 1280, 1, bias=True)
            self.act2 = ReLU()
            self.classifier = nn.Linear(1280, num_classes)
        self.blocks = nn.Sequential(*stages)
        self.apply(torchvision_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = self.act2(self.conv_head(self.blocks(x).mean((2, 3), keepdim=True)))
        x = nn.functional.dropout(torch.flatten(x, 1), self.dropout, self.training)
        return self.classifier(x)


def checkpoint_filter_fn(state_dict: StateDict, model: nn.Module | None = None) -> StateDict:
    """Drop the FLOP/parameter counters profiling tools (thop) leave in official checkpoints."""
    return {k: v for k, v in state_dict.items() if not k.endswith(("total_ops", "total_params"))}


for _name, _width in (("ghostnetv2_100", 1.0), ("ghostnetv2_130", 1.3), ("ghostnetv2_160", 1.6)):
    register(ModelSpec(name=_name, family="ghostnetv2", builder=GhostNetV2, input_size=224, crop_pct=0.875,
                       checkpoint_filter=checkpoint_filter_fn, config=dict(width=_width),
                       classifier_weight="classifier.weight",
                       head_prefixes=(f"blocks.{len(STAGES)}.", "conv_head.", "classifier."),
                       checkpoints=("official (huawei-noah/Efficient-AI-Backbones)", "timm ghostnetv2_*")))
