"""The simplification guard: a step that costs ONNX Runtime a fusion is not kept (issue #15)."""

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lightexport import api
from lightexport.exporter.onnx import naive_export, simplify
from lightexport.exporter.onnx_guard import Candidate, RuntimeProfile, guarded_simplify, ort_profile
from lightexport.loading import load_model


def _gelu_between_convs(seed: int = 0) -> onnx.ModelProto:
    """Conv -> GELU as torch's opset-17 exporter writes it (x * (erf(x / sqrt2) + 1) * 0.5) -> Conv."""
    rng = np.random.default_rng(seed)
    init = [numpy_helper.from_array(rng.standard_normal((8, 4, 1, 1)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"),
            numpy_helper.from_array(np.array(1.4142135, np.float32), "sqrt2"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
             helper.make_node("Div", ["a", "sqrt2"], ["d"], name="div"),
             helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["p"], name="add"),
             helper.make_node("Mul", ["a", "p"], ["m"], name="mul"),
             helper.make_node("Mul", ["m", "half"], ["g"], name="mul_half"),
             helper.make_node("Conv", ["g", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _fold_half_into_next_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """What onnxsim does to GELU's ``* 0.5``: scale the next conv's weights and drop the Mul (exact algebra)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    weights = {i.name: i for i in out.graph.initializer}
    scaled = numpy_helper.to_array(weights["w2"]) * np.float32(0.5)
    weights["w2"].CopyFrom(numpy_helper.from_array(scaled, "w2"))
    half = next(n for n in out.graph.node if n.name == "mul_half")
    conv2 = next(n for n in out.graph.node if n.name == "conv2")
    conv2.input[0] = half.input[0]
    out.graph.node.remove(half)
    return out


def test_a_step_that_blocks_a_fusion_is_dropped():
    model = _gelu_between_convs()
    reference = ort_profile(model)
    assert reference.fused["com.microsoft:Gelu"] == 1  # ORT fuses the unsimplified chain
    decision = guarded_simplify(model, [Candidate("fold-half", _fold_half_into_next_conv)])
    assert decision.kept is None and decision.model is model
    assert decision.profiles["fold-half"].fused["com.microsoft:Gelu"] == 0
    assert "fold-half dropped: blocks 1 Gelu fusion" in decision.note


def test_the_first_harmless_candidate_is_kept():
    model = _gelu_between_convs()
    identity = Candidate("identity", lambda m: m)
    decision = guarded_simplify(model, [Candidate("fold-half", _fold_half_into_next_conv), identity])
    assert decision.kept == "identity"
    assert decision.note.startswith("simplify: identity kept (ORT: ")
    assert "fold-half dropped" in decision.note


def test_profile_comparison():
    base = RuntimeProfile(10, Counter({"Conv": 6, "com.microsoft:FusedConv": 2, "Gelu": 2}))
    assert RuntimeProfile(9, Counter({"Conv": 5, "com.microsoft:FusedConv": 2, "Gelu": 2})).no_worse(base)
    assert not RuntimeProfile(11, Counter(base.ops)).no_worse(base)  # more nodes
    fewer_gelu = RuntimeProfile(9, Counter({"Conv": 6, "com.microsoft:FusedConv": 2, "Gelu": 1}))
    assert not fewer_gelu.no_worse(base) and base.blocked_by(fewer_gelu) == Counter({"Gelu": 1})


@pytest.fixture(scope="module")
def t0_export(tmp_path_factory):
    loaded = load_model("fasternet_t0")
    out = tmp_path_factory.mktemp("guard") / "t0.onnx"
    return loaded, api.export(loaded, "onnx", output=out, fuse=True, input_size=64)


def test_fasternet_t0_keeps_ort_gelu_fusion_and_is_no_larger_than_the_naive_export(t0_export, tmp_path):
    """Issue #15: onnxsim folded GELU's * 0.5 into the next conv, ORT then ran 13 Div/Erf/Add/Mul chains
    (139 nodes after its optimizer instead of 100) and the file was slower than a plain torch.onnx.export."""
    loaded, result = t0_export
    ours = ort_profile(onnx.load(str(result.path)))
    naive = naive_export(loaded, torch.zeros(1, 3, 64, 64), tmp_path / "naive.onnx")
    theirs = ort_profile(onnx.load(str(naive)))
    gelus = sum(n for op, n in ours.ops.items() if op.split(":")[-1] == "Gelu")
    assert gelus == 14  # one per MLP block (13) and the head's
    assert not any(op in ours.ops for op in ("Erf", "Div"))
    assert ours.nodes <= theirs.nodes, (ours, theirs)


def test_fasternet_t0_notes_and_metadata_say_what_was_kept(t0_export):
    _, result = t0_export
    note = result.metadata["lightexport.simplify"]
    assert note in result.notes
    assert "onnxsim dropped: blocks 13 Gelu fusions" in note
    assert note.startswith("simplify: onnxsim without graph rewrites kept")


def test_full_onnxsim_is_kept_where_it_costs_nothing():
    """MobileNetV3 (ReLU/Hardswish, no GELU): onnxsim's rewrites leave ORT's graph as it is, so they stay."""
    from lightexport.exporter.onnx import torch_to_onnx

    loaded = load_model("mobilenet_v3_small")
    model = torch_to_onnx(loaded.module, torch.zeros(1, 3, 64, 64), ["logits"])
    simplified, note = simplify(model)
    assert note.startswith("simplify: onnxsim kept") and "dropped" not in note
    assert len(simplified.graph.node) < len(model.graph.node)


def test_guarded_export_is_byte_identical(t0_export, tmp_path):
    loaded, result = t0_export
    again = api.export(loaded, "onnx", output=tmp_path / "again.onnx", fuse=True, input_size=64)
    assert again.path.read_bytes() == result.path.read_bytes()
