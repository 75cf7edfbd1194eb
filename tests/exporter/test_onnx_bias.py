"""Bias correction of int8 weight rounding: the corrected layer's mean output equals the float layer's."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lightexport.exporter.onnx_bias import correct_weight_rounding, rounded_weights

RNG = np.random.default_rng(3)


def _graph(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x (N,4,5,5) -> 1x1 Conv, 2 groups (4->6) -> ReduceMean over HW -> Gemm (6->3): both layers linear, no padding."""
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", group=2),
             helper.make_node("ReduceMean", ["c"], ["p"], axes=[2, 3], keepdims=0),
             helper.make_node("Gemm", ["p", "gw", "gb"], ["y"], name="gemm", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray, outputs=("c", "y")) -> list[np.ndarray]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_empty_tensor_value_info("c"))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(list(outputs), {"x": x})


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_corrected_layers_keep_their_float_mean_output():
    weights = {"cw": RNG.normal(0, 0.7, (6, 2, 1, 1)).astype(np.float32), "cb": RNG.normal(0, 1, 6).astype(np.float32),
               "gw": RNG.normal(0, 0.7, (3, 6)).astype(np.float32), "gb": RNG.normal(0, 1, 3).astype(np.float32)}
    model = _graph(weights)
    # inputs with per-channel means far from zero, where rounding error shifts the mean most
    batches = [(RNG.normal(0, 1, (4, 4, 5, 5)) + np.array([3, -2, 5, 1]).reshape(1, 4, 1, 1)).astype(np.float32)
               for _ in range(5)]
    x = np.concatenate(batches)
    corrected, names = correct_weight_rounding(model, batches)
    assert names == ["conv", "gemm"]

    # the conv with rounded weights: plain rounding shifts its mean; with the corrected bias the shift is gone
    c_float = _run(model, x)[0].mean(axis=(0, 2, 3))
    fixed = _weights(corrected)
    rounded_only = _graph({**weights, "cw": rounded_weights(weights["cw"]).astype(np.float32)})
    both = _graph({**fixed, "cw": rounded_weights(weights["cw"]).astype(np.float32)})
    shift_before = np.abs(_run(rounded_only, x)[0].mean(axis=(0, 2, 3)) - c_float).max()
    shift_after = np.abs(_run(both, x)[0].mean(axis=(0, 2, 3)) - c_float).max()
    assert shift_before > 1e-3 and shift_after < 1e-5 * max(1.0, np.abs(c_float).max())

    # the Gemm, fed the float conv's output, likewise (its input means come from the fp32 graph)
    y_float = _run(model, x)[1].mean(axis=0)
    gemm_only = _graph({**weights, "gw": rounded_weights(weights["gw"]).astype(np.float32), "gb": fixed["gb"]})
    assert np.abs(_run(gemm_only, x)[1].mean(axis=0) - y_float).max() < 1e-4
    assert np.abs(_run(_graph({**weights, "gw": rounded_weights(weights["gw"]).astype(np.float32)}), x)[1]
                  .mean(axis=0) - y_float).max() > 1e-3


def test_excluded_layers_and_weights_are_left_alone():
    weights = {"cw": RNG.normal(0, 1, (6, 2, 1, 1)).astype(np.float32), "cb": np.zeros(6, np.float32),
               "gw": RNG.normal(0, 1, (3, 6)).astype(np.float32), "gb": np.zeros(3, np.float32)}
    model = _graph(weights)
    corrected, names = correct_weight_rounding(model, [RNG.normal(1, 1, (2, 4, 5, 5)).astype(np.float32)],
                                               exclude=["conv"])
    fixed = _weights(corrected)
    assert names == ["gemm"] and np.array_equal(fixed["cb"], weights["cb"]) and not np.array_equal(fixed["gb"],
                                                                                                   weights["gb"])
    assert np.array_equal(fixed["cw"], weights["cw"]) and np.array_equal(fixed["gw"], weights["gw"])


def test_rounding_is_symmetric_per_channel_int8():
    w = np.array([[1.0, -0.5, 0.26], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.01]], np.float32)
    r = rounded_weights(w)
    assert np.allclose(r[0], np.round(w[0] / (1 / 127)) * (1 / 127)) and np.array_equal(r[1], w[1])
    assert r[2, 0] == -2.0 and np.abs(r - w).max() <= (2.0 / 127) / 2 + 1e-7


def test_reduced_range_rounding_has_64_steps_a_side():
    w = np.array([[1.0, -0.5, 0.26, -1.0]], np.float32)
    r = rounded_weights(w, 64)
    assert np.allclose(r, np.round(w * 64) / 64) and np.abs(r - w).max() <= (1 / 64) / 2 + 1e-7
    assert not np.allclose(r, rounded_weights(w))  # a different rounding, so a different correction
