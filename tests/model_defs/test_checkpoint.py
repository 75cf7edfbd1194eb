import collections

import pytest
import torch

from lightexport.errors import CheckpointError, InputFileError
from lightexport.loading import load_model
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def t0_reference():
    return randomize_bn(load_model("fasternet_t0").module, seed=3)


def _same_outputs(a, b):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "module_prefix", "ordered"])
def test_wrapped_and_prefixed_checkpoints_load(tmp_path, t0_reference, wrap):
    sd = t0_reference.state_dict()
    obj = {
        "plain": sd,
        "model": {"model": sd, "epoch": 3},
        "state_dict": {"state_dict": sd, "optimizer": {}},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "ordered": collections.OrderedDict(sd),
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    _same_outputs(load_model("fasternet_t0", path).module, t0_reference)


def test_timm_checkpoint_loads_and_matches_timm(tmp_path):
    reference = randomize_bn(timm.create_model("fasternet_s", pretrained=False, num_classes=10).eval(), seed=5)
    path = tmp_path / "timm_fasternet_s.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_model("fasternet_s", path)
    assert loaded.module.head.out_features == 10  # head width read from the checkpoint
    _same_outputs(loaded.module, reference)


def test_bare_checkpoint_path_identifies_architecture(tmp_path, t0_reference):
    path = tmp_path / "mystery.pth"
    torch.save(t0_reference.state_dict(), path)
    loaded = load_model(str(path))
    assert loaded.name == "fasternet_t0" and loaded.weights == path


def test_wrong_variant_names_mis_shaped_keys_with_shapes(tmp_path, t0_reference):
    path = tmp_path / "t0.pth"
    torch.save(t0_reference.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_model("fasternet_t1", path)
    msg = str(info.value)
    assert "does not fit fasternet_t1" in msg and "mis-shaped" in msg
    assert "patch_embed.proj.weight checkpoint [40, 3, 4, 4] vs model [64, 3, 4, 4]" in msg


def test_missing_and_unexpected_keys_are_listed(tmp_path, t0_reference):
    sd = dict(t0_reference.state_dict())
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(3)
    path = tmp_path / "t0.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"1 missing: head\.bias; 1 unexpected: extra\.weight"):
        load_model("fasternet_t0", path)


def test_pickled_objects_refused_unless_trusted(tmp_path, t0_reference):
    path = tmp_path / "full_model.pth"
    torch.save({"model": t0_reference, "args": collections.Counter(a=1)}, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_model("fasternet_t0", path)
    _same_outputs(load_model("fasternet_t0", path, trust=True).module, t0_reference)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(InputFileError, match="not found: .*nope.pth"):
        load_model("fasternet_t0", tmp_path / "nope.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pth: not a readable PyTorch checkpoint"):
        load_model("fasternet_t0", bad)


def test_backbone_mode_accepts_classification_checkpoint_with_official_norms(tmp_path):
    backbone = randomize_bn(load_model("fasternet_t0", features=True).module, seed=1)
    path = tmp_path / "det.pth"
    torch.save({"state_dict": backbone.state_dict()}, path)
    _same_outputs(load_model("fasternet_t0", path, features=True).module, backbone)
