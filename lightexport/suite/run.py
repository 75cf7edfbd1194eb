"""``lightexport suite``: build the artifacts, run every profile in its own subprocess, judge every cell."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from lightexport.bench.profiles import get_profile
from lightexport.errors import ExportError
from lightexport.parity.inputs import PARITY_INPUTS
from lightexport.precision import Precision
from lightexport.suite.build import ModelCache, artifact_key, build_artifacts
from lightexport.suite.matrix import TORCH_FUSED, Cell
from lightexport.suite.worker import reference_for, save_reference


def run_suite(
    cells: list[Cell],
    workdir: Path,
    calib: Path | None = None,
    calib_size: int = 16,
    inputs: int = PARITY_INPUTS,
    runs: int = 10,
    images: int = 0,
    on_result: Callable[[dict], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[dict]:
    """Return one result per cell: parity report and latency, or why it was skipped or failed.

    Cells with a checkpoint are judged on ``images`` crops of the decision set when ``images`` > 0.
    ``on_step`` hears what starts next, one line each: every artifact build, then every cell.
    Every profile's worker is the same module, started by the profile's interpreter (an emulated
    one sets itself up first, telling ``on_step``); where that Python has no PyTorch, the
    reference outputs are computed here and handed to the worker in the job.
    """

    def step(text: str) -> None:
        if on_step:
            on_step(text)

    def building(index: int, count: int, cell: Cell) -> None:
        calibrating = f", calibrating on {calib_size} images" if cell.precision is Precision.INT8 else ""
        step(f"build {index}/{count}: {cell.model} @{cell.input_size} -> {cell.backend} {cell.precision}{calibrating}")

    results: list[dict] = []

    def record(result: dict) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    # Interpreters first: an emulator that cannot be had fails in seconds, before any export.
    interpreters = {name: get_profile(name).interpreter(on_step) for name in dict.fromkeys(c.profile for c in cells)}
    unrunnable = [c for c in cells if not get_profile(c.profile).runs(c.backend)]
    for cell in unrunnable:
        has = ", ".join(get_profile(cell.profile).available_runtimes() or ())
        record({"cell": cell.to_dict(),
                "skipped": f"profile {cell.profile} runs {has} only (its Python has no {cell.backend})"})
    built = build_artifacts([c for c in cells if c not in unrunnable], workdir, calib, calib_size, on_build=building)

    runnable: dict[str, list[dict]] = {}
    for cell in cells:
        if cell in unrunnable:
            continue
        art = built[artifact_key(cell)]
        if art.skipped or art.error:
            record({"cell": cell.to_dict(), "skipped": art.skipped, "error": art.error})
        else:
            runnable.setdefault(cell.profile, []).append(
                {"cell": cell.to_dict(), "path": str(art.path) if art.path else None})
    references = _References(workdir, inputs, images)
    for profile_name, items in runnable.items():
        profile = get_profile(profile_name)
        if not profile.runs(TORCH_FUSED):
            for item in items:  # this profile's Python has no PyTorch: the reference is computed here
                item["reference"] = references.path(item["cell"])
        command, profile_env = interpreters[profile_name]
        job = {"threads": profile.threads, "inputs": inputs, "images": images, "cells": items,
               "runs": min(runs, profile.max_runs) if profile.max_runs else runs}
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=workdir, delete=False) as f:
            json.dump(job, f)
        env = {**os.environ, **profile_env}
        with tempfile.TemporaryFile("w+", dir=workdir) as errors:
            # stderr to a file, not a pipe: a worker writing more than a pipe holds would block forever
            proc = subprocess.Popen([*command, "-m", "lightexport.suite.worker", f.name], env=env,
                                    stdout=subprocess.PIPE, stderr=errors, text=True)
            try:
                for line in proc.stdout:
                    if not line.startswith("{"):
                        continue
                    message = json.loads(line)
                    if message.get("event") == "start":
                        c = message["cell"]
                        done = len(results) + 1
                        step(f"cell {done}/{len(cells)}: {c['model']} @{c['input_size']} {c['backend']} "
                             f"{c['precision']} on {profile_name}")
                    else:
                        record(message)
                proc.wait()
            finally:
                _stop(proc)  # interrupted (Ctrl-C, SIGTERM to this process only): no worker outlives us
            errors.seek(0)
            stderr = errors.read()
        if proc.returncode != 0:
            last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise ExportError(f"suite worker for profile {profile_name} failed: {last[0]}")
    return results


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Wait for a worker that finished; end one that is still running (SIGTERM, then SIGKILL after ``grace``)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class _References:
    """Reference outputs computed in this process, one .npz per (model, weights, size), for workers without PyTorch."""

    def __init__(self, workdir: Path, inputs: int, images: int) -> None:
        self.workdir, self.inputs, self.images = workdir, inputs, images
        self.models = ModelCache()
        self.saved: dict[tuple, str] = {}

    def path(self, cell: dict) -> str:
        key = (cell["model"], cell.get("weights"), cell["input_size"])
        if key not in self.saved:
            path = self.workdir / f"reference_{cell['model']}_{cell['input_size']}_{len(self.saved)}.npz"
            save_reference(path, *reference_for(cell, self.models, self.inputs, self.images))
            self.saved[key] = str(path)
        return self.saved[key]
