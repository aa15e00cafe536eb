"""The canary judge: is the canary worse than the baseline, metric by metric, and what is the score?

It follows Netflix's ACA judge as Kayenta implements it (spinnaker/kayenta: NetflixACAJudge,
MannWhitneyClassifier, MannWhitney, WeightedSumScorer, Transforms, IQRDetector, EffectSizes), and adds
three rules where Kayenta's users found it passing bad canaries. Pure Python (math, statistics), so the
CLI starts fast; the tests check the numbers against SciPy and brute force.

Per metric, in order:

1. NaN handling (Kayenta's nanStrategy): `remove` drops NaN samples, `replace` turns them into 0.
   Infinities are treated as NaN. Unlike Kayenta, `replace` also fills a side that has no samples at all
   with as many zeros as the other side has: Prometheus returns no series for an error counter that never
   fired, and Kayenta then passes a canary whose errors have no baseline to be compared with.
2. Optional outlier removal (Kayenta's IQRDetector with reduceSensitivity): a sample is removed when it
   lies outside [min(P1, Q1 - f*IQR), max(P99, Q3 + f*IQR)], f = 3.0 by default, percentiles by the R-7
   definition (position 1 + (n-1)*p, numpy's "linear") that Kayenta asks Apache Commons Math for. Up to
   101 samples P1 lies between the two smallest samples and P99 between the two largest, so a small
   sample can lose its most extreme point on each side, never more than that one.
3. No data on a side: Nodata, or NodataFailMetric for a `must_have_data` metric that is not critical; a
   critical metric with no data fails the canary (Kayenta marks that result critical).
4. The location test (Kayenta's MannWhitneyClassifier): identical samples, or one value everywhere, Pass.
   Otherwise the two-sided Mann-Whitney (Wilcoxon rank-sum) confidence interval for the shift
   canary - baseline at `confidence` (0.98), by the normal approximation with tie and continuity
   corrections as R's wilcox.test(conf.int=TRUE, exact=FALSE) and Kayenta's MannWhitney compute it, and the
   Hodges-Lehmann estimate (the median of all canary - baseline differences). The metric is High when the
   whole interval lies above the tolerance band +-tolerance*|estimate| (0.25) and the effect size reaches
   `allowed_increase`; Low mirrors it with `allowed_decrease`; `direction` says which of the two count.
   A NaN effect size (a mean of 0) skips the effect size check, as Kayenta's documentation says.
   The interval's ends are differences, so on heavily tied data an end can fall exactly on the band's
   edge: sparse counts, mostly 0, give the interval [0, 0] and an estimate, so a band, of 0 even when the
   canary has events four times as often. The interval cannot say whether the edge itself is a plausible
   shift; the rank-sum test of the canary shifted by the edge can: when it rejects that shift at
   `confidence` (two-sided) with the canary above the baseline, the interval counts as above the band
   (below, mirrored). At the usual edge 0 this is the test's reported p-value. That makes the rule
   "High when the test rejects every shift from the smallest difference up to the band", whereas
   Kayenta's answer at an edge depends on which side of it its root finder stops (tolerance 1e-4).
   Otherwise the p-value decides nothing, as in Kayenta.
5. The spread test (new; kayenta#780): a canary whose spread blew up while its median stayed put passes
   a location test. When the location test passes, the absolute deviations from each side's own median
   are compared with a one-sided Mann-Whitney test (a rank form of the Brown-Forsythe test for equal
   spread). The metric is High when that p-value is below (1 - confidence)/2 (the error rate of each side
   of the location interval, 0.01 by default) and the canary's mean absolute deviation is at least
   `max_ratio` (1.5) times the baseline's. Spread that shrank is never a failure.
6. The rate test (new, `test: rate`; kayenta#426): for sparse event counts that are mostly zero the
   shift and its interval are 0 whatever happens, so Mann-Whitney is left with the rank test at the edge
   (rule 4), which sees in how many intervals each side had events more than how many events there were
   (and Kayenta's answer depends on its root finder). Samples are read as event counts per interval
   (e.g. PromQL `increase(errors[1m])`); the totals (rounded to whole events) are compared with the
   exact conditional test for two Poisson rates: given N events in all, the canary's share is
   Binomial(N, n_c/(n_c+n_b)) when both rates are equal.
   High when the one-sided p-value is below (1 - confidence)/2 and the rate ratio reaches
   `allowed_increase`; Low mirrors it. lower/upper/estimate are then the rate ratio and its exact
   (Clopper-Pearson) interval, not a shift.
7. Minimum sample size (new): a metric that would Pass with fewer than `min_samples` samples on a side
   is Nodata ("inconclusive"), not Pass, so it counts toward the half-Nodata rule and, when critical,
   fails the canary. High and Low stand: evidence of harm stays evidence with few samples.

Scoring is Kayenta's WeightedSumScorer: muted metrics are left out; a group scores
Pass / (Pass + High + Low + NodataFailMetric) * 100, a group of only Nodata counts as 100; configured
group weights are used as given and the groups without one share what is left of 100 equally; the sum is
rounded half-up to two decimals. The score is 0 when a critical metric fails or when half or more of the
metrics are Nodata. Verdict: pass at or above `pass` (90), marginal at or above `marginal` (75), else fail.

Every number behind a classification is in the result (kayenta#521): the interval, estimate and band,
effect sizes, p-values of every test, sample sizes and a sentence saying why.
"""

from __future__ import annotations

import bisect
import copy
import csv
import json
import math
import statistics
import struct
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from shipledger.errors import UsageError, path_error

JUDGE_VERSION = "shipledger-judge/2"  # recorded on chain with each verdict; bump on any rule change

