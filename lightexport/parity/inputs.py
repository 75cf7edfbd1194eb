"""Parity inputs: real photos first (preprocessed exactly as calibration does), then seeded noise.

Photos carry the statistics a deployed model sees and make int8's top-1 agreement
meaningful; Gaussian noise in the normalized space (N(0, 1) per pixel and channel)
adds inputs beyond the photo set that stress every channel. Both are deterministic:
the photos are fixed files and the noise is drawn from ``seed``.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from lightexport.calib.preprocess import Preprocess
from lightexport.calib.samples import sample_photos
from lightexport.errors import BackendUnavailableError, UsageError
from lightexport.model_defs.registry import ModelSpec

#: The default number of parity inputs everywhere; the int8 top-1 limit is reasoned for it (see tolerances).
PARITY_INPUTS = 8


def _photos_if_available() -> list[np.ndarray]:
    """The sample photos; without scikit-image, parity still runs on noise, with a warning saying so."""
    try:
        return sample_photos()
    except BackendUnavailableError as exc:
        warnings.warn(f"{exc}; using noise inputs only", stacklevel=3)
        return []


def _preprocess(spec_or_preprocess: ModelSpec | Preprocess, input_size: int | None) -> Preprocess:
    """The model's transform (or the one given), at ``input_size`` when an artifact was exported at another size."""
    if isinstance(spec_or_preprocess, Preprocess):
        if input_size:
            return dataclasses.replace(spec_or_preprocess, input_size=input_size)
        return spec_or_preprocess
    return Preprocess.from_spec(spec_or_preprocess, input_size)


class LazyInputs(Sequence):
    """Parity inputs made as they are used: memory stays one batch whatever their count (10,000 inputs were
    12 GB when made at once), and every pass yields the same arrays (the generation is seeded)."""

    def __init__(self, count: int, make: Callable[[], Iterator[np.ndarray]]) -> None:
        self.count, self._make = count, make

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._make()

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(itertools.islice(self, *index.indices(self.count)))
        if not -self.count <= index < self.count:
            raise IndexError(index)
        return next(itertools.islice(self, index % self.count, None))


def make_inputs(
    spec_or_preprocess: ModelSpec | Preprocess,
    n: int = PARITY_INPUTS,
    *,
    seed: int = 0,
    photos: bool = True,
    input_size: int | None = None,
    batch: int = 1,
) -> LazyInputs:
    """``n`` float32 NCHW arrays of ``batch`` images each: as many sample photos as there are, then noise.

    ``input_size`` overrides the model's (for artifacts exported at another size). The noise is
    drawn one image at a time from one seeded stream, which yields the same values as one draw.
    """
    if n < 1 or batch < 1:
        raise UsageError(f"need at least one input of at least one image (got n={n}, batch={batch})")
    preprocess = _preprocess(spec_or_preprocess, input_size)
    total = n * batch
    shape = preprocess.shape[1:]
    if isinstance(spec_or_preprocess, ModelSpec) and (spec_or_preprocess.preprocess != "image"
                                                        or spec_or_preprocess.channels != 3):
        photos, shape = False, (spec_or_preprocess.channels, *shape[1:])  # no image semantics: noise only
    sources = (_photos_if_available() if photos else [])[:total]

    def images() -> Iterator[np.ndarray]:
        for photo in sources:
            yield preprocess(photo)
        rng = np.random.default_rng(seed)
        for _ in range(total - len(sources)):
            yield rng.standard_normal((1, *shape), dtype=np.float32)

    return LazyInputs(n, lambda: _batched(images(), batch))


def _batched(images: Iterator[np.ndarray], batch: int) -> Iterator[np.ndarray]:
    while chunk := list(itertools.islice(images, batch)):
        yield np.ascontiguousarray(np.concatenate(chunk))


def decision_inputs(
    spec_or_preprocess: ModelSpec | Preprocess,
    n: int,
    *,
    input_size: int | None = None,
    batch: int = 1,
) -> LazyInputs:
    """``n`` augmented photo crops (the decision set of :mod:`lightexport.calib.crops`), in batches of ``batch``.

    For classifiers whose decisions matter (trained weights, int8, bf16): agreement on a few
    hundred crops is a statistic; on eight photos it is an anecdote. No noise is mixed in.
    """
    from lightexport.calib.crops import decision_crops

    if n < 1 or batch < 1:
        raise UsageError(f"need at least one image in batches of at least one (got n={n}, batch={batch})")
    preprocess = _preprocess(spec_or_preprocess, input_size)
    crops = decision_crops(n * batch)  # small uint8 crops; normalized a batch at a time
    return LazyInputs(n, lambda: _batched((preprocess(c) for c in crops), batch))
