"""timm's checkpoints of MobileNetV3 and EfficientNetV2 load into our torchvision-named trees through a key map.

timm's namesakes are other networks than torchvision's holding the same tensors: BatchNorm eps 1e-5
(``mobilenetv3_*_100``, ``efficientnetv2_*``) or TF "SAME" padding (``tf_mobilenetv3_*``, ``tf_efficientnetv2_*``).
They are registered under timm's names; each entry accepts only its own library's key layout, which is also how a
bare checkpoint is identified (or refused as ambiguous where two of timm's networks share one layout).
"""

import pytest
import torch

from lightexport.errors import CheckpointError
from lightexport.loading import load_model
from lightexport.model_defs import get_spec
from lightexport.model_defs.checkpoint import compare_keys
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")

# timm's network -> the registered network that holds the same tensors but computes differently
OTHER_NETWORK = {"mobilenetv3_large_100": "mobilenet_v3_large",  # BatchNorm eps 1e-3 where timm's is 1e-5
                 "mobilenetv3_small_100": "mobilenet_v3_small",
                 "tf_mobilenetv3_large_100": "mobilenetv3_large_100",  # symmetric where TF's port pads "SAME"
                 "tf_efficientnetv2_s": "efficientnet_v2_s",
                 "efficientnetv2_s": "efficientnet_v2_s"}
# timm's blocks ending at strides 4, 8, 16, 32, and the channels there
STAGE_ENDS = {"mobilenetv3_large_100": ((1, 2, 4, 5), [24, 40, 112, 160]),
              "mobilenetv3_small_100": ((0, 1, 3, 4), [16, 24, 48, 96]),
              "tf_efficientnetv2_s": ((1, 2, 4, 5), [48, 64, 160, 256])}


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    """name -> (timm's model with random weights and randomized BatchNorm, its state dict saved as a file)."""
    made: dict[str, tuple[torch.nn.Module, object]] = {}

    def make(name: str) -> tuple[torch.nn.Module, object]:
        if name not in made:
            torch.manual_seed(0)
            reference = randomize_bn(timm.create_model(name, pretrained=False).eval(), seed=3)
            path = tmp_path_factory.mktemp("timm") / f"{name}.pth"
            torch.save(reference.state_dict(), path)
            made[name] = reference, path
        return made[name]

    return make


@pytest.mark.parametrize("name", list(OTHER_NETWORK))
def test_timm_checkpoint_gives_timms_outputs(timm_checkpoint, name):
    reference, path = timm_checkpoint(name)
    loaded = load_model(name, path)
    other = get_spec(OTHER_NETWORK[name]).build().eval()
    other.load_state_dict(loaded.module.state_dict())
    for size in (32, 33) if name.startswith("tf_") else (32,):  # "SAME" pads differently on even and odd sides
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            got, want = loaded.module(x), reference(x)
            if "mobilenetv3" in name:
                # the trunk is bit for bit; timm's conv_head is a 1x1 conv on the pooled map where ours is the
                # same product as a Linear: the logits differ by float rounding (measured: 3.5e-7 of their range)
                pooled = torch.nn.functional.adaptive_avg_pool2d(loaded.module.features(x), 1).flatten(1)
                torch.testing.assert_close(pooled, reference.global_pool(reference.forward_features(x)).flatten(1),
                                           rtol=0, atol=0)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
            else:
                torch.testing.assert_close(got, want, rtol=0, atol=0)
            if size % 2 == 0:  # the same tensors in the other network compute something else
                assert (other(x) - want).abs().max() > 1e-3 * want.abs().max()


@pytest.mark.parametrize("name", list(STAGE_ENDS))
def test_backbone_mode_matches_timms_stage_ends(timm_checkpoint, name):
    reference, path = timm_checkpoint(name)
    backbone = load_model(name, path, features=True).module
    ends, channels = STAGE_ENDS[name]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y, want = reference.bn1(reference.conv_stem(x)), []
        for i, stage in enumerate(reference.blocks):
            y = stage(y)
            if i in ends:
                want.append(y)
        got = backbone(x)
    assert [f.shape[1] for f in got] == channels
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["large", "small"])
def test_each_mobilenetv3_entry_takes_only_its_own_layout(timm_checkpoint, layout):
    _, path = timm_checkpoint(f"mobilenetv3_{layout}_100")
    with pytest.raises(CheckpointError, match=f"timm's MobileNetV3 layout.*load it as mobilenetv3_{layout}_100 .* "
                                              f"or tf_mobilenetv3_{layout}_100"):
        load_model(f"mobilenet_v3_{layout}", path)
    torchvision_layout = get_spec(f"mobilenetv3_{layout}_100").checkpoint_filter(torch.load(path), None)
    refusal = f"torchvision's MobileNetV3 layout.*load it as mobilenet_v3_{layout}"
    for name in (f"mobilenetv3_{layout}_100", f"tf_mobilenetv3_{layout}_100"):
        with pytest.raises(CheckpointError, match=refusal):
            get_spec(name).checkpoint_filter(torchvision_layout, None)


def test_each_efficientnetv2_entry_takes_only_its_own_layout(timm_checkpoint):
    _, path = timm_checkpoint("tf_efficientnetv2_s")
    with pytest.raises(CheckpointError, match="timm's EfficientNetV2 layout.*load it as tf_efficientnetv2_s .* or "
                                              "efficientnetv2_s"):
        load_model("efficientnet_v2_s", path)
    torchvision_layout = get_spec("tf_efficientnetv2_s").checkpoint_filter(torch.load(path), None)
    for name in ("tf_efficientnetv2_s", "efficientnetv2_s"):
        with pytest.raises(CheckpointError, match="torchvision's EfficientNetV2 layout.*load it as efficientnet_v2_s"):
            get_spec(name).checkpoint_filter(torchvision_layout, None)


@pytest.mark.parametrize("name, fits", [("mobilenetv3_small_100", "mobilenetv3_small_100, tf_mobilenetv3_small_100"),
                                        ("tf_efficientnetv2_s", "tf_efficientnetv2_s, efficientnetv2_s")])
def test_bare_timm_checkpoint_is_refused_as_ambiguous(timm_checkpoint, name, fits):
    """timm's layout fits two of timm's networks (eps 1e-5; TF's port): a bare file must be named, not guessed.

    torchvision's layout is still identified as torchvision's (test_torchvision_families.py).
    """
    _, path = timm_checkpoint(name)
    with pytest.raises(CheckpointError, match=rf"it fits {fits}\); name the model"):
        load_model(str(path))


@pytest.mark.parametrize("name", ["tf_efficientnetv2_m", "tf_efficientnetv2_l", "efficientnetv2_m", "efficientnetv2_l",
                                  "tf_mobilenetv3_small_100"])
def test_key_maps_of_the_variants_not_run(name):
    """Checked on the meta device (no compute): M and L take seconds to run on CPU."""
    with torch.device("meta"):
        state_dict = timm.create_model(name, pretrained=False).state_dict()
        spec = get_spec(name)
        report = compare_keys(spec.checkpoint_filter(state_dict, None), spec.build())
    assert report.ok, report.describe()
