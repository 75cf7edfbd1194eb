"""Independent check: timm implements FasterNet too; the same weights must give the same outputs."""

import pytest
import torch

from lightexport.model_defs import create_model
from lightexport.model_defs.fasternet import checkpoint_filter_fn
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("name", ["fasternet_t0", "fasternet_t2"])
def test_matches_timm_with_timm_weights(name):
    reference = randomize_bn(timm.create_model(name, pretrained=False).eval())
    ours = create_model(name)
    ours.load_state_dict(checkpoint_filter_fn(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_official_parameter_names():
    keys = set(create_model("fasternet_t0").state_dict())
    for key in ["patch_embed.proj.weight", "patch_embed.norm.running_var",
                "stages.0.blocks.0.spatial_mixing.partial_conv3.weight", "stages.0.blocks.0.mlp.0.weight",
                "stages.0.blocks.0.mlp.1.weight", "stages.0.blocks.0.mlp.3.weight", "stages.1.reduction.weight",
                "stages.5.norm.bias", "stages.6.blocks.1.mlp.3.weight", "avgpool_pre_head.1.weight",
                "head.weight", "head.bias"]:
        assert key in keys, key
    backbone = set(create_model("fasternet_t0", fork_feat=True).state_dict())
    assert {"norm0.weight", "norm2.weight", "norm4.weight", "norm6.weight"} <= backbone
    assert not any(k.startswith(("head", "avgpool_pre_head")) for k in backbone)
