"""EfficientNet-Lite0..4 (TensorFlow's edge release of EfficientNet) with timm's parameter names.

The Lite variants drop squeeze-excitation, use ReLU6 instead of swish and keep the stem (32)
and head (1280) widths fixed when scaling, so they quantize well and run on accelerators
without sigmoid or global-pool-inside-block support. The module tree follows timm's
``tf_efficientnet_lite*`` (``conv_stem``, ``bn1``, ``blocks.S.B.conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3``,
``conv_head``, ``bn2``, ``classifier``), whose ports of the TF checkpoints load as they are;
checkpoints in the ``efficientnet_pytorch`` layout (``_blocks.N._expand_conv``...) are renamed.

The TF checkpoints were trained with TF's "SAME" padding, which pads stride-2 convs by one
pixel more at the bottom/right than at the top/left when the input is even. Reproducing it
exactly matters for the trained weights, so stride-2 convs pad the input themselves
(:func:`pad_same`) before a plain ``nn.Conv2d`` with no padding: the conv stays a standard
layer that BatchNorm fusion recognizes, and the padding follows the input size at run time.
"""

from __future__ import annotations

import math
import re
from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.features import pyramid_features
from lightexport.model_defs.layers import make_divisible, pad_same, torchvision_init
from lightexport.model_defs.registry import ModelSpec, StateDict, register

# Per stage: block type (ds: depthwise separable, ir: inverted residual), repeats, kernel, stride, expansion, width.
STAGES = (("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40), ("ir", 3, 3, 2, 6, 80),
          ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192), ("ir", 1, 3, 1, 6, 320))
# name: (width multiplier, depth multiplier, input resolution, dropout), as in TF's efficientnet_lite_builder.
VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}
STEM_WIDTH, HEAD_WIDTH = 32, 1280
BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)  # TF's default epsilon
ReLU6 = partial(nn.ReLU6, inplace=True)


def stage_repeats(depth_mult: float) -> list[int]:
    """Blocks per stage: scaled up (ceil) except the first and last stage, which TF's Lite keeps fixed."""
    last = len(STAGES) - 1
    return [r if i in (0, last) else math.ceil(r * depth_mult) for i, (_, r, *_rest) in enumerate(STAGES)]


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free conv; stride-2 ones get no padding of their own (their caller applies :func:`pad_same`)."""
    return nn.Conv2d(cin, cout, kernel, stride, 0 if stride > 1 else kernel // 2, groups=groups, bias=False)


def _same(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if layer.stride[0] > 1:
        x = pad_same(x, layer.kernel_size[0], layer.stride[0])
    return layer(x)


class DepthwiseSeparable(nn.Module):
    """First stage: depthwise k x k + BN + ReLU6, pointwise 1x1 + BN (linear)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNorm(cin)
        self.act1 = ReLU6()
        self.conv_pw = conv(cin, cout, 1)
        self.bn2 = BatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.act1(self.bn1(_same(self.conv_dw, x)))))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excitation: 1x1 expand + BN + ReLU6, depthwise + BN + ReLU6, 1x1 project + BN."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = conv(cin, hidden, 1)
        self.bn1 = BatchNorm(hidden)
        self.act1 = ReLU6()
        self.conv_dw = conv(hidden, hidden, kernel, stride, groups=hidden)
        self.bn2 = BatchNorm(hidden)
        self.act2 = ReLU6()
        self.conv_pwl = conv(hidden, cout, 1)
        self.bn3 = BatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.bn3(self.conv_pwl(self.act2(self.bn2(_same(self.conv_dw, y)))))
        return x + y if self.has_skip else y


