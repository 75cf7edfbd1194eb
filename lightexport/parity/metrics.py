"""Per-output error statistics as data: computed once, then printed, saved or judged.

Every number is computed in float64 over the outputs of all inputs concatenated
along the batch axis, so one sample cannot hide behind the others:

- ``max_abs``, ``mean_abs``: of ``artifact - reference``.
- ``max_rel``: ``max_abs`` over the reference's dynamic range (max - min), not an
  elementwise ratio, which explodes wherever the reference is near zero. A constant
  reference falls back to its magnitude; an all-zero one makes any error infinite.
- ``cosine``: cosine similarity of each sample's flattened output, averaged over
  samples (``cosine_min`` keeps the worst sample, ``cosine_p05`` the 5th percentile: on a few
  inputs about the worst, on hundreds the edge of the bulk, which one odd crop cannot move).
- ``rel_l2``: ``||artifact - reference|| / ||reference||`` over all elements. Unlike cosine
  it sees a wrong scale (a tensor off by 1.5x has cosine 1 and rel_l2 0.5); for errors
  of matching scale it is about ``sqrt(2 (1 - cosine))``.
- ``top1``/``top5`` (2-D outputs only, read as ``(batch, classes)`` logits):
  ``top1`` is the fraction of samples whose argmax agrees; ``top5`` the fraction
  whose reference argmax is among the artifact's five highest, i.e. the artifact's
  top-5 accuracy if the reference's prediction were the label. Ties count: where
  classes share the maximum, any of them is the decision (:func:`topk_agreement`).
- ``top1_near_ties``: the fraction of samples whose top-1 flipped between two classes
  the reference nearly tied. Noise spread over all logits flips near-ties and cannot
  flip clear decisions; an error that flips a clear decision is concentrated on the
  deciding logits, which is what top-1 is there to catch beyond cosine. A flip is a
  near-tie when the reference's margin between the two classes is at most
  ``NEAR_TIE_SIGMAS`` standard deviations of the artifact's noise on a logit
  difference in that sample (``sqrt(2)`` times the std of its errors over classes).
  Trained classifiers decide by several logit standard deviations, so for them this
  excuses little; random heads over 1000 classes decide by about a quarter of one,
  so int8 noise flips them however good the quantization is. The noise that may excuse
  a flip is bounded by the worst-sample cosine limit (see ``tolerances``).
- ``top1_confident`` and ``confident``: top-1 agreement over the samples the reference is
  sure of (softmax top-1 probability >= ``CONFIDENT_PROB``), and what fraction of samples
  those are. A trained model's confident decisions are the ones a deployment must keep;
  random heads are never confident, so for them it is None (not judged).

NaN/Inf on either side, or a shape mismatch, leaves the numbers NaN and sets
``problem``, which fails any tolerance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TOPK = 5
#: Flips of random-weight FasterNet-T0 int8 artifacts (ONNX Runtime QDQ and NNCF IR, 15 photos)
#: needed at most 1.5 standard deviations of pairwise noise; a flip needing more than 3 is no accident.
NEAR_TIE_SIGMAS = 3.0
#: A decision counts as confident when the reference gives its top-1 class at least this probability.
CONFIDENT_PROB = 0.5


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
    cosine_p05: float = math.nan
    rel_l2: float = math.nan
    top1: float | None = None
    top5: float | None = None
    top1_near_ties: float | None = None
    top1_confident: float | None = None
    confident: float | None = None
    samples: int = 0
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
    """(top-1 agreement, fraction of samples whose reference top class is among the artifact's top k), ties aware.

    Where several classes share the maximum, any of them is the decision: top-1 agrees when a
    class the reference ranks first is also one the artifact ranks first, and top-k when a class
    the reference ranks first scores at least the artifact's k-th highest value. Without that, a
    head whose outputs are all equal agreed with an identical copy of itself on 0 % of top-5
    (``argpartition`` picks among equal values arbitrarily).
    """
    k = min(k, reference.shape[1])
    ref_top = reference == reference.max(axis=1, keepdims=True)  # every class the reference ranks first
    art_best = artifact.max(axis=1, keepdims=True)
    kth = -np.partition(-artifact, k - 1, axis=1)[:, k - 1 : k]  # the artifact's k-th highest value
    top1 = float(np.mean((ref_top & (artifact == art_best)).any(axis=1)))
    topk = float(np.mean((ref_top & (artifact >= kth)).any(axis=1)))
    return top1, topk


def near_tie_flips(reference: np.ndarray, artifact: np.ndarray, sigmas: float = NEAR_TIE_SIGMAS) -> np.ndarray:
    """Per sample: did top-1 flip between classes whose reference margin is within the noise (module doc)?"""
    rows = np.arange(reference.shape[0])
    ref_top1, art_top1 = reference.argmax(axis=1), artifact.argmax(axis=1)
    margin = reference[rows, ref_top1] - reference[rows, art_top1]
    pair_noise = np.sqrt(2.0) * (artifact - reference).std(axis=1)
    return (ref_top1 != art_top1) & (margin <= sigmas * pair_noise)


def confident_samples(logits: np.ndarray, threshold: float = CONFIDENT_PROB) -> np.ndarray:
    """Per sample: is the softmax probability of the top-1 class at least ``threshold``?"""
    shifted = logits - logits.max(axis=1, keepdims=True)
    top = 1.0 / np.exp(shifted).sum(axis=1)  # exp(0) / sum: the top class's probability
    return top >= threshold


def compare(name: str, reference: np.ndarray, artifact: np.ndarray, decisions: bool = True) -> OutputStats:
    """Statistics of ``artifact`` against ``reference`` for one output (arrays of equal shape).

    ``decisions`` False keeps the classifier statistics (top-1, top-5, confident) off an output
    that is no classification head (a detector's pooled features are 2-D too)."""
    samples = int(artifact.shape[0]) if artifact.ndim else 1
    stats = OutputStats(name, tuple(artifact.shape), str(artifact.dtype), samples=samples)
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
    norm = float(np.linalg.norm(ref))
    stats.rel_l2 = float(np.linalg.norm(art - ref)) / norm if norm else (0.0 if stats.max_abs == 0 else math.inf)
    cosines = _cosines(ref, art)
    stats.cosine, stats.cosine_min = float(cosines.mean()), float(cosines.min())
    stats.cosine_p05 = float(np.percentile(cosines, 5))
    if decisions and ref.ndim == 2 and ref.shape[1] > 1:
        stats.top1, stats.top5 = topk_agreement(ref, art)
        stats.top1_near_ties = float(near_tie_flips(ref, art).mean())
        sure = confident_samples(ref)
        stats.confident = float(sure.mean())
        if sure.any():
            stats.top1_confident = topk_agreement(ref[sure], art[sure])[0]
    return stats
