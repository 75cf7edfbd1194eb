"""Independent check: timm's GhostNetV2 (a port of the official release) with the same weights."""

import numpy as np
import onnx
import pytest
import torch

from lightexport.exporter.onnx import export_onnx
from lightexport.model_defs import get_spec
from lightexport.model_defs.complexity import complexity
from lightexport.model_defs.loader import load_model
from lightexport.parity import check_parity, make_inputs
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module", params=["ghostnetv2_100", "ghostnetv2_160"])
def family(request, tmp_path_factory):
    torch.manual_seed(0)
    reference = randomize_bn(timm.create_model(request.param, pretrained=False).eval())
    state = {**reference.state_dict(), "blocks.0.0.total_ops": torch.zeros(1), "total_params": torch.zeros(1)}
    path = tmp_path_factory.mktemp("ckpt") / f"{request.param}.pth.tar"
    torch.save({"state_dict": state}, path)  # the official release's wrapper, with thop's counters in it
    return request.param, reference, path


def test_official_style_checkpoint_gives_timm_outputs(family):
    name, reference, path = family
    loaded = load_model(name, path)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=0)
    assert load_model(str(path)).name == name  # a bare checkpoint is identified
    params, gmacs = complexity(get_spec(name))
    assert params == sum(p.numel() for p in reference.parameters())  # 6.16 M for ghostnetv2_100
    assert gmacs == pytest.approx({"ghostnetv2_100": 0.167, "ghostnetv2_160": 0.399}[name], abs=0.002)  # paper


def test_backbone_mode_returns_the_stage_ends(family):
    name, reference, path = family
    backbone = load_model(name, path, features=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = backbone.module(x)
        y, want = reference.act1(reference.bn1(reference.conv_stem(x))), []
        for i, stage in enumerate(reference.blocks[:9]):
            y = stage(y)
            if i in (2, 4, 6, 8):
                want.append(y)
    assert [224 // f.shape[-1] for f in feats] == [4, 8, 16, 32]
    for got, expected in zip(feats, want):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_fused_onnx_with_dfc_attention_matches(tmp_path, family):
    name, _, path = family
    loaded = load_model(name, path)
    result = export_onnx(loaded, tmp_path / f"{name}.onnx", fuse=True)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert "Resize" in ops and "BatchNormalization" not in ops, ops  # DFC's nearest upsampling
    report = check_parity(result.path, loaded.module, make_inputs(loaded.spec, 4), progress=False)
    assert report.passed, report.failures
    assert np.isfinite(report.outputs[0].max_rel) and report.outputs[0].max_rel < 1e-5
