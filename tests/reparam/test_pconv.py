import pytest
import torch

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


def test_switching_a_whole_model_both_ways():
    model = randomize_bn(create_model("fasternet_t0", pconv_form="slicing"))
    x = torch.randn(1, 3, 64, 64)
    reference = model(x)
    model, report = set_pconv_form(model, "split_cat")
    assert report.count == 13 and all(m.form == "split_cat" for m in model.modules() if isinstance(m, Partial_conv3))
    torch.testing.assert_close(model(x), reference, rtol=0, atol=0)
    _, again = set_pconv_form(model, "split_cat")
    assert again.count == 0


def test_timm_partial_conv_is_switched_too():
    timm = pytest.importorskip("timm")
    model = randomize_bn(timm.create_model("fasternet_t0", pretrained=False, pconv_fw_type="slicing").eval())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        fused, reports = apply_passes(model, ["pconv_form"])
        assert reports[0].count == 13
        torch.testing.assert_close(fused(x), reference, rtol=0, atol=0)
    blocks = [m for m in fused.modules() if type(m).__name__ == "Partial_conv3"]
    assert all(m.forward.__func__ is type(m).forward_split_cat for m in blocks)


def test_unknown_form_is_refused():
    with pytest.raises(Exception, match="split_cat"):
        set_pconv_form(create_model("fasternet_t0"), "fancy")
