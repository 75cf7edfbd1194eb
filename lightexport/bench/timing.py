"""Latency measured the way a comparison should be: warmed up, interleaved, summarized by percentiles.

Interleaving (one call of each candidate per round, in a fresh seeded random order each round)
spreads frequency scaling, cache and noisy-neighbour effects evenly over all candidates, so
their ratios are trustworthy even on a shared 2-core machine where absolute times are not.
The order is shuffled rather than rotated: rotation keeps the cyclic order, so each candidate
always ran right after the same other one and inherited its cache state. With six sessions
(two ONNX files, four OpenVINO entries) that made two ONNX files of the same graph differ
by 3-4 % (MobileNetV3-Small 0.96x, IQR 0.95-0.99); shuffled, the same pair measured 0.97x
with quartiles 0.94-1.03, inside the spread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass
class Timing:
    name: str
    samples_ms: list[float]
    batch: int = 1

    @property
    def p50(self) -> float:
        return float(np.percentile(self.samples_ms, 50))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples_ms, 90))

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return self.batch * 1000.0 / self.p50

    def to_dict(self) -> dict:
        return {"name": self.name, "p50_ms": self.p50, "p90_ms": self.p90, "throughput_ips": self.throughput,
                "runs": len(self.samples_ms), "batch": self.batch}


def measure_interleaved(
    candidates: Mapping[str, Callable[[], object]],
    warmup: int = 5,
    runs: int = 30,
    batch: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Timing]:
    """Time each zero-argument callable ``runs`` times, one call of each per round."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(0)
    for round_ in range(runs):
        order = [names[i] for i in rng.permutation(len(names))]
        for name in order:
            start = time.perf_counter()
            candidates[name]()
            samples[name].append((time.perf_counter() - start) * 1000.0)
        if progress:
            progress(round_ + 1, runs)
    return {name: Timing(name, samples[name], batch) for name in names}


@dataclass(frozen=True)
class RatioSpread:
    """How much faster ``candidate`` ran than ``baseline``: the ratio of medians, and the spread of
    the per-round ratios (each round times both back to back, so a round's ratio shares its noise)."""

    median_ratio: float
    q25: float
    q75: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {"ratio": self.median_ratio, "q25": self.q25, "q75": self.q75, "min": self.low, "max": self.high}


def ratio_spread(baseline: Timing, candidate: Timing) -> RatioSpread:
    """``baseline / candidate`` latency: above 1 means ``candidate`` is faster."""
    rounds = np.asarray(baseline.samples_ms) / np.asarray(candidate.samples_ms)
    q25, q75 = np.percentile(rounds, [25, 75])
    return RatioSpread(baseline.p50 / candidate.p50, float(q25), float(q75), float(rounds.min()), float(rounds.max()))
