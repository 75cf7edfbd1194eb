"""Checks shared by the tests that compare our families with an independent implementation (timm, torchvision)."""

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from lightexport import api
from lightexport.loading import load_model
from lightexport.parity import check_parity, make_inputs


def assert_checkpoint_reproduces(name: str, reference: nn.Module, path: Path) -> None:
    """The reference's checkpoint loads into ours, gives its outputs bit for bit, and is identified by itself."""
    loaded = load_model(name, path)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=0)
    assert load_model(str(path)).name == name


def fused_onnx_ops(tmp_path: Path, name: str, path: Path) -> set[str]:
    """Export the checkpoint fused, check ORT against the unfused model, and return the graph's op types."""
    loaded = load_model(name, path)
    result = api.export(loaded, "onnx", output=tmp_path / f"{name}.onnx", fuse=True)
    report = check_parity(result.path, loaded.module, make_inputs(loaded.spec, 4), progress=False)
    assert report.passed, report.failures
    assert np.isfinite(report.outputs[0].max_rel) and report.outputs[0].max_rel < 1e-5
    return {n.op_type for n in onnx.load(str(result.path)).graph.node}
