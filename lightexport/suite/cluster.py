"""``lightexport suite --ray``: the suite's matrix as Ray tasks, on this machine or on a cluster.

The work is the serial suite's (:mod:`lightexport.suite.run`), cut where Ray can spread it:

- a **build** (model x runtime x precision x input size) exports one artifact, once, taking as many cores as the
  smallest node has (an export's thread pools would otherwise share cores with timed cells). Its files travel
  through Ray's object store to the cells that need them; nothing is re-exported per cell;
- a **reference** (model x weights x size) computes the unfused PyTorch outputs for the profiles whose Python
  has no PyTorch (emulated arm64), once, as the serial suite's parent does;
- a **cell** (artifact x profile) depends on its build (and reference), asks Ray for as many cores as its
  profile times on, so that timed cells never share a core with one another or with a build, and runs the
  serial suite's worker, for that one cell, in the profile's interpreter on its node (an emulated profile's
  sysroot is set up once per node, under a lock, and cached there).

A cell whose Ray worker dies (SIGKILL, a lost node) is retried by Ray; a small actor counts each cell's attempts,
so the report marks the retries. A cell that fails in the worker is a result, not an exception: it is reported
once, never retried. Results are returned in the matrix's order, so the report reads like a serial run's,
latencies aside, and every latency names the node and CPU it was measured on.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lightexport.bench.profiles import get_profile
from lightexport.errors import BackendUnavailableError, UsageError
from lightexport.precision import Precision
from lightexport.suite.build import ModelCache, artifact_key, build_artifacts
from lightexport.suite.matrix import TORCH_FUSED, Cell
from lightexport.suite.report import verdict
from lightexport.suite.run import ResidentWorker, WorkerDied, in_matrix_order, prepare
from lightexport.suite.worker import reference_for, save_reference

#: Retries of a task whose worker process died (Ray's own retries; a deterministic failure is never retried).
RETRIES = 2
INSTALL_HINT = "pip install 'lightexport[ray]'"


class WorkerLost(Exception):
    """The cell's worker was killed (SIGKILL: the OOM killer, a user, a node going away): Ray runs the cell again."""


