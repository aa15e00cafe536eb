"""The canary judge (shipledger/delivery/judge.py): the issue's hand-built cases, its statistics against SciPy and
brute force, Kayenta's scoring arithmetic, config and sample parsing, and the CLI. No devnet needed."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.optimize import brentq

from shipledger.delivery import judge as J
from shipledger.errors import UsageError
from support import CLI, fails, run

HYPOTHESIS = settings(max_examples=150, deadline=None)


def gauss(seed: int, mean: float, sd: float, n: int = 50) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


def config(*metrics: dict, **rest) -> J.JudgeConfig:
    return J.JudgeConfig.from_dict({"metrics": list(metrics), **rest})


def only(judgement: J.Judgement, name: str | None = None) -> J.MetricResult:
    return next(m for m in judgement.metrics if name is None or m.name == name)


# ============================================================================ the cases

def test_judge_identical_samples_pass():
    samples = {"latency": gauss(1, 100, 10)}
    result = J.judge(samples, samples)
    assert (result.score, result.verdict) == (100.0, "pass")
    metric = only(result)
    assert metric.classification == J.PASS and "identical" in metric.reason
    assert metric.lower <= 0 <= metric.upper and metric.estimate == 0.0  # the numbers are shown all the same


def test_judge_clear_latency_increase_is_high_and_fails():
    result = J.judge({"latency": gauss(1, 100, 10)}, {"latency": gauss(2, 140, 10)},
                     config({"name": "latency", "direction": "increase"}))
    metric = only(result)
    assert metric.classification == J.HIGH
    assert metric.details["failed_test"] == "location"
    assert metric.lower > metric.details["tolerance_band"][1] and 30 < metric.estimate < 50
    assert metric.effect_size == pytest.approx(np.mean(gauss(2, 140, 10)) / np.mean(gauss(1, 100, 10)))
    assert (result.score, result.verdict) == (0.0, "fail")


def test_judge_increase_on_a_decrease_metric_passes_but_a_drop_is_low():
    cfg = config({"name": "throughput", "direction": "decrease"})
    assert only(J.judge({"throughput": gauss(1, 100, 10)}, {"throughput": gauss(2, 140, 10)}, cfg)).classification == J.PASS
    dropped = only(J.judge({"throughput": gauss(1, 100, 10)}, {"throughput": gauss(2, 60, 10)}, cfg))
    assert dropped.classification == J.LOW and dropped.upper < -dropped.details["tolerance_band"][1]


def test_judge_shift_inside_tolerance_passes():
    # A 2% shift in data whose spread is 20%: the 98% interval reaches into the band +-0.25*|estimate|.
    baseline = gauss(3, 100, 20, n=40)
    canary = [v + 2 for v in gauss(4, 100, 20, n=40)]
    metric = only(J.judge({"m": baseline}, {"m": canary}, config({"name": "m", "direction": "increase"})))
    assert metric.classification == J.PASS
    assert metric.lower <= metric.details["tolerance_band"][1]


def test_judge_precise_shift_below_allowed_increase_passes():
    # Kayenta's tolerance is relative to the estimate, so a small but precise shift is High ...
    baseline = gauss(5, 100, 1)
    canary = [v * 1.05 for v in gauss(6, 100, 1)]
    spec = {"name": "m", "direction": "increase"}
    assert only(J.judge({"m": baseline}, {"m": canary}, config(spec))).classification == J.HIGH
    # ... unless the effect size stays under allowed_increase.
    allowed = {**spec, "effect_size": {"allowed_increase": 1.1}}
    assert only(J.judge({"m": baseline}, {"m": canary}, config(allowed))).classification == J.PASS


def symmetric(seed: int, centre: float, sd: float, n: int = 60) -> list[float]:
    """n samples placed in pairs around the centre: the same median, only the spread differs."""
    return [centre + sign * z for z in gauss(seed, 0, sd, n // 2) for sign in (1, -1)]


def test_judge_variance_blowup_fails():
    baseline, canary = symmetric(7, 100, 5), symmetric(8, 100, 40)
    result = J.judge({"latency": baseline}, {"latency": canary}, config({"name": "latency", "direction": "increase"}))
    metric = only(result)
    assert metric.classification == J.HIGH and metric.details["failed_test"] == "spread"
    spread = metric.details["spread"]
    assert spread["p_value"] < spread["alpha"] == pytest.approx(0.01) and spread["ratio"] > 4
    assert metric.lower <= metric.details["tolerance_band"][1]  # the location test alone passes it
    assert result.verdict == "fail"
    # Kayenta (spread test off) passes it: kayenta#780.
    kayenta = config({"name": "latency", "direction": "increase", "spread": False})
    assert J.judge({"latency": baseline}, {"latency": canary}, kayenta).verdict == "pass"


def test_judge_spread_that_shrank_passes():
    result = J.judge({"m": symmetric(9, 100, 40)}, {"m": symmetric(10, 100, 5)})
    assert only(result).classification == J.PASS and only(result).details["spread"]["ratio"] < 1


def test_judge_all_zero_baseline_with_errors_in_the_canary_fails():
    baseline = [0.0] * 30
    canary = [0.0] * 22 + [1, 2, 1, 1, 3, 1, 1, 2]
    rate = {"name": "errors", "direction": "increase", "test": "rate"}
    result = J.judge({"errors": baseline}, {"errors": canary}, config(rate))
    metric = only(result)
    assert metric.classification == J.HIGH and result.verdict == "fail"
    assert metric.details["rate"]["canary_events"] == 12 and metric.details["rate"]["baseline_events"] == 0
    assert metric.details["rate"]["p_greater"] == pytest.approx(0.5 ** 12)
    assert metric.estimate == math.inf and metric.lower > 1
    # Mann-Whitney alone: the shift is 0 however often the canary errs (kayenta#426), so the interval is
    # [0, 0] on the band's edge, and the rank-sum test at 0 decides (Kayenta's answer hangs on its root finder)
    ranks = config({"name": "errors", "direction": "increase", "spread": False})
    metric = only(J.judge({"errors": baseline}, {"errors": canary}, ranks))
    assert (metric.lower, metric.estimate, metric.upper) == (0.0, 0.0, 0.0)
    p = stats.mannwhitneyu(canary, baseline, alternative="two-sided", method="asymptotic").pvalue
    assert metric.details["edge_test"]["p_value"] == pytest.approx(p, rel=1e-9) and p < 0.02
    assert metric.classification == J.HIGH and metric.details["failed_test"] == "location"


def test_judge_rate_test_passes_equal_sparse_rates():
    baseline = [0.0] * 25 + [1, 1, 2, 1, 1]
    canary = [0.0] * 24 + [1, 2, 1, 1, 1, 1]
    metric = only(J.judge({"e": baseline}, {"e": canary}, config({"name": "e", "test": "rate"})))
    assert metric.classification == J.PASS and metric.lower < 1 < metric.upper


def sparse(zeros: int, events: int) -> list[float]:
    """Event counts per interval: `zeros` intervals without any, `events` intervals with 1 to 3."""
    return [0.0] * zeros + [float(1 + i % 3) for i in range(events)]


def test_judge_sparse_counts_whose_interval_is_0_follow_the_rank_test():
    # issue 14: 210 intervals a side, the canary has events in 64 of them, the baseline in 17
    baseline, canary = sparse(193, 17), sparse(146, 64)
    p = stats.mannwhitneyu(canary, baseline, alternative="two-sided", method="asymptotic").pvalue
    assert p < 1e-6
    assert J.shift_interval(baseline, canary) == brute_force_interval(baseline, canary) == (0.0, 0.0)
    assert J.hodges_lehmann(baseline, canary) == np.median(np.subtract.outer(canary, baseline)) == 0.0
    assert accepted_shifts(baseline, canary) == []  # [0, 0] holds no plausible shift: 0 is a step point
    for spread in (False, True):
        metric = only(J.judge({"e": baseline}, {"e": canary}, config({"name": "e", "spread": spread})))
        assert metric.classification == J.HIGH and metric.details["failed_test"] == "location"
        assert metric.details["edge_test"]["p_value"] == pytest.approx(p, rel=1e-9)
        assert metric.details["p_value"] == pytest.approx(p, rel=1e-9)
    # the other way round it is Low, and a drop on a metric where only an increase is bad passes
    assert only(J.judge({"e": canary}, {"e": baseline}, config({"name": "e", "spread": False}))).classification == J.LOW
    dropped = only(J.judge({"e": canary}, {"e": baseline}, config({"name": "e", "direction": "increase"})))
    assert dropped.classification == J.PASS and "outside the band" in dropped.reason


def test_judge_sparse_counts_from_one_distribution_pass():
    same = sparse(193, 17)
    shuffled = random.Random(3).sample(same, len(same))
    assert only(J.judge({"e": same}, {"e": shuffled})).classification == J.PASS
    # three more intervals with events of 210: the interval is [0, 0] again but the test does not reject 0
    near = sparse(190, 20)
    assert J.shift_interval(same, near) == (0.0, 0.0)
    assert stats.mannwhitneyu(near, same, method="asymptotic").pvalue > 0.02
    assert only(J.judge({"e": same}, {"e": near})).classification == J.PASS
    # draws from one sparse distribution: as often High or Low as the test's error rate allows, and
    # exactly when the independent rule says so
    rng = random.Random(5)
    draw = lambda: [float(rng.choice([1, 2, 3])) if rng.random() < 0.15 else 0.0 for _ in range(210)]  # noqa: E731
    classes = []
    for _ in range(20):
        baseline, canary = draw(), draw()
        cfg = config({"name": "e", "spread": False})
        classes.append(only(J.judge({"e": baseline}, {"e": canary}, cfg)).classification)
        assert classes[-1] == rank_rule(baseline, canary)
    assert classes.count(J.PASS) >= 18


sparse_counts = st.builds(lambda zeros, events: [0.0] * zeros + events, st.integers(0, 60),
                          st.lists(st.sampled_from([1.0, 2.0, 5.0]), max_size=25)).filter(bool)


@given(sparse_counts, sparse_counts, st.sampled_from([0.9, 0.95, 0.98]), st.sampled_from([0.0, 0.25, 1.0]))
@HYPOTHESIS
def test_location_test_rejects_every_shift_up_to_the_band(baseline, canary, confidence, tolerance):
    """The location rule with the edge case, restated without the interval: High when the rank-sum test
    rejects every shift from the smallest difference up to the band (Low mirrored)."""
    cfg = config({"name": "e", "spread": False}, judge={"confidence": confidence, "tolerance": tolerance, "min_samples": 1})
    metric = only(J.judge({"e": baseline}, {"e": canary}, cfg))
    assert metric.classification == rank_rule(baseline, canary, confidence, tolerance)
    if len(set(baseline) | set(canary)) > 1:
        assert (metric.lower, metric.upper) == brute_force_interval(baseline, canary, confidence)


def test_judge_empty_data_is_nodata():
    cfg = config({"name": "latency"}, {"name": "errors"}, {"name": "cpu"})
    result = J.judge({"latency": gauss(1, 100, 5), "cpu": []}, {"latency": gauss(1, 100, 5), "cpu": [1.0] * 20})
    assert only(result, "cpu").classification == J.NODATA
    result = J.judge({"latency": gauss(1, 100, 5), "cpu": []}, {"latency": gauss(1, 100, 5)}, cfg)
    assert [m.classification for m in result.metrics] == [J.PASS, J.NODATA, J.NODATA]
    assert "no data for the baseline and canary" in only(result, "errors").reason
    # two of three metrics without data: half or more is Nodata, so the score is 0
    assert (result.score, result.verdict) == (0.0, "fail") and "3 metrics" in result.reason


def test_judge_must_have_data_and_critical_without_data():
    samples = {"latency": gauss(1, 100, 5)}
    must = J.judge(samples, samples, config({"name": "latency"}, {"name": "errors", "must_have_data": True},
                                            {"name": "cpu"}, {"name": "mem"}))
    assert only(must, "errors").classification == J.NODATA_FAIL
    assert must.groups["default"]["score"] == 50.0  # NodataFailMetric counts against the group
    critical = J.judge(samples, samples, config({"name": "latency"}, {"name": "errors", "critical": True}))
    assert only(critical, "errors").classification == J.NODATA and only(critical, "errors").critical
    assert critical.score == 0.0 and critical.reason.startswith("critical metric errors")


def test_judge_critical_metric_zeroes_the_score():
    baseline = {"latency": gauss(1, 100, 10), "errors": gauss(3, 5, 1)}
    canary = {"latency": gauss(2, 150, 10), "errors": gauss(4, 5, 1)}
    metrics = [{"name": "errors", "group": "errors"}, {"name": "latency", "direction": "increase", "group": "latency"}]
    plain = J.judge(baseline, canary, config(*metrics, groups={"errors": 50}))
    assert plain.score == 50.0 and plain.verdict == "fail"
    metrics[1]["critical"] = True
    critical = J.judge(baseline, canary, config(*metrics, groups={"errors": 50}))
    assert only(critical, "latency").critical and critical.score == 0.0
    assert critical.groups == plain.groups  # the groups still show what happened
    # critical_increase: a High below it is an ordinary High, not a critical failure
    metrics[1]["effect_size"] = {"critical_increase": 2.0}
    assert J.judge(baseline, canary, config(*metrics, groups={"errors": 50})).score == 50.0


def test_judge_few_samples_are_inconclusive_not_pass():
    result = J.judge({"m": [1.0, 2.0, 3.0, 4.0]}, {"m": [1.5, 2.5, 3.5, 2.0]})
    metric = only(result)
    assert metric.classification == J.NODATA and metric.reason.startswith("inconclusive: 4 baseline samples")
    assert result.score == 0.0  # the only metric is Nodata
    assert only(J.judge({"m": [1.0, 2.0, 3.0, 4.0]}, {"m": [1.5, 2.5, 3.5, 2.0]},
                        J.JudgeConfig.from_dict({"judge": {"min_samples": 4}}))).classification == J.PASS
    # evidence of harm stands with few samples: complete separation is High
    assert only(J.judge({"m": [1.0, 2.0, 3.0, 4.0, 5.0]}, {"m": [50.0, 51.0, 52.0, 53.0, 54.0]})).classification == J.HIGH


def test_judge_both_samples_constant_but_different():
    metric = only(J.judge({"m": [5.0] * 20}, {"m": [7.0] * 20}))
    assert (metric.lower, metric.estimate, metric.upper) == (2.0, 2.0, 2.0) and metric.classification == J.HIGH
    assert only(J.judge({"m": [5.0] * 20}, {"m": [5.0] * 20})).classification == J.PASS


# ============================================================================ NaN and outliers

def test_judge_nan_remove_and_replace():
    baseline = [math.nan] * 5 + gauss(1, 10, 1, n=20)
    canary = gauss(2, 10, 1, n=20) + [math.nan, math.inf]
    removed = only(J.judge({"m": baseline}, {"m": canary}))
    assert removed.details["baseline"]["count"] == 20 and removed.details["canary"]["count"] == 20
    assert (removed.details["baseline_nan"], removed.details["canary_nan"]) == (5, 2)
    replaced = only(J.judge({"m": baseline}, {"m": canary}, J.JudgeConfig.from_dict({"judge": {"nan_strategy": "replace"}})))
    assert replaced.details["baseline"]["count"] == 25 and replaced.details["baseline"]["min"] == 0.0


def test_judge_nan_replace_fills_a_missing_side_with_zeros():
    # Prometheus has no series for an error counter that never fired: with replace that is zero errors.
    spec = {"name": "errors", "direction": "increase", "nan_strategy": "replace", "test": "rate"}
    metric = only(J.judge({}, {"errors": [0.0] * 20 + [2.0] * 10}, config(spec)))
    assert metric.details["filled_with_zeros"] == "baseline" and metric.classification == J.HIGH
    both_missing = only(J.judge({"x": [1.0]}, {"x": [1.0]}, config(spec)))
    assert both_missing.classification == J.PASS and "no events" in both_missing.reason
    # Kayenta's default, remove: no data
    assert only(J.judge({}, {"errors": [1.0] * 20}, config({"name": "errors"}))).classification == J.NODATA


def numpy_fences(values, factor=3.0):
    """Kayenta's IQRDetector(factor, reduceSensitivity=true) on numpy's R-7 ("linear") percentiles: the wider of
    Tukey's fences and P1/P99."""
    q1, q3, p1, p99 = np.percentile(values, [25, 75, 1, 99], method="linear")
    return min(p1, q1 - factor * (q3 - q1)), max(p99, q3 + factor * (q3 - q1))


