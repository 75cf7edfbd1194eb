"""``lightexport suite``: build the artifacts, run every profile in its own subprocess, judge every cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from lightexport.bench.profiles import get_profile
from lightexport.errors import ExportError
from lightexport.parity.inputs import PARITY_INPUTS
from lightexport.suite.build import artifact_key, build_artifacts
from lightexport.suite.matrix import Cell


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
    """

    def step(text: str) -> None:
        if on_step:
            on_step(text)

    def building(index: int, count: int, cell: Cell) -> None:
        calibrating = f", calibrating on {calib_size} images" if cell.precision == "int8" else ""
        step(f"build {index}/{count}: {cell.model} @{cell.input_size} -> {cell.backend} {cell.precision}{calibrating}")

    built = build_artifacts(cells, workdir, calib, calib_size, on_build=building)
    results: list[dict] = []

    def record(result: dict) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    runnable: dict[str, list[dict]] = {}
    for cell in cells:
        art = built[artifact_key(cell)]
        if art.skipped or art.error:
            record({"cell": cell.to_dict(), "skipped": art.skipped, "error": art.error})
        else:
            runnable.setdefault(cell.profile, []).append(
                {"cell": cell.to_dict(), "path": str(art.path) if art.path else None})
    for profile_name, items in runnable.items():
        profile = get_profile(profile_name)
        job = {"threads": profile.threads, "inputs": inputs, "runs": runs, "images": images, "cells": items}
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=workdir, delete=False) as f:
            json.dump(job, f)
        env = {**os.environ, **profile.env}
        with tempfile.TemporaryFile("w+", dir=workdir) as errors:
            # stderr to a file, not a pipe: a worker writing more than a pipe holds would block forever
            proc = subprocess.Popen([sys.executable, "-m", "lightexport.suite.worker", f.name], env=env,
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
