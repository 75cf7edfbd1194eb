"""Other libraries' names for the same networks resolve to ours; timm's MobileNetV2 checkpoints load by key map."""

import pytest
import torch

from lightexport.errors import UnknownModelError
from lightexport.loading import load_model
from lightexport.model_defs import create_model, get_spec, is_registered, list_models
from tests.conftest import randomize_bn
from tests.model_defs.reference_checks import assert_checkpoint_reproduces

ALIASES = {"mobilenetv2_100": "mobilenet_v2", "mobilenet_v1": "mobilenetv1_100",
           **{f"tf_efficientnet_lite{i}": f"efficientnet_lite{i}" for i in range(5)}}


@pytest.mark.parametrize("alias, name", ALIASES.items())
def test_alias_resolves_everywhere(alias, name):
    assert get_spec(alias).name == name and alias in get_spec(name).aliases
    assert is_registered(alias) and alias not in list_models()  # listed once, under our name
    assert type(create_model(alias)) is type(create_model(name))


# timm's namesakes that compute differently from ours: BatchNorm epsilon 1e-5 where torchvision's (and
# ours) is 1e-3 (MobileNetV3, EfficientNetV2), TF "SAME" padding where ours is symmetric (tf_efficientnetv2_s).
# They are entries of their own (tests/model_defs/test_timm_layouts.py) or unknown, never aliases of ours.
@pytest.mark.parametrize("name, ours", [("mobilenetv3_large_100", "mobilenet_v3_large"),
                                        ("mobilenetv3_small_100", "mobilenet_v3_small"),
                                        ("efficientnetv2_s", "efficientnet_v2_s"),
                                        ("tf_efficientnetv2_s", "efficientnet_v2_s")])
def test_namesakes_that_compute_differently_are_not_aliases(name, ours):
    assert name not in get_spec(ours).aliases
    try:
        assert get_spec(name).name == name
    except UnknownModelError as exc:
        assert "did you mean" in str(exc)


def test_timm_mobilenetv2_checkpoint_loads_through_the_key_map(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = randomize_bn(timm.create_model("mobilenetv2_100", pretrained=False).eval(), seed=2)
    path = tmp_path / "mobilenetv2_100.pth"
    torch.save(reference.state_dict(), path)
    assert_checkpoint_reproduces("mobilenet_v2", reference, path)  # bit for bit, and identified
    assert load_model("mobilenetv2_100", path).name == "mobilenet_v2"
    backbone = load_model("mobilenetv2_100", path, features=True).module
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        y, want = reference.bn1(reference.conv_stem(x)), []
        for i, stage in enumerate(reference.blocks):
            y = stage(y)
            if i in (1, 2, 4, 6):
                want.append(y)
        for got, expected in zip(backbone(x), want):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
