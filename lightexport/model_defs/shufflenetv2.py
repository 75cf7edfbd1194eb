"""ShuffleNetV2 (Ma et al., ECCV 2018) at widths 0.5x-2.0x with torchvision's parameter names.

Each unit splits the channels in half, transforms one half (1x1, 3x3 depthwise, 1x1),
concatenates and shuffles the two groups; downsampling units transform both halves
from the full input. Names follow torchvision (``conv1``, ``stage2-4``, ``conv5``,
``fc``), whose ImageNet checkpoints load as they are.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.features import FeatureInfo
from lightexport.model_defs.layers import ConvBNAct, torchvision_init
from lightexport.model_defs.registry import ModelSpec, register

REPEATS = (4, 8, 4)
# Output widths of conv1, stage2, stage3, stage4 and conv5 per width multiplier (paper, Table 5).
WIDTHS = {
    "x0_5": (24, 48, 96, 192, 1024),
    "x1_0": (24, 116, 232, 464, 1024),
    "x1_5": (24, 176, 352, 704, 1024),
    "x2_0": (24, 244, 488, 976, 2048),
}
ReLU = partial(nn.ReLU, inplace=True)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups: (g, c/g) -> (c/g, g), so the branches exchange information."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:  # both halves come from the whole input
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), ReLU(),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else half, half, 1, bias=False), nn.BatchNorm2d(half), ReLU(),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(transformed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 classifier; ``with_head=False`` builds the trunk for backbone mode (no ``conv5``, no ``fc``)."""

    #: backbone mode's maps: after the max-pool (stride 4) and after each stage (8, 16, 32)
    feature_trunk = ("conv1", "maxpool", "stage2", "stage3", "stage4")

    def __init__(self, width: str = "x1_0", num_classes: int = 1000, with_head: bool = True, in_chans: int = 3):
        super().__init__()
        widths = WIDTHS[width]
        self.conv1 = ConvBNAct(in_chans, widths[0], 3, 2, act=ReLU)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = widths[0]
        for i, (repeats, cout) in enumerate(zip(REPEATS, widths[1:4]), start=2):
            units = [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{i}", nn.Sequential(*units))
            cin = cout
        self.feature_info = [FeatureInfo(name, c, 2 ** (i + 2)) for i, (name, c) in
                             enumerate(zip(self.feature_trunk[1:], widths[:4]))]
        if with_head:
            self.conv5 = ConvBNAct(cin, widths[4], 1, act=ReLU)
            self.fc = nn.Linear(widths[4], num_classes)
        self.apply(torchvision_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(self.conv5(x).mean([2, 3]))


for _width in WIDTHS:
    register(ModelSpec(name=f"shufflenet_v2_{_width}", family="shufflenetv2", builder=ShuffleNetV2, input_size=224,
                       crop_pct=0.875, interpolation="bilinear", config=dict(width=_width),
                       classifier_weight="fc.weight", head_prefixes=("conv5.", "fc."),
                       checkpoints=("torchvision",)))
