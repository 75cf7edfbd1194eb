"""Pairs that look fusable by module order but are not: each must be left alone, output unchanged."""

import pytest
import torch
import torch.nn as nn

from lightexport.reparam import ChannelAffine, apply_passes
from lightexport.reparam.bn_fusion import fuse_conv_bn
from tests.conftest import randomize_bn

X = torch.randn(2, 4, 7, 7, dtype=torch.float64)


def _passes(model, x=X, names=None):
    """Apply the passes, check the output is preserved, return the reports by name."""
    model = randomize_bn(model).double().eval()
    fused, reports = apply_passes(model, names)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)
    return fused, {r.name: r for r in reports}


def _skips(report):
    return {k: v for k, v in report.details.items() if k.startswith("skipped_")}


class ConvFeedsBnAndResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y  # folding BN into conv would corrupt the residual


class ResidualThroughIdentity(nn.Module):
    """As above, with the Identity left by a removed dropout in between: it hides nothing."""

    def __init__(self):
        super().__init__()
        self.conv, self.drop, self.bn = nn.Conv2d(4, 4, 1), nn.Dropout(0.1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.drop(self.conv(x))
        return self.bn(y) + y


class ConvCalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x * 2)


class ConvUnderTwoNames(nn.Module):
    """The conv is also the root's own ``shortcut``, called from untraceable code that no graph shows."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
        self.shortcut = self.block[0]

    def forward(self, x):
        y = self.block(x)
        return y + self.shortcut(x) if x.sum() > 0 else y - self.shortcut(x)


class WeightReadDirectly(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + nn.functional.conv2d(x, self.conv.weight)


class DefaultArgumentBranch(nn.Module):
    """fx would trace ``skip`` as a tensor and take the else-branch; real calls take the residual."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x, skip=None):
        y = self.conv(x)
        return self.bn(y) + (y if skip is None else skip)


class BnFeedsConvAndResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.bn(x.relu())
        return self.conv(y) + y


@pytest.mark.parametrize(
    "module, reason",
    [
        (ConvFeedsBnAndResidual, "fanout"),
        (ResidualThroughIdentity, "fanout"),
        (ConvCalledTwice, "shared"),
        (ConvUnderTwoNames, "shared"),
        (WeightReadDirectly, "param_access"),
        (DefaultArgumentBranch, "fanout"),
    ],
)
def test_unsafe_conv_bn_pairs_are_not_fused(module, reason):
    fused, reports = _passes(module())
    assert reports["fuse_conv_bn"].count == 0
    assert _skips(reports["fuse_conv_bn"]) == {f"skipped_{reason}": 1}
    assert reports["bn_to_affine"].count == 1  # the BN still goes, as a scale-and-shift


def test_bn_feeding_conv_and_residual_is_not_folded_forward():
    _, reports = _passes(BnFeedsConvAndResidual())
    assert reports["fold_bn_into_next_conv"].details == {"skipped_fanout": 1}


def test_hooked_conv_is_not_fused():
    """A forward hook (timm's features_only 'hook' mode) observes the conv's own output."""
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o))
    _, reports = _passes(model)
    assert reports["fuse_conv_bn"].details == {"skipped_hooked": 1}


def test_training_mode_bn_is_left_alone():
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))).train()
    _, report = fuse_conv_bn(model)
    assert report.count == 0 and report.details == {"skipped_batch_stats": 1}
    assert isinstance(model[1], nn.BatchNorm2d)


def test_bn_without_running_stats_is_kept():
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    fused, reports = _passes(model)
    assert reports["fuse_conv_bn"].details == {"skipped_batch_stats": 1}
    assert reports["bn_to_affine"].details == {"skipped_batch_stats": 1}
    assert isinstance(fused[1], nn.BatchNorm2d)


