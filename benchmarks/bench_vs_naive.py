"""lightexport's fp32 artifacts vs the naive export paths, per registered model, 1 thread, interleaved.

    python benchmarks/bench_vs_naive.py                                  # every registered model
    python benchmarks/bench_vs_naive.py --models fasternet_t0,ghostnetv2_100 --runs 40
    python benchmarks/bench_vs_naive.py --write-readme --json vs_naive.json

The naive paths are what a user gets without lightexport (lightexport/bench/naive.py):
``torch.onnx.export`` with its defaults -> ONNX Runtime, and ``ov.convert_model`` -> OpenVINO
pinned to f32 (like for like with lightexport's fp32 IR; OpenVINO's default on bf16-capable CPUs
is bf16, which ``lightexport bench`` shows separately). Each model's four artifacts run in one
interleaved loop; a ratio is the naive median latency over lightexport's (> 1: lightexport is
faster), with the interquartile range and min/max of the per-round ratios. ``--write-readme``
replaces the table between the markers in README.md.

Each naive file also runs as a second session (A/A control): two sessions of one identical file
differ by up to ~3 % here (0.984x, IQR 0.976-0.998, in one 60-round run), which is the resolution
of any ratio in the table. A cell is marked slower (**<1**) when naive was faster in at least
three rounds out of four (upper quartile of the per-round ratios below 1) and by more than the
A/A's distance from 1 (or half its IQR, and at least RESOLUTION: one A/A control is one more
session, and sessions differ by up to ~3 % from one to the next); a median below 1 within that
is ~1. Each model's rounds are split over three sets of fresh sessions, so no one session's luck
decides a ratio. The ONNX Runtime column
also says what ONNX Runtime's optimizer made of both graphs (node counts; the export guard keeps
lightexport's at most the naive one's, with every fused kernel), so a ~1 cell can be read against
the structure. Exits 1 if any cell is slower.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from rich.console import Console

from lightexport import api
from lightexport.backends import BACKENDS, INTERCHANGE, backend_for_path
from lightexport.bench.compare import CONTROL_SUFFIX, benchmark, naive_for
from lightexport.bench.naive import NaiveArtifact
from lightexport.cpu import cpu_label
from lightexport.exporter.onnx_guard import ort_profile
from lightexport.fileio import atomic_output
from lightexport.loading import load_model
from lightexport.model_defs import list_models

README = Path(__file__).resolve().parents[1] / "README.md"
#: README tables: the server runtimes over every registered model, the phone runtimes over the mobile families
TABLES = {"server": ("<!-- bench-vs-naive:start -->", "<!-- bench-vs-naive:end -->", "onnx,openvino"),
          "phone": ("<!-- bench-vs-naive-phone:start -->", "<!-- bench-vs-naive-phone:end -->",
                    "onnx,executorch,tflite,ncnn,mnn")}  # ONNX Runtime fp32 beside the phone runtimes, same rounds


def cpu_name() -> str:
    return cpu_label()


def build(name: str, workdir: Path, formats: list[str]) -> dict:
    """Export lightexport's fp32 artifact in each format and each runtime's naive one; count what ONNX Runtime makes
    of both ONNX (when ONNX is among the formats)."""
    loaded = load_model(name)
    ours = [api.export(loaded, fmt, output=workdir / f"{name}{BACKENDS[fmt].suffix}", fuse=True).path
            for fmt in formats]
    naive = naive_for(loaded, ours, workdir)
    nodes = {}
    if INTERCHANGE in formats:
        nodes = {"ours": ort_profile(onnx.load(str(ours[formats.index(INTERCHANGE)]))).nodes,
                 "naive": ort_profile(onnx.load(str(next(a.path for a in naive if a.runtime == "onnxruntime")))).nodes}
    return {"ours": [str(p) for p in ours], "naive": [[a.label, str(a.path), a.runtime] for a in naive],
            "ort_nodes": nodes}


def time_artifacts(name: str, built: dict, runs: int, budget_s: float, threads: int) -> dict:
    """Time the built artifacts, each format pinned to its own precision. Runs in a fresh process (see ``measure``)."""
    loaded = load_model(name)
    size = loaded.spec.input_size
    ours = [Path(p) for p in built["ours"]]
    naive = [NaiveArtifact(label, Path(path), runtime) for label, path, runtime in built["naive"]]
    nodes = built["ort_nodes"]
    # Rounds of big models take seconds: fit the run count to the budget after a one-round probe.
    probe = benchmark(loaded, ours, threads=threads, warmup=1, runs=1, naive=naive, settings=("pinned",),
                      eager=False, control=True)
    round_s = sum(t.p50 for t in probe.timings.values()) / 1000.0
    n = max(8, min(runs, int(budget_s / max(round_s, 1e-6))))
    # The rounds are split over SESSIONS sets of fresh sessions: one session of a file can run a few
    # per cent faster or slower than the next for its whole life, and a ratio from one pair of sessions
    # would measure that luck (see RESOLUTION).
    reports = [benchmark(loaded, ours, threads=threads, warmup=3, runs=max(4, n // SESSIONS), naive=naive,
                         settings=("pinned",), eager=False, control=True) for _ in range(SESSIONS)]
    report = reports[0]
    for other in reports[1:]:
        for label, timing in other.timings.items():
            report.timings[label].samples_ms.extend(timing.samples_ms)
    n = len(next(iter(report.timings.values())).samples_ms)
    row = {"model": name, "input_size": size, "runs": n, "ms": {k: t.p50 for k, t in report.timings.items()},
           "ort_nodes": nodes}
    for path in ours:
        runtime = backend_for_path(path).runtime
        label = next(k for k in report.naive_of if k == path.name or k.startswith(f"{path.name} @"))
        naive_label = report.naive_of[label]
        (control_label,) = [k for k, v in report.naive_of.items() if v == naive_label and CONTROL_SUFFIX in k]
        row[runtime] = {**report.vs_naive(label).to_dict(), "ours_ms": report.timings[label].p50,
                        "naive_ms": report.timings[naive_label].p50,
                        "control": report.vs_naive(control_label).to_dict(), "setting": label[len(path.name):].strip()}
    return row


def measure(name: str, workdir: Path, runs: int, budget_s: float, threads: int, formats: list[str]) -> dict:
    """Build in this process, time in a fresh one.

    Timed in the process that had just exported (torch tracing, onnxsim, the guard's own ONNX
    Runtime sessions), lightexport's ONNX Runtime session ran 3-7 % slower than the naive one on
    the small models (MobileNetV3-Small 0.95x) although ONNX Runtime's kernels for it summed to
    less (1796 vs 1817 us per image); in a fresh process the same two files measured 0.98-1.00x.
    """
    built = build(name, workdir, formats)
    manifest = workdir / f"{name}.json"
    manifest.write_text(json.dumps(built))
    child = subprocess.run([sys.executable, __file__, "--time-one", name, "--manifest", str(manifest),
                            "--runs", str(runs), "--budget-s", str(budget_s), "--threads", str(threads)],
                           capture_output=True, text=True)
    if child.returncode != 0:
        raise SystemExit(f"timing {name} failed: {child.stderr.strip().splitlines()[-1:]}")
    row = json.loads(child.stdout.strip().splitlines()[-1])
    for f in workdir.iterdir():
        f.unlink()
    return row


#: Two sessions of one file differ by this much from session to session on this machine (A/A ratios
#: of ONNX Runtime sessions of MobileNeXt, MobileNetV3 and ShuffleNetV2 in single runs: 0.984, 1.011,
#: 1.016, 1.025, 1.033), beyond what one run's A/A control shows.
RESOLUTION = 0.03
#: fresh sets of sessions each model's rounds are split over
SESSIONS = 3


def noise(s: dict) -> float:
    """The smallest ratio distance from 1 this run can resolve: its A/A control's, at least RESOLUTION."""
    c = s.get("control")
    return max(RESOLUTION, abs(1.0 - c["ratio"]), (c["q75"] - c["q25"]) / 2) if c else RESOLUTION