PASS, HIGH, LOW, NODATA, NODATA_FAIL = "Pass", "High", "Low", "Nodata", "NodataFailMetric"
DIRECTIONS = ("increase", "decrease", "either")
NAN_STRATEGIES = ("remove", "replace")
TESTS = ("mann-whitney", "rate")
MEASURES = ("meanRatio", "cles")
DEFAULT_GROUP = "default"
METRIC_KEYS = ("name", "direction", "group", "groups", "critical", "must_have_data", "muted", "test", "spread",
               "outliers", "effect_size", "nan_strategy", "min_samples", "query", "command")
NODATA_PERCENT = 50  # Kayenta's NODATA_THRESHOLD: this share of Nodata metrics or more fails the canary
_NORMAL = statistics.NormalDist()


# ============================================================================ configuration

@dataclass(frozen=True)
class MetricConfig:
    """How one metric is judged. Thresholds of the effect size depend on its measure: a mean ratio
    of 1.0 or a CLES of 0.5 means no change."""

    name: str
    direction: str = "either"  # which way is bad
    groups: tuple[str, ...] = (DEFAULT_GROUP,)
    critical: bool = False
    must_have_data: bool = False
    muted: bool = False
    test: str = "mann-whitney"
    spread: bool = True
    spread_max_ratio: float = 1.5
    outliers: bool = False
    outlier_factor: float = 3.0
    effect_measure: str = "meanRatio"
    allowed_increase: float = 1.0
    critical_increase: float = 1.0
    allowed_decrease: float = 1.0
    critical_decrease: float = 1.0
    nan_strategy: str | None = None  # None: the judge-wide one
    min_samples: int | None = None  # None: the judge-wide one