def outside(values, factor=3.0) -> list[float]:
    low, high = numpy_fences(values, factor)
    return sorted(v for v in values if not low <= v <= high)


def removed(values, factor=3.0) -> list[float]:
    kept = J.remove_outliers(list(values), factor)
    assert kept == [v for v in values if v in kept]  # the order of what is kept is unchanged
    return sorted((Counter(values) - Counter(kept)).elements())


def test_judge_outlier_removal():
    rng = random.Random(11)
    baseline = [rng.gauss(100, 5) for _ in range(300)]
    canary = [rng.gauss(100, 5) for _ in range(297)] + [5000.0, 7000.0, 9000.0]
    spec = {"name": "m", "outliers": {"remove": True}}
    metric = only(J.judge({"m": baseline}, {"m": canary}, config(spec)))
    assert metric.details["canary_outliers_removed"] == 3 and metric.details["canary"]["max"] < 200
    assert metric.details["baseline_outliers_removed"] == len(outside(baseline))
    # 200 samples: P99 lies between the two smallest spikes, so the fence keeps the smallest of them
    assert removed(canary[100:]) == outside(canary[100:]) == [7000.0, 9000.0]


def test_outlier_fences_remove_one_far_point_from_a_small_sample():
    # 51 samples: P99 is halfway between the last two, 500.5; the old p*(n+1) position made it 1000
    spike = [1.0] * 50 + [1000.0]
    assert J.outlier_fences(spike) == pytest.approx(numpy_fences(spike))
    assert removed(spike) == outside(spike) == [1000.0]
    # one far point on each side of 20 ordinary ones, and only those two
    both = [-500.0, *map(float, range(10, 30)), 600.0]
    assert removed(both) == outside(both) == [-500.0, 600.0]
    # two points far out on one side: P99 lies between them and the fence keeps the smaller
    pair = [1.0] * 30 + [1000.0, 1001.0]
    assert removed(pair) == outside(pair) == [1001.0]
    # a point inside Tukey's fence stays
    near = [*map(float, range(1, 21)), 25.0]
    assert removed(near) == outside(near) == []


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300), st.floats(0, 100))
@HYPOTHESIS
def test_percentile_matches_numpy_linear(values, p):
    data = sorted(values)
    assert J.percentile(data, p) == pytest.approx(np.percentile(data, p, method="linear"), rel=1e-9, abs=1e-6)


