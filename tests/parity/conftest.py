"""Tiny models exported once per session: parity tests need real artifacts, not big ones."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tests.conftest import randomize_bn

SIZE = 64  # input side: big enough for real photos to differ, small enough to be instant


class TinyNet(nn.Module):
    """Conv-BN-ReLU stages; classifier logits or (backbone mode) two feature maps, like FasterNet's two modes."""

    def __init__(self, features: bool = False, classes: int = 10) -> None:
        super().__init__()
        self.features = features
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        a = self.stem(x)
        b = self.stage(a)
        return [a, b] if self.features else self.head(b)


def tiny_net(features: bool = False, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():  # deterministic weights without touching the global RNG
        torch.manual_seed(seed)
        return randomize_bn(TinyNet(features), seed).eval()


def export(module: nn.Module, path: Path, outputs: list[str]) -> Path:
    axes = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notice for the TorchScript exporter
        torch.onnx.export(module, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, input_names=["input"],
                          output_names=outputs, dynamic_axes={n: axes for n in ["input", *outputs]})
    return path


@pytest.fixture(scope="session")
def classifier() -> nn.Module:
    return tiny_net()


@pytest.fixture(scope="session")
def backbone() -> nn.Module:
    return tiny_net(features=True)


@pytest.fixture(scope="session")
def classifier_onnx(tmp_path_factory, classifier) -> Path:
    return export(classifier, tmp_path_factory.mktemp("onnx") / "tiny.onnx", ["logits"])


@pytest.fixture(scope="session")
def backbone_onnx(tmp_path_factory, backbone) -> Path:
    return export(backbone, tmp_path_factory.mktemp("onnx") / "tiny_features.onnx", ["feat0", "feat1"])


@pytest.fixture(scope="session")
def classifier_ir(tmp_path_factory, classifier_onnx) -> Path:
    ov = pytest.importorskip("openvino")
    xml = tmp_path_factory.mktemp("ir") / "tiny.xml"
    ov.save_model(ov.convert_model(str(classifier_onnx)), str(xml), compress_to_fp16=False)
    return xml
