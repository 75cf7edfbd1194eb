"""The machine's ceilings on the same threads the models run on: one per precision, from the best library here.

FasterNet's own thesis is achieved throughput (FLOPS), not FLOPs, so ``bench`` reports each artifact
as a share of what this CPU can do at all in the precision its layers ran in. One ceiling is not
enough, and one library is not either: on this project's AMD EPYC (2 cores, AVX512-VNNI/BF16), one
thread, a 2048^2 GEMM ran

| GEMM | GFLOP/s (GOP/s) |
|---|---|
| ``torch.mm`` fp32 (MKL) | 100-102 |
| ONNX Runtime ``MatMul`` fp32 (MLAS) | 196 |
| ``torch.mm`` bf16 | 438-461 |
| ``torch._int_mm`` int8 | 915-951 |

so MKL's slow path on AMD made ONNX Runtime's fp32 FasterNet-S read as twice "the ceiling", and an
fp32 ceiling made every int8 share meaningless. Each precision's ceiling is the best of the libraries
present (PyTorch's MKL/oneDNN, ONNX Runtime's MLAS, OpenVINO's own kernels) over a few sizes, measured
once per machine, thread count and library versions, and cached (``~/.cache/lightexport/ceilings.json``,
``LIGHTEXPORT_CEILINGS`` moves it). fp16 has a ceiling only where the CPU computes fp16 natively.

Small networks (T0, MobileNetV2) are bound by bytes moved, not MACs, so the single-thread memory
bandwidth (a large array copy) is measured too: with it, an artifact's roofline bound is the larger
of MACs / compute ceiling and bytes / bandwidth.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lightexport.backends import resolve
from lightexport.cpu import cpu_description

SIZES = (512, 1024, 2048)
REPEATS = 5
#: What a share above the ceiling means: the ceiling is wrong (a library faster than those measured), not the model.
OVER = 1.0


@dataclass
class Ceiling:
    precision: str
    gflops: float | None  #: GFLOP/s (int8: GOP/s); None where this CPU has no such arithmetic
    library: str | None = None
    size: int | None = None
    tried: dict[str, float] = field(default_factory=dict)  #: every library's best, for the report


@dataclass
class Ceilings:
    threads: int
    cpu: str
    flags: list[str]
    versions: dict[str, str]
    ceilings: dict[str, Ceiling]
    bandwidth_gbs: float  #: single-thread memory copy bandwidth (read + write), GB/s

    def of(self, precision: str) -> Ceiling:
        return self.ceilings.get(precision) or self.ceilings["fp32"]

    def to_dict(self) -> dict:
        return {**asdict(self), "ceilings": {k: asdict(v) for k, v in self.ceilings.items()}}


def _best(run: Callable[[int], float], sizes: tuple[int, ...]) -> tuple[float, int]:
    """The best throughput ``run(n)`` reports over ``sizes`` (each ``run`` returns seconds for a 2n^3 GEMM)."""
    best, at = 0.0, 0
    for n in sizes:
        run(n)  # warm-up: thread pool, caches, kernel selection
        for _ in range(REPEATS):
            rate = 2 * n**3 / run(n) / 1e9
            if rate > best:
                best, at = rate, n
    return best, at


@contextlib.contextmanager
def torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _torch(dtype: torch.dtype, threads: int, sizes: tuple[int, ...]) -> tuple[float, int]:
    def run(n: int) -> float:
        a, b = _operands[(n, dtype)]
        start = time.perf_counter()
        if dtype == torch.int8:
            torch._int_mm(a, b)
        else:
            torch.mm(a, b)
        return time.perf_counter() - start

    _operands.clear()
    for n in sizes:
        if dtype == torch.int8:
            _operands[(n, dtype)] = (torch.randint(-127, 127, (n, n), dtype=torch.int8),
                                     torch.randint(-127, 127, (n, n), dtype=torch.int8))
        else:
            _operands[(n, dtype)] = (torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype))
    with torch_threads(threads):
        return _best(run, sizes)


_operands: dict = {}


def _probes() -> list:
    """The records whose runtime has a GEMM probe (``Backend.ceiling``), each runtime once."""
    from lightexport.backends import BACKENDS

    seen: dict[str, object] = {}
    for record in BACKENDS.values():
        if record.ceiling and record.runtime not in seen and record.available():
            seen[record.runtime] = record
    return list(seen.values())


def _versions() -> dict[str, str]:
    found = {"torch": torch.__version__}
    for record in _probes():
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[record.runtime] = importlib.metadata.version(record.module)
    return found


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Single-thread copy bandwidth in GB/s (bytes read + written), the best of ``repeats`` copies of an array far
    larger than the caches."""
    source = np.ones(megabytes << 18, dtype=np.float32)  # megabytes MiB
    target = np.empty_like(source)
    np.copyto(target, source)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = max(best, 2 * source.nbytes / (time.perf_counter() - start) / 1e9)
    return best


