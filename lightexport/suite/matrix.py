"""The parity matrix: which (model, backend, precision, profile, input size) cells exist.

A cell is data, so the same list drives building artifacts, running them in the right
profile subprocess, the report tables and the plots.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product

from lightexport.bench.profiles import get_profile
from lightexport.errors import UsageError
from lightexport.model_defs import get_spec

BACKENDS = ("torch-fused", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
# Precisions each backend can run on a CPU here. PyTorch eager fp16/int8 would test PyTorch, not an artifact.
SUPPORTED = {
    "torch-fused": ("fp32",),
    "onnxruntime": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "fp16", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),
}


@dataclass(frozen=True)
class Cell:
    model: str
    backend: str
    precision: str
    profile: str
    input_size: int
    weights: str | None = None  # a checkpoint path; None: the model's seeded random weights

    @property
    def key(self) -> str:
        return f"{self.model}/{self.backend}/{self.precision}/{self.profile}/{self.input_size}"

    def to_dict(self) -> dict:
        return asdict(self)


def _split(value: str | list[str], allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise UsageError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def build_matrix(models, backends, precisions, profiles, input_sizes: list[int] | None = None,
                 weights: dict[str, str] | None = None) -> list[Cell]:
    """Every supported cell of the selection; ``weights`` maps model names to checkpoints."""
    models = _split(models, None, "model")
    for name in models:
        get_spec(name)  # unknown names fail here, with suggestions
    weights = weights or {}
    stray = sorted(set(weights) - set(models))
    if stray:
        raise UsageError(f"--weights names {', '.join(stray)}, which --models does not select ({', '.join(models)})")
    backends = _split(backends, BACKENDS, "backend")
    precisions = _split(precisions, PRECISIONS, "precision")
    profiles = [get_profile(p).name for p in _split(profiles, None, "profile")]
    cells = []
    for model, backend, precision, profile in product(models, backends, precisions, profiles):
        if precision not in SUPPORTED[backend]:
            continue
        for size in input_sizes or get_profile(profile).input_sizes:
            cells.append(Cell(model, backend, precision, profile, size, weights.get(model)))
    if not cells:
        raise UsageError("the selection leaves no cell to run (e.g. torch-fused supports only fp32)")
    return cells
