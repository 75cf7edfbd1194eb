"""Real TensorRT engines for fasternet_t0 (fp32, fp16, int8, dynamic shapes) and their parity with PyTorch.

Needs the ``tensorrt`` module and a CUDA device; elsewhere every test here is skipped with
the reason. One command runs them all, e.g. in the TensorRT container (docker/README.md):

    pytest -m gpu -rs tests/exporter
"""

import numpy as np
import pytest
import torch

from lightexport import api
from lightexport.errors import InputFileError, UsageError
from lightexport.exporter.onnx_int8 import QUANTIZED_OPS
from lightexport.exporter.tensorrt import build_engine
from lightexport.exporter.trt_preflight import make_profile
from lightexport.loading import load_model
from lightexport.parity import check_parity, make_inputs, runner_for
from lightexport.parity.metrics import compare
from lightexport.parity.runners.onnxruntime import OnnxRuntimeRunner
from lightexport.parity.runners.tensorrt import TensorRTRunner
from tests.conftest import randomize_bn


def _unavailable() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"needs the tensorrt module ({exc}); run in docker/Dockerfile.tensorrt"
    if not torch.cuda.is_available():
        return "needs a CUDA device (torch.cuda.is_available() is False)"
    return None


REASON = _unavailable()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture(scope="module")
def t0():
    loaded = load_model("fasternet_t0")
    randomize_bn(loaded.module)
    return loaded


@pytest.fixture(scope="module")
def qdq_onnx(t0, tmp_path_factory):
    """Symmetric int8 QDQ calibrated on the sample photos, without INT32 bias Q/DQ (TensorRT cannot run those)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = tmp_path_factory.mktemp("qdq")
    fp32 = api.export(t0, "onnx", output=folder / "t0.onnx", fuse=True).path
    quant_pre_process(str(fp32), str(folder / "prepared.onnx"), skip_optimization=True, skip_symbolic_shape=True)
    batches = iter(make_inputs(t0.spec, 16, seed=1))

    class Reader:
        def get_next(self):
            batch = next(batches, None)
            return None if batch is None else {"input": batch}

    quantize_static(folder / "prepared.onnx", folder / "t0_int8.onnx", Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=list(QUANTIZED_OPS), calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    return folder / "t0_int8.onnx"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_pytorch(t0, tmp_path, precision):
    result = api.export(t0, "tensorrt", output=tmp_path / f"t0_{precision}.engine", fuse=True, precision=precision)
    assert result.files == [result.path, tmp_path / f"t0_{precision}.engine.json"]
    report = api.verify(result.path, t0, inputs=8, progress=False)  # tolerance from the recorded precision
    assert report.precision == precision and report.passed, report.failures


def test_int8_engine_from_qdq_onnx(t0, qdq_onnx, tmp_path):
    result = build_engine(qdq_onnx, tmp_path / "t0_int8.engine", "int8")
    report = check_parity(runner_for(result.path), t0.module, make_inputs(t0.spec, 8), precision="int8",
                          progress=False)
    assert report.passed, report.failures  # cosine and top-k agreement on real photos


def test_int8_engine_from_calibration_images(t0, tmp_path):
    from lightexport.calib import write_sample_photos

    photos = write_sample_photos(tmp_path / "photos")
    result = api.export(t0, "tensorrt", output=tmp_path / "t0_int8.engine", fuse=True, precision="int8", calib=photos)
    assert api.verify(result.path, t0, inputs=8, progress=False).passed


def test_dynamic_shapes_within_the_profile(t0, tmp_path):
    onnx_path = api.export(t0, "onnx", output=tmp_path / "t0_dynamic.onnx", fuse=True, dynamic=True).path
    profile = make_profile("input:1x3x160x160", "input:2x3x224x224", "input:4x3x224x224")
    engine = build_engine(onnx_path, tmp_path / "t0_dynamic.engine", profile=profile).path
    rng = np.random.default_rng(0)
    with OnnxRuntimeRunner(onnx_path) as reference, TensorRTRunner(engine) as trt:
        for shape in [(1, 3, 160, 160), (3, 3, 224, 224), (4, 3, 192, 208)]:
            x = rng.standard_normal(shape, dtype=np.float32)
            stats = compare("logits", reference.infer({"input": x})["logits"], trt.infer({"input": x})["logits"])
            assert stats.max_rel < 1e-4, (shape, stats)
        with pytest.raises(UsageError, match="from"):
            trt.infer({"input": np.zeros((8, 3, 224, 224), np.float32)})


def test_timing_cache_makes_the_second_build_reuse_it(t0, tmp_path):
    onnx_path = api.export(t0, "onnx", output=tmp_path / "t0.onnx", fuse=True, input_size=160).path
    cache = tmp_path / "t0.cache"
    build_engine(onnx_path, tmp_path / "a.engine", timing_cache=cache)
    assert cache.stat().st_size > 0
    second = build_engine(onnx_path, tmp_path / "b.engine", timing_cache=cache)
    assert any("timing cache: reused" in n for n in second.notes)


def test_corrupt_engine_is_an_input_error(tmp_path):
    junk = tmp_path / "junk.engine"
    junk.write_bytes(b"not an engine")
    with pytest.raises(InputFileError, match="cannot load"):
        TensorRTRunner(junk).activate()
