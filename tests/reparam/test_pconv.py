"""PConv's two forwards agree bit for bit, and the pass switches ours and timm's."""

import pytest
import torch

from lightexport.errors import UsageError
from lightexport.model_defs import create_model
from lightexport.model_defs.fasternet import Partial_conv3
from lightexport.reparam import apply_passes, set_pconv_form
from tests.conftest import randomize_bn


@pytest.mark.parametrize("dim, n_div", [(40, 4), (64, 4), (7, 2), (12, 3)])
def test_forms_agree(dim, n_div):
    pconv = Partial_conv3(dim, n_div).eval()
    x = torch.randn(2, dim, 9, 9)
    split = pconv(x)
    pconv.form = "slicing"
    x_copy = x.clone()
    torch.testing.assert_close(pconv(x), split, rtol=0, atol=0)
    torch.testing.assert_close(x, x_copy, rtol=0, atol=0)  # slicing must not write into its input


def _forms(model):
    """Each PConv's form, ours through its property, timm's through the method bound as its forward."""
    return {
        m.form if isinstance(m, Partial_conv3) else m.forward.__func__.__name__.removeprefix("forward_")
        for m in model.modules() if type(m).__name__ == "Partial_conv3"
    }


def _fasternet(source, form):
    if source == "ours":
        return create_model("fasternet_t0", pconv_form=form)
    timm = pytest.importorskip("timm")
    return timm.create_model("fasternet_t0", pretrained=False, pconv_fw_type=form)


@pytest.mark.parametrize("source", ["ours", "timm"])
@pytest.mark.parametrize("start, target", [("slicing", "split_cat"), ("split_cat", "slicing")])
def test_switching_a_whole_model(source, start, target):
    model = randomize_bn(_fasternet(source, start)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        model, report = set_pconv_form(model, target)
        assert report.count == 13 and _forms(model) == {target} and report.details == {"form": target}
        torch.testing.assert_close(model(x), reference, rtol=0, atol=0)
    _, again = set_pconv_form(model, target)
    assert again.count == 0


@pytest.mark.parametrize("source", ["ours", "timm"])
def test_export_passes_choose_split_cat(source):
    model = _fasternet(source, "slicing")
    fused, reports = apply_passes(model, ["pconv_form"])
    assert reports[0].count == 13 and _forms(fused) == {"split_cat"} and _forms(model) == {"slicing"}


def test_unknown_form_is_refused():
    with pytest.raises(UsageError, match="split_cat, slicing"):
        set_pconv_form(create_model("fasternet_t0"), "fancy")
