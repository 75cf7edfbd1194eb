"""Preflight, profiles and the trtexec line: everything about a TensorRT build that a CPU can check."""

import shlex

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lightexport import api
from lightexport.errors import ExportError, UsageError
from lightexport.exporter.trt_preflight import (
    PreflightError,
    ShapeRange,
    make_profile,
    parse_shapes,
    preflight,
    trtexec_command,
)

F = TensorProto.FLOAT


def _model(nodes, inputs=None, outputs=None, initializers=(), opset=17):
    inputs = inputs or [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])]
    outputs = outputs or [helper.make_tensor_value_info("y", F, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _const(name, values, dtype=None):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _cnn():
    """The op mix of a fused FasterNet block: split, partial conv, concat, 1x1 convs, GELU (erf), residual, head."""
    w = lambda name, shape: _const(name, np.random.default_rng(0).normal(size=shape), np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Split", ["x", "split"], ["a", "b"], name="pconv/Split", axis=1),
        helper.make_node("Conv", ["a", "w0"], ["a2"], name="pconv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a2", "b"], ["c"], name="pconv/Concat", axis=1),
        helper.make_node("Conv", ["c", "w1"], ["d"], name="mlp/Conv"),
        helper.make_node("Div", ["d", "sqrt2"], ["e"], name="gelu/Div"),
        helper.make_node("Erf", ["e"], ["f"], name="gelu/Erf"),
        helper.make_node("Mul", ["d", "f"], ["g"], name="gelu/Mul"),
        helper.make_node("Add", ["g", "x"], ["h"], name="residual/Add"),
        helper.make_node("GlobalAveragePool", ["h"], ["p"], name="head/Pool"),
        helper.make_node("Flatten", ["p"], ["q"], name="head/Flatten"),
        helper.make_node("Gemm", ["q", "wf", "bf"], ["y"], name="head/Gemm", transB=1),
    ]
    inits = [_const("split", [1, 2], np.int64), w("w0", (1, 1, 3, 3)), w("w1", (3, 3, 1, 1)),
             _const("sqrt2", 1.4142135, np.float32), w("wf", (10, 3)), w("bf", (10,)),
             _const("shape_big", [2**40], np.int64)]  # int64 beyond int32: native since TensorRT 9
    return _model(nodes, initializers=inits)


def _dynamic_input(name="x", dims=("batch", 3, "h", "w")):
    return helper.make_tensor_value_info(name, F, list(dims))


def test_accepts_a_fasternet_style_graph():
    report = preflight(_cnn())
    assert report.ok and not report.findings, report.lines()
    assert report.profile == {}  # static inputs need no profile


def _qdq(x_dtype=np.int8, zero_point=0, zp_dtype=np.int8, op="DequantizeLinear"):
    nodes = [helper.make_node(op, ["wq", "s", "zp"], ["y"], name="bias/DQ")]
    inits = [_const("wq", [1, 2, 3], x_dtype if op == "DequantizeLinear" else np.float32),
             _const("s", 0.1, np.float32), _const("zp", zero_point, zp_dtype)]
    return _model(nodes, initializers=inits)


# Each kind of blocker, with the node (or input) it must name and a phrase from the reason.
BLOCKERS = {
    "unknown op": (_model([helper.make_node("FooBar", ["x"], ["y"], name="odd/FooBar")]), "odd/FooBar",
                   "not in the parser's support matrix"),
    "unsupported op": (_model([helper.make_node("Unique", ["x"], ["y"], name="uniq")]), "uniq", "not supported"),
    "custom domain": (_model([helper.make_node("Gelu", ["x"], ["y"], name="ms/Gelu", domain="com.microsoft")]),
                      "ms/Gelu", "plugin"),
    "resize cubic": (_model([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="up/Resize", mode="cubic")],
                            initializers=[_const("sc", [1, 1, 2, 2], np.float32)]), "up/Resize", "mode='cubic'"),
    "resize antialias": (_model([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="aa/Resize", antialias=1)],
                                initializers=[_const("sc", [1, 1, 0.5, 0.5], np.float32)], opset=18), "aa/Resize",
                         "antialias"),
    "pool dilations": (_model([helper.make_node("MaxPool", ["x"], ["y"], name="pool/MaxPool", kernel_shape=[2, 2],
                                                dilations=[2, 2])]), "pool/MaxPool", "dilations"),
    "maxpool indices": (_model([helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool/Idx", kernel_shape=[2, 2])],
                               outputs=[helper.make_tensor_value_info("y", F, None),
                                        helper.make_tensor_value_info("idx", TensorProto.INT64, None)]),
                        "pool/Idx", "Indices"),
    "reduce axes input": (_model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean/Reduce")],
                                 inputs=[helper.make_tensor_value_info("x", F, [1, 3]),
                                         helper.make_tensor_value_info("axes", TensorProto.INT64, [1])], opset=18),
                          "mean/Reduce", "axes must be an initializer"),
    "int32 bias dequantize": (_qdq(x_dtype=np.int32, zp_dtype=np.int32), "bias/DQ", "INT32"),
    "uint8 zero point": (_qdq(op="QuantizeLinear", zp_dtype=np.uint8), "bias/DQ", "UINT8"),
    "asymmetric": (_qdq(zero_point=3), "bias/DQ", "symmetric"),
    "low opset": (_model([helper.make_node("Relu", ["x"], ["y"], name="r")], opset=8), "(graph)", "opset 8"),
    "double overflow": (_model([helper.make_node("Add", ["x", "big"], ["y"], name="add/Big")],
                               initializers=[_const("big", [1e300], np.float64)]), "add/Big", "beyond float32"),
    "uint64 weight": (_model([helper.make_node("Add", ["x", "u"], ["y"], name="add/U64")],
                             initializers=[_const("u", [1], np.uint64)]), "add/U64", "UINT64"),
    "uint16 input": (_model([helper.make_node("Relu", ["x"], ["y"], name="r")],
                            inputs=[helper.make_tensor_value_info("x", TensorProto.UINT16, [1])]), "x", "UINT16"),
    "untyped output": (_model([helper.make_node("Relu", ["x"], ["y"], name="r")],
                              outputs=[helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)]), "y",
                       "UNDEFINED"),
    "dynamic without profile": (_model([helper.make_node("Relu", ["x"], ["y"], name="r")], inputs=[_dynamic_input()]),
                                "x", "no optimization profile"),
}


