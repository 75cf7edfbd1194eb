"""User mistakes end in one line, a distinct exit code, no traceback, and no partial files."""

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from lightexport.cli import cli
from lightexport.errors import ExitCode
from lightexport.model_defs import create_model


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _one_clean_line(result) -> str:
    text = result.output.strip()
    assert "Traceback" not in text
    assert text.startswith("error:") and len(text.splitlines()) <= 2, text  # rich may soft-wrap once
    return text


def test_every_command_has_help_with_an_example():
    for command in cli.commands:
        result = run(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command


def test_cli_help_stays_torch_free_yet_uses_the_library_default_input_count():
    from lightexport import cli as cli_module
    from lightexport.parity.inputs import PARITY_INPUTS

    assert cli_module.PARITY_INPUTS == PARITY_INPUTS
    code = "import sys, lightexport.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_unknown_model_suggests_and_exits_usage(tmp_path):
    result = run("onnx", "fasternet_tO", "-o", str(tmp_path / "x.onnx"))
    assert result.exit_code == ExitCode.USAGE
    assert "did you mean fasternet_t0" in _one_clean_line(result)
    assert not list(tmp_path.iterdir())


def test_missing_checkpoint_names_the_file(tmp_path):
    result = run("onnx", "fasternet_t0", "--weights", str(tmp_path / "absent.pth"), "-o", str(tmp_path / "x.onnx"))
    assert result.exit_code == ExitCode.INPUT
    assert "absent.pth" in _one_clean_line(result)
    assert not list(tmp_path.iterdir())


def test_checkpoint_that_does_not_fit(tmp_path):
    ckpt = tmp_path / "t0.pth"
    torch.save({"model": create_model("fasternet_t0").state_dict()}, ckpt)
    result = run("onnx", "fasternet_t1", "--weights", str(ckpt), "-o", str(tmp_path / "x.onnx"))
    assert result.exit_code == ExitCode.INPUT
    line = _one_clean_line(result)
    assert "mis-shaped" in line and "[40, 3, 4, 4]" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t0.pth"]


def test_unwritable_output_exits_output_code(tmp_path):
    (tmp_path / "file").write_text("x")
    result = run("onnx", "fasternet_t0", "-o", str(tmp_path / "file" / "x.onnx"))
    assert result.exit_code == ExitCode.OUTPUT
    assert "file" in _one_clean_line(result)


def test_parity_on_missing_artifact(tmp_path):
    result = run("parity", str(tmp_path / "nothing.onnx"))
    assert result.exit_code == ExitCode.INPUT
    assert "nothing.onnx" in _one_clean_line(result)


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage-protobuf"])
def test_parity_on_corrupt_onnx(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    result = run("parity", str(bad), "--model", "fasternet_t0")
    assert result.exit_code == ExitCode.INPUT
    assert "bad.onnx" in _one_clean_line(result)


def test_trt_without_tensorrt_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = run("trt", "fasternet_t0", "--fuse", "--fp16", "-o", str(tmp_path / "out" / "t0.engine"))
    assert result.exit_code == ExitCode.BACKEND
    line = _one_clean_line(result)
    assert "TensorRT" in line and "lightexport[tensorrt]" in line and "--dry-run" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
