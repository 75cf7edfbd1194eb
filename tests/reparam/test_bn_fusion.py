"""Property tests: every BN fold is exact, in float64, for any layer geometry it accepts."""

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from lightexport.reparam import ChannelAffine, apply_passes
from lightexport.reparam.bn_fusion import bn_to_affine, fold_bn_into_next_conv, fuse_conv_bn, fuse_linear_bn
from lightexport.reparam.bn_math import fold_bn_before
from tests.conftest import randomize_bn
from tests.reparam.frozen import randomize_like_bn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
SIZE = {1: 11, 2: 9, 3: 7}
EXAMPLES = settings(max_examples=40, deadline=None)
# torch warns that padding='same' with an even kernel copies the input; that is the case under test, not a problem.
SAME_PADDING_COPY = pytest.mark.filterwarnings("ignore:Using padding='same'")


@st.composite
def conv_configs(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    per_dim = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(dims))  # noqa: E731
    groups = draw(st.sampled_from([1, 2, 3, 4]))
    padding = draw(st.sampled_from(["tuple", "same", "valid"]))
    return dict(
        dims=dims,
        in_channels=groups * draw(st.integers(1, 3)),
        out_channels=groups * draw(st.integers(1, 3)),
        kernel_size=per_dim(1, 3),
        stride=(1,) * dims if padding == "same" else per_dim(1, 2),  # torch allows 'same' at stride 1 only
        dilation=per_dim(1, 2),
        padding=per_dim(0, 2) if padding == "tuple" else padding,
        groups=groups,
        bias=draw(st.booleans()),
        padding_mode=draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
        affine=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def _conv(cfg):
    keys = ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "padding", "groups", "bias",
            "padding_mode")
    return CONV[cfg["dims"]](**{k: cfg[k] for k in keys})


def _input(cfg):
    g = torch.Generator().manual_seed(cfg["seed"])
    return torch.randn(2, cfg["in_channels"], *([SIZE[cfg["dims"]]] * cfg["dims"]), generator=g, dtype=torch.float64)


def _reads_zero_padding(cfg):
    """The exactness condition for folding a BN into the conv after it, from the config alone."""
    if cfg["padding_mode"] != "zeros" or cfg["padding"] == "valid":
        return False
    if cfg["padding"] == "same":
        return any(d * (k - 1) for d, k in zip(cfg["dilation"], cfg["kernel_size"]))
    return any(cfg["padding"])


def _assert_same(model, fused, x):
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


@SAME_PADDING_COPY
@EXAMPLES
@given(conv_configs())
def test_conv_bn_fusion_is_exact(cfg):
    model = nn.Sequential(_conv(cfg), BN[cfg["dims"]](cfg["out_channels"], affine=cfg["affine"]))
    model = randomize_bn(model, cfg["seed"]).double().eval()
    fused, report = fuse_conv_bn(copy.deepcopy(model))
    assert report.changed == ["0+1"] and isinstance(fused[1], nn.Identity)
    _assert_same(model, fused, _input(cfg))


@SAME_PADDING_COPY
@EXAMPLES
@given(conv_configs(), st.booleans())
def test_bn_folds_into_next_conv_exactly_when_padding_allows(cfg, zero_shift):
    bn = BN[cfg["dims"]](cfg["in_channels"], affine=cfg["affine"])
    model = randomize_bn(nn.Sequential(nn.ReLU(), bn, _conv(cfg)), cfg["seed"]).double().eval()
    if zero_shift:  # mean 0 and beta 0: the BN only scales, so zero padding stays zero
        bn.running_mean.zero_()
        if bn.bias is not None:
            bn.bias.data.zero_()
    fused, reports = apply_passes(model, ["fold_bn_into_next_conv", "bn_to_affine"])
    folded = reports[0].count == 1
    assert folded == (zero_shift or not _reads_zero_padding(cfg))
    assert folded or reports[0].details == {"skipped_padding": 1}
    assert isinstance(fused[1], nn.Identity if folded else ChannelAffine)
    _assert_same(model, fused, _input(cfg))


def test_why_padded_convs_are_skipped():
    """Forcing the fold past zero padding is wrong exactly on the border, which is why the pass refuses."""
    bn, conv = randomize_bn(nn.BatchNorm2d(3)).double().eval(), nn.Conv2d(3, 2, 3, padding=1).double()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        reference = conv(bn(x))
        fold_bn_before(conv, bn)
        error = (conv(x) - reference).abs()
    assert error[..., 1:-1, 1:-1].max() < 1e-12 and error.max() > 1e-3


class _Flattened(nn.Module):
    """(N, C, 1, 1) -> (N, C) by one of the spellings models use, then the layers under test."""

    def __init__(self, how, layers):
        super().__init__()
        self.how, self.layers = how, nn.Sequential(*layers)
        self.flatten = nn.Flatten()

    def forward(self, x):
        x = {
            "module": lambda: self.flatten(x),
            "function": lambda: torch.flatten(x, 1),
            "method": lambda: x.flatten(1),
            "view": lambda: x.view(x.size(0), -1),
            "reshape": lambda: x.reshape(x.shape[0], -1),
        }[self.how]()
        return self.layers(x)


