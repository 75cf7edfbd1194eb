"""The machine's practical compute ceiling on the same threads the models run on.

FasterNet was designed to raise achieved FLOPS rather than cut FLOPs, so a backbone's
speed is best read as a share of what this CPU can do at all: the throughput of a
single-precision matrix product, the best case for any kernel library. The best of a
few sizes is taken, because sgemm throughput peaks at a size that depends on the caches.
"""

from __future__ import annotations

import time

import torch

SIZES = (512, 768, 1024, 1536)


def matmul_gflops(threads: int, sizes: tuple[int, ...] = SIZES, repeats: int = 5) -> float:
    """Best sgemm GFLOP/s over ``sizes`` x ``repeats`` runs with ``threads`` intra-op threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = 0.0
    try:
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)  # warm-up: thread pool, caches
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(a, b)
                best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    finally:
        torch.set_num_threads(previous)
    return best
