"""Run the PyTorch reference and an artifact on the same inputs and judge the difference."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch.nn as nn
from rich.console import Console
from rich.progress import track

from lightexport.errors import UsageError
from lightexport.parity.judge import report_from_runs
from lightexport.parity.report import ParityReport
from lightexport.parity.runners import Runner, TorchRunner, runner_for
from lightexport.parity.tolerances import Tolerance, tolerance_for


@contextlib.contextmanager
def _active(runner: Runner) -> Iterator[Runner]:
    """Activate for the comparison, but leave a runner the caller already activated as it was."""
    if runner.is_active:
        yield runner
    else:
        with runner:
            yield runner


def _input_name(runner: Runner, given: str | None) -> str:
    if given is not None:
        return given
    if len(runner.input_names) != 1:
        raise UsageError(f"{runner.name} has inputs {runner.input_names}; say which one to feed (input_name=)")
    return runner.input_names[0]


def check_parity(
    runner_or_path: Runner | str | os.PathLike,
    reference: nn.Module | Runner,
    inputs: Sequence[np.ndarray],
    precision: str = "fp32",
    input_name: str | None = None,
    progress: bool = True,
    tolerance: Tolerance | None = None,
    decisions: Sequence[int] | None = None,
) -> ParityReport:
    """Compare the artifact's outputs with the reference's, output by output in order, under ``precision``'s tolerance.

    ``reference`` is usually the unfused PyTorch module (run in eval mode under no_grad;
    a tensor, or a list of tensors in backbone mode); any runner works, e.g. to compare
    two backends. ``tolerance`` overrides the precision's default limits; ``decisions`` names the
    outputs (by index) that are classification heads, where not every 2-D output is one.
    """
    if not inputs:
        raise UsageError("parity needs at least one input")
    tolerance = tolerance or tolerance_for(precision)
    artifact = runner_or_path if isinstance(runner_or_path, Runner) else runner_for(runner_or_path)
    reference = reference if isinstance(reference, Runner) else TorchRunner(reference)
    ref_runs, art_runs, samples = [], [], 0
    with _active(artifact), _active(reference):
        feed_name, ref_name = _input_name(artifact, input_name), _input_name(reference, None)
        err = Console(stderr=True)  # a bar only on a terminal: piped, rich leaves an empty line on stderr
        steps = track(inputs, description=f"parity ({artifact.backend})", disable=not progress or not err.is_terminal,
                      transient=True, console=err)
        for x in steps:  # inputs may be made as they are used (LazyInputs): one pass, one batch in memory
            ref_runs.append(reference.infer({ref_name: x}))
            art_runs.append(artifact.infer({feed_name: x}))
            samples += len(x)
    return report_from_runs(artifact, ref_runs, art_runs, tolerance, samples, decisions)
