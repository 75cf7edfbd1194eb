"""``--int8-keep auto`` and ``lean``: how many leading convolutions stay float, chosen on the calibration images.

The layers that carry the most int8 error in mobile networks are the first ones (stem, first
depthwise, first expansion): every later layer inherits their error. Keeping the first N float
costs speed, so ``auto`` keeps the fewest N whose int8 model reaches AUTO_TARGET logit cosine
against the float model on AUTO_IMAGES calibration images (never the decision set; for a
backbone, the lowest cosine over its feature maps). One search
for every runtime: the exporter supplies how to build and score a candidate.

``lean`` is the same rule over two counts only, none and the default DEFAULT_KEEP, none tried
first: it keeps the default's float layers where they buy accuracy (trained MobileNetV2, ONNX
Runtime: calibration cosine 0.9910 keeping none, 0.9961 keeping 3) and drops them where the
network's int8 error is not in its first layers (FasterNet in OpenVINO: 0.9983-0.9988 whatever is
kept, and keeping none reaches the target at once, one quantization); at most one quantization
more than a fixed count, instead of auto's three or more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from lightexport.options import AUTO_TARGET, DEFAULT_KEEP, SEARCHES

#: The counts ``auto`` may keep. 0.9975: trained MobileNetV2 keeps 6 in ONNX Runtime (agreement on
#: 1000 decision crops 91.2 -> 94.3 % over the default 3, at 1.66x instead of 1.83x faster than
#: fp32), EfficientNet-Lite0 keeps 2.
AUTO_STEPS = (0, 1, 2, 3, 4, 6, 8, 12)
#: Convolutions kept float at each end when ``auto`` searches whole regions at both ends (ExecuTorch, LiteRT).
AUTO_ENDS = (0, 2, 4, 8, 12, 16, 24)
AUTO_IMAGES = 64
#: When no count reaches the target, a count whose int8 error (1 - cosine) is within this share of the best
#: one's does as well as far as the calibration images can tell, and every convolution kept beyond it only costs
#: speed: random-weight FasterNet-S in ONNX Runtime measured 0.9958 keeping 3, 4, 6, 8 or 12 float (its int8
#: error is spread over the whole network, not its first layers), and the old rule kept 12.
NEAR_BEST = 0.05

T = TypeVar("T")


def calibration_cosine(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """The lowest, over the model's outputs, of the mean per-sample cosine with the reference outputs.

    Every output counts: a backbone's first feature map is fed by its first few layers only,
    so judging by it alone would ignore the error of every deeper layer.
    """
    def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
        norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        return float(np.mean(np.sum(a * b, 1) / norms))

    return min(mean_cosine(a, b) for a, b in zip(reference, outputs, strict=True))


def auto_search_order(steps: list[int], meets, start: int = DEFAULT_KEEP) -> list[int]:
    """The counts a search tries, from ``start`` (DEFAULT_KEEP for ``auto``) outward, given ``meets(count)`` (does it
    reach the target).

    Cosine grows with the number of float-kept convs (measured: MobileNetV2 0.9936, 0.9956,
    0.9970, 0.9972, 0.9974, 0.9979 for 0/1/2/3/4/6 kept), so the fewest count that meets the
    target is found by walking down from the default while it holds, or up until it does:
    three quantizations on MobileNetV2 and EfficientNet-Lite0 instead of six (49 -> ~25 s).
    """
    if not steps:
        return []
    first = max((i for i, c in enumerate(steps) if c <= start), default=0)
    tried = [steps[first]]
    direction = -1 if meets(steps[first]) else 1
    i = first + direction
    while 0 <= i < len(steps):
        tried.append(steps[i])
        if meets(steps[i]) != (direction == -1):  # going down: stop at the first miss; going up: at the first hit
            break
        i += direction
    return tried


def search_keep(available: int, build: Callable[[int], tuple[float, T]],
                steps: Sequence[int] | None = None, target: float | None = None, start: int = DEFAULT_KEEP
                ) -> tuple[int, dict[int, tuple[float, T]]]:
    """Choose the float-kept count: the fewest tried that reaches ``target`` (AUTO_TARGET unless a format's
    exporter needs another); if none does, the fewest whose error is within NEAR_BEST of the best tried
    (the fewest step is then tried too: keeping layers float is no help where they are not the error).

    ``build(count)`` makes the candidate with the first ``count`` convolutions float (or whatever
    ``count`` means to the caller: ExecuTorch keeps that many at each end) and returns (its
    calibration cosine, the candidate). Returns the count and every result by count. ``steps``
    defaults to AUTO_STEPS as it is when called; ``start`` is the count tried first.
    """
    steps = AUTO_STEPS if steps is None else steps
    target = AUTO_TARGET if target is None else target
    results: dict[int, tuple[float, T]] = {}

    def meets(count: int) -> bool:
        results[count] = build(count)
        return results[count][0] >= target

    allowed = [c for c in steps if c <= available]
    auto_search_order(allowed, meets, start)
    passing = [count for count, (cosine, _) in results.items() if cosine >= target]
    if passing or not results:
        return (min(passing) if passing else 0), results
    if min(allowed) not in results:
        meets(min(allowed))
    best = max(cosine for cosine, _ in results.values())
    near = [count for count, (cosine, _) in results.items() if 1.0 - cosine <= (1.0 - best) * (1.0 + NEAR_BEST)]
    return min(near), results


def search_word(word: str, available: int, build: Callable[[int], tuple[float, T]]
                ) -> tuple[int, dict[int, tuple[float, T]]]:
    """:func:`search_keep` as the ``--int8-keep`` word ``word`` ("auto", "lean") asks, over leading counts."""
    search = SEARCHES[word]
    return search_keep(available, build, search.steps, start=search.start)
