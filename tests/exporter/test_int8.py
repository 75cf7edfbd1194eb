"""int8 from a folder of real photos: QDQ ONNX (ONNX Runtime) and OpenVINO IR (NNCF)."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lightexport import api
from lightexport.calib import ImageFolder, Preprocess, write_sample_photos
from lightexport.errors import UsageError
from lightexport.loading import load_model
from lightexport.onnxfile import read_metadata
from lightexport.parity import check_parity, make_inputs, runner_for

PLAIN = dict(mean=(0.5, 0.25, 0.125), std=(0.5, 0.25, 0.2))

pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_sample_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def t0():
    return load_model("fasternet_t0")


def _parity(path, loaded):
    return check_parity(runner_for(path, threads=2), loaded.module, make_inputs(loaded.spec, 8), precision="int8",
                        progress=False)


def test_qdq_onnx_from_photos(tmp_path, photos, t0):
    result = api.export(t0, "onnx", output=tmp_path / "t0_int8.onnx", fuse=True, precision="int8", calib=photos,
                        calib_size=8)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    report = _parity(result.path, t0)
    assert report.outputs[0].cosine > 0.98, report.failures


def test_partial_convolutions_split_the_uint8_tensor(tmp_path, photos):
    """FasterNet's Split shares its input's scale, so ONNX Runtime's optimizer runs it on uint8: before, each of
    FasterNet-S's 18 blocks read its partial convolution through DequantizeLinear -> float Split -> QuantizeLinear
    x2 (37 QuantizeLinear, 18 DequantizeLinear left); now only the model input's QuantizeLinear is."""
    import onnxruntime as ort

    loaded = load_model("fasternet_s")
    result = api.export(loaded, "onnx", output=tmp_path / "s.onnx", fuse=True, precision="int8", calib=photos,
                        calib_size=4, input_size=64, int8_keep=0)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(options.optimized_model_filepath).graph.node
    producer = {o: n.op_type for n in nodes for o in n.output}
    splits = [n for n in nodes if n.op_type == "Split"]
    assert len(splits) == 18 and all(producer.get(n.input[0]) != "DequantizeLinear" for n in splits)
    assert [n.op_type for n in nodes].count("QuantizeLinear") == 1
    assert [n.op_type for n in nodes].count("DequantizeLinear") == 0


def test_qdq_onnx_runs_gelus_in_float_and_the_classifier_as_one_int8_kernel(tmp_path, photos, t0):
    """FasterNet-T0's 14 GELUs are ORT's fused Gelu between Q/DQ (not 5 quantized ops each); its classifier is one
    MatMulIntegerToFloat over its int8 weights (no DequantizeLinear per call, float logits); TensorRT's symmetric
    form has no com.microsoft op, and its classifier keeps fp32 weights and bias."""
    from onnx import numpy_helper

    from lightexport.cpu import int8_saturates

    fp32 = api.export(t0, "onnx", output=tmp_path / "t0.onnx", fuse=True)
    result = api.export(t0, "onnx", output=tmp_path / "t0_int8.onnx", fuse=True, precision="int8", calib=photos,
                        calib_size=8)
    model = onnx.load(str(result.path))
    ops = [(n.op_type, n.domain) for n in model.graph.node]
    assert ops.count(("Gelu", "com.microsoft")) == 14 and ("Erf", "") not in ops
    assert ("Gemm", "") not in ops and ops[-1] == ("MatMulIntegerToFloat", "com.microsoft")
    head = model.graph.node[-1]
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    reference = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32.path)).graph.initializer}
    assert weights[head.input[1]].dtype == np.int8 and weights[head.input[1]].shape == reference["head.weight"].T.shape
    if int8_saturates():
        assert np.abs(weights[head.input[1]]).max() <= 64  # 7-bit, like every other layer on this CPU
    assert head.output[0] == model.graph.output[0].name
    assert not any(i.name == "head.weight" for i in model.graph.initializer)  # the QDQ form's codes are not kept twice
    assert "(ONNX Runtime's MatMulIntegerToFloat): /head/Gemm" in " ".join(result.notes)
    assert "14 exact GELUs computed in float" in " ".join(result.notes)
    assert _parity(result.path, t0).outputs[0].cosine > 0.98
    trt = api.export(t0, "onnx", output=tmp_path / "t0_sym.onnx", fuse=True, precision="int8", calib=photos,
                     calib_size=8, int8_symmetric=True)
    symmetric = onnx.load(str(trt.path))
    assert not any(n.domain == "com.microsoft" for n in symmetric.graph.node)
    gemm = next(n for n in symmetric.graph.node if n.op_type == "Gemm")
    kept = {i.name: numpy_helper.to_array(i) for i in symmetric.graph.initializer}
    assert kept[gemm.input[1]].dtype == np.float32
    np.testing.assert_array_equal(kept[gemm.input[2]], reference[gemm.input[2]])  # no bias shift for fp32 weights


