"""Failures a probe of 122 bad inputs found (issue #11): each gets its exit code and one line, never a traceback."""

import json

import onnx
import pytest
from click.testing import CliRunner

from lightexport import api
from lightexport.cli import cli
from lightexport.errors import ExitCode, UsageError
from lightexport.fileio import STAGING_PREFIX, atomic_output, remove_abandoned_staging
from lightexport.parity import runner_for
from tests.cli_output import one_line as _one_line


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def t0_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("t0") / "t0.onnx"
    api.export(api.load("fasternet_t0"), "onnx", output=path, input_size=64)
    return path


def test_engine_runner_takes_the_common_runner_options():  # item 1: threads= reached TensorRTRunner
    runner = runner_for("model.engine", threads=2, inference_precision=None)
    assert type(runner).__name__ == "TensorRTRunner"


@pytest.mark.parametrize("target", ["/proc/x.onnx", "/sys/x.onnx"])
def test_unwritable_system_folders_are_output_errors(target):  # item 2
    result = run("onnx", "fasternet_t0", "--input-size", "64", "-o", target)
    assert result.exit_code == ExitCode.OUTPUT, result.output
    assert "cannot write" in _one_line(result)


def test_a_full_disk_is_an_output_error(tmp_path, monkeypatch):  # item 3, without needing a tmpfs
    import errno

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full)
    result = run("onnx", "fasternet_t0", "--input-size", "64", "-o", tmp_path / "x.onnx")
    assert result.exit_code == ExitCode.OUTPUT and "No space left on device" in _one_line(result)
    assert list(tmp_path.iterdir()) == []


def test_plain_onnx_without_provenance_says_so(tmp_path, t0_onnx):  # item 5
    plain = onnx.load(str(t0_onnx))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    result = run("parity", tmp_path / "plain.onnx", "--model", "mobilenet_v3_small")
    assert result.exit_code == ExitCode.USAGE
    assert "carries no lightexport provenance" in _one_line(result)
    (tmp_path / "notes.txt").write_text("hello")
    result = run("parity", tmp_path / "notes.txt", "--model", "fasternet_t0")
    assert result.exit_code == ExitCode.USAGE and "cannot tell an artifact's format" in _one_line(result)


@pytest.mark.parametrize("args", [
    ("onnx", "fasternet_t0", "--opset", "99"),
    ("onnx", "fasternet_t0", "--input-size", "0"),
    ("onnx", "fasternet_t0", "--fp16", "--int8"),
    ("openvino", "fasternet_t0", "--batch", "0"),
    ("openvino", "fasternet_t0", "--input-size", "-5"),
    ("openvino", "fasternet_t0", "--input-size", "100000"),
    ("parity", "x.onnx", "--threads", "-1"),
    ("onnx", "fasternet_t0", "--fusee"),
])
def test_out_of_range_and_conflicting_options_are_usage_errors(args, tmp_path):  # items 6 and 10, issue #10
    result = run(*args, *(["-o", tmp_path / "x.onnx"] if args[0] == "onnx" else []))
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "Traceback" not in result.output


def test_api_refuses_a_misspelt_option_with_the_close_match():
    with pytest.raises(UsageError, match="unknown option 'fusee'.*did you mean fuse"):
        api.export("fasternet_t0", "onnx", fusee=True)
    with pytest.raises(UsageError, match="did you mean openvino"):
        api.export("fasternet_t0", "openvin")


def test_a_huge_recorded_input_size_is_refused_before_allocating(tmp_path, t0_onnx):  # item 7
    model = onnx.load(str(t0_onnx))
    for prop in model.metadata_props:
        if prop.key == "lightexport.input_size":
            prop.value = "100000"
    onnx.save(model, str(tmp_path / "huge.onnx"))
    result = run("parity", tmp_path / "huge.onnx")
    assert result.exit_code == ExitCode.INPUT and "recorded input size" in _one_line(result)


def test_batch_n_artifacts_check_with_batches_of_n(tmp_path):  # item 14
    result = run("onnx", "fasternet_t0", "--input-size", "64", "--batch", "4", "--check", "-o", tmp_path / "b4.onnx")
    assert result.exit_code == 0, result.output
    result = run("parity", tmp_path / "b4.onnx", "--json", tmp_path / "p.json")
    assert result.exit_code == 0 and json.loads((tmp_path / "p.json").read_text())["samples"] == 32


def test_parity_finds_the_recorded_checkpoint_by_hash(tmp_path):  # item 18
    import torch

    loaded = api.load("fasternet_t0")
    torch.save(loaded.module.state_dict(), tmp_path / "t0.pth")
    assert run("onnx", "fasternet_t0", "--weights", tmp_path / "t0.pth", "--input-size", "64",
               "-o", tmp_path / "t0.onnx").exit_code == 0
    result = run("parity", tmp_path / "t0.onnx")
    assert result.exit_code == 0 and "sha256" in result.output and "matches" in result.output


def test_interrupted_runs_leave_no_staging_and_abandoned_ones_are_removed(tmp_path):  # item 11
    dead = tmp_path / f"{STAGING_PREFIX}999999999-abc"  # no such pid
    dead.mkdir()
    (dead / "partial.onnx").write_bytes(b"half")
    foreign = tmp_path / f"{STAGING_PREFIX}old-style"
    foreign.mkdir()
    remove_abandoned_staging(tmp_path)
    assert not dead.exists() and foreign.exists()
    with pytest.raises(KeyboardInterrupt), atomic_output(tmp_path / "out.onnx") as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name]


def test_bench_refuses_an_emulated_profile():
    result = run("bench", "fasternet_t0", "--profile", "arm64-1t")
    assert result.exit_code == ExitCode.USAGE and "measure the emulator" in _one_line(result)
