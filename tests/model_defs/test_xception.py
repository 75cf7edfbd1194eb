"""Xception against timm's ``legacy_xception`` (the ported Keras weights' layout), weights and all."""

import pytest
import torch

from lightexport.loading import load_model
from lightexport.model_defs import create_model, get_spec
from lightexport.model_defs.complexity import complexity
from tests.conftest import randomize_bn
from tests.model_defs.reference_checks import assert_checkpoint_reproduces, fused_onnx_ops

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def reference():
    assert "legacy_xception" in timm.list_models()  # timm 1.0.31 still ships the legacy layout
    torch.manual_seed(0)
    return randomize_bn(timm.create_model("legacy_xception", pretrained=False).eval(), seed=3)


def test_bit_exact_with_timm_and_paper_size(reference):
    ours = create_model("legacy_xception")  # timm's name is an alias
    ours.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        for size in (96, 101):
            x = torch.randn(2, 3, size, size)
            torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
    params, gmacs = complexity(get_spec("xception"))
    assert params == 22_855_952  # the paper's Table 3, to the parameter
    assert gmacs == pytest.approx(8.36, abs=0.01)  # timm lists 8.4 GMACs at 299


@pytest.mark.slow
def test_checkpoint_file_backbone_and_fused_export(tmp_path, reference):
    path = tmp_path / "xception.pth"
    torch.save(reference.state_dict(), path)
    assert_checkpoint_reproduces("xception", reference, path)
    backbone = load_model("xception", path, features=True).module
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = reference.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
        for got, expected in zip(backbone(x), want, strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not fused_onnx_ops(tmp_path, "xception", path) & {"BatchNormalization", "Dropout"}
