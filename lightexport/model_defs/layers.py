"""Small building blocks shared by the model families."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from lightexport.model_defs.features import pyramid_features


class DropPath(nn.Module):
    """Stochastic depth: drop whole residual branches per sample while training; identity in eval."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ConvBNAct(nn.Sequential):
    """conv -> BN (-> activation), a Sequential so that children are named 0, 1, 2 as in torchvision."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d, act: Callable[[], nn.Module] | None = None):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            norm(cout),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad as TF's "SAME": output size ceil(in / stride), any odd pixel of padding at the bottom/right.

    Integer arithmetic only (no ``max``), so torch.fx and the ONNX exporters trace it; valid for
    kernel >= stride, which holds for every strided conv here.
    """
    h, w = x.shape[-2:]
    pad_h = kernel - stride + (-h) % stride
    pad_w = kernel - stride + (-w) % stride
    return nn.functional.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class SameConvBNAct(ConvBNAct):
    """A strided ConvBNAct that pads as TF's "SAME" (:func:`pad_same`, from the input size at run time).

    For the ports of TF checkpoints (timm's ``tf_*``), trained with that padding. The conv itself
    has no padding and stays a plain ``nn.Conv2d``, so BatchNorm fusion folds it as usual.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1, **kwargs) -> None:
        super().__init__(cin, cout, kernel, stride, groups, **kwargs)
        self[0].padding = (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self[0].kernel_size[0], self[0].stride[0]))


def torchvision_init(m: nn.Module) -> None:
    """The initialization torchvision's mobile networks use (``module.apply(torchvision_init)``)."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0, 0.01)
        nn.init.zeros_(m.bias)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of ``divisor`` without losing more than 10% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcitation(nn.Module):
    """Channel gate: global average -> 1x1 reduce + ``act`` -> 1x1 expand -> ``gate``, times the input.

    Submodules are named ``fc1``/``fc2`` as in torchvision's MobileNetV3 and EfficientNet checkpoints.
    """

    def __init__(self, channels: int, squeeze: int, act: Callable[[], nn.Module] = nn.ReLU,
                 gate: Callable[[], nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = act()
        self.scale_activation = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(scale))))


class FeaturesNet(nn.Module):
    """torchvision's layout for mobile networks: ``features`` (a Sequential), global pooling, ``classifier``.

    ``head`` is the (last conv, classifier) pair; without it the network is the trunk that
    backbone mode wraps (:class:`~lightexport.model_defs.features.FeatureNet`), whose feature
    maps are the last layer at each of the strides 4, 8, 16 and 32 (``strides`` and ``channels``
    give each layer's cumulative stride and output width).
    """

    feature_trunk = ("features",)

    def __init__(self, layers: list[nn.Module], strides: list[int], channels: list[int],
                 head: tuple[nn.Module, nn.Module] | None):
        super().__init__()
        self.feature_info = pyramid_features("features", strides, channels)
        if head is not None:
            layers = [*layers, head[0]]
            self.classifier = head[1]
        self.features = nn.Sequential(*layers)
        self.apply(torchvision_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))
