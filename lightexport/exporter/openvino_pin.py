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
default -> 92.5 / 92.5 %; EfficientNet-Lite0 93.3 / 89.6 % -> 93.3 / 93.8 %. Cost: those
layers run in f32 instead of bf16, int8 vs the fp32 IR at the bf16 default 1.18x -> 1.03x
(MobileNetV2), 1.15x -> 1.05x (Lite0), 1 thread, AMD EPYC with AVX512-BF16.

The attribute is lost where the plugin rewrites a node into its own op type (a MatMul becomes
a FullyConnected and still runs in bf16), so this is not a way to pin a whole fp32 IR; in an
int8 IR the classifier is quantized, and the float layers left are convolutions.
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

    Quantized layers are marked too: their int8 inputs are not float, so the mark changes
    nothing for them, and every float layer between them (an Add, a kept convolution) stays f32.
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


def pinned_layers(xml: str | Path) -> list[str]:
    """Names of the layers in the IR at ``xml`` that carry the ``precise`` attribute."""
    layers = ET.parse(xml).getroot().find("layers")
    return [layer.get("name", "") for layer in (layers if layers is not None else [])
            if any(a.get("name") == PRECISE["name"] for a in layer.findall("rt_info/attribute"))]
