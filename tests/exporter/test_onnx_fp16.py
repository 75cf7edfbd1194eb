"""fp32 -> fp16-compute ONNX: valid, deterministic, within fp16 tolerance in ONNX Runtime, sensitive ops in fp32."""

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from lightexport.artifacts import read_artifact_metadata
from lightexport.errors import ExportError, UsageError
from lightexport.exporter.onnx_fp16 import convert_to_fp16, export_onnx_fp16, is_fp16_model
from lightexport.parity import check_parity, runner_for
from lightexport.parity.tolerances import tolerance_for
from tests.conftest import randomize_bn


class SmallNet(nn.Module):
    """Conv, GELU, BN, a sigmoid gate (squeeze-excite) and a head: the fp16-sensitive mix of mobile CNNs.

    The BNs follow activations, so the exporter cannot fold them into a conv and they stay BN nodes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GELU(), nn.BatchNorm2d(16))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 16, 1), nn.Sigmoid())
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.Hardswish(), nn.BatchNorm2d(32))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.body(x * self.gate(x))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    module = randomize_bn(SmallNet()).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, torch.zeros(1, 3, 32, 32), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return module, onnx.load_from_string(buffer.getvalue())


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _input_types(model):
    """elem type of each node's first input, keyed by node name, after type inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return {n.name: (n.op_type, types.get(n.input[0])) for n in g.node if n.input}


def test_parity_in_onnxruntime_within_fp16_tolerance(small):
    _, model = small
    converted, report = convert_to_fp16(model)
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    ref, got = _run(model, x), _run(converted, x)
    assert got.dtype == np.float32  # inputs and outputs stay fp32
    assert np.abs(ref - got).max() / (ref.max() - ref.min()) < tolerance_for("fp16").max_rel
    assert not np.array_equal(ref, got)  # it did compute in fp16
    assert report.fp16_nodes > 0 and report.casts > 0


def test_sensitive_ops_stay_fp32_and_the_rest_is_fp16(small):
    _, model = small
    converted, report = convert_to_fp16(model)
    kinds = _input_types(converted)
    by_op: dict[str, set[int]] = {}
    for op, elem in kinds.values():
        by_op.setdefault(op, set()).add(elem)
    assert by_op["BatchNormalization"] == {TensorProto.FLOAT} and by_op["Sigmoid"] == {TensorProto.FLOAT}
    assert by_op["Conv"] == {TensorProto.FLOAT16} and by_op["Gemm"] == {TensorProto.FLOAT16}
    assert report.fp32_nodes["BatchNormalization"] == 2 and report.fp32_nodes["Sigmoid"] == 1
    # BN statistics were never rounded: an initializer only fp32 nodes read keeps its type
    bn_inputs = {i for n in converted.graph.node if n.op_type == "BatchNormalization" for i in n.input[1:]}
    assert {t.data_type for t in converted.graph.initializer if t.name in bn_inputs} == {TensorProto.FLOAT}


def test_matches_pytorch_through_the_parity_runner(small, tmp_path):
    module, model = small
    path = tmp_path / "small.onnx"
    onnx.save(model, str(path))
    result = export_onnx_fp16(path)
    assert result.path == tmp_path / "small_fp16.onnx" and result.precision == "fp16"
    assert read_artifact_metadata(result.path)["precision"] == "fp16"
    inputs = [np.random.default_rng(i).normal(size=(2, 3, 32, 32)).astype(np.float32) for i in range(3)]
    report = check_parity(runner_for(result.path), module, inputs, precision="fp16", progress=False)
    assert report.passed, report.failures


def test_conversion_is_deterministic(small):
    _, model = small
    assert convert_to_fp16(model)[0].SerializeToString() == convert_to_fp16(model)[0].SerializeToString()


def _graph(nodes, initializers, outputs=("y",)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 3]) for o in outputs],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_weights_beyond_fp16_range_are_clamped_and_reported():
    w = numpy_helper.from_array(np.array([[1e6, -1e6, 0.5]] * 2, np.float32), "w")
    tiny = numpy_helper.from_array(np.array([1e-9, 1.0, 2.0], np.float32), "tiny")
    model = _graph([helper.make_node("Mul", ["x", "w"], ["t"], name="scale"),
                    helper.make_node("Add", ["t", "tiny"], ["y"], name="shift")], [w, tiny])
    converted, report = convert_to_fp16(model)
    assert report.clamped == {"w": 4} and report.flushed == {"tiny": 1}
    assert any("clamped 4" in n for n in report.notes()) and any("became 0" in n for n in report.notes())
    out = _run(converted, np.ones((2, 3), np.float32))
    assert np.isfinite(out).all() and out[0, 0] == 65504.0


def test_weight_shared_by_fp16_and_fp32_nodes_stays_fp32():
    c = numpy_helper.from_array(np.full((2, 3), 1.0001, np.float32), "c")
    model = _graph([helper.make_node("Add", ["x", "c"], ["y"], name="add"),
                    helper.make_node("Pow", ["x", "c"], ["z"], name="pow")], [c], outputs=("y", "z"))
    converted, _ = convert_to_fp16(model)
    assert [t.data_type for t in converted.graph.initializer] == [TensorProto.FLOAT]
    x = np.full((2, 3), 3.0, np.float32)
    session = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    y, z = session.run(None, {"x": x})
    assert y.dtype == z.dtype == np.float32
    assert z[0, 0] == pytest.approx(3.0**1.0001, rel=1e-6)  # Pow saw the exact exponent


def test_refuses_what_it_cannot_convert(small):
    _, model = small
    converted, _ = convert_to_fp16(model)
    assert is_fp16_model(converted) and not is_fp16_model(model)
    with pytest.raises(UsageError, match="already computes in fp16"):
        convert_to_fp16(converted)
    qdq = _graph([helper.make_node("QuantizeLinear", ["x", "s"], ["q"]), helper.make_node("DequantizeLinear",
                                                                                          ["q", "s"], ["y"])],
                 [numpy_helper.from_array(np.array(0.1, np.float32), "s")])
    with pytest.raises(UsageError, match="quantized"):
        convert_to_fp16(qdq)
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "b", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    control = _graph([helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=branch, else_branch=branch)],
                     [cond])
    with pytest.raises(ExportError, match="control flow"):
        convert_to_fp16(control)
