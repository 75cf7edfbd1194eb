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
replaces the table between the markers in README.md. Exits 1 if a median ratio is below 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from lightexport.bench.compare import OV_F32, benchmark, naive_for
from lightexport.exporter.onnx import export_onnx
from lightexport.exporter.openvino import export_openvino
from lightexport.fileio import atomic_output
from lightexport.loading import load_model
from lightexport.model_defs import list_models

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- bench-vs-naive:start -->", "<!-- bench-vs-naive:end -->"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown CPU"


def measure(name: str, workdir: Path, runs: int, budget_s: float, threads: int) -> dict:
    loaded = load_model(name)
    size = loaded.spec.input_size
    ours = [export_onnx(loaded, workdir / f"{name}.onnx", fuse=True).path,
            export_openvino(loaded, workdir / f"{name}.xml", fuse=True).path]
    naive = naive_for(loaded, ours, workdir)
    # Rounds of big models take seconds: fit the run count to the budget after a one-round probe.
    probe = benchmark(loaded, ours, threads=threads, warmup=1, runs=1, naive=naive, ov_precisions=(OV_F32,),
                      eager=False)
    round_s = sum(t.p50 for t in probe.timings.values()) / 1000.0
    n = max(8, min(runs, int(budget_s / max(round_s, 1e-6))))
    report = benchmark(loaded, ours, threads=threads, warmup=3, runs=n, naive=naive, ov_precisions=(OV_F32,),
                       eager=False)
    row = {"model": name, "input_size": size, "runs": n, "ms": {k: t.p50 for k, t in report.timings.items()}}
    for label, runtime in ((ours[0].name, "onnxruntime"), (f"{ours[1].name} @f32", "openvino")):
        spread = report.vs_naive(label)
        row[runtime] = {**spread.to_dict(), "ours_ms": report.timings[label].p50,
                        "naive_ms": report.timings[report.naive_of[label]].p50}
    for f in workdir.iterdir():
        f.unlink()
    return row


def _cell(s: dict) -> str:
    flag = " **<1**" if s["ratio"] < 1.0 else ""
    return (f"{s['ratio']:.2f}x{flag} ({s['q25']:.2f}-{s['q75']:.2f}; {s['min']:.2f}-{s['max']:.2f}) "
            f"| {s['ours_ms']:.2f} / {s['naive_ms']:.2f}")


def markdown(rows: list[dict], cpu: str, threads: int, versions: str) -> str:
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {cpu}, {threads} thread, batch 1, fp32, {versions}; "
             "shared machine, so read the spread. Ratio = naive median latency / lightexport's (>1: faster), "
             "then the IQR and min-max of the per-round ratios; ms = lightexport / naive medians.",
             "",
             "| model | px | rounds | ONNX Runtime vs naive | ms | OpenVINO f32 vs naive | ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['model']}` | {r['input_size']} | {r['runs']} | {_cell(r['onnxruntime'])} "
                     f"| {_cell(r['openvino'])} |")
    return "\n".join(lines)


def write_readme(table: str, readme: Path = README) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with atomic_output(readme) as tmp:
        Path(tmp).write_text(f"{head}{START}\n{table}\n{END}{tail}")


def versions() -> str:
    import onnxruntime
    import openvino
    import torch

    return f"torch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}, OpenVINO {openvino.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated (default: every registered model)")
    parser.add_argument("--runs", type=int, default=40, help="rounds per model at most")
    parser.add_argument("--budget-s", type=float, default=40.0, help="seconds of timing per model (fewer rounds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    console = Console()
    names = args.models.split(",") if args.models else list_models()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-naive-") as tmp:
        for name in names:
            row = measure(name, Path(tmp), args.runs, args.budget_s, args.threads)
            rows.append(row)
            o, v = row["onnxruntime"], row["openvino"]
            console.print(f"{name}: ORT {o['ratio']:.2f}x (IQR {o['q25']:.2f}-{o['q75']:.2f}), "
                          f"OpenVINO f32 {v['ratio']:.2f}x (IQR {v['q25']:.2f}-{v['q75']:.2f}), {row['runs']} rounds")
            if args.json:  # after every model: a long run that dies keeps what it measured
                args.json.write_text(json.dumps(rows, indent=2))
    table = markdown(rows, cpu_name(), args.threads, versions())
    console.print(table)
    if args.write_readme:
        write_readme(table)
    slower = [r["model"] for r in rows for k in ("onnxruntime", "openvino") if r[k]["ratio"] < 1.0]
    for name in slower:
        console.print(f"[red]slower than the naive path:[/] {name}")
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
