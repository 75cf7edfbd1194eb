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

The arm64 profiles run ARM's own kernels instead: their worker starts in an aarch64 Python under
user-mode emulation (``launcher``, see :mod:`lightexport.bench.arm64`), which has the runtimes but
no PyTorch, so the parent computes the reference outputs and the worker judges against them.
Their latency is the emulator's and is reported as such, never as a device's.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from lightexport.errors import UsageError, did_you_mean

SSE_128BIT = {"ONEDNN_MAX_CPU_ISA": "SSE41", "OV_CPU_MAX_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}
ARM64 = "lightexport.bench.arm64:launcher"
#: Runtimes the emulated arm64 Python can run: those whose record names aarch64 wheels (see ``runtimes`` below).
EMULATED = "emulated"


@dataclass(frozen=True)
class Profile:
    name: str
    threads: int
    input_sizes: tuple[int, ...] = (160, 224)
    batch: int = 1
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    #: "module:function" giving (interpreter command, extra env) for the worker; None: this Python
    launcher: str | None = None
    #: runtimes the worker's Python has; None: all (PyTorch included); EMULATED: those with aarch64 wheels
    runtimes: tuple[str, ...] | str | None = None
    #: cap on timed runs per cell (an emulated run takes seconds and measures the emulator)
    max_runs: int | None = None

    @property
    def isa_capped(self) -> bool:
        return bool(self.env)

    @property
    def emulated(self) -> bool:
        return self.launcher is not None

    def available_runtimes(self) -> tuple[str, ...] | None:
        if self.runtimes == EMULATED:
            from lightexport.bench.arm64 import emulated_runtimes

            return emulated_runtimes()
        return self.runtimes

    def runs(self, backend: str) -> bool:
        """Whether this profile's Python can run ``backend`` (a runtime name, or torch-fused)."""
        runtimes = self.available_runtimes()
        return runtimes is None or backend in runtimes

    def reexec(self, argv: list[str], module: str = "lightexport.cli") -> int | None:
        """Run ``python -m module *argv`` again under this profile's variables when this process lacks them.

        ISA caps bind only when the kernel libraries load, so a capped command must start afresh
        with them set; returns that run's exit code, or None when this process already has them.
        """
        import os
        import subprocess

        if all(os.environ.get(k) == v for k, v in self.env.items()):
            return None
        return subprocess.run([sys.executable, "-m", module, *argv], env={**os.environ, **self.env}).returncode

    def interpreter(self, on_step: Callable[[str], None] | None = None) -> tuple[list[str], dict[str, str]]:
        """The command starting this profile's Python and the environment it adds (set up on first use)."""
        if self.launcher is None:
            return [sys.executable], dict(self.env)
        module, _, function = self.launcher.partition(":")
        command, env = getattr(importlib.import_module(module), function)(on_step)
        return command, {**self.env, **env}


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("mobile-1t", 1, description="one big core: 1 thread, batch 1"),
        Profile("mobile-2t", 2, description="two big cores: 2 threads, batch 1"),
        Profile("mobile-1t-128bit", 1, env=SSE_128BIT, description="1 thread, SIMD capped at 128 bits like NEON"),
        Profile("mobile-2t-128bit", 2, env=SSE_128BIT, description="2 threads, SIMD capped at 128 bits like NEON"),
        *(Profile(f"arm64-{n}t", n, input_sizes=(224,), launcher=ARM64, runtimes=EMULATED, max_runs=3,
                  description=f"ARM kernels: aarch64 Cortex-A76 emulated by qemu, {n} thread(s); "
                              "numerics judged, latency only the emulator's") for n in (1, 2)),
    ]
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"unknown profile {name!r}{did_you_mean(name, PROFILES)} (choose from "
                         f"{', '.join(PROFILES)})") from None
