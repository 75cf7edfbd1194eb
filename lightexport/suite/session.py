"""One suite run from the Python door: select the matrix, choose calibration, run it, write the report.

The CLI's ``suite`` command only parses options, shows progress and prints the table; everything a
Python user needs to run the same matrix lives here.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lightexport.parity.inputs import PARITY_INPUTS
from lightexport.suite.matrix import build_matrix
from lightexport.suite.report import summary, write_report
from lightexport.suite.run import in_matrix_order, run_suite

#: Calibration images for models with a checkpoint: augmented crops disjoint from the decision set.
TRAINED_CALIB_CROPS = 300


@dataclass
class SuiteOutcome:
    results: list[dict]
    files: list[Path]

    @property
    def counts(self) -> dict[str, int]:
        return summary(self.results)

    @property
    def passed(self) -> bool:
        return not (self.counts["fail"] or self.counts["error"])


def _calibration(calib: str | Path | None, trained: bool, tmp: Path) -> tuple[Path, int]:
    """The user's folder; 300 disjoint crops for trained weights; else the 15 bundled photos."""
    from lightexport.calib import write_sample_photos
    from lightexport.calib.crops import write_calibration_crops

    if calib:
        return Path(calib), TRAINED_CALIB_CROPS
    if trained:
        return write_calibration_crops(tmp / "calib", TRAINED_CALIB_CROPS), TRAINED_CALIB_CROPS
    photos = write_sample_photos(tmp / "photos")
    return photos, min(16, sum(1 for _ in photos.iterdir()))


def run_matrix(
    models: str | list[str],
    backends: str | list[str],
    precisions: str | list[str],
    profiles: str | list[str],
    out: str | Path,
    *,
    input_sizes: list[int] | None = None,
    weights: dict[str, str] | None = None,
    calib: str | Path | None = None,
    inputs: int = PARITY_INPUTS,
    images: int = 240,
    runs: int = 10,
    on_result: Callable[[dict], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    quiet: Callable[[], contextlib.AbstractContextManager] | None = None,
    ray: str | None = None,
) -> SuiteOutcome:
    """Run the parity matrix and write ``out``/report.json, report.md and the plots.

    ``weights`` maps model names to checkpoints (others get seeded random weights); a checkpoint that
    does not fit fails before anything is built. ``quiet`` wraps the run (the CLI keeps third-party
    progress bars off its own). ``ray`` runs the cells as Ray tasks: ``"local"`` on a Ray instance of
    this machine's own, ``"auto"`` or an address on a cluster (:mod:`lightexport.suite.cluster`); the
    report is the same. Interrupted, the report holds the cells that finished.
    """
    from lightexport.loading import load_model

    weights = weights or {}
    cells = build_matrix(models, backends, precisions, profiles, input_sizes, weights)
    for model, path in weights.items():
        load_model(model, path)  # a checkpoint that does not fit fails now, naming its keys, not in every cell
    names = lambda value: value if isinstance(value, str) else ",".join(value)  # noqa: E731
    meta = {"models": names(models), "backends": names(backends), "precisions": names(precisions),
            "profiles": names(profiles), "inputs_per_cell": inputs, "decision_images": images if weights else 0,
            "weights": weights or "seeded random weights",
            "calibration": str(calib or ("300 augmented crops" if weights else "scikit-image sample photos")),
            "executed": f"as Ray tasks ({ray})" if ray else "serially, on this machine"}
    finished: list[dict] = []

    def collect(result: dict) -> None:
        finished.append(result)
        if on_result:
            on_result(result)

    try:
        with tempfile.TemporaryDirectory(prefix="lightexport-suite-") as tmp, (quiet or _nothing)():
            calib_dir, calib_size = _calibration(calib, bool(weights), Path(tmp))
            if ray:
                from lightexport.suite.cluster import run_suite_ray

                results = run_suite_ray(cells, Path(tmp), calib_dir, calib_size, inputs, runs, images, ray,
                                        on_result=collect, on_step=on_step)
            else:
                results = run_suite(cells, Path(tmp), calib_dir, calib_size, inputs, runs, images,
                                    on_result=collect, on_step=on_step)
    except BaseException as exc:
        if isinstance(exc, Exception) or not finished:
            raise
        # Ctrl-C or SIGTERM: what finished is kept, in the matrix's order, and the report says it is partial
        files = write_report(in_matrix_order(cells, finished), Path(out),
                             {**meta, "interrupted": f"{len(finished)} of {len(cells)} cells finished"})
        exc.add_note(f"the report holds the {len(finished)} of {len(cells)} cells that finished: {files[1]}")
        raise
    return SuiteOutcome(results, write_report(results, Path(out), meta))


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield
