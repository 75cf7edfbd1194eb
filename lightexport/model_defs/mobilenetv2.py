"""MobileNetV2 (Sandler et al., CVPR 2018) with torchvision's parameter names.

torchvision's ImageNet weights are the checkpoints PyTorch users actually hold for this
network, so the module tree follows them: ``features.0`` is the stem, ``features.1-17``
the inverted residual blocks, ``features.18`` the final 1x1 conv, ``classifier.1`` the
linear layer. A torchvision ``state_dict`` loads without remapping.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.layers import ConvBNAct, FeaturesNet, make_divisible
from lightexport.model_defs.registry import ModelSpec, register

# Per stage: expansion t, output channels c, repeats n, stride s of the first block (paper, Table 2).
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS, LAST_CHANNELS = 32, 1280
ReLU6 = partial(nn.ReLU6, inplace=True)


class InvertedResidual(nn.Module):
    """Linear bottleneck: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 project (no activation)."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = [ConvBNAct(cin, hidden, 1, act=ReLU6)] if expand_ratio != 1 else []
        # the projection's conv and BN are direct children (not a ConvBNAct), as in torchvision's checkpoints
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(FeaturesNet):
    """MobileNetV2 classifier, or four feature maps (strides 4-32) when ``fork_feat=True``."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2,
                 fork_feat: bool = False, in_chans: int = 3) -> None:
        cin = make_divisible(STEM_CHANNELS * width_mult)
        layers: list[nn.Module] = [ConvBNAct(in_chans, cin, 3, 2, act=ReLU6)]
        strides = [2]
        for t, c, n, s in STAGES:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                strides.append(strides[-1] * (s if i == 0 else 1))
                cin = cout
        width = make_divisible(LAST_CHANNELS * max(1.0, width_mult))
        head = None if fork_feat else (ConvBNAct(cin, width, 1, act=ReLU6),
                                       nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes)))
        super().__init__(layers, strides, head)


# Only the width with a released torchvision checkpoint; other widths are MobileNetV2(width_mult=...).
register(ModelSpec(name="mobilenet_v2", family="mobilenetv2", builder=MobileNetV2, input_size=224, crop_pct=0.875,
                   interpolation="bilinear", config=dict(width_mult=1.0), classifier_weight="classifier.1.weight",
                   head_prefixes=("features.18.", "classifier.")))
