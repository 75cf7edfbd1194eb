"""Runs the cells of one CPU profile inside a subprocess started with that profile's interpreter and environment.

ISA caps are read by oneDNN/ATen when they load, so they only take effect in a fresh
process; the parent starts ``INTERPRETER -m lightexport.suite.worker JOB.json`` with the caps set
and reads one JSON line per finished cell from stdout. The interpreter is the parent's own Python,
or, for an emulated profile (arm64), an aarch64 Python under qemu that has the runtimes but not
PyTorch: there the parent computes the reference outputs (:func:`reference_for`) and names the
file in the job, and this worker judges against them. Either way one judge (metrics, tolerances,
report) decides, so x86 and ARM cells are held to the same limits.

This module imports PyTorch only where it computes a reference or times eager, never at import.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from lightexport.backends import backend_for_path
from lightexport.bench.timing import measure_interleaved
from lightexport.parity.judge import judge
from lightexport.parity.settings import RunSetting, execution_label, run_settings
from lightexport.precision import Precision

Outputs = dict[str, np.ndarray]


def reference_for(cell: dict, models, inputs: int, images: int = 0) -> tuple[list[np.ndarray], list[Outputs]]:
    """The inputs a cell is judged on and the unfused PyTorch model's outputs for each.

    Cells with a checkpoint are judged on ``images`` crops of the decision set (their decisions are
    the point); random weights on ``inputs`` photos and noise.
    """
    from lightexport.parity.inputs import decision_inputs, make_inputs
    from lightexport.parity.runners.torch import TorchRunner

    loaded = models.get(cell["model"], cell.get("weights"))
    if cell.get("weights") and images and not loaded.features:
        feeds = decision_inputs(loaded.spec, images, input_size=cell["input_size"])
    else:
        feeds = make_inputs(loaded.spec, inputs, input_size=cell["input_size"])
    with TorchRunner(loaded.module) as runner:
        outputs = [runner.infer({runner.input_names[0]: x}) for x in feeds]
    return feeds, outputs


def save_reference(path: Path, feeds: list[np.ndarray], outputs: list[Outputs]) -> None:
    """One .npz per cell: ``feed_I`` and ``out_I_J`` (output J of input I; names kept in ``names``)."""
    arrays = {f"feed_{i}": x for i, x in enumerate(feeds)}
    arrays.update({f"out_{i}_{j}": a for i, out in enumerate(outputs) for j, a in enumerate(out.values())})
    np.savez(path, names=np.array(list(outputs[0])), **arrays)


def load_reference(path: str) -> tuple[list[np.ndarray], list[Outputs]]:
    with np.load(path) as data:
        names = [str(n) for n in data["names"]]
        count = sum(1 for k in data.files if k.startswith("feed_"))
        feeds = [data[f"feed_{i}"] for i in range(count)]
        outputs = [{n: data[f"out_{i}_{j}"] for j, n in enumerate(names)} for i in range(count)]
    return feeds, outputs


def run_cell(item: dict, threads: int, inputs: int, runs: int, models, images: int = 0) -> dict:
    """Parity against the unfused model in every setting a user may run it in, then latency (vs eager where
    PyTorch is here, interleaved). The reference comes from the job when the parent computed it."""
    cell, path = item["cell"], item["path"]
    if item.get("reference"):
        feeds, reference = load_reference(item["reference"])
    else:
        feeds, reference = reference_for(cell, models, inputs, images)
    if path is None:
        settings = [RunSetting(None, {}, Precision.parse(cell["precision"]))]
    else:
        settings = run_settings(backend_for_path(path), cell["precision"], threads=threads)
    reports = []
    for setting in settings:
        runner = _torch_fused(cell, models) if path is None else backend_for_path(path).make_runner(
            path, **setting.runner_options)
        report = judge(runner, feeds, reference, precision=setting.precision)
        report.execution = execution_label(setting, runner, Precision.parse(cell["precision"]))
        reports.append(report)
    report = reports[0]
    report.also.extend(reports[1:])
    emulated = os.environ.get("LIGHTEXPORT_EMULATED")
    with runner:
        feed = {runner.input_names[0]: feeds[0]}
        candidates = {"artifact": lambda: runner.infer(feed)}
        if not emulated:
            candidates["eager"] = _eager(cell, models, feeds[0])
        timings = measure_interleaved(candidates, warmup=1 if emulated else 3, runs=runs)
        census = getattr(runner, "layer_precisions", None)
    return {
        "cell": cell,
        "parity": report.to_dict(),
        "latency_ms": timings["artifact"].p50,
        "latency_setting": settings[-1].label,  # the runtime's defaults where they differ: what users run
        "eager_ms": timings["eager"].p50 if "eager" in timings else None,
        "emulated": emulated,  # latency under emulation measures the emulator: reported, never judged
        "ceiling": None if emulated else _ceiling_share(cell, models, threads, len(feeds[0]), timings["artifact"].p50,
                                                     census),
        "cpu_capability": _cpu_capability(),
    }


def _ceiling_share(cell: dict, models, threads: int, batch: int, latency_ms: float, census: dict | None) -> dict:
    """The cell's achieved rate as a share of this machine's ceiling in the precision its layers ran in."""
    from lightexport.bench.ceiling import ceilings, judged_precision, share
    from lightexport.model_defs.complexity import complexity

    loaded = models.get(cell["model"], cell.get("weights"))
    _, gmacs = complexity(loaded.spec, cell["input_size"], **loaded.build_kwargs)
    return share(ceilings(threads), judged_precision(cell["precision"], census), gmacs, batch, latency_ms)


def _torch_fused(cell: dict, models):
    from lightexport.parity.runners.torch import TorchRunner
    from lightexport.reparam import apply_passes

    return TorchRunner(apply_passes(models.get(cell["model"], cell.get("weights")).module)[0], name="torch-fused")


def _eager(cell: dict, models, x: np.ndarray):
    import torch

    module, tensor = models.get(cell["model"], cell.get("weights")).module, torch.from_numpy(x)

    def eager() -> object:
        with torch.inference_mode():
            return module(tensor)

    return eager


def _cpu_capability() -> str:
    if importlib.util.find_spec("torch") is None:
        return platform.machine()
    import torch

    return torch.backends.cpu.get_cpu_capability()


class _NoModels:
    """Where PyTorch is missing every cell's reference comes from the job; asking for a model is a bug."""

    def get(self, model: str, weights: str | None):
        raise RuntimeError(f"this worker has no PyTorch to load {model}; the job should carry its reference")


