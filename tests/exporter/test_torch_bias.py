"""Bias correction of int8 weight rounding on a PyTorch module (the ExecuTorch and LiteRT int8 paths)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lightexport.exporter.onnx_bias import rounded_weights
from lightexport.exporter.torch_bias import correct_biases, input_means


class Net(nn.Module):
    """A grouped conv (no padding, so its mean output is exactly linear in the input means), a pool and a linear."""

    def __init__(self, groups: int, kernel: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, kernel, groups=groups, bias=bias)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def _rounded(module: nn.Module) -> nn.Module:
    """The module with every weight rounded as the quantizers round them (symmetric per-channel, 127 steps)."""
    for layer in (module.conv, module.fc):
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(rounded_weights(layer.weight.detach().numpy())))
    return module


@settings(max_examples=25, deadline=None)
@given(groups=st.sampled_from([1, 2]), kernel=st.sampled_from([1, 3]), bias=st.booleans(),
       seed=st.integers(0, 10_000))
def test_a_corrected_layer_keeps_its_float_mean_output_after_rounding(groups, kernel, bias, seed):
    torch.manual_seed(seed)
    net = Net(groups, kernel, bias).eval()
    shift = torch.tensor([3.0, -2.0, 5.0, 1.0]).view(1, 4, 1, 1)  # input means far from 0: rounding shifts most
    batches = [torch.randn(4, 4, 6, 6) + shift for _ in range(3)]
    x = torch.cat(batches)
    means = input_means(net, batches, ["conv", "fc"])
    assert set(means) == {"conv", "fc"}
    np.testing.assert_allclose(means["conv"], x.double().mean(dim=(0, 2, 3)).numpy(), rtol=1e-10)

    corrected, count = correct_biases(net, {"conv": means["conv"]})
    assert count == 1 and corrected is not net
    assert (net.conv.bias is None) == (not bias)  # the module given is never changed
    with torch.no_grad():
        want = net.conv(x).double().mean(dim=(0, 2, 3))
        before = (_rounded(_copy(net)).conv(x).double().mean(dim=(0, 2, 3)) - want).abs().max().item()
        after = (_rounded(corrected).conv(x).double().mean(dim=(0, 2, 3)) - want).abs().max().item()
    # a 1x1 conv's mean output is exactly linear in its input means; a 3x3 one's is up to the border pixels'
    # sampling noise (the correction is exact in expectation over stationary inputs)
    assert after < (2e-5 if kernel == 1 else max(1e-3, before / 5))
    assert after < before or before < 2e-5
    assert torch.equal(corrected.fc.bias, net.fc.bias)  # a layer left out (kept float) keeps its bias


def _copy(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


def test_the_linear_layer_is_corrected_on_its_own_input_means():
    torch.manual_seed(0)
    net = Net(1, 1, True).eval()
    batches = [torch.randn(8, 4, 3, 3) * 2 + 1 for _ in range(2)]
    means = input_means(net, batches, ["fc"])
    corrected, _ = correct_biases(net, means)
    features = torch.cat([net.conv(b).mean(dim=(2, 3)) for b in batches]).detach()
    with torch.no_grad():
        want = net.fc(features).double().mean(dim=0)
        got = _rounded(corrected).fc(features).double().mean(dim=0)
    assert (got - want).abs().max().item() < 1e-5


def test_executorch_quantizes_what_its_float_regions_leave():
    """The layers whose biases are corrected are exactly those PT2E quantizes: none of a kept region's."""
    pytest.importorskip("executorch", reason="ExecuTorch is not installed: pip install 'lightexport[executorch]'")
    from lightexport.exporter.executorch import _quantized_layers

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)),
                        nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(4, 2))
    assert _quantized_layers(net, [], (0, 0)) == ["0", "2.0", "2.1", "3", "5"]
    assert _quantized_layers(net, [], (1, 0)) == ["2.0", "2.1", "3", "5"]
    assert _quantized_layers(net, [], (1, 1)) == ["2.0", "2.1"]  # the last conv's region holds the classifier
    assert _quantized_layers(net, ["2"], (0, 0)) == ["0", "3", "5"]  # a named module keeps its children float
    assert _quantized_layers(net, [], (2, 2)) == []
