"""Judge an artifact against reference outputs already computed: parity without PyTorch in the process.

``check_parity`` runs the PyTorch reference beside the artifact; a process that cannot import
PyTorch (an emulated aarch64 Python) gets the reference's outputs computed elsewhere, on the same
inputs, and judges with the same statistics (metrics), limits (tolerances) and report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lightexport.errors import UsageError
from lightexport.parity.metrics import compare
from lightexport.parity.report import ParityReport
from lightexport.parity.runners.base import Outputs, Runner
from lightexport.parity.tolerances import Tolerance, tolerance_for


def judge(artifact: Runner, feeds: Sequence[np.ndarray], reference: Sequence[Outputs], precision: str = "fp32",
          tolerance: Tolerance | None = None, decisions: Sequence[int] | None = None) -> ParityReport:
    """Run ``artifact`` on ``feeds`` and compare with ``reference[i]``, the reference's outputs for ``feeds[i]``.

    Outputs are matched in order (the reference's names may differ from the artifact's), as ``check_parity`` does.
    """
    if not feeds or len(feeds) != len(reference):
        raise UsageError(f"parity needs one reference result per input ({len(feeds)} inputs, {len(reference)} results)")
    tolerance = tolerance or tolerance_for(precision)
    with artifact:
        if len(artifact.input_names) != 1:
            raise UsageError(f"{artifact.name} has inputs {artifact.input_names}; the suite feeds one")
        runs, samples = [], 0
        for x in feeds:
            runs.append(artifact.infer({artifact.input_names[0]: x}))
            samples += len(x)
    return report_from_runs(artifact, list(reference), runs, tolerance, samples, decisions)


def _stack(runs: Sequence[Outputs]) -> list[np.ndarray]:
    """Each output's results over all inputs, concatenated along the batch axis, in output order."""
    return [np.concatenate([run[name] for run in runs]) for name in runs[0]]


def report_from_runs(artifact: Runner, ref_runs: Sequence[Outputs], art_runs: Sequence[Outputs],
                     tolerance: Tolerance, samples: int, decisions: Sequence[int] | None = None) -> ParityReport:
    """Compare per-input outputs, output by output in order, and judge them: the one rule parity has.

    ``decisions``: the indices of the outputs that are classification heads (their top-1 is judged);
    None: every 2-D output (a registered classifier's logits)."""
    names = list(art_runs[0])
    outputs = [compare(name, ref, art, decisions is None or i in decisions)
               for i, (name, ref, art) in enumerate(zip(names, _stack(ref_runs), _stack(art_runs)))]
    failures = [f for stats in outputs for f in tolerance.check(stats)]
    if len(ref_runs[0]) != len(names):
        failures.insert(0, f"the artifact has {len(names)} output(s) ({', '.join(names)}) but the reference "
                           f"has {len(ref_runs[0])}")
    path = getattr(artifact, "path", None)
    return ParityReport(artifact=str(path or artifact.name), backend=artifact.backend, precision=tolerance.precision,
                        tolerance=tolerance, outputs=outputs, samples=samples, failures=failures)