@given(st.lists(st.integers(-50, 50).map(float), min_size=1, max_size=120), st.sampled_from([1.5, 3.0]))
@HYPOTHESIS
def test_remove_outliers_matches_numpy_fences(values, factor):
    assert removed(values, factor) == outside(values, factor)


# ============================================================================ the numbers, independently

def kayenta_interval(baseline, canary, confidence=0.98):
    """Kayenta's MannWhitney.calculateConfidenceInterval transcribed onto SciPy: rank the shifted canary
    with the baseline, correct for ties and continuity, and solve for the roots with Brent's method."""
    x, y = np.asarray(canary, float), np.asarray(baseline, float)
    m, n = len(x), len(y)

    def wdiff(mu, zq):
        ranks = stats.rankdata(np.concatenate([x - mu, y]))
        _, ties = np.unique(ranks, return_counts=True)
        dz = ranks[:m].sum() - m * (m + 1) / 2 - m * n / 2
        sigma = math.sqrt(m * n / 12 * ((m + n + 1) - (ties ** 3 - ties).sum() / ((m + n) * (m + n - 1))))
        return (dz - np.sign(dz) * 0.5) / sigma - zq

    mu_min, mu_max = x.min() - y.max(), x.max() - y.min()

    def root(zq):
        if wdiff(mu_min, zq) <= 0:
            return mu_min
        if wdiff(mu_max, zq) >= 0:
            return mu_max
        return brentq(wdiff, mu_min, mu_max, args=(zq,), xtol=1e-12, rtol=1e-14)

    z = stats.norm.ppf((1 - confidence) / 2)
    return root(-z), root(z)


