"""Shared test helpers: random weights only help if BatchNorm is randomized too."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running stats and affine params.

    Fresh BNs have mean 0, var 1, weight 1, bias 0, so a fusion that forgets any of
    them still passes; randomizing all four makes such bugs visible.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
            if m.affine:
                m.weight.copy_(torch.randn(n, generator=g) * 0.5 + 1.0)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
    return model


@pytest.fixture
def bn_randomizer():
    return randomize_bn


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(2)
