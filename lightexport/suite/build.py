"""Build each artifact the matrix needs once, in the parent process, before any profile runs.

Artifacts do not depend on the CPU profile, so one build serves every profile; a build
that cannot happen here (TensorRT without a GPU) marks its cells skipped, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lightexport.backends import get_backend
from lightexport.errors import BackendUnavailableError, LightExportError
from lightexport.loading import LoadedModel, load_model
from lightexport.precision import Precision
from lightexport.suite.matrix import Cell


@dataclass
class Built:
    path: Path | None = None  # None for torch-fused, which runs in-process
    skipped: str | None = None
    error: str | None = None


class ModelCache:
    """One load per (model, checkpoint) for the length of one suite run.

    Every cell of a model shares the loaded model (exports and parity leave it unchanged),
    and loading random weights includes a forward pass measuring their BatchNorm statistics.
    Scoped to a run, not the process, so a checkpoint rewritten between runs is read again.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, str | None], LoadedModel] = {}

    def get(self, model: str, weights: str | None) -> LoadedModel:
        if (model, weights) not in self._models:
            self._models[model, weights] = load_model(model, weights)
        return self._models[model, weights]


def artifact_key(cell: Cell) -> tuple:
    return (cell.model, cell.weights, cell.backend, cell.precision, cell.input_size)


def build_artifacts(cells: list[Cell], workdir: Path, calib: Path | None, calib_size: int,
                    on_build: Callable[[int, int, Cell], None] | None = None) -> dict[tuple, Built]:
    """Export each artifact once; ``on_build(index, count, cell)`` is told before each export starts."""
    from lightexport import api

    built: dict[tuple, Built] = {}
    models = ModelCache()
    todo = list(dict.fromkeys(artifact_key(c) for c in cells if c.backend != "torch-fused"))
    for cell in cells:
        key = artifact_key(cell)
        if key in built:
            continue
        if cell.backend == "torch-fused":
            built[key] = Built()
            continue
        if on_build:
            on_build(todo.index(key) + 1, len(todo), cell)
        backend = get_backend(cell.backend)
        path = workdir / f"{cell.model}_{cell.input_size}_{cell.precision}{backend.suffix}"
        options = dict(fuse=True, input_size=cell.input_size, precision=cell.precision)
        if cell.precision is Precision.INT8:
            options.update(calib=calib, calib_size=calib_size)
        try:
            result = api.export(models.get(cell.model, cell.weights), backend.name, output=path, **options)
            built[key] = Built(result.path)
        except BackendUnavailableError as exc:
            built[key] = Built(skipped=str(exc))
        except LightExportError as exc:
            built[key] = Built(error=f"build failed: {exc}")
    return built