def rejects(baseline, canary, shift, side, confidence=0.98) -> bool:
    """SciPy's one-sided rank-sum test of the canary shifted by `shift` rejects towards `side` (+1
    canary higher, -1 lower) at the two-sided level 1 - confidence."""
    shifted = np.asarray(canary, float) - shift
    if len(set(shifted) | set(baseline)) == 1:
        return False  # SciPy answers NaN: nothing to rank
    alternative = "greater" if side > 0 else "less"
    return stats.mannwhitneyu(shifted, baseline, alternative=alternative, method="asymptotic").pvalue < (1 - confidence) / 2


def candidate_shifts(baseline, canary) -> list[float]:
    """Every difference canary - baseline, the midpoints between neighbours and a point beyond each end:
    the rank statistic only changes at the differences, so these are all the shifts there are."""
    steps = sorted(set(np.subtract.outer(canary, baseline).ravel().tolist()))
    middles = [(a + b) / 2 for a, b in zip(steps, steps[1:])]
    return sorted([steps[0] - 1, *steps, *middles, steps[-1] + 1])


def accepted_shifts(baseline, canary, confidence=0.98) -> list[float]:
    """The candidate shifts the two-sided test does not reject: the confidence set, brute force."""
    return [mu for mu in candidate_shifts(baseline, canary)
            if not rejects(baseline, canary, mu, 1, confidence) and not rejects(baseline, canary, mu, -1, confidence)]


