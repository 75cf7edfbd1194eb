"""Independent check: torchvision's MobileNetV2 checkpoints load into ours and give the same outputs."""

import numpy as np
import onnx
import pytest
import torch

from lightexport.exporter.onnx import export_onnx
from lightexport.model_defs import create_model, get_spec
from lightexport.model_defs.complexity import complexity
from lightexport.model_defs.loader import load_model
from lightexport.parity import check_parity, make_inputs
from tests.conftest import randomize_bn

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.mobilenet_v2(weights=None).eval())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, reference):
    path = tmp_path_factory.mktemp("ckpt") / "mobilenet_v2-torchvision.pth"
    torch.save(reference.state_dict(), path)
    return path


def test_torchvision_weights_give_torchvision_outputs(reference):
    ours = create_model("mobilenet_v2")
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_bare_torchvision_checkpoint_is_identified_and_backbone_mode_drops_the_head(checkpoint, reference):
    assert load_model(str(checkpoint)).name == "mobilenet_v2"
    backbone = load_model("mobilenet_v2", checkpoint, features=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = backbone.module(x)
        want = [reference.features[: i + 1](x) for i in (3, 6, 13, 17)]
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 56, 56), (32, 28, 28), (96, 14, 14), (320, 7, 7)]
    for got, expected in zip(feats, want):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_size_matches_torchvision():
    params, gmacs = complexity(get_spec("mobilenet_v2"))
    assert params == sum(p.numel() for p in torchvision.models.mobilenet_v2(weights=None).parameters())  # 3.5 M
    assert gmacs == pytest.approx(0.30, abs=0.01)


def test_fused_onnx_matches_the_unfused_model(tmp_path, checkpoint):
    loaded = load_model("mobilenet_v2", checkpoint)
    result = export_onnx(loaded, tmp_path / "mnv2.onnx", fuse=True)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert not ops & {"BatchNormalization", "Dropout"} and "Clip" in ops  # ReLU6
    report = check_parity(result.path, loaded.module, make_inputs(loaded.spec, 4), progress=False)
    assert report.passed, report.failures
    assert np.isfinite(report.outputs[0].max_rel) and report.outputs[0].max_rel < 1e-5
