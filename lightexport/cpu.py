"""What this CPU can compute, read once from ``/proc/cpuinfo``: the facts exporters and reports depend on.

Exporters need it as much as ``bench`` does: x86 int8 kernels without VNNI multiply uint8
activations by int8 weights with AVX2's ``vpmaddubsw``, which adds each pair of products into a
*saturating* int16. Two products of 255 x 127 already overflow it, so full-range int8 weights give
wrong sums there, silently. Measured on a 2-core AMD EPYC with AVX2 only, trained MobileNetV2,
96 decision crops, ONNX Runtime int8: the QDQ graph computed in float (no int8 kernels) kept
92.7 % of top-1 decisions at cosine 0.9973; the same file through ONNX Runtime's int8 kernels
83.3 % at 0.9910. Weights in 7 bits ([-64, 64]: a pair stays below 32767) ran 90.6 % at 0.9960,
the int8 kernels then computing exactly what the float graph does. ONNX Runtime's documentation
names the same cure (``reduce_range``); NNCF calls it the overflow fix. VNNI (``vpdpbusd``), AMX
and ARM's dot products accumulate in int32 and never saturate.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

# the ISA flags that decide which kernels exist (AVX-512, VNNI, BF16, FP16, AMX, NEON)
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
                "amx_fp16", "f16c", "fma", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve")
# x86 flags whose int8 dot products accumulate in int32 (no int16 saturation)
INT32_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_description() -> tuple[str, list[str]]:
    """The CPU model name and its kernel-deciding ISA flags (:data:`KERNEL_FLAGS`), sorted."""
    name, flags = _read_cpuinfo()
    return name, list(flags)


@functools.cache
def _read_cpuinfo() -> tuple[str, tuple[str, ...]]:
    name, flags = platform.processor() or platform.machine(), []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            if key.strip() in ("flags", "Features") and not flags:
                flags = value.split()
    return name, tuple(sorted(f for f in flags if f in KERNEL_FLAGS))


def cpu_label() -> str:
    """``"AMD EPYC (avx2, f16c, fma)"``: how a benchmark names the CPU its figures come from."""
    name, flags = cpu_description()
    return f"{name} ({', '.join(flags) or 'no listed SIMD flags'})"


def int8_saturates(flags: tuple[str, ...] | list[str] | None = None) -> bool:
    """Whether this x86 CPU's int8 kernels add uint8 x int8 products in saturating int16 (AVX2, no VNNI).

    ``flags`` defaults to this machine's. Not x86 (no ``avx2``): False, ARM's dot products widen.
    """
    flags = _read_cpuinfo()[1] if flags is None else flags
    return "avx2" in flags and not any(f in flags for f in INT32_DOT_FLAGS)
