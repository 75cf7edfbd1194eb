"""One options record for every export, validated once at the door.

``api.export(model, "onnx", fusee=True)`` and ``lightexport onnx --fp16 --int8`` are user
mistakes, not tracebacks: an unknown option is a usage error naming the close match, and
conflicting or out-of-range values are refused before any work starts. Which options a
format takes beyond the common ones is data in its backend record.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lightexport.backends import Backend
from lightexport.errors import UsageError
from lightexport.precision import Precision

#: Largest square input side lightexport builds or feeds: 4096^2 RGB float32 is 200 MB per image.
MAX_INPUT_SIZE = 4096
MIN_INPUT_SIZE = 32
MAX_BATCH = 1024


def check_input_size(size: int | None, what: str = "input size") -> int | None:
    """``size`` if it is a usable square side (or None: the model's default); a usage error otherwise."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise UsageError(f"{what} must be an integer from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}, got {size!r}")
    return size


def check_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise UsageError(f"batch must be an integer from 1 to {MAX_BATCH}, got {batch!r}")
    return batch


@dataclass(frozen=True)
class ExportOptions:
    """What every exporter takes; ``extra`` holds the options only some formats take (opset, profile ...)."""

    output: Path | None = None
    fuse: bool = False
    passes: tuple[str, ...] | None = None
    input_size: int | None = None
    batch: int = 1
    dynamic: bool = False
    precision: Precision = Precision.FP32
    calib: Path | None = None
    calib_size: int = 300
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, backend: Backend, **options: Any) -> ExportOptions:
        """Validate ``options`` for ``backend``: unknown names, conflicts and ranges are usage errors."""
        common = [f.name for f in fields(cls) if f.name != "extra"]
        allowed = [*common, *backend.options]
        unknown = [name for name in options if name not in allowed]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"unknown option {name!r} for {backend.name} export{hint} "
                             f"(options: {', '.join(sorted(set(allowed)))})")
        given = {k: v for k, v in options.items() if k in common and v is not None}
        extra = {k: v for k, v in options.items() if k not in common and v is not None}
        precision = Precision.parse(given.pop("precision", None), backend.precisions, what=f"{backend.name} precision")
        calib = Path(given.pop("calib")) if given.get("calib") is not None else None
        if calib is not None and precision is not Precision.INT8:
            raise UsageError("--calib goes with --int8 (calibration images set int8 activation ranges)")
        calib_size = given.pop("calib_size", 300)
        if isinstance(calib_size, bool) or not isinstance(calib_size, int) or calib_size < 1:
            raise UsageError(f"calibration size must be a positive integer, got {calib_size!r}")
        passes = given.pop("passes", None)
        output = given.pop("output", None)
        return cls(
            output=Path(output) if output is not None else None,
            passes=tuple(passes) if passes else None,
            input_size=check_input_size(given.pop("input_size", None)),
            batch=check_batch(given.pop("batch", 1)),
            precision=precision,
            calib=calib,
            calib_size=calib_size,
            extra=extra,
            **given,
        )

    def require_calibration(self, what: str) -> None:
        """int8 from a float source needs images; ``what`` names the source in the message."""
        if self.precision is Precision.INT8 and self.calib is None:
            raise UsageError(f"--int8 needs --calib DIR (a folder of representative images) to quantize {what}")

    def exporter_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the exporter functions (their signatures mirror this record)."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "output")}
        kwargs["passes"] = list(self.passes) if self.passes else None
        return {**kwargs, **self.extra}
