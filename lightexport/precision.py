"""Precision as a type: the four numeric formats an artifact can be made or run in.

A precision is named once here and parsed once at the door (CLI option, API keyword,
artifact metadata); every layer after that holds a :class:`Precision`, never a bare string,
so a typo is a usage error with a suggestion instead of a silent fall-through.
"""

from __future__ import annotations

import difflib
from enum import Enum

from lightexport.errors import UsageError


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value

    @property
    def needs_calibration(self) -> bool:
        """int8 needs representative images to fix activation ranges; the float formats do not."""
        return self is Precision.INT8

    @property
    def tag(self) -> str:
        """File-name tag for default output names: '' for fp32, '_fp16' and so on otherwise."""
        return "" if self is Precision.FP32 else f"_{self.value}"

    @classmethod
    def parse(cls, value: str | Precision | None, allowed: tuple[Precision, ...] | None = None,
              what: str = "precision") -> Precision:
        """``value`` as a Precision (None means fp32); a usage error naming the close match otherwise."""
        if value is None:
            value = cls.FP32
        choices = allowed or tuple(cls)
        try:
            precision = cls(str(value).lower())
        except ValueError:
            names = [p.value for p in choices]
            close = difflib.get_close_matches(str(value).lower(), names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"unknown {what} {value!r}{hint} (choose one of {', '.join(names)})") from None
        if precision not in choices:
            raise UsageError(f"{what} {precision} is not available here; choose one of "
                             f"{', '.join(p.value for p in choices)}")
        return precision


PRECISION_NAMES = tuple(p.value for p in Precision)
