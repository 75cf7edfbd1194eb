"""The exact-GELU rewrite (exporter/onnx_gelu.py): every form it matches, and the values it computes.

Judged against the original graph in ONNX Runtime and against Python's own ``math.erf`` (an
independent implementation), on inputs from -30 to 30 and at random.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper, numpy_helper

from lightexport.exporter.onnx_gelu import fuse_gelu_ort, gelu_node_names, rewrite_gelu

ort = pytest.importorskip("onnxruntime")
SQRT2 = math.sqrt(2.0)
X = np.concatenate([np.linspace(-30, 30, 6001), [0.0, -0.0, 1e-30, -1e-30, 3e4, -3e4]]).astype(np.float32)


def _const(name: str, value: float):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.float32)))


def _model(nodes, outputs=("y",), opset=20) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None]) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _erf_chain(scale: str = "div") -> list:
    """erf(x / sqrt 2) + 1 into "e1", scaled by Div (torch's exporter) or Mul by 1/sqrt 2."""
    first = (helper.make_node("Div", ["x", "r2"], ["z"]) if scale == "div"
             else helper.make_node("Mul", ["ir2", "x"], ["z"]))
    return [_const("r2", SQRT2), _const("ir2", 1 / SQRT2), _const("one", 1.0), _const("half", 0.5), first,
            helper.make_node("Erf", ["z"], ["e"]), helper.make_node("Add", ["one", "e"], ["e1"])]


FORMS = {
    # torch.onnx.export of nn.GELU: ((x * (1 + erf(x / sqrt 2))) * 0.5
    "x then half": _erf_chain() + [helper.make_node("Mul", ["x", "e1"], ["m"]),
                                   helper.make_node("Mul", ["m", "half"], ["y"])],
    # x * 0.5 * (1 + erf(x * (1 / sqrt 2))), the hand-written form
    "half first": _erf_chain("mul") + [helper.make_node("Mul", ["x", "half"], ["h"]),
                                       helper.make_node("Mul", ["e1", "h"], ["y"])],
    "half then x": _erf_chain() + [helper.make_node("Mul", ["half", "e1"], ["m"]),
                                   helper.make_node("Mul", ["x", "m"], ["y"])],
    "opset 20 Gelu": [helper.make_node("Gelu", ["x"], ["y"])],
}


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU in float64 with Python's erf, not the rewrite's formula."""
    return np.array([0.5 * v * (1.0 + math.erf(v / SQRT2)) for v in x.astype(np.float64)])


@pytest.mark.parametrize("form", list(FORMS))
def test_each_gelu_form_becomes_vectorizable_ops_with_the_same_values(form):
    model = _model(FORMS[form])
    rewrite = rewrite_gelu(model)
    onnx.checker.check_model(rewrite.model)
    ops = Counter(n.op_type for n in rewrite.model.graph.node)
    assert (rewrite.gelus, rewrite.erfs) == (1, 0)
    assert not ops["Erf"] and not ops["Gelu"] and ops["Exp"] == 1 and ops["Relu"] == 1
    assert not ops["Constant"]  # the chain's constants went with it
    got = _run(rewrite.model, X)[0]
    np.testing.assert_allclose(got, _gelu(X), rtol=3e-7, atol=3e-7)  # |x|/2 * 1.5e-7 where erfc matters
    np.testing.assert_allclose(got, _run(model, X)[0], rtol=4e-7, atol=3e-7)


def test_an_erf_that_is_no_gelu_or_shares_its_intermediates_is_rebuilt_alone():
    """Reading 1 + erf elsewhere too (a second output) keeps the chain; only the Erf op is replaced."""
    model = _model(FORMS["x then half"], outputs=("y", "e1"))
    rewrite = rewrite_gelu(model)
    assert (rewrite.gelus, rewrite.erfs) == (0, 1)
    ops = Counter(n.op_type for n in rewrite.model.graph.node)
    assert not ops["Erf"] and ops["Sign"] == 1 and ops["Div"] == 1
    y, e1 = _run(rewrite.model, X)
    z = X.astype(np.float64) / SQRT2
    np.testing.assert_allclose(e1, 1 + np.array([math.erf(v) for v in z]), rtol=0, atol=4e-7)
    np.testing.assert_allclose(y, _gelu(X), rtol=4e-7, atol=3e-7)


def test_what_is_not_an_exact_fp32_gelu_is_left_alone():
    tanh = _model([helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")])
    assert rewrite_gelu(tanh).count == 0
    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4])])
    half = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert rewrite_gelu(half).count == 0  # constants are float32: an fp16 graph would not type-check
    # the scale is not 1/sqrt 2: an Erf, but not a GELU's
    other = [_const("c", 0.5), _const("one", 1.0), helper.make_node("Mul", ["x", "c"], ["z"]),
             helper.make_node("Erf", ["z"], ["e"]), helper.make_node("Add", ["e", "one"], ["e1"]),
             helper.make_node("Mul", ["x", "e1"], ["y"])]
    assert (rewrite_gelu(_model(other)).gelus, rewrite_gelu(_model(other)).erfs) == (0, 1)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 64), elements=st.floats(-1e4, 1e4, width=32)))
def test_the_rewritten_gelu_tracks_python_erf_everywhere(x):
    rewrite = rewrite_gelu(_model(FORMS["x then half"]))
    np.testing.assert_allclose(_run(rewrite.model, x)[0], _gelu(x), rtol=4e-7, atol=3e-7)


def test_a_network_keeps_its_outputs_names_and_order():
    """Two GELUs in sequence and a graph output read straight from one: the rewrite is in topological order."""
    first = [n for n in FORMS["x then half"]]
    second = [helper.make_node("Div", ["y", "r2"], ["z2"]), helper.make_node("Erf", ["z2"], ["e2"]),
              helper.make_node("Add", ["e2", "one"], ["f2"]), helper.make_node("Mul", ["y", "f2"], ["m2"]),
              helper.make_node("Mul", ["m2", "half"], ["y2"])]
    model = _model(first + second, outputs=("y2", "y"))
    rewrite = rewrite_gelu(model)
    assert rewrite.gelus == 2 and [o.name for o in rewrite.model.graph.output] == ["y2", "y"]
    onnx.checker.check_model(rewrite.model)
    for got, want in zip(_run(rewrite.model, X), _run(model, X)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("form", [f for f in FORMS if f != "opset 20 Gelu"])
def test_each_erf_chain_becomes_one_ort_gelu_with_the_same_values(form):
    """int8's CPU form writes each float GELU as ONNX Runtime's own Gelu (ORT cannot fuse it in a QDQ graph)."""
    model = _model(FORMS[form])
    assert len(gelu_node_names(model)) == 1 and len(gelu_node_names(model)[0]) == 5  # Div/Mul, Erf, Add, 2 Muls
    fused, count = fuse_gelu_ort(model)
    assert count == 1
    assert [(n.op_type, n.domain) for n in fused.graph.node] == [("Gelu", "com.microsoft")]
    assert any(o.domain == "com.microsoft" for o in fused.opset_import)
    np.testing.assert_allclose(_run(fused, X)[0], _gelu(X), rtol=1e-6, atol=1e-6)


def test_a_chain_read_in_the_middle_is_not_fused():
    model = _model(FORMS["x then half"], outputs=("y", "e1"))
    assert gelu_node_names(model) == [] and fuse_gelu_ort(model)[1] == 0
