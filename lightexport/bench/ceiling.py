"""The machine's practical compute ceiling on the same threads the models run on.

FasterNet was designed to raise achieved FLOPS rather than cut FLOPs, so a backbone's
speed is best read as a share of what this CPU can do at all: the throughput of a large
single-precision matrix product, the best case for any kernel library.
"""

from __future__ import annotations

import time

import torch


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 10) -> float:
    """Best-of-``repeats`` sgemm GFLOP/s with ``threads`` intra-op threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up: thread pool, caches
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2 * n**3 / best / 1e9