def brute_force_interval(baseline, canary, confidence=0.98) -> tuple[float, float]:
    """Kayenta's interval by brute force: its lower end is the first step after which the test no longer
    rejects towards a higher canary (the smallest difference when it never did), its upper end mirrored."""
    steps = sorted(set(np.subtract.outer(canary, baseline).ravel().tolist()))
    after = lambda i: (steps[i] + steps[i + 1]) / 2 if i + 1 < len(steps) else steps[i] + 1  # noqa: E731
    before = lambda i: (steps[i - 1] + steps[i]) / 2 if i > 0 else steps[i] - 1  # noqa: E731
    if not rejects(baseline, canary, steps[0], 1, confidence):
        lower = steps[0]
    else:
        lower = next((d for i, d in enumerate(steps) if not rejects(baseline, canary, after(i), 1, confidence)), steps[-1])
    if not rejects(baseline, canary, steps[-1], -1, confidence):
        upper = steps[-1]
    else:
        upper = next((d for i, d in reversed(list(enumerate(steps))) if not rejects(baseline, canary, before(i), -1, confidence)), steps[0])
    return lower, upper


def rank_rule(baseline, canary, confidence=0.98, tolerance=0.25) -> str:
    """The location test's classification (direction either, the effect size at its default of 1.0),
    from SciPy and numpy alone: High when every shift from the smallest difference up to the band
    +-tolerance*|median difference| is rejected towards a higher canary. The rejection only grows as the
    shift falls, so the test at the band's edge settles it; below the smallest difference nothing is left."""
    differences = np.subtract.outer(canary, baseline).ravel()
    band = tolerance * abs(float(np.median(differences)))
    b, c = np.mean(baseline), np.mean(canary)
    ratio = math.nan if b == 0 or c == 0 else c / b
    if (differences.min() > band or rejects(baseline, canary, band, 1, confidence)) and not ratio < 1:
        return J.HIGH
    if (differences.max() < -band or rejects(baseline, canary, -band, -1, confidence)) and not ratio > 1:
        return J.LOW
    return J.PASS


small_samples = st.lists(st.integers(0, 12).map(float), min_size=1, max_size=14)


@given(small_samples, small_samples, st.sampled_from([0.9, 0.95, 0.98]))
@HYPOTHESIS
def test_shift_interval_matches_kayenta_root_finding(baseline, canary, confidence):
    if min(canary) - max(baseline) == max(canary) - min(baseline):
        return  # both constant: Kayenta adds random noise there (checked by hand above)
    lower, upper = J.shift_interval(baseline, canary, confidence)
    expected = kayenta_interval(baseline, canary, confidence)
    assert lower == pytest.approx(expected[0], abs=1e-9) and upper == pytest.approx(expected[1], abs=1e-9)
    assert (lower, upper) == brute_force_interval(baseline, canary, confidence)
    assert lower <= J.hodges_lehmann(baseline, canary) <= upper


def test_shift_interval_matches_kayenta_on_larger_samples():
    for seed in range(4):
        baseline, canary = gauss(seed, 100, 10, n=120), gauss(seed + 50, 104, 12, n=90)
        lower, upper = J.shift_interval(baseline, canary)
        expected = kayenta_interval(baseline, canary)
        assert lower == pytest.approx(expected[0], abs=1e-9) and upper == pytest.approx(expected[1], abs=1e-9)


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=15), st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=15))
@HYPOTHESIS
def test_hodges_lehmann_is_the_median_of_all_differences(baseline, canary):
    differences = np.subtract.outer(np.asarray(canary), np.asarray(baseline)).ravel()
    assert J.hodges_lehmann(baseline, canary) == pytest.approx(float(np.median(differences)), rel=1e-12, abs=1e-12)
    ordered = np.sort(differences)
    k = len(ordered) // 2 + 1
    assert J.kth_difference(sorted(canary), sorted(baseline), k) == ordered[k - 1]


@given(small_samples, small_samples)
@HYPOTHESIS
def test_mann_whitney_and_cles_match_scipy(baseline, canary):
    if len(set(baseline) | set(canary)) == 1:
        return  # SciPy answers NaN; the judge passes these before testing
    expected = stats.mannwhitneyu(canary, baseline, alternative="two-sided", method="asymptotic").pvalue
    assert J.mann_whitney_p(baseline, canary) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    pairs = [(c > b) + 0.5 * (c == b) for c in canary for b in baseline]
    assert J.cles(baseline, canary) == pytest.approx(sum(pairs) / len(pairs))


@given(st.lists(st.integers(0, 30).map(float), min_size=2, max_size=25), st.lists(st.integers(0, 30).map(float), min_size=2, max_size=25))
@HYPOTHESIS
def test_spread_test_matches_scipy_on_deviations(baseline, canary):
    base_dev = np.abs(np.asarray(baseline) - np.median(baseline))
    can_dev = np.abs(np.asarray(canary) - np.median(canary))
    p, ratio = J.spread_test(baseline, canary)
    if len(set(base_dev) | set(can_dev)) == 1:
        assert p == 1.0
        return
    expected = stats.mannwhitneyu(can_dev, base_dev, alternative="greater", method="asymptotic").pvalue
    assert p == pytest.approx(expected, rel=1e-9, abs=1e-12)
    if base_dev.mean() > 0:
        assert ratio == pytest.approx(can_dev.mean() / base_dev.mean())


def exact_binomial_tail(ks, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in ks), Fraction(0))


