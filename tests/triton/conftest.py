"""Small artifacts for the repository tests: ONNX files made with onnx.helper, with lightexport provenance."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lightexport.artifacts import add_prefix

needs_tritonclient = pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None,
                                        reason="tritonclient is not installed (pip install 'lightexport[triton]')")
needs_server = pytest.mark.skipif(
    importlib.util.find_spec("tritonclient") is None or importlib.util.find_spec("pytriton") is None,
    reason="tritonclient/nvidia-pytriton are not installed (pip install 'lightexport[triton]')")

META = {"model": "fasternet_t0", "input_size": "32", "precision": "fp32", "batch": "dynamic",
        "note": 'a "quoted"\\ value'}


def tiny_onnx(path: Path, batch: int | str = "batch", classes: int = 5) -> Path:
    """input [batch, 3, h, w] -> GlobalAveragePool -> Flatten -> Gemm -> logits [batch, classes]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((classes, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1)],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = dict(META, batch="dynamic" if isinstance(batch, str) else str(batch))
    for key, value in add_prefix(meta).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "tiny.onnx")


@pytest.fixture
def static_onnx(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "static.onnx", batch=1)


@pytest.fixture
def ir_file(onnx_file: Path) -> Path:
    ov = pytest.importorskip("openvino")
    from lightexport.artifacts import RT_SECTION

    model = ov.convert_model(str(onnx_file))
    for key, value in META.items():
        model.set_rt_info(value, [RT_SECTION, key])
    xml = onnx_file.with_suffix(".xml")
    ov.save_model(model, str(xml))
    return xml


@pytest.fixture
def engine_file(tmp_path: Path) -> Path:
    """An engine file Triton would load and its sidecar; the config is built from the sidecar alone."""
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"not parsed: lightexport reads the sidecar")
    profile = {"input": {"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [16, 3, 32, 32]}}
    meta = add_prefix(dict(META, profile=json.dumps(profile)))
    engine.with_name(engine.name + ".json").write_text(json.dumps(meta))
    return engine
