"""MobileNeXt (Zhou et al., ECCV 2020, "Rethinking Bottleneck Structure for Efficient Mobile Network Design").

The SandGlass block flips MobileNetV2's inverted residual: the shortcut joins the wide
(high-dimensional) tensors, the depthwise 3x3 convs sit at both ends of the block where the
representation is wide, and the 1x1 reduce/expand pair forms a linear bottleneck in the middle
(no activation after the reduction). The module tree follows the authors' code
(``features.{i}.conv.{j}``, ``classifier.1``), so their released state dicts load as they are.

Two block forms besides the full one come from that code and shape its checkpoints: blocks
that change width without a stride have no depthwise convs at all, and downsampling blocks with
expansion 6 keep only the trailing (strided) depthwise conv. A block with a single repeat and
stride 1 (``keep_3x3``) keeps both depthwise convs but has no shortcut.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.features import pyramid_features
from lightexport.model_defs.layers import ConvBNAct, make_divisible
from lightexport.model_defs.registry import ModelSpec, register

# Per stage: reduction ratio t, output channels c, repeats n, stride s of the first block (paper, Table 3).
STAGES = ((2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2), (6, 384, 4, 1), (6, 576, 4, 2),
          (6, 960, 3, 1), (6, 1280, 1, 1))
WIDTHS = {"035": 0.35, "050": 0.5, "075": 0.75, "100": 1.0, "140": 1.4}
ReLU6 = partial(nn.ReLU6, inplace=True)


def bottleneck_width(cin: int, cout: int, reduction: int) -> int:
    """Channels in the block's middle: the input reduced by ``reduction``, but never below ``cout / 6``
    (then rounded to a multiple of 16), so the bottleneck does not starve the wide output."""
    hidden = cin // reduction
    if hidden < cout / 6:
        hidden = make_divisible(math.ceil(cout / 6), 16)
    return hidden


class SandGlass(nn.Module):
    """dw3x3 + BN + ReLU6 -> 1x1 reduce + BN -> 1x1 expand + BN + ReLU6 -> dw3x3 (stride) + BN, + x."""

    def __init__(self, cin: int, cout: int, stride: int, reduction: int, keep_3x3: bool = False) -> None:
        super().__init__()
        hidden = bottleneck_width(cin, cout, reduction)
        leading_dw = reduction == 2 or not (cin != cout and not keep_3x3)
        trailing_dw = reduction == 2 or stride == 2 or cin == cout or keep_3x3
        layers: list[nn.Module] = []
        if leading_dw:
            layers += [nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), ReLU6()]
        layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout), ReLU6()]
        if trailing_dw:
            layers += [nn.Conv2d(cout, cout, 3, stride, 1, groups=cout, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.identity = reduction != 2 and cin == cout and stride == 1 and not keep_3x3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x if self.identity else self.conv(x)


class MobileNeXt(nn.Module):
    """MobileNeXt classifier; ``with_head=False`` builds the trunk for backbone mode (no ``classifier``)."""

    feature_trunk = ("features",)

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000, dropout: float = 0.2,
                 with_head: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        cin = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBNAct(in_chans, cin, 3, 2, act=ReLU6)]
        strides, channels = [2], [cin]
        for t, c, n, s in STAGES:
            # the last stage stays 1280 wide below width 1.0, as in the authors' code
            cout = 1280 if c == 1280 and width_mult < 1 else make_divisible(c * width_mult)
            for i in range(n):
                layers.append(SandGlass(cin, cout, s if i == 0 else 1, t, keep_3x3=i == 0 and n == 1 and s == 1))
                strides.append(strides[-1] * (s if i == 0 else 1))
                channels.append(cout)
                cin = cout
        self.features = nn.Sequential(*layers)
        self.feature_info = pyramid_features("features", strides, channels)
        if with_head:
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """The authors' init: convs N(0, sqrt(2 / (k*k*out))), linear N(0, 0.01), BN and biases 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


for _tag, _width in WIDTHS.items():
    register(ModelSpec(name=f"mobilenext_{_tag}", family="mobilenext", builder=MobileNeXt, input_size=224,
                       crop_pct=0.875, interpolation="bilinear", config=dict(width_mult=_width),
                       classifier_weight="classifier.1.weight", head_prefixes=("classifier.",),
                       checkpoints=("official layout (zhoudaquan/rethinking_bottleneck_design)",)))
