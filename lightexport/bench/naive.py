"""The paths a user takes without lightexport, built the way they would build them.

A toolkit's speed claim means little against eager PyTorch alone: the honest baseline is
what each runtime gives with its own one-line defaults on the same weights. Each format's
record names its naive path (``naive``: a function beside its exporter, e.g.
``torch.onnx.export(model, (x,), path)`` for ONNX Runtime, ``ov.convert_model(model,
example_input=x)`` for OpenVINO) and the label bench shows for it. All start from the
unfused module: folding BatchNorm is lightexport's job, not the user's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lightexport.backends import BACKENDS, resolve
from lightexport.loading import LoadedModel


@dataclass(frozen=True)
class NaiveArtifact:
    label: str
    path: Path
    runtime: str


def naive_label(runtime: str) -> str:
    return next(b.naive_label for b in BACKENDS.values() if b.runtime == runtime)


def build_naive(loaded: LoadedModel, batch: int, input_size: int, workdir: Path,
                runtimes: tuple[str, ...]) -> list[NaiveArtifact]:
    """The naive artifacts for ``runtimes`` (those whose record has a naive path), traced at ``batch`` x
    ``input_size`` (static, as the defaults do)."""
    example = torch.zeros(batch, 3, input_size, input_size)
    stem = f"{loaded.name}_naive_b{batch}_{input_size}"
    built = []
    for record in BACKENDS.values():
        if record.runtime in runtimes and record.naive:
            path = resolve(record.naive)(loaded, example, workdir / f"{stem}{record.suffix}")
            built.append(NaiveArtifact(record.naive_label, Path(path), record.runtime))
    return built
