"""MobileNetV3 Large and Small (Howard et al., ICCV 2019) with torchvision's parameter names.

Inverted residuals as in MobileNetV2, some with squeeze-excitation (hard-sigmoid gate) and
hard-swish activations, in the NAS-found layouts of the paper's Tables 1 and 2. The module
tree follows torchvision (``features.N.block``, ``classifier.0/3``), whose ImageNet
checkpoints are the ones PyTorch users hold, so they load without remapping.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.layers import ConvBNAct, FeaturesNet, SqueezeExcitation, make_divisible
from lightexport.model_defs.registry import ModelSpec, register

# Per block: kernel, expanded width, output width, squeeze-excitation, activation (RE/HS), stride.
LARGE = (
    (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
)  # fmt: skip
SMALL = (
    (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1),
)  # fmt: skip
ACTIVATIONS = {"RE": partial(nn.ReLU, inplace=True), "HS": partial(nn.Hardswish, inplace=True)}
BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = "HS"):
    return ConvBNAct(cin, cout, kernel, stride, groups, norm=BatchNorm, act=ACTIVATIONS[act] if act else None)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = [conv_bn_act(cin, expanded, 1, act=act)] if expanded != cin else []
        layers.append(conv_bn_act(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4), gate=nn.Hardsigmoid))
        layers.append(conv_bn_act(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class MobileNetV3(FeaturesNet):
    """MobileNetV3 classifier, or four feature maps (strides 4-32) when ``fork_feat=True``."""

    def __init__(self, layout: str = "large", num_classes: int = 1000, dropout: float = 0.2,
                 fork_feat: bool = False, in_chans: int = 3) -> None:
        blocks, head_width = {"large": (LARGE, 1280), "small": (SMALL, 1024)}[layout]
        cin = 16
        layers: list[nn.Module] = [conv_bn_act(in_chans, cin, 3, 2)]
        strides = [2]
        for kernel, expanded, cout, se, act, stride in blocks:
            layers.append(InvertedResidual(cin, kernel, expanded, cout, se, act, stride))
            strides.append(strides[-1] * stride)
            cin = cout
        head = None if fork_feat else (
            conv_bn_act(cin, 6 * cin, 1),
            nn.Sequential(nn.Linear(6 * cin, head_width), nn.Hardswish(inplace=True), nn.Dropout(dropout),
                          nn.Linear(head_width, num_classes)),
        )
        super().__init__(layers, strides, head)


for _layout in ("large", "small"):
    register(ModelSpec(name=f"mobilenet_v3_{_layout}", family="mobilenetv3", builder=MobileNetV3, input_size=224,
                       crop_pct=0.875, interpolation="bilinear", config=dict(layout=_layout),
                       classifier_weight="classifier.3.weight",
                       head_prefixes=(f"features.{len(LARGE if _layout == 'large' else SMALL) + 1}.", "classifier."),
                       checkpoints=("torchvision",)))
