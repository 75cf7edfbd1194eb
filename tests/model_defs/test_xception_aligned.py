"""Aligned Xception 41/65/71 against timm's ``xception41/65/71``, weights and all."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lightexport.loading import load_model
from lightexport.model_defs import get_spec
from lightexport.model_defs.checkpoint import compare_keys
from lightexport.model_defs.complexity import measure
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def xception41(tmp_path_factory):
    torch.manual_seed(0)
    reference = randomize_bn(timm.create_model("xception41", pretrained=False).eval(), seed=3)
    path = tmp_path_factory.mktemp("timm") / "xception41.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_timm_checkpoint_gives_timm_outputs_bit_for_bit(xception41):
    reference, path = xception41
    loaded = load_model("xception41", path)
    with torch.no_grad():
        for size in (64, 65):
            x = torch.randn(1, 3, size, size)
            torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=0)


def test_backbone_mode_returns_each_strides_last_block(xception41):
    reference, path = xception41
    backbone = load_model("xception41", path, features=True).module
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y, outs = reference.stem(x), []
        for block in reference.blocks:
            y = block(y)
            outs.append(y)
        got = backbone(x)
    want = [outs[i] for i in (0, 1, 10, 12)]  # strides 4, 8, 16 (the last middle block), 32 (the exit flow)
    assert [(f.shape[1], 64 // f.shape[-1]) for f in got] == [(128, 4), (256, 8), (728, 16), (2048, 32)]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("depth", [41, 65, 71])
def test_keys_params_and_macs_equal_timms(depth):
    """Counted on the meta device: timm's model and ours hold the same tensors and do the same multiply-adds."""
    spec = get_spec(f"xception{depth}")
    with torch.device("meta"):
        reference = timm.create_model(f"xception{depth}", pretrained=False).eval()
        report = compare_keys(reference.state_dict(), spec.build())
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            reference(torch.zeros(1, 3, spec.input_size, spec.input_size))
    assert report.ok, report.describe()
    params, gmacs = measure(spec)  # counted afresh (complexity.json holds them rounded)
    assert params == sum(p.numel() for p in reference.parameters())
    assert gmacs == pytest.approx(counter.get_total_flops() / 2 / 1e9, rel=1e-9)
