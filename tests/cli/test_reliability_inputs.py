"""Issue #11, the remaining items: hostile or odd input files get one line of ours and their exit code."""

import os

import pytest
from click.testing import CliRunner

from lightexport.cli import cli
from lightexport.errors import ExitCode


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line(result) -> str:
    text = result.output.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) <= 2, text
    return text


@pytest.mark.parametrize(
    "content",
    [b"hello\n", b"some text\nmore\n", b"", b"\x80\x02" + bytes(range(256)) * 8, os.urandom(4000)],
    ids=["hello", "two-lines", "empty", "broken-pickle", "random"],
)
def test_garbage_weights_are_one_line_input_errors(tmp_path, content):  # item 4
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    result = run("onnx", "fasternet_t0", "--weights", path, "--input-size", "64", "-o", tmp_path / "x.onnx")
    assert result.exit_code == ExitCode.INPUT, result.output
    line = _one_line(result)
    assert "w.pth: not a readable PyTorch checkpoint" in line
    assert "weights_only" not in line and "--trust-checkpoint" not in line