def test_rate_test_far_tail_is_exact_where_scipy_is_not():
    """179 canary events against 15, a 1:58 exposure: the exact tail is 7.3474891485e-296."""
    rate = J.rate_test([15.0] + [0.0] * 57, [179.0], 0.9)
    exact = float(exact_binomial_tail(range(179, 195), 194, Fraction(1, 59)))
    assert rate["p_greater"] == pytest.approx(exact, rel=1e-9)


@given(st.integers(0, 400), st.integers(0, 400), st.integers(1, 60), st.integers(1, 60), st.sampled_from([0.9, 0.98]))
@HYPOTHESIS
def test_rate_test_matches_scipy_binomtest(canary_events, baseline_events, n_canary, n_baseline, confidence):
    canary = [float(canary_events)] + [0.0] * (n_canary - 1)
    baseline = [float(baseline_events)] + [0.0] * (n_baseline - 1)
    rate = J.rate_test(baseline, canary, confidence)
    total, share = canary_events + baseline_events, n_canary / (n_canary + n_baseline)
    if total == 0:
        assert rate["p_greater"] == rate["p_less"] == 1.0 and rate["rate_ratio"] == 1.0
        return
    greater = stats.binomtest(canary_events, total, share, alternative="greater").pvalue
    less = stats.binomtest(canary_events, total, share, alternative="less").pvalue
    if min(greater, less) < 1e-250:
        # SciPy loses digits this far out (179 of 194 at 1/59: 2e-5 off); exact rationals decide
        exact_share = Fraction(n_canary, n_canary + n_baseline)
        greater = float(exact_binomial_tail(range(canary_events, total + 1), total, exact_share))
        less = float(exact_binomial_tail(range(0, canary_events + 1), total, exact_share))
    assert rate["p_greater"] == pytest.approx(greater, rel=1e-6, abs=1e-300)
    assert rate["p_less"] == pytest.approx(less, rel=1e-6, abs=1e-300)
    interval = stats.binomtest(canary_events, total).proportion_ci(confidence, method="exact")
    to_ratio = lambda pi: math.inf if pi >= 1 else pi / (1 - pi) * n_baseline / n_canary  # noqa: E731
    for ours, theirs in ((rate["lower"], to_ratio(interval.low)), (rate["upper"], to_ratio(interval.high))):
        assert ours == theirs or ours == pytest.approx(theirs, rel=1e-7)


def test_binomial_tails_keep_tiny_probabilities():
    assert J.binomial_upper(900, 1000, 0.5) == pytest.approx(stats.binom.sf(899, 1000, 0.5), rel=1e-9)
    assert J.binomial_lower(100, 1000, 0.5) == pytest.approx(stats.binom.cdf(100, 1000, 0.5), rel=1e-9)
    assert J.binomial_upper(200_000, 1_000_000, 0.2) == pytest.approx(stats.binom.sf(199_999, 1_000_000, 0.2), rel=1e-7)


# ============================================================================ Kayenta's scoring

def classified(name: str, classification: str, group: str, critical=False, muted=False) -> J.MetricResult:
    return J.MetricResult(name=name, classification=classification, reason="", critical=critical, muted=muted, groups=(group,))


def test_score_unweighted_groups_share_the_remaining_weight():
    results = [classified("a", J.PASS, "latency"), classified("b", J.HIGH, "latency"),
               classified("c", J.PASS, "errors"), classified("d", J.NODATA, "saturation")]
    total, groups, reason = J.score(results, {"latency": 60})
    # latency 50 * 0.6 + errors 100 * 0.2 + saturation (only Nodata: counts as 100) * 0.2
    assert (total, reason) == (70.0, "")
    assert groups["errors"]["weight"] == groups["saturation"]["weight"] == 20.0
    assert groups["saturation"] == {"score": 0.0, "weight": 20.0, "no_data": True, "counts": {"Nodata": 1}}


def test_score_group_is_pass_over_judged_and_rounds_half_up():
    results = [classified("a", J.PASS, "g"), classified("b", J.LOW, "g"), classified("c", J.NODATA_FAIL, "g"),
               classified("d", J.NODATA, "g")]
    total, groups, _ = J.score(results)
    assert groups["g"]["score"] == pytest.approx(100 / 3) and total == 33.33  # Nodata is not in the denominator
    assert J._round_half_up(12.125) == 12.13 and J._round_half_up(99.994999) == 99.99


def test_score_half_nodata_and_muted_and_critical():
    assert J.score([classified("a", J.PASS, "g"), classified("b", J.NODATA, "g")])[0] == 0.0
    muted = [classified("a", J.PASS, "g"), classified("b", J.HIGH, "g", critical=True, muted=True)]
    assert J.score(muted)[0] == 100.0
    critical = [classified("a", J.PASS, "g"), classified("b", J.HIGH, "h", critical=True)]
    assert J.score(critical)[0] == 0.0
    assert J.score([classified("a", J.HIGH, "g", muted=True)])[2] == "every metric is muted: nothing was judged"


def test_judge_verdict_thresholds_are_inclusive():
    same = gauss(1, 100, 5)
    baseline = {f"m{i}": same for i in range(4)}
    canary = {**baseline, "m3": gauss(2, 200, 5)}
    assert J.judge(baseline, canary).score == 75.0 and J.judge(baseline, canary).verdict == "marginal"
    strict = J.JudgeConfig.from_dict({"judge": {"pass": 75, "marginal": 50}})
    assert J.judge(baseline, canary, strict).verdict == "pass"


