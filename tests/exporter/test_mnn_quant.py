"""MNN int8 parameters (exporter/mnn_quant.py): the arithmetic of each entry and how MNN's convolutions are matched."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from lightexport.exporter.mnn_quant import _activation, _weights, plan


@given(st.floats(-50, 0), st.floats(0, 50))
def test_activation_ranges_hold_zero_exactly_and_span_their_range(low, high):
    entry = _activation("t", low, high)
    scale, zero = entry["scales"][0], entry["zeroPoint"]
    assert -128 <= zero <= 127 and scale > 0
    if high - low > 1e-6:
        assert abs((-128 - zero) * scale - low) <= scale and abs((127 - zero) * scale - high) <= scale
    assert (zero - zero) * scale == 0.0  # 0.0 is a code: a ReLU's zeros and padding stay exact


def test_a_positive_only_tensor_starts_at_zero():
    entry = _activation("relu", 0.5, 6.0)  # the range is widened to hold 0
    assert entry["zeroPoint"] == -128 and np.isclose(entry["scales"][0], 6.0 / 255)


def test_weights_are_per_output_channel_over_127_steps():
    w = np.zeros((3, 2, 1, 1), np.float32)
    w[0, 0] = -2.54
    w[1, 1] = 1.27
    entry = _weights("w", w)
    assert np.allclose(entry["scales"], [0.02, 0.01, 1.0])  # an all-zero channel gets a harmless 1
    assert (entry["clampMin"], entry["clampMax"]) == (-127, 127)


def _graph() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w1")
    weight2 = numpy_helper.from_array(np.full((4, 4, 1, 1), 0.5, np.float32), "w2")
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1"),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Sigmoid", ["c2"], ["y"], name="head")]
    bounds = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0.0), ("hi", 6.0))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [weight, weight2, *bounds])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_mnn_convolutions_are_matched_through_folded_activations_and_kept_ones_skipped():
    """MNN names a conv with a fused ReLU6 by the activation's output, and its first input by a layout copy."""
    model = _graph()
    batches = [np.random.default_rng(i).uniform(-1, 1, (1, 3, 4, 4)).astype(np.float32) for i in range(3)]
    convs = [("r1", "input___tr4r1"), ("c2", "r1"), ("ghost", "r1")]
    made = plan(model, convs, batches, kept=[])
    assert made.quantized == ["conv1", "conv2"] and made.unmatched == ["ghost"] and made.rule == "global min/max"
    first, second = made.params["algo"][0]["quantParams"]["layer"]
    assert first["input"][0]["name"] == "input" and first["output"][0]["name"] == "r1"
    low = min(float(b.min()) for b in batches)
    assert np.isclose(first["input"][0]["scales"][0] * (-128 - first["input"][0]["zeroPoint"]), low, atol=1e-2)
    relu6 = max(float(np.clip(b.sum(axis=1), 0, 6).max()) for b in batches)  # what conv1 (ones) + Clip computes
    assert np.isclose(first["output"][0]["scales"][0], relu6 / 255) and first["output"][0]["zeroPoint"] == -128
    assert second["weight"][0]["name"] == "w2" and np.allclose(second["weight"][0]["scales"], 0.5 / 127)
    kept = plan(model, convs, batches, kept=["conv1"])
    assert kept.quantized == ["conv2"] and kept.kept == ["conv1"]


def test_the_model_input_takes_the_preprocessing_range_where_it_is_quantized():
    """The input is pixels: the range the preprocessing can give, not the calibration's (trained MobileNetV2 with no
    layer float in MNN: cosine 0.9933 -> 0.9945); with its convolution kept float there is no input quantizer."""
    model = _graph()
    batches = [np.random.default_rng(i).uniform(-1, 1, (1, 3, 4, 4)).astype(np.float32) for i in range(3)]
    convs = [("r1", "input___tr4r1"), ("c2", "r1")]
    made = plan(model, convs, batches, kept=[], input_range=(-2.0, 3.0))
    entry = made.params["algo"][0]["quantParams"]["layer"][0]["input"][0]
    scale, zero = entry["scales"][0], entry["zeroPoint"]
    assert np.isclose(scale * (-128 - zero), -2.0, atol=scale) and np.isclose(scale * (127 - zero), 3.0, atol=scale)
    assert made.input_range == (-2.0, 3.0)
    kept = plan(model, convs, batches, kept=["conv1"], input_range=(-2.0, 3.0))
    assert kept.input_range is None
