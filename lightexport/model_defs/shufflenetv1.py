"""ShuffleNetV1 (Zhang et al., CVPR 2018) for 1, 2, 3, 4 or 8 groups at widths 0.5x-2.0x.

Pointwise convs are grouped to cut their cost by the group count; a channel shuffle after the
first one lets information cross groups (otherwise each group would only ever see its own
slice of channels). A unit is: grouped 1x1 (bottleneck, a quarter of the output width) + BN +
ReLU, shuffle, depthwise 3x3 (stride) + BN, grouped 1x1 + BN, then the shortcut: added for
stride 1; for stride 2 a 3x3 average pool (stride 2) of the input is concatenated instead, which
widens the output cheaply. ReLU follows the join. Stage 2's first 1x1 is not grouped (its 24
input channels are too few to split), as in the paper.

No library ships this network, so the tree is our own: ``conv1``, ``stage2-4`` of units
(``conv_pw1/bn1``, ``conv_dw/bn2``, ``conv_pw2/bn3``), ``fc``.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.features import FeatureInfo
from lightexport.model_defs.layers import ConvBNAct, torchvision_init
from lightexport.model_defs.registry import ModelSpec, register

REPEATS = (4, 8, 4)
# Stage 2 output width at 1x per group count (paper, Table 1); stages 3 and 4 double it.
STAGE2_WIDTH = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
WIDTHS = {"050": 0.5, "100": 1.0, "150": 1.5, "200": 2.0}
ReLU = partial(nn.ReLU, inplace=True)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """One reshape -> transpose -> reshape: input channel ``a * (c/g) + i`` (group a) becomes output ``i * g + a``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def stage_widths(groups: int, width: float) -> tuple[int, list[int]]:
    """(stem width, stage 2-4 widths): stage widths scale with ``width``, rounded to a multiple of
    4 * groups so that the bottleneck (a quarter) still splits into the groups; the stem is 24
    (48 at 2x, half at 0.5x), rounded up to a multiple of the groups for the concat shortcut."""
    unit = 4 * groups
    base = max(unit, int(STAGE2_WIDTH[groups] * width / unit + 0.5) * unit)
    stem = {0.5: 12, 2.0: 48}.get(width, 24)
    stem = -(-stem // groups) * groups
    return stem, [base, base * 2, base * 4]


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int, first_grouped: bool = True) -> None:
        super().__init__()
        self.stride, self.groups = stride, groups
        mid = cout // 4
        branch_out = cout - cin if stride > 1 else cout  # stride 2 concatenates the pooled input
        self.conv_pw1 = nn.Conv2d(cin, mid, 1, groups=groups if first_grouped else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = ReLU()
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv_pw2 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride > 1 else None
        self.act = ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw1(x)))
        if self.groups > 1:
            y = channel_shuffle(y, self.groups)
        y = self.bn3(self.conv_pw2(self.bn2(self.conv_dw(y))))
        if self.pool is not None:
            return self.act(torch.cat((self.pool(x), y), dim=1))
        return self.act(x + y)


class ShuffleNetV1(nn.Module):
    """ShuffleNetV1 classifier; ``with_head=False`` builds the trunk for backbone mode (no ``fc``)."""

    #: backbone mode's maps: after the max-pool (stride 4) and after each stage (8, 16, 32)
    feature_trunk = ("conv1", "maxpool", "stage2", "stage3", "stage4")

    def __init__(self, groups: int = 3, width: float = 1.0, num_classes: int = 1000, with_head: bool = True,
                 in_chans: int = 3) -> None:
        super().__init__()
        stem, widths = stage_widths(groups, width)
        self.conv1 = ConvBNAct(in_chans, stem, 3, 2, act=ReLU)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem
        for i, (repeats, cout) in enumerate(zip(REPEATS, widths), start=2):
            units = [ShuffleUnit(cin, cout, 2, groups, first_grouped=i > 2)]
            units += [ShuffleUnit(cout, cout, 1, groups) for _ in range(repeats - 1)]
            setattr(self, f"stage{i}", nn.Sequential(*units))
            cin = cout
        self.feature_info = [FeatureInfo(name, c, 2 ** (i + 2)) for i, (name, c) in
                             enumerate(zip(self.feature_trunk[1:], [stem, *widths]))]
        if with_head:
            self.fc = nn.Linear(cin, num_classes)
        self.apply(torchvision_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(x.mean([2, 3]))


for _groups in STAGE2_WIDTH:
    for _tag, _width in WIDTHS.items():
        register(ModelSpec(name=f"shufflenet_v1_g{_groups}_{_tag}", family="shufflenetv1", builder=ShuffleNetV1,
                           input_size=224, crop_pct=0.875, interpolation="bilinear",
                           config=dict(groups=_groups, width=_width), classifier_weight="fc.weight",
                           head_prefixes=("fc.",)))
