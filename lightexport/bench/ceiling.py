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
present (PyTorch's MKL/oneDNN, ONNX Runtime's MLAS, OpenVINO's own kernels) over a few GEMMs and convolutions, measured
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
from lightexport.bench.profiles import SSE_128BIT
from lightexport.cpu import cpu_description

#: What each library is timed on: square GEMMs (throughput peaks at a cache-dependent size) and the two dense
#: convolutions CNNs spend their MACs in, a 3x3 and a 1x1 (ONNX Runtime's NCHWc conv kernels ran 94 GFLOP/s on an
#: AVX2 EPYC against its MatMul's 86, and FasterNet-S's fp32 ONNX "beat" a GEMM-only ceiling by 2 %).
GEMMS = (512, 1024, 2048)
CONVS = ((256, 28, 3), (512, 14, 1))  # (channels in = out, side, kernel)
WORKLOADS: tuple[tuple, ...] = tuple(("gemm", n) for n in GEMMS) + tuple(("conv", *c) for c in CONVS)
REPEATS = 5
#: Seconds one run of a workload may be expected to take, at the rate this library reached so far.
SLOW = 0.5
#: The cache's layout: a change in what is measured measures again.
SCHEMA = 2
#: What a share above the ceiling means: the ceiling is wrong (a library faster than those measured), not the model.
OVER = 1.0


@dataclass
class Ceiling:
    precision: str
    gflops: float | None  #: GFLOP/s (int8: GOP/s); None where this CPU has no such arithmetic
    library: str | None = None
    kernel: str | None = None  #: the workload that reached it ("conv 3x3 256ch 28px", "gemm 1024")
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


def flops(work: tuple) -> int:
    """Operations in one run of a workload (a multiply-add counts two)."""
    if work[0] == "gemm":
        return 2 * work[1] ** 3
    _, channels, side, kernel = work
    return 2 * channels * channels * kernel * kernel * side * side


def describe(work: tuple) -> str:
    return f"gemm {work[1]}" if work[0] == "gemm" else f"conv {work[3]}x{work[3]} {work[1]}ch {work[2]}px"


def _best(runs: dict) -> tuple[float, str] | None:
    """The best throughput (GFLOP/s) any of ``runs`` ({workload: run() -> seconds}) reaches, and its workload."""
    best, at = 0.0, None
    for work, run in runs.items():
        if best and flops(work) / (best * 1e9) > SLOW:
            continue  # a slow path (torch's _int_mm without VNNI: 1.4 GOP/s) would take minutes and lose anyway
        run()  # warm-up: thread pool, caches, kernel selection
        for _ in range(REPEATS):
            rate = flops(work) / run() / 1e9
            if rate > best:
                best, at = rate, describe(work)
    return (best, at) if at else None


@contextlib.contextmanager
def torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _torch(dtype: torch.dtype, threads: int, workloads: tuple[tuple, ...]) -> tuple[float, str] | None:
    """torch's own kernels: ``mm`` (MKL; oneDNN for bf16), ``conv2d`` (oneDNN), ``_int_mm`` for int8 (no int8
    convolution outside a quantized backend)."""
    runs = {}
    for work in workloads:
        if work[0] == "gemm":
            n = work[1]
            if dtype == torch.int8:
                a, b = (torch.randint(-127, 127, (n, n), dtype=torch.int8) for _ in range(2))
                runs[work] = _timed(torch._int_mm, a, b)
            else:
                runs[work] = _timed(torch.mm, torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype))
        elif work[0] == "conv" and dtype != torch.int8:
            _, c, side, k = work
            x, w = torch.randn(1, c, side, side).to(dtype), torch.randn(c, c, k, k).to(dtype)
            runs[work] = _timed(torch.nn.functional.conv2d, x, w, None, 1, k // 2)
    with torch_threads(threads), torch.inference_mode():
        return _best(runs)


def _timed(fn: Callable, *args) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        fn(*args)
        return time.perf_counter() - start

    return run


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


def measure(threads: int, workloads: tuple[tuple, ...] = WORKLOADS) -> Ceilings:
    """Every precision's ceiling on ``threads`` threads, best library and kernel first; and the memory bandwidth."""
    cpu, flags = cpu_description()
    precisions = {"fp32": torch.float32, "int8": torch.int8}
    if any(f in flags for f in ("avx512_bf16", "amx_bf16", "bf16")):
        precisions["bf16"] = torch.bfloat16
    if any(f in flags for f in ("avx512_fp16", "amx_fp16", "asimdhp")):
        precisions["fp16"] = torch.float16
    names = {torch.float32: "torch (MKL/oneDNN)", torch.int8: "torch _int_mm", torch.bfloat16: "torch (oneDNN)",
             torch.float16: "torch"}
    candidates = {p: {names[dtype]: _torch(dtype, threads, workloads)} for p, dtype in precisions.items()}
    for record in _probes():  # each runtime's own kernels (ONNX Runtime's MLAS, OpenVINO's), from its record
        for precision, found in candidates.items():
            runs = resolve(record.ceiling)(precision, threads, workloads)
            if runs:
                found[record.label] = _best(runs)
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


#: The precisions a runtime's layer census names (OpenVINO's runtime model), as the ceilings name them.
CENSUS = {"u8": "int8", "i8": "int8", "f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def judged_precision(made: str, census: dict[str, int] | None = None, runs_as: str = "") -> str:
    """The precision whose ceiling judges an artifact: what most of its compute layers ran in where the runtime
    says (``census``: "u8" -> 57, "f32" -> 3), else the precision it ran as (bf16 under OpenVINO's default),
    else the one it was made in."""
    if census:
        top = max(census, key=lambda k: int(census[k]))
        return CENSUS.get(top, made)
    return runs_as if runs_as in ("bf16", "fp16") else made


def share(machine: Ceilings, precision: str, gmacs: float, batch: int, latency_ms: float) -> dict:
    """An artifact's achieved rate as a share of the ceiling of ``precision`` (fp32's where this CPU has no
    such arithmetic: an fp16 artifact on AVX2 computes in fp32), for a report row."""
    ceiling = machine.of(precision)
    if not ceiling.gflops:
        precision, ceiling = "fp32", machine.of("fp32")
    rate = 2 * gmacs * batch / (latency_ms / 1000.0)
    return {"precision": precision, "share": rate / ceiling.gflops, "gflops": rate, "ceiling_gflops": ceiling.gflops,
            "library": ceiling.library, "kernel": ceiling.kernel}


def cache_path() -> Path:
    return Path(os.environ.get("LIGHTEXPORT_CEILINGS") or Path.home() / ".cache" / "lightexport" / "ceilings.json")


def ceilings(threads: int, *, refresh: bool = False) -> Ceilings:
    """The cached ceilings of this machine at ``threads`` (measured on first use: 10-20 s), under this process's
    ISA caps (a 128-bit profile's worker is judged against what its capped kernels can do)."""
    cpu, flags = cpu_description()
    caps = {k: os.environ[k] for k in sorted(SSE_128BIT) if k in os.environ}  # a capped profile's own ceilings
    key = hashlib.sha256(json.dumps([SCHEMA, cpu, flags, threads, _versions(), caps]).encode()).hexdigest()[:16]
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
