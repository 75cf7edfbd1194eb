"""Independent check: torchvision's checkpoints load into our families and give the same outputs."""

import pytest
import torch

from lightexport.loading import load_model
from lightexport.model_defs import get_spec
from lightexport.model_defs.complexity import complexity
from tests.conftest import randomize_bn
from tests.model_defs.reference_checks import assert_checkpoint_reproduces, fused_onnx_ops

torchvision = pytest.importorskip("torchvision")

# our name -> (torchvision constructor, how to run torchvision's trunk up to our feature maps)
FAMILIES = {
    "mobilenet_v2": ("mobilenet_v2", lambda tv, x: [tv.features[: i + 1](x) for i in (3, 6, 13, 17)]),
    "mobilenet_v3_large": ("mobilenet_v3_large", lambda tv, x: [tv.features[: i + 1](x) for i in (3, 6, 12, 15)]),
    "mobilenet_v3_small": ("mobilenet_v3_small", lambda tv, x: [tv.features[: i + 1](x) for i in (1, 3, 8, 11)]),
    "shufflenet_v2_x0_5": ("shufflenet_v2_x0_5", lambda tv, x: _shufflenet_trunk(tv, x)),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", lambda tv, x: _shufflenet_trunk(tv, x)),
    "efficientnet_v2_s": ("efficientnet_v2_s", lambda tv, x: [tv.features[: i + 1](x) for i in (2, 3, 5, 6)]),
}
FEATURE_SHAPES = {  # channels and stride of feat0..feat3
    "mobilenet_v2": [(24, 4), (32, 8), (96, 16), (320, 32)],
    "mobilenet_v3_large": [(24, 4), (40, 8), (112, 16), (160, 32)],
    "mobilenet_v3_small": [(16, 4), (24, 8), (48, 16), (96, 32)],
    "shufflenet_v2_x0_5": [(24, 4), (48, 8), (96, 16), (192, 32)],
    "shufflenet_v2_x1_0": [(24, 4), (116, 8), (232, 16), (464, 32)],
    "efficientnet_v2_s": [(48, 4), (64, 8), (160, 16), (256, 32)],
}


def _shufflenet_trunk(tv, x):
    outs = []
    for layer in (tv.conv1, tv.maxpool, tv.stage2, tv.stage3, tv.stage4):
        x = layer(x)
        outs.append(x)
    return outs[1:]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(our name, torchvision model with randomized BN, its state_dict saved as a checkpoint file)."""
    torch.manual_seed(0)
    reference = randomize_bn(getattr(torchvision.models, FAMILIES[request.param][0])(weights=None).eval())
    path = tmp_path_factory.mktemp("ckpt") / f"{request.param}-torchvision.pth"
    torch.save(reference.state_dict(), path)
    return request.param, reference, path


def test_torchvision_checkpoint_gives_torchvision_outputs(family):
    assert_checkpoint_reproduces(*family)


def test_backbone_mode_drops_the_head(family):
    name, reference, path = family
    backbone = load_model(name, path, features=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats, want = backbone.module(x), FAMILIES[name][1](reference, x)
    assert [(f.shape[1], 224 // f.shape[-1]) for f in feats] == FEATURE_SHAPES[name]
    for got, expected in zip(feats, want):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


# GFLOPS (multiply-adds) torchvision documents for its ImageNet weights
PUBLISHED_GMACS = {"mobilenet_v2": 0.30, "mobilenet_v3_large": 0.22, "mobilenet_v3_small": 0.06,
                   "shufflenet_v2_x0_5": 0.04, "shufflenet_v2_x1_0": 0.14, "efficientnet_v2_s": 8.37}


def test_size_matches_torchvision(family):
    name, reference, _ = family
    params, gmacs = complexity(get_spec(name))
    assert params == sum(p.numel() for p in reference.parameters())
    assert gmacs == pytest.approx(PUBLISHED_GMACS[name], abs=0.006)


def test_fused_onnx_matches_the_unfused_model(tmp_path, family):
    ops = fused_onnx_ops(tmp_path, family[0], family[2])
    assert not ops & {"BatchNormalization", "Dropout"}, ops