def _qdq_head(op: str, per_channel: bool, quantized: bool = True, **attrs) -> onnx.ModelProto:
    """x -> Q -> DQ -> (Gemm|MatMul with DQ'd int8 weights) -> y: the QDQ form of a classifier (``quantized=False``:
    the float classifier it comes from)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    k, n = 24, 10
    transposed = op == "Gemm" and attrs.get("transB", 0)
    # 7-bit codes, as the CPU export writes them where int8 kernels add pairs in saturating int16 (AVX2 without
    # VNNI): with full 8-bit ones MatMulIntegerToFloat is silently wrong there, as every u8 x s8 kernel is
    codes = rng.integers(-64, 65, (n, k) if transposed else (k, n)).astype(np.int8)
    scale = (rng.uniform(0.001, 0.01, n) if per_channel else np.array(0.004)).astype(np.float32)
    inits = [numpy_helper.from_array(codes, "w"), numpy_helper.from_array(scale, "ws"),
             numpy_helper.from_array(np.zeros(scale.shape, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(128, np.uint8), "xz"),
             numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0 if transposed else 1),
             helper.make_node(op, ["xd", "wd", "b"] if op == "Gemm" else ["xd", "wd"], ["y"], name="head", **attrs)]
    if not quantized:
        inits.append(numpy_helper.from_array(codes.astype(np.float32) * 0.004, "wf"))
        nodes = [helper.make_node(op, ["x", "wf", "b"] if op == "Gemm" else ["x", "wf"], ["y"], name="head", **attrs)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("op", "per_channel", "attrs"), [
    ("Gemm", True, {"transB": 1}), ("Gemm", False, {"transB": 1}), ("Gemm", True, {}), ("MatMul", True, {}),
])
def test_int8_head_computes_what_its_qdq_form_means(op, per_channel, attrs):
    """MatMulIntegerToFloat over the int8 codes gives the DequantizeLinear + Gemm/MatMul result (float rounding)."""
    import onnxruntime as ort

    from lightexport.exporter.onnx_head import fuse_int8_heads, head_candidates

    model = _qdq_head(op, per_channel, **attrs)
    assert head_candidates(_qdq_head(op, per_channel, quantized=False, **attrs)) == ["head"]
    fused, done = fuse_int8_heads(model, ["head"])
    assert done == ["head"] and [n.op_type for n in fused.graph.node] == ["QuantizeLinear", "MatMulIntegerToFloat"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ form as written
    x = np.random.default_rng(1).standard_normal((3, 24)).astype(np.float32) * 3
    want = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    got = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_int8_head_leaves_what_it_cannot_write_as_one_kernel():
    from lightexport.exporter.onnx_head import fuse_int8_heads, head_candidates

    assert head_candidates(_qdq_head("Gemm", True, quantized=False, transB=1, alpha=2.0)) == []
    dynamic = _qdq_head("Gemm", True, transB=1)
    dynamic.graph.node[2].input[0] = "xq"  # a weight that is not a constant: nothing to rewrite
    fused, done = fuse_int8_heads(dynamic, ["head"])
    assert done == [] and [n.op_type for n in fused.graph.node] == [n.op_type for n in dynamic.graph.node]


def test_int8_ir_from_photos(tmp_path, photos, t0):
    result = api.export(t0, "openvino", output=tmp_path / "t0_int8.xml", fuse=True, precision="int8", calib=photos,
                        calib_size=8)
    ov = pytest.importorskip("openvino")
    types = {op.get_type_name() for op in ov.Core().read_model(str(result.path)).get_ops()}
    assert "FakeQuantize" in types or "FakeConvert" in types
    report = _parity(result.path, t0)
    assert report.outputs[0].cosine > 0.98, report.failures


def test_int8_ir_activation_ranges_cover_every_calibration_image(tmp_path, photos, t0):
    """With few images: global min/max, not NNCF's mean of per-image extremes, which clips the outlying images."""
    ov = pytest.importorskip("openvino")
    result = api.export(t0, "openvino", output=tmp_path / "t0_int8.xml", fuse=True, precision="int8", calib=photos,
                        calib_size=8, int8_keep=0)  # with the stem kept float, nothing quantizes the input itself
    images = np.concatenate(list(ImageFolder(photos, Preprocess.from_spec(t0.spec)).batches(1, 8)))
    ops = ov.Core().read_model(str(result.path)).get_ops()
    (quantizer,) = [op for op in ops if op.get_type_name() == "FakeQuantize"
                    and op.input_value(0).get_node().get_type_name() == "Parameter"]
    low, high = (quantizer.input_value(i).get_node().get_data() for i in (1, 2))
    # asymmetric activations: the range is nudged so that zero is exactly representable, never narrowed
    assert low.min() <= images.min() and high.max() >= images.max() * 0.999
    per_image_max = images.reshape(len(images), -1).max(axis=1)
    assert high.max() > per_image_max.mean() * 1.01  # what the default estimator would have picked


