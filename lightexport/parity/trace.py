"""Where an int8 artifact loses accuracy: every module's output cosine against PyTorch, in order.

Bisection asks which module is the first over a tolerance; in an int8 artifact every
quantized layer drifts a little, so that question has no useful answer. The useful one
is where the drift builds up. The trace reuses bisection's mapping from module scopes to
ONNX tensors (the Q/DQ graph runs unoptimized, so each DequantizeLinear shows exactly
what the next layer reads), compares each module's output with the export-form
PyTorch model on one input, and reports the modules whose relative error (``rel_l2``:
error norm over reference norm, which unlike cosine also sees a wrong scale, the typical
int8 bug) grows most from the module before them, and where it first exceeds a few
levels. A module whose error the output of its nearest enclosing module no longer shows
is skipped, as bisection marks it absorbed: onnxsim moves GELU's ``* 0.5`` into the next
conv, leaving the GELU's output at twice the reference (relative error 1.0, cosine 1.0)
by design. Only the nearest one: a residual addition further out dilutes a branch's
error without undoing it. Those
modules are the candidates to keep in float (ONNX Runtime's ``nodes_to_exclude``,
NNCF's ``ignored_scope``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn
from rich.console import Console
from rich.table import Table

from lightexport.parity.bisect import UNMATCHED, LayerDiff, bisect_artifact
from lightexport.parity.metrics import OutputStats

#: an enclosing module whose output has under half a module's relative error has undone it
ABSORBED_RATIO = 0.5
LEVELS = (0.05, 0.1, 0.2)  # 0.2 is about cosine 0.98, the int8 limit of lightexport.parity.tolerances


@dataclass
class Step:
    entry: LayerDiff
    before: float  # the rel_l2 of the module before it in topological order (0 for the first)

    @property
    def growth(self) -> float:
        return self.entry.stats.rel_l2 - self.before


@dataclass
class Int8Trace:
    artifact: str
    steps: list[Step]
    outputs: list[OutputStats] = field(default_factory=list)

    def largest_growth(self, n: int = 5) -> list[Step]:
        return sorted(self.steps, key=lambda s: s.growth, reverse=True)[:n]

    def crossings(self) -> dict[float, Step | None]:
        """For each level, the first module whose output's relative error exceeds it."""
        return {level: next((s for s in self.steps if s.entry.stats.rel_l2 > level), None) for level in LEVELS}

    @property
    def message(self) -> str:
        if not self.steps:
            return "no module outputs could be matched"
        worst = self.largest_growth(1)[0]
        return (f"int8 loses most at {worst.entry.module} ({worst.entry.op_type}): relative error "
                f"{worst.before:.4f} -> {worst.entry.stats.rel_l2:.4f}")

    def render(self, console: Console | None = None, rows: int = 8) -> None:
        console = console or Console()
        table = Table(title=f"int8 trace of {self.artifact}: where the relative error grows most "
                            f"({rows} of {len(self.steps)} module outputs)")
        for column in ("#", "module", "op", "rel err before", "rel err after", "growth", "cosine"):
            table.add_column(column, justify="left" if column in ("module", "op") else "right")
        for step in self.largest_growth(rows):
            table.add_row(str(self.steps.index(step) + 1), step.entry.module, step.entry.op_type,
                          f"{step.before:.4f}", f"{step.entry.stats.rel_l2:.4f}", f"{step.growth:+.4f}",
                          f"{step.entry.stats.cosine:.6f}")
        console.print(table)
        for level, step in self.crossings().items():
            where = f"{step.entry.module} (#{self.steps.index(step) + 1})" if step else "never"
            console.print(f"relative error first above {level:g}: {where}", highlight=False)
        for stats in self.outputs:
            console.print(f"output {stats.name}: cosine {stats.cosine:.6f}", highlight=False)
        console.print(self.message, highlight=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "message": self.message,
            "largest_growth": [{**s.entry.to_dict(), "rel_l2_before": s.before, "growth": s.growth}
                               for s in self.largest_growth()],
            "first_above": {str(level): (s.entry.module if s else None) for level, s in self.crossings().items()},
            "entries": [s.entry.to_dict() for s in self.steps],
            "outputs": [o.to_dict() for o in self.outputs],
        }


def trace_int8(path: str | Path, reference: nn.Module, feed: np.ndarray, input_name: str = "input") -> Int8Trace:
    """Trace a QDQ int8 ONNX ``path`` against the unfused ``reference`` on one input ``feed``."""
    report = bisect_artifact(path, reference, feed, tolerance=math.inf, input_name=input_name)
    matched = [e for e in report.entries if e.status != UNMATCHED and not math.isnan(e.stats.rel_l2)]
    errors = {e.module: e.stats.rel_l2 for e in matched}
    steps, before = [], 0.0
    for entry in matched:
        parts = entry.module.split(".")
        enclosing = [errors[p] for p in (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)) if p in errors]
        if enclosing and enclosing[0] < ABSORBED_RATIO * entry.stats.rel_l2:
            continue  # absorbed: restored by the enclosing module
        steps.append(Step(entry, before))
        before = entry.stats.rel_l2
    return Int8Trace(report.artifact, steps, report.outputs)