def stem(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The stem, a trunk step of its own: its conv pads the input as TF's "SAME" first (:func:`_same`)."""
    return net.act1(net.bn1(_same(net.conv_stem, x)))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier; ``with_head=False`` builds the trunk for backbone mode (no head)."""

    feature_trunk = (stem, "blocks")

    def __init__(self, variant: str = "lite0", num_classes: int = 1000, dropout: float | None = None,
                 with_head: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        width_mult, depth_mult, _, default_dropout = VARIANTS[variant]
        self.conv_stem = conv(in_chans, STEM_WIDTH, 3, 2)
        self.bn1 = BatchNorm(STEM_WIDTH)
        self.act1 = ReLU6()
        cin, stride_so_far, stages, strides, channels = STEM_WIDTH, 2, [], [], []
        for (kind, _, kernel, stride, expansion, width), repeats in zip(STAGES, stage_repeats(depth_mult)):
            cout = make_divisible(width * width_mult)
            blocks: list[nn.Module] = []
            for b in range(repeats):
                s = stride if b == 0 else 1
                blocks.append(DepthwiseSeparable(cin, cout, kernel, s) if kind == "ds"
                              else InvertedResidual(cin, cout, kernel, s, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
            stride_so_far *= stride
            strides.append(stride_so_far)
            channels.append(cout)
        self.blocks = nn.Sequential(*stages)
        self.feature_info = pyramid_features("blocks", strides, channels)
        if with_head:
            self.conv_head = conv(cin, HEAD_WIDTH, 1)
            self.bn2 = BatchNorm(HEAD_WIDTH)
            self.act2 = ReLU6()
            self.dropout = nn.Dropout(default_dropout if dropout is None else dropout)
            self.classifier = nn.Linear(HEAD_WIDTH, num_classes)
        self.apply(torchvision_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.bn2(self.conv_head(self.blocks(stem(self, x)))))
        return self.classifier(self.dropout(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))


# efficientnet_pytorch's names (lukemelas' port, and the Lite ports built on it) -> timm's, per position.
_BLOCK_RENAMES = {  # keyed by whether the block has an expansion conv (inverted residual) or not (first stage)
    True: {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_project_conv": "conv_pwl", "_bn2": "bn3"},
    False: {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
}
_TOP_RENAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def checkpoint_filter(state_dict: StateDict, model: nn.Module | None = None, *, variant: str = "lite0") -> StateDict:
    """Rename an ``efficientnet_pytorch``-layout checkpoint to timm's names; timm-layout ones pass through.

    The flat block index ``_blocks.N`` becomes ``blocks.<stage>.<block>`` by the variant's stage
    depths; a block is an inverted residual exactly when it has an ``_expand_conv``.
    """
    if not any(k.startswith("_blocks.") for k in state_dict):
        return state_dict
    position = [(s, b) for s, r in enumerate(stage_repeats(VARIANTS[variant][1])) for b in range(r)]
    expands = {m.group(1) for k in state_dict if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: StateDict = {}
    for key, value in state_dict.items():
        if m := _BLOCK_KEY.match(key):
            index, module, param = m.groups()
            renames = _BLOCK_RENAMES[index in expands]
            if int(index) >= len(position) or module not in renames:
                out[key] = value  # left as is: the strict load names it as unexpected
                continue
            stage, block = position[int(index)]
            out[f"blocks.{stage}.{block}.{renames[module]}.{param}"] = value
        else:
            module, _, param = key.partition(".")
            out[f"{_TOP_RENAMES.get(module, module)}.{param}"] = value
    return out


for _variant, (_, _, _size, _) in VARIANTS.items():
    register(ModelSpec(
        name=f"efficientnet_{_variant}", family="efficientnet_lite", builder=EfficientNetLite, input_size=_size,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=round(_size / (_size + 32), 3),  # TF: crop padding 32
        interpolation="bicubic", config=dict(variant=_variant),
        checkpoint_filter=partial(checkpoint_filter, variant=_variant), classifier_weight="classifier.weight",
        head_prefixes=("conv_head.", "bn2.", "classifier."), aliases=(f"tf_efficientnet_{_variant}",),
        checkpoints=("timm tf_efficientnet_lite*", "efficientnet_pytorch layout"),
    ))
