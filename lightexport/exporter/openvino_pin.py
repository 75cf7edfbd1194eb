"""Pin an OpenVINO IR's float layers to f32, so a user's default compile runs what parity checked.

OpenVINO's CPU plugin executes float layers in bf16 by default on CPUs with AMX or
AVX512-BF16 (``INFERENCE_PRECISION_HINT``), and the hint cannot be carried by the IR: a
``runtime_options`` entry in the model's rt_info is ignored for it (tried, OpenVINO 2026.4).
What the plugin does honour is a per-layer runtime attribute, ``precise`` (the C++ class
``ov::DisableFP16Compression``, "inferred precisely in the original precision"): a layer
carrying it keeps its f32 ports when the rest of the graph is lowered (the plugin's
``EnforceInferencePrecision`` skips nodes whose ``keepOrigPrecision()`` is set from it).
OpenVINO's Python API cannot create that attribute (a string set in ``get_rt_info()`` is
neither honoured nor saved), but the IR reader builds it from ``<attribute name="precise"
version="0"/>`` in a layer's ``<rt_info>``, so it is written into the saved XML.

Why it matters for int8: an int8 IR's quantized convolutions run in int8 under any hint, but
the layers left float for accuracy (the stem and first block, ``--int8-keep``) ran in bf16 at
the default, which is where int8 error and bf16 error add up. Trained MobileNetV2 (240
decision crops; agreement with fp32 on all crops) went 92.5 % pinned f32 / 91.2 % at the bf16
default -> 92.5 / 92.5 %; EfficientNet-Lite0 93.3 / 89.6 % -> 93.3 / 93.3 % (with
:func:`fold_pads`). Cost: those layers run in f32 instead of bf16; int8 against the fp32 IR at
the bf16 default went from 1.06-1.08x to 0.97-1.04x (1 thread, AMD EPYC with AVX512-BF16).

The attribute is lost where the plugin rewrites a node (the mark is not copied to the
replacement): a MatMul becomes a FullyConnected and still runs in bf16, so this is not a way to
pin a whole fp32 IR (in an int8 IR the classifier is quantized, and the float layers left are
convolutions); and a zero Pad before a convolution (TensorFlow "same" padding, EfficientNet-Lite's
stem) is folded into a new convolution. :func:`fold_pads` does that fold in the IR itself, before
quantization, so the convolution that is pinned is the one that runs.
Runtimes older than the ``precise`` name (OpenVINO 2023) read the IR and ignore the attribute.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

#: The rt_info attribute OpenVINO's IR reader turns into ov::DisableFP16Compression.
PRECISE = {"name": "precise", "version": "0"}
#: Layer types that compute nothing to pin (constants, the graph's ends) or that the plugin folds into their
#: consumer's int8 kernel (FakeQuantize).
NOT_PINNED = frozenset({"Parameter", "Result", "Const", "FakeQuantize"})


def pin_float_layers(xml: str | Path) -> list[str]:
    """Mark every computing layer of the IR at ``xml`` (edited in place) to run in f32; returns their names.

    Only the top-level graph is walked (the bodies of Loop/If ops are not: no CNN here has them).

    Quantized layers are marked too: on x86 their int8 inputs are not float, so the mark changes
    nothing for them, and every float layer between them (an Add, a kept convolution) stays f32.
    On ARM it does change them: OpenVINO 2026.4's f16 default then runs every layer in f32 (no
    int8 kernel; decisions kept, cosine 0.997 on trained MobileNetV2), where an unmarked IR runs
    u8 convolutions between f16 FakeQuantizes at cosine 0.953; marking only the kept layers gave
    that 0.953 too. So all are marked (README, "OpenVINO int8 on ARM").
    """
    tree = ET.parse(xml)
    layers = tree.getroot().find("layers")
    pinned = []
    for layer in layers if layers is not None else []:
        if layer.get("type") in NOT_PINNED:
            continue
        rt_info = layer.find("rt_info")
        if rt_info is None:
            rt_info = ET.Element("rt_info")
            layer.insert(1 if layer.find("data") is not None else 0, rt_info)  # <data>, <rt_info>, <input>, ...
        if not any(a.get("name") == PRECISE["name"] for a in rt_info.findall("attribute")):
            ET.SubElement(rt_info, "attribute", PRECISE)
        pinned.append(layer.get("name", ""))
    tree.write(xml, xml_declaration=True, encoding="utf-8")
    return pinned


#: rt_info key of ov::pass::DisableConstantFolding
NO_FOLDING = "DisableConstantFolding_0"


def _is_integer_constant(node) -> bool:
    return node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in ("i32", "i64")


def fold_pads(model) -> int:
    """Fold constant zero Pads into the (Group)Convolutions they alone feed, as explicit pads; returns how many.

    Constant-folds first, so a static-shape export's "same" padding, computed from the input
    shape (ShapeOf, Gather, FloorMod ...), becomes the constant Pad the fold needs (with a dynamic
    input such Pads stay computed and unfolded; constant Pads fold either way). Constant folding
    runs on the whole float graph, but the only folding it is newly allowed is of integer shape
    terms (weights decompressed from fp16/int8 keep their marks).
    Exact: EfficientNet-Lite0's 5 "same" Pads (stem and stride-2 depthwise) fold with
    bit-identical outputs, and the IR drops from 472 to 246 ops.
    """
    import numpy as np
    from openvino import opset1
    from openvino.passes import ConstantFolding, Manager

    for op in model.get_ordered_ops():
        # OpenVINO's PyTorch frontend marks Convert(Constant) -> Multiply as weight decompression, and so keeps
        # it from folding, also where the constant is an i32/i64 shape term (the "same" padding arithmetic)
        if op.get_type_name() == "Convert" and _is_integer_constant(op.input_value(0).get_node()):
            info = op.get_rt_info()
            if NO_FOLDING in info:
                del info[NO_FOLDING]
    manager = Manager()
    manager.register_pass(ConstantFolding())
    manager.run_passes(model)
    folded = 0
    for conv in model.get_ordered_ops():
        if conv.get_type_name() not in ("Convolution", "GroupConvolution"):
            continue
        pad = conv.input_value(0).get_node()
        if pad.get_type_name() != "Pad" or pad.get_attributes().get("pad_mode") != "constant":
            continue
        if len(pad.output(0).get_target_inputs()) != 1:
            continue
        given = [pad.input_value(i).get_node() for i in range(1, pad.get_input_size())]
        if any(node.get_type_name() != "Constant" for node in given):
            continue
        begin, end = (given[0].get_data().astype(np.int64), given[1].get_data().astype(np.int64))
        value = given[2].get_data() if len(given) > 2 else np.zeros(1)
        if np.any(value != 0) or np.any(begin[:2] != 0) or np.any(end[:2] != 0) or np.any(begin < 0) or np.any(end < 0):
            continue  # only zero padding of the spatial dims is a convolution's own padding
        attributes = conv.get_attributes()
        if attributes.get("auto_pad", "explicit") not in ("explicit", "notset"):
            continue
        pads_begin = [int(a) + int(b) for a, b in zip(attributes["pads_begin"], begin[2:])]
        pads_end = [int(a) + int(b) for a, b in zip(attributes["pads_end"], end[2:])]
        make = opset1.convolution if conv.get_type_name() == "Convolution" else opset1.group_convolution
        replacement = make(pad.input_value(0), conv.input_value(1), attributes["strides"], pads_begin, pads_end,
                           attributes["dilations"])
        replacement.set_friendly_name(conv.get_friendly_name())
        conv.output(0).replace(replacement.output(0))
        folded += 1
    return folded


def pinned_layers(xml: str | Path) -> list[str]:
    """Names of the layers in the IR at ``xml`` that carry the ``precise`` attribute."""
    layers = ET.parse(xml).getroot().find("layers")
    return [layer.get("name", "") for layer in (layers if layers is not None else [])
            if any(a.get("name") == PRECISE["name"] for a in layer.findall("rt_info/attribute"))]
