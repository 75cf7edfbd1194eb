"""GoogLeNet (Inception v1, Szegedy et al., CVPR 2015) and Inception v3 (Szegedy et al., CVPR 2016).

Module trees and parameter names follow torchvision (``conv1``, ``inception3a.branch2.1.conv``,
``aux1.fc1``; ``Conv2d_1a_3x3``, ``Mixed_5b.branch5x5_2``, ``AuxLogits``), whose ImageNet
checkpoints (ported from TF) load as they are. Both use BatchNorm after every conv, as the
BN-Inception of v2 introduced. In torchvision's GoogLeNet (and so in its checkpoint) the third
branch, the paper's 5x5 one, has a 3x3 kernel; kept, since the weights are shaped for it.

The auxiliary classifiers only ever run in training mode (they feed extra losses); they stay in
the model so that checkpoints load strictly, and the ``remove_training_branches`` reparam pass
drops them for export. torchvision's ``transform_input`` re-normalizes ImageNet-normalized input
to the [-1, 1] range the TF weights were trained on; here that range is the registered
preprocessing (mean = std = 0.5), so the exported graph does not carry the conversion.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from lightexport.model_defs.features import FeatureInfo, pyramid_indices
from lightexport.model_defs.registry import ModelSpec, register

IntPair = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """conv (no bias) -> BN (eps 1e-3, as the TF originals) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _transform_input(x: torch.Tensor) -> torch.Tensor:
    """torchvision's conversion of ImageNet-normalized input to (x - 0.5) / 0.5, per channel."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return torch.cat([x[:, i : i + 1] * (std[i] / 0.5) + (mean[i] - 0.5) / 0.5 for i in range(3)], 1)


def _transform_step(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`_transform_input` as the first trunk step of a model built with ``transform_input=True``."""
    return _transform_input(x)


class _Trunk(nn.Module):
    """A chain of named layers (``trunk``) and a classifier; backbone mode takes the last layer at strides 4-32."""

    trunk: Sequence[str]
    strides: Sequence[int]
    widths: Sequence[int]  # each trunk layer's output channels

    def _setup_head(self, with_head: bool, dropout: float, width: int, num_classes: int) -> None:
        self.feature_trunk = ((_transform_step,) if self.transform_input else ()) + tuple(self.trunk)
        self.feature_info = [FeatureInfo(self.trunk[i], self.widths[i], self.strides[i])
                             for i in pyramid_indices(self.strides)]
        if with_head:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.01 if isinstance(m, nn.Linear) else 0.1, a=-2, b=2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class Inception(nn.Module):
    """GoogLeNet module: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 ("5x5") | 3x3 max-pool -> 1x1, concatenated."""

    def __init__(self, cin: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, 1), BasicConv2d(ch5x5red, ch5x5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNetAux(nn.Module):
    """Auxiliary classifier on an intermediate map (training only): 4x4 pool, 1x1 conv, two FC layers."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(cin, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(nn.functional.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(nn.functional.relu(self.fc1(x), inplace=True)))


# name: (input width, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection) -- paper, Table 1
GOOGLENET_MODULES = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32), "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64), "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64), "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128), "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}  # fmt: skip


class GoogLeNet(_Trunk):
    """GoogLeNet classifier (aux heads run in training mode only); ``with_head=False``: the trunk alone."""

    trunk = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
             "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
             "inception5a", "inception5b")
    strides = (2, 4, 4, 4, 8, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32)
    widths = (64, 64, 64, 192, 192, 256, 480, 480, 512, 512, 512, 528, 832, 832, 832, 1024)

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False,
                 dropout: float = 0.2, with_head: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(in_chans, 64, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name, widths in GOOGLENET_MODULES.items():
            setattr(self, name, Inception(*widths))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.aux_logits = aux_logits and with_head
        if self.aux_logits:
            self.aux1 = GoogLeNetAux(512, num_classes)
            self.aux2 = GoogLeNetAux(528, num_classes)
        self._setup_head(with_head, dropout, 1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.transform_input:
            x = _transform_input(x)
        aux = []
        for name in self.trunk:
            x = getattr(self, name)(x)
            if self.training and self.aux_logits and name in ("inception4a", "inception4d"):
                aux.append((self.aux1 if name == "inception4a" else self.aux2)(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return (logits, aux[1], aux[0]) if aux else logits  # torchvision's order: logits, aux2, aux1


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(nn.functional.avg_pool2d(x, 3, 1, 1)),
        ], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3 | 1x1 -> 3x3 -> strided 3x3 | strided max-pool."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            nn.functional.max_pool2d(x, 3, 2),
        ], 1)


class InceptionC(nn.Module):
    """17x17 module with 7x7 convs factorized into 1x7 and 7x1."""

    def __init__(self, cin: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(nn.functional.avg_pool2d(x, 3, 1, 1)),
        ], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, nn.functional.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """8x8 module whose 3x3 outputs split into parallel 1x3 and 3x1 convs (expanded filter bank)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
            torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1),
            self.branch_pool(nn.functional.avg_pool2d(x, 3, 1, 1)),
        ], 1)


class InceptionAux(nn.Module):
    """Inception v3's auxiliary classifier on the 17x17 grid (training only)."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(cin, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(nn.functional.avg_pool2d(x, 5, 3)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(_Trunk):
    """Inception v3 classifier (aux head in training mode only); ``with_head=False``: the trunk alone."""

    trunk = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
             "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
             "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
    strides = (2, 2, 2, 4, 4, 4, 8, 8, 8, 8, 16, 16, 16, 16, 16, 32, 32, 32)
    widths = (32, 32, 64, 64, 80, 192, 192, 256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048)

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False,
                 dropout: float = 0.5, with_head: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        self.transform_input = transform_input
        self.Conv2d_1a_3x3 = BasicConv2d(in_chans, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, 2)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.aux_logits = aux_logits and with_head
        if self.aux_logits:
            self.AuxLogits = InceptionAux(768, num_classes)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self._setup_head(with_head, dropout, 2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.transform_input:
            x = _transform_input(x)
        aux = None
        for name in self.trunk:
            x = getattr(self, name)(x)
            if self.training and self.aux_logits and name == "Mixed_6e":
                aux = self.AuxLogits(x)
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return (logits, aux) if aux is not None else logits


register(ModelSpec(name="googlenet", family="inception", builder=GoogLeNet, input_size=224, mean=(0.5, 0.5, 0.5),
                   std=(0.5, 0.5, 0.5), crop_pct=0.875, interpolation="bilinear", classifier_weight="fc.weight",
                   head_prefixes=("aux1.", "aux2.", "fc."), checkpoints=("torchvision",)))
register(ModelSpec(name="inception_v3", family="inception", builder=InceptionV3, input_size=299,
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.8742,  # torchvision: resize 342, crop 299
                   interpolation="bilinear", classifier_weight="fc.weight", head_prefixes=("AuxLogits.", "fc."),
                   checkpoints=("torchvision",)))
