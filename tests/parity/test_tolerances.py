import math

import pytest

from lightexport.errors import UsageError
from lightexport.parity import TOLERANCES, OutputStats, Tolerance, tolerance_for


def _stats(name="logits", **values) -> OutputStats:
    base = dict(max_abs=1e-6, max_rel=1e-6, mean_abs=1e-7, cosine=1.0, cosine_min=1.0, cosine_p05=1.0, top1=1.0,
                top5=1.0)
    return OutputStats(name, (8, 10), "float32", **{**base, **values})


def test_every_precision_has_a_tolerance():
    assert set(TOLERANCES) == {"fp32", "fp16", "bf16", "int8"}
    assert tolerance_for("fp32").max_rel == 1e-4
    with pytest.raises(UsageError, match="'fp64'.*fp32, fp16, bf16, int8"):
        tolerance_for("fp64")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_matching_outputs_pass(precision):
    assert tolerance_for(precision).check(_stats()) == []


def test_fp32_max_rel_failure_says_by_how_much():
    assert tolerance_for("fp32").check(_stats(max_rel=3.2e-3)) == [
        "logits: max_rel 0.0032 exceeds 0.0001 (32.0x the limit)"
    ]


def test_fp16_judges_max_rel_and_cosine():
    fp16 = tolerance_for("fp16")
    assert fp16.check(_stats(max_rel=1.5e-2, cosine=0.9995)) == []
    assert fp16.check(_stats("feat2", max_rel=4e-2, cosine=0.99)) == [
        "feat2: max_rel 0.04 exceeds 0.02 (2.0x the limit)",
        "feat2: cosine 0.9900 is below 0.999 by 0.0090",
    ]


@pytest.mark.parametrize(
    "metric, value, message",
    [
        ("cosine", 0.95, "logits: cosine 0.9500 is below 0.98 by 0.0300"),
        ("top1", 0.625, "logits: top1 0.6250 is below 0.75 by 0.1250"),
        ("top5", 0.875, "logits: top5 0.8750 is below 0.95 by 0.0750"),
    ],
)
def test_int8_failure_modes(metric, value, message):
    assert tolerance_for("int8").check(_stats(max_rel=0.5, **{metric: value})) == [message]


def test_int8_feature_maps_are_judged_on_cosine_only():
    assert tolerance_for("int8").check(_stats("feat0", top1=None, top5=None, cosine=0.99)) == []


def test_a_problem_fails_whatever_the_limits():
    stats = OutputStats("logits", (2, 10), "float32", problem="the artifact output has 1 NaN and 0 Inf values (of 20)")
    for tolerance in TOLERANCES.values():
        assert tolerance.check(stats) == ["logits: the artifact output has 1 NaN and 0 Inf values (of 20)"]


def test_nan_metric_never_passes():
    assert tolerance_for("int8").check(_stats(cosine=math.nan)) == ["logits: cosine nan is below 0.98 by nan"]


def test_describe_lists_the_limits():
    assert tolerance_for("int8").describe() == (
        "cosine >= 0.98, cosine_p05 >= 0.95, cosine_min >= 0.85, "
        "top1 >= 0.75 (random heads: near-tie flips agree; trained: chance allowed), "
        "top1_confident >= 0.97, top5 >= 0.95")
    assert Tolerance("custom", max_rel=1e-3).describe() == "max_rel <= 0.001"


def test_trained_heads_judge_raw_top1_with_chance_allowed():
    int8 = tolerance_for("int8")
    # 240 decisions, half of them confident: 26 flips (89 %) is chance at a 25 % flip rate, 104 is not
    good = _stats(top1=214 / 240, top1_near_ties=26 / 240, confident=0.5, top1_confident=1.0, samples=240)
    assert int8.check(good) == []
    bad = _stats(top1=136 / 240, top1_near_ties=0.3, confident=0.5, top1_confident=0.8, samples=240)
    failures = int8.check(bad)
    assert any(f.startswith("logits: top1 0.5667 is below 0.75") and "chance" in f for f in failures)
    assert any(f.startswith("logits: top1_confident 0.8000") for f in failures)
    # on 8 inputs a trained head may flip 5 by chance (p = 0.027), not 6 (p = 0.004); near-ties excuse nothing
    assert int8.check(_stats(top1=3 / 8, confident=0.5, top1_confident=1.0, top1_near_ties=0.5, samples=8)) == []
    assert int8.check(_stats(top1=2 / 8, confident=0.5, top1_confident=1.0, top1_near_ties=0.75, samples=8))