@dataclass(frozen=True)
class JudgeConfig:
    """The judge's thresholds and the metrics to judge. No metrics: every metric in the samples, with
    the defaults. `raw` is the mapping it was read from, verbatim, so a report can save it."""

    confidence: float = 0.98
    tolerance: float = 0.25
    pass_threshold: float = 90.0
    marginal_threshold: float = 75.0
    min_samples: int = 10
    nan_strategy: str = "remove"
    group_weights: dict = field(default_factory=dict)
    metrics: tuple[MetricConfig, ...] = ()
    raw: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: dict) -> "JudgeConfig":
        """Validate a parsed config; UsageError names the first bad field. Unknown top-level keys (a
        metric `source`, say) are kept in `raw` and ignored; a metric's keys are checked, its source's
        `query` and `command` among them."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UsageError("the config must be a mapping with optional judge, groups and metrics")
        judge_part = _mapping(data.get("judge"), "judge")
        _no_unknown(judge_part, "judge", ("confidence", "tolerance", "pass", "marginal", "min_samples", "nan_strategy"))
        confidence = _number(judge_part, "confidence", "judge", 0.98)
        if not 0 < confidence < 1:
            raise UsageError(f"judge.confidence must be between 0 and 1 (exclusive), not {confidence}")
        tolerance = _number(judge_part, "tolerance", "judge", 0.25, minimum=0)
        pass_threshold = _number(judge_part, "pass", "judge", 90.0, minimum=0)
        marginal_threshold = _number(judge_part, "marginal", "judge", 75.0, minimum=0)
        if not marginal_threshold <= pass_threshold <= 100:
            raise UsageError(f"judge thresholds must satisfy marginal <= pass <= 100, not marginal {marginal_threshold} and pass {pass_threshold}")
        min_samples = _whole(judge_part, "min_samples", "judge", 10)
        nan_strategy = _choice(judge_part, "nan_strategy", "judge", NAN_STRATEGIES, "remove")

        weights = _mapping(data.get("groups"), "groups")
        for name, weight in weights.items():
            if not isinstance(name, str) or not name:
                raise UsageError(f"groups: group names must be non-empty strings, not {name!r}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 100:
                raise UsageError(f"groups.{name} must be a weight from 0 to 100, not {weight!r}")
        if sum(weights.values()) > 100:
            # Kayenta lets this through and gives the unweighted groups a negative weight.
            raise UsageError(f"group weights add up to {sum(weights.values())}; they must not exceed 100")

        raw_metrics = data.get("metrics", [])
        if raw_metrics is None:
            raw_metrics = []
        if not isinstance(raw_metrics, list):
            raise UsageError("metrics must be a list of mappings, each with a name")
        metrics = tuple(_metric_config(item, index) for index, item in enumerate(raw_metrics))
        names = [m.name for m in metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"metrics: {', '.join(duplicates)} configured more than once")
        named_groups = {g for m in metrics for g in m.groups} or {DEFAULT_GROUP}
        stray = sorted(set(weights) - named_groups)
        if stray:
            raise UsageError(f"groups: {', '.join(stray)} has a weight but no metric is in it")
        return cls(confidence=confidence, tolerance=tolerance, pass_threshold=pass_threshold,
                   marginal_threshold=marginal_threshold, min_samples=min_samples, nan_strategy=nan_strategy,
                   group_weights={k: float(v) for k, v in weights.items()}, metrics=metrics, raw=copy.deepcopy(data))


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a mapping, not {type(value).__name__}")
    return value


def _no_unknown(part: dict, where: str, known) -> None:
    unknown = sorted(str(k) for k in part if k not in known)
    if unknown:
        raise UsageError(f"{where}: unknown key {', '.join(unknown)} (known: {', '.join(known)})")


def _number(part: dict, key: str, where: str, default: float, minimum: float | None = None) -> float:
    value = part.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where}.{key} must be a number, not {value!r}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{where}.{key} must be at least {minimum}, not {value}")
    return float(value)


def _whole(part: dict, key: str, where: str, default: int | None) -> int | None:
    value = part.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}.{key} must be a whole number from 1, not {value!r}")
    return value


def _flag(part: dict, key: str, where: str, default: bool) -> bool:
    value = part.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"{where}.{key} must be true or false, not {value!r}")
    return value


def _choice(part: dict, key: str, where: str, choices, default):
    value = part.get(key, default)
    if value is not None and value not in choices:
        raise UsageError(f"{where}.{key} must be {' or '.join(choices)}, not {value!r}")
    return value


def _metric_config(item, index: int) -> MetricConfig:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise UsageError(f"metrics[{index}] must be a mapping with a non-empty name")
    name = item["name"]
    where = f"metrics[{index}] ({name})"
    # A misspelt rule (`critcal: true`) silently ignored would pass canaries it should fail, so only
    # the judge's keys and the metric sources' (`query`, `command`: see shipledger.delivery.metrics) are allowed.
    _no_unknown(item, where, METRIC_KEYS)
    groups = item.get("groups", item.get("group", DEFAULT_GROUP))
    groups = [groups] if isinstance(groups, str) else groups
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) and g for g in groups):
        raise UsageError(f"{where}.group must be a group name (or groups a list of names)")

    spread = item.get("spread", True)
    max_ratio = 1.5
    if isinstance(spread, dict):
        _no_unknown(spread, f"{where}.spread", ("enabled", "max_ratio"))
        max_ratio = _number(spread, "max_ratio", f"{where}.spread", 1.5, minimum=1)
        spread = _flag(spread, "enabled", f"{where}.spread", True)
    elif not isinstance(spread, bool):
        raise UsageError(f"{where}.spread must be true, false or a mapping with max_ratio, not {spread!r}")

    outliers = _mapping(item.get("outliers"), f"{where}.outliers")
    _no_unknown(outliers, f"{where}.outliers", ("remove", "factor"))
    factor = _number(outliers, "factor", f"{where}.outliers", 3.0)
    if factor <= 0:
        raise UsageError(f"{where}.outliers.factor must be greater than 0, not {factor}")

    effect = _mapping(item.get("effect_size"), f"{where}.effect_size")
    thresholds = ("allowed_increase", "critical_increase", "allowed_decrease", "critical_decrease")
    _no_unknown(effect, f"{where}.effect_size", ("measure", *thresholds))
    measure = _choice(effect, "measure", f"{where}.effect_size", MEASURES, "meanRatio")
    neutral = 1.0 if measure == "meanRatio" else 0.5
    values = {key: _number(effect, key, f"{where}.effect_size", neutral, minimum=0) for key in thresholds}
    if measure == "cles" and any(v > 1 for v in values.values()):
        raise UsageError(f"{where}.effect_size: CLES thresholds are probabilities from 0 to 1")

    return MetricConfig(
        name=name,
        direction=_choice(item, "direction", where, DIRECTIONS, "either"),
        groups=tuple(groups),
        critical=_flag(item, "critical", where, False),
        must_have_data=_flag(item, "must_have_data", where, False),
        muted=_flag(item, "muted", where, False),
        test=_choice(item, "test", where, TESTS, "mann-whitney"),
        spread=spread,
        spread_max_ratio=max_ratio,
        outliers=_flag(outliers, "remove", f"{where}.outliers", bool(outliers)),
        outlier_factor=factor,
        effect_measure=measure,
        nan_strategy=_choice(item, "nan_strategy", where, NAN_STRATEGIES, None),
        min_samples=_whole(item, "min_samples", where, None),
        **values,
    )


def load_config(path) -> JudgeConfig:
    """A config file, JSON (by a .json name or a leading '{') or YAML; UsageError when missing or invalid."""
    from shipledger._internal.configs import load_document

    data = load_document(path, "config")
    try:
        return JudgeConfig.from_dict(data)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


# ============================================================================ samples

def load_samples(path) -> dict[str, list[float]]:
    """Samples per metric from CSV rows `metric,value` (a header row is optional, '#' lines are
    comments) or JSON {"metric": [values...]} (null is NaN). Bad rows: UsageError with FILE:LINE."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise path_error(f"samples {path}", exc) from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return _samples_from_json(path, text)
    return _samples_from_csv(path, text)