@pytest.mark.parametrize("kind", list(BLOCKERS))
def test_rejects_each_blocker_by_name(kind):
    model, name, phrase = BLOCKERS[kind]
    report = preflight(model, source="m.onnx")
    assert not report.ok
    assert any(f.node == name and phrase in f.reason for f in report.blockers), report.lines()
    with pytest.raises(PreflightError) as caught:
        report.raise_for_blockers()
    assert isinstance(caught.value, ExportError) and "\n" not in str(caught.value) and repr(name) in str(caught.value)


def test_reports_every_blocker_not_just_the_first():
    model = _model([helper.make_node("FooBar", ["x"], ["t"], name="one"), helper.make_node("Unique", ["t"], ["y"],
                                                                                        name="two")])
    assert [f.node for f in preflight(model).blockers] == ["one", "two"]


def test_warnings_do_not_block():
    model = _model([helper.make_node("Add", ["x", "d"], ["t"], name="add/D"),
                    helper.make_node("Cast", ["t"], ["y"], name="to_double", to=TensorProto.DOUBLE)], opset=25,
                   inputs=[helper.make_tensor_value_info("x", TensorProto.INT32, [1])],
                   outputs=[helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1])],
                   initializers=[_const("d", [0.5], np.float64)])
    report = preflight(model)
    assert report.ok
    reasons = " | ".join(f.reason for f in report.warnings)
    assert "newer than 24" in reasons and "cast to FLOAT" in reasons and "INT32 input" in reasons
    assert "DOUBLE output: TensorRT binds it as FLOAT" in reasons


def test_precision_must_match_quantization():
    fp32 = _cnn()
    assert "explicit quantization" in preflight(fp32, precision="int8").blockers[0].reason
    assert preflight(_qdq(), precision="int8").ok
    assert "build it with --int8" in preflight(_qdq(), precision="fp16").blockers[0].reason


# --------------------------------------------------------------------------- profiles


def test_parse_shapes_follows_trtexec_syntax():
    assert parse_shapes("input:1x3x224x224") == {"input": (1, 3, 224, 224)}
    assert parse_shapes("a:1x3, 'b:0':2x5") == {"a": (1, 3), "b:0": (2, 5)}  # name holds ':'; quotes dropped


@pytest.mark.parametrize("spec", ["input", "input:", ":1x3", "input:1xx3", "input:0x3", "input:-1x3", "a:1,a:2"])
def test_parse_shapes_rejects_malformed(spec):
    with pytest.raises(UsageError):
        parse_shapes(spec, "--min-shape")


def test_make_profile_expands_opt_only_and_requires_all_three_otherwise():
    assert make_profile(opt_shapes="x:2x3") == {"x": ShapeRange((2, 3), (2, 3), (2, 3))}
    assert make_profile() is None
    with pytest.raises(UsageError, match="all three"):
        make_profile(min_shapes="x:1x3", opt_shapes="x:2x3")
    with pytest.raises(UsageError, match="each of"):
        make_profile("x:1x3,z:1", "x:2x3", "x:4x3")


