import math

import numpy as np
import pytest

from lightexport.parity import compare, topk_agreement


def test_errors_on_known_arrays():
    ref = np.arange(8, dtype=np.float32).reshape(2, 4)  # range 7
    art = ref.copy()
    art[1, 2] += 0.7
    art[0, 0] -= 0.35
    stats = compare("logits", ref, art)
    assert stats.problem is None
    assert stats.max_abs == pytest.approx(0.7, abs=1e-6)
    assert stats.max_rel == pytest.approx(0.1, abs=1e-6)  # 0.7 / (7 - 0)
    assert stats.mean_abs == pytest.approx(1.05 / 8, abs=1e-6)
    assert stats.shape == (2, 4) and stats.dtype == "float32"


def test_cosine_is_per_sample_then_mean_and_min():
    ref = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    art = np.array([[0.0, 1.0], [2.0, 2.0], [4.0, 3.0]])
    stats = compare("x", ref, art)
    # orthogonal -> 0, parallel -> 1, (3,4)·(4,3)/25 = 24/25
    assert stats.cosine == pytest.approx((0 + 1 + 0.96) / 3)
    assert stats.cosine_min == pytest.approx(0.0)


def test_cosine_of_zero_samples():
    ref = np.array([[0.0, 0.0], [0.0, 0.0]])
    stats = compare("x", ref, np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert (stats.cosine, stats.cosine_min) == (0.5, 0.0)  # zero on both sides agrees, zero on one side does not


def test_max_rel_of_constant_and_zero_references():
    assert compare("c", np.full((2, 3), 2.0), np.full((2, 3), 2.2)).max_rel == pytest.approx(0.1)
    assert compare("z", np.zeros((2, 3)), np.zeros((2, 3))).max_rel == 0.0
    stats = compare("z", np.zeros((2, 3)), np.full((2, 3), 1e-3))
    assert stats.max_rel == math.inf
    assert stats.to_dict()["max_rel"] == "inf"


@pytest.mark.parametrize(
    "side, value, words",
    [
        ("artifact", np.nan, "artifact output has 1 NaN and 0 Inf"),
        ("reference", np.inf, "reference output has 0 NaN and 1 Inf"),
    ],
)
def test_non_finite_values_are_a_problem(side, value, words):
    ref, art = np.ones((2, 5), np.float32), np.ones((2, 5), np.float32)
    (art if side == "artifact" else ref)[1, 3] = value
    stats = compare("logits", ref, art)
    assert words in stats.problem and "of 10" in stats.problem
    assert math.isnan(stats.max_abs) and stats.to_dict()["max_abs"] is None


def test_shape_mismatch_is_a_problem():
    stats = compare("feat1", np.zeros((2, 8, 4, 4)), np.zeros((2, 8, 2, 2)))
    assert stats.problem == "shape (2, 8, 2, 2) differs from the reference's (2, 8, 4, 4)"


def test_empty_output_is_a_problem():
    assert compare("x", np.zeros((0, 3)), np.zeros((0, 3))).problem == "the output is empty"


def test_topk_on_constructed_logits():
    ref = np.array([
        [9, 1, 2, 3, 4, 5],  # argmax 0
        [1, 9, 2, 3, 4, 5],  # argmax 1
        [1, 2, 9, 3, 4, 5],  # argmax 2
        [1, 2, 3, 9, 4, 5],  # argmax 3
    ], dtype=np.float32)  # fmt: skip
    art = np.array([
        [9, 1, 2, 3, 4, 5],  # same argmax
        [1, 8, 2, 3, 4, 9],  # argmax 5, but class 1 is its 2nd
        [1, 2, 0, 3, 4, 5],  # class 2 is its 6th: outside the top 5
        [1, 2, 3, 9, 4, 5],  # same argmax
    ], dtype=np.float32)  # fmt: skip
    assert topk_agreement(ref, art) == (0.5, 0.75)
    stats = compare("logits", ref, art)
    assert (stats.top1, stats.top5) == (0.5, 0.75)


def test_topk_with_fewer_than_five_classes_uses_all():
    ref, art = np.array([[3.0, 2.0, 1.0]]), np.array([[1.0, 2.0, 3.0]])
    assert topk_agreement(ref, art) == (0.0, 1.0)


def test_topk_only_for_two_dimensional_outputs():
    stats = compare("feat0", np.ones((2, 4, 3, 3)), np.ones((2, 4, 3, 3)))
    assert stats.top1 is None and stats.top5 is None and stats.max_abs == 0.0 and stats.cosine == 1.0


def test_half_precision_artifact_is_compared_in_double():
    ref = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    stats = compare("logits", ref, ref.astype(np.float16))
    assert stats.dtype == "float16"
    assert 0 < stats.max_abs < 1e-3 and stats.top1 == 1.0


def _logits_with_margins(margins: list[float], classes: int = 1000, seed: int = 0) -> np.ndarray:
    """Random logits (std 1) whose top-1 leads the runner-up by exactly ``margins[i]`` in sample ``i``."""
    logits = np.random.default_rng(seed).standard_normal((len(margins), classes))
    for row, margin in zip(logits, margins):
        order = np.argsort(row)
        row[order[-1]] = row[order[-2]] + margin
    return logits


def test_noise_flipping_near_ties_is_told_apart_from_an_error_flipping_clear_decisions():
    from lightexport.parity import tolerance_for
    from lightexport.parity.metrics import near_tie_flips

    ref = _logits_with_margins([0.02, 0.05, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0])
    noise = 0.05 * np.random.default_rng(1).standard_normal(ref.shape)
    ties = ref + noise
    for row in ties[:2]:  # the two near-tied samples swap their top two classes
        first, second = np.argsort(row)[-1], np.argsort(row)[-2]
        row[[first, second]] = row[[second, first]]
    stats = compare("logits", ref, ties)
    assert stats.top1 == 0.75 and stats.top1_near_ties == 0.25
    assert near_tie_flips(ref, ties).tolist() == [True, True] + [False] * 6
    assert tolerance_for("int8").check(stats) == []

    planted = ref + noise  # the same noise, plus a class pushed over a clear winner in three samples
    for row in planted[2:5]:
        row[np.argsort(row)[-2]] += 3.5
    stats = compare("logits", ref, planted)
    assert stats.cosine > 0.98 and stats.cosine_min > 0.95 and stats.top5 == 1.0  # only top-1 sees it
    assert stats.top1 == 0.625 and stats.top1_near_ties == 0.0
    assert tolerance_for("int8").check(stats) == ["logits: top1 0.6250 is below 0.75 by 0.1250"]
