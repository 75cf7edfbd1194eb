import pytest

from lightexport import api
from lightexport.artifacts import read_artifact_metadata
from lightexport.errors import InputFileError, UsageError
from lightexport.loading import load_model
from lightexport.parity import check_parity, make_inputs, runner_for
from tests.conftest import randomize_bn

ov = pytest.importorskip("openvino")


def _loaded(name, seed=0, **kw):
    loaded = load_model(name, **kw)
    randomize_bn(loaded.module, seed)
    return loaded


def _weight_types(xml) -> set[str]:
    model = ov.Core().read_model(str(xml))
    return {op.get_output_element_type(0).get_type_name() for op in model.get_ops() if op.get_type_name() == "Constant"
            and len(op.get_output_shape(0)) == 4}


@pytest.mark.parametrize(
    "name, size",
    [("fasternet_t0", 224), ("fasternet_t1", 96), ("fasternet_t2", 96), ("fasternet_s", 128),
     ("fasternet_m", 96), ("fasternet_l", 96)],
)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_ir_matches_reference_on_real_photos(tmp_path, name, size, precision):
    loaded = _loaded(name)
    result = api.export(loaded, "openvino", output=tmp_path / f"{name}.xml", fuse=True, input_size=size,
                        precision=precision)
    assert [p.name for p in result.files] == [f"{name}.xml", f"{name}.bin"]
    # An fp32 IR must really hold fp32 weights; --fp16 must really compress them.
    assert _weight_types(result.path) == ({"f32"} if precision == "fp32" else {"f16"})
    report = check_parity(runner_for(result.path, threads=2), loaded.module,
                          make_inputs(loaded.spec, 3, input_size=size), precision=precision, progress=False)
    assert report.passed, report.failures


def test_onnx_input_carries_provenance(tmp_path):
    loaded = _loaded("fasternet_t0")
    onnx_path = api.export(loaded, "onnx", output=tmp_path / "t0.onnx", fuse=True).path
    result = api.export(onnx_path, "openvino", output=tmp_path / "t0.xml")
    meta = read_artifact_metadata(result.path)
    assert meta["model"] == "fasternet_t0" and "fuse_conv_bn" in meta["passes"] and meta["precision"] == "fp32"
    report = check_parity(runner_for(result.path), loaded.module, make_inputs(loaded.spec, 2), progress=False)
    assert report.passed, report.failures


def test_corrupt_onnx_is_refused_without_partial_ir(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf")
    with pytest.raises(InputFileError, match="bad.onnx"):
        api.export(bad, "openvino", output=tmp_path / "out.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_int8_requires_calibration_folder(tmp_path):
    with pytest.raises(UsageError, match="--calib"):
        api.export(_loaded("fasternet_t0"), "openvino", output=tmp_path / "x.xml", precision="int8")
    assert not list(tmp_path.iterdir())
