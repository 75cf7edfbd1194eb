"""EfficientNet-Lite against timm's ``tf_efficientnet_lite*`` (the TF release's port), weights and all."""

import pytest
import torch

from lightexport.loading import load_model
from lightexport.model_defs import create_model, get_spec
from lightexport.model_defs.complexity import complexity
from lightexport.model_defs.efficientnet_lite import checkpoint_filter
from tests.conftest import randomize_bn
from tests.model_defs.reference_checks import assert_checkpoint_reproduces, fused_onnx_ops

timm = pytest.importorskip("timm")

# TF's efficientnet/lite README: parameters (M) and multiply-adds (G). The GMACs we count are
# convs and the classifier only; TF's profile adds the element-wise ops (BN, ReLU6, adds): 3-6% more.
PUBLISHED = {0: (4.7, 0.407), 1: (5.4, 0.631), 2: (6.1, 0.899), 3: (8.2, 1.44), 4: (13.0, 2.64)}


def _reference(variant: int) -> torch.nn.Module:
    torch.manual_seed(variant)
    return randomize_bn(timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False).eval(), seed=variant)


@pytest.mark.parametrize("variant", range(5))
def test_bit_exact_with_timm_on_even_and_odd_sizes(variant):
    reference = _reference(variant)
    ours = create_model(f"efficientnet_lite{variant}")
    ours.load_state_dict(reference.state_dict(), strict=True)  # timm's names, as they are
    with torch.no_grad():
        for h, w in ((64, 64), (67, 70)):  # TF "SAME" pads odd and even inputs differently
            x = torch.randn(2, 3, h, w)
            torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
    params, gmacs = complexity(get_spec(f"efficientnet_lite{variant}"))
    assert params == sum(p.numel() for p in reference.parameters())
    assert round(params / 1e6, 1) == PUBLISHED[variant][0]
    assert 0.94 < gmacs / PUBLISHED[variant][1] < 0.97


def test_efficientnet_pytorch_names_map_onto_timm_layout():
    reference = _reference(0)
    timm_sd = reference.state_dict()
    renamed = {}  # timm -> efficientnet_pytorch, written out independently of the filter's tables
    for key, value in timm_sd.items():
        parts = key.split(".")
        if parts[0] == "blocks":
            stage, block, module = int(parts[1]), int(parts[2]), parts[3]
            flat = sum(len(s) for s in reference.blocks[:stage]) + block
            names = ({"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
                     if stage == 0 else
                     {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
                      "conv_pwl": "_project_conv", "bn3": "_bn2"})
            renamed[f"_blocks.{flat}.{names[module]}.{parts[-1]}"] = value
        else:
            top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1",
                   "classifier": "_fc"}[parts[0]]
            renamed[f"{top}.{parts[-1]}"] = value
    assert checkpoint_filter(renamed, variant="lite0") == timm_sd
    assert checkpoint_filter(timm_sd, variant="lite0") is timm_sd


def test_checkpoint_file_loads_identifies_and_exports_fused(tmp_path):
    reference = _reference(0)
    path = tmp_path / "tf_efficientnet_lite0.pth"
    torch.save(reference.state_dict(), path)
    assert_checkpoint_reproduces("efficientnet_lite0", reference, path)
    ops = fused_onnx_ops(tmp_path, "efficientnet_lite0", path)
    assert not ops & {"BatchNormalization", "Dropout"}, ops
    assert not ops & {"Shape", "Gather"}, ops  # the "SAME" pads are constants in a static-shape export


def test_backbone_mode_returns_timm_stage_ends(tmp_path):
    reference = _reference(2)
    path = tmp_path / "lite2.pth"
    torch.save(reference.state_dict(), path)
    backbone = load_model("efficientnet_lite2", path, features=True).module
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        feats = backbone(x)
        y, want = reference.bn1(reference.conv_stem(x)), []
        for i, stage in enumerate(reference.blocks):
            y = stage(y)
            if i in (1, 2, 4, 6):
                want.append(y)
    assert [(f.shape[1], 96 // f.shape[-1]) for f in feats] == [(24, 4), (48, 8), (120, 16), (352, 32)]
    for got, expected in zip(feats, want):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
