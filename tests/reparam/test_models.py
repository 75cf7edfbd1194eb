"""The passes on whole networks: ours, timm's and torchvision's, with randomized BatchNorm."""

import pytest
import torch
import torch.nn as nn

from lightexport.errors import UsageError
from lightexport.model_defs import create_model
from lightexport.model_defs.fasternet import Partial_conv3
from lightexport.reparam import apply_passes
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

VARIANTS = ["fasternet_t0", "fasternet_t1", "fasternet_t2", "fasternet_s", "fasternet_m", "fasternet_l"]
STOCHASTIC = ("DropPath", "StochasticDepth", "Dropout")


def _outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _assert_preserved(model, x, tol=1e-4):
    model = model.eval()
    fused, reports = apply_passes(model)
    for ref, got in zip(_outputs(model, x), _outputs(fused, x), strict=True):
        assert (ref - got).abs().max() / (ref.max() - ref.min()) < tol
    leftovers = [n for n, m in fused.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) or type(m).__name__ in STOCHASTIC]
    assert not leftovers, leftovers
    return fused, {r.name: r for r in reports}


@pytest.mark.parametrize("features", [False, True], ids=["classifier", "backbone"])
@pytest.mark.parametrize("name", VARIANTS)
def test_fasternet_variants(name, features):
    model = randomize_bn(create_model(name, fork_feat=features), seed=len(name))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fused, reports = _assert_preserved(model, torch.randn(2, 3, 64, 64))
    # Every BN follows a conv except the backbone's four output norms, which become scale-and-shift.
    assert reports["fuse_conv_bn"].count == n_bn - (4 if features else 0)
    assert reports["bn_to_affine"].count == (4 if features else 0)
    assert all(m.form == "split_cat" for m in fused.modules() if isinstance(m, Partial_conv3))


def test_training_config_drop_path_removed():
    model = create_model("fasternet_l")  # drop_path_rate 0.3: DropPath in every block but the first
    drop_paths = sum(type(m).__name__ == "DropPath" for m in model.modules())
    _, reports = apply_passes(model, ["remove_dropout"])
    assert drop_paths > 0 and reports[0].count == drop_paths


def test_layer_scale_folded_into_last_conv():
    model = create_model("fasternet_t0", layer_scale_init_value=1e-2)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "layer_scale", None) is not None:
                m.layer_scale.uniform_(-2, 2)
    fused, reports = _assert_preserved(randomize_bn(model), torch.randn(2, 3, 64, 64))
    assert reports["reparameterize"].count == sum(model.stages[i].blocks.__len__() for i in (0, 2, 4, 6))
    assert all(getattr(m, "layer_scale", None) is None for m in fused.modules())


@pytest.mark.parametrize("name", ["fasternet_t0", "mobilenetv3_small_100", "efficientnet_b0"])
def test_timm_models(name):
    model = randomize_bn(timm.create_model(name, pretrained=False).double())
    _, reports = _assert_preserved(model, torch.randn(2, 3, 64, 64, dtype=torch.float64), tol=1e-9)
    assert reports["fuse_conv_bn"].count > 10


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5"])
def test_torchvision_models(name):
    model = randomize_bn(getattr(torchvision.models, name)(weights=None).double())
    _, reports = _assert_preserved(model, torch.randn(2, 3, 64, 64, dtype=torch.float64), tol=1e-9)
    assert reports["fuse_conv_bn"].count > 10


def test_timm_batchnorm_act_keeps_its_activation():
    model = randomize_bn(timm.create_model("efficientnet_b0", pretrained=False).double())
    fused, _ = apply_passes(model)
    assert isinstance(model.bn1.act, nn.SiLU) and isinstance(fused.bn1, nn.Sequential)
    assert any(isinstance(m, nn.SiLU) for m in fused.bn1.modules())


def test_caller_model_is_untouched():
    model = randomize_bn(create_model("fasternet_t0"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_passes(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 17


def test_unknown_pass_name_lists_the_valid_ones():
    with pytest.raises(UsageError, match="fuse_conv_bn"):
        apply_passes(create_model("fasternet_t0"), ["fuse_everything"])
