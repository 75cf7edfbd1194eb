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
) -> list[dict]:
    """Return one result per cell: parity report and latency, or why it was skipped or failed.

    Cells with a checkpoint are judged on ``images`` crops of the decision set when ``images`` > 0.
    """
    built = build_artifacts(cells, workdir, calib, calib_size)
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
        proc = subprocess.Popen([sys.executable, "-m", "lightexport.suite.worker", f.name], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if line.startswith("{"):
                record(json.loads(line))
        stderr = proc.stderr.read()
        if proc.wait() != 0:
            last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise ExportError(f"suite worker for profile {profile_name} failed: {last[0]}")
    return results