def _input_range(path, ov):
    ops = ov.Core().read_model(str(path)).get_ops()
    (quantizer,) = [op for op in ops if op.get_type_name() == "FakeQuantize"
                    and op.input_value(0).get_node().get_type_name() == "Parameter"]
    return tuple(float(quantizer.input_value(i).get_node().get_data().max()) for i in (1, 2))


def test_int8_ir_ranges_average_the_extremes_of_many_images(tmp_path, t0, monkeypatch):
    """From MEAN_RANGE_IMAGES on, one outlying image no longer stretches a range (trained MobileNetV2: +5 points).

    Seen on the input's quantizer, NNCF's as it made it (the export then widens that one to the pixels' range)."""
    ov = pytest.importorskip("openvino")
    from lightexport.calib.crops import write_calibration_crops
    from lightexport.exporter import openvino
    from lightexport.exporter.openvino import MEAN_RANGE_IMAGES

    monkeypatch.setattr(openvino, "widen_input_quantizers", lambda model, value_range: None)

    n = MEAN_RANGE_IMAGES + 4
    crops = write_calibration_crops(tmp_path / "crops", n)
    result = api.export(t0, "openvino", output=tmp_path / "t0_int8.xml", fuse=True, precision="int8", calib=crops,
                        calib_size=n, int8_keep=0)
    images = np.concatenate(list(ImageFolder(crops, Preprocess.from_spec(t0.spec)).batches(1, n)))
    per_image_max = images.reshape(len(images), -1).max(axis=1)
    _low, high = _input_range(result.path, ov)
    assert high == pytest.approx(per_image_max.mean(), rel=0.02) and high < images.max() * 0.98
    assert "mean of per-image extremes" in " ".join(result.notes)


def _has_input_range_note(notes: list[str], low: float, high: float) -> bool:
    return any(f"whole range [{low:.3f}, {high:.3f}]" in note for note in notes)


