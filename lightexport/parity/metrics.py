"""Per-output error statistics as data: computed once, then printed, saved or judged.

Every number is computed in float64 over the outputs of all inputs concatenated
along the batch axis, so one sample cannot hide behind the others:

- ``max_abs``, ``mean_abs``: of ``artifact - reference``.
- ``max_rel``: ``max_abs`` over the reference's dynamic range (max - min), not an
  elementwise ratio, which explodes wherever the reference is near zero. A constant
  reference falls back to its magnitude; an all-zero one makes any error infinite.
- ``cosine``: cosine similarity of each sample's flattened output, averaged over
  samples (``cosine_min`` keeps the worst sample for the report).
- ``top1``/``top5`` (2-D outputs only, read as ``(batch, classes)`` logits):
  ``top1`` is the fraction of samples whose argmax agrees; ``top5`` the fraction
  whose reference argmax is among the artifact's five highest, i.e. the artifact's
  top-5 accuracy if the reference's prediction were the label.

NaN/Inf on either side, or a shape mismatch, leaves the numbers NaN and sets
``problem``, which fails any tolerance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TOPK = 5


@dataclass
class OutputStats:
    """One output's comparison; NaN fields were not computable (see ``problem``), None ones do not apply."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float = math.nan
    max_rel: float = math.nan
    mean_abs: float = math.nan
    cosine: float = math.nan
    cosine_min: float = math.nan
    top1: float | None = None
    top5: float | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # JSON has no NaN/Inf; null says "not computed" and the string keeps an infinite error visible
        return {k: (None if isinstance(v, float) and math.isnan(v) else "inf" if v == math.inf else v)
                for k, v in asdict(self).items()}


def _non_finite(side: str, values: np.ndarray) -> str | None:
    nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    if not nan and not inf:
        return None
    return f"the {side} output has {nan} NaN and {inf} Inf values (of {values.size})"


def _max_rel(max_abs: float, reference: np.ndarray) -> float:
    scale = float(reference.max() - reference.min()) or float(np.abs(reference).max())
    if scale:
        return max_abs / scale
    return 0.0 if max_abs == 0 else math.inf


def _cosines(reference: np.ndarray, artifact: np.ndarray) -> np.ndarray:
    """Per-sample cosine; a sample that is zero on both sides agrees (1), zero on one side does not (0)."""
    rows = reference.shape[0] if reference.ndim >= 2 else 1
    ref, art = reference.reshape(rows, -1), artifact.reshape(rows, -1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(art, axis=1)
    both_zero = ~ref.any(axis=1) & ~art.any(axis=1)
    cosines = np.einsum("ij,ij->i", ref, art) / np.where(norms > 0, norms, 1.0)
    return np.where(norms > 0, np.clip(cosines, -1.0, 1.0), np.where(both_zero, 1.0, 0.0))


def topk_agreement(reference: np.ndarray, artifact: np.ndarray, k: int = TOPK) -> tuple[float, float]:
    """(top-1 agreement, fraction of samples whose reference argmax is in the artifact's top-k)."""
    k = min(k, reference.shape[1])
    ref_top1 = reference.argmax(axis=1)
    art_topk = np.argpartition(-artifact, k - 1, axis=1)[:, :k]
    top1 = float(np.mean(ref_top1 == artifact.argmax(axis=1)))
    topk = float(np.mean((art_topk == ref_top1[:, None]).any(axis=1)))
    return top1, topk


def compare(name: str, reference: np.ndarray, artifact: np.ndarray) -> OutputStats:
    """Statistics of ``artifact`` against ``reference`` for one output (arrays of equal shape)."""
    stats = OutputStats(name, tuple(artifact.shape), str(artifact.dtype))
    if reference.shape != artifact.shape:
        stats.problem = f"shape {tuple(artifact.shape)} differs from the reference's {tuple(reference.shape)}"
        return stats
    ref, art = reference.astype(np.float64), artifact.astype(np.float64)
    empty = "the output is empty" if not ref.size else None
    stats.problem = empty or _non_finite("reference", ref) or _non_finite("artifact", art)
    if stats.problem:
        return stats
    err = np.abs(art - ref)
    stats.max_abs, stats.mean_abs = float(err.max()), float(err.mean())
    stats.max_rel = _max_rel(stats.max_abs, ref)
    cosines = _cosines(ref, art)
    stats.cosine, stats.cosine_min = float(cosines.mean()), float(cosines.min())
    if ref.ndim == 2 and ref.shape[1] > 1:
        stats.top1, stats.top5 = topk_agreement(ref, art)
    return stats