def measure(threads: int, sizes: tuple[int, ...] = SIZES) -> Ceilings:
    """Every precision's ceiling on ``threads`` threads, best library first; and the memory bandwidth."""
    cpu, flags = cpu_description()
    candidates: dict[str, dict[str, tuple[float, int] | None]] = {
        "fp32": {"torch (MKL/oneDNN)": _torch(torch.float32, threads, sizes)},
        "int8": {"torch _int_mm": _torch(torch.int8, threads, sizes)},
    }
    if any(f in flags for f in ("avx512_bf16", "amx_bf16", "bf16")):
        candidates["bf16"] = {"torch (oneDNN)": _torch(torch.bfloat16, threads, sizes)}
    if any(f in flags for f in ("avx512_fp16", "amx_fp16", "asimdhp")):
        candidates["fp16"] = {"torch": _torch(torch.float16, threads, sizes)}
    for record in _probes():  # each runtime's own kernels (ONNX Runtime's MLAS, OpenVINO's), from its record
        for precision, found in candidates.items():
            run = resolve(record.ceiling)(precision, threads, sizes)
            if run is not None:
                found[record.label] = _best(run, sizes)
    ceilings = {}
    for precision, found in candidates.items():
        measured = {lib: r for lib, r in found.items() if r is not None and r[0] > 0}
        if not measured:
            ceilings[precision] = Ceiling(precision, None)
            continue
        library = max(measured, key=lambda lib: measured[lib][0])
        ceilings[precision] = Ceiling(precision, measured[library][0], library, measured[library][1],
                                      {lib: round(r[0], 1) for lib, r in measured.items()})
    if "fp16" not in ceilings:
        ceilings["fp16"] = Ceiling("fp16", None)  # no native fp16 arithmetic: an fp16 artifact computes in fp32
    return Ceilings(threads, cpu, flags, _versions(), ceilings, memory_bandwidth())


def cache_path() -> Path:
    return Path(os.environ.get("LIGHTEXPORT_CEILINGS") or Path.home() / ".cache" / "lightexport" / "ceilings.json")


def ceilings(threads: int, *, refresh: bool = False) -> Ceilings:
    """The cached ceilings of this machine at ``threads`` (measured on first use: about half a minute)."""
    cpu, flags = cpu_description()
    key = hashlib.sha256(json.dumps([cpu, flags, threads, _versions()]).encode()).hexdigest()[:16]
    path = cache_path()
    stored: dict = {}
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(path.read_text())
    if not refresh and isinstance(stored.get(key), dict):
        raw = stored[key]
        with contextlib.suppress(KeyError, TypeError):
            return Ceilings(raw["threads"], raw["cpu"], raw["flags"], raw["versions"],
                            {k: Ceiling(**v) for k, v in raw["ceilings"].items()}, raw["bandwidth_gbs"])
    measured = measure(threads)
    stored[key] = measured.to_dict()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(stored, indent=1))
        os.replace(tmp, path)
    return measured


def matmul_gflops(threads: int) -> float:
    """The fp32 ceiling (kept for callers that need one number)."""
    return ceilings(threads).of("fp32").gflops or 0.0
