"""EfficientNetV2 S, M, L (Tan & Le, ICML 2021) with torchvision's parameter names.

Early stages use Fused-MBConv (one full k x k conv in place of expand + depthwise), later
ones MBConv with squeeze-excitation sized from the block's input width; SiLU throughout,
BatchNorm eps 1e-3, stochastic depth on residual branches (training only). The module
tree follows torchvision (``features.N.M.block``), whose ImageNet checkpoints load as they are.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.layers import ConvBNAct, DropPath, FeaturesNet, SqueezeExcitation
from lightexport.model_defs.registry import ModelSpec, register

# Per stage: fused?, expansion, kernel, stride, input width, output width, blocks.
STAGES = {
    "s": ((True, 1, 3, 1, 24, 24, 2), (True, 4, 3, 2, 24, 48, 4), (True, 4, 3, 2, 48, 64, 4),
          (False, 4, 3, 2, 64, 128, 6), (False, 6, 3, 1, 128, 160, 9), (False, 6, 3, 2, 160, 256, 15)),
    "m": ((True, 1, 3, 1, 24, 24, 3), (True, 4, 3, 2, 24, 48, 5), (True, 4, 3, 2, 48, 80, 5),
          (False, 4, 3, 2, 80, 160, 7), (False, 6, 3, 1, 160, 176, 14), (False, 6, 3, 2, 176, 304, 18),
          (False, 6, 3, 1, 304, 512, 5)),
    "l": ((True, 1, 3, 1, 32, 32, 4), (True, 4, 3, 2, 32, 64, 7), (True, 4, 3, 2, 64, 96, 7),
          (False, 4, 3, 2, 96, 192, 10), (False, 6, 3, 1, 192, 224, 19), (False, 6, 3, 2, 224, 384, 25),
          (False, 6, 3, 1, 384, 640, 7)),
}  # fmt: skip
VARIANTS = {"s": dict(input_size=384, dropout=0.2), "m": dict(input_size=480, dropout=0.3),
            "l": dict(input_size=480, dropout=0.4)}
HEAD_WIDTH = 1280
BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)
SiLU = partial(nn.SiLU, inplace=True)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> ConvBNAct:
    return ConvBNAct(cin, cout, kernel, stride, groups, norm=BatchNorm, act=SiLU if act else None)


class MBConv(nn.Module):
    """(Fused-)MBConv: ``x + drop_path(block(x))`` when the shape is kept, else ``block(x)``."""

    def __init__(self, fused: bool, expansion: int, kernel: int, stride: int, cin: int, cout: int,
                 drop_path: float) -> None:
        super().__init__()
        expanded = cin * expansion
        self.use_res_connect = stride == 1 and cin == cout
        if fused:
            layers = ([conv_bn(cin, expanded, kernel, stride), conv_bn(expanded, cout, 1, act=False)]
                      if expanded != cin else [conv_bn(cin, cout, kernel, stride)])
        else:
            layers = [conv_bn(cin, expanded, 1)] if expanded != cin else []
            layers += [conv_bn(expanded, expanded, kernel, stride, groups=expanded),
                       SqueezeExcitation(expanded, max(1, cin // 4), act=SiLU),
                       conv_bn(expanded, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.stochastic_depth(self.block(x)) if self.use_res_connect else self.block(x)


class EfficientNetV2(FeaturesNet):
    """EfficientNetV2 classifier, or four feature maps (strides 4-32) when ``fork_feat=True``."""

    def __init__(self, variant: str = "s", num_classes: int = 1000, dropout: float = 0.2,
                 stochastic_depth_prob: float = 0.2, fork_feat: bool = False, in_chans: int = 3) -> None:
        stages = STAGES[variant]
        layers: list[nn.Module] = [conv_bn(in_chans, stages[0][4], 3, 2)]
        strides = [2]
        total, index = sum(stage[-1] for stage in stages), 0
        for fused, expansion, kernel, stride, cin, cout, blocks in stages:
            stage = []
            for b in range(blocks):  # drop-path rate grows linearly with depth over the whole network
                stage.append(MBConv(fused, expansion, kernel, stride if b == 0 else 1, cin if b == 0 else cout,
                                    cout, stochastic_depth_prob * index / total))
                index += 1
            layers.append(nn.Sequential(*stage))
            strides.append(strides[-1] * stride)
        head = None if fork_feat else (conv_bn(stages[-1][5], HEAD_WIDTH, 1),
                                       nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD_WIDTH, num_classes)))
        super().__init__(layers, strides, head)


for _variant, _cfg in VARIANTS.items():
    register(ModelSpec(name=f"efficientnet_v2_{_variant}", family="efficientnetv2", builder=EfficientNetV2,
                       input_size=_cfg["input_size"], crop_pct=1.0, interpolation="bilinear",
                       config=dict(variant=_variant, dropout=_cfg["dropout"]), classifier_weight="classifier.1.weight",
                       head_prefixes=(f"features.{len(STAGES[_variant]) + 1}.", "classifier."),
                       checkpoints=("torchvision",)))