@EXAMPLES
@given(
    st.integers(1, 9), st.integers(1, 9), st.booleans(), st.booleans(), st.booleans(),
    st.sampled_from(["module", "function", "method", "view", "reshape"]), st.integers(0, 999),
)
def test_linear_bn1d_both_orders(n_in, n_out, bias, affine, bn_first, how, seed):
    layers = [nn.BatchNorm1d(n_in, affine=affine), nn.Linear(n_in, n_out, bias=bias)] if bn_first else \
        [nn.Linear(n_in, n_out, bias=bias), nn.BatchNorm1d(n_out, affine=affine)]
    model = randomize_bn(_Flattened(how, layers), seed).double().eval()
    fused, report = fuse_linear_bn(copy.deepcopy(model))
    assert report.changed == (["layers.0+layers.1"]) and not report.details
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fused.modules())
    _assert_same(model, fused, torch.randn(4, n_in, 1, 1, dtype=torch.float64))


def test_bn1d_between_two_linears_folds_once():
    model = _Flattened("function", [nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)])
    model = randomize_bn(model).double().eval()
    fused, report = fuse_linear_bn(copy.deepcopy(model))
    assert report.count == 1
    _assert_same(model, fused, torch.randn(4, 5, 1, 1, dtype=torch.float64))


def test_folds_see_through_removed_dropout():
    """A head's Dropout becomes an Identity; the BN1d -> Linear around it still fuses."""
    model = randomize_bn(_Flattened("module", [nn.BatchNorm1d(6), nn.Dropout(0.2), nn.Linear(6, 3)])).double()
    fused, reports = apply_passes(model)
    assert [r.changed for r in reports if r.count] == [["layers.1"], ["layers.0+layers.2"]]
    _assert_same(model.eval(), fused, torch.randn(4, 6, 1, 1, dtype=torch.float64))


def test_bn_to_next_conv_and_to_producer_compose():
    """BN -> conv -> BN: one fold on each side of the same conv."""
    model = randomize_bn(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))).double().eval()
    fused, reports = apply_passes(model, ["fuse_conv_bn", "fold_bn_into_next_conv"])
    assert [r.changed for r in reports] == [["1+2"], ["0+1"]]
    _assert_same(model, fused, torch.randn(2, 3, 5, 5, dtype=torch.float64))


@EXAMPLES
@given(st.sampled_from([(1, 2), (1, 3), (2, 4), (3, 5)]), st.integers(1, 8), st.booleans(), st.integers(0, 999))
def test_bn_to_affine_is_exact(dims_rank, channels, affine, seed):
    dims, rank = dims_rank
    model = randomize_bn(nn.Sequential(BN[dims](channels, affine=affine)), seed).double().eval()
    fused, report = bn_to_affine(copy.deepcopy(model))
    assert report.changed == ["0"] and isinstance(fused[0], ChannelAffine)
    _assert_same(model, fused, torch.randn(3, channels, *([5] * (rank - 2)), dtype=torch.float64))


def _bn_like(kind):
    """BatchNorm flavours from torch, torchvision and timm, all with the same random statistics."""
    factories = {
        "sync": lambda: nn.SyncBatchNorm(4),
        "frozen": lambda: pytest.importorskip("torchvision.ops.misc").FrozenBatchNorm2d(4),
        "timm_act": lambda: pytest.importorskip("timm.layers").BatchNormAct2d(4, act_layer=nn.SiLU),
        "timm_frozen_act": lambda: pytest.importorskip("timm.layers").FrozenBatchNormAct2d(4),
    }
    return randomize_like_bn(factories[kind](), seed=7)


@pytest.mark.parametrize("kind", ["sync", "frozen", "timm_act", "timm_frozen_act"])
@pytest.mark.parametrize("where", ["after_conv", "alone"])
def test_batchnorm_flavours(kind, where):
    bn = _bn_like(kind)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), *([] if where == "after_conv" else [nn.ReLU()]), bn).double().eval()
    fused, reports = apply_passes(model)
    fused_kind = {r.name: r.count for r in reports}
    assert fused_kind["fuse_conv_bn" if where == "after_conv" else "bn_to_affine"] == 1
    # Norm+act layers keep their activation: folding the norm must not drop the act.
    has_act = kind.startswith("timm")
    assert any(isinstance(m, (nn.SiLU, nn.ReLU)) for m in fused[-1].modules()) == has_act
    assert not any(type(m) is type(bn) for m in fused.modules())
    _assert_same(model, fused, torch.randn(2, 3, 6, 6, dtype=torch.float64))


def test_fold_keeps_dtype_and_tied_weights():
    """float32 layers stay float32; a weight shared with another module is not rewritten under it."""
    conv, other = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
    other.weight = conv.weight
    model = randomize_bn(nn.Sequential(conv, nn.BatchNorm2d(4))).eval()
    original = conv.weight.detach().clone()
    fold_bn_into_next_conv(model)
    fuse_conv_bn(model)
    assert model[0].weight.dtype == torch.float32 and model[0].bias.dtype == torch.float32
    assert torch.equal(other.weight, original) and not torch.equal(model[0].weight, original)
