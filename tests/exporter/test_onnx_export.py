import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lightexport import api
from lightexport.artifacts import read_artifact_metadata
from lightexport.errors import ExportError, OutputError, UsageError
from lightexport.loading import LoadedModel, load_model
from tests.conftest import randomize_bn

FORBIDDEN = {"BatchNormalization", "Dropout", "ScatterND"}


def _loaded(name: str, seed: int = 0, **kw) -> LoadedModel:
    loaded = load_model(name, **kw)
    randomize_bn(loaded.module, seed)
    return loaded


def _ort(path, x: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})


def _max_rel(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(ref - got).max() / (ref.max() - ref.min()))


@pytest.mark.parametrize(
    "name, size",
    [("fasternet_t0", 224), ("fasternet_t1", 96), ("fasternet_t2", 96), ("fasternet_s", 160),
     ("fasternet_m", 96), ("fasternet_l", 96)],
)
def test_fused_export_has_no_training_ops_and_matches_reference(tmp_path, name, size):
    loaded = _loaded(name)
    result = api.export(loaded, "onnx", output=tmp_path / f"{name}.onnx", fuse=True, input_size=size)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert not ops & FORBIDDEN, ops & FORBIDDEN
    x = np.random.default_rng(0).standard_normal((2, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        reference = loaded.module(torch.from_numpy(x)).numpy()
    (got,) = _ort(result.path, x[:1])
    assert _max_rel(reference[:1], got) < 1e-4


def test_backbone_mode_exports_four_normalized_maps(tmp_path):
    loaded = _loaded("fasternet_t0", features=True)
    result = api.export(loaded, "onnx", output=tmp_path / "t0_feat.onnx", fuse=True, input_size=128)
    model = onnx.load(str(result.path))
    assert [o.name for o in model.graph.output] == ["feat0", "feat1", "feat2", "feat3"]
    assert not {n.op_type for n in model.graph.node} & FORBIDDEN
    x = np.random.default_rng(1).standard_normal((1, 3, 128, 128), dtype=np.float32)
    with torch.no_grad():
        reference = [t.numpy() for t in loaded.module(torch.from_numpy(x))]
    for ref, got in zip(reference, _ort(result.path, x)):
        assert _max_rel(ref, got) < 1e-4


def test_export_is_byte_identical_across_runs(tmp_path):
    loaded = _loaded("fasternet_t0")
    digests = {
        hashlib.sha256(api.export(loaded, "onnx", output=tmp_path / f"run{i}.onnx",
                                  fuse=True).path.read_bytes()).hexdigest()
        for i in range(2)
    }
    assert len(digests) == 1


def test_metadata_records_provenance(tmp_path):
    weights = tmp_path / "w.pth"
    torch.save(_loaded("fasternet_t0").module.state_dict(), weights)
    result = api.export(load_model("fasternet_t0", weights), "onnx", output=tmp_path / "t0.onnx", fuse=True)
    meta = read_artifact_metadata(result.path)
    assert meta["model"] == "fasternet_t0" and meta["weights"] == "w.pth" and len(meta["weights_sha256"]) == 16
    assert meta["input_size"] == "224" and meta["precision"] == "fp32"
    assert "fuse_conv_bn" in meta["passes"] and meta["mean"] == "[0.485, 0.456, 0.406]"


def test_dynamic_export_runs_other_batch_and_resolution(tmp_path):
    loaded = _loaded("fasternet_t0")
    result = api.export(loaded, "onnx", output=tmp_path / "dyn.onnx", fuse=True, dynamic=True)
    x = np.random.default_rng(2).standard_normal((3, 3, 160, 192), dtype=np.float32)
    with torch.no_grad():
        reference = loaded.module(torch.from_numpy(x)).numpy()
    (got,) = _ort(result.path, x)
    assert got.shape == (3, 1000) and _max_rel(reference, got) < 1e-4


def test_timm_checkpoint_export_matches_timm(tmp_path):
    timm = pytest.importorskip("timm")
    reference = randomize_bn(timm.create_model("fasternet_s", pretrained=False).eval(), seed=7)
    weights = tmp_path / "timm_s.pth"
    torch.save(reference.state_dict(), weights)
    result = api.export(load_model("fasternet_s", weights), "onnx", output=tmp_path / "s.onnx", fuse=True)
    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    (got,) = _ort(result.path, x)
    assert _max_rel(expected, got) < 1e-4


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    def broken_check(model):
        raise ExportError("planted failure")

    monkeypatch.setattr("lightexport.exporter.onnx.check_model", broken_check)
    with pytest.raises(ExportError, match="planted"):
        api.export(_loaded("fasternet_t0"), "onnx", output=tmp_path / "t0.onnx")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_named(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(OutputError, match="not_a_dir"):
        api.export(_loaded("fasternet_t0"), "onnx", output=blocker / "t0.onnx")


def test_output_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "out.onnx").mkdir()
    with pytest.raises(UsageError, match="is a directory; lightexport writes regular files only"):
        api.export(_loaded("fasternet_t0"), "onnx", output=tmp_path / "out.onnx")
