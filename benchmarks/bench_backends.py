"""Eager PyTorch vs exported artifacts, interleaved in one process on the same threads.

    python benchmarks/bench_backends.py --models fasternet_t0,fasternet_s --backends onnx --threads 1
    python benchmarks/bench_backends.py --backends onnx,openvino,openvino-int8 --json bench.json

Targets (issues #2, #3): the fused ONNX model in ONNX Runtime and the fp32 OpenVINO IR each
at least 1.5x faster than eager PyTorch on 1 thread. The script prints medians and ratios
and exits 1 if a target is missed, so it can gate a release; it is not a unit test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from lightexport import api
from lightexport.bench.compare import benchmark
from lightexport.calib.samples import write_sample_photos
from lightexport.loading import load_model

TARGETS = {"onnx": 1.5, "openvino": 1.5}  # minimum speedup over eager on 1 thread


def build(backend: str, loaded, workdir: Path, calib: Path) -> Path:
    if backend == "onnx":
        return api.export(loaded, "onnx", output=workdir / f"{loaded.name}.onnx", fuse=True).path
    if backend == "openvino":
        return api.export(loaded, "openvino", output=workdir / f"{loaded.name}.xml", fuse=True).path
    if backend == "openvino-int8":
        return api.export(loaded, "openvino", output=workdir / f"{loaded.name}_int8.xml", fuse=True, precision="int8",
                          calib=calib, calib_size=len(list(calib.iterdir()))).path
    raise SystemExit(f"unknown backend {backend}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="fasternet_t0,fasternet_s")
    parser.add_argument("--backends", default="onnx,openvino,openvino-int8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console()
    reports, missed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        calib = write_sample_photos(workdir / "photos")
        for name in args.models.split(","):
            loaded = load_model(name)
            artifacts = [build(b, loaded, workdir, calib) for b in args.backends.split(",")]
            report = benchmark(loaded, artifacts, threads=args.threads, runs=args.runs)
            report.render(console)
            reports.append(report.to_dict())
            for backend, path in zip(args.backends.split(","), artifacts):
                target = TARGETS.get(backend)
                if target and args.threads == 1 and report.speedup(path.name) < target:
                    missed.append(f"{name} {backend}: {report.speedup(path.name):.2f}x < {target}x")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    for line in missed:
        console.print(f"[red]target missed:[/] {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
