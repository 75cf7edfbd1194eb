"""A parity result as data: one ``OutputStats`` per output, the tolerance, the verdict and why.

The same object is printed (``render``), saved (``to_json``) and asserted on
(``passed``/``failures``), so what a user reads is what CI judged.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from lightexport.fileio import atomic_output
from lightexport.parity.metrics import OutputStats
from lightexport.parity.tolerances import Tolerance


def _sci(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2e}"


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _top1(stats: OutputStats) -> str:
    return _fraction(stats.top1) + (f" (+{stats.top1_near_ties:.1%} near-ties)" if stats.top1_near_ties else "")


@dataclass
class ParityReport:
    artifact: str
    backend: str
    precision: str
    tolerance: Tolerance
    outputs: list[OutputStats]
    samples: int
    #: every violated limit, one sentence each, output name first; empty means the artifact passed
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def render(self, console: Console | None = None) -> None:
        console = console or Console()
        table = Table(title=f"parity of {self.artifact} ({self.backend}, {self.precision}) on {self.samples} images")
        for column in ("output", "shape", "max abs", "max rel", "mean abs", "cosine (mean / min)", "top-1", "top-5"):
            table.add_column(column, justify="left" if column in ("output", "shape") else "right")
        table.add_column("verdict")
        for stats in self.outputs:
            cosine = "-" if math.isnan(stats.cosine) else f"{stats.cosine:.6f} / {stats.cosine_min:.6f}"
            ok = not self.tolerance.check(stats)
            table.add_row(stats.name, "x".join(map(str, stats.shape)), _sci(stats.max_abs), _sci(stats.max_rel),
                          _sci(stats.mean_abs), cosine, _top1(stats), _fraction(stats.top5),
                          "[green]pass[/]" if ok else "[bold red]FAIL[/]")
        console.print(table)
        console.print(f"{self.precision} tolerance: {self.tolerance.describe()}", highlight=False)
        for failure in self.failures:
            console.print(f"[red]fail:[/] {failure}", highlight=False)
        console.print("[bold green]PASS[/]" if self.passed else "[bold red]FAIL[/]")

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "backend": self.backend,
            "precision": self.precision,
            "samples": self.samples,
            "tolerance": {k: v for k, v in vars(self.tolerance).items() if v is not None},
            "passed": self.passed,
            "failures": self.failures,
            "outputs": [s.to_dict() for s in self.outputs],
        }

    def to_json(self, path: str | os.PathLike) -> None:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