def main() -> None:
    """``worker JOB.json``: run one job's cells. ``worker --serve``: run each job read from stdin (one JSON line
    each), ending each with a ``done`` line, until stdin closes: a Ray worker keeps one such process per profile,
    so a cell does not pay for starting Python, PyTorch and the model again."""
    if sys.argv[1:] == ["--serve"]:
        models = None
        for line in sys.stdin:
            job = json.loads(line)
            models = _run_job(job, models)
            print(json.dumps({"event": "done"}), flush=True)
    else:
        _run_job(json.loads(Path(sys.argv[1]).read_text()))


def _run_job(job: dict, models=None):
    if importlib.util.find_spec("torch") is not None:
        import torch

        from lightexport.suite.build import ModelCache

        torch.set_num_threads(job["threads"])
        models = models or ModelCache()
    else:
        models = _NoModels()
    for item in job["cells"]:
        print(json.dumps({"event": "start", "cell": item["cell"]}), flush=True)  # the parent shows the cell
        try:
            result = run_cell(item, job["threads"], job["inputs"], job["runs"], models, job.get("images", 0))
        except Exception as exc:  # one broken cell must not hide the others' results
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result = {"cell": item["cell"], "error": f"{type(exc).__name__}: {reason}"}
        print(json.dumps(result, default=_jsonable), flush=True)
    return models


def _jsonable(value: object) -> object:
    return float(value) if isinstance(value, np.floating) else str(value)


if __name__ == "__main__":
    main()
