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

from lightexport.backends import BACKENDS, backend_for_path
from lightexport.bench.ceiling import matmul_gflops
from lightexport.bench.naive import NaiveArtifact
from lightexport.bench.timing import RatioSpread, Timing, measure_interleaved, ratio_spread
from lightexport.loading import LoadedModel
from lightexport.model_defs.complexity import complexity

BASELINE = "pytorch-eager"


@dataclass(frozen=True)
class Entry:
    """One timed candidate: how to run it and what its ratio is taken against."""

    label: str
    path: Path | None
    runtime: str  # "pytorch", "onnxruntime", "openvino", "tensorrt"
    runner_kwargs: dict = field(default_factory=dict)
    naive: bool = False

    @property
    def pair_key(self) -> tuple[str, object]:
        """Entries with the same key are compared like with like (runtime and precision setting)."""
        return self.runtime, self.runner_kwargs.get("inference_precision", "f32")


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
    #: artifact label -> the naive baseline it is compared with (same runtime, same precision setting)
    naive_of: dict[str, str] = field(default_factory=dict)
    #: label -> the precision the runtime actually executed in, where it is not the artifact's own
    runs_as: dict[str, str] = field(default_factory=dict)

    def speedup(self, name: str) -> float:
        return self.timings[BASELINE].p50 / self.timings[name].p50

    def vs_naive(self, name: str) -> RatioSpread | None:
        """How much faster ``name`` ran than its naive baseline (>1: lightexport is faster)."""
        naive = self.naive_of.get(name)
        return ratio_spread(self.timings[naive], self.timings[name]) if naive else None

    def effective_gflops(self, name: str) -> float:
        return 2 * self.gmacs * self.batch / (self.timings[name].p50 / 1000.0)

    def ceiling_share(self, name: str) -> float:
        return self.effective_gflops(name) / self.ceiling_gflops

    def render(self, console: Console) -> None:
        profile = f", profile {self.profile}" if self.profile else ""
        title = (f"{self.model} @ {self.input_size}px, batch {self.batch}, {self.threads} thread(s){profile}; "
                 f"sgemm ceiling {self.ceiling_gflops:.1f} GFLOP/s")
        table = Table("artifact", "runs as", "p50 ms", "p90 ms", "img/s", "vs eager", "vs naive (IQR)", "GFLOP/s",
                      "of ceiling", title=title)
        for name, t in self.timings.items():
            naive = self.vs_naive(name)
            table.add_row(name, self.runs_as.get(name, ""), f"{t.p50:.2f}", f"{t.p90:.2f}", f"{t.throughput:.1f}",
                          f"{self.speedup(name):.2f}x",
                          f"{naive.median_ratio:.2f}x ({naive.q25:.2f}-{naive.q75:.2f})" if naive else "",
                          f"{self.effective_gflops(name):.1f}", f"{self.ceiling_share(name):.1%}")
        console.print(table)
        if self.naive_of:
            console.print("vs naive: the naive path's median latency / this artifact's (>1: faster than the naive "
                          "path); IQR of the per-round ratios")

    def to_dict(self) -> dict:
        def row(name: str, t: Timing) -> dict:
            naive = self.vs_naive(name)
            return {**t.to_dict(), "speedup_vs_eager": self.speedup(name),
                    "effective_gflops": self.effective_gflops(name), "ceiling_share": self.ceiling_share(name),
                    "runs_as": self.runs_as.get(name),
                    "naive_baseline": self.naive_of.get(name), "vs_naive": naive.to_dict() if naive else None}

        return {
            "model": self.model, "profile": self.profile, "threads": self.threads, "batch": self.batch,
            "input_size": self.input_size, "gmacs": self.gmacs, "ceiling_gflops": self.ceiling_gflops,
            "results": [row(n, t) for n, t in self.timings.items()],
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


#: OpenVINO precision settings: pinned f32 (like for like with fp32 everywhere else), and the
#: device default (None), which on CPUs with bf16 or fp16 support runs an fp32 model in that precision.
OV_F32, OV_DEFAULT = "f32", None


#: label suffix of a naive baseline's second session (``benchmark(control=True)``)
CONTROL_SUFFIX = " (again)"


def _entries(path: Path, label: str, ov_precisions: Sequence[str | None], naive: bool = False) -> list[Entry]:
    runtime = backend_for_path(path).runtime
    if runtime != "openvino":
        return [Entry(label, path, runtime, naive=naive)]
    return [Entry(f"{label} @{'f32' if p else 'default'}", path, runtime, {"inference_precision": p}, naive)
            for p in ov_precisions]


def _runs_as(runner: object, entry: Entry) -> str:
    """What an OpenVINO entry's compute layers ran in after compiling ("bf16 x53", "u8 x50, f32 x3").

    The census, not the resolved INFERENCE_PRECISION_HINT: an int8 IR's layers run u8 under any
    hint, and the float layers it pins stay f32 under the bf16 default.
    """
    if entry.runtime != "openvino":
        return ""
    census = getattr(runner, "layer_precisions", None)
    if census:
        return ", ".join(f"{precision} x{count}" for precision, count in census.items())
    try:
        hint = runner.compiled.get_property("INFERENCE_PRECISION_HINT")
        return hint.to_string() if hasattr(hint, "to_string") else str(hint)  # ov.Type: "f32", "bf16"
    except Exception:  # a device without the property: say nothing rather than guess
        return ""


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
    naive: Sequence[NaiveArtifact] = (),
    ov_precisions: Sequence[str | None] = (OV_F32,),
    eager: bool = True,
    control: bool = False,
) -> BenchReport:
    """Time eager PyTorch (the unfused model), every artifact and every naive baseline, interleaved.

    OpenVINO IRs run once per entry of ``ov_precisions`` (``"f32"``, or None for the device
    default); each artifact is paired with the naive baseline of the same runtime and setting.

    ``control`` adds each naive baseline a second time, as a second session of the same file
    (labelled ``CONTROL_SUFFIX``), compared with the first like any artifact: its ratio is what
    this machine's timing makes of two identical files. Two ONNX Runtime sessions of one file
    measured 0.984x (IQR 0.976-0.998) in one interleaved run of 60 rounds, so a ratio that
    close to 1 says nothing about which file is faster.
    """
    from lightexport.parity import runner_for

    size = input_size or loaded.spec.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    _, gmacs = complexity(loaded.spec, size, **loaded.build_kwargs)
    entries = [e for path in artifacts for e in _entries(Path(path), Path(path).name, ov_precisions)]
    entries += [e for a in naive for e in _entries(a.path, a.label, ov_precisions, naive=True)]
    if control:
        entries += [e for a in naive for e in _entries(a.path, a.label + CONTROL_SUFFIX, ov_precisions)]
    naive_by_key = {e.pair_key: e.label for e in entries if e.naive}
    naive_of = {e.label: naive_by_key[e.pair_key] for e in entries if not e.naive and e.pair_key in naive_by_key}
    runs_as: dict[str, str] = {}
    with torch_threads(threads), contextlib.ExitStack() as stack:
        candidates: dict[str, Callable[[], object]] = {}
        if eager:
            candidates[BASELINE] = _eager(loaded.module, torch.from_numpy(x))
        for entry in entries:
            runner = stack.enter_context(runner_for(entry.path, threads=threads, **entry.runner_kwargs))
            runs_as[entry.label] = _runs_as(runner, entry)
            feed = {runner.input_names[0]: x}
            candidates[entry.label] = lambda r=runner, f=feed: r.infer(f)
        timings = measure_interleaved(candidates, warmup=warmup, runs=runs, batch=batch, progress=progress)
        ceiling = matmul_gflops(threads)
    runs_as = {k: v for k, v in runs_as.items() if v}
    return BenchReport(loaded.name, threads, batch, size, gmacs, ceiling, timings, profile, naive_of, runs_as)


