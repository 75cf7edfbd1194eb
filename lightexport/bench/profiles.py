"""Named CPU settings that stand in for phone-class hardware on a workstation or CI machine.

Thread count and batch are set in-process. ISA caps are environment variables that the
kernel libraries read once, when they load, so a capped profile only takes effect in a
fresh process: ``Profile.env`` is what that subprocess must be started with.

Which runtime honours which cap (checked on this project's x86-64 CI machine):
- PyTorch eager: ``ATEN_CPU_CAPABILITY=default`` drops ATen's AVX2/AVX-512 kernels
  (``torch.backends.cpu.get_cpu_capability()`` reports ``DEFAULT``); its oneDNN convolutions
  honour ``ONEDNN_MAX_CPU_ISA``.
- OpenVINO CPU: its oneDNN honours ``ONEDNN_MAX_CPU_ISA`` (the runtime model's primitive types
  turn from ``brgconv_avx512_*`` into ``jit_sse42_*``); ``OV_CPU_MAX_ISA`` caps OpenVINO's own
  kernels in builds that honour it, so both are set.
- ONNX Runtime CPU: MLAS picks kernels from CPUID and has no cap; its numbers under a capped
  profile are those of the full ISA, and reports say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lightexport.errors import UsageError

SSE_128BIT = {"ONEDNN_MAX_CPU_ISA": "SSE41", "OV_CPU_MAX_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}
UNCAPPED_RUNTIMES = ("onnxruntime",)


@dataclass(frozen=True)
class Profile:
    name: str
    threads: int
    input_sizes: tuple[int, ...] = (160, 224)
    batch: int = 1
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def isa_capped(self) -> bool:
        return bool(self.env)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("mobile-1t", 1, description="one big core: 1 thread, batch 1"),
        Profile("mobile-2t", 2, description="two big cores: 2 threads, batch 1"),
        Profile("mobile-1t-128bit", 1, env=SSE_128BIT, description="1 thread, SIMD capped at 128 bits like NEON"),
        Profile("mobile-2t-128bit", 2, env=SSE_128BIT, description="2 threads, SIMD capped at 128 bits like NEON"),
    ]
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}") from None
