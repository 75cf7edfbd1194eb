"""Mistakes a review of the CLI reproduced, each exiting 0, overwriting an input or ending in a traceback before.

Every case here failed before its change: the user's own model code and an ONNX file's external data were not
inputs to the output guard, a TensorRT dry run printed a command overwriting the source, a wrong suffix wrote an
artifact nothing could read, a model's failing forward pass and SqueezeNet's convolution head raised tracebacks,
``--input-shape``'s batch and an ONNX source's shape options were silently dropped, and parity ran code an
artifact named without the hash that pins it.
"""

from __future__ import annotations

import os

import onnx
import pytest
from click.testing import CliRunner

from lightexport.cli import cli
from lightexport.errors import ExitCode, UsageError
from lightexport.options import parse_keep
from tests.cli_output import one_line

NET = """
import torch.nn as nn
def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
"""


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A user's model file and an ONNX exported from it (32 px)."""
    folder = tmp_path_factory.mktemp("review")
    code = folder / "net.py"
    code.write_text(NET)
    result = run("export", f"{code}:build", "--format", "onnx", "--input-shape", "1x3x32x32", "-o", folder / "n.onnx")
    assert result.exit_code == 0, result.output
    return folder, code, folder / "n.onnx"


def test_the_models_code_is_an_input(net):
    folder, code, artifact = net
    result = run("export", f"{code}:build", "--format", "onnx", "--input-shape", "1x3x32x32", "-o", code)
    assert result.exit_code == ExitCode.USAGE and "the model's code" in one_line(result)
    result = run("parity", artifact, "--inputs", "2", "--json", code)
    assert result.exit_code == ExitCode.USAGE and "the model's code" in one_line(result)
    assert code.read_text() == NET


def test_an_onnx_files_external_data_is_an_input(net, tmp_path):
    _, _, artifact = net
    source = tmp_path / "src.onnx"
    onnx.save(onnx.load(str(artifact)), str(source), save_as_external_data=True, location="w.bin", size_threshold=0)
    before = (tmp_path / "w.bin").read_bytes()
    result = run("parity", source, "--inputs", "2", "--json", tmp_path / "w.bin")
    assert result.exit_code == ExitCode.USAGE and "external data" in one_line(result)
    pytest.importorskip("openvino")
    result = run("export", source, "--format", "openvino", "-o", tmp_path / "w.xml")  # its .bin is w.bin
    assert result.exit_code == ExitCode.USAGE and "external data" in one_line(result)
    assert (tmp_path / "w.bin").read_bytes() == before


def test_a_tensorrt_dry_run_prints_no_command_that_overwrites_an_input(net, tmp_path):
    _, _, artifact = net
    result = run("trt", artifact, "--dry-run", "--timing-cache", artifact)
    assert result.exit_code == ExitCode.USAGE and "the source ONNX" in one_line(result)
    result = run("trt", artifact, "--dry-run", "-o", tmp_path / "e.engine", "--timing-cache", tmp_path / "e.engine")
    assert result.exit_code == ExitCode.USAGE and "same file" in one_line(result)
    assert run("trt", artifact, "--dry-run", "--timing-cache", tmp_path / "t.cache").exit_code == 0


def test_a_name_nothing_could_read_back_is_refused(net, tmp_path):
    _, code, _ = net
    result = run("export", f"{code}:build", "--format", "onnx", "--input-shape", "1x3x32x32", "-o",
                 tmp_path / "m.onnx.json")
    assert result.exit_code == ExitCode.USAGE and "m.onnx)" in one_line(result)
    fifo = tmp_path / "pipe"  # no suffix: before, the suffix was added and pipe.onnx written beside the FIFO
    os.mkfifo(fifo)
    result = run("export", f"{code}:build", "--format", "onnx", "--input-shape", "1x3x32x32", "-o", fifo)
    assert result.exit_code == ExitCode.USAGE and "a FIFO" in one_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_models_failing_forward_pass_is_one_line(net, tmp_path):
    _, code, _ = net
    result = run("export", f"{code}:build", "--format", "onnx", "--input-shape", "1x4x32x32", "-o", tmp_path / "x.onnx")
    assert result.exit_code == ExitCode.INPUT and "forward pass on a 1x4x32x32 input" in one_line(result)
    bad = tmp_path / "bad.py"
    bad.write_text("import torch.nn as nn\ndef build(width=8):\n    return nn.Linear('%d' % width, 2)\n")
    result = run("export", f"{bad}:build", "--format", "onnx", "--input-shape", "1x3x32x32", "--model-arg",
                 "width=abc", "-o", tmp_path / "x.onnx")
    assert result.exit_code == ExitCode.INPUT and "raised TypeError" in one_line(result), result.output
    assert "bad.py, line 3" in one_line(result) and "width='abc'" in one_line(result)
    binary = tmp_path / "bin.py"
    binary.write_bytes(b"x = 1\0\n")
    result = run("export", f"{binary}:build", "--format", "onnx", "--input-shape", "1x3x32x32")
    assert result.exit_code == ExitCode.INPUT and "is not Python source" in one_line(result)
    assert not (tmp_path / "x.onnx").exists()


