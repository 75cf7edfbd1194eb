"""GoogLeNet and Inception v3 against torchvision with the same weights; aux heads leave the fused export."""

import pytest
import torch

from lightexport.loading import load_model
from lightexport.model_defs import create_model, get_spec
from lightexport.model_defs.complexity import complexity
from lightexport.reparam import apply_passes
from tests.conftest import randomize_bn
from tests.model_defs.reference_checks import assert_checkpoint_reproduces, fused_onnx_ops

torchvision = pytest.importorskip("torchvision")

# name -> (aux modules, torchvision trunk layers ending at strides 4/8/16/32, inference params (M) and
# GMACs: torchvision's documentation (6.62 M / 1.50; 27.16 M with aux / 5.71); papers: GoogLeNet ~1.5 G
# multiply-adds, Inception v3 5.0 G with 23.6 M (counted there without aux head and fc at 299))
FAMILIES = {
    "googlenet": (("aux1", "aux2"), ("conv3", "inception3b", "inception4e", "inception5b"), 6.62, 1.50),
    "inception_v3": (("AuxLogits",), ("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"), 23.82, 5.71),
}


@pytest.fixture(scope="module", params=["googlenet", pytest.param("inception_v3", marks=pytest.mark.slow)])
def family(request, tmp_path_factory):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, request.param)(weights=None, aux_logits=True, init_weights=True)
    reference = randomize_bn(reference.eval(), seed=4)
    path = tmp_path_factory.mktemp("ckpt") / f"{request.param}.pth"
    torch.save(reference.state_dict(), path)  # with the aux heads, as torchvision's released files
    return request.param, reference, path


def test_checkpoint_gives_torchvision_outputs_and_size(family):
    name, reference, path = family
    assert_checkpoint_reproduces(name, reference, path)
    params, gmacs = complexity(get_spec(name))
    assert params == sum(p.numel() for p in reference.parameters())  # aux heads included until fused
    fused, reports = apply_passes(load_model(name, path).module)
    assert next(r for r in reports if r.name == "remove_training_branches").changed == list(FAMILIES[name][0])
    assert round(sum(p.numel() for p in fused.parameters()) / 1e6, 2) == FAMILIES[name][2]
    assert gmacs == pytest.approx(FAMILIES[name][3], abs=0.01)


def test_googlenet_training_mode_returns_torchvision_aux_outputs():
    torch.manual_seed(0)
    reference = randomize_bn(torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True))
    ours = create_model("googlenet")
    ours.load_state_dict(reference.state_dict())
    ours.train(), reference.train()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.manual_seed(1)
        got = ours(x)
        torch.manual_seed(1)
        want = reference(x)
    assert len(got) == 3
    for a, b in zip(got, want):  # logits, aux2, aux1
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_backbone_mode_returns_the_trunk_at_each_stride(family):
    name, reference, path = family
    backbone = load_model(name, path, features=True).module
    assert not any(k.startswith(("aux", "AuxLogits", "fc.")) for k in backbone.state_dict())
    x = torch.randn(1, 3, 160, 160)
    ends, want, y = FAMILIES[name][1], [], x
    with torch.no_grad():
        feats = backbone(x)
        for layer in get_spec(name).builder.trunk:  # the family's layer order
            y = getattr(reference, layer)(y)
            if layer in ends:
                want.append(y)
    assert len(feats) == 4
    for got, expected in zip(feats, want):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_fused_onnx_matches_without_aux_or_batchnorm(tmp_path, family):
    ops = fused_onnx_ops(tmp_path, family[0], family[2])
    assert not ops & {"BatchNormalization", "Dropout"}, ops
