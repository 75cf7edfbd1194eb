import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from lightexport.errors import BackendUnavailableError, InputFileError, UsageError
from lightexport.parity import OnnxRuntimeRunner, OpenVINORunner, TorchRunner, runner_for
from tests.parity.conftest import SIZE


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE), dtype=np.float32)


def _torch_outputs(module, x) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, list) else [out])]


def test_torch_runner_names_outputs_and_restores_mode(classifier, backbone, batch):
    classifier.train()
    try:
        with TorchRunner(classifier) as runner:
            assert not classifier.training
            out = runner.infer({"input": batch})
        assert classifier.training  # the caller's mode is restored
    finally:
        classifier.eval()
    assert list(out) == ["out0"] and runner.output_names == ["out0"]
    with TorchRunner(backbone) as runner:
        assert list(runner.infer({"input": batch})) == ["out0", "out1"]
    with TorchRunner(backbone, output_names=["feat0", "feat1"]) as runner:
        assert [a.shape for a in runner.infer({"input": batch}).values()] == [(3, 16, 32, 32), (3, 32, 16, 16)]
    with TorchRunner(backbone, output_names=["only"]) as runner, pytest.raises(UsageError, match="2 outputs"):
        runner.infer({"input": batch})


def test_runner_checks_feed_names(classifier, batch):
    with TorchRunner(classifier) as runner, pytest.raises(UsageError, match=r"lacks inputs \['input'\]"):
        runner.infer({"x": batch})


@pytest.mark.parametrize("threads", [None, 1])
def test_onnxruntime_reproduces_torch(backbone, backbone_onnx, batch, threads):
    with OnnxRuntimeRunner(backbone_onnx, threads=threads) as runner:
        assert (runner.input_names, runner.output_names) == (["input"], ["feat0", "feat1"])
        out = runner.infer({"input": batch.astype(np.float64)})  # cast to the declared float32
    for got, want in zip(out.values(), _torch_outputs(backbone, batch)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_onnxruntime_threads_do_not_spin_between_runs(backbone_onnx):
    """Spinning pool threads would steal the cores from the next candidate of an interleaved benchmark."""
    with OnnxRuntimeRunner(backbone_onnx, threads=2) as runner:
        options = runner.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("source", ["onnx", "ir"])
def test_openvino_reproduces_torch_in_f32(classifier, classifier_onnx, classifier_ir, batch, source):
    path = classifier_onnx if source == "onnx" else classifier_ir
    with OpenVINORunner(path, threads=1) as runner:
        # pinned: on bf16-capable CPUs the default would run this fp32 model in bf16
        assert str(runner.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
        assert (runner.input_names, runner.output_names) == (["input"], ["logits"])
        out = runner.infer({"input": batch})
    np.testing.assert_allclose(out["logits"], _torch_outputs(classifier, batch)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("content", [b"", b"\x08\x07not a protobuf"])
def test_corrupt_onnx_names_the_file(tmp_path, content):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(content)
    with pytest.raises(InputFileError, match="ONNX Runtime cannot load .*broken.onnx"):
        OnnxRuntimeRunner(bad).activate()
    with pytest.raises(InputFileError, match="OpenVINO cannot read .*broken.onnx"):
        OpenVINORunner(bad).activate()


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="ONNX file not found: .*absent.onnx"):
        runner_for(tmp_path / "absent.onnx").activate()
    with pytest.raises(InputFileError, match="OpenVINO model not found: .*absent.xml"):
        runner_for(tmp_path / "absent.xml").activate()


def test_broken_ir_names_the_file(tmp_path, classifier_ir):
    xml = tmp_path / "tiny.xml"
    xml.write_bytes(classifier_ir.read_bytes())
    with pytest.raises(InputFileError, match=r"tiny.bin is missing: an OpenVINO IR is the \.xml plus the \.bin"):
        OpenVINORunner(xml).activate()
    xml.with_suffix(".bin").write_bytes(b"\0" * 16)  # far too short for the weights the .xml declares
    with pytest.raises(InputFileError, match=r"tiny\.bin holds 16 bytes but tiny\.xml's constants address"):
        OpenVINORunner(xml).activate()


def test_wrong_input_shape_is_reported_with_the_shape(classifier_onnx, classifier_ir):
    x = np.zeros((1, 2, SIZE, SIZE), np.float32)
    for path in (classifier_onnx, classifier_ir):
        with runner_for(path) as runner, pytest.raises(InputFileError) as caught:
            runner.infer({"input": x})
        assert f"{path.name} cannot run on inputs {{'input': (1, 2, {SIZE}, {SIZE})}}" in str(caught.value)


def test_missing_execution_provider_is_a_backend_error(classifier_onnx):
    with pytest.raises(BackendUnavailableError, match="lacks NoSuchExecutionProvider"):
        OnnxRuntimeRunner(classifier_onnx, providers=("NoSuchExecutionProvider",)).activate()


def test_runner_for_dispatches_by_suffix(monkeypatch, tmp_path):
    assert type(runner_for("a.onnx", threads=2)) is OnnxRuntimeRunner
    runner = runner_for("a.XML", threads=2, inference_precision=None)
    assert type(runner) is OpenVINORunner and runner.threads == 2 and runner.inference_precision is None
    # the TensorRT runner is imported only for an engine; stand in for it here
    fake = types.ModuleType("lightexport.parity.runners.tensorrt")
    fake.TensorRTRunner = lambda path, **kw: ("trt", str(path), kw)
    monkeypatch.setitem(sys.modules, "lightexport.parity.runners.tensorrt", fake)
    # threads= means nothing to a GPU engine: dropped, not passed (it crashed TensorRTRunner, issue #11 item 1)
    assert runner_for("m.engine", threads=1) == ("trt", "m.engine", {})
    assert runner_for("m.plan")[0] == "trt"
    with pytest.raises(UsageError, match=r"suffix '\.pt'; supported artifacts end in \.onnx, \.xml, \.engine, \.plan"):
        runner_for("model.pt")


def test_importing_parity_and_calib_loads_no_backend():
    code = (
        "import sys, lightexport.parity, lightexport.calib;"
        "print(sorted(m for m in ('onnxruntime', 'openvino', 'tensorrt', 'nncf', 'skimage') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
