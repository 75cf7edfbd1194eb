"""MobileNetV1 (Howard et al., 2017) with timm's parameter names (the ImageNet weights PyTorch users have).

Thirteen depthwise-separable blocks (depthwise 3x3 + BN + ReLU6, then pointwise 1x1 + BN +
ReLU6) after a stride-2 stem; no residuals. Names follow timm (``conv_stem``, ``bn1``,
``blocks.i.j.conv_dw/bn1/conv_pw/bn2``, ``classifier``), whose checkpoints load as they are.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.features import pyramid_features
from lightexport.model_defs.layers import make_divisible, torchvision_init
from lightexport.model_defs.registry import ModelSpec, register

# Stages of (output width, stride) per block.
STAGES = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1)),
    ((1024, 2), (1024, 1)),
)
ReLU6 = partial(nn.ReLU6, inplace=True)  # as timm and TF-slim (the paper says ReLU)


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn2(self.conv_pw(self.act(self.bn1(self.conv_dw(x))))))


class MobileNetV1(nn.Module):
    """MobileNetV1 classifier; ``with_head=False`` builds the trunk for backbone mode (no ``classifier``)."""

    feature_trunk = ("conv_stem", "bn1", "act1", "blocks")

    def __init__(self, width: float = 1.0, num_classes: int = 1000, with_head: bool = True, in_chans: int = 3):
        super().__init__()
        cin = make_divisible(32 * width)
        self.conv_stem = nn.Conv2d(in_chans, cin, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = ReLU6()
        stages, strides, channels = [], [], []
        for stage in STAGES:
            blocks = []
            for c, stride in stage:
                blocks.append(DepthwiseSeparable(cin, make_divisible(c * width), stride))
                cin = make_divisible(c * width)
            stages.append(nn.Sequential(*blocks))
            strides.append((strides[-1] if strides else 2) * stage[0][1])
            channels.append(cin)
        self.blocks = nn.Sequential(*stages)
        self.feature_info = pyramid_features("blocks", strides, channels)
        if with_head:
            self.classifier = nn.Linear(cin, num_classes)
        self.apply(torchvision_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(x), 1), 1))


for _name, _width in (("mobilenetv1_100", 1.0), ("mobilenetv1_125", 1.25)):
    register(ModelSpec(name=_name, family="mobilenetv1", builder=MobileNetV1, input_size=224, crop_pct=0.875,
                       mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), config=dict(width=_width),
                       classifier_weight="classifier.weight", head_prefixes=("classifier.",),
                       aliases=("mobilenet_v1",) if _width == 1.0 else (),
                       checkpoints=("timm mobilenetv1_*",)))
