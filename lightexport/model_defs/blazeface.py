"""The BlazeFace backbone (Bazarevsky et al., 2019, "BlazeFace: Sub-millisecond Neural Face Detection").

Built for mobile GPUs, where a depthwise conv costs little next to the kernel launch, so the
blocks use 5x5 depthwise kernels (a larger receptive field for almost nothing) and few layers.
A BlazeBlock is depthwise 5x5 (stride) + BN, pointwise 1x1 + BN, plus the shortcut, then ReLU
after the add; a double BlazeBlock repeats the depthwise/pointwise pair, first projecting to a
narrow 24-channel bottleneck (ReLU after it) and then widening to 96. Downsampling blocks take
their shortcut through a 2x2 max-pool and a 1x1 conv + BN to the new width.

Layout per the paper's Table 4: a 5x5 stride-2 conv to 64x64x24 on a 128x128 input, five
single blocks (to 32x32x48), six double blocks (to 16x16x96, then 8x8x96). A detector reads two
feature maps, 16x16x96 and 8x8x96 (its anchors sit on both); this is a backbone only, with no
classifier, so its output is those two maps (``feat0`` at stride 8, ``feat1`` at stride 16).
No trained weights are published for this exact form (MediaPipe's detector folds BN and pads
channels instead of a shortcut conv), so the tree is our own.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lightexport.model_defs.features import FeatureInfo
from lightexport.model_defs.layers import ConvBNAct, torchvision_init
from lightexport.model_defs.registry import ModelSpec, register

# (in, bottleneck or None for a single block, out, stride), the paper's Table 4.
BLOCKS = ((24, None, 24, 1), (24, None, 24, 1), (24, None, 48, 2), (48, None, 48, 1), (48, None, 48, 1),
          (48, 24, 96, 2), (96, 24, 96, 1), (96, 24, 96, 1),
          (96, 24, 96, 2), (96, 24, 96, 1), (96, 24, 96, 1))
FEATURE_BLOCKS = (7, 10)  # last block at 16x16 (stride 8) and at 8x8 (stride 16)


def separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cin, 5, stride, 2, groups=cin, bias=False), nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]


class BlazeBlock(nn.Module):
    """Single (one dw5x5 + pw pair) or double (two pairs through a narrow bottleneck) BlazeBlock."""

    def __init__(self, cin: int, bottleneck: int | None, cout: int, stride: int) -> None:
        super().__init__()
        if bottleneck is None:
            layers = separable(cin, cout, stride)
        else:
            layers = [*separable(cin, bottleneck, stride), nn.ReLU(inplace=True), *separable(bottleneck, cout, 1)]
        self.branch = nn.Sequential(*layers)
        if stride > 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.MaxPool2d(stride, stride), ConvBNAct(cin, cout, 1))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


class BlazeFaceBackbone(nn.Module):
    """The trunk (stem and blocks; its own forward returns the last map); backbone mode returns the
    stride-8 (16x16x96) and stride-16 (8x8x96) maps for 128x128. There is no head to build."""

    feature_trunk = ("stem", "blocks")
    feature_info = tuple(FeatureInfo(f"blocks.{i}", BLOCKS[i][2], s) for i, s in zip(FEATURE_BLOCKS, (8, 16)))

    def __init__(self, with_head: bool = False, in_chans: int = 3) -> None:
        super().__init__()
        if with_head:
            raise ValueError("blazeface_backbone is a backbone only: it has no classifier head to build")
        self.stem = ConvBNAct(in_chans, 24, 5, 2, act=nn.ReLU)
        self.blocks = nn.Sequential(*(BlazeBlock(*cfg) for cfg in BLOCKS))
        self.apply(torchvision_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


register(ModelSpec(name="blazeface_backbone", family="blazeface", builder=BlazeFaceBackbone, input_size=128,
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0, interpolation="bilinear",
                   classifier_weight="", head_prefixes=(), backbone_only=True))
