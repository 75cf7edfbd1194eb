"""Aligned Xception 41 / 65 / 71 (DeepLabv3+, Chen et al., ECCV 2018) with timm's parameter names.

DeepLab's modification of Xception (:mod:`lightexport.model_defs.xception`): every block is
three separable convs, and downsampling is the third one's stride instead of a max-pool; each
depthwise and pointwise conv has its own BatchNorm (eps 1e-3, as TF); the middle flow repeats
8 (41) or 16 (65, 71) times, and Xception-71 splits two entry blocks into a stride-1 and a
stride-2 one. The exit flow ends in a block without shortcut whose separable convs are
followed by ReLU each (no leading ReLU).

The module tree is timm's ``xception41/65/71`` (``stem.N.conv/bn``, ``blocks.N.shortcut.conv/bn``,
``blocks.N.stack.convK.conv_dw/bn_dw/conv_pw/bn_pw``, ``head.fc``), so timm's checkpoints (the
DeepLab TF ports ``*.tf_in1k`` and ``xception65.ra3_in1k``) load as they are, and padding is
timm's: symmetric. timm's pre-activation variants (``xception41p``, ``xception65p``) are other
blocks and are not here.

Backbone mode returns each stride's last block output (strides 4-32); timm's ``features_only``
taps strides 2-16 inside the strided blocks instead, before their strided conv.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.features import pyramid_features
from lightexport.model_defs.registry import ModelSpec, register

BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)  # TF's epsilon, kept by timm for these ports
ReLU = partial(nn.ReLU, inplace=True)
NUM_FEATURES = 2048
# Per block: (in, (out of its three separable convs), stride); the last is the exit flow's head block.
_ENTRY = {41: ((64, 128, 2), (128, 256, 2), (256, 728, 2)), 65: ((64, 128, 2), (128, 256, 2), (256, 728, 2)),
          71: ((64, 128, 2), (128, 256, 1), (256, 256, 2), (256, 728, 1), (728, 728, 2))}
_MIDDLE = {41: 8, 65: 16, 71: 16}


def block_config(depth: int) -> tuple[tuple[int, tuple[int, int, int], int], ...]:
    """(input width, the three output widths, stride) per block of Xception-``depth``, as timm lists them."""
    entry = tuple((cin, (cout,) * 3, stride) for cin, cout, stride in _ENTRY[depth])
    middle = ((728, (728,) * 3, 1),) * _MIDDLE[depth]
    return (*entry, *middle, (728, (728, 1024, 1024), 2), (1024, (1536, 1536, NUM_FEATURES), 1))


class ConvNormAct(nn.Module):
    """conv -> BN (-> ReLU), named ``conv``/``bn`` as timm's ``ConvNormAct``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=False)
        self.bn = BatchNorm(cout)
        self.act = ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 + BN (+ ReLU), pointwise 1x1 + BN (+ ReLU): the ReLUs only in the exit flow's last block."""

    def __init__(self, cin: int, cout: int, stride: int, act: bool) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn_dw = BatchNorm(cin)
        self.act_dw = ReLU() if act else nn.Identity()
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_pw = BatchNorm(cout)
        self.act_pw = ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_pw(self.bn_pw(self.conv_pw(self.act_dw(self.bn_dw(self.conv_dw(x))))))


class XceptionModule(nn.Module):
    """Three separable convs (the third strided), each after a ReLU, plus a 1x1 conv + BN shortcut when the
    shape changes; the head block (``start_with_relu=False``) has ReLUs inside its convs and no shortcut."""

    def __init__(self, cin: int, widths: tuple[int, int, int], stride: int, start_with_relu: bool = True) -> None:
        super().__init__()
        self.has_skip = start_with_relu
        self.shortcut = (ConvNormAct(cin, widths[-1], 1, stride, act=False)
                         if self.has_skip and (cin != widths[-1] or stride != 1) else None)
        self.stack = nn.Sequential()
        for i, cout in enumerate(widths):
            if start_with_relu:  # the first must not overwrite the block input: the shortcut still reads it
                self.stack.add_module(f"act{i + 1}", nn.ReLU(inplace=i > 0))
            self.stack.add_module(f"conv{i + 1}", SeparableConv2d(cin, cout, stride if i == 2 else 1,
                                                                  act=not start_with_relu))
            cin = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stack(x)
        if not self.has_skip:
            return y
        return y + (x if self.shortcut is None else self.shortcut(x))


class ClassifierHead(nn.Module):
    """Global average pool and ``fc``, named as timm's ``head.fc``."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class XceptionAligned(nn.Module):
    """Aligned Xception classifier; ``with_head=False`` builds the trunk for backbone mode (no ``head``)."""

    feature_trunk = ("stem", "blocks")

    def __init__(self, depth: int = 41, num_classes: int = 1000, with_head: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        config = block_config(depth)
        self.stem = nn.Sequential(ConvNormAct(in_chans, 32, 3, 2), ConvNormAct(32, 64, 3))
        self.blocks = nn.Sequential(*(XceptionModule(cin, widths, stride, start_with_relu=i < len(config) - 1)
                                      for i, (cin, widths, stride) in enumerate(config)))
        strides, total = [], 2
        for _, _, stride in config:
            total *= stride
            strides.append(total)
        self.feature_info = tuple(pyramid_features("blocks", strides, [widths[-1] for _, widths, _ in config]))
        if with_head:
            self.head = ClassifierHead(NUM_FEATURES, num_classes)
        for m in self.modules():  # timm's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


for _depth in (41, 65, 71):
    register(ModelSpec(name=f"xception{_depth}", family="xception", builder=XceptionAligned, input_size=299,
                       crop_pct=0.903, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                       config=dict(depth=_depth), classifier_weight="head.fc.weight", head_prefixes=("head.",),
                       checkpoints=(f"timm xception{_depth}",)))