def test_judge_muted_metric_is_shown_but_not_scored():
    cfg = config({"name": "ok"}, {"name": "bad", "muted": True, "critical": True})
    result = J.judge({"ok": gauss(1, 10, 1), "bad": gauss(1, 10, 1)}, {"ok": gauss(1, 10, 1), "bad": gauss(2, 50, 1)}, cfg)
    assert only(result, "bad").classification == J.HIGH and only(result, "bad").muted
    assert result.score == 100.0 and result.verdict == "pass"


# ============================================================================ config and samples

def test_config_keeps_unknown_keys_for_the_rollout_controller():
    raw = {"source": {"prometheus": "http://127.0.0.1:9090"},
           "judge": {"confidence": 0.95, "min_samples": 5},
           "groups": {"latency": 70},
           "metrics": [{"name": "p99", "direction": "increase", "group": "latency", "query": {"baseline": "a", "canary": "b"},
                        "effect_size": {"measure": "cles"}, "spread": {"max_ratio": 2}},
                       {"name": "errors", "group": "errors", "test": "rate", "critical": True}]}
    cfg = J.JudgeConfig.from_dict(raw)
    assert cfg.raw == raw and cfg.raw is not raw
    assert (cfg.confidence, cfg.min_samples, cfg.pass_threshold, cfg.group_weights) == (0.95, 5, 90.0, {"latency": 70.0})
    p99, errors = cfg.metrics
    assert (p99.direction, p99.groups, p99.effect_measure, p99.allowed_increase, p99.spread_max_ratio) == ("increase", ("latency",), "cles", 0.5, 2.0)
    assert (errors.test, errors.critical, errors.spread) == ("rate", True, True)


@pytest.mark.parametrize(("raw", "needle"), [
    ({"metrics": [{"name": "a", "direction": "up"}]}, "metrics[0] (a).direction must be increase or decrease or either"),
    ({"metrics": [{"name": "a"}, {"name": "a"}]}, "a configured more than once"),
    ({"metrics": [{"direction": "increase"}]}, "metrics[0] must be a mapping with a non-empty name"),
    ({"groups": {"a": 70, "b": 40}, "metrics": [{"name": "x", "group": "a"}, {"name": "y", "group": "b"}]}, "add up to 110"),
    ({"groups": {"latncy": 50}, "metrics": [{"name": "x", "group": "latency"}]}, "latncy has a weight but no metric is in it"),
    ({"judge": {"confidance": 0.9}}, "judge: unknown key confidance"),
    ({"metrics": [{"name": "a", "critcal": True}]}, "metrics[0] (a): unknown key critcal"),
    ({"judge": {"confidence": 1.5}}, "judge.confidence must be between 0 and 1"),
    ({"judge": {"pass": 70, "marginal": 80}}, "marginal <= pass <= 100"),
    ({"judge": {"nan_strategy": "zero"}}, "judge.nan_strategy must be remove or replace"),
    ({"judge": {"min_samples": 0}}, "judge.min_samples must be a whole number from 1"),
    ({"metrics": [{"name": "a", "critical": "yes"}]}, "metrics[0] (a).critical must be true or false"),
    ({"metrics": [{"name": "a", "effect_size": {"measure": "cles", "allowed_increase": 1.2}}]}, "CLES thresholds are probabilities"),
    ({"metrics": [{"name": "a", "outliers": {"remove": True, "factor": -1}}]}, "outliers.factor must be greater than 0"),
    ({"metrics": [{"name": "a", "test": "t-test"}]}, "test must be mann-whitney or rate"),
    ({"metrics": {"name": "a"}}, "metrics must be a list"),
    ([1, 2], "the config must be a mapping"),
])
def test_config_rejects_bad_input(raw, needle):
    with pytest.raises(UsageError, match=None) as caught:
        J.JudgeConfig.from_dict(raw)
    assert needle in str(caught.value)


def test_load_config_yaml_json_and_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("judge: {pass: 95}\nmetrics:\n  - name: p99\n    direction: increase\n")
    (tmp_path / "c.json").write_text(json.dumps({"judge": {"pass": 95}, "metrics": [{"name": "p99", "direction": "increase"}]}))
    assert J.load_config(tmp_path / "c.yaml") == J.load_config(tmp_path / "c.json")
    (tmp_path / "bad.yaml").write_text("metrics:\n  - name: p99\n    direction: [\n")
    with pytest.raises(UsageError, match=r"bad.yaml:\d+: not valid YAML"):
        J.load_config(tmp_path / "bad.yaml")
    (tmp_path / "wrong.yaml").write_text("metrics:\n  - name: p99\n    direction: sideways\n")
    with pytest.raises(UsageError, match=r"wrong.yaml: metrics\[0\] \(p99\).direction"):
        J.load_config(tmp_path / "wrong.yaml")
    with pytest.raises(UsageError, match="cannot read config"):
        J.load_config(tmp_path / "missing.yaml")


