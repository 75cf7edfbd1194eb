"""int8 from a folder of real photos: QDQ ONNX (ONNX Runtime) and OpenVINO IR (NNCF)."""

import numpy as np
import onnx
import pytest

from lightexport.calib import ImageFolder, Preprocess, write_sample_photos
from lightexport.exporter.onnx import export_onnx
from lightexport.exporter.openvino import export_openvino
from lightexport.loading import load_model
from lightexport.parity import check_parity, make_inputs, runner_for

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
    result = export_onnx(t0, tmp_path / "t0_int8.onnx", fuse=True, precision="int8", calib=photos, calib_size=8)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    report = _parity(result.path, t0)
    assert report.outputs[0].cosine > 0.98, report.failures


def test_int8_ir_from_photos(tmp_path, photos, t0):
    result = export_openvino(t0, tmp_path / "t0_int8.xml", fuse=True, precision="int8", calib=photos, calib_size=8)
    ov = pytest.importorskip("openvino")
    types = {op.get_type_name() for op in ov.Core().read_model(str(result.path)).get_ops()}
    assert "FakeQuantize" in types or "FakeConvert" in types
    report = _parity(result.path, t0)
    assert report.outputs[0].cosine > 0.98, report.failures


def test_int8_ir_activation_ranges_cover_every_calibration_image(tmp_path, photos, t0):
    """Global min/max, not NNCF's default mean of per-image extremes, which clips the outlying images."""
    ov = pytest.importorskip("openvino")
    result = export_openvino(t0, tmp_path / "t0_int8.xml", fuse=True, precision="int8", calib=photos, calib_size=8,
                             int8_keep=0)  # with the stem kept float, nothing quantizes the input itself
    images = np.concatenate(list(ImageFolder(photos, Preprocess.from_spec(t0.spec)).batches(1, 8)))
    ops = ov.Core().read_model(str(result.path)).get_ops()
    (quantizer,) = [op for op in ops if op.get_type_name() == "FakeQuantize"
                    and op.input_value(0).get_node().get_type_name() == "Parameter"]
    low, high = (quantizer.input_value(i).get_node().get_data() for i in (1, 2))
    # asymmetric activations: the range is nudged so that zero is exactly representable, never narrowed
    assert low.min() <= images.min() and high.max() >= images.max() * 0.999
    per_image_max = images.reshape(len(images), -1).max(axis=1)
    assert high.max() > per_image_max.mean() * 1.01  # what the default estimator would have picked