def slower(s: dict) -> bool:
    """Naive faster in three rounds of four, and by more than it is faster than itself."""
    return s["q75"] < 1.0 and s["ratio"] < 1.0 - noise(s)


def _cell(s: dict) -> str:
    flag = " **<1**" if slower(s) else " ~1" if s["ratio"] < 1.0 else ""
    control = f"; A/A {s['control']['ratio']:.2f}" if s.get("control") else ""
    return (f"{s['ratio']:.2f}x{flag} ({s['q25']:.2f}-{s['q75']:.2f}; {s['min']:.2f}-{s['max']:.2f}{control}) "
            f"| {s['ours_ms']:.2f} / {s['naive_ms']:.2f}")


def markdown(rows: list[dict], cpu: str, threads: int, versions: str, formats: list[str]) -> str:
    runtimes = [BACKENDS[f].runtime for f in formats]
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {cpu}, {threads} thread, batch 1, fp32 (each runtime pinned to "
             f"fp32), {versions}; shared machine, so read the spread. Ratio = naive median latency / lightexport's "
             "(>1: faster), then the IQR and min-max of the per-round ratios; ms = lightexport / naive medians. "
             "A/A: the naive file against a second session of itself, the noise floor of this run. "
             "**<1**: naive faster in 3 rounds of 4 and by more than the A/A (at least 3 %); ~1: below 1, within it. "
             + ("ORT nodes: what ONNX Runtime's optimizer leaves of lightexport's / the naive graph. "
                if INTERCHANGE in formats else "")
             + "Naive: " + "; ".join(f"{BACKENDS[f].label}: {BACKENDS[f].naive_label}" for f in formats) + ".",
             "",
             "| model | px | rounds | " + " | ".join(f"{BACKENDS[f].label} vs naive | ms"
                                                     + (" | ORT nodes" if f == INTERCHANGE else "") for f in formats)
             + " |",
             "|---|---|---|" + "---|---|" * len(formats) + ("---|" if INTERCHANGE in formats else "")]
    for r in rows:
        nodes = r.get("ort_nodes", {})
        cells = []
        for fmt, runtime in zip(formats, runtimes):
            cells.append(_cell(r[runtime]) if runtime in r else "- | -")
            if fmt == INTERCHANGE:
                cells.append(f"{nodes.get('ours', '-')} / {nodes.get('naive', '-')}")
        lines.append(f"| `{r['model']}` | {r['input_size']} | {r['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme(table: str, readme: Path = README, which: str = "server") -> None:
    START, END = TABLES[which][:2]  # noqa: N806
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with atomic_output(readme) as tmp:
        Path(tmp).write_text(f"{head}{START}\n{table}\n{END}{tail}")


def versions(formats: list[str]) -> str:
    import importlib.metadata

    import torch

    found = []
    for fmt in formats:
        try:  # the runtime's import name finds its distribution (importlib.metadata normalizes - and _)
            found.append(f"{BACKENDS[fmt].label} {importlib.metadata.version(BACKENDS[fmt].module)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join([f"torch {torch.__version__}", *found])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated (default: every registered model)")
    parser.add_argument("--runs", type=int, default=40, help="rounds per model at most")
    parser.add_argument("--budget-s", type=float, default=40.0, help="seconds of timing per model (fewer rounds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", choices=list(TABLES), default="server",
                        help="which README table: server runtimes (every model) or phone runtimes")
    parser.add_argument("--formats", help="comma-separated formats (default: the table's)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--time-one", help=argparse.SUPPRESS)  # internal: the fresh timing process
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_one:
        row = time_artifacts(args.time_one, json.loads(args.manifest.read_text()), args.runs, args.budget_s,
                             args.threads)
        print(json.dumps(row))
        return 0
    console = Console()
    formats = (args.formats or TABLES[args.table][2]).split(",")
    formats = [f for f in formats if BACKENDS[f].available()]
    runtimes = [BACKENDS[f].runtime for f in formats]
    names = args.models.split(",") if args.models else list_models()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-naive-") as tmp:
        for name in names:
            row = measure(name, Path(tmp), args.runs, args.budget_s, args.threads, formats)
            rows.append(row)
            console.print(f"{name}: " + ", ".join(f"{rt} {row[rt]['ratio']:.2f}x (IQR {row[rt]['q25']:.2f}-"
                                                   f"{row[rt]['q75']:.2f})" for rt in runtimes if rt in row)
                          + f", {row['runs']} rounds")
            if args.json:  # after every model: a long run that dies keeps what it measured
                args.json.write_text(json.dumps(rows, indent=2))
    table = markdown(rows, cpu_name(), args.threads, versions(formats), formats)
    console.print(table)
    if args.write_readme:
        write_readme(table, which=args.table)
    behind = [f"{r['model']} ({k})" for r in rows for k in runtimes if k in r and slower(r[k])]
    for name in behind:
        console.print(f"[red]slower than the naive path:[/] {name}")
    return 1 if behind else 0


if __name__ == "__main__":
    sys.exit(main())