def test_int8_onnx_input_quantizer_covers_every_pixel_value(tmp_path, photos, t0):
    """The input is pixels: its quantizer spans what the preprocessing can produce, where the moving-average ranges
    of activations clip the darkest and brightest (trained MobileNetV2, no layer float: cosine 0.9908 -> 0.9922)."""
    low, high = Preprocess.from_spec(t0.spec).value_range
    result = api.export(t0, "onnx", output=tmp_path / "t0_int8.onnx", fuse=True, precision="int8", calib=photos,
                        calib_size=8, int8_keep=0)
    model = onnx.load(str(result.path))
    (quantize,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input"]
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scale, zero = float(values[quantize.input[1]]), int(values[quantize.input[2]])
    # ONNX Runtime rounds the zero point to a code, which may cost the top or bottom half a step
    assert scale * (0 - zero) <= low + scale / 2 and scale * (255 - zero) >= high - scale / 2
    assert scale * 255 <= (high - low) * 1.01  # no wider than it needs
    assert _has_input_range_note(result.notes, low, high), result.notes
    assert json.loads(read_metadata(result.path)["lightexport.int8"])["input_range"] == pytest.approx([low, high])
    kept = api.export(t0, "onnx", output=tmp_path / "t0_keep1.onnx", fuse=True, precision="int8", calib=photos,
                      calib_size=8, int8_keep=1)  # the stem float: nothing quantizes the input, nothing to say
    assert not any("whole range" in note for note in kept.notes), kept.notes
    assert json.loads(read_metadata(kept.path)["lightexport.int8"])["input_range"] is None


def test_int8_ir_input_quantizer_covers_every_pixel_value(tmp_path, t0):
    """The same in OpenVINO: NNCF's averaged extremes on the input are widened to the pixels' range, zero on a code."""
    ov = pytest.importorskip("openvino")
    from lightexport.calib.crops import write_calibration_crops
    from lightexport.exporter.openvino import MEAN_RANGE_IMAGES

    n = MEAN_RANGE_IMAGES + 4  # enough images for the averaged extremes, which clip
    crops = write_calibration_crops(tmp_path / "crops", n)
    result = api.export(t0, "openvino", output=tmp_path / "t0_int8.xml", fuse=True, precision="int8", calib=crops,
                        calib_size=n, int8_keep=0, input_size=96)
    low, high = Preprocess.from_spec(t0.spec).value_range
    fq_low, fq_high = _input_range(result.path, ov)
    assert fq_low <= low + 1e-6 and fq_high >= high - 1e-6 and fq_high - fq_low <= (high - low) * 1.01
    zero = -fq_low / ((fq_high - fq_low) / 255)
    assert zero == pytest.approx(round(zero), abs=1e-3)  # zero (the stem's padding) is exactly representable
    assert _has_input_range_note(result.notes, low, high), result.notes


def test_value_range_is_what_normalize_produces():
    pre = Preprocess(input_size=4, **PLAIN)
    extremes = pre.normalize(np.array([[[0, 0, 0], [255, 255, 255]]] * 2, np.uint8))
    assert pre.value_range == (pytest.approx(float(extremes.min())), pytest.approx(float(extremes.max())))


@pytest.mark.parametrize(("threshold", "expected"), [
    (4, [3, 4]),          # the default misses: walk up to the first count that meets
    (5, [3, 4, 6]),
    (2, [3, 2, 1]),       # the default meets: walk down to the first miss
    (0, [3, 2, 1, 0]),
    (99, [3, 4, 6, 8, 12]),  # nothing meets: every larger count tried (the best cosine is kept)
])
def test_auto_keep_searches_outward_from_the_default(threshold, expected):
    from lightexport.exporter.keep_search import AUTO_STEPS, auto_search_order

    asked = []

    def meets(count):
        asked.append(count)
        return count >= threshold

    assert auto_search_order(list(AUTO_STEPS), meets) == expected == asked
    assert auto_search_order([0, 1], lambda c: c >= 1) == [1, 0]  # fewer convs than the default


def test_auto_keep_records_its_search_and_keeps_the_fewest_that_meet(tmp_path, photos, t0, monkeypatch):
    import json

    from lightexport.exporter import keep_search

    monkeypatch.setattr(keep_search, "AUTO_TARGET", -1.0)  # every count meets: the search walks down to 0 kept
    result = api.export(t0, "onnx", output=tmp_path / "auto.onnx", fuse=True, precision="int8", calib=photos,
                        calib_size=8, int8_keep="auto")
    from lightexport.onnxfile import read_metadata

    recorded = json.loads(read_metadata(result.path)["lightexport.int8"])
    assert [count for count, _ in recorded["auto_search"]] == [0, 1, 2, 3] and recorded["kept_float"] == []
    assert any(n.startswith("int8 keep auto: calibration cosine by float-kept convs 0: ") for n in result.notes)


def test_openvino_auto_keep_records_its_search(tmp_path, photos, t0, monkeypatch):
    import json

    from lightexport.exporter import keep_search

    monkeypatch.setattr(keep_search, "AUTO_TARGET", 2.0)  # nothing meets: every larger count is tried, best kept
    monkeypatch.setattr(keep_search, "AUTO_STEPS", (2, 3, 4))
    result = api.export(t0, "openvino", output=tmp_path / "auto.xml", fuse=True, precision="int8", calib=photos,
                        calib_size=8, int8_keep="auto", input_size=128)
    recorded = json.loads(result.metadata["lightexport.int8"])
    counts = [count for count, _ in recorded["auto_search"]]
    assert sorted(counts) == [2, 3, 4]  # from the default up, then the fewest (nothing met the target)
    search = dict(recorded["auto_search"])
    best = max(search.values())
    chosen = min(c for c, cos in search.items() if 1 - cos <= (1 - best) * (1 + keep_search.NEAR_BEST))
    assert len(recorded["kept_float"]) == chosen and all(0.9 < c <= 1.0 + 1e-9 for c in search.values())


@pytest.mark.parametrize(("cosines", "chosen", "tried"), [
    ({3: 0.9958, 4: 0.9957, 6: 0.9957, 8: 0.9957, 12: 0.9958, 0: 0.99578}, 0, 6),  # float buys nothing: keep none
    ({3: 0.9950, 4: 0.9955, 6: 0.9960, 8: 0.9965, 12: 0.9970, 0: 0.9900}, 12, 6),  # it helps: keep the best
    ({3: 0.9950, 4: 0.9969, 6: 0.9970, 8: 0.9965, 12: 0.9960, 0: 0.9900}, 4, 6),   # within 5 % of the best's error
    ({3: 0.9980, 2: 0.9978, 1: 0.9970, 0: 0.9960}, 2, 3),  # the target met: the fewest that meets, 0 never built
])
def test_auto_keep_keeps_no_float_layer_that_buys_nothing(cosines, chosen, tried):
    from lightexport.exporter.keep_search import search_keep

    built = []

    def build(count):
        built.append(count)
        return cosines[count], f"model keeping {count}"

    count, results = search_keep(100, build, target=0.9975)
    assert count == chosen and len(built) == tried == len(set(built)) and results[count][1] == f"model keeping {count}"


@pytest.mark.parametrize(("cosines", "chosen"), [
    ({3: 0.9990, 0: 0.9980}, 0),    # keeping none reaches the target: none
    ({3: 0.9962, 0: 0.99605}, 0),   # neither does, none within NEAR_BEST of 3's error: none (FasterNet's case)
    ({3: 0.9961, 0: 0.9910}, 3),    # keeping 3 buys accuracy: 3 (trained MobileNetV2's calibration cosines)
    ({3: 0.9962, 0: 0.9958}, 3),    # none 10 % worse: 3
])
def test_lean_keep_is_the_default_count_or_none(cosines, chosen):
    """``lean`` is auto's rule over none and the default count: one quantization where none reaches the target,
    else two."""
    from lightexport.exporter.keep_search import search_keep, search_word
    from lightexport.options import DEFAULT_KEEP, SEARCHES

    assert SEARCHES["lean"].steps == (0, DEFAULT_KEEP)
    built = []

    def build(count):
        built.append(count)
        return cosines[count], count

    lean = SEARCHES["lean"]
    assert search_keep(52, build, lean.steps, target=0.9975, start=lean.start)[0] == chosen
    assert built == ([0] if cosines[0] >= 0.9975 else [0, 3])  # none reaching the target is the answer at once
    built.clear()
    assert search_word("lean", 2, build)[0] == 0 and built == [0]  # fewer convs than 3: nothing to weigh


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_cpu_formats_int8_default_is_lean(tmp_path, photos, t0, monkeypatch, fmt):
    """ONNX Runtime's and OpenVINO's int8 keep the first 3 convolutions float unless keeping none does as well on
    the calibration images (here forced both ways through the target); the notes and metadata record the search."""
    import json

    from lightexport.artifacts import read_artifact_metadata
    from lightexport.exporter import keep_search

    kept = {}
    for target, name in ((-1.0, "none"), (2.0, "three")):
        monkeypatch.setattr(keep_search, "AUTO_TARGET", target)
        monkeypatch.setattr(keep_search, "NEAR_BEST", 0.0)  # only the best count (or a tie) does as well
        result = api.export(t0, fmt, output=tmp_path / f"{name}.{'xml' if fmt == 'openvino' else 'onnx'}", fuse=True,
                            precision="int8", calib=photos, calib_size=8, input_size=64)
        recorded = json.loads(read_artifact_metadata(result.path)["int8"])
        search = dict(recorded["auto_search"])
        assert sorted(search) == ([0] if target < 0 else [0, 3])  # none met the target: nothing else to try
        assert any(n.startswith("int8 keep lean: calibration cosine by float-kept convs 0: ") for n in result.notes)
        kept[name] = (len(recorded["kept_float"]), search)
    assert kept["none"][0] == 0 and len(kept["none"][1]) == 1
    search = kept["three"][1]
    assert kept["three"][0] == (3 if search[3] > search[0] else 0)


def test_searching_keep_words_are_refused_where_the_format_has_no_search():
    from lightexport.backends import get_backend
    from lightexport.options import ExportOptions, parse_keep

    assert parse_keep("lean") == "lean" and parse_keep(" auto ") == "auto"
    with pytest.raises(UsageError, match=r"--int8-keep lean is not offered for executorch: give a count \(auto by "
                                         r"default\), module names, or auto"):
        ExportOptions.build(get_backend("executorch"), precision="int8", int8_keep="lean")
    with pytest.raises(UsageError, match=r"--int8-keep lean is not offered for mnn: give a count \(5 by default\), "
                                         r"module names$"):
        ExportOptions.build(get_backend("mnn"), precision="int8", int8_keep="lean")
    assert ExportOptions.build(get_backend("onnx"), precision="int8").int8_keep == "lean"
    assert ExportOptions.build(get_backend("tensorrt"), precision="int8").int8_keep == 3


def test_auto_keep_is_judged_by_the_worst_output():
    """A backbone's first map sees only the first layers: every output counts, the lowest cosine decides."""
    from lightexport.exporter.keep_search import calibration_cosine

    rng = np.random.default_rng(0)
    shallow, deep = rng.standard_normal((4, 8, 6, 6)), rng.standard_normal((4, 32))
    noisy = deep + 0.5 * rng.standard_normal(deep.shape)
    assert calibration_cosine([shallow, deep], [shallow, deep]) == pytest.approx(1.0)
    worst = calibration_cosine([deep], [noisy])
    assert worst < 0.95 and calibration_cosine([shallow, deep], [shallow, noisy]) == pytest.approx(worst)


def test_int8_ir_with_a_fixed_batch_calibrates_in_batches_of_that_size(tmp_path, photos, t0):
    """NNCF feeds the model items shaped like its input: a batch-2 IR gets pairs of images (it refused singles)."""
    ov = pytest.importorskip("openvino")
    result = api.export(t0, "openvino", output=tmp_path / "b2.xml", fuse=True, precision="int8", calib=photos,
                        calib_size=8, batch=2, input_size=64, int8_keep="auto")
    model = ov.Core().read_model(str(result.path))
    assert list(model.inputs[0].get_partial_shape().to_shape()) == [2, 3, 64, 64]
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    assert any(n.startswith("int8 keep auto: calibration cosine") for n in result.notes)


def test_keep_by_module_name_finds_modules_nested_in_containers(tmp_path):
    """torch's ONNX export names ``features.1.conv.0.0``'s conv ``/features/features.1/conv/conv.0/conv.0.0/Conv``:
    ``--int8-keep features.1.conv.0`` (a name from ``named_modules``) must find it, and nothing but it."""
    from lightexport.exporter.onnx_int8 import resolve_keep
    from lightexport.onnxfile import module_of

    loaded = load_model("mobilenet_v2")
    path = api.export(loaded, "onnx", output=tmp_path / "mv2.onnx", fuse=True).path
    model = onnx.load(str(path))
    modules = dict(loaded.module.named_modules())
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(module_of(n.name) in modules for n in model.graph.node if "/" in n.name)
    names = [n.name for n in convs]

    def kept_convs(keep):
        return [name for name in resolve_keep(model, keep) if name in names]

    assert kept_convs(["features.1.conv.0"]) == [names[1]]
    assert kept_convs("features.1") == names[1:3]
    assert kept_convs(["features.0", "features.1.conv.1"]) == [names[0], names[2]]
    with pytest.raises(UsageError, match="no node or module 'features.1.conv.9'"):
        resolve_keep(model, ["features.1.conv.9"])
    ov = pytest.importorskip("openvino")
    from lightexport.exporter.openvino import keep_scope

    ir = ov.convert_model(str(path))  # OpenVINO from the ONNX file names its ops after the ONNX nodes
    assert keep_scope(ir, ["features.1.conv.0"]) == [op.get_friendly_name() for op in ir.get_ordered_ops()
                                                     if op.get_type_name() in ("Convolution", "GroupConvolution")][1:2]
