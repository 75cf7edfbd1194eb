"""``lightexport suite``: build the artifacts, run every profile in its own subprocess, judge every cell."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
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

    interpreters, unrunnable = prepare(cells, on_step)
    for cell, reason in unrunnable.items():
        record({"cell": cell.to_dict(), "skipped": reason})
    cells_here = [c for c in cells if c not in unrunnable]
    built = build_artifacts(cells_here, workdir, calib, calib_size, on_build=building)

    runnable: dict[str, list[dict]] = {}
    for cell in cells_here:
        art = built[artifact_key(cell)]
        if art.skipped or art.error:
            record({"cell": cell.to_dict(), "skipped": art.skipped, "error": art.error})
        else:
            runnable.setdefault(cell.profile, []).append(
                {"cell": cell.to_dict(), "path": str(art.path) if art.path else None})
    references = _References(workdir, inputs, images)
    node, cpu = this_node()
    for profile_name, items in runnable.items():
        profile = get_profile(profile_name)
        if not profile.runs(TORCH_FUSED):
            for item in items:  # this profile's Python has no PyTorch: the reference is computed here
                item["reference"] = references.path(item["cell"])
        job = {"threads": profile.threads, "inputs": inputs, "images": images, "cells": items,
               "runs": min(runs, profile.max_runs) if profile.max_runs else runs}

        def started(c: dict, profile_name: str = profile_name) -> None:
            step(f"cell {len(results) + 1}/{len(cells)}: {c['model']} @{c['input_size']} {c['backend']} "
                 f"{c['precision']} on {profile_name}")

        run_worker(*interpreters[profile_name], job, workdir, started,
                   lambda result: record({**result, "node": node, "cpu": cpu}))
    return in_matrix_order(cells, results)


def prepare(cells: list[Cell], on_step: Callable[[str], None] | None) -> tuple[dict, dict[Cell, str]]:
    """Each profile's interpreter (set up here first: an emulator that cannot be had fails in seconds, before any
    export) and, for each cell its profile's Python cannot run, why."""
    interpreters = {name: get_profile(name).interpreter(on_step) for name in dict.fromkeys(c.profile for c in cells)}
    unrunnable = {}
    for cell in cells:
        profile = get_profile(cell.profile)
        if not profile.runs(cell.backend):
            has = ", ".join(profile.available_runtimes() or ())
            unrunnable[cell] = f"profile {cell.profile} runs {has} only (its Python has no {cell.backend})"
    return interpreters, unrunnable


def in_matrix_order(cells: list[Cell], results: list[dict]) -> list[dict]:
    """Results in the order of the matrix, however they finished: serial and distributed reports read alike."""
    order = {cell.key: i for i, cell in enumerate(cells)}
    return sorted(results, key=lambda r: order[Cell.from_dict(r["cell"]).key])


def this_node() -> tuple[str, str]:
    """This machine's name and CPU model: each latency in a report says where it was measured."""
    from lightexport.cpu import cpu_description

    return platform.node() or "localhost", cpu_description()[0]


def run_worker(command: list[str], env: dict[str, str], job: dict, workdir: Path,
               on_start: Callable[[dict], None], on_result: Callable[[dict], None]) -> None:
    """Run one worker on ``job`` (its cells), telling ``on_start`` each cell it starts and ``on_result`` each result.

    Raises :class:`WorkerDied` when the worker exits unsuccessfully (a signal, a native crash). The worker dies
    with the process that started it (PR_SET_PDEATHSIG), so a killed Ray task leaves no worker timing on behind it.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=workdir, delete=False) as f:
        json.dump(job, f)
    with tempfile.TemporaryFile("w+", dir=workdir) as errors:
        # stderr to a file, not a pipe: a worker writing more than a pipe holds would block forever
        proc = subprocess.Popen(_worker_command(command, f.name), env=_worker_env(env), stdout=subprocess.PIPE,
                                stderr=errors, text=True)
        try:
            _relay(proc.stdout, on_start, on_result)
            proc.wait()
        finally:
            _stop(proc)  # interrupted (Ctrl-C, SIGTERM to this process only): no worker outlives us
        if proc.returncode != 0:
            raise _died(job, errors, proc.returncode)


def _relay(stdout, on_start: Callable[[dict], None], on_result: Callable[[dict], None]) -> bool:
    """Hand a worker's JSON lines on until its job is done (True) or its output ends (False)."""
    for line in stdout:
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if message.get("event") == "done":
            return True
        if message.get("event") == "start":
            on_start(message["cell"])
        else:
            on_result(message)
    return False


def _died(job: dict, errors, returncode: int) -> WorkerDied:
    """The error for a worker that ended badly, with the last line it wrote to stderr (a file: ``errors``)."""
    errors.seek(0)
    last = [ln for ln in errors.read().strip().splitlines() if ln.strip()][-1:] or ["no output"]
    return WorkerDied(f"suite worker for profile {job['cells'][0]['cell']['profile']} failed: {last[0]}", returncode)


def _worker_command(interpreter: list[str], *args: str) -> list[str]:
    return [sys.executable, "-c", _DIE_WITH_PARENT, *interpreter, "-m", "lightexport.suite.worker", *args]


def _worker_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env, "LIGHTEXPORT_PARENT_PID": str(os.getpid())}


class ResidentWorker:
    """A worker that stays up between jobs (``worker --serve``), for one profile's interpreter and environment.

    A Ray worker process keeps one per profile it has run: each cell then costs its own work, not a new Python
    importing PyTorch and the runtimes and loading the model again (about 6 s a cell on a 2-core EPYC). It dies
    with its parent (PR_SET_PDEATHSIG), like every suite worker.
    """

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="lightexport-worker-"))
        self.errors = open(self.workdir / "stderr", "w+")  # a file, not a pipe: a full pipe would block the worker
        self.proc = subprocess.Popen(_worker_command(command, "--serve"), env=_worker_env(env), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errors, text=True)
        atexit.register(shutil.rmtree, self.workdir, True)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, job: dict, on_start: Callable[[dict], None], on_result: Callable[[dict], None]) -> None:
        """Like :func:`run_worker`; raises :class:`WorkerDied` if the process ends before the job does."""
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        if not _relay(self.proc.stdout, on_start, on_result):
            self.proc.wait()
            raise _died(job, self.errors, self.proc.returncode)


class WorkerDied(ExportError):
    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


#: Run before the worker's own interpreter (exec'd, so it is the worker): ask the kernel to SIGKILL it when its
#: parent dies, then check the parent did not die first. Survives exec; plain ctypes, no preexec_fn in a
#: threaded parent (a Ray worker).
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "parent = int(os.environ.get('LIGHTEXPORT_PARENT_PID', '0'))\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "if parent and os.getppid() != parent: sys.exit(137)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


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
