"""Independent check: timm's implementations, with the same weights, give the same outputs as ours."""

import pytest
import torch

from lightexport.loading import load_model
from lightexport.model_defs import get_spec
from lightexport.model_defs.complexity import complexity
from tests.conftest import randomize_bn
from tests.model_defs.reference_checks import assert_checkpoint_reproduces, fused_onnx_ops

timm = pytest.importorskip("timm")

# our name -> (indices of timm's `blocks` ending at strides 4/8/16/32, published GMACs, extra checkpoint keys)
FAMILIES = {
    # GhostNetV2 checkpoints come as {'state_dict': ...} with thop's counters in them (official release)
    "ghostnetv2_100": ((2, 4, 6, 8), 0.167, {"blocks.0.0.total_ops": torch.zeros(1), "total_params": torch.zeros(1)}),
    "ghostnetv2_160": ((2, 4, 6, 8), 0.399, {}),
    "mobilenetv1_100": ((1, 2, 3, 4), 0.569, {}),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    torch.manual_seed(0)
    reference = randomize_bn(timm.create_model(request.param, pretrained=False).eval())
    path = tmp_path_factory.mktemp("ckpt") / f"{request.param}.pth.tar"
    torch.save({"state_dict": {**reference.state_dict(), **FAMILIES[request.param][2]}}, path)
    return request.param, reference, path


def test_checkpoint_gives_timm_outputs(family):
    name, reference, path = family
    assert_checkpoint_reproduces(name, reference, path)
    params, gmacs = complexity(get_spec(name))
    assert params == sum(p.numel() for p in reference.parameters())
    assert gmacs == pytest.approx(FAMILIES[name][1], abs=0.002)  # the paper's / timm's figure


def test_backbone_mode_returns_the_stage_ends(family):
    name, reference, path = family
    backbone = load_model(name, path, features=True)
    x = torch.randn(1, 3, 224, 224)
    ends = FAMILIES[name][0]
    with torch.no_grad():
        feats = backbone.module(x)
        stem_act = getattr(reference, "act1", torch.nn.Identity())  # timm's EfficientNet-style bn1 has it inside
        y, want = stem_act(reference.bn1(reference.conv_stem(x))), []
        for i, stage in enumerate(reference.blocks[: ends[-1] + 1]):
            y = stage(y)
            if i in ends:
                want.append(y)
    assert [224 // f.shape[-1] for f in feats] == [4, 8, 16, 32]
    for got, expected in zip(feats, want):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_fused_onnx_matches(tmp_path, family):
    name, _, path = family
    ops = fused_onnx_ops(tmp_path, name, path)
    assert "BatchNormalization" not in ops, ops
    assert ("Resize" in ops) == name.startswith("ghostnetv2")  # DFC attention's nearest upsampling
