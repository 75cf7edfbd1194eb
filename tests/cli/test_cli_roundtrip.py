"""The main job end to end through the CLI: export, check, then parity in a later process."""

import json

import torch
from click.testing import CliRunner

from lightexport.cli import cli
from lightexport.errors import ExitCode
from lightexport.model_defs import create_model
from tests.conftest import randomize_bn


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_export_check_then_parity_from_recorded_provenance(tmp_path):
    weights = tmp_path / "t0.pth"
    torch.save(randomize_bn(create_model("fasternet_t0"), seed=11).state_dict(), weights)
    onnx_path = tmp_path / "t0.onnx"
    result = run("onnx", "fasternet_t0", "--weights", weights, "--fuse", "--check", "-o", onnx_path,
                 "--json", tmp_path / "export.json")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "BatchNormalization" not in result.output
    export = json.loads((tmp_path / "export.json").read_text())
    assert export["parity"]["passed"] and export["export"]["size_bytes"] == onnx_path.stat().st_size

    # A later process: the model name comes from the artifact; the weights are found beside it by their
    # recorded hash, and must be named again once they are gone from there.
    assert run("parity", onnx_path).exit_code == 0
    moved = weights.rename(tmp_path.parent / f"{tmp_path.name}-t0.pth")
    missing = run("parity", onnx_path)
    assert missing.exit_code == ExitCode.USAGE and "t0.pth" in missing.output
    ok = run("parity", onnx_path, "--weights", moved, "--json", tmp_path / "parity.json")
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "parity.json").read_text())["passed"] is True


def test_parity_failure_has_its_own_exit_code_and_says_what_failed(tmp_path):
    good, other = tmp_path / "good.pth", tmp_path / "other.pth"
    torch.save(randomize_bn(create_model("fasternet_t0"), seed=1).state_dict(), good)
    torch.save(randomize_bn(create_model("fasternet_t0"), seed=2).state_dict(), other)
    onnx_path = tmp_path / "t0.onnx"
    assert run("onnx", "fasternet_t0", "--weights", good, "--fuse", "-o", onnx_path).exit_code == 0
    result = run("parity", onnx_path, "--weights", other, "--json", tmp_path / "p.json")
    assert result.exit_code == ExitCode.PARITY
    assert "FAIL" in result.output and "logits" in result.output.splitlines()[-1]
    assert json.loads((tmp_path / "p.json").read_text())["passed"] is False


def test_random_weight_artifact_from_another_random_scheme_is_refused_not_failed(tmp_path):
    import onnx

    onnx_path = tmp_path / "t0.onnx"
    assert run("onnx", "fasternet_t0", "--input-size", 64, "-o", onnx_path).exit_code == 0
    assert run("parity", onnx_path).exit_code == 0  # same random weights in a later process
    model = onnx.load(str(onnx_path))
    old = [p for p in model.metadata_props if p.key != "lightexport.random_weights"]  # as lightexport 0.1 wrote
    del model.metadata_props[:]
    model.metadata_props.extend(old)
    onnx.save(model, str(onnx_path))
    result = run("parity", onnx_path)
    assert result.exit_code == ExitCode.USAGE and "re-export" in result.output, result.output
