"""The int8 trace points at the module where quantization loses accuracy."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from rich.console import Console

from lightexport import api
from lightexport.calib import write_sample_photos
from lightexport.loading import load_model
from lightexport.parity.trace import LEVELS, Int8Trace

pytest.importorskip("onnxruntime.quantization")
SIZE = 64
PLANTED_CONV = "/stages/stages.4/blocks/blocks.3/mlp/mlp.0/Conv"  # FasterNet stage 2 (stages.4), block 3


@pytest.fixture(scope="module")
def int8_t0(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trace")
    loaded = load_model("fasternet_t0")
    result = api.export(loaded, "onnx", output=tmp / "t0_int8.onnx", fuse=True, input_size=SIZE, precision="int8",
                        calib=write_sample_photos(tmp / "photos"), calib_size=8)
    return loaded, result.path


def _weight_scale_times(model: onnx.ModelProto, conv_name: str, factor: float) -> None:
    """Plant a wrong weight in a QDQ graph: scale the DequantizeLinear scale that feeds the conv's weight."""
    conv = next(n for n in model.graph.node if n.name == conv_name)
    dequant = next(n for n in model.graph.node if conv.input[1] in n.output and n.op_type == "DequantizeLinear")
    scale = next(i for i in model.graph.initializer if i.name == dequant.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))


def test_trace_of_a_good_int8_artifact_degrades_gently(int8_t0):
    loaded, path = int8_t0
    trace = api.bisect(path, loaded)
    assert isinstance(trace, Int8Trace) and len(trace.steps) > 50
    errors = [s.entry.stats.rel_l2 for s in trace.steps]
    assert max(errors) < 0.25 and max(s.growth for s in trace.steps) < 0.1
    assert trace.outputs[0].cosine > 0.98
    assert set(trace.crossings()) == set(LEVELS)


def test_trace_names_the_module_with_a_planted_int8_error(tmp_path, int8_t0):
    loaded, path = int8_t0
    model = onnx.load(str(path))
    _weight_scale_times(model, PLANTED_CONV, 1.5)
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    trace = api.bisect(broken, loaded)
    worst = trace.largest_growth(1)[0]
    assert worst.entry.module.startswith("stages.4.blocks.3.mlp"), trace.message
    assert worst.growth > 0.3  # a 1.5x weight: the conv's output is off by about half its norm
    out = io.StringIO()
    trace.render(Console(file=out, width=160))
    assert f"int8 loses most at {worst.entry.module}" in out.getvalue()
    assert trace.to_dict()["largest_growth"][0]["module"] == worst.entry.module
