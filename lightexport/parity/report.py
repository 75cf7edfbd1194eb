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


def _confident(stats: OutputStats) -> str:
    if stats.confident is None:
        return "-"
    return f"{_fraction(stats.top1_confident)} of {stats.confident:.0%}"


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
    #: how the runtime executed it, e.g. "f32 pinned; layers ran f32 x53" or "bf16: openvino's default on this
    #: CPU; layers ran u8 x50, f32 x3" (the hint, then what the compiled layers really ran in)
    execution: str | None = None
    #: the same artifact run in other settings a user gets (the runtime's default precision); all must pass
    also: list[ParityReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.all_failures

    @property
    def all_failures(self) -> list[str]:
        """This run's failures and those of every other setting, each naming its setting."""
        return [*self.failures, *(f"[{r.execution}] {f}" for r in self.also for f in r.all_failures)]

    def render(self, console: Console | None = None) -> None:
        """Every setting's table and verdict, then the overall verdict."""
        console = console or Console()
        for report in (self, *self.also):
            report._render_one(console, label=bool(self.also))
        console.print("[bold green]PASS[/]" if self.passed else "[bold red]FAIL[/]")

    def _render_one(self, console: Console, label: bool) -> None:
        how = f", {self.execution}" if self.execution else ""
        table = Table(title=f"parity of {self.artifact} ({self.backend}{how}; {self.precision} limits) "
                            f"on {self.samples} images")
        for column in ("output", "shape", "max abs", "max rel", "mean abs", "cosine (mean / p05 / min)", "top-1",
                       "top-1 confident", "top-5"):
            table.add_column(column, justify="left" if column in ("output", "shape") else "right")
        table.add_column("verdict")
        for stats in self.outputs:
            cosine = "-" if math.isnan(stats.cosine) else (f"{stats.cosine:.6f} / {stats.cosine_p05:.6f} / "
                                                           f"{stats.cosine_min:.6f}")
            ok = not self.tolerance.check(stats)
            table.add_row(stats.name, "x".join(map(str, stats.shape)), _sci(stats.max_abs), _sci(stats.max_rel),
                          _sci(stats.mean_abs), cosine, _top1(stats), _confident(stats), _fraction(stats.top5),
                          "[green]pass[/]" if ok else "[bold red]FAIL[/]")
        console.print(table)
        console.print(f"{self.precision} tolerance: {self.tolerance.describe()}", highlight=False)
        for failure in self.failures:
            console.print(f"[red]fail:[/] {failure}", highlight=False)
        if label:
            console.print(f"{'[green]pass[/]' if not self.failures else '[bold red]FAIL[/]'} ({self.execution})")


    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "backend": self.backend,
            "precision": self.precision,
            "samples": self.samples,
            "tolerance": {k: v for k, v in vars(self.tolerance).items() if v is not None},
            "execution": self.execution,
            "passed": self.passed,
            "failures": self.all_failures,
            "outputs": [s.to_dict() for s in self.outputs],
            "also": [r.to_dict() for r in self.also],
        }

    def to_json(self, path: str | os.PathLike) -> None:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
