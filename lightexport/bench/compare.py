"""Compare artifacts against PyTorch eager on identical settings, with the machine's ceilings alongside.

A speed number means little alone: it is always reported as a ratio against eager PyTorch
measured in the same run, and as a share of the ceiling of the precision its layers ran in
(:mod:`lightexport.bench.ceiling`: fp32, bf16, int8, fp16 where the CPU has it, each the best
library's, on the same threads), with the roofline bound: whether the artifact is nearer the
compute ceiling (2 x MACs / ceiling) or the memory one (bytes moved / bandwidth). A share above
100 % says the ceiling is wrong (a faster library than those measured), and is flagged.
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

from lightexport.backends import BACKENDS, backend_for_path, is_artifact
from lightexport.bench.ceiling import OVER, Ceilings, ceilings, judged_precision
from lightexport.bench.naive import NaiveArtifact
from lightexport.bench.timing import RatioSpread, Timing, measure_interleaved, ratio_spread
from lightexport.loading import LoadedModel
from lightexport.model_defs.complexity import complexity
from lightexport.precision import Precision

BASELINE = "pytorch-eager"


@dataclass(frozen=True)
class Entry:
    """One timed candidate: how to run it and what its ratio is taken against."""

    label: str
    path: Path | None
    runtime: str  # a record's runtime name ("onnxruntime", ...)
    runner_kwargs: dict = field(default_factory=dict)
    naive: bool = False
    setting: str | None = None  #: the run setting's tag ("f32", "default"); None for one-setting runtimes

    @property
    def pair_key(self) -> tuple[str, object]:
        """Entries with the same key are compared like with like (runtime and run setting)."""
        return self.runtime, self.setting


#: Bytes per activation and weight against fp32's, by the precision an artifact's layers ran in: an int8 network
#: moves a quarter of the bytes (its few float layers and scales make this a lower bound, as the roofline is).
ELEMENT_SHARE = {"fp32": 1.0, "bf16": 0.5, "fp16": 0.5, "int8": 0.25}


@dataclass
class BenchReport:
    model: str
    threads: int
    batch: int
    input_size: int
    gmacs: float
    machine: Ceilings
    timings: dict[str, Timing] = field(default_factory=dict)
    profile: str | None = None
    #: artifact label -> the naive baseline it is compared with (same runtime, same precision setting)
    naive_of: dict[str, str] = field(default_factory=dict)
    #: label -> the precision the runtime actually executed in, where it is not the artifact's own
    runs_as: dict[str, str] = field(default_factory=dict)
    #: label -> the precision whose ceiling judges it (what its compute layers ran in)
    judged_as: dict[str, str] = field(default_factory=dict)
    #: bytes one inference moves at least in fp32 (activations written and read, weights read once)
    bytes_moved: float = 0.0

    @property
    def ceiling_gflops(self) -> float:
        return self.machine.of("fp32").gflops or 0.0

    def ceiling(self, name: str):
        return self.machine.of(self.judged_as.get(name, "fp32"))

    def roofline_ms(self, name: str) -> tuple[float, str]:
        """The least latency the roofline allows (ms) and which roof sets it ("compute" or "memory")."""
        ceiling = self.ceiling(name).gflops or self.ceiling_gflops
        compute = 2 * self.gmacs * self.batch / ceiling * 1000.0
        moved = self.bytes_moved * ELEMENT_SHARE.get(self.judged_as.get(name, "fp32"), 1.0)
        memory = moved / (self.machine.bandwidth_gbs * 1e9) * 1000.0 if self.machine.bandwidth_gbs else 0
        return (compute, "compute") if compute >= memory else (memory, "memory")

    def speedup(self, name: str) -> float:
        return self.timings[BASELINE].p50 / self.timings[name].p50

    def vs_naive(self, name: str) -> RatioSpread | None:
        """How much faster ``name`` ran than its naive baseline (>1: lightexport is faster)."""
        naive = self.naive_of.get(name)
        return ratio_spread(self.timings[naive], self.timings[name]) if naive else None

    def effective_gflops(self, name: str) -> float:
        return 2 * self.gmacs * self.batch / (self.timings[name].p50 / 1000.0)

    def ceiling_share(self, name: str) -> float:
        """The share of the ceiling of the precision ``name``'s layers ran in."""
        return self.effective_gflops(name) / (self.ceiling(name).gflops or self.ceiling_gflops)

    def render(self, console: Console) -> None:
        profile = f", profile {self.profile}" if self.profile else ""
        roofs = ", ".join(f"{p} {c.gflops:.0f} {'GOP/s' if p == 'int8' else 'GFLOP/s'} ({c.library}, {c.kernel})"
                          for p, c in self.machine.ceilings.items() if c.gflops)
        flags = ", ".join(self.machine.flags) or "no listed SIMD flags"
        title = (f"{self.model} @ {self.input_size}px, batch {self.batch}, {self.threads} thread(s){profile}; "
                 f"{self.machine.cpu} ({flags}); ceilings: {roofs}; memory {self.machine.bandwidth_gbs:.1f} GB/s")
        table = Table("artifact", "runs as", "p50 ms", "p90 ms", "img/s", "vs eager", "vs naive (IQR)", "GFLOP/s",
                      "of ceiling", "roofline", title=title)
        over = []
        for name, t in self.timings.items():
            naive = self.vs_naive(name)
            share = self.ceiling_share(name)
            if share > OVER:
                over.append(name)
            bound, roof = self.roofline_ms(name)
            table.add_row(name, self.runs_as.get(name, ""), f"{t.p50:.2f}", f"{t.p90:.2f}", f"{t.throughput:.1f}",
                          f"{self.speedup(name):.2f}x",
                          f"{naive.median_ratio:.2f}x ({naive.q25:.2f}-{naive.q75:.2f})" if naive else "",
                          f"{self.effective_gflops(name):.1f}",
                          f"{share:.1%} of {self.judged_as.get(name, 'fp32')}" + (" (!)" if share > OVER else ""),
                          f"{bound:.2f} ms {roof} ({bound / t.p50:.0%})")
        console.print(table)
        if over:
            console.print(f"(!) above the ceiling: {', '.join(over)}: a library faster than those measured for that "
                          "precision exists here; the ceiling is wrong, not the model fast", highlight=False)
        console.print("roofline: the least latency the compute ceiling or the memory bandwidth allows, which of "
                      "them sets it, and that bound's share of the measured p50", highlight=False)
        if self.naive_of:
            console.print("vs naive: the naive path's median latency / this artifact's (>1: faster than the naive "
                          "path); IQR of the per-round ratios")

    def to_dict(self) -> dict:
        def row(name: str, t: Timing) -> dict:
            naive = self.vs_naive(name)
            bound, roof = self.roofline_ms(name)
            return {**t.to_dict(), "speedup_vs_eager": self.speedup(name),
                    "effective_gflops": self.effective_gflops(name), "ceiling_share": self.ceiling_share(name),
                    "ceiling_precision": self.judged_as.get(name, "fp32"), "roofline_ms": bound, "bound_by": roof,
                    "runs_as": self.runs_as.get(name),
                    "naive_baseline": self.naive_of.get(name), "vs_naive": naive.to_dict() if naive else None}

        return {
            "model": self.model, "profile": self.profile, "threads": self.threads, "batch": self.batch,
            "input_size": self.input_size, "gmacs": self.gmacs, "ceiling_gflops": self.ceiling_gflops,
            "machine": self.machine.to_dict(), "bytes_moved": self.bytes_moved,
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


#: ``--settings`` choices: for runtimes that pick a precision of their own (OpenVINO's bf16 default), which
#: run settings each artifact is timed in; "f32" is the old ``--ov-precision f32`` spelling of "pinned".
SETTING_CHOICES: dict[str, tuple[str, ...]] = {"pinned": ("pinned",), "f32": ("pinned",), "default": ("default",),
                                              "both": ("pinned", "default")}


#: label suffix of a naive baseline's second session (``benchmark(control=True)``)
CONTROL_SUFFIX = " (again)"


def _entries(path: Path, label: str, settings: Sequence[str], naive: bool = False) -> list[Entry]:
    """One entry per run setting asked for: the artifact's precision pinned, the runtime's default, or both
    (runtimes with one setting get one entry whatever is asked)."""
    from lightexport.artifacts import read_artifact_metadata
    from lightexport.parity.settings import run_settings

    backend = backend_for_path(path)
    made = Precision.FP32 if naive else Precision.parse(read_artifact_metadata(path).get("precision"))
    found = run_settings(backend, made)
    if len(found) == 1 and found[0].tag is None:
        return [Entry(label, path, backend.runtime, naive=naive)]
    entries = []
    for setting in found:
        if ("pinned" if setting.pinned else "default") in settings:
            options = {k: v for k, v in setting.runner_options.items() if k != "threads"}
            entries.append(Entry(f"{label} @{setting.tag}", path, backend.runtime, options, naive, setting.tag))
    return entries


def _runs_as(runner: object, entry: Entry) -> str:
    """What an entry's compute layers ran in, where its runner keeps a census ("bf16 x53", "u8 x50, f32 x3").

    The census, not the resolved precision hint: an int8 IR's layers run u8 under any hint, and
    the float layers it pins stay f32 under the bf16 default.
    """
    census = getattr(runner, "layer_precisions", None)
    if census:
        return ", ".join(f"{precision} x{count}" for precision, count in census.items())
    return getattr(runner, "execution_precision", "") if entry.setting else ""


def _judged_precision(entry: Entry, runs_as: str) -> str:
    """The precision whose ceiling an entry is judged against: what most of its compute layers ran in."""
    from lightexport.artifacts import read_artifact_metadata

    made = "fp32" if entry.naive else read_artifact_metadata(entry.path).get("precision", "fp32")
    census = dict(part.rsplit(" x", 1) for part in runs_as.split(", ") if " x" in part)
    return judged_precision(made, census, runs_as)


def _bytes_moved(loaded: LoadedModel, size: int, batch: int) -> float:
    """What one inference moves at least: every layer's output written and read once, and the weights read once."""
    from lightexport.exporter.memory import activation_bytes

    counted = activation_bytes(loaded.module, size, batch, loaded.spec.channels)
    weights = sum(p.numel() * p.element_size() for p in loaded.module.parameters())
    return 2.0 * (counted[0] if counted else 0) + weights


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
    settings: Sequence[str] = ("pinned",),
    eager: bool = True,
    control: bool = False,
) -> BenchReport:
    """Time eager PyTorch (the unfused model), every artifact and every naive baseline, interleaved.

    Runtimes with a precision of their own (OpenVINO) run once per entry of ``settings``
    (``"pinned"``: the artifact's precision; ``"default"``: the runtime's); each artifact is
    paired with the naive baseline of the same runtime and setting.

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
    entries = [e for path in artifacts for e in _entries(Path(path), Path(path).name, settings)]
    entries += [e for a in naive for e in _entries(a.path, a.label, settings, naive=True)]
    if control:
        entries += [e for a in naive for e in _entries(a.path, a.label + CONTROL_SUFFIX, settings)]
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
        machine = ceilings(threads)
    runs_as = {k: v for k, v in runs_as.items() if v}
    judged = {e.label: _judged_precision(e, runs_as.get(e.label, "")) for e in entries}
    # without native fp16 arithmetic (or bf16) an artifact of that precision computes in fp32 here
    judged = {k: v if machine.of(v).gflops else "fp32" for k, v in judged.items()}
    return BenchReport(loaded.name, threads, batch, size, gmacs, machine, timings, profile, naive_of, runs_as,
                       judged, _bytes_moved(loaded, size, batch))


def cpu_formats() -> list[str]:
    """What a model name brings to a benchmark: its fused artifact in each CPU format whose runtime is here."""
    return [b.name for b in BACKENDS.values() if b.cpu and b.available()]


def group_targets(targets: Sequence[str], model: str | None, weights: str | None, workdir: Path,
                  input_size: int | None = None, batch: int = 1, formats: Sequence[str] | None = None,
                  precisions: Sequence[Precision] = (Precision.FP32,), calib: Path | None = None,
                  int8_keep: str | None = None) -> list[tuple[LoadedModel, list[Path]]]:
    """Group bench targets by the model they come from; a model name brings its own fused artifact in each of
    ``formats`` (default: every CPU format installed here) and each of ``precisions`` the format makes (int8
    calibrated on ``calib``, default the bundled photos, keeping ``int8_keep`` float, default each format's)."""
    chosen = list(formats) if formats else cpu_formats()
    from lightexport import api

    groups: dict[str, tuple[LoadedModel, list[Path]]] = {}
    for target in targets:
        if is_artifact(target):
            reference, paths = api.reference_for(target, model, weights), [Path(target)]
        else:
            reference, paths = api.load(target, weights), []
            for fmt in chosen:
                for precision in precisions:
                    if precision not in BACKENDS[fmt].precisions:
                        continue
                    options = {}
                    if precision is Precision.INT8:
                        options = {"calib": calib or _sample_photos(workdir), "calib_size": 300}
                        if int8_keep is not None:
                            options["int8_keep"] = int8_keep
                    out = workdir / f"{reference.name}{precision.tag}{BACKENDS[fmt].suffix}"
                    paths.append(api.export(reference, fmt, output=out, fuse=True, input_size=input_size,
                                            batch=batch, precision=precision, **options).path)
        groups.setdefault(reference.name, (reference, []))[1].extend(paths)
    return list(groups.values())


def _sample_photos(workdir: Path) -> Path:
    from lightexport.calib import write_sample_photos

    folder = workdir / "calibration-photos"
    return folder if folder.is_dir() else write_sample_photos(folder)


def naive_for(loaded: LoadedModel, artifacts: Sequence[Path], workdir: Path, batch: int = 1,
              input_size: int | None = None) -> list[NaiveArtifact]:
    """The naive baselines for the runtimes among ``artifacts`` (those whose record names a naive path)."""
    from lightexport.bench.naive import build_naive

    present = tuple(dict.fromkeys(backend_for_path(p).runtime for p in artifacts))
    return build_naive(loaded, batch, input_size or loaded.spec.input_size, workdir, present)
