"""MobileNetV2 (Sandler et al., CVPR 2018) with torchvision's parameter names.

torchvision's ImageNet weights are the checkpoints PyTorch users actually hold for this
network, so the module tree follows them: ``features.0`` is the stem, ``features.1-17``
the inverted residual blocks, ``features.18`` the final 1x1 conv, ``classifier.1`` the
linear layer. A torchvision ``state_dict`` loads without remapping.
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.layers import ConvBNAct, FeaturesNet, make_divisible
from lightexport.model_defs.registry import ModelSpec, StateDict, register

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
    """MobileNetV2 classifier; ``with_head=False`` builds the trunk for backbone mode (no head)."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2,
                 with_head: bool = True, in_chans: int = 3) -> None:
        cin = make_divisible(STEM_CHANNELS * width_mult)
        layers: list[nn.Module] = [ConvBNAct(in_chans, cin, 3, 2, act=ReLU6)]
        strides, channels = [2], [cin]
        for t, c, n, s in STAGES:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                strides.append(strides[-1] * (s if i == 0 else 1))
                channels.append(cout)
                cin = cout
        width = make_divisible(LAST_CHANNELS * max(1.0, width_mult))
        head = (ConvBNAct(cin, width, 1, act=ReLU6),
                nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))) if with_head else None
        super().__init__(layers, strides, channels, head)


# timm's MobileNetV2 (``mobilenetv2_100``) is the same network (same BN epsilon, symmetric padding) under
# EfficientNet-builder names: blocks.<stage>.<block>.{conv_pw,bn1,conv_dw,bn2,conv_pwl,bn3}; the first
# block (no expansion) is {conv_dw,bn1,conv_pw,bn2}. Per module, the torchvision name inside features.<i>.
_TIMM_FIRST_BLOCK = {"conv_dw": "conv.0.0", "bn1": "conv.0.1", "conv_pw": "conv.1", "bn2": "conv.2"}
_TIMM_BLOCK = {"conv_pw": "conv.0.0", "bn1": "conv.0.1", "conv_dw": "conv.1.0", "bn2": "conv.1.1",
               "conv_pwl": "conv.2", "bn3": "conv.3"}
_TIMM_TOP = {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": "features.18.0",
             "bn2": "features.18.1", "classifier": "classifier.1"}
_TIMM_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)$")


def timm_checkpoint_filter(state_dict: StateDict, model: nn.Module | None = None) -> StateDict:
    """Rename a timm ``mobilenetv2_100`` state dict to torchvision's names; others pass through unchanged."""
    if "conv_stem.weight" not in state_dict:
        return state_dict
    first_index = [1]  # features.<i> of each stage's first block: the stem is features.0
    for _, _, repeats, _ in STAGES:
        first_index.append(first_index[-1] + repeats)
    out: StateDict = {}
    for key, value in state_dict.items():
        if m := _TIMM_BLOCK_KEY.match(key):
            stage, block, module, param = m.groups()
            renames = _TIMM_FIRST_BLOCK if stage == "0" else _TIMM_BLOCK
            if int(stage) < len(STAGES) and module in renames:
                key = f"features.{first_index[int(stage)] + int(block)}.{renames[module]}.{param}"
        else:
            module, _, param = key.partition(".")
            key = f"{_TIMM_TOP[module]}.{param}" if module in _TIMM_TOP else key
        out[key] = value  # a key no rule covers stays as is: the strict load names it
    return out


# Only the width with a released torchvision checkpoint; other widths are MobileNetV2(width_mult=...).
register(ModelSpec(name="mobilenet_v2", family="mobilenetv2", builder=MobileNetV2, input_size=224, crop_pct=0.875,
                   interpolation="bilinear", config=dict(width_mult=1.0), checkpoint_filter=timm_checkpoint_filter,
                   classifier_weight="classifier.1.weight", head_prefixes=("features.18.", "classifier."),
                   aliases=("mobilenetv2_100",), checkpoints=("torchvision", "timm mobilenetv2_100")))
