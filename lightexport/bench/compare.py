"""Compare artifacts against PyTorch eager on identical settings, with the machine's ceiling alongside.

A speed number means little alone: it is always reported as a ratio against eager
PyTorch measured in the same run, and as a share of the sgemm ceiling on the same
threads (how much of the CPU's attainable throughput the model actually gets).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from lightexport.backends import BACKENDS
from lightexport.bench.ceiling import matmul_gflops
from lightexport.bench.timing import Timing, measure_interleaved
from lightexport.loading import LoadedModel
from lightexport.model_defs.complexity import complexity

BASELINE = "pytorch-eager"


@dataclass
class BenchReport:
    model: str
    threads: int
    batch: int
    input_size: int
    gmacs: float
    ceiling_gflops: float
    timings: dict[str, Timing] = field(default_factory=dict)
    profile: str | None = None

    def speedup(self, name: str) -> float:
        return self.timings[BASELINE].p50 / self.timings[name].p50

    def effective_gflops(self, name: str) -> float:
        return 2 * self.gmacs * self.batch / (self.timings[name].p50 / 1000.0)

    def ceiling_share(self, name: str) -> float:
        return self.effective_gflops(name) / self.ceiling_gflops

    def render(self, console: Console) -> None:
        profile = f", profile {self.profile}" if self.profile else ""
        title = (f"{self.model} @ {self.input_size}px, batch {self.batch}, {self.threads} thread(s){profile}; "
                 f"sgemm ceiling {self.ceiling_gflops:.1f} GFLOP/s")
        table = Table("artifact", "p50 ms", "p90 ms", "img/s", "vs eager", "GFLOP/s", "of ceiling", title=title)
        for name, t in self.timings.items():
            table.add_row(name, f"{t.p50:.2f}", f"{t.p90:.2f}", f"{t.throughput:.1f}", f"{self.speedup(name):.2f}x",
                          f"{self.effective_gflops(name):.1f}", f"{self.ceiling_share(name):.1%}")
        console.print(table)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "profile": self.profile, "threads": self.threads, "batch": self.batch,
            "input_size": self.input_size, "gmacs": self.gmacs, "ceiling_gflops": self.ceiling_gflops,
            "results": [
                {**t.to_dict(), "speedup_vs_eager": self.speedup(n), "effective_gflops": self.effective_gflops(n),
                 "ceiling_share": self.ceiling_share(n)}
                for n, t in self.timings.items()
            ],
        }


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _eager(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.inference_mode():
            return model(x)

    return call


def benchmark(
    loaded: LoadedModel,
    artifacts: Sequence[Path],
    *,
    threads: int = 1,
    batch: int = 1,
    input_size: int | None = None,
    warmup: int = 5,
    runs: int = 30,
    profile: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BenchReport:
    """Time eager PyTorch (the unfused model) and every artifact, interleaved, on ``threads`` threads."""
    from lightexport.parity import runner_for

    size = input_size or loaded.spec.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    _, gmacs = complexity(loaded.spec, size, **loaded.build_kwargs)
    with torch_threads(threads), contextlib.ExitStack() as stack:
        candidates: dict[str, Callable[[], object]] = {BASELINE: _eager(loaded.module, torch.from_numpy(x))}
        for path in artifacts:
            runner = stack.enter_context(runner_for(path, threads=threads))
            feed = {runner.input_names[0]: x}
            candidates[Path(path).name] = lambda r=runner, f=feed: r.infer(f)
        timings = measure_interleaved(candidates, warmup=warmup, runs=runs, batch=batch, progress=progress)
        ceiling = matmul_gflops(threads)
    return BenchReport(loaded.name, threads, batch, size, gmacs, ceiling, timings, profile)


ARTIFACT_SUFFIXES = tuple(suffix for b in BACKENDS.values() for suffix in b.suffixes)
#: What a model name brings to a benchmark: its fused artifact in each CPU format.
CPU_FORMATS = ("onnx", "openvino")


def group_targets(targets: Sequence[str], model: str | None, weights: str | None, workdir: Path,
                  input_size: int | None = None) -> list[tuple[LoadedModel, list[Path]]]:
    """Group bench targets by the model they come from; a model name brings its own fused ONNX and IR."""
    from lightexport import api

    groups: dict[str, tuple[LoadedModel, list[Path]]] = {}
    for target in targets:
        if Path(target).suffix.lower() in ARTIFACT_SUFFIXES:
            reference, paths = api.reference_for(target, model, weights), [Path(target)]
        else:
            reference = api.load(target, weights)
            paths = [
                api.export(reference, fmt, output=workdir / f"{reference.name}{BACKENDS[fmt].suffix}", fuse=True,
                           input_size=input_size).path
                for fmt in CPU_FORMATS
            ]
        groups.setdefault(reference.name, (reference, []))[1].extend(paths)
    return list(groups.values())
