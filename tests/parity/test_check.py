import copy
import json

import numpy as np
import pytest
import torch
from rich.console import Console

from lightexport.calib import Preprocess, sample_photos
from lightexport.errors import UsageError
from lightexport.model_defs import get_spec
from lightexport.parity import OnnxRuntimeRunner, Tolerance, TorchRunner, check_parity, make_inputs
from tests.parity.conftest import SIZE, export

PREPROCESS = Preprocess(input_size=SIZE)


@pytest.fixture(scope="module")
def inputs() -> list[np.ndarray]:
    return make_inputs(PREPROCESS, 6)


def _render(report) -> str:
    console = Console(record=True, width=200)
    report.render(console)
    return console.export_text()


def test_exported_classifier_passes_fp32(classifier, classifier_onnx, inputs, tmp_path):
    report = check_parity(classifier_onnx, classifier, inputs, progress=False)
    assert report.passed and report.failures == []
    assert (report.backend, report.precision, report.samples) == ("onnxruntime", "fp32", 6)
    (stats,) = report.outputs
    assert stats.name == "logits" and stats.shape == (6, 10) and stats.max_rel < 1e-5 and stats.top1 == 1.0
    text = _render(report)
    assert "logits" in text and "pass" in text and "PASS" in text and "max_rel <= 0.0001" in text
    out = tmp_path / "reports" / "parity.json"
    report.to_json(out)
    saved = json.loads(out.read_text())
    assert saved["passed"] is True and saved["tolerance"] == {"precision": "fp32", "max_rel": 1e-4}
    assert saved["outputs"][0]["name"] == "logits" and saved["outputs"][0]["shape"] == [6, 10]
    assert [p.name for p in out.parent.iterdir()] == ["parity.json"]  # nothing left from the atomic write


def test_perturbed_model_fails_naming_output_and_metric(classifier, inputs, tmp_path):
    perturbed = copy.deepcopy(classifier)
    with torch.no_grad():
        perturbed.stage[0].weight[0, 0, 1, 1] += 0.05  # one weight of one kernel
    path = export(perturbed, tmp_path / "perturbed.onnx", ["logits"])
    report = check_parity(path, classifier, inputs, progress=False)
    assert not report.passed
    assert len(report.failures) == 1 and report.failures[0].startswith("logits: max_rel ")
    assert "exceeds 0.0001" in report.failures[0]
    assert "FAIL" in _render(report)
    assert check_parity(path, classifier, inputs, precision="int8", progress=False).passed  # within int8 limits


def test_backbone_outputs_map_by_order(backbone, backbone_onnx, inputs):
    report = check_parity(backbone_onnx, backbone, inputs, progress=True)  # progress goes to stderr, transient
    assert report.passed, report.failures
    assert [(s.name, s.shape) for s in report.outputs] == [("feat0", (6, 16, 32, 32)), ("feat1", (6, 32, 16, 16))]
    assert all(s.top1 is None for s in report.outputs)


def test_output_count_mismatch_fails(backbone, classifier_onnx, inputs):
    report = check_parity(classifier_onnx, backbone, inputs, progress=False)
    assert report.failures[0] == "the artifact has 1 output(s) (logits) but the reference has 2"
    assert "shape (6, 10) differs from the reference's (6, 16, 32, 32)" in report.failures[1]


def test_nan_in_artifact_fails_with_reason(classifier, inputs):
    class Broken(torch.nn.Module):
        def forward(self, x):
            y = classifier(x)
            return torch.where(torch.arange(10) == 3, torch.nan, y)

    report = check_parity(TorchRunner(Broken()), classifier, inputs, progress=False)
    assert report.failures == ["out0: the artifact output has 6 NaN and 0 Inf values (of 60)"]


def test_caller_keeps_an_active_runner_and_may_name_the_input(classifier, classifier_onnx, inputs):
    runner = OnnxRuntimeRunner(classifier_onnx)
    runner.activate()
    report = check_parity(runner, classifier, inputs[:2], input_name="input", progress=False)
    assert report.passed and runner.is_active  # bench reuses it
    runner.deactivate()


def test_custom_tolerance_and_bad_arguments(classifier, classifier_onnx, inputs):
    strict = Tolerance("exact", max_rel=0.0)
    report = check_parity(classifier_onnx, classifier, inputs[:1], tolerance=strict, progress=False)
    assert report.precision == "exact"
    assert report.passed == (report.outputs[0].max_abs == 0)
    with pytest.raises(UsageError, match="at least one input"):
        check_parity(classifier_onnx, classifier, [], progress=False)
    with pytest.raises(UsageError, match="unknown precision 'fp64'; did you mean fp16"):
        check_parity(classifier_onnx, classifier, inputs, precision="fp64", progress=False)


def test_make_inputs_photos_first_exactly_as_calibration_then_noise():
    photos = sample_photos()
    inputs = make_inputs(PREPROCESS, len(photos) + 2, seed=1)
    assert all(x.shape == (1, 3, SIZE, SIZE) and x.dtype == np.float32 for x in inputs)
    for x, photo in zip(inputs, photos):
        np.testing.assert_array_equal(x, PREPROCESS(photo))
    noise = np.concatenate(inputs[len(photos) :])
    np.testing.assert_array_equal(noise, np.random.default_rng(1).standard_normal(noise.shape, dtype=np.float32))


def test_make_inputs_is_deterministic_and_honours_options():
    again = make_inputs(PREPROCESS, 3, seed=0, photos=False)
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(make_inputs(PREPROCESS, 3, photos=False)))
    assert not np.array_equal(again[0], make_inputs(PREPROCESS, 1, seed=1, photos=False)[0])
    batched = make_inputs(PREPROCESS, 2, batch=3, input_size=32)
    assert [x.shape for x in batched] == [(3, 3, 32, 32)] * 2
    np.testing.assert_array_equal(batched[0][1:2], make_inputs(Preprocess(input_size=32), 2)[1])
    spec = get_spec("fasternet_t0")
    (x,) = make_inputs(spec, 1, input_size=96)
    np.testing.assert_array_equal(x, Preprocess.from_spec(spec, 96)(sample_photos()[0]))
    with pytest.raises(UsageError):
        make_inputs(PREPROCESS, 0)


def test_an_int8_artifact_run_all_in_float_says_so():
    """OpenVINO on ARM at its f16 default ran every layer of an f32-pinned int8 IR in f32: the label must say that
    no int8 kernel ran, and must not for a setting where some did, or for a float artifact."""
    from types import SimpleNamespace

    from lightexport.parity.settings import RunSetting, execution_label
    from lightexport.precision import Precision

    default = RunSetting("fp16: openvino's default on this CPU", {}, Precision.INT8, pinned=False)
    all_float, mixed = SimpleNamespace(layer_precisions={"f32": 53}), SimpleNamespace(
        layer_precisions={"f32": 27, "u8": 17, "f16": 9})
    assert "no layer ran in int8" in execution_label(default, all_float, Precision.INT8)
    assert execution_label(default, mixed, Precision.INT8).endswith("layers ran f32 x27, u8 x17, f16 x9")
    assert "int8" not in execution_label(default, all_float, Precision.FP32)
