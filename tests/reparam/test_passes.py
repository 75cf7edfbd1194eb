"""The pass registry, reports, and the passes that need no dataflow: dropout removal and module hooks."""

import json

import pytest
import torch
import torch.nn as nn

from lightexport.errors import UsageError
from lightexport.model_defs import create_model
from lightexport.model_defs.layers import DropPath
from lightexport.reparam import DEFAULT_PASSES, PASSES, PassReport, apply_passes
from lightexport.reparam.dropout import remove_dropout
from lightexport.reparam.protocol import reparameterize
from tests.conftest import randomize_bn


def test_default_order():
    assert DEFAULT_PASSES == tuple(PASSES) == (
        "remove_dropout", "remove_training_branches", "reparameterize", "pconv_form", "fuse_conv_bn", "fuse_linear_bn",
        "fold_bn_into_next_conv", "bn_to_affine",
    )


def test_caller_model_is_untouched():
    model = randomize_bn(create_model("fasternet_t1")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]
    fused, _ = apply_passes(model)
    assert model.training and not any(m.training for m in fused.modules())
    assert [type(m) for m in model.modules()] == modules
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_pass_name_lists_the_valid_ones():
    with pytest.raises(UsageError, match="fuse_everything.*valid passes: remove_dropout, .*bn_to_affine"):
        apply_passes(nn.Sequential(), ["fuse_conv_bn", "fuse_everything"])


def test_no_passes_still_returns_an_eval_copy():
    model = nn.Sequential(nn.Dropout()).train()
    fused, reports = apply_passes(model, [])
    assert reports == [] and fused is not model and not fused.training


def test_passes_on_a_model_with_nothing_to_do():
    for name, run in PASSES.items():
        _, report = run(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()))
        assert report.name == name and report.count == 0


def test_report_is_data():
    report = PassReport("fuse_conv_bn", ["a+b"])
    report.skip("fanout", "c+d")
    report.skip("fanout")
    assert report.count == 1 and report.details == {"skipped_fanout": 2}
    assert report.summary() == "fuse_conv_bn: 1 changed (skipped_fanout=2)"
    assert json.loads(json.dumps(report.to_dict())) == {
        "name": "fuse_conv_bn", "count": 1, "changed": ["a+b"], "details": {"skipped_fanout": 2},
        "left": [{"module": "c+d", "reason": "fanout"}],
    }


def _stochastic_layers():
    torchvision, timm_layers = pytest.importorskip("torchvision"), pytest.importorskip("timm.layers")
    return [
        nn.Dropout(0.5), nn.Dropout1d(0.5), nn.Dropout2d(0.5), nn.Dropout3d(0.5), nn.AlphaDropout(0.5),
        nn.FeatureAlphaDropout(0.5), DropPath(0.5), timm_layers.DropPath(0.5), timm_layers.DropBlock2d(0.5, 3),
        torchvision.ops.StochasticDepth(0.5, "row"),
    ]


def test_every_stochastic_layer_is_removed():
    layers = _stochastic_layers()
    model = nn.Sequential(*layers, nn.Conv2d(3, 3, 1))
    shared = nn.Dropout(0.3)
    model.add_module("again", shared)
    model.add_module("alias", shared)  # one module under two names: both must go
    model, report = remove_dropout(model)
    assert report.count == len(layers) + 1
    assert [type(m) for m in model] == [nn.Identity] * len(layers) + [nn.Conv2d, nn.Identity, nn.Identity]
    assert model.again is model.alias


def test_similar_names_from_elsewhere_are_kept():
    class DropPath(nn.Module):  # a user's own class: its forward may be anything, so it is not guessed at
        def forward(self, x):
            return x * 2

    model, report = remove_dropout(nn.Sequential(DropPath()))
    assert report.count == 0 and isinstance(model[0], DropPath)


class RepBranches(nn.Module):
    """RepVGG-style block: 3x3 and 1x1 branches that ``switch_to_deploy`` merges into a new conv."""

    def __init__(self):
        super().__init__()
        self.conv3, self.conv1 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)

    def forward(self, x):
        if hasattr(self, "merged"):
            return self.merged(x)
        return self.conv3(x) + self.conv1(x)

    @torch.no_grad()
    def switch_to_deploy(self):
        self.merged = nn.Conv2d(3, 3, 3, padding=1)  # created in training mode, as torch does
        self.merged.weight.copy_(self.conv3.weight + nn.functional.pad(self.conv1.weight, [1, 1, 1, 1]))
        self.merged.bias.copy_(self.conv3.bias + self.conv1.bias)
        del self.conv3, self.conv1


class Sampler(nn.Module):
    """A VAE's ``reparameterize(mu, logvar)`` is a sampling step, not a fold."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.proj(x)

    def reparameterize(self, mu, logvar):
        raise AssertionError("must not be called")


class Idempotent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x)

    def reparameterize(self):
        pass  # nothing to fold: must not be reported


def test_module_hooks():
    model = nn.Sequential(RepBranches(), Sampler(), Idempotent(), RepBranches()).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        reference = model(x)
        model, report = reparameterize(model)
        torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=1e-5)
    assert report.changed == ["3", "0"]  # children before parents, in reverse module order
    assert not any(m.training for m in model.modules())


def test_a_users_own_drop_path_is_removed_and_a_lookalike_is_not():
    """A DropPath pasted from a paper's code (not timm's class) is an identity in eval mode: removed. A layer
    named 'drop...' that changes its input even in eval mode is left alone."""
    import torch

    class DropPath(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.drop_prob = p

        def forward(self, x):
            if not self.training or self.drop_prob == 0:
                return x
            keep = (torch.rand(x.shape[0], 1, 1, 1) > self.drop_prob).to(x)
            return x * keep / (1 - self.drop_prob)

    class DropHalf(nn.Module):  # a misleading name: it always halves
        def forward(self, x):
            return x * 0.5

    model = nn.Sequential(nn.Conv2d(3, 3, 1), DropPath(0.3), DropHalf()).train()
    fused, (report,) = apply_passes(model, ["remove_dropout"])
    assert report.changed == ["1"] and isinstance(fused[1], nn.Identity) and isinstance(fused[2], DropHalf)
    assert model.training and model[1].training  # the probe restores the mode it found
