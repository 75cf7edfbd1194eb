"""LiteRT (``.tflite``, formerly TensorFlow Lite): exported through litert-torch, checked against PyTorch, refusing
bad files in one line.

Every test skips, saying why, where ``litert_torch``/``ai_edge_litert`` cannot be imported
(``pip install 'lightexport[litert]'``). The file checker's tests need neither (stdlib only).
Until the record is in ``lightexport/backends.py`` the tests register the same record for
this module only (and remove it after), as ``tests/fakeformat`` registers its own.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from lightexport import api
from lightexport.backends import BACKENDS
from lightexport.cli import cli
from lightexport.errors import ExitCode, InputFileError
from tests.cli_output import DAMAGES, damaged, one_line

SIZE = 64
HINT = "pip install 'lightexport[litert]'"

def _needs_litert():
    pytest.importorskip("litert_torch", reason=f"litert-torch is not installed: {HINT}")
    pytest.importorskip("ai_edge_litert", reason=f"ai-edge-litert is not installed: {HINT}")


@pytest.fixture(scope="module")
def t0():
    return api.load("fasternet_t0")


@pytest.fixture(scope="module")
def t0_tflite(t0, tmp_path_factory):
    _needs_litert()
    out = tmp_path_factory.mktemp("litert") / "t0.tflite"
    return api.export(t0, "tflite", output=out, fuse=True, input_size=SIZE)


# --------------------------------------------------------------------------- export and parity


def test_fp32_export_is_nchw_with_provenance_and_parity_holds(t0_tflite, t0):
    from lightexport.exporter.tflite_files import describe, entry

    assert [f.name for f in t0_tflite.files] == ["t0.tflite", "t0.tflite.json"]
    inputs, outputs = entry(describe(t0_tflite.path))
    assert inputs[0]["shape"] == (1, 3, SIZE, SIZE) and inputs[0]["dtype"] == "float32"  # NCHW, as PyTorch takes
    assert outputs[0]["shape"] == (1, 1000)
    assert t0_tflite.op_histogram["CONV_2D"] > 0 and "fuse_conv_bn" in " ".join(t0_tflite.notes)
    sidecar = json.loads(t0_tflite.files[1].read_text())
    assert sidecar["lightexport.model"] == "fasternet_t0" and sidecar["lightexport.input_size"] == str(SIZE)
    assert sidecar["lightexport.input_layout"] == "NCHW" and sidecar["lightexport.precision"] == "fp32"
    assert json.loads(sidecar["lightexport.passes"])  # --fuse recorded
    report = api.verify(t0_tflite.path, t0, progress=False)
    assert report.passed, report.all_failures
    assert report.outputs[0].max_rel < 1e-4
    # the reference is rebuilt from the provenance alone
    assert api.verify(t0_tflite.path, api.reference_for(t0_tflite.path), progress=False).passed


def test_provenance_and_tensors_read_back(t0_tflite):
    from lightexport.artifacts import read_artifact_metadata

    backend = BACKENDS["tflite"]
    meta = read_artifact_metadata(t0_tflite.path)
    assert meta["model"] == "fasternet_t0" and meta["input_layout"] == "NCHW"
    io = backend.read_io(t0_tflite.path)
    assert io.inputs[0].shape == (1, 3, SIZE, SIZE) and io.inputs[0].dtype == "float32"
    assert [o.name for o in io.outputs] == json.loads(meta["outputs"]) and io.outputs[0].shape == (1, 1000)


def test_cli_export_with_check_exits_0(tmp_path, monkeypatch):
    _needs_litert()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["export", "fasternet_t0", "--format", "tflite", "--input-size", str(SIZE),
                                      "--fuse", "--check"])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and (tmp_path / "fasternet_t0.tflite.json").is_file()


def test_fp16_weights_halve_the_file_and_pass(t0_tflite, t0, tmp_path):
    from lightexport.exporter.tflite_files import describe

    half = api.export(t0, "tflite", output=tmp_path / "h.tflite", fuse=True, input_size=SIZE, precision="fp16")
    assert half.path.stat().st_size < 0.55 * t0_tflite.path.stat().st_size
    assert any(t["dtype"] == "float16" for t in describe(half.path)["subgraphs"][0]["tensors"])
    assert api.verify(half.path, t0, progress=False).passed


def test_threads_are_honoured(t0_tflite):
    from lightexport.parity.runners.litert import LiteRTRunner

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counting threads needs /proc (Linux)")
    before = len(os.listdir("/proc/self/task"))
    with LiteRTRunner(t0_tflite.path, threads=3) as runner:
        grown = len(os.listdir("/proc/self/task")) - before
        assert runner.threads_used == 3 and runner.delegate_partitions >= 1  # XNNPACK took the graph
    assert grown == 2  # XNNPACK's pool: two workers beside the calling thread
    with LiteRTRunner(t0_tflite.path, threads=1):
        assert len(os.listdir("/proc/self/task")) == before  # one thread: no pool


def test_the_fixed_shape_is_kept_and_another_refused(t0_tflite, t0):
    import numpy as np
    import torch

    from lightexport.parity.runners.litert import LiteRTRunner

    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    with LiteRTRunner(t0_tflite.path, threads=1) as runner:
        out = runner.infer({"input": x[:1]})["logits"]
        for wrong in (x, x[:1, :, :32, :32]):  # a resized batch computed its second image wrong, silently
            with pytest.raises(InputFileError, match="takes NCHW"):
                runner.infer({"input": wrong})
    with torch.no_grad():
        ref = t0.module.eval()(torch.from_numpy(x[:1])).numpy()
    assert out.shape == (1, 1000) and np.abs(out - ref).max() <= 1e-4 * (ref.max() - ref.min())


# --------------------------------------------------------------------------- bad files (checker: stdlib only)


@pytest.mark.parametrize("damage", DAMAGES)
def test_bad_files_are_one_line_never_a_crash(tmp_path, damage):
    from lightexport.exporter.tflite_files import describe

    path = tmp_path / "bad.tflite"
    path.write_bytes(damaged(damage, b"\x1c\x00\x00\x00TFL3"))  # a plausible header over junk
    with pytest.raises(InputFileError) as caught:
        describe(path)
    message = str(caught.value)
    assert "bad.tflite" in message and "\n" not in message


def test_a_real_model_cut_anywhere_is_refused(t0_tflite, tmp_path):
    from lightexport.exporter.tflite_files import describe

    data = t0_tflite.path.read_bytes()
    for cut in (8, 30, 1000, len(data) // 3, len(data) // 2, len(data) - 100):
        path = tmp_path / f"cut{cut}.tflite"
        path.write_bytes(data[:cut])
        with pytest.raises(InputFileError, match=f"cut{cut}.tflite is not a readable LiteRT"):
            describe(path)


@pytest.mark.parametrize("damage", ["junk", "empty", "truncated"])
def test_bad_files_through_the_cli_are_exit_5(t0_tflite, tmp_path, damage):
    import shutil

    path = tmp_path / "t0.tflite"
    shutil.copy(t0_tflite.files[1], tmp_path / "t0.tflite.json")
    data = t0_tflite.path.read_bytes()
    path.write_bytes({"junk": b"not a model" * 100, "empty": b"", "truncated": data[: len(data) // 2]}[damage])
    result = CliRunner().invoke(cli, ["parity", str(path)])
    assert result.exit_code == ExitCode.INPUT, result.output
    assert "t0.tflite" in one_line(result)


def test_missing_packages_name_the_extra(monkeypatch, t0, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "litert_torch", None)  # what an import sees where it is not installed
    with pytest.raises(Exception, match=r"pip install 'lightexport\[litert\]'"):
        api.export(t0, "tflite", output=tmp_path / "x.tflite", input_size=SIZE)
    assert not list(tmp_path.glob("x.tflite*"))


# --------------------------------------------------------------------------- int8


def _float_tensors(path) -> int:
    from lightexport.exporter.tflite_files import describe

    return sum(t["dtype"] == "float32" for t in describe(path)["subgraphs"][0]["tensors"])


def test_int8_keeps_float_edges_and_regions_and_passes(t0, tmp_path):
    _needs_litert()
    from lightexport.calib import write_sample_photos
    from lightexport.exporter.tflite_files import describe, entry

    photos = write_sample_photos(tmp_path / "p")
    result = api.export(t0, "tflite", output=tmp_path / "q.tflite", fuse=True, input_size=SIZE, precision="int8",
                        calib=photos, calib_size=8)
    inputs, outputs = entry(describe(result.path))
    assert [t["dtype"] for t in inputs + outputs] == ["float32", "float32"]  # feeds and logits stay float
    assert sum(t["dtype"] == "int8" for t in describe(result.path)["subgraphs"][0]["tensors"]) > 100
    record = json.loads(result.metadata["lightexport.int8"])
    assert record["kept_float"] == ["input", "output"] and record["float_ends"] == [3, 0]  # the default: 3 convs
    assert any("every op before convolution 3" in note for note in result.notes), result.notes
    report = api.verify(result.path, t0, progress=False)
    assert report.passed, report.all_failures
    everything = api.export(t0, "tflite", output=tmp_path / "all.tflite", fuse=True, input_size=SIZE,
                            precision="int8", calib=photos, calib_size=8, int8_keep=0)
    assert json.loads(everything.metadata["lightexport.int8"])["float_ends"] == [0, 0]
    # the stem region's activations and weights stay float32 (no DEQUANTIZE in front of its convs)
    assert _float_tensors(result.path) > _float_tensors(everything.path)


def test_int8_keep_auto_searches_regions_at_both_ends(t0, tmp_path):
    _needs_litert()
    from lightexport.calib import write_sample_photos
    from lightexport.exporter.keep_search import AUTO_ENDS

    result = api.export(t0, "tflite", output=tmp_path / "a.tflite", fuse=True, input_size=SIZE, precision="int8",
                        calib=write_sample_photos(tmp_path / "p"), calib_size=8, int8_keep="auto")
    record = json.loads(result.metadata["lightexport.int8"])
    lead, trail = record["float_ends"]
    assert lead == trail and lead in AUTO_ENDS and record["auto_search"], record
    assert all(count // 2 in AUTO_ENDS and 0 < cosine <= 1 for count, cosine in record["auto_search"])
    assert any(note.startswith("int8 keep auto: calibration cosine by float-kept convs") for note in result.notes)
    assert api.verify(result.path, t0, progress=False).passed


def test_float_regions_are_every_op_before_and_after_the_counted_convolutions():
    from lightexport.exporter.tflite import float_ends

    ops = [("TRANSPOSE", "t"), ("PAD", "p"), ("CONV_2D", "c0"), ("DEPTHWISE_CONV_2D", "d1"), ("ADD", "a"),
           ("CONV_2D", "c2"), ("MEAN", "m"), ("FULLY_CONNECTED", "fc")]
    assert float_ends(ops, 0, 0) == []
    assert float_ends(ops, 1, 0) == ["t", "p", "c0"]          # up to the first convolution's output
    assert float_ends(ops, 2, 1) == ["t", "p", "c0", "d1", "a", "m", "fc"]  # the add between them too
    assert float_ends(ops, 3, 1) == [scope for _, scope in ops]  # everything: nothing int8 is left


def test_int8_keep_by_name_is_refused(t0, tmp_path):
    _needs_litert()
    from lightexport.calib import write_sample_photos
    from lightexport.errors import UsageError

    with pytest.raises(UsageError, match="module names do not survive"):
        api.export(t0, "tflite", output=tmp_path / "q.tflite", input_size=SIZE, precision="int8",
                   int8_keep="stages.0", calib=write_sample_photos(tmp_path / "p"))
    with pytest.raises(UsageError, match="--int8-keep 999: the model has"):
        api.export(t0, "tflite", output=tmp_path / "q.tflite", input_size=SIZE, precision="int8",
                   int8_keep=999, calib=write_sample_photos(tmp_path / "p2"))
    assert not list(tmp_path.glob("q.tflite*"))


@pytest.mark.slow
def test_trained_fp16_and_int8_keep_decisions(tmp_path):
    _needs_litert()
    from lightexport.calib.crops import write_calibration_crops
    from tests.trained import trained_checkpoint

    model = api.load("mobilenet_v2", weights=trained_checkpoint("mobilenet_v2"))
    half = api.export(model, "tflite", output=tmp_path / "h.tflite", fuse=True, precision="fp16")
    report = api.verify(half.path, model, images=48, progress=False)
    assert report.passed and report.outputs[0].top1_confident == 1.0 and report.outputs[0].top1 >= 0.95
    calib = write_calibration_crops(tmp_path / "calib", 64)
    quant = api.export(model, "tflite", output=tmp_path / "q.tflite", fuse=True, precision="int8", calib=calib)
    report = api.verify(quant.path, model, images=96, progress=False)
    assert report.passed, report.all_failures
    assert report.outputs[0].top1_confident >= 0.97


def test_backbone_outputs_come_back_in_order_with_their_names(tmp_path):
    _needs_litert()
    model = api.load("fasternet_t0", features=True)
    result = api.export(model, "tflite", output=tmp_path / "f.tflite", fuse=True, input_size=SIZE)
    io = BACKENDS["tflite"].read_io(result.path)
    assert [o.name for o in io.outputs] == model.output_names()
    assert [o.shape[1] for o in io.outputs] == [40, 80, 160, 320]  # NCHW, in the model's order
    report = api.verify(result.path, model, progress=False)
    assert report.passed and [o.name for o in report.outputs] == model.output_names()
