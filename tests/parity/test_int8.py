"""int8 end to end: calibrate on real photos, quantize, and let the int8 tolerance judge."""

import numpy as np
import onnx
import pytest

from lightexport.calib import ImageFolder, OrtCalibrationReader, Preprocess, write_sample_photos
from lightexport.exporter.onnx_int8 import quantize_qdq
from lightexport.parity import check_parity, make_inputs
from tests.parity.conftest import SIZE

PREPROCESS = Preprocess(input_size=SIZE)


class Shrunk:
    """Calibration on inputs at 1/200 of their scale: the activation ranges come out far too narrow."""

    def __init__(self, reader: OrtCalibrationReader) -> None:
        self.reader = reader

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = self.reader.get_next()
        return None if feed is None else {name: x / 200 for name, x in feed.items()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_sample_photos(tmp_path_factory.mktemp("photos"))


@pytest.mark.parametrize("calibration", ["photos", "shrunk"])
def test_int8_tolerance_separates_good_from_bad_calibration(tmp_path, classifier, classifier_onnx, photos, calibration):
    reader = OrtCalibrationReader(ImageFolder(photos, PREPROCESS), "input")
    quantized, _ = quantize_qdq(onnx.load(str(classifier_onnx)), reader if calibration == "photos" else Shrunk(reader),
                                keep=0)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in quantized.graph.node}
    path = tmp_path / "int8.onnx"
    onnx.save(quantized, str(path))
    inputs = make_inputs(PREPROCESS, 8)  # the 8 photos parity uses by default
    report = check_parity(path, classifier, inputs, precision="int8", progress=False)
    (stats,) = report.outputs
    if calibration == "photos":
        assert report.passed, report.failures
        assert stats.cosine > 0.999 and stats.top1 == 1.0
        assert not check_parity(path, classifier, inputs, precision="fp32", progress=False).passed  # int8 is not fp32
    else:
        assert not report.passed
        assert all(f.startswith("logits: ") and ("top1" in f or "cosine" in f) for f in report.failures)


def test_nncf_int8_ir_passes_int8_parity(tmp_path, classifier, classifier_onnx, photos):
    ov = pytest.importorskip("openvino")
    nncf = pytest.importorskip("nncf")
    from lightexport.calib import to_nncf_dataset

    model = ov.convert_model(str(classifier_onnx))
    quantized = nncf.quantize(model, to_nncf_dataset(ImageFolder(photos, PREPROCESS)), subset_size=15)
    xml = tmp_path / "int8.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    assert "FakeQuantize" in {op.get_type_name() for op in quantized.get_ops()}
    report = check_parity(xml, classifier, make_inputs(PREPROCESS, 8), precision="int8", progress=False)
    assert report.backend == "openvino" and report.passed, report.failures


def _int8_weights(model: onnx.ModelProto) -> list[np.ndarray]:
    from onnx import numpy_helper

    return [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]


def _outputs(model: onnx.ModelProto, x: np.ndarray, level) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_reduced_range_weights_are_7_bit_and_the_int8_kernels_compute_the_qdq_graph(classifier_onnx, photos):
    import onnxruntime as ort

    from lightexport.cpu import int8_saturates

    source = onnx.load(str(classifier_onnx))
    reader = OrtCalibrationReader(ImageFolder(photos, PREPROCESS), "input")
    reduced, report = quantize_qdq(source, reader, keep=0, reduce_range=True)
    full, _ = quantize_qdq(source, reader, keep=0, reduce_range=False)
    assert report.reduced_range and '"weight_bits": 7' in report.metadata() and "in 7 bits" in report.notes(8, "x")[0]
    assert max(np.abs(w.astype(int)).max() for w in _int8_weights(reduced)) <= 64
    assert max(np.abs(w.astype(int)).max() for w in _int8_weights(full)) == 127
    assert quantize_qdq(source, reader, keep=0)[1].reduced_range is int8_saturates()  # by default: this CPU's
    x = np.concatenate(list(make_inputs(PREPROCESS, 8)))
    # 7-bit weights: the int8 kernels (fused QLinearConv) compute what the QDQ graph does in float, on any x86 CPU
    kernels, graph = (_outputs(reduced, x, level) for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                                               ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
    # 0.0 on an AVX2-only EPYC; elsewhere a requantization may round one step apart (saturation was 6.7e-2)
    assert np.abs(kernels - graph).max() <= 1e-2 * np.abs(graph).max()
    if int8_saturates():  # full 8-bit weights there: the int8 kernels' pairs saturate and the sums differ
        kernels, graph = (_outputs(full, x, level) for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                                                ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
        assert np.abs(kernels - graph).max() > 1e-2 * np.abs(graph).max()  # 6.7e-2 on an AVX2-only EPYC