class Rank3(nn.Module):
    """BatchNorm1d on (N, C, L) normalizes C; Linear acts on L. Same sizes, different axes."""

    def __init__(self, bn_first, reshape):
        super().__init__()
        self.bn_first, self.reshape = bn_first, reshape
        self.bn, self.fc = nn.BatchNorm1d(4), nn.Linear(4, 4)

    def forward(self, x):
        x = {
            "none": lambda: x,  # (N, 4, 4) arrives as is
            "flatten": lambda: torch.flatten(x, 1, 3),  # (N, 2, 2, 1, 4) -> (N, 4, 4)
            "view": lambda: x.view(x.shape[0], 4, -1),
        }[self.reshape]()
        return self.fc(self.bn(x)) if self.bn_first else self.bn(self.fc(x))


@pytest.mark.parametrize("reshape, shape", [("none", (3, 4, 4)), ("flatten", (3, 2, 2, 1, 4)), ("view", (3, 16))])
@pytest.mark.parametrize("bn_first", [False, True])
def test_linear_bn1d_on_3d_tensors_is_not_fused(bn_first, reshape, shape):
    fused, reports = _passes(Rank3(bn_first, reshape), x=torch.randn(*shape, dtype=torch.float64))
    assert reports["fuse_linear_bn"].details == {"skipped_rank": 1}
    assert isinstance(fused.bn, ChannelAffine)


def test_timm_weight_standardized_conv_is_not_fused():
    layers = pytest.importorskip("timm.layers")
    _, reports = _passes(nn.Sequential(layers.StdConv2d(4, 4, 3), nn.BatchNorm2d(4)))
    assert reports["fuse_conv_bn"].details == {"skipped_custom_forward": 1}


def test_timm_same_padding_conv_folds_only_after():
    """Conv2dSame pads inside its forward: a BN after it folds, one before it would meet that padding."""
    layers = pytest.importorskip("timm.layers")
    model = nn.Sequential(nn.BatchNorm2d(4), layers.Conv2dSame(4, 4, 3, stride=2), nn.BatchNorm2d(4))
    _, reports = _passes(model)
    assert reports["fuse_conv_bn"].count == 1
    assert reports["fold_bn_into_next_conv"].details == {"skipped_custom_forward": 1}


def test_timm_bn_act_before_conv_is_not_folded_across_its_activation():
    layers = pytest.importorskip("timm.layers")
    model = nn.Sequential(layers.BatchNormAct2d(4), nn.Conv2d(4, 4, 1))
    fused, reports = _passes(model)
    assert reports["fold_bn_into_next_conv"].details == {"skipped_activation": 1}
    assert isinstance(fused[0], nn.Sequential) and isinstance(fused[0][1], nn.ReLU)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))

    def forward(self, x):
        x = self.a(x)
        return self.b(x) if x.sum() > 0 else -self.b(x)  # fx cannot trace a tensor-valued branch


def test_untraceable_model_is_fused_piecewise():
    _, reports = _passes(DataDependent())
    assert reports["fuse_conv_bn"].count == 2
    assert reports["fuse_conv_bn"].details == {"untraceable": "<root>"}


def test_only_the_untraceable_module_is_opaque():
    """The Sequentials around it are traced with it as a leaf, so their own conv+BN pairs still fuse."""
    traceable = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    model = nn.Sequential(traceable, nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Sequential(DataDependent()))
    _, reports = _passes(model, x=torch.randn(2, 4, 9, 9, dtype=torch.float64))
    assert reports["fuse_conv_bn"].count == 4
    assert reports["fuse_conv_bn"].details == {"untraceable": "3.0"}


class OpaqueReadsItsNeighbour(nn.Module):
    """Untraceable code that calls a conv living elsewhere: the alias is the only trace of it."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return x + self.conv(x) if x.sum() > 0 else x


def test_conv_also_called_from_opaque_code_is_not_fused():
    conv = nn.Conv2d(4, 4, 1)
    _, reports = _passes(nn.Sequential(conv, nn.BatchNorm2d(4), OpaqueReadsItsNeighbour(conv)))
    assert reports["fuse_conv_bn"].details == {"skipped_shared": 1, "untraceable": "2"}
