import pytest
import torch

from lightexport.errors import UnknownModelError
from lightexport.model_defs import create_model, get_spec, list_models
from lightexport.model_defs.complexity import complexity

VARIANTS = ["fasternet_t0", "fasternet_t1", "fasternet_t2", "fasternet_s", "fasternet_m", "fasternet_l"]


def test_all_fasternet_variants_registered():
    assert set(VARIANTS) <= set(list_models("fasternet"))


@pytest.mark.parametrize("typo, expected", [("fasternet_s0", "fasternet_s"), ("fasternet-t0", "fasternet_t0"),
                                            ("FasterNet_L", "fasternet_l"), ("fasternet", "fasternet_")])
def test_unknown_model_suggests_close_names(typo, expected):
    with pytest.raises(UnknownModelError, match="did you mean") as info:
        get_spec(typo)
    assert expected in str(info.value)


def test_unknown_model_without_neighbours_points_to_list():
    with pytest.raises(UnknownModelError, match="lightexport list"):
        get_spec("zzzzzz")


def test_t0_matches_published_size():
    # timm and the paper: T0 has 3.9M parameters and ~0.34 GFLOPs (MACs) at 224.
    params, gmacs = complexity(get_spec("fasternet_t0"))
    assert round(params / 1e6, 1) == 3.9
    assert gmacs == pytest.approx(0.34, abs=0.01)


def test_num_classes_and_backbone_mode():
    x = torch.randn(2, 3, 64, 64)
    assert create_model("fasternet_t0", num_classes=7)(x).shape == (2, 7)
    feats = create_model("fasternet_t0", fork_feat=True)(x)
    assert [tuple(f.shape) for f in feats] == [(2, 40, 16, 16), (2, 80, 8, 8), (2, 160, 4, 4), (2, 320, 2, 2)]