def _relu(dims=("batch", 3, "h", "w")):
    return _model([helper.make_node("Relu", ["x"], ["y"], name="r")], inputs=[_dynamic_input(dims=dims)])


def test_profile_covers_dynamic_dims():
    profile = make_profile("x:1x3x64x64", "x:4x3x224x224", "x:8x3x256x256")
    report = preflight(_relu(), profile)
    assert report.ok and report.profile == profile


@pytest.mark.parametrize("shapes, phrase", [
    (("x:1x3x64", "x:1x3x64", "x:1x3x64"), "rank 3"),
    (("x:1x1x64x64", "x:1x1x64x64", "x:1x1x64x64"), "static dim(s) [1]"),
])
def test_profile_that_does_not_fit_is_a_blocker(shapes, phrase):
    report = preflight(_relu(), make_profile(*shapes))
    assert any(f.node == "x" and phrase in f.reason for f in report.blockers), report.lines()


@pytest.mark.parametrize("shapes", [("x:4x3x64x64", "x:2x3x64x64", "x:8x3x64x64"),
                                    ("x:1x3x64x64", "x:1x3x64x64", "x:1x3x32x64")])
def test_profile_out_of_order_is_a_usage_error_before_any_export(shapes):  # issue #26: refused as it is parsed
    with pytest.raises(UsageError, match=r"input x: each dimension needs min <= opt <= max"):
        make_profile(*shapes)


def test_profile_for_unknown_input_and_for_static_input():
    report = preflight(_cnn(), make_profile(opt_shapes="image:1x3x8x8"))
    assert report.blockers[0].node == "image" and "not an input" in report.blockers[0].reason
    static = preflight(_cnn(), make_profile(opt_shapes="x:1x3x8x8"))
    assert static.ok and static.profile == {}  # validated, but TensorRT needs no profile for it
    assert not preflight(_cnn(), make_profile(opt_shapes="x:2x3x8x8")).ok


def test_accepts_fasternet_t0_exports(fasternet_onnx):
    static, dynamic = fasternet_onnx
    assert preflight(static).ok
    assert "batch@0, height@2, width@3" in preflight(dynamic).blockers[0].reason
    profile = make_profile("input:1x3x160x160", "input:4x3x224x224", "input:8x3x224x224")
    assert preflight(dynamic, profile).profile == profile


@pytest.fixture(scope="module")
def fasternet_onnx(tmp_path_factory):
    from lightexport.loading import load_model

    folder = tmp_path_factory.mktemp("t0")
    loaded = load_model("fasternet_t0")
    return tuple(onnx.load(api.export(loaded, "onnx", output=folder / f"{d}.onnx", fuse=True, dynamic=d,
                                      input_size=64).path)
                 for d in (False, True))


# --------------------------------------------------------------------------- trtexec


def _args(line):
    return shlex.split(line)


def test_trtexec_fp32_turns_tf32_off_and_only_builds():
    args = _args(trtexec_command("m.onnx", "m.engine", "fp32", strongly_typed=False))
    assert args == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--noTF32", "--skipInference"]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_trtexec_precision_flags_follow_typing(precision):
    weak = _args(trtexec_command("m.onnx", "m.engine", precision, strongly_typed=False))
    strong = _args(trtexec_command("m.onnx", "m.engine", precision, strongly_typed=True))
    assert f"--{precision}" in weak and "--stronglyTyped" not in weak
    assert "--stronglyTyped" in strong and f"--{precision}" not in strong  # TensorRT 11 has no --fp16/--int8


def test_trtexec_profile_workspace_cache_and_quoting():
    profile = {"input": ShapeRange((1, 3, 64, 64), (4, 3, 224, 224), (8, 3, 256, 256)),
               "mask": ShapeRange((1, 1), (2, 1), (4, 1))}
    line = trtexec_command("/data/my models/t0 fp16.onnx", "out dir/t0.engine", "fp16", profile, 1.5,
                           "caches/it's.cache")
    args = _args(line)  # the shell gives back exactly these arguments
    assert "--onnx=/data/my models/t0 fp16.onnx" in args and "--saveEngine=out dir/t0.engine" in args
    assert "--minShapes=input:1x3x64x64,mask:1x1" in args
    assert "--optShapes=input:4x3x224x224,mask:2x1" in args
    assert "--maxShapes=input:8x3x256x256,mask:4x1" in args
    assert "--memPoolSize=workspace:1536M" in args and "--timingCacheFile=caches/it's.cache" in args
