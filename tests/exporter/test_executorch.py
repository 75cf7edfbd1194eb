"""ExecuTorch (``.pte``) int8: float-kept ends are whole regions of the graph, and the program still passes parity.

Skips, saying why, where executorch cannot be imported (``pip install 'lightexport[executorch]'``).
"""

from __future__ import annotations

import json

import pytest
import torch

from lightexport import api

SIZE = 64


@pytest.fixture(scope="module")
def t0():
    pytest.importorskip("executorch", reason="executorch is not installed: pip install 'lightexport[executorch]'")
    return api.load("fasternet_t0")


def test_float_ends_are_regions_without_weights(t0):
    from lightexport.exporter.executorch import _CONVS, _float_ends

    graph = torch.export.export(t0.module.eval(), (torch.zeros(1, 3, SIZE, SIZE),), strict=False).module()
    nodes = [n for n in graph.graph.nodes if n.op == "call_function"]
    convs = [i for i, n in enumerate(nodes) if n.target in _CONVS]
    region = _float_ends(graph, 2, 1)
    assert {n.name for n in nodes[: convs[2]]} | {n.name for n in nodes[convs[-2] + 1:]} == region
    assert nodes[convs[1]].name in region and nodes[convs[2]].name not in region  # the 2nd conv float, the 3rd not
    assert nodes[convs[-1]].name in region and nodes[convs[-2]].name not in region  # the last conv float
    assert not any(n.op == "get_attr" and n.name in region for n in graph.graph.nodes)  # weights stay quantizable
    assert _float_ends(graph, len(convs), 0) == {n.name for n in nodes}


@pytest.mark.parametrize("keep", [2, "auto"])
def test_int8_with_float_ends_passes(t0, tmp_path, keep):
    from lightexport.calib import write_sample_photos

    result = api.export(t0, "executorch", output=tmp_path / "q.pte", fuse=True, input_size=SIZE, precision="int8",
                        calib=write_sample_photos(tmp_path / "p"), calib_size=8, int8_keep=keep)
    kept = json.loads(result.metadata["lightexport.int8"])["kept_float"]
    if keep == 2:
        assert kept == ["patch_embed.proj", "stages.0.blocks.0.mlp.0"]
    report = api.verify(result.path, t0, progress=False)
    assert report.passed, report.all_failures
