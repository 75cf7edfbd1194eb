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

from lightexport.backends import backend_for_path
from lightexport.bench.timing import measure_interleaved
from lightexport.parity import check_parity, make_inputs
from lightexport.parity.inputs import decision_inputs
from lightexport.parity.runners.torch import TorchRunner
from lightexport.parity.settings import RunSetting, run_settings
from lightexport.precision import Precision
from lightexport.reparam import apply_passes
from lightexport.suite.build import ModelCache


def run_cell(cell: dict, path: str | None, threads: int, inputs: int, runs: int, models: ModelCache,
             images: int = 0) -> dict:
    """Parity against the unfused model in every setting a user may run it in, then latency vs eager, interleaved.

    Cells with a checkpoint are judged on ``images`` crops of the decision set (their decisions are
    the point); random weights on ``inputs`` photos and noise.
    """
    loaded = models.get(cell["model"], cell.get("weights"))
    if cell.get("weights") and images and not loaded.features:
        feeds = decision_inputs(loaded.spec, images, input_size=cell["input_size"])
    else:
        feeds = make_inputs(loaded.spec, inputs, input_size=cell["input_size"])
    if path is None:
        settings = [RunSetting(None, {}, Precision.parse(cell["precision"]))]
    else:
        settings = run_settings(backend_for_path(path), cell["precision"], threads=threads)
    reports = []
    for setting in settings:
        if path is None:
            runner = TorchRunner(apply_passes(loaded.module)[0], name="torch-fused")
        else:
            runner = backend_for_path(path).make_runner(path, **setting.runner_options)
        report = check_parity(runner, loaded.module, feeds, precision=setting.precision, progress=False)
        report.execution = setting.label
        reports.append(report)
    report = reports[0]
    report.also.extend(reports[1:])
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
        "latency_setting": settings[-1].label,  # the runtime's defaults where they differ: what users run
        "eager_ms": timings["eager"].p50,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(job["threads"])
    models = ModelCache()
    for item in job["cells"]:
        try:
            result = run_cell(item["cell"], item["path"], job["threads"], job["inputs"], job["runs"], models,
                              job.get("images", 0))
        except Exception as exc:  # one broken cell must not hide the others' results
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result = {"cell": item["cell"], "error": f"{type(exc).__name__}: {reason}"}
        print(json.dumps(result, default=_jsonable), flush=True)


def _jsonable(value: object) -> object:
    return float(value) if isinstance(value, np.floating) else str(value)


if __name__ == "__main__":
    main()
