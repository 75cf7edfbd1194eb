"""Bad calibration and model inputs: one clear line, non-zero exit, and no partial artifact."""

import pytest
from click.testing import CliRunner

from lightexport.cli import cli
from lightexport.errors import ExitCode

pytest.importorskip("openvino")


def _run(*args):
    return CliRunner().invoke(cli, list(args))


def _assert_clean_failure(result, code, *needles):
    text = result.output.strip()
    assert result.exit_code == code, text
    # Skipped files are reported as one warning line; the error itself is one line at the end.
    assert "Traceback" not in text and text.splitlines()[-1].startswith("error:")
    for needle in needles:
        assert needle in text


@pytest.mark.parametrize("command, suffix", [("openvino", "xml"), ("onnx", "onnx")])
def test_empty_calibration_folder(tmp_path, command, suffix):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = _run(command, "fasternet_t0", "--int8", "--calib", str(tmp_path / "empty"), "-o", str(out / f"m.{suffix}"))
    _assert_clean_failure(result, ExitCode.INPUT, "empty")
    assert not out.exists() or not list(out.iterdir())


def test_folder_of_non_images(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not an image")
    (junk / "fake.jpg").write_bytes(b"this is not a jpeg")
    (junk / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    result = _run("openvino", "fasternet_t0", "--int8", "--calib", str(junk), "--calib-size", "2",
                  "-o", str(out / "m.xml"))
    _assert_clean_failure(result, ExitCode.INPUT, "junk")
    assert not out.exists() or not list(out.iterdir())


def test_corrupt_onnx_given_to_openvino(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07 not really protobuf \xff\xfe")
    result = _run("openvino", str(bad), "-o", str(tmp_path / "out.xml"))
    _assert_clean_failure(result, ExitCode.INPUT, "corrupt.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.onnx"]


def test_int8_without_calib_is_a_usage_error(tmp_path):
    result = _run("openvino", "fasternet_t0", "--int8", "-o", str(tmp_path / "m.xml"))
    _assert_clean_failure(result, ExitCode.USAGE, "--calib")
