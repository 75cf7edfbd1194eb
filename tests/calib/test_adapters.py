import sys

import numpy as np
import pytest
from PIL import Image

from lightexport.calib import BatchStream, ImageFolder, OrtCalibrationReader, Preprocess, to_nncf_dataset, trt_batches
from lightexport.errors import BackendUnavailableError

PRE = Preprocess(input_size=16, crop_pct=1.0)


@pytest.fixture
def folder(tmp_path):
    for i in range(5):
        Image.new("RGB", (20, 18), (40 * i, 10, 200)).save(tmp_path / f"{i}.png")
    return ImageFolder(tmp_path, PRE)


def _drain(get_next) -> list:
    items = []
    while (item := get_next()) is not None:
        items.append(item)
    return items


def test_ort_reader_is_a_calibration_data_reader(folder):
    from onnxruntime.quantization import CalibrationDataReader

    reader = OrtCalibrationReader(folder, "input", batch_size=2)
    assert isinstance(reader, CalibrationDataReader) and len(reader) == 3
    feeds = _drain(reader.get_next)
    assert [list(f) for f in feeds] == [["input"]] * 3
    assert [f["input"].shape for f in feeds] == [(2, 3, 16, 16), (2, 3, 16, 16), (1, 3, 16, 16)]
    assert reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(next(iter(reader))["input"], feeds[0]["input"])


def test_ort_reader_selects_n(folder):
    feeds = _drain(OrtCalibrationReader(folder, "x", n=3).get_next)
    assert [f["x"].shape for f in feeds] == [(1, 3, 16, 16)] * 3


def test_trt_batches_have_a_fixed_size(folder):
    stream = trt_batches(folder, batch_size=2)
    assert isinstance(stream, BatchStream) and stream.shape == (2, 3, 16, 16) and len(stream) == 2
    batches = _drain(stream.next_batch)
    assert [b.shape for b in batches] == [(2, 3, 16, 16)] * 2  # the fifth image is dropped
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    stream.rewind()
    np.testing.assert_array_equal(stream.next_batch(), batches[0])


def test_nncf_dataset(folder):
    pytest.importorskip("nncf")
    dataset = to_nncf_dataset(folder, 4)
    items = list(dataset.get_inference_data())
    assert [x.shape for x in items] == [(1, 3, 16, 16)] * 4
    assert len(list(dataset.get_inference_data())) == 4  # re-iterable: NNCF makes several passes
    np.testing.assert_array_equal(np.concatenate(items), np.concatenate(list(folder.batches(1, n=4))))


def test_nncf_missing_is_a_backend_error_with_the_records_hint(folder, monkeypatch, tmp_path):
    from lightexport import api
    from lightexport.backends import install_hint

    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(BackendUnavailableError, match="OpenVINO int8 needs nncf; install it with: ") as caught:
        api.export("fasternet_t0", "openvino", output=tmp_path / "t0.xml", input_size=32, precision="int8",
                   calib=folder.root)
    assert install_hint("nncf") in str(caught.value) and not (tmp_path / "t0.xml").exists()