ARTIFACT_SUFFIXES = tuple(suffix for b in BACKENDS.values() for suffix in b.suffixes)
#: What a model name brings to a benchmark: its fused artifact in each CPU format.
CPU_FORMATS = ("onnx", "openvino")


def group_targets(targets: Sequence[str], model: str | None, weights: str | None, workdir: Path,
                  input_size: int | None = None, batch: int = 1) -> list[tuple[LoadedModel, list[Path]]]:
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
                           input_size=input_size, batch=batch).path
                for fmt in CPU_FORMATS
            ]
        groups.setdefault(reference.name, (reference, []))[1].extend(paths)
    return list(groups.values())


#: ``--ov-precision`` choices: which INFERENCE_PRECISION_HINT settings OpenVINO entries run with.
OV_PRECISION_CHOICES: dict[str, tuple[str | None, ...]] = {"f32": (OV_F32,), "default": (OV_DEFAULT,),
                                                            "both": (OV_F32, OV_DEFAULT)}


def naive_for(loaded: LoadedModel, artifacts: Sequence[Path], workdir: Path, batch: int = 1,
              input_size: int | None = None) -> list[NaiveArtifact]:
    """The naive baselines for the runtimes among ``artifacts`` (ONNX Runtime, OpenVINO)."""
    from lightexport.bench.naive import build_naive

    present = {backend_for_path(p).runtime for p in artifacts}
    runtimes = tuple(r for r in ("onnxruntime", "openvino") if r in present)
    return build_naive(loaded, batch, input_size or loaded.spec.input_size, workdir, runtimes) if runtimes else []
