"""The parity matrix: which (model, backend, precision, profile, input size) cells exist.

A cell is data, so the same list drives building artifacts, running them in the right
profile subprocess, the report tables and the plots.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from itertools import product

from lightexport.backends import BACKENDS, RUNTIMES
from lightexport.bench.profiles import get_profile
from lightexport.errors import UsageError
from lightexport.model_defs import get_spec
from lightexport.precision import PRECISION_NAMES, Precision

#: The fused PyTorch model, run in-process: fp32 only (eager fp16/int8 would test PyTorch, not an artifact).
TORCH_FUSED = "torch-fused"
PRECISIONS = PRECISION_NAMES


def supported() -> dict[str, tuple[str, ...]]:
    """Each backend's precisions, read from the table when asked (a plug-in may register after this import)."""
    return {TORCH_FUSED: ("fp32",), **{name: tuple(p.value for p in b.precisions) for name, b in RUNTIMES.items()}}


@dataclass(frozen=True)
class Cell:
    model: str
    backend: str
    precision: Precision
    profile: str
    input_size: int
    weights: str | None = None  # a checkpoint path; None: the model's seeded random weights

    @property
    def key(self) -> str:
        return f"{self.model}/{self.backend}/{self.precision}/{self.profile}/{self.input_size}"

    def to_dict(self) -> dict:
        return {**asdict(self), "precision": self.precision.value}

    @classmethod
    def from_dict(cls, data: dict) -> Cell:
        return cls(**{**data, "precision": Precision.parse(data["precision"])})


def _split(value: str | list[str], allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            close = difflib.get_close_matches(bad[0], allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"unknown {what} {', '.join(bad)}{hint}; choose from {', '.join(allowed)}")
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
    table = supported()
    # a format's name stands for its runtime (tflite -> litert, onnx -> onnxruntime), as ``export --format`` names it
    backends = [b if b in table or b not in BACKENDS else BACKENDS[b].runtime for b in _split(backends, None, "")]
    backends = _split(list(dict.fromkeys(backends)), tuple(table), "backend")
    precisions = _split(precisions, PRECISIONS, "precision")
    profiles = [get_profile(p).name for p in _split(profiles, None, "profile")]
    cells = []
    for model, backend, precision, profile in product(models, backends, precisions, profiles):
        if precision not in table[backend]:
            continue
        for size in input_sizes or get_profile(profile).input_sizes:
            cells.append(Cell(model, backend, Precision.parse(precision), profile, size, weights.get(model)))
    if not cells:
        raise UsageError("the selection leaves no cell to run (e.g. torch-fused supports only fp32)")
    return cells


#: Seconds one 224-px MobileNetV2 crop took per run setting in the emulated arm64 worker (qemu on an AMD EPYC):
#: the scale of what --images costs there. A cell is judged in every setting its runtime has (pinned, default).
EMULATED_CROP_S = 3.0
QUICK_IMAGES = 16


def emulation_note(cells: list[Cell], images: int) -> str | None:
    """One line saying what ``images`` decision crops cost in emulated profiles, when that is many minutes.

    Trained-weight cells are judged on the decision crops, and an emulated crop takes seconds: the default 240
    made one runtime's arm64 cells take about an hour with MobileNetV2. None when no such cell runs long."""
    slow = [c for c in cells if c.weights and get_profile(c.profile).emulated]
    if not slow or images <= QUICK_IMAGES:
        return None
    seconds = sum(images * 2 * EMULATED_CROP_S * (c.input_size / 224) ** 2 for c in slow)
    if seconds < 600:
        return None
    profiles = ", ".join(dict.fromkeys(c.profile for c in slow))
    return (f"{len(slow)} trained-weight cell(s) run under emulation ({profiles}) on {images} decision crops each: "
            f"about {seconds / 3600:.1f} h at MobileNetV2's emulated rate (~{EMULATED_CROP_S:.0f} s per 224-px crop "
            f"and setting); --images {QUICK_IMAGES} checks the ARM kernels in a few minutes per cell")
