"""Runs the cells of one CPU profile inside a subprocess started with that profile's environment.

ISA caps are read by oneDNN/ATen when they load, so they only take effect in a fresh
process; the parent starts ``python -m lightexport.suite.worker JOB.json`` with the caps set
and reads one JSON line per finished cell from stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from lightexport.bench.timing import measure_interleaved
from lightexport.parity import check_parity, make_inputs, runner_for
from lightexport.parity.runners.torch import TorchRunner
from lightexport.reparam import apply_passes
from lightexport.suite.build import ModelCache


def run_cell(cell: dict, path: str | None, threads: int, inputs: int, runs: int, models: ModelCache) -> dict:
    """Parity against the unfused model, then artifact vs eager latency, interleaved."""
    loaded = models.get(cell["model"], cell.get("weights"))
    feeds = make_inputs(loaded.spec, inputs, input_size=cell["input_size"])
    if path is None:
        runner = TorchRunner(apply_passes(loaded.module)[0], name="torch-fused")
    else:
        runner = runner_for(path, threads=threads)
    report = check_parity(runner, loaded.module, feeds, precision=cell["precision"], progress=False)
    x = torch.from_numpy(feeds[0])

    def eager() -> object:
        with torch.inference_mode():
            return loaded.module(x)

    with runner:
        feed = {runner.input_names[0]: feeds[0]}
        timings = measure_interleaved({"eager": eager, "artifact": lambda: runner.infer(feed)}, warmup=3, runs=runs)
    return {
        "cell": cell,
        "parity": report.to_dict(),
        "latency_ms": timings["artifact"].p50,
        "eager_ms": timings["eager"].p50,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(job["threads"])
    models = ModelCache()
    for item in job["cells"]:
        try:
            result = run_cell(item["cell"], item["path"], job["threads"], job["inputs"], job["runs"], models)
        except Exception as exc:  # one broken cell must not hide the others' results
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result = {"cell": item["cell"], "error": f"{type(exc).__name__}: {reason}"}
        print(json.dumps(result, default=_jsonable), flush=True)


def _jsonable(value: object) -> object:
    return float(value) if isinstance(value, np.floating) else str(value)


if __name__ == "__main__":
    main()
