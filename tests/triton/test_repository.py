"""Repositories for every Triton backend: the config.pbtxt parses with Triton's own schema and says what the file is."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lightexport.cli import cli
from lightexport.errors import UsageError
from lightexport.triton import build_repository
from lightexport.triton.config import parse_config
from lightexport.triton.repository import preferred_batch_sizes
from tests.triton.conftest import META, needs_tritonclient

pytestmark = needs_tritonclient


def _parsed(result):
    return parse_config(result.config_path.read_text())


def _params(config) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def test_onnxruntime_config(onnx_file: Path, tmp_path: Path) -> None:
    result = build_repository(onnx_file, tmp_path / "repo", "onnxruntime", max_batch=8, instances=2)
    config = _parsed(result)
    assert (result.model_dir / "1" / "model.onnx").read_bytes() == onnx_file.read_bytes()
    assert result.name == "fasternet_t0" and config.name == "fasternet_t0"
    assert config.backend == "onnxruntime" and config.platform == "" and config.max_batch_size == 8
    (inp,), (out,) = config.input, config.output
    assert (inp.name, list(inp.dims), config.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name[
        "data_type"].enum_type.values_by_number[inp.data_type].name) == ("input", [3, -1, -1], "TYPE_FP32")
    assert (out.name, list(out.dims)) == ("logits", [5])
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = config.instance_group
    assert group.count == 2 and group.kind == group.KIND_CPU
    params = _params(config)
    assert params["lightexport.model"] == "fasternet_t0" and params["lightexport.note"] == META["note"]
    (warmup,) = config.model_warmup
    assert warmup.batch_size == 1 and list(warmup.inputs["input"].dims) == [3, 32, 32] and warmup.inputs[
        "input"].zero_data


def test_openvino_config(ir_file: Path, tmp_path: Path) -> None:
    result = build_repository(ir_file, tmp_path / "repo", "openvino", max_batch=4, name="tiny_ov")
    config = _parsed(result)
    assert {p.name for p in (result.model_dir / "1").iterdir()} == {"model.xml", "model.bin"}
    assert config.backend == "openvino" and config.name == "tiny_ov" and config.default_model_filename == "model.xml"
    assert [list(t.dims) for t in config.input] == [[3, -1, -1]] and [list(t.dims) for t in config.output] == [[5]]
    assert _params(config)["lightexport.input_size"] == "32"


def test_tensorrt_config(engine_file: Path, tmp_path: Path) -> None:
    result = build_repository(engine_file, tmp_path / "repo", "tensorrt", max_batch=16)
    config = _parsed(result)
    assert config.platform == "tensorrt_plan" and config.backend == ""
    assert (result.model_dir / "1" / "model.plan").is_file() and (result.model_dir / "1" / "model.plan.json").is_file()
    (group,) = config.instance_group
    assert group.kind == group.KIND_GPU
    assert [list(t.dims) for t in config.input] == [[3, 32, 32]]  # the profile's min == max for C, H, W
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8, 16]


@pytest.mark.parametrize("backend", ["python-ort", "python-openvino"])
def test_python_backend_config(backend: str, onnx_file: Path, tmp_path: Path, request) -> None:
    source = request.getfixturevalue("ir_file") if backend == "python-openvino" else onnx_file
    result = build_repository(source, tmp_path / "repo", backend, max_batch=0, dynamic_batching=False)
    config = _parsed(result)
    assert config.backend == "python" and config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[-1, 3, -1, -1]]  # no Triton batching: the batch axis stays
    assert list(config.model_warmup[0].inputs["input"].dims) == [1, 3, 32, 32]
    params = _params(config)
    assert params["runtime"] == ("openvino" if backend == "python-openvino" else "onnxruntime")
    assert params.get("inference_precision") == ("f32" if backend == "python-openvino" else None)
    assert (result.model_dir / "1" / params["artifact"]).is_file()
    assert "class TritonPythonModel" in (result.model_dir / "1" / "model.py").read_text()


def test_schema_rejects_a_misspelt_field() -> None:
    from lightexport.errors import ExportError

    with pytest.raises(ExportError, match="max_batch_sizes"):
        parse_config('name: "x"\nmax_batch_sizes: 4\n')


def test_static_batch_is_refused(static_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"fixed batch axis \[1, 3, -1, -1\].*lightexport onnx fasternet_t0 --dynamic"):
        build_repository(static_onnx, tmp_path / "repo", "onnxruntime", max_batch=8)
    assert not (tmp_path / "repo").exists()  # nothing half-written, not even the folder (refused before it is made)
    result = build_repository(static_onnx, tmp_path / "repo", "onnxruntime", max_batch=0)
    assert list(_parsed(result).input[0].dims) == [1, 3, -1, -1]


def test_cli_refusal_is_one_line_exit_2(static_onnx: Path, tmp_path: Path) -> None:
    run = CliRunner().invoke(cli, ["triton", str(static_onnx), "-o", str(tmp_path / "repo")])
    assert run.exit_code == 2
    lines = [ln for ln in run.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--dynamic" in lines[0], run.output


def test_wrong_backend_for_artifact(onnx_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="use --backend onnxruntime or python-ort"):
        build_repository(onnx_file, tmp_path / "repo", "openvino")
    with pytest.raises(UsageError, match="did you mean python-ort"):
        build_repository(onnx_file, tmp_path / "repo", "python-orte")


def test_rebuild_replaces_the_model_folder(onnx_file: Path, tmp_path: Path) -> None:
    first = build_repository(onnx_file, tmp_path / "repo", "python-ort", max_batch=8)
    (first.model_dir / "1" / "stale.txt").write_text("old")
    second = build_repository(onnx_file, tmp_path / "repo", "python-ort", max_batch=4)
    assert not (second.model_dir / "1" / "stale.txt").exists() and _parsed(second).max_batch_size == 4
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["fasternet_t0"]


def test_preferred_batch_sizes() -> None:
    assert preferred_batch_sizes(8) == (2, 4, 8)
    assert preferred_batch_sizes(6) == (2, 4, 6)
    assert preferred_batch_sizes(1) == (1,)