def test_a_torchvision_classifier_with_a_convolution_head_exports(tmp_path):
    pytest.importorskip("torchvision")
    result = run("export", "torchvision:squeezenet1_1", "--format", "onnx", "--input-size", "64", "-o",
                 tmp_path / "sq.onnx")
    assert result.exit_code == 0, result.output
    assert onnx.load(str(tmp_path / "sq.onnx")).graph.output[0].type.tensor_type.shape.dim[1].dim_value == 1000


def test_the_input_shapes_batch_is_the_batch(net, tmp_path):
    _, code, _ = net
    out = tmp_path / "b4.onnx"
    assert run("export", f"{code}:build", "--format", "onnx", "--input-shape", "4x3x32x32", "-o", out).exit_code == 0
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    result = run("export", f"{code}:build", "--format", "onnx", "--input-shape", "4x3x32x32", "--batch", "2", "-o",
                 tmp_path / "b2.onnx")
    assert result.exit_code == ExitCode.USAGE and "conflict" in one_line(result)


def test_shape_options_an_onnx_source_cannot_honour_are_refused(net, tmp_path):
    pytest.importorskip("openvino")
    _, _, artifact = net
    for option in (["--input-size", "96"], ["--batch", "4"], ["--dynamic"]):
        result = run("export", artifact, "--format", "openvino", *option, "-o", tmp_path / "o.xml")
        assert result.exit_code == ExitCode.USAGE and option[0] in one_line(result), option
    assert list(tmp_path.iterdir()) == []


def test_an_int8_only_option_without_int8_is_refused(net, tmp_path):
    _, code, _ = net
    result = run("export", f"{code}:build", "--format", "onnx", "--input-shape", "1x3x32x32", "--int8-symmetric",
                 "-o", tmp_path / "s.onnx")
    assert result.exit_code == ExitCode.USAGE and "--int8-symmetric goes with --int8" in one_line(result)


def test_suite_says_an_empty_calibration_folder_before_any_cell(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("suite", "--models", "fasternet_t0", "--backends", "onnx", "--precisions", "fp32,int8",
                 "--profiles", "mobile-1t", "--calib", tmp_path / "empty", "-o", tmp_path / "report")
    assert result.exit_code == ExitCode.INPUT and "no images" in one_line(result)
    assert not (tmp_path / "report").exists()


def test_parity_runs_no_code_an_artifact_names_without_its_hash(net, tmp_path):
    _, _, artifact = net
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n{NET}")
    for drop, changes in (({"lightexport.source", "lightexport.entry", "lightexport.entry_sha256"},
                           {"lightexport.model": f"{evil}:build"}),
                          ({"lightexport.entry_sha256"}, {"lightexport.entry": f"{evil}:build"})):
        model = onnx.load(str(artifact))
        props = [(p.key, changes.get(p.key, p.value)) for p in model.metadata_props if p.key not in drop]
        del model.metadata_props[:]
        for key, value in props:
            model.metadata_props.add(key=key, value=value)
        crafted = tmp_path / "crafted.onnx"
        onnx.save(model, str(crafted))
        result = run("parity", crafted, "--inputs", "2")
        assert result.exit_code == ExitCode.USAGE and f"--model {evil}:build" in one_line(result), result.output
        assert not marker.exists()


def test_click_errors_are_one_line_with_a_close_match():
    result = run("exprot")
    assert result.exit_code == ExitCode.USAGE and "did you mean export?" in one_line(result)
    result = run("bench", "--threads", "0", "x")
    assert result.exit_code == ExitCode.USAGE and one_line(result).startswith("error: Invalid value for '--threads'")
    result = run("suite", "--profiles", "mobile-1")
    assert result.exit_code == ExitCode.USAGE and "did you mean mobile-1t?" in one_line(result)


def test_a_negative_keep_is_a_count_out_of_range():
    with pytest.raises(UsageError, match="from 0 to"):
        parse_keep("-1")


def test_an_opset_the_dynamo_exporter_cannot_write_is_refused(net, tmp_path):
    _, code, _ = net
    result = run("export", f"{code}:build", "--format", "onnx", "--input-shape", "1x3x32x32", "--exporter", "dynamo",
                 "--opset", "9", "-o", tmp_path / "d.onnx")
    assert result.exit_code == ExitCode.USAGE and "drop --exporter dynamo for opset 9" in one_line(result)
    assert not (tmp_path / "d.onnx").exists()


def test_triton_names_the_damaged_artifact_and_makes_no_folder(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model file" * 100)
    result = run("triton", junk, "-o", tmp_path / "repo")
    assert result.exit_code == ExitCode.INPUT and one_line(result).startswith(f"error: {junk}"), result.output
    assert not (tmp_path / "repo").exists()


def test_ncnn_says_why_it_cannot_load_a_file(net, tmp_path):
    pytest.importorskip("ncnn")
    pytest.importorskip("pnnx")
    _, code, _ = net
    param = tmp_path / "n.ncnn.param"
    result = run("export", f"{code}:build", "--format", "ncnn", "--input-shape", "1x3x32x32", "-o", param)
    assert result.exit_code == 0, result.output
    param.write_text(param.read_text().replace("Pooling", "Poolinq"))
    result = run("parity", param, "--inputs", "2")
    assert result.exit_code == ExitCode.INPUT
    assert "ncnn says 'layer Poolinq not exists or registered'" in one_line(result), result.output
