"""Xception (Chollet, CVPR 2017) with the parameter names of timm's ``legacy_xception``.

Xception replaces Inception modules by depthwise separable convs: a depthwise 3x3 then a
pointwise 1x1, with no BatchNorm or activation between the two (the paper found a
non-linearity there hurts), BN after the pair. Thirty-six such convs in 14 residual blocks:
an entry flow that downsamples with max-pools (1x1 stride-2 conv + BN on the shortcut), eight
identical middle-flow blocks at 728 channels, and an exit flow to 2048 channels.

The names follow timm's ``legacy_xception`` (the Keras weights ported by Cadene: ``conv1``,
``bn1``, ``block1..12.rep.N.conv1/pointwise``, ``skip/skipbn``, ``conv3/4``, ``fc``), so its
checkpoints load as they are. The stem convs are unpadded (299 -> 149 -> 147), as in Keras.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.features import FeatureInfo
from lightexport.model_defs.registry import ModelSpec, register

ReLU = partial(nn.ReLU, inplace=True)
# Entry, middle and exit flow blocks: (in, out, separable convs, stride, grow_first); the paper's Figure 5.
BLOCKS = ((64, 128, 2, 2, True), (128, 256, 2, 2, True), (256, 728, 2, 2, True),
          *((728, 728, 3, 1, True),) * 8, (728, 1024, 2, 2, False))
NUM_FEATURES = 2048


class SeparableConv2d(nn.Module):
    """Depthwise k x k then pointwise 1x1, nothing in between."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, kernel, stride, padding, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """``reps`` x (ReLU, separable conv, BN), a 3x3 stride-2 max-pool when downsampling, plus the shortcut.

    ``grow_first`` widens in the first separable conv, otherwise in the last (the exit flow's block).
    """

    def __init__(self, cin: int, cout: int, reps: int, stride: int = 1, grow_first: bool = True,
                 start_with_relu: bool = True) -> None:
        super().__init__()
        if cout != cin or stride != 1:
            self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.skipbn = nn.BatchNorm2d(cout)
        else:
            self.skip = None
        layers: list[nn.Module] = []
        for i in range(reps):
            a = cin if i == 0 else (cout if grow_first else cin)
            b = cout if grow_first or i == reps - 1 else cin
            # the first ReLU must not overwrite the block input: the shortcut still needs it
            layers += [nn.ReLU(inplace=i > 0), SeparableConv2d(a, b), nn.BatchNorm2d(b)]
        if not start_with_relu:
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + shortcut


class Xception(nn.Module):
    """Xception classifier; ``with_head=False`` builds the trunk for backbone mode (no ``fc``).

    Backbone mode's maps (strides 4-32) are where timm's ``features_only`` takes them: after
    blocks 1, 2 and 11 through the ReLU the next block applies first (its ``rep.0``, which does
    not work in place) and after the exit flow.
    """

    feature_trunk = ("conv1", "bn1", "act1", "conv2", "bn2", "act2", *(f"block{i}" for i in range(1, len(BLOCKS) + 1)),
                     "conv3", "bn3", "act3", "conv4", "bn4", "act4")
    feature_info = (FeatureInfo("block1", 128, 4, post="block2.rep.0"),
                    FeatureInfo("block2", 256, 8, post="block3.rep.0"),
                    FeatureInfo("block11", 728, 16, post="block12.rep.0"),
                    FeatureInfo("act4", NUM_FEATURES, 32))

    def __init__(self, num_classes: int = 1000, with_head: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.act1 = ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.act2 = ReLU()
        for i, (cin, cout, reps, stride, grow_first) in enumerate(BLOCKS, start=1):
            setattr(self, f"block{i}", Block(cin, cout, reps, stride, grow_first, start_with_relu=i > 1))
        self.conv3 = SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.act3 = ReLU()
        self.conv4 = SeparableConv2d(1536, NUM_FEATURES)
        self.bn4 = nn.BatchNorm2d(NUM_FEATURES)
        self.act4 = ReLU()
        if with_head:
            self.fc = nn.Linear(NUM_FEATURES, num_classes)
        for m in self.modules():  # timm's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        for i in range(1, len(BLOCKS) + 1):
            x = getattr(self, f"block{i}")(x)
        x = self.act3(self.bn3(self.conv3(x)))
        x = self.act4(self.bn4(self.conv4(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


register(ModelSpec(name="xception", family="xception", builder=Xception, input_size=299, crop_pct=0.8975,
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                   classifier_weight="fc.weight", head_prefixes=("fc.",), aliases=("legacy_xception",),
                   checkpoints=("timm legacy_xception",)))
