"""Backbone mode as data: every family's declared feature maps, built by the one generic FeatureNet."""

import ast
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import lightexport.model_defs as model_defs
from lightexport.model_defs import create_model, get_spec, list_models
from lightexport.model_defs.features import FeatureInfo, FeatureNet, feature_outputs, output_names
from tests.conftest import randomize_bn

MODEL_DEFS = Path(model_defs.__file__).parent
ONE_PER_FAMILY = list({get_spec(n).family: n for n in reversed(list_models())}.values())  # each family's first
LAST_PER_FAMILY = list({get_spec(n).family: n for n in list_models()}.values())
ENDS_OF_FAMILIES = sorted(set(ONE_PER_FAMILY + LAST_PER_FAMILY), key=list_models().index)  # widths vary between


@pytest.mark.parametrize("name", ENDS_OF_FAMILIES)
def test_declared_channels_and_strides(name):
    """Each family's first and last variant's backbone returns one map per declared entry, with its channels and stride.

    The stride is measured, not assumed: growing the input by 64 pixels grows a map of stride s by
    exactly 64 / s (padding and unpadded stems shift both sizes alike). On the meta device: shapes only.
    """
    size = get_spec(name).input_size
    with torch.device("meta"):
        backbone = create_model(name, fork_feat=True)
        small, large = (backbone(torch.empty(1, 3, s, s)) for s in (size, size + 64))
    declared = feature_outputs(backbone)
    assert isinstance(backbone, FeatureNet) and len(declared) == len(small) == len(large) >= 2
    for info, a, b in zip(declared, small, large):
        assert a.shape[1] == b.shape[1] == info.channels, (info, a.shape)
        assert (b.shape[2] - a.shape[2]) * info.reduction == 64 and (b.shape[3] - a.shape[3]) * info.reduction == 64
    assert [f.reduction for f in declared] == sorted(f.reduction for f in declared)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_declared_trunk_is_the_classifier_forward(name):
    """The declaration matches the code: FeatureNet over the classifier itself returns, bit for bit, what the
    classifier's own forward computes at the declared modules (read with forward hooks, post modules applied)."""
    spec = get_spec(name)
    torch.manual_seed(0)
    classifier = randomize_bn(spec.builder(**spec.config), seed=3).eval()  # blazeface's: the trunk alone
    infos = classifier.feature_info
    seen: dict[str, torch.Tensor] = {}
    modules = dict(classifier.named_modules())
    hooks = [modules[i.module].register_forward_hook(lambda m, a, out, key=i.module: seen.setdefault(key, out.clone()))
             for i in infos]
    x = torch.randn(1, 3, 80, 80)  # Inception v3's unpadded stem needs 75
    with torch.no_grad():
        classifier(x)
        for hook in hooks:
            hook.remove()
        want = [seen[i.module] if i.post is None else modules[i.post](seen[i.module]) for i in infos]
        got = FeatureNet(classifier)(x)
    assert len(got) == len(want) == len(infos)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_backbone_keeps_the_family_keys_and_drops_the_head():
    """FeatureNet takes the family's modules under their own names: a backbone checkpoint's keys are the trunk's."""
    for name in ("fasternet_t0", "mobilenet_v2", "xception", "googlenet"):
        spec = get_spec(name)
        with torch.device("meta"):
            trunk = spec.builder(**spec.config, with_head=False)
            backbone = spec.build(fork_feat=True)
            classifier = spec.build()
        assert list(backbone.state_dict()) == list(trunk.state_dict())
        assert not any(k.startswith(spec.head_prefixes) for k in backbone.state_dict())
        shared = [k for k in classifier.state_dict() if not k.startswith(spec.head_prefixes)]
        assert set(shared) <= set(backbone.state_dict())


def test_out_indices_select_maps_and_stop_the_trunk_early():
    torch.manual_seed(0)
    full = create_model("mobilenet_v2", fork_feat=True)
    torch.manual_seed(0)
    part = create_model("mobilenet_v2", fork_feat=True, out_indices=[0, 2])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = full(x), part(x)
    assert len(b) == 2 and torch.equal(b[0], a[0]) and torch.equal(b[1], a[2])
    assert [f.module for f in feature_outputs(part)] == ["features.3", "features.13"]
    assert output_names(part) == ["feat0", "feat1"]
    assert part._plan[-1][0] == "features.13"  # layers after the last requested map are not run
    for bad in ([2, 0], [4], []):
        with pytest.raises(ValueError, match="out_indices"):
            create_model("mobilenet_v2", fork_feat=True, out_indices=bad)


def test_bad_declarations_are_refused():
    class Net(nn.Module):
        feature_trunk = ("body",)

        def __init__(self, *infos):
            super().__init__()
            self.body = nn.Module()
            self.body.conv = nn.Conv2d(3, 4, 3)
            self.feature_info = infos

        def forward(self, x):
            return self.body.conv(x)

    assert FeatureNet(Net(FeatureInfo("body", 4, 1))).feature_info == [FeatureInfo("body", 4, 1)]
    with pytest.raises(ValueError, match="no module"):
        FeatureNet(Net(FeatureInfo("head", 4, 1)))
    with pytest.raises(ValueError, match="not an nn.Sequential"):
        FeatureNet(Net(FeatureInfo("body.conv", 4, 1)))


def test_backbone_only_and_library_models():
    with pytest.raises(ValueError, match="backbone only"):
        create_model("blazeface_backbone", fork_feat=False)
    assert output_names(create_model("blazeface_backbone")) == ["feat0", "feat1"]
    with pytest.raises(TypeError, match="not a backbone-mode module"):
        feature_outputs(create_model("mobilenet_v2"))


def _forward_reads(tree: ast.AST) -> list[str]:
    """Attribute and variable names read inside every ``forward`` method of a module's classes."""
    names = []
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward"):
            names += [f"{cls.name}.{n.attr}" for n in ast.walk(fn) if isinstance(n, ast.Attribute)]
            names += [f"{cls.name}.{n.id}" for n in ast.walk(fn) if isinstance(n, ast.Name)]
    return names


def test_no_family_carries_its_own_backbone_branch():
    """Backbone mode lives in features.py alone: no forward in model_defs asks whether it is a backbone, and
    ``fork_feat`` is spelled only where the public keyword is handled (the registry) and described."""
    offenders, spelled = [], []
    for path in sorted(MODEL_DEFS.glob("*.py")):
        source = path.read_text()
        offenders += [f"{path.name}: {r}" for r in _forward_reads(ast.parse(source))
                      if r.rsplit(".", 1)[1] in ("fork_feat", "out_indices", "feature_info", "features_only")]
        if "fork_feat" in source:
            spelled.append(path.name)
    assert not offenders, offenders
    assert set(spelled) <= {"registry.py", "features.py"}, spelled
