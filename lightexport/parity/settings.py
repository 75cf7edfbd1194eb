"""Which runtime settings an artifact is judged in: the one it was made for, and the one a user gets.

OpenVINO's CPU plugin executes float layers in bf16 by default on CPUs with AMX or
AVX512-BF16 (f16 on some ARM cores), whatever precision the IR was exported in; an IR can
only pin some layers (lightexport's int8 IRs pin their float layers to f32). So an OpenVINO
artifact is run twice where the two differ:
pinned to the precision it was made for (does the file compute what PyTorch computes?) and
with the runtime's defaults, judged by the limits of the coarser precision (does the
deployment that compiles it with defaults still make the same decisions?). Runtimes without
such a switch (ONNX Runtime, TensorRT) have one setting. Each run's label ends with what
the compiled model's compute layers really ran in (:func:`execution_label`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lightexport.backends import Backend, resolve
from lightexport.precision import Precision


@dataclass(frozen=True)
class RunSetting:
    label: str | None  #: e.g. "f32 pinned", "bf16: openvino's default on this CPU"; None when there is one setting
    runner_options: dict[str, Any] = field(default_factory=dict)
    precision: Precision = Precision.FP32  #: whose limits judge this setting
    #: how bench names an entry run in this setting ("f32", "default"); None when there is one setting
    tag: str | None = None
    pinned: bool = True  #: the artifact's own precision forced, rather than the runtime's choice


def run_settings(backend: Backend, made: str | Precision, *, threads: int | None = None,
                 runtime_default: bool = True) -> list[RunSetting]:
    """The settings to judge an artifact of precision ``made`` in, on this machine, the pinned one first.

    A format whose runtime picks a precision of its own names a function in its record
    (``settings``); every other format has the one setting it was made for.
    """
    made = Precision.parse(made)
    if backend.settings is None:
        return [RunSetting(None, {"threads": threads}, made)]
    return resolve(backend.settings)(made, threads=threads, runtime_default=runtime_default)


#: Census names of integer execution (OpenVINO's element types of a layer's activations).
INTEGER_RUNS = frozenset({"u8", "i8"})


def execution_label(setting: RunSetting, runner: object, made: Precision | None = None) -> str | None:
    """``setting``'s label plus the precisions the runner's compute layers ran in, where it knows them.

    E.g. "bf16: openvino's default on this CPU; layers ran u8 x49, f32 x3": the hint says
    what the plugin may lower, the census what it did (int8 layers and pinned ones stay put).
    An int8 artifact none of whose layers ran in int8 says so: OpenVINO 2026.4 on an ARMv8.2 core
    (emulated Cortex-A76) at its f16 default runs every layer of lightexport's f32-pinned int8 IR in
    f32 (decisions kept, no int8 kernels), while the f32 hint runs 17 of trained MobileNetV2's 53 in u8.
    """
    census = getattr(runner, "layer_precisions", None)
    if setting.label is None or not census:
        return setting.label
    label = f"{setting.label}; layers ran " + ", ".join(f"{precision} x{count}" for precision, count in census.items())
    if made is Precision.INT8 and not INTEGER_RUNS & set(census):
        label += " (no layer ran in int8 in this setting: it computes the int8 file in float)"
    return label


def machine_caveat(backend: Backend, made: Precision, int8_record: str | None) -> str | None:
    """Why this machine, not the file, may be what failed: an 8-bit-weight int8 artifact on a saturating x86 CPU.

    ``int8_record``: the artifact's recorded ``int8`` provenance (JSON; None where it has none, i.e.
    not made by lightexport here). lightexport writes 7-bit weights on AVX2 CPUs without VNNI
    (:func:`lightexport.cpu.int8_saturates`); a file made elsewhere with 8-bit weights computes
    wrong sums on them, and the failure is the deployment CPU's, which only a re-export fixes.
    """
    import json

    from lightexport.cpu import int8_saturates

    if made is not Precision.INT8 or not backend.int16_pairs or not int8_saturates():
        return None
    try:
        record = json.loads(int8_record) if int8_record else {}
        bits, activations = str(record.get("weight_bits", "")), str(record.get("activations", ""))
    except (ValueError, AttributeError):
        bits, activations = "", ""
    if bits == "7":
        return None
    if activations == "int8 symmetric":  # TensorRT's form keeps 8-bit weights on purpose: re-exporting changes nothing
        return ("this CPU has AVX2 but no VNNI, so its int8 kernels add weight x activation pairs in saturating "
                "int16; this is the symmetric form made for TensorRT (8-bit weights): judge it in TensorRT")
    return ("this CPU has AVX2 but no VNNI, so its int8 kernels add weight x activation pairs in saturating int16, "
            "and this artifact's int8 weights are 8-bit: export it with lightexport on a CPU like this one "
            "(it then writes 7-bit weights) or deploy it on a CPU with VNNI (avx512_vnni, avx_vnni or amx_int8)")
