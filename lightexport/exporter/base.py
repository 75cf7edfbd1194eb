"""What every exporter shares: the result record and the provenance stamped into artifacts.

Like the Ultralytics exporter, every format reports the file it wrote, its size and the
time it took, and every artifact records where it came from, so ``lightexport parity``
can rebuild the right reference without being told again.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightexport import __version__
from lightexport.artifacts import META_PREFIX, file_digest, strip_prefix
from lightexport.errors import UsageError
from lightexport.loading import RANDOM_WEIGHTS_SCHEME, LoadedModel


@dataclass
class ExportResult:
    format: str
    path: Path
    seconds: float
    precision: str = "fp32"
    files: list[Path] = field(default_factory=list)
    op_histogram: Counter = field(default_factory=Counter)
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    passes: list[Any] = field(default_factory=list)  # reparam PassReports applied before export

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in (self.files or [self.path]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": str(self.path),
            "files": [str(f) for f in self.files or [self.path]],
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 3),
            "precision": self.precision,
            "op_histogram": dict(self.op_histogram.most_common()),
            "metadata": self.metadata,
            "notes": self.notes,
            "passes": [r.to_dict() for r in self.passes],
        }


def artifact_metadata(
    loaded: LoadedModel,
    passes: list[str],
    input_size: int,
    batch: int,
    dynamic: bool,
    precision: str,
) -> dict[str, str]:
    """Provenance as flat strings (ONNX metadata_props and OpenVINO rt_info both take strings).

    Nothing time- or machine-dependent goes in, so exports stay byte-identical.
    """
    spec = loaded.spec
    meta = {
        "model": spec.name,
        "family": spec.family,
        "build_kwargs": json.dumps(loaded.build_kwargs, sort_keys=True),
        "passes": json.dumps(passes),
        "input_size": str(input_size),
        "batch": "dynamic" if dynamic else str(batch),
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "crop_pct": str(spec.crop_pct),
        "precision": str(precision),
        "version": __version__,
    }
    if loaded.weights is not None:
        meta["weights"] = loaded.weights.name
        meta["weights_sha256"] = file_digest(loaded.weights)
    if loaded.initialized:  # modules the checkpoint lacked, started fresh (backbone mode's feature norms)
        meta["initialized"] = json.dumps(list(loaded.initialized))
    else:
        meta["random_weights"] = RANDOM_WEIGHTS_SCHEME
    return {META_PREFIX + k: v for k, v in meta.items()}


def preprocess_for(metadata: dict[str, str]):
    """The calibration preprocessing of the model an artifact records (for int8 from an ONNX input)."""
    from lightexport.calib import Preprocess
    from lightexport.model_defs import get_spec

    meta = strip_prefix(metadata)
    if "model" not in meta:
        raise UsageError("this ONNX records no model, so its preprocessing is unknown; export it with lightexport")
    return Preprocess.from_spec(get_spec(meta["model"]), input_size=int(meta.get("input_size", 0)) or None)
