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


# --------------------------------------------------------------------------- partial convolutions by structure

class RenamedPartialConv(torch.nn.Module):
    """A user's own partial convolution: slicing only, no forward_<form> methods, not FasterNet's class."""

    def __init__(self, dim, n_div):
        super().__init__()
        self.part = dim // n_div
        self.mix = torch.nn.Conv2d(self.part, self.part, 3, 1, 1, bias=False)

    def forward(self, x):
        y = x.clone()
        y[:, : self.part] = self.mix(x[:, : self.part])
        return y


class ChunkedPartialConv(RenamedPartialConv):
    def forward(self, x):
        head, tail = torch.split(x, [self.part, x.shape[1] - self.part], 1)
        return torch.cat([self.mix(head), tail], dim=1)


class NotPartial(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.mix = torch.nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x):
        return self.mix(x) * 2


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None)
@given(part=st.integers(1, 12), n_div=st.sampled_from([2, 4, 8]), size=st.integers(3, 11))
def test_a_partial_convolution_of_any_class_is_switched_by_what_it_computes(part, n_div, size):
    dim = part * n_div
    model = torch.nn.Sequential(RenamedPartialConv(dim, n_div), ChunkedPartialConv(dim, n_div), NotPartial(dim)).eval()
    x = torch.randn(2, dim, size, size)
    with torch.no_grad():
        reference = model(x)
    fused, (report,) = apply_passes(model, ["pconv_form"])
    with torch.no_grad():
        torch.testing.assert_close(fused(x), reference, rtol=0, atol=0)
    assert report.changed == ["0"]  # the slicing copy, switched
    assert dict(report.left) == {"1": "already split_cat", "2": "computes more than a partial convolution"}


def test_the_official_partial_conv_a_user_pasted_is_recognized():
    """The seed's user copies the official Partial_conv3 (forward bound in __init__): slicing becomes split_cat."""
    import types

    class Partial_conv3(torch.nn.Module):  # noqa: N801  # the official spelling
        def __init__(self, dim, n_div, forward):
            super().__init__()
            self.dim_conv3, self.dim_untouched = dim // n_div, dim - dim // n_div
            self.partial_conv3 = torch.nn.Conv2d(self.dim_conv3, self.dim_conv3, 3, 1, 1, bias=False)
            self.forward = types.MethodType(type(self).forward_slicing if forward == "slicing"
                                            else type(self).forward_split_cat, self)

        def forward_slicing(self, x):
            x = x.clone()
            x[:, : self.dim_conv3] = self.partial_conv3(x[:, : self.dim_conv3])
            return x

        def forward_split_cat(self, x):
            x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
            return torch.cat((self.partial_conv3(x1), x2), 1)

    model = torch.nn.Sequential(Partial_conv3(32, 4, "slicing"), Partial_conv3(32, 4, "split_cat")).eval()
    fused, (report,) = apply_passes(model, ["pconv_form"])
    assert report.changed == ["0"] and report.left == [("1", "already split_cat")]
    assert all(m.forward.__func__.__name__ == "forward_split_cat" for m in fused)
