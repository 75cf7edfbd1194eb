"""Exact cleanups after simplification: a Slice that copies its whole input goes, a real one stays."""

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lightexport.exporter.onnx_cleanup import drop_noop_slices


def _ints(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _model():
    """x (1,8,4,4) -> Slice channels 0:8 (whole) -> Relu -> Slice channels 0:6 (real) -> y."""
    nodes = [helper.make_node("Slice", ["x", "s0", "e8", "ax1"], ["full"], name="noop"),
             helper.make_node("Relu", ["full"], ["r"], name="relu"),
             helper.make_node("Slice", ["r", "s0", "e6", "ax1"], ["y"], name="real")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 4, 4])],
                              [_ints("s0", [0]), _ints("e8", [8]), _ints("e6", [6]), _ints("ax1", [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_whole_tensor_slice_is_dropped_and_values_are_unchanged():
    model = _model()
    cleaned, count = drop_noop_slices(model)
    assert count == 1
    assert [n.name for n in cleaned.graph.node] == ["relu", "real"]
    assert cleaned.graph.node[0].input[0] == "x"
    assert {i.name for i in cleaned.graph.initializer} == {"s0", "e6", "ax1"}  # e8 only fed the dropped slice
    x = np.random.default_rng(0).standard_normal((1, 8, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(cleaned, x), _run(model, x))
    assert len(model.graph.node) == 3  # the input model is left as it was


def test_nothing_to_drop_returns_the_model():
    model = _model()
    del model.graph.node[0]
    model.graph.node[0].input[0] = "x"
    cleaned, count = drop_noop_slices(model)
    assert count == 0 and cleaned is model