def test_load_samples_csv_and_json(tmp_path):
    (tmp_path / "s.csv").write_text("metric,value\n# a comment\nlatency,1.5\nlatency,NaN\n\nerrors,0\n")
    samples = J.load_samples(tmp_path / "s.csv")
    assert samples["errors"] == [0.0] and samples["latency"][0] == 1.5 and math.isnan(samples["latency"][1])
    (tmp_path / "s.json").write_text('{"latency": [1.5, null], "errors": [0]}')
    as_json = J.load_samples(tmp_path / "s.json")
    assert as_json["errors"] == [0.0] and math.isnan(as_json["latency"][1])
    (tmp_path / "noheader.csv").write_text("latency,2\nlatency,3\n")
    assert J.load_samples(tmp_path / "noheader.csv") == {"latency": [2.0, 3.0]}


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("bad.csv", "metric,value\nlatency,1\nlatency,fast\n", "bad.csv:3: 'fast' is not a number"),
    ("fields.csv", "latency,1,2\n", "fields.csv:1: expected `metric,value`, got 3 fields"),
    ("inf.csv", "latency,1\nlatency,inf\n", "inf.csv:2: 'inf' is infinite"),
    ("bad.json", '{"latency": [1,\n 2,,]}', "bad.json:2: not valid JSON"),
    ("list.json", '{"latency": 3}', "latency must be a list of numbers"),
    ("item.json", '{"latency": [1, "x"]}', "latency[1]: 'x' is not a number"),
])
def test_load_samples_rejects_bad_rows(tmp_path, name, text, needle):
    (tmp_path / name).write_text(text)
    with pytest.raises(UsageError) as caught:
        J.load_samples(tmp_path / name)
    assert needle in str(caught.value)


def test_judge_json_shape_and_nothing_to_judge():
    document = J.judge({"m": gauss(1, 10, 1), "extra": [1.0]}, {"m": gauss(2, 30, 1)}, config({"name": "m"})).to_dict()
    assert document["judge_version"] == J.JUDGE_VERSION and document["unjudged_metrics"] == ["extra"]
    metric = document["metrics"][0]
    for key in ("name", "classification", "lower", "upper", "estimate", "effect_size", "critical", "reason", "p_value",
                "tolerance_band", "mean_ratio", "cles", "baseline", "canary", "spread"):
        assert key in metric
    json.dumps(document, allow_nan=False)  # strict JSON: no NaN or Infinity
    rate = J.judge({"e": [0.0] * 20}, {"e": [1.0] * 20}, config({"name": "e", "test": "rate"})).to_dict()
    assert rate["metrics"][0]["upper"] == "inf" and json.dumps(rate, allow_nan=False)
    with pytest.raises(UsageError, match="nothing to judge"):
        J.judge({}, {})


# ============================================================================ the CLI

@pytest.fixture
def files(tmp_path):
    def write(name: str, data) -> str:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return str(path)
    return write


def test_cli_canary_judge_pass_and_fail(tmp_path, files):
    baseline = files("b.json", {"latency": gauss(1, 100, 10), "errors": [0] * 30})
    healthy = files("c.json", {"latency": gauss(2, 100, 10), "errors": [0] * 30})
    sick = files("s.json", {"latency": gauss(3, 100, 10), "errors": [0] * 20 + [1] * 10})
    cfg = files("cfg.yaml", "source: {prometheus: 'http://127.0.0.1:9090'}\nmetrics:\n  - name: latency\n    direction: increase\n"
                            "    query: {baseline: a, canary: b}\n  - name: errors\n    direction: increase\n    test: rate\n    critical: true\n")
    result = run(["canary", "judge", "--baseline", baseline, "--canary", healthy, "--config", cfg, "--json"], cwd=tmp_path)
    assert result.code == 0 and result.json()["verdict"] == "pass" and result.json()["score"] == 100.0
    result = run(["canary", "judge", "--baseline", baseline, "--canary", sick, "--config", cfg, "--json"], cwd=tmp_path)
    document = result.json()
    assert result.code == 3 and (document["verdict"], document["score"]) == ("fail", 0.0)
    assert document["reason"].startswith("critical metric errors failed: canary event rate is higher")
    human = run(["canary", "judge", "--baseline", baseline, "--canary", sick, "--config", cfg], cwd=tmp_path)
    assert human.code == 3 and "score 0.00: FAIL" in human.out and "errors" in human.out and "High !" in human.out


def test_cli_output_to_a_reader_that_went_away_is_not_an_error(tmp_path, files):
    """`shipledger ... --json | head -c 1`: the pipe closes before the command writes."""
    samples = files("b.json", {"latency": gauss(1, 100, 10)})
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read
    proc = subprocess.run([*CLI, "canary", "judge", "--baseline", samples, "--canary", samples, "--json"],
                          cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_cli_canary_judge_marginal_exits_3(tmp_path, files):
    same = gauss(1, 100, 5)
    baseline = files("b.csv", "metric,value\n" + "".join(f"m{i},{v}\n" for i in range(4) for v in same))
    canary = files("c.csv", "".join(f"m{i},{v}\n" for i in range(3) for v in same) + "".join(f"m3,{v}\n" for v in gauss(2, 200, 5)))
    result = run(["canary", "judge", "--baseline", baseline, "--canary", canary, "--json"], cwd=tmp_path)
    assert result.code == 3 and (result.json()["verdict"], result.json()["score"]) == ("marginal", 75.0)


def test_cli_canary_judge_bad_input_exits_2(tmp_path, files):
    good = files("b.json", {"m": [1.0] * 10})
    bad = files("bad.csv", "m,1\nm,one\n")
    fails(run(["canary", "judge", "--baseline", good, "--canary", bad, "--json"], cwd=tmp_path), 2, "bad.csv:2", "'one' is not a number")
    wrong = files("cfg.json", {"metrics": [{"name": "m", "direction": "up"}]})
    fails(run(["canary", "judge", "--baseline", good, "--canary", good, "--config", wrong], cwd=tmp_path), 2, "cfg.json", "direction")
    fails(run(["canary", "judge", "--baseline", good, "--canary", str(tmp_path / "nope.json")], cwd=tmp_path), 2, "cannot read samples")
    assert run(["canary", "judge", "--baseline", good], cwd=tmp_path).code == 2  # argparse: --canary is required