def _sample_value(value, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{where}: {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{where}: {value!r} is not a number") from None
    if math.isinf(number):
        raise UsageError(f"{where}: {value!r} is infinite; use NaN for a missing sample")
    return number


def _samples_from_json(path: Path, text: str) -> dict[str, list[float]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}:1: expected an object {{\"metric\": [values...]}}")
    samples = {}
    for name, values in data.items():
        if not name.strip():
            raise UsageError(f"{path}: a metric name is empty")
        if not isinstance(values, list):
            raise UsageError(f"{path}: {name} must be a list of numbers")
        samples[name] = [_sample_value(v, f"{path}: {name}[{i}]") for i, v in enumerate(values)]
    return samples


def _samples_from_csv(path: Path, text: str) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    first = True
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        if len(row) != 2:
            raise UsageError(f"{where}: expected `metric,value`, got {len(row)} fields")
        name, value = row[0].strip(), row[1].strip()
        if first and value.lower() == "value":
            first = False
            continue
        first = False
        if not name:
            raise UsageError(f"{where}: the metric name is empty")
        samples.setdefault(name, []).append(_sample_value(value, where))
    return samples


# ============================================================================ statistics

def _float_key(x: float) -> int:
    """An integer that orders exactly as the float does, so bisection over floats ends in 64 steps."""
    (bits,) = struct.unpack("<q", struct.pack("<d", x))
    return bits if bits >= 0 else -(bits & 0x7FFF_FFFF_FFFF_FFFF)


def _key_float(key: int) -> float:
    bits = key if key >= 0 else (-key) | (1 << 63)
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def _count_at_most(xs: list[float], ys: list[float], t: float) -> int:
    """How many differences x - y (xs, ys sorted) are <= t. x - y grows with x and shrinks with y, so
    the y's that qualify are a suffix of ys whose start only moves right as x grows."""
    count, j, n = 0, 0, len(ys)
    for x in xs:
        while j < n and x - ys[j] > t:
            j += 1
        count += n - j
    return count


def kth_difference(xs: list[float], ys: list[float], k: int) -> float:
    """The k-th smallest (from 1) of the m*n differences x - y, without forming them: bisection over
    the floats between the smallest and largest difference, counting in O(m + n) at each step."""
    lo, hi = xs[0] - ys[-1], xs[-1] - ys[0]
    if _count_at_most(xs, ys, lo) >= k:
        return lo
    key_lo, key_hi = _float_key(lo), _float_key(hi)
    while key_hi - key_lo > 1:  # invariant: count(lo) < k <= count(hi)
        middle = (key_lo + key_hi) // 2
        if _count_at_most(xs, ys, _key_float(middle)) >= k:
            key_hi = middle
        else:
            key_lo = middle
    return _key_float(key_hi)  # the k-th difference is in (lo, hi] and no float lies between them


def hodges_lehmann(baseline, canary) -> float:
    """The Hodges-Lehmann estimate of the shift: the median of every canary - baseline difference."""
    xs, ys = sorted(canary), sorted(baseline)
    total = len(xs) * len(ys)
    if total % 2:
        return kth_difference(xs, ys, total // 2 + 1)
    return (kth_difference(xs, ys, total // 2) + kth_difference(xs, ys, total // 2 + 1)) / 2


def _tie_term(values) -> float:
    return float(sum(t ** 3 - t for t in Counter(values).values()))


def _u_statistic(xs: list[float], ys_sorted: list[float]) -> float:
    """Mann-Whitney U of xs over ys: pairs with x > y, plus half the ties."""
    u = 0.0
    for x in xs:
        below = bisect.bisect_left(ys_sorted, x)
        u += below + (bisect.bisect_right(ys_sorted, x) - below) / 2
    return u


def _rank_sum_z(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(U - mn/2, sigma) of the rank-sum statistic of xs against ys, sigma tie-corrected over the pooled
    sample, as R and SciPy compute it."""
    m, n = len(xs), len(ys)
    big_n = m + n
    centred = _u_statistic(xs, sorted(ys)) - m * n / 2
    variance = m * n / 12 * ((big_n + 1) - _tie_term([*xs, *ys]) / (big_n * (big_n - 1)))
    return centred, math.sqrt(max(variance, 0.0))


def _upper_tail_normal(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def rank_test(baseline, canary, shift: float = 0.0) -> tuple[float, int]:
    """(two-sided p-value, side) of the rank-sum test of "the shift canary - baseline is `shift`": the
    canary minus the shift ranked with the baseline, normal approximation with tie and continuity
    corrections (SciPy's mannwhitneyu(method='asymptotic')). side is +1 when the shifted canary ranks
    above the baseline, -1 below, 0 neither."""
    centred, sigma = _rank_sum_z([c - shift for c in canary], list(baseline))
    side = (centred > 0) - (centred < 0)
    if sigma == 0:
        return 1.0, side
    return min(1.0, 2 * _upper_tail_normal((abs(centred) - 0.5) / sigma)), side


def mann_whitney_p(baseline, canary) -> float:
    """Two-sided p-value of the rank-sum test at shift 0, the one Kayenta computes and decides nothing with."""
    return rank_test(baseline, canary)[0]


def shift_interval(baseline, canary, confidence: float = 0.98) -> tuple[float, float]:
    """The two-sided Mann-Whitney confidence interval for the shift canary - baseline.

    Kayenta's MannWhitney (after R's wilcox.test, exact=FALSE, correct=TRUE) finds where
    f(mu) = (dz(mu) - sign(dz)/2) / sigma(mu) -+ z crosses zero with a Brent solver (tolerance 1e-4), dz
    being the centred rank sum of canary - mu against baseline. Between two neighbouring differences
    dz = mn/2 - #{differences <= mu} and sigma is fixed (ties only within each sample), so f is a step
    function that jumps at the differences and its root is an order statistic of them: the k-th smallest
    with k the least count for which f < 0. This computes that order statistic exactly, including
    Kayenta's checks of f at the ends (min canary - max baseline, max canary - min baseline).
    """
    xs, ys = sorted(canary), sorted(baseline)
    m, n = len(xs), len(ys)
    total, big_n = m * n, m + n
    sigma = math.sqrt(m * n / 12 * ((big_n + 1) - (_tie_term(xs) + _tie_term(ys)) / (big_n * (big_n - 1))))
    z = _NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    mu_min, mu_max = xs[0] - ys[-1], xs[-1] - ys[0]
    if mu_min == mu_max:  # both samples constant: every difference is the same (Kayenta adds noise here)
        return mu_min, mu_max

    def f_at(mu: float, zq: float) -> float:  # Kayenta's wilcoxonDiff evaluated at a point itself
        centred, s = _rank_sum_z([x - mu for x in xs], ys)
        sign = (centred > 0) - (centred < 0)
        return (centred - sign * 0.5) / s - zq

    def root(zq: float, k: int) -> float:
        if f_at(mu_min, zq) <= 0:
            return mu_min
        if f_at(mu_max, zq) >= 0:
            return mu_max
        return kth_difference(xs, ys, min(max(k, 1), total))

    lower = root(z, math.floor(total / 2 - z * sigma - 0.5) + 1)
    upper = root(-z, math.floor(total / 2 + z * sigma + 0.5) + 1)
    return lower, upper


def cles(baseline, canary) -> float:
    """Common-language effect size (Kayenta's EffectSizes.cles): the share of (canary, baseline) pairs
    where the canary is higher, ties counting half. 0.5 means no difference."""
    return _u_statistic(list(canary), sorted(baseline)) / (len(canary) * len(baseline))


def mean_ratio(baseline, canary) -> float:
    """Kayenta's EffectSizes.meanRatio: canary mean / baseline mean, NaN when either mean is 0."""
    b, c = statistics.fmean(baseline), statistics.fmean(canary)
    return math.nan if b == 0 or c == 0 else c / b


def spread_test(baseline, canary) -> tuple[float, float]:
    """(one-sided p-value, ratio) for "the canary's spread is larger".

    The absolute deviations of each sample from its own median are compared with a one-sided
    Mann-Whitney test (normal approximation, tie and continuity corrected): a rank version of the
    Brown-Forsythe test, so a few wild points cannot carry it alone. The ratio is the canary's mean
    absolute deviation over the baseline's (inf when only the canary varies, 1 when neither does).
    """
    base_median, can_median = statistics.median(baseline), statistics.median(canary)
    base_dev = [abs(v - base_median) for v in baseline]
    can_dev = [abs(v - can_median) for v in canary]
    centred, sigma = _rank_sum_z(can_dev, base_dev)
    p = 1.0 if sigma == 0 else _upper_tail_normal((centred - 0.5) / sigma)
    b, c = statistics.fmean(base_dev), statistics.fmean(can_dev)
    ratio = (c / b) if b > 0 else (math.inf if c > 0 else 1.0)
    return min(p, 1.0), ratio


def _binomial_logpmf(i: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)


def _binomial_sum(start: int, step: int, n: int, p: float) -> float:
    """Sum of the pmf from start outward (step +1 or -1), away from the mode, so terms only shrink and
    the sum stops once they no longer change it."""
    total, i = 0.0, start
    while 0 <= i <= n:
        term = math.exp(_binomial_logpmf(i, n, p))
        total += term
        if term <= total * 1e-17:
            break
        i += step
    return total


def binomial_upper(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    mode = math.floor((n + 1) * p)
    if k > mode:
        return min(1.0, _binomial_sum(k, 1, n, p))
    return min(1.0, max(0.0, 1.0 - _binomial_sum(k - 1, -1, n, p)))


def binomial_lower(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed directly on its small side so tiny tails keep their digits."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    mode = math.floor((n + 1) * p)
    if k < mode:
        return min(1.0, _binomial_sum(k, -1, n, p))
    return min(1.0, max(0.0, 1.0 - _binomial_sum(k + 1, 1, n, p)))


def _solve_increasing(fn, target: float) -> float:
    """p in (0, 1) with fn(p) = target for an increasing fn, by bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        middle = (lo + hi) / 2
        if middle in (lo, hi):
            break
        if fn(middle) < target:
            lo = middle
        else:
            hi = middle
    return (lo + hi) / 2


def rate_test(baseline, canary, confidence: float = 0.98) -> dict:
    """The exact conditional test for two Poisson rates on event counts per interval.

    With C canary events in n_c intervals and B baseline events in n_b, given N = C + B the canary's
    count is Binomial(N, n_c / (n_c + n_b)) when both rates are equal. Returns the one-sided p-values,
    the rate ratio (canary rate / baseline rate) and its exact interval at `confidence` (the
    Clopper-Pearson interval of the canary's share, turned into a ratio).
    """
    if min(*baseline, *canary) < 0:
        raise UsageError("the rate test reads samples as event counts; they cannot be negative")
    n_c, n_b = len(canary), len(baseline)
    events_c, events_b = round(sum(canary)), round(sum(baseline))
    total = events_c + events_b
    share = n_c / (n_c + n_b)
    alpha = 1 - confidence
    p_greater = binomial_upper(events_c, total, share)
    p_less = binomial_lower(events_c, total, share)

    def ratio(pi: float) -> float:  # canary share of events -> rate ratio
        if pi >= 1:
            return math.inf
        return pi / (1 - pi) * n_b / n_c

    if total == 0:
        lower, upper = 0.0, math.inf
    else:
        pi_low = 0.0 if events_c == 0 else _solve_increasing(lambda p: binomial_upper(events_c, total, p), alpha / 2)
        pi_high = 1.0 if events_c == total else _solve_increasing(lambda p: 1 - binomial_lower(events_c, total, p), 1 - alpha / 2)
        lower, upper = ratio(pi_low), ratio(pi_high)
    if events_b == 0:
        estimate = 1.0 if events_c == 0 else math.inf
    else:
        estimate = (events_c / n_c) / (events_b / n_b)
    return {"canary_events": events_c, "baseline_events": events_b, "p_greater": p_greater, "p_less": p_less,
            "rate_ratio": estimate, "lower": lower, "upper": upper}


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile by the R-7 definition (numpy's "linear"): position (n - 1) * p / 100 counted
    from 0, interpolated between its neighbours. Kayenta's DescriptiveStatistics.percentile asks Apache
    Commons Math for this estimate (EstimationType.R_7), not for the library's default."""
    position = (len(sorted_values) - 1) * p / 100
    whole = math.floor(position)
    if whole + 1 >= len(sorted_values):
        return sorted_values[-1]
    lower, upper = sorted_values[whole], sorted_values[whole + 1]
    return lower + (position - whole) * (upper - lower)


def outlier_fences(values, factor: float = 3.0) -> tuple[float, float]:
    """Kayenta's IQRDetector(factor, reduceSensitivity=true): the wider of Tukey's fences and P1/P99."""
    data = sorted(values)
    q1, q3 = percentile(data, 25), percentile(data, 75)
    iqr = q3 - q1
    return min(percentile(data, 1), q1 - factor * iqr), max(percentile(data, 99), q3 + factor * iqr)


def remove_outliers(values: list[float], factor: float = 3.0) -> list[float]:
    if not values:
        return values
    low, high = outlier_fences(values, factor)
    return [v for v in values if low <= v <= high]


def describe(values: list[float]) -> dict:
    """Summary statistics of a cleaned sample (Kayenta's DescriptiveStatistics, plus the median)."""
    if not values:
        return {"count": 0, "mean": None, "median": None, "std": None, "min": None, "max": None}
    return {"count": len(values), "mean": statistics.fmean(values), "median": statistics.median(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}


# ============================================================================ classification

@dataclass(frozen=True)
class MetricResult:
    """One metric's classification and every statistic behind it. `critical` is true when this result
    alone zeroes the score (a critical metric that failed, or had no data)."""

    name: str
    classification: str
    reason: str
    critical: bool = False
    muted: bool = False
    groups: tuple[str, ...] = (DEFAULT_GROUP,)
    lower: float | None = None
    upper: float | None = None
    estimate: float | None = None
    effect_size: float | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = {"name": self.name, "classification": self.classification, "reason": self.reason,
                "critical": self.critical, "muted": self.muted, "groups": list(self.groups),
                "lower": self.lower, "upper": self.upper, "estimate": self.estimate,
                "effect_size": self.effect_size, **self.details}
        return _json_safe(data)


@dataclass(frozen=True)
class Judgement:
    score: float
    verdict: str  # 'pass' | 'marginal' | 'fail'
    metrics: tuple[MetricResult, ...]
    groups: dict
    reason: str = ""
    thresholds: dict = field(default_factory=dict)
    unjudged: tuple[str, ...] = ()  # metrics in the samples that the config does not name

    def to_dict(self) -> dict:
        """The --json document. Numbers that JSON cannot hold: NaN is null, infinity "inf"/"-inf"."""
        return _json_safe({"judge_version": JUDGE_VERSION, "score": self.score, "verdict": self.verdict,
                           "reason": self.reason, "thresholds": self.thresholds, "groups": self.groups,
                           "metrics": [m.to_dict() for m in self.metrics], "unjudged_metrics": list(self.unjudged)})


def _json_safe(value):
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _clean(values: list, strategy: str) -> tuple[list[float], int]:
    """NaN handling; None (JSON's null) and infinities count as NaN."""
    good = [v is not None and math.isfinite(v) for v in values]
    if strategy == "replace":
        return [float(v) if ok else 0.0 for v, ok in zip(values, good)], good.count(False)
    return [float(v) for v, ok in zip(values, good) if ok], good.count(False)


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def _effect_ok(effect: float, threshold: float, higher: bool) -> bool:
    """Kayenta: a NaN effect size skips the check; otherwise High needs effect >= threshold, Low <=."""
    if math.isnan(effect):
        return True
    return effect >= threshold if higher else effect <= threshold


def judge_metric(spec: MetricConfig, config: JudgeConfig, baseline_raw, canary_raw) -> MetricResult:
    """Classify one metric; see the module docstring for the rules, in order."""
    strategy = spec.nan_strategy or config.nan_strategy
    min_samples = spec.min_samples or config.min_samples
    baseline, baseline_nan = _clean(list(baseline_raw), strategy)
    canary, canary_nan = _clean(list(canary_raw), strategy)
    details: dict = {"direction": spec.direction, "test": spec.test, "effect_measure": spec.effect_measure,
                     "critical_metric": spec.critical, "nan_strategy": strategy, "min_samples": min_samples,
                     "baseline_nan": baseline_nan, "canary_nan": canary_nan}
    filled = ""
    if strategy == "replace" and bool(baseline) != bool(canary):
        filled = "baseline" if not baseline else "canary"
        baseline, canary = (baseline or [0.0] * len(canary)), (canary or [0.0] * len(baseline))
    details["filled_with_zeros"] = filled or None
    if spec.outliers:
        kept_b, kept_c = remove_outliers(baseline, spec.outlier_factor), remove_outliers(canary, spec.outlier_factor)
        details["baseline_outliers_removed"] = len(baseline) - len(kept_b)
        details["canary_outliers_removed"] = len(canary) - len(kept_c)
        baseline, canary = kept_b, kept_c
    details["baseline"], details["canary"] = describe(baseline), describe(canary)

    def result(classification, reason, critical=False, **numbers) -> MetricResult:
        return MetricResult(name=spec.name, classification=classification, reason=reason, critical=critical,
                            muted=spec.muted, groups=spec.groups, details=details, **numbers)

    if not baseline or not canary:
        missing = " and ".join(side for side, values in (("baseline", baseline), ("canary", canary)) if not values)
        if strategy == "replace":
            return result(PASS, "no data on either side; nan_strategy replace reads that as no events", effect_size=1.0)
        if spec.must_have_data and not spec.critical:
            return result(NODATA_FAIL, f"no data for the {missing}, and the metric must have data")
        return result(NODATA, f"no data for the {missing}" + ("; the metric is critical" if spec.critical else ""),
                      critical=spec.critical)

    ratio, common = mean_ratio(baseline, canary), cles(baseline, canary)
    effect = ratio if spec.effect_measure == "meanRatio" else common
    details["mean_ratio"], details["cles"] = ratio, common
    if spec.test == "rate":
        classification, reason, numbers = _rate_classify(spec, config, baseline, canary, details)
    else:
        classification, reason, numbers = _location_classify(spec, config, baseline, canary, effect, details)
    effect = numbers.setdefault("effect_size", effect)

    if classification == PASS and min(len(baseline), len(canary)) < min_samples:
        few = min(("baseline", len(baseline)), ("canary", len(canary)), key=lambda side: side[1])
        return result(NODATA, f"inconclusive: {few[1]} {few[0]} samples, fewer than min_samples {min_samples}"
                      + ("; the metric is critical" if spec.critical else ""), critical=spec.critical, **numbers)
    critical = False
    if spec.critical and classification == HIGH:
        critical = details.get("failed_test") == "spread" or _effect_ok(effect, spec.critical_increase, higher=True)
    elif spec.critical and classification == LOW:
        critical = _effect_ok(effect, spec.critical_decrease, higher=False)
    if critical:
        reason += "; critical metric: the canary fails"
    return result(classification, reason, critical=critical, **numbers)


def _location_classify(spec, config, baseline, canary, effect, details) -> tuple[str, str, dict]:
    """Kayenta's MannWhitneyClassifier, then the spread test when it passes."""
    neutral = {"effect_size": 1.0 if spec.effect_measure == "meanRatio" else 0.5}
    if len(set(baseline) | set(canary)) == 1:
        return PASS, "every sample has the same value", {"lower": 0.0, "upper": 0.0, "estimate": 0.0, **neutral}
    lower, upper = shift_interval(baseline, canary, config.confidence)
    estimate = hodges_lehmann(baseline, canary)
    band = config.tolerance * abs(estimate)
    details["tolerance_band"] = [-band, band]
    details["p_value"] = mann_whitney_p(baseline, canary)
    numbers = {"lower": lower, "upper": upper, "estimate": estimate}
    if sorted(baseline) == sorted(canary):  # Kayenta passes these before testing; the numbers are still shown
        return PASS, "the baseline and canary samples are identical", {**numbers, **neutral}
    if spec.spread:  # computed whatever the location test says, so the output always shows it
        p, ratio = spread_test(baseline, canary)
        details["spread"] = {"p_value": p, "ratio": ratio, "max_ratio": spec.spread_max_ratio,
                             "alpha": (1 - config.confidence) / 2}
    level = f"{config.confidence:.0%}"
    interval = f"the {level} interval [{_fmt(lower)}, {_fmt(upper)}] for the shift"
    effect_text = f"{'mean ratio' if spec.effect_measure == 'meanRatio' else 'CLES'} {_fmt(effect)}"
    alpha = 1 - config.confidence

    def beyond(end: float, edge: float, side: int) -> str:
        """Why the interval is outside the band on `side` (+1 above, -1 below): its end lies past the band's
        edge, or on it with the edge rejected (below); '' when it is not."""
        word = "above" if side > 0 else "below"
        if (end > edge) if side > 0 else (end < edge):
            return f"{interval} lies {word} the tolerance band +-{_fmt(band)}"
        if end != edge:
            return ""
        # The interval's ends are differences canary - baseline. On heavily tied data (counts that are
        # mostly 0) an end can fall exactly on the band's edge: typically [0, 0], the estimate and so the
        # band 0, while the canary's non-zero share is several times the baseline's. Whether the edge
        # itself is a plausible shift is then more than the interval can say; the rank-sum test of the
        # canary shifted by the edge can, at the same confidence. (Kayenta's answer there depends on which
        # side of the edge its root finder stops, within 1e-4.)
        p, towards = rank_test(baseline, canary, edge)
        details["edge_test"] = {"shift": edge + 0.0, "p_value": p, "alpha": alpha}  # + 0.0 turns -0.0 into 0.0
        if p < alpha and towards == side:
            return (f"{interval} ends on the edge of the tolerance band +-{_fmt(band)}, and the rank-sum test "
                    f"rejects a shift of {_fmt(edge + 0.0)} with the canary {word} (p={_fmt(p)} < {_fmt(alpha)})")
        return ""

    high, low = beyond(lower, band, 1), beyond(upper, -band, -1)
    if spec.direction in ("increase", "either") and high:
        if _effect_ok(effect, spec.allowed_increase, higher=True):
            details["failed_test"] = "location"
            return HIGH, f"canary is higher: {high}; {effect_text}", numbers
    if spec.direction in ("decrease", "either") and low:
        if _effect_ok(effect, spec.allowed_decrease, higher=False):
            details["failed_test"] = "location"
            return LOW, f"canary is lower: {low}; {effect_text}", numbers
    if high or low:
        reason = f"{interval} is outside the band +-{_fmt(band)} but the direction ({spec.direction}) or the {effect_text} allows it"
    else:
        reason = f"no significant shift: {interval} reaches into the tolerance band +-{_fmt(band)}"
    spread = details.get("spread")
    if spread:
        p, ratio, limit = spread["p_value"], spread["ratio"], spread["alpha"]
        if p < limit and ratio >= spec.spread_max_ratio:
            details["failed_test"] = "spread"
            return HIGH, (f"canary spread blew up: its mean absolute deviation is {_fmt(ratio)} times the baseline's "
                          f"(max {_fmt(spec.spread_max_ratio)}), one-sided p={_fmt(p)} < {_fmt(limit)}"), numbers
    return PASS, reason, numbers


def _rate_classify(spec, config, baseline, canary, details) -> tuple[str, str, dict]:
    """The rate test for sparse event counts (see rate_test)."""
    if min(*baseline, *canary) < 0:
        raise UsageError(f"metric {spec.name}: the rate test reads samples as event counts, which cannot be negative")
    rate = rate_test(baseline, canary, config.confidence)
    limit = (1 - config.confidence) / 2
    details["rate"] = {**rate, "alpha": limit}
    numbers = {"lower": rate["lower"], "upper": rate["upper"], "estimate": rate["rate_ratio"]}
    if spec.effect_measure == "meanRatio":
        numbers["effect_size"] = rate["rate_ratio"]  # a mean ratio that stays defined when the baseline is 0
    effect = numbers.get("effect_size", details["cles"])
    counts = (f"{rate['canary_events']} canary events in {len(canary)} intervals, {rate['baseline_events']} "
              f"baseline events in {len(baseline)}; rate ratio {_fmt(rate['rate_ratio'])}, "
              f"{config.confidence:.0%} interval [{_fmt(rate['lower'])}, {_fmt(rate['upper'])}]")
    if spec.direction in ("increase", "either") and rate["p_greater"] < limit and _effect_ok(effect, spec.allowed_increase, True):
        details["failed_test"] = "rate"
        return HIGH, f"canary event rate is higher (p={_fmt(rate['p_greater'])}): {counts}", numbers
    if spec.direction in ("decrease", "either") and rate["p_less"] < limit and _effect_ok(effect, spec.allowed_decrease, False):
        details["failed_test"] = "rate"
        return LOW, f"canary event rate is lower (p={_fmt(rate['p_less'])}): {counts}", numbers
    return PASS, f"no significant rate change: {counts}", numbers


# ============================================================================ scoring

def _round_half_up(value: float) -> float:
    """Kayenta's MathUtils.round(score, 2): half-up on the decimal form."""
    return float(Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def score(results, group_weights: dict | None = None) -> tuple[float, dict, str]:
    """Kayenta's WeightedSumScorer: (score, groups, reason for a zero). Muted results are left out."""
    scored = [r for r in results if not r.muted]
    labels: dict[str, list[str]] = {}
    for r in scored:
        for group in r.groups:
            labels.setdefault(group, []).append(r.classification)
    weights = dict(group_weights or {})
    unweighted = [g for g in labels if g not in weights]
    shared = (100 - sum(weights.values())) / len(unweighted) if unweighted else 0.0
    groups, total = {}, 0.0
    for name, names in labels.items():
        counts = Counter(names)
        judged = counts[PASS] + counts[HIGH] + counts[LOW] + counts[NODATA_FAIL]
        group_score = counts[PASS] / judged * 100 if judged else 0.0
        weight = weights.get(name, shared)
        total += (group_score if judged else 100.0) * weight / 100
        groups[name] = {"score": group_score, "weight": weight, "no_data": not judged, "counts": dict(counts)}
    if not scored:
        return 0.0, groups, "every metric is muted: nothing was judged"
    failures = [r for r in scored if r.critical]
    if failures:
        return 0.0, groups, f"critical metric {failures[0].name} failed: {failures[0].reason}"
    nodata = sum(1 for r in scored if r.classification == NODATA)
    if nodata / len(scored) * 100 >= NODATA_PERCENT:
        return 0.0, groups, f"{nodata} of {len(scored)} metrics have no data or too few samples ({NODATA_PERCENT}% or more)"
    return _round_half_up(total), groups, ""


def judge(baseline: dict[str, list[float]], canary: dict[str, list[float]], config: JudgeConfig | None = None) -> Judgement:
    """Judge the canary against the baseline. Without a config (or with one that lists no metrics)
    every metric present in either sample set is judged, direction 'either', default thresholds."""
    config = config or JudgeConfig()
    present = list(dict.fromkeys([*baseline, *canary]))
    specs = config.metrics or tuple(MetricConfig(name=name) for name in present)
    if not specs:
        raise UsageError("nothing to judge: the samples hold no metrics and the config names none")
    named = {s.name for s in specs}
    results = tuple(judge_metric(s, config, baseline.get(s.name, []), canary.get(s.name, [])) for s in specs)
    total, groups, reason = score(results, config.group_weights)
    if total >= config.pass_threshold:
        verdict = "pass"
    elif total >= config.marginal_threshold:
        verdict = "marginal"
    else:
        verdict = "fail"
    return Judgement(score=total, verdict=verdict, metrics=results, groups=groups, reason=reason,
                     thresholds={"pass": config.pass_threshold, "marginal": config.marginal_threshold,
                                 "confidence": config.confidence, "tolerance": config.tolerance,
                                 "min_samples": config.min_samples},
                     unjudged=tuple(name for name in present if name not in named))


def format_table(judgement: Judgement) -> str:
    """The human report: one row per metric, each reason, and the score line."""
    header = f"{'metric':24} {'class':16} {'lower':>9} {'upper':>9} {'estimate':>9} {'effect':>7} {'n b/c':>9}"
    lines = [header, "-" * len(header)]
    for m in judgement.metrics:
        sizes = f"{m.details['baseline']['count']}/{m.details['canary']['count']}"
        label = m.classification + (" (muted)" if m.muted else "") + (" !" if m.critical else "")
        lines.append(f"{m.name[:24]:24} {label:16} {_fmt(m.lower):>9} {_fmt(m.upper):>9} {_fmt(m.estimate):>9} "
                     f"{_fmt(m.effect_size):>7} {sizes:>9}")
        lines.append(f"{'':24}   {m.reason}")
    for name in judgement.unjudged:
        lines.append(f"{name[:24]:24} not in the config: not judged")
    lines.append("")
    lines.append(f"score {judgement.score:.2f}: {judgement.verdict.upper()} (pass >= {_fmt(judgement.thresholds['pass'])}, "
                 f"marginal >= {_fmt(judgement.thresholds['marginal'])})" + (f"; {judgement.reason}" if judgement.reason else ""))
    return "\n".join(lines)
