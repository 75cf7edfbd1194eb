"""An int8 IR pins its float layers to f32: what parity checked is what a default compile runs."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from lightexport import api
from lightexport.calib import write_sample_photos
from lightexport.exporter.openvino_pin import PRECISE, pin_float_layers, pinned_layers
from lightexport.loading import load_model
from lightexport.parity.runners.openvino import layer_precisions

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")


def _lowers_to_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


needs_bf16 = pytest.mark.skipif(not _lowers_to_bf16(), reason="this CPU has no bf16 execution (no AMX / AVX512-BF16), "
                                                             "so there is nothing for the pin to keep in f32")


@pytest.fixture(scope="module")
def int8_ir(tmp_path_factory):
    """MobileNetV2 (random weights, 96 px) in int8 with its first three convolutions kept float."""
    work = tmp_path_factory.mktemp("pin")
    loaded = load_model("mobilenet_v2")
    return api.export(loaded, "openvino", output=work / "m_int8.xml", fuse=True, precision="int8", input_size=96,
                      calib=write_sample_photos(work / "photos"), calib_size=8, int8_keep=3, progress=False)


def _compiled(xml, hint):
    return ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": 1})


def _unpinned_copy(xml, tmp_path):
    """The same IR with the attribute stripped: the control that shows what the pin changes."""
    text = re.sub(rf'<attribute name="{PRECISE["name"]}" version="{PRECISE["version"]}"\s*/>', "", xml.read_text())
    copy = tmp_path / "unpinned.xml"
    copy.write_text(text)
    shutil.copy(xml.with_suffix(".bin"), copy.with_suffix(".bin"))
    assert not pinned_layers(copy)
    return copy


def test_int8_ir_pins_its_kept_float_layers(int8_ir):
    pinned = set(pinned_layers(int8_ir.path))
    kept = [n for n in int8_ir.notes if n.startswith("kept in float: ")][0].removeprefix("kept in float: ").split(", ")
    assert len(kept) == 3 and set(kept) <= pinned
    types = {op.get_friendly_name(): op.get_type_name() for op in ov.Core().read_model(str(int8_ir.path)).get_ops()}
    assert not {types[name] for name in pinned} & {"Const", "Parameter", "Result", "FakeQuantize"}
    assert '"float_layers": "f32, pinned in the IR"' in int8_ir.metadata["lightexport.int8"]


@needs_bf16
def test_pinned_float_layers_run_f32_under_the_bf16_hint(int8_ir, tmp_path):
    pinned = layer_precisions(_compiled(int8_ir.path, "bf16"))
    unpinned = layer_precisions(_compiled(_unpinned_copy(int8_ir.path, tmp_path), "bf16"))
    assert pinned.get("f32") == 3 and "bf16" not in pinned, pinned  # the three kept convolutions
    assert unpinned.get("bf16") == 3 and "f32" not in unpinned, unpinned  # the control: lowered without the pin
    assert pinned.get("u8") == unpinned.get("u8") > 0  # the quantized layers run int8 either way


@needs_bf16
def test_default_compile_of_a_pinned_ir_computes_what_the_f32_hint_computes(int8_ir, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96), dtype=np.float32)
    f32 = _compiled(int8_ir.path, "f32")(x)[0]
    assert np.array_equal(_compiled(int8_ir.path, "bf16")(x)[0], f32)
    assert not np.array_equal(_compiled(_unpinned_copy(int8_ir.path, tmp_path), "bf16")(x)[0], f32)


def test_pinning_is_idempotent_and_keeps_the_ir_readable(int8_ir, tmp_path):
    xml = tmp_path / "again.xml"
    shutil.copy(int8_ir.path, xml)
    shutil.copy(int8_ir.path.with_suffix(".bin"), xml.with_suffix(".bin"))
    first = pinned_layers(xml)
    assert pin_float_layers(xml) == first
    assert len(re.findall(f'<attribute name="{PRECISE["name"]}"', xml.read_text())) == len(first)
    model = ov.Core().read_model(str(xml))
    assert model.get_rt_info(["lightexport", "precision"]).astype(str) == "int8"  # the provenance survived


def test_same_padding_folds_into_the_convolutions_exactly(tmp_path):
    """EfficientNet-Lite's TF "same" Pads: folded in the IR, or OpenVINO folds them into unpinned convolutions."""
    from lightexport.exporter.openvino_pin import fold_pads

    loaded = load_model("efficientnet_lite0")
    xml = api.export(loaded, "openvino", output=tmp_path / "lite0.xml", fuse=True, input_size=96).path
    core = ov.Core()
    model = core.read_model(str(xml))
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96), dtype=np.float32)
    before = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    pads = [op for op in model.get_ops() if op.get_type_name() == "Pad"]
    assert len(pads) == 5 and any(p.input_value(1).get_node().get_type_name() != "Constant" for p in pads)
    assert fold_pads(model) == 5  # the stem and the four stride-2 depthwise convolutions
    types = [op.get_type_name() for op in model.get_ops()]
    assert "Pad" not in types and "ShapeOf" not in types
    assert np.array_equal(core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0], before)


@needs_bf16
def test_a_same_padded_stem_stays_pinned(tmp_path):
    loaded = load_model("efficientnet_lite0")
    result = api.export(loaded, "openvino", output=tmp_path / "lite0_int8.xml", fuse=True, precision="int8",
                        input_size=96, calib=write_sample_photos(tmp_path / "photos"), calib_size=8, progress=False)
    assert "zero Pads folded into the convolutions they feed" in result.notes
    census = layer_precisions(_compiled(result.path, "bf16"))
    assert census.get("f32") == 3 and "bf16" not in census, census  # the stem too (it ran bf16 before the fold)
