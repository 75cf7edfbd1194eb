"""ExecuTorch (``.pte``): exported through torch.export and XNNPACK, checked against PyTorch, and every bad program
refused in one line before ExecuTorch's loader (which aborts the process on a junk file) sees it.

Skips, saying why, where executorch cannot be imported (``pip install 'lightexport[executorch]'``); the file
reader's tests need nothing but the standard library.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lightexport import api
from lightexport.cli import cli
from lightexport.errors import ExitCode, InputFileError
from tests.cli_output import DAMAGES, damaged, one_line

SIZE = 64
HINT = "pip install 'lightexport[executorch]'"


def _needs_executorch():
    pytest.importorskip("executorch", reason=f"executorch is not installed: {HINT}")


@pytest.fixture(scope="module")
def t0():
    return api.load("fasternet_t0")


@pytest.fixture(scope="module")
def t0_pte(t0, tmp_path_factory):
    _needs_executorch()
    return api.export(t0, "executorch", output=tmp_path_factory.mktemp("et") / "t0.pte", fuse=True, input_size=SIZE)


def _lowered(module: torch.nn.Module, example: torch.Tensor, xnnpack: bool) -> bytes:
    """A program made with ExecuTorch's own API (lightexport's exporter would refuse or fix what these tests need)."""
    from executorch.exir import to_edge_transform_and_lower

    partitioners = []
    if xnnpack:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioners = [XnnpackPartitioner()]
    exported = torch.export.export(module.eval(), (example,), strict=False)
    return to_edge_transform_and_lower(exported, partitioner=partitioners).to_executorch().buffer


# --------------------------------------------------------------------------- export and parity


def test_cli_export_with_check_exits_0(tmp_path, monkeypatch):
    _needs_executorch()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["export", "fasternet_t0", "--format", "executorch", "--input-size", str(SIZE),
                                      "--fuse", "--check"])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and (tmp_path / "fasternet_t0.pte").is_file()


def test_provenance_lives_in_the_program_and_reads_back(t0_pte):
    from lightexport.parity.runners.executorch import read_io, read_metadata

    meta = read_metadata(t0_pte.path)
    assert meta["lightexport.model"] == "fasternet_t0" and meta["lightexport.precision"] == "fp32"
    io = read_io(t0_pte.path)
    assert io.inputs[0].shape == (1, 3, SIZE, SIZE) and io.outputs[0].name == "logits"
    assert io.outputs[0].shape == (1, 1000)


def test_fp32_matches_pytorch_and_a_wrong_shape_is_an_input_error(t0_pte, t0):
    from lightexport.parity.runners.executorch import ExecuTorchRunner

    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    with ExecuTorchRunner(t0_pte.path, threads=1) as runner:
        out = runner.infer({"input": x})["logits"]
        with pytest.raises(InputFileError, match=r"cannot run on an input of shape \(1, 3, 32, 64\)"):
            runner.infer({"input": x[:, :, :32]})
    with torch.no_grad():
        ref = t0.module.eval()(torch.from_numpy(x)).numpy()
    assert np.abs(out - ref).max() <= 1e-5 * (ref.max() - ref.min())


def test_fp16_runs_xnnpack_fp16_kernels_behind_fp32_edges_and_passes(t0, tmp_path):
    _needs_executorch()
    from lightexport.parity.runners.executorch import read_io

    half = api.export(t0, "executorch", output=tmp_path / "h.pte", fuse=True, input_size=SIZE, precision="fp16")
    io = read_io(half.path)
    assert io.inputs[0].dtype == "float32" and io.outputs[0].dtype == "float32"
    report = api.verify(half.path, t0, progress=False)
    assert report.passed and report.outputs[0].max_rel > 1e-6  # really fp16 inside, not a second fp32 program


# --------------------------------------------------------------------------- programs the runner refuses


def test_a_channels_last_program_is_refused_before_it_misreads_nchw(tmp_path):
    _needs_executorch()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    example = torch.zeros(1, 3, 16, 16).to(memory_format=torch.channels_last)
    from lightexport.parity.runners.executorch import ExecuTorchRunner

    path = tmp_path / "nhwc.pte"
    path.write_bytes(_lowered(net, example, xnnpack=True))
    with pytest.raises(InputFileError, match="nhwc.pte was exported from a .* \\(channels-last\\) example"):
        ExecuTorchRunner(path).activate()


def test_a_program_without_xnnpack_is_refused(tmp_path):
    _needs_executorch()
    from lightexport.parity.runners.executorch import ExecuTorchRunner

    path = tmp_path / "portable.pte"
    path.write_bytes(_lowered(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), torch.zeros(1, 3, 16, 16), xnnpack=False))
    with pytest.raises(InputFileError, match="portable.pte has no XNNPACK delegate"):
        ExecuTorchRunner(path).activate()


@pytest.mark.parametrize("damage", DAMAGES)
def test_bad_files_are_one_line_never_a_crash(tmp_path, damage):
    from lightexport.parity.runners.executorch import describe

    path = tmp_path / "bad.pte"
    path.write_bytes(damaged(damage, b"\x18\x00\x00\x00ET12eh00"))  # a plausible header over junk
    with pytest.raises(InputFileError) as caught:
        describe(path)
    message = str(caught.value)
    assert "bad.pte" in message and "\n" not in message


def test_a_real_program_cut_anywhere_is_refused(t0_pte, tmp_path):
    from lightexport.parity.runners.executorch import describe

    data = t0_pte.path.read_bytes()
    for cut in (8, 40, 1000, len(data) // 3, len(data) // 2, len(data) - 100):
        path = tmp_path / f"cut{cut}.pte"
        path.write_bytes(data[:cut])
        with pytest.raises(InputFileError, match=f"cut{cut}.pte is not a readable ExecuTorch program"):
            describe(path)


@pytest.mark.parametrize("damage", ["junk", "empty", "truncated"])
def test_bad_files_through_the_cli_are_exit_5_in_a_live_process(t0_pte, tmp_path, damage):
    """ExecuTorch's loader would abort on these (``terminate called after throwing``); the CLI says one line."""
    path = tmp_path / "t0.pte"
    data = t0_pte.path.read_bytes()
    path.write_bytes({"junk": b"not a program" * 100, "empty": b"", "truncated": data[: len(data) // 2]}[damage])
    result = CliRunner().invoke(cli, ["parity", str(path)])
    assert result.exit_code == ExitCode.INPUT, result.output
    assert "t0.pte" in one_line(result)


def test_missing_packages_name_the_extra(monkeypatch, t0, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "executorch", None)  # what an import sees where it is not installed
    with pytest.raises(Exception, match=r"pip install 'lightexport\[executorch\]'"):
        api.export(t0, "executorch", output=tmp_path / "x.pte", input_size=SIZE)
    assert not list(tmp_path.glob("x.pte*"))


# --------------------------------------------------------------------------- trained weights


def test_trained_fp16_and_int8_keep_decisions(tmp_path):
    """Trained MobileNetV2: fp16 keeps the confident decisions; int8 at ExecuTorch's default (``auto``: float regions
    at both ends, the other layers' biases corrected for weight rounding) passes and keeps >= 97 % of them."""
    _needs_executorch()
    from lightexport.calib.crops import write_calibration_crops
    from tests.trained import trained_checkpoint

    model = api.load("mobilenet_v2", weights=trained_checkpoint("mobilenet_v2"))
    half = api.export(model, "executorch", output=tmp_path / "h.pte", fuse=True, precision="fp16")
    report = api.verify(half.path, model, images=48, progress=False)
    assert report.passed and report.outputs[0].top1_confident == 1.0 and report.outputs[0].top1 >= 0.95
    calib = write_calibration_crops(tmp_path / "calib", 64)
    quant = api.export(model, "executorch", output=tmp_path / "q.pte", fuse=True, precision="int8", calib=calib)
    int8 = json.loads(quant.metadata["lightexport.int8"])
    assert int8["auto_search"] and int8["kept_float"] and int8["bias_corrected_layers"] > 20
    report = api.verify(quant.path, model, images=96, progress=False)
    assert report.passed, report.all_failures
    assert report.outputs[0].top1_confident >= 0.97
    shutil.rmtree(calib)