def _ray():
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError(f"suite --ray needs Ray: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None) -> bool:
    """Start a Ray instance on this machine (``None``/``local``) or join a cluster (``auto``, ``HOST:PORT``,
    ``ray://HOST:PORT``); True when the instance is this run's own, to be shut down with it."""
    ray = _ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine on a user's behalf
    local = address in (None, "", "local")
    options = dict(include_dashboard=False, num_cpus=os.cpu_count()) if local else {}
    try:
        ray.init(address="local" if local else address, log_to_driver=False, logging_level=logging.ERROR, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendUnavailableError(f"cannot start or reach Ray at {address or 'local'}: {line}") from None
    return local


def pack(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative name: an artifact with its companions (.bin, sidecars)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def unpack(files: dict[str, bytes], directory: Path) -> Path:
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return directory


def _node() -> str:
    """The node a task runs on: its address and Ray's id (nodes on one host share the address)."""
    import ray

    context = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{context.get_node_id()[:8]}"


def _local_cell(cell: dict, checkpoint: bytes | None, tmp: Path) -> Cell:
    """The cell with its checkpoint written on this node (the user's path exists on the driver's machine only)."""
    if checkpoint is None:
        return Cell.from_dict(cell)
    digest = hashlib.sha256(checkpoint).hexdigest()[:16]  # one path per content: a resident worker loads it once
    path = tmp / "weights" / digest / Path(cell["weights"]).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(checkpoint)
    return Cell.from_dict({**cell, "weights": str(path)})


def _build(cell: dict, calib: dict | None, calib_size: int, checkpoint: bytes | None,
           cores: int) -> tuple[dict, dict[str, bytes]]:
    """One artifact: a summary for the driver's progress line, and its files for the cells (two objects, so the
    driver never fetches the files)."""
    import torch

    torch.set_num_threads(cores)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lightexport-build-") as tmp:
        tmp = Path(tmp)
        local = _local_cell(cell, checkpoint, tmp)
        calib_dir = unpack(calib, tmp / "calib") if calib is not None else None
        (tmp / "artifact").mkdir()
        built = build_artifacts([local], tmp / "artifact", calib_dir, calib_size)[artifact_key(local)]
        summary = {"skipped": built.skipped, "error": built.error, "node": _node(),
                   "seconds": time.monotonic() - started, "name": built.path.name if built.path else None}
        return summary, (pack(tmp / "artifact") if built.path else {})


def _reference(cell: dict, inputs: int, images: int, checkpoint: bytes | None, cores: int) -> bytes:
    """The unfused model's outputs as the .npz a worker without PyTorch judges against."""
    import torch

    torch.set_num_threads(cores)
    with tempfile.TemporaryDirectory(prefix="lightexport-reference-") as tmp:
        local = _local_cell(cell, checkpoint, Path(tmp))
        path = Path(tmp) / "reference.npz"
        save_reference(path, *reference_for(local.to_dict(), ModelCache(), inputs, images))
        return path.read_bytes()


def _cell(cell: dict, summary: dict | None, files: dict[str, bytes] | None, reference: bytes | None,
          checkpoint: bytes | None, job: dict, attempts) -> dict:
    """Run one cell in its profile's worker on this node; the result carries the node, its CPU and the attempt."""
    import ray

    from lightexport.suite.run import this_node

    attempt = ray.get(attempts.start.remote(Cell.from_dict(cell).key))
    if summary and (summary["skipped"] or summary["error"]):
        return {"cell": cell, "skipped": summary["skipped"], "error": summary["error"]}
    node, cpu = _node(), this_node()[1]
    with tempfile.TemporaryDirectory(prefix="lightexport-cell-") as tmp:
        tmp = Path(tmp)
        entry: dict = {"cell": _local_cell(cell, checkpoint, _resident_dir()).to_dict(), "path": None}
        if summary:
            entry["path"] = str(unpack(files, tmp / "artifact") / summary["name"])
        if reference is not None:
            (tmp / "reference.npz").write_bytes(reference)
            entry["reference"] = str(tmp / "reference.npz")
        results: list[dict] = []
        try:
            _resident(cell["profile"]).run({**job, "cells": [entry]}, lambda started: None, results.append)
        except WorkerDied as exc:
            if exc.returncode == -signal.SIGKILL:
                raise WorkerLost(str(exc)) from None
            return {"cell": cell, "error": str(exc), "node": node, "cpu": cpu, "attempts": attempt}
    result = {**results[0], "cell": cell, "node": node, "cpu": cpu}
    if attempt > 1:
        result["attempts"] = attempt
    return result


#: This Ray worker process's resident suite workers, by profile (see :class:`ResidentWorker`).
_RESIDENT: dict[str, ResidentWorker] = {}


def _resident_dir() -> Path:
    """A folder for the life of this Ray worker process (checkpoints its resident workers load)."""
    if "dir" not in _KEPT:
        _KEPT["dir"] = Path(tempfile.mkdtemp(prefix="lightexport-ray-worker-"))
        atexit.register(shutil.rmtree, _KEPT["dir"], True)
    return _KEPT["dir"]


_KEPT: dict[str, Path] = {}


def _resident(profile: str) -> ResidentWorker:
    if profile not in _RESIDENT or not _RESIDENT[profile].alive:
        command, env = get_profile(profile).interpreter()  # an emulator is set up here once per node
        _RESIDENT[profile] = ResidentWorker(command, env)
    return _RESIDENT[profile]


class Attempts:
    """How many times each cell started: more than once means Ray retried it after its worker died."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def start(self, key: str) -> int:
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


def _nodes(ray) -> list[dict]:
    return [{"id": n["NodeID"], "cpus": int(n["Resources"]["CPU"])} for n in ray.nodes()
            if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]


def run_suite_ray(
    cells: list[Cell],
    workdir: Path,
    calib: Path | None = None,
    calib_size: int = 16,
    inputs: int = 8,
    runs: int = 10,
    images: int = 0,
    address: str | None = None,
    on_result: Callable[[dict], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[dict]:
    """The serial suite's results for ``cells``, computed as Ray tasks (see the module's docstring)."""
    ray = _ray()
    step = on_step or (lambda text: None)
    results: list[dict] = []

    def record(result: dict) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    own = connect(address)
    pending: dict = {}
    try:
        nodes = _nodes(ray)
        if not nodes:
            raise BackendUnavailableError("the Ray cluster has no node with a CPU to run cells on")
        cores, widest = min(n["cpus"] for n in nodes), max(n["cpus"] for n in nodes)
        for name in dict.fromkeys(c.profile for c in cells):
            if get_profile(name).threads > widest:
                raise UsageError(f"profile {name} times on {get_profile(name).threads} cores of one node; the "
                                 f"largest node of this Ray cluster has {widest}")
        step(f"ray: {len(nodes)} node(s), {sum(n['cpus'] for n in nodes)} cores; a build takes {cores}, "
             "a cell its profile's threads")
        _, unrunnable = prepare(cells, on_step)  # here first: a missing emulator fails before any task
        for cell, reason in unrunnable.items():
            record({"cell": cell.to_dict(), "skipped": reason})
        todo = [c for c in cells if c not in unrunnable]
        checkpoints = {w: ray.put(Path(w).read_bytes()) for w in dict.fromkeys(c.weights for c in todo) if w}
        calib_files = ray.put(pack(calib)) if calib and any(c.precision is Precision.INT8 for c in todo) else None

        build = ray.remote(num_cpus=cores, num_returns=2, max_retries=RETRIES)(_build)
        reference = ray.remote(num_cpus=cores, max_retries=RETRIES)(_reference)
        run_cell = ray.remote(max_retries=RETRIES, retry_exceptions=[WorkerLost])(_cell)
        attempts = ray.remote(num_cpus=0)(Attempts).remote()
        builds: dict[tuple, tuple] = {}
        references: dict[tuple, object] = {}
        for cell in todo:
            key = artifact_key(cell)
            if cell.backend != TORCH_FUSED and key not in builds:
                int8 = cell.precision is Precision.INT8
                builds[key] = build.remote(cell.to_dict(), calib_files if int8 else None, calib_size,
                                           checkpoints.get(cell.weights), cores)
                pending[builds[key][0]] = ("build", cell)
        for cell in todo:
            profile = get_profile(cell.profile)
            ref = None
            if not profile.runs(TORCH_FUSED):  # no PyTorch in this profile's Python: its reference is a task
                rkey = (cell.model, cell.weights, cell.input_size)
                if rkey not in references:
                    references[rkey] = reference.remote(cell.to_dict(), inputs, images,
                                                        checkpoints.get(cell.weights), cores)
                ref = references[rkey]
            summary, files = builds.get(artifact_key(cell), (None, None))
            job = {"threads": profile.threads, "inputs": inputs, "images": images,
                   "runs": min(runs, profile.max_runs) if profile.max_runs else runs}
            task = run_cell.options(num_cpus=profile.threads).remote(
                cell.to_dict(), summary, files, ref, checkpoints.get(cell.weights), job, attempts)
            pending[task] = ("cell", cell)

        done_builds = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            kind, cell = pending.pop(ready[0])
            what = f"{cell.model} @{cell.input_size}"
            if kind == "build":
                done_builds += 1
                try:
                    summary = ray.get(ready[0])
                    outcome = summary["error"] or summary["skipped"] or f"{summary['seconds']:.0f} s"
                    where = f" on {summary['node']}"
                except ray.exceptions.RayError as exc:
                    outcome, where = _last_line(exc), ""
                step(f"build {done_builds}/{len(builds)}: {what} -> {cell.backend} {cell.precision}{where} "
                     f"({outcome})")
                continue
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # its worker died every time, or a bug in a task
                result = {"cell": cell.to_dict(), "error": f"lost after {RETRIES + 1} attempts: {_last_line(exc)}"}
            record(result)
            step(f"cell {len(results)}/{len(cells)}: {what} {cell.backend} {cell.precision} on {cell.profile}, "
                 f"node {result.get('node', '-')}: {verdict(result)}")
    except KeyboardInterrupt:
        for ref in pending:  # force: their workers are killed, and the suite workers die with them
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - a task that just finished cannot be cancelled; the rest still are
                pass
        raise
    finally:
        if own:
            ray.shutdown()
    return in_matrix_order(cells, results)


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "ray::"))]
    return (useful or lines or [type(exc).__name__])[-1][:300]
