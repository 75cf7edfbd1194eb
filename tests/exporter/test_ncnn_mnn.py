"""ncnn and MNN (issue #21): exported, checked in the precision each really runs, and refusing bad files.

Each test skips, saying why, where its wheel cannot be installed (``pip install 'lightexport[ncnn]'``,
``'lightexport[mnn]'``). Trained-weight tests use the hash-pinned MobileNetV2 (tests/trained.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lightexport import api
from lightexport.cli import cli
from lightexport.errors import ExitCode, InputFileError, UsageError
from tests.cli_output import one_line

SIZE = 64


def _needs(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed: pip install 'lightexport[{module.lower()}]'")


@pytest.fixture(scope="module")
def t0():
    return api.load("fasternet_t0")


# --------------------------------------------------------------------------- ncnn


@pytest.fixture(scope="module")
def ncnn_pair(t0, tmp_path_factory):
    _needs("ncnn")
    _needs("pnnx")
    out = tmp_path_factory.mktemp("ncnn") / "t0.ncnn.param"
    return api.export(t0, "ncnn", output=out, fuse=True, input_size=SIZE)


def test_ncnn_weights_are_fp32_unless_asked_and_parity_holds_pinned_and_at_defaults(ncnn_pair, t0, tmp_path):
    from lightexport.exporter.ncnn_files import TAG_FP16, TAG_FP32

    param, weights, sidecar = ncnn_pair.files
    assert [f.name for f in ncnn_pair.files] == ["t0.ncnn.param", "t0.ncnn.bin", "t0.ncnn.json"]
    assert int.from_bytes(weights.read_bytes()[:4], "little") == TAG_FP32  # pnnx alone would have written fp16
    report = api.verify(param, t0, progress=False)
    assert report.passed and report.outputs[0].max_rel <= 1e-4  # pinned: fp16 off, so fp32 agreement
    assert report.execution.startswith("fp32 pinned")
    assert all("ncnn's default" in r.execution and r.precision == "fp16" for r in report.also)
    fp16 = api.export(t0, "ncnn", output=tmp_path / "h.ncnn.param", fuse=True, input_size=SIZE, precision="fp16")
    assert int.from_bytes(fp16.files[1].read_bytes()[:4], "little") == TAG_FP16
    assert fp16.files[1].stat().st_size < 0.55 * weights.stat().st_size
    assert api.verify(fp16.path, t0, progress=False).passed


def test_ncnn_int8_is_refused_with_the_reason(t0, tmp_path):
    _needs("ncnn")
    from lightexport.calib import write_sample_photos

    with pytest.raises(UsageError, match="ncnn int8 is not offered: no tool on the package registry"):
        api.export(t0, "ncnn", output=tmp_path / "q.ncnn.param", input_size=SIZE, precision="int8",
                   calib=write_sample_photos(tmp_path / "p"))
    assert not list(tmp_path.glob("q.ncnn.*"))


@pytest.mark.parametrize("damage", ["junk param", "empty param", "truncated param", "truncated bin", "empty bin",
                                    "foreign bin", "junk bin of the right size"])
def test_bad_ncnn_files_are_exit_5_never_a_crash(ncnn_pair, tmp_path, damage):
    import shutil

    param, weights, sidecar = (shutil.copy(f, tmp_path / f.name) for f in ncnn_pair.files)
    from pathlib import Path

    param, weights = Path(param), Path(weights)
    data = weights.read_bytes()
    if damage == "junk param":
        param.write_text("hello\n")
    elif damage == "empty param":
        param.write_bytes(b"")
    elif damage == "truncated param":
        param.write_text("\n".join(param.read_text().splitlines()[:10]))
    elif damage == "truncated bin":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "empty bin":
        weights.write_bytes(b"")
    elif damage == "foreign bin":
        weights.write_bytes(data + b"\0" * 1024)
    else:
        weights.write_bytes(b"\x55" * len(data))  # ncnn would load it and compute NaN
    result = CliRunner().invoke(cli, ["parity", str(param)])
    assert result.exit_code == ExitCode.INPUT, result.output
    assert "t0.ncnn" in one_line(result)


def test_ncnn_trained_fp16_keeps_decisions(tmp_path):
    _needs("ncnn")
    from lightexport.exporter.ncnn_files import fp16_arithmetic_off, read_param
    from tests.trained import trained_checkpoint

    model = api.load("mobilenet_v2", weights=trained_checkpoint("mobilenet_v2"))
    result = api.export(model, "ncnn", output=tmp_path / "m.ncnn.param", fuse=True, precision="fp16")
    report = api.verify(result.path, model, images=48, progress=False)
    assert report.passed, report.all_failures
    assert report.outputs[0].top1_confident == 1.0 and report.outputs[0].top1 >= 0.95
    # ncnn's ARM default computes in fp16; the .param turns it off in the 17 depthwise convolutions, whose fp16
    # arithmetic is what moved MobileNetV2's logits over the fp16 limit on ARM (exporter/ncnn.py)
    param = read_param(result.path)
    depthwise = [layer.name for layer in param.layers if layer.type == "ConvolutionDepthWise"]
    assert len(depthwise) == 17 and fp16_arithmetic_off(param) == depthwise
    assert any("fp16 arithmetic off in 17 depthwise convolutions" in note for note in result.notes)


def test_ncnn_default_label_names_the_layers_kept_out_of_fp16_arithmetic(ncnn_pair, tmp_path, monkeypatch):
    """On an ARMv8.2 CPU the default setting's label says how many layers the .param keeps in fp32 arithmetic; a
    mask that is not a number counts as none (ncnn refuses the file; reading it is no traceback)."""
    import shutil

    from lightexport.exporter.ncnn_files import fp16_arithmetic_off, read_param
    from lightexport.parity.runners import ncnn as runner_module

    param = tmp_path / "t.ncnn.param"
    for f in ncnn_pair.files:
        shutil.copy(f, tmp_path / f.name.replace("t0.", "t."))
    lines = param.read_text().splitlines()
    convs = [i for i, line in enumerate(lines) if line.startswith("Convolution ")]
    lines[convs[0]] += " 31=1"
    lines[convs[1]] += " 31=3"
    param.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(runner_module, "default_precision", lambda: "fp16 arithmetic")
    runner = runner_module.NcnnRunner(param, inference_precision=None)
    runner.activate()
    assert runner.execution_precision == "fp16 arithmetic, fp32 arithmetic in 2 layers (the .param's featmask)"
    computing = sum(1 for layer in read_param(param).layers if layer.type not in runner_module.NOT_COMPUTING)
    assert runner.layer_precisions == {"f16": computing - 2, "f32": 2}
    lines[convs[2]] += " 31=x"
    param.write_text("\n".join(lines) + "\n")
    assert len(fp16_arithmetic_off(read_param(param))) == 2


# --------------------------------------------------------------------------- MNN


@pytest.fixture(scope="module")
def mnn_model(t0, tmp_path_factory):
    _needs("MNN")
    out = tmp_path_factory.mktemp("mnn") / "t0.mnn"
    return api.export(t0, "mnn", output=out, fuse=True, input_size=SIZE)


def test_mnn_fp32_and_fp16_pass_in_every_setting(mnn_model, t0, tmp_path):
    assert [f.name for f in mnn_model.files] == ["t0.mnn", "t0.mnn.json"]
    report = api.verify(mnn_model.path, t0, progress=False)
    assert report.passed and report.outputs[0].max_rel <= 1e-4 and report.execution.startswith("fp32 pinned")
    half = api.export(t0, "mnn", output=tmp_path / "h.mnn", fuse=True, input_size=SIZE, precision="fp16")
    assert half.path.stat().st_size < 0.6 * mnn_model.path.stat().st_size
    assert api.verify(half.path, t0, progress=False).passed


def test_mnn_fast_gelu_is_asked_for_recorded_and_less_exact(mnn_model, t0, tmp_path):
    """Exact GELU is the default (MNN's tanh kernel put T0 1.04e-4 of range off); --fast-gelu trades it for speed."""
    fast = api.export(t0, "mnn", output=tmp_path / "fast.mnn", fuse=True, input_size=SIZE, fast_gelu=True)
    assert fast.metadata["lightexport.mnn_gelu"] == "tanh approximation" and "--fast-gelu" in " ".join(fast.notes)
    assert "lightexport.mnn_gelu" not in mnn_model.metadata
    # the exact default is built from vectorized ops (MNN's own exact kernel is a scalar erf loop)
    assert "exact GELU from vectorized elementwise ops (14 GELUs)" in " ".join(mnn_model.notes)
    assert not any("vectorized" in note for note in fast.notes)
    exact = api.verify(mnn_model.path, t0, progress=False).outputs[0].max_rel
    approximate = api.verify(fast.path, t0, progress=False).outputs[0].max_rel
    assert approximate > 10 * exact  # a different kernel, not the same graph twice


def test_mnn_from_a_lightexport_onnx_carries_its_provenance(t0, tmp_path):
    _needs("MNN")
    onnx_path = api.export(t0, "onnx", output=tmp_path / "t0.onnx", fuse=True, input_size=SIZE).path
    result = api.export(onnx_path, "mnn", output=tmp_path / "from_onnx.mnn")
    meta = json.loads(result.files[1].read_text())
    assert meta["lightexport.model"] == "fasternet_t0" and meta["lightexport.input_size"] == str(SIZE)
    assert api.verify(result.path, api.reference_for(result.path), progress=False).passed


@pytest.mark.parametrize("damage", ["junk", "empty", "truncated", "zeroed body"])
def test_bad_mnn_files_are_exit_5(mnn_model, tmp_path, damage):
    import shutil

    path = tmp_path / "t0.mnn"
    shutil.copy(mnn_model.path, path)
    shutil.copy(mnn_model.files[1], tmp_path / "t0.mnn.json")
    data = path.read_bytes()
    path.write_bytes({"junk": b"not a model" * 100, "empty": b"", "truncated": data[: len(data) // 2],
                      "zeroed body": data[:64] + b"\0" * (len(data) - 64)}[damage])
    result = CliRunner().invoke(cli, ["parity", str(path)])
    assert result.exit_code in (ExitCode.INPUT, ExitCode.PARITY), result.output  # a zeroed body may load and fail
    text = one_line(result)
    assert "t0.mnn" in text


@pytest.mark.slow
def test_mnn_trained_int8_keeps_confident_decisions(tmp_path):
    _needs("MNN")
    from lightexport.calib.crops import write_calibration_crops
    from tests.trained import trained_checkpoint

    model = api.load("mobilenet_v2", weights=trained_checkpoint("mobilenet_v2"))
    calib = write_calibration_crops(tmp_path / "calib", 64)
    result = api.export(model, "mnn", output=tmp_path / "m.mnn", fuse=True, precision="int8", calib=calib)
    assert "with lightexport's ranges" in " ".join(result.notes)
    int8 = json.loads(result.metadata["lightexport.int8"])
    assert int8["bias_corrected"] == 52 - 5  # every quantized conv: not the 5 kept float (MNN's default), not the FC
    assert len(int8["kept_float"]) == 6 and int8["kept_float"][-1] == "classifier (MatMul)"
    report = api.verify(result.path, model, images=96, progress=False)
    assert report.passed, report.all_failures
    assert report.outputs[0].top1_confident >= 0.97
    weights = api.export(model, "mnn", output=tmp_path / "w.mnn", fuse=True, precision="int8", weight_only=True)
    assert weights.path.stat().st_size < 4.5e6  # int8 weights: MobileNetV2 is 14 MB in fp32
    report = api.verify(weights.path, model, images=96, progress=False)
    assert report.passed and report.outputs[0].top1 >= 0.93


def test_mnn_int8_biases_absorb_their_weight_rounding_from_an_onnx_file_too(t0, tmp_path):
    """Every quantized convolution's bias is corrected for its weight rounding; kept ones and the classifier not."""
    _needs("MNN")
    import onnx
    from onnx import numpy_helper

    from lightexport.calib import write_sample_photos
    from lightexport.exporter.mnn import _corrected_onnx

    fused = api.export(t0, "onnx", output=tmp_path / "t0.onnx", fuse=True, input_size=SIZE)
    photos = write_sample_photos(tmp_path / "p")
    result = api.export(fused.path, "mnn", output=tmp_path / "q.mnn", precision="int8", calib=photos)
    model = onnx.load(str(fused.path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    kept = [n.name for n in convs[:5]]
    biased = [n for n in convs[5:] if len(n.input) > 2]  # PConvs have no bias
    int8 = json.loads(result.metadata["lightexport.int8"])
    assert int8["bias_corrected"] == len(biased) > 10 and int8["kept_float"][:5] == kept

    batches = [np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)]
    out, count = _corrected_onnx(fused.path, batches, kept, tmp_path)
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    assert count == len(biased) and changed == {n.input[2] for n in biased}  # those biases, nothing else


def test_mnn_int8_keep_counts_names_and_refusals(t0, tmp_path):
    """--int8-keep 0 quantizes every convolution; a module name keeps its convolutions; auto and weight-only
    with a count are refused in one line."""
    _needs("MNN")
    from lightexport.calib import write_sample_photos

    photos = write_sample_photos(tmp_path / "p")
    every = api.export(t0, "mnn", output=tmp_path / "all.mnn", fuse=True, input_size=SIZE, precision="int8",
                       int8_keep=0, calib=photos)
    assert json.loads(every.metadata["lightexport.int8"])["kept_float"] == ["classifier (MatMul)"]
    assert "44 convolutions quantized" in " ".join(every.notes)
    named = api.export(t0, "mnn", output=tmp_path / "stem.mnn", fuse=True, input_size=SIZE, precision="int8",
                       int8_keep=["patch_embed"], calib=photos)
    assert json.loads(named.metadata["lightexport.int8"])["kept_float"] == ["/patch_embed/proj/Conv",
                                                                           "classifier (MatMul)"]
    assert named.path.stat().st_size > every.path.stat().st_size  # the stem's weights stayed fp32
    assert api.verify(named.path, t0, progress=False).passed
    with pytest.raises(UsageError, match=r"--int8-keep auto is not offered for mnn: give a count \(5 by default\)"):
        api.export(t0, "mnn", output=tmp_path / "q.mnn", fuse=True, input_size=SIZE, precision="int8", int8_keep="auto",
                   calib=photos)
    with pytest.raises(UsageError, match="--weight-only keeps every activation float"):
        api.export(t0, "mnn", output=tmp_path / "w.mnn", fuse=True, input_size=SIZE, precision="int8", int8_keep=0,
                   weight_only=True)


def test_input_file_error_is_what_a_missing_pair_is(tmp_path):
    _needs("ncnn")
    from lightexport.parity.runners.ncnn import NcnnRunner

    (tmp_path / "x.ncnn.param").write_text("7767517\n1 1\nInput in0 0 1 in0\n")
    with pytest.raises(InputFileError, match="x.ncnn.bin is missing"):
        NcnnRunner(tmp_path / "x.ncnn.param").activate()
