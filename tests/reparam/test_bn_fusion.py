"""Property tests: every BN fold is exact for any conv geometry (checked in float64)."""

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from lightexport.reparam import ChannelAffine, apply_passes
from lightexport.reparam.bn_fusion import bn_to_affine, fuse_conv_bn, fuse_linear_bn
from tests.conftest import randomize_bn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


@st.composite
def conv_configs(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    groups = draw(st.sampled_from([1, 2, 3, 4]))
    in_ch = groups * draw(st.integers(1, 3))
    out_ch = groups * draw(st.integers(1, 3))
    return dict(
        dims=dims,
        in_channels=in_ch,
        out_channels=out_ch,
        kernel_size=draw(st.integers(1, 3)),
        stride=draw(st.integers(1, 2)),
        dilation=draw(st.integers(1, 2)),
        padding=draw(st.integers(0, 2)),
        groups=groups,
        bias=draw(st.booleans()),
        padding_mode=draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
        affine=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def _conv(cfg):
    kwargs = {k: cfg[k] for k in ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "padding",
                                  "groups", "bias", "padding_mode")}
    return CONV[cfg["dims"]](**kwargs)


def _input(cfg, size=9):
    g = torch.Generator().manual_seed(cfg["seed"])
    return torch.randn(2, cfg["in_channels"], *([size] * cfg["dims"]), generator=g, dtype=torch.float64)


def _assert_same(model, fused, x):
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(conv_configs())
def test_conv_bn_fusion_is_exact(cfg):
    conv = _conv(cfg)
    model = nn.Sequential(conv, BN[cfg["dims"]](cfg["out_channels"], affine=cfg["affine"]))
    model = randomize_bn(model, cfg["seed"]).double().eval()
    fused, report = fuse_conv_bn(copy.deepcopy(model))
    assert report.count == 1 and isinstance(fused[1], nn.Identity)
    _assert_same(model, fused, _input(cfg))


@settings(max_examples=40, deadline=None)
@given(conv_configs())
def test_bn_folds_into_next_conv_only_when_exact(cfg):
    model = nn.Sequential(nn.ReLU(), BN[cfg["dims"]](cfg["in_channels"], affine=cfg["affine"]), _conv(cfg))
    model = randomize_bn(model, cfg["seed"]).double().eval()
    fused, reports = apply_passes(model, ["fold_bn_into_next_conv", "bn_to_affine"])
    folded = reports[0].count == 1
    assert folded == (cfg["padding"] == 0)  # padding reads zeros the BN would have shifted
    assert isinstance(fused[1], nn.Identity if folded else ChannelAffine)
    _assert_same(model, fused, _input(cfg))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.booleans(), st.booleans(), st.integers(0, 999))
def test_linear_bn1d_both_orders(n_in, n_out, bias, bn_first, seed):
    layers = [nn.BatchNorm1d(n_in), nn.Linear(n_in, n_out, bias=bias)] if bn_first else \
        [nn.Linear(n_in, n_out, bias=bias), nn.BatchNorm1d(n_out)]
    model = randomize_bn(nn.Sequential(nn.Flatten(1), *layers), seed).double().eval()
    fused, report = fuse_linear_bn(copy.deepcopy(model))
    assert report.count == 1 and not any(isinstance(m, nn.BatchNorm1d) for m in fused.modules())
    _assert_same(model, fused, torch.randn(4, n_in, dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([1, 2, 3]), st.integers(1, 8), st.booleans(), st.integers(0, 999))
def test_bn_to_affine_is_exact(dims, channels, affine, seed):
    model = randomize_bn(nn.Sequential(BN[dims](channels, affine=affine)), seed).double().eval()
    fused, report = bn_to_affine(copy.deepcopy(model))
    assert report.count == 1 and isinstance(fused[0], ChannelAffine)
    _assert_same(model, fused, torch.randn(3, channels, *([5] * dims), dtype=torch.float64))


class _ConvFeedsBnAndResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y  # folding BN into conv would corrupt the residual


class _SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x * 2)


@pytest.mark.parametrize("module", [_ConvFeedsBnAndResidual, _SharedConv])
def test_unsafe_pairs_are_not_fused(module):
    model = randomize_bn(module()).double().eval()
    fused, reports = apply_passes(model)
    by_name = {r.name: r for r in reports}
    assert by_name["fuse_conv_bn"].count == 0 and by_name["bn_to_affine"].changed == ["bn"]
    _assert_same(model, fused, torch.randn(2, 4, 6, 6, dtype=torch.float64))


def test_training_mode_bn_is_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    _, report = fuse_conv_bn(model)
    assert report.count == 0 and report.details["skipped"] == 1


def test_untraceable_model_is_fused_piecewise():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
            self.b = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))

        def forward(self, x):
            x = self.a(x)
            return self.b(x) if x.sum() > 0 else -self.b(x)  # fx cannot trace a tensor-valued branch

    model = randomize_bn(DataDependent()).double().eval()
    fused, reports = apply_passes(model, ["fuse_conv_bn"])
    assert reports[0].count == 2
    _assert_same(model, fused, torch.randn(1, 3, 9, 9, dtype=torch.float64))
