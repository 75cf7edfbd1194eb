"""Wall time of one suite matrix, run serially and as Ray tasks (``--ray``, a local instance), on this machine.

    python benchmarks/suite_ray.py            # 16 cells: FasterNet-T0 x {onnxruntime, openvino} x {fp32, int8}
                                              #           x {mobile-1t, mobile-1t-128bit} x {160, 224}
    python benchmarks/suite_ray.py --json out.json

Both runs build the same 8 artifacts and judge the same 16 cells; the verdicts are compared. The serial run's
progress lines split its wall time into the builds and the cells, which gives the critical path of a
distributed run on paper: builds first (each on a whole node, in parallel across nodes), then cells (one per
free core of the profile's width), plus what Ray adds per cell (measured: its start, scheduling, transfers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightexport.cpu import cpu_description  # noqa: E402
from lightexport.suite import run_matrix  # noqa: E402
from lightexport.suite.report import verdict  # noqa: E402

MATRIX = dict(models="fasternet_t0", backends="onnxruntime,openvino", precisions="fp32,int8",
              profiles="mobile-1t,mobile-1t-128bit", input_sizes=[160, 224])


def timed_run(out: Path, ray: str | None, runs: int) -> dict:
    marks: dict[str, float] = {}
    start = time.perf_counter()

    def step(text: str) -> None:
        if text.startswith("cell") and "cells" not in marks:
            marks["cells"] = time.perf_counter() - start  # serial: the builds are over when the first cell starts

    outcome = run_matrix(**MATRIX, out=out, runs=runs, on_step=step, ray=ray)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "builds_s": marks.get("cells"), "verdicts": [verdict(r) for r in outcome.results],
            "cells": [r["cell"] for r in outcome.results]}


def on_paper(serial: dict, builds: int, cells: int, nodes: int, cores: int, per_cell_start: float) -> float:
    """Expected wall time on ``nodes`` nodes of ``cores`` cores, from the serial run's phases (1-thread cells)."""
    build = serial["builds_s"] / builds
    cell = (serial["wall_s"] - serial["builds_s"]) / cells
    return math.ceil(builds / nodes) * build + math.ceil(cells / (nodes * cores)) * (cell + per_cell_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per cell")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (serial, ray, serial, ...)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"serial": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            runs["serial"].append(timed_run(Path(tmp) / f"serial{i}", None, args.runs))
            runs["ray"].append(timed_run(Path(tmp) / f"ray{i}", "local", args.runs))
    serial, ray = (sorted(r, key=lambda x: x["wall_s"])[(len(r) - 1) // 2] for r in runs.values())  # medians
    for run in runs["ray"] + runs["serial"]:
        assert run["cells"] == serial["cells"] and run["verdicts"] == serial["verdicts"], "verdicts differ"
    cells, builds = len(serial["cells"]), len({json.dumps({**c, "profile": None}) for c in serial["cells"]})
    cores = os.cpu_count() or 1
    per_cell_start = max(0.0, (ray["wall_s"] - on_paper(serial, builds, cells, 1, cores, 0.0))
                         / math.ceil(cells / cores))
    print(f"CPU: {cpu_description()[0]}, {cores} cores ({platform.machine()})")
    print(f"{cells} cells, {builds} builds; verdicts equal: {', '.join(sorted(set(serial['verdicts'])))}")
    walls = {k: ", ".join(f"{r['wall_s']:.0f}" for r in v) for k, v in runs.items()}
    print(f"wall times by round (s): serial {walls['serial']}; --ray {walls['ray']} (medians below)")
    print(f"serial: {serial['wall_s']:.0f} s ({serial['builds_s']:.0f} s of builds, "
          f"{serial['wall_s'] - serial['builds_s']:.0f} s of cells)")
    print(f"--ray (local, {cores} cores): {ray['wall_s']:.0f} s  ({serial['wall_s'] / ray['wall_s']:.2f}x serial); "
          f"~{per_cell_start:.1f} s per cell slot beyond the serial run (Ray's start, scheduling, artifact transfer)")
    print(f"on paper, nodes of {cores} cores (1-thread cells):")
    for nodes in (1, 2, 4, 8):
        expected = on_paper(serial, builds, cells, nodes, cores, per_cell_start)
        print(f"  {nodes} node(s): ~{expected:.0f} s ({serial['wall_s'] / expected:.2f}x serial)")
    if args.json:
        args.json.write_text(json.dumps({**runs, "cpu": cpu_description()[0]}, indent=2))


if __name__ == "__main__":
    main()
