"""The shared export pipeline (exporter/base.py): the steps every format takes are written once.

Two TensorRT bugs came from copies of those steps (issue #25): the engine's intermediate ONNX
dropped ``passes`` (only ``fuse`` was forwarded), and its int8 calibration reader was built without
the batch size (a raw ONNX Runtime traceback at ``--batch 2``). Both paths now derive the
intermediate's options from the export's own record.
"""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner

from lightexport import api
from lightexport.backends import get_backend
from lightexport.calib import write_sample_photos
from lightexport.cli import cli
from lightexport.options import ExportOptions
from lightexport.reparam import DEFAULT_PASSES


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_sample_photos(tmp_path_factory.mktemp("photos"))


def _recorded_passes(path) -> list[str]:
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(meta["lightexport.passes"])


def test_int8_dry_run_at_batch_2_calibrates_in_batches_of_2(tmp_path, photos):
    result = CliRunner().invoke(cli, ["trt", "mobilenet_v3_small", "--input-size", "64", "--int8", "--calib",
                                      str(photos), "--batch", "2", "--dry-run", "--write-onnx",
                                      "-o", str(tmp_path / "m.engine")])
    assert result.exit_code == 0, result.output  # before: ONNX Runtime's InvalidArgument traceback
    written = tmp_path / "m.trtexec.onnx"
    dims = onnx.load(str(written)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 2 and any(n.op_type == "QuantizeLinear" for n in onnx.load(str(written)).graph.node)


def test_the_engines_onnx_records_the_passes_asked_for(tmp_path, monkeypatch):
    """The real build path with TensorRT stubbed at its door: the ONNX handed to the builder has the passes."""
    import lightexport.exporter.tensorrt as trt_module

    seen = {}

    def build_engine(onnx_path, engine_path, precision, **_kwargs):
        seen["passes"] = _recorded_passes(onnx_path)
        from lightexport.exporter.base import ExportResult

        return ExportResult(format="tensorrt", path=engine_path, seconds=0.0)

    monkeypatch.setattr(trt_module, "load_tensorrt", lambda: None)
    monkeypatch.setattr(trt_module, "build_engine", build_engine)
    result = api.export("fasternet_t0", "tensorrt", output=tmp_path / "t0.engine", input_size=64,
                        passes=["fuse_conv_bn", "pconv_form"])
    assert seen["passes"] == ["pconv_form", "fuse_conv_bn"] or seen["passes"] == ["fuse_conv_bn", "pconv_form"]
    assert [r.name for r in result.passes] == seen["passes"]  # before: [] (only fuse was forwarded)
    api.export("fasternet_t0", "tensorrt", output=tmp_path / "t1.engine", input_size=64, fuse=True)
    assert seen["passes"] == list(DEFAULT_PASSES)


def test_derived_options_keep_every_common_field_and_the_shared_format_options():
    trt = ExportOptions.build(get_backend("tensorrt"), fuse=True, passes=["fuse_conv_bn"], input_size=96, batch=4,
                              dynamic=True, opset=13, workspace_gib=2.0, precision="int8", calib="photos")
    onnx_opts = trt.derive(get_backend("onnx"), output="x.onnx", precision="fp32", calib=None, int8_keep=None)
    assert (onnx_opts.fuse, onnx_opts.passes, onnx_opts.input_size, onnx_opts.batch, onnx_opts.dynamic) == \
        (True, ("fuse_conv_bn",), 96, 4, True)
    assert onnx_opts.get("opset") == 13 and "workspace_gib" not in onnx_opts.extra  # ONNX has no workspace
