"""timm's checkpoints of MobileNetV3 and EfficientNetV2 load into our torchvision-named trees through a key map.

timm's namesakes are other networks than torchvision's (BatchNorm eps 1e-5 in ``mobilenetv3_*_100``, TF "SAME"
padding in ``tf_mobilenetv3_*`` and ``tf_efficientnetv2_*``) holding the same tensors, so they are registered under
timm's names; each entry accepts only its own library's layout, which is also how a bare checkpoint is identified.
"""

import pytest
import torch

from lightexport.errors import CheckpointError
from lightexport.loading import load_model
from lightexport.model_defs import get_spec
from lightexport.model_defs.checkpoint import compare_keys
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")


def _timm_checkpoint(name: str, tmp_path_factory) -> tuple[torch.nn.Module, object]:
    """timm's model with random weights and randomized BatchNorm, and its state dict saved as a file."""
    torch.manual_seed(0)
    reference = randomize_bn(timm.create_model(name, pretrained=False).eval(), seed=3)
    path = tmp_path_factory.mktemp("timm") / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


# timm's MobileNetV3 networks -> the registered network that holds the same tensors but computes differently
OTHER_NETWORK = {"mobilenetv3_large_100": "mobilenet_v3_large",  # BatchNorm eps 1e-3 where timm's is 1e-5
                 "mobilenetv3_small_100": "mobilenet_v3_small",
                 "tf_mobilenetv3_large_100": "mobilenetv3_large_100"}  # symmetric where TF's port pads "SAME"


@pytest.fixture(scope="module", params=list(OTHER_NETWORK))
def mobilenetv3(request, tmp_path_factory):
    return request.param, *_timm_checkpoint(request.param, tmp_path_factory)


def test_timm_mobilenetv3_checkpoint_gives_timm_outputs(mobilenetv3):
    name, reference, path = mobilenetv3
    loaded = load_model(name, path)
    other = get_spec(OTHER_NETWORK[name]).build().eval()
    other.load_state_dict(loaded.module.state_dict())
    for size in (64, 65) if name.startswith("tf_") else (64,):  # "SAME" pads differently on odd sides
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            got, want = loaded.module(x), reference(x)
            # the trunk is bit for bit; timm's conv_head is a 1x1 conv on the pooled map where ours is the same
            # product as a Linear, so the logits differ by float rounding only (measured: 3.5e-7 of their range)
            pooled = torch.nn.functional.adaptive_avg_pool2d(loaded.module.features(x), 1).flatten(1)
            timm_pooled = reference.global_pool(reference.forward_features(x)).flatten(1)
            torch.testing.assert_close(pooled, timm_pooled, rtol=0, atol=0)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
            if size % 2 == 0:  # the same tensors in the other network compute something else
                assert (other(x) - want).abs().max() > 1e-3 * want.abs().max()


def test_timm_mobilenetv3_backbone_mode_matches_timm_stages(mobilenetv3):
    name, reference, path = mobilenetv3
    backbone = load_model(name, path, features=True).module
    large = "large" in name
    stage_ends = (1, 2, 4, 5) if large else (0, 1, 3, 4)  # timm's blocks ending at strides 4..32
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y, want = reference.bn1(reference.conv_stem(x)), []
        for i, stage in enumerate(reference.blocks):
            y = stage(y)
            if i in stage_ends:
                want.append(y)
        got = backbone(x)
    assert [f.shape[1] for f in got] == ([24, 40, 112, 160] if large else [16, 24, 48, 96])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_each_mobilenetv3_entry_takes_only_its_own_layout(mobilenetv3):
    name, _, path = mobilenetv3
    layout = "large" if "large" in name else "small"
    with pytest.raises(CheckpointError, match=f"timm's MobileNetV3 layout.*load it as mobilenetv3_{layout}_100 .* "
                                              f"or tf_mobilenetv3_{layout}_100"):
        load_model(f"mobilenet_v3_{layout}", path)
    torchvision_layout = get_spec(name).checkpoint_filter(torch.load(path), None)
    with pytest.raises(CheckpointError, match=f"torchvision's MobileNetV3 layout.*load it as mobilenet_v3_{layout}"):
        get_spec(name).checkpoint_filter(torchvision_layout, None)


def test_bare_timm_mobilenetv3_checkpoint_is_ambiguous(tmp_path_factory):
    """timm's layout fits two networks (eps 1e-5; TF's port): a bare file must be named, not guessed."""
    _, path = _timm_checkpoint("mobilenetv3_small_100", tmp_path_factory)
    # torchvision's layout is still identified as torchvision's (test_torchvision_families.py)
    with pytest.raises(CheckpointError, match=r"fits mobilenetv3_small_100, tf_mobilenetv3_small_100\); name the"):
        load_model(str(path))


@pytest.fixture(scope="module")
def tf_efficientnetv2_s(tmp_path_factory):
    return _timm_checkpoint("tf_efficientnetv2_s", tmp_path_factory)


def test_tf_efficientnetv2_checkpoint_gives_timm_outputs_bit_for_bit(tf_efficientnetv2_s):
    reference, path = tf_efficientnetv2_s
    loaded = load_model("tf_efficientnetv2_s", path)
    torchvision_net = get_spec("efficientnet_v2_s").build().eval()  # symmetric padding: another network
    torchvision_net.load_state_dict(loaded.module.state_dict())
    for size in (32, 33):  # TF "SAME" pads a stride-2 conv one pixel more at the bottom/right on even sides only
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            want = reference(x)
            torch.testing.assert_close(loaded.module(x), want, rtol=0, atol=0)
            if size % 2 == 0:
                assert (torchvision_net(x) - want).abs().max() > 1e-3 * want.abs().max()


def test_tf_efficientnetv2_backbone_and_identification(tf_efficientnetv2_s):
    reference, path = tf_efficientnetv2_s
    backbone = load_model("tf_efficientnetv2_s", path, features=True).module
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y, want = reference.bn1(reference.conv_stem(x)), []
        for i, stage in enumerate(reference.blocks):
            y = stage(y)
            if i in (1, 2, 4, 5):
                want.append(y)
        for got, expected in zip(backbone(x), want):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert load_model(str(path)).name == "tf_efficientnetv2_s"
    with pytest.raises(CheckpointError, match="timm's EfficientNetV2 layout.*load it as tf_efficientnetv2_s"):
        load_model("efficientnet_v2_s", path)


@pytest.mark.parametrize("variant", ["m", "l"])
def test_tf_efficientnetv2_m_l_keys_and_shapes_map(variant):
    """M and L take seconds to run on CPU; their key maps are checked on the meta device (no compute)."""
    with torch.device("meta"):
        state_dict = timm.create_model(f"tf_efficientnetv2_{variant}", pretrained=False).state_dict()
        spec = get_spec(f"tf_efficientnetv2_{variant}")
        report = compare_keys(spec.checkpoint_filter(state_dict, None), spec.build())
    assert report.ok, report.describe()
