"""The report's statistics: paired differences of ablations against their base, and stability.

Two questions a report has to answer, from the per-run rows the runner writes:

- *Does a component matter?* An ablation and its base variant run on the same seeds, and the same
  seed means the same data order and initial noise, so the comparison is paired: for each seed
  both have a finite value for, ``d = ablation - base``; the estimate is the mean of the ``d``
  and its 95% confidence interval is Student's t over them (``n - 1`` degrees of freedom). Pairing
  removes the seed-to-seed variation the two runs share, which is usually most of it.
- *Does a setting train stably?* The divergence rate ``k / n`` of a variant (``k`` diverged runs
  of the ``n`` that are over: finished or diverged) with its exact binomial (Clopper-Pearson)
  interval, the skipped steps, and the final loss and test NLL of the runs that survived.

The distributions come from :mod:`scipy.stats`; it is imported when a statistic is first
computed, so importing this module (and the command line) stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

CONFIDENCE = 0.95
"""The confidence level of every interval in the report."""

OVER = ("finished", "diverged")
"""The statuses of runs that count for the divergence rate; ``failed`` (a crash, not an outcome of
training) and ``interrupted`` (not over yet) runs are left out of it."""

NLL_KEYS = ("test_nats_iw", "test_nats_elbo", "test_bpd_iw", "test_bpd_elbo")
"""The test NLL the stability summary reports for survivors: the first of these the runs have."""


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number (not a bool, not a ``"nan"`` string), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class PairedDifference:
    """``ablation - base`` over the seeds both have a finite value for.

    ``kind`` says what could be estimated:

    - ``"interval"``: two or more pairs whose differences vary; ``ci_low``/``ci_high`` are the
      Student-t interval.
    - ``"constant"``: two or more pairs with the very same difference (parameter counts, say);
      the sample variance is zero, so the t interval collapses to the point ``[mean, mean]``,
      which is what is reported (it excludes zero unless the difference is zero).
    - ``"one_pair"``: a single pair; its difference is the mean and no interval can be given
      (``ci_low``/``ci_high`` are None).
    - ``"no_pairs"``: no seed where both have a value; everything is None.
    - ``"shared_load"``: a speed measured while other processes shared the machine
      (:func:`genzoo.experiment.report.withhold_shared_speeds`): the mean is kept, but no
      interval is given, since the differences are of the load as much as of the models.
    """

    ablation: str
    base: str
    metric: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float | None
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    kind: Literal["interval", "constant", "one_pair", "no_pairs", "shared_load"]
    confidence: float = CONFIDENCE

    @property
    def n(self) -> int:
        """The number of pairs."""
        return len(self.differences)

    @property
    def excludes_zero(self) -> bool | None:
        """Whether the interval lies entirely on one side of zero; None when there is no interval."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_low > 0 or self.ci_high < 0

    @property
    def p_value(self) -> float | None:
        """The two-sided p-value of the paired t-test of a zero mean difference (what
        ``scipy.stats.ttest_rel`` gives); 0 or 1 for a constant difference (nonzero or zero);
        None without an interval."""
        if self.kind == "constant":
            return 0.0 if self.mean != 0 else 1.0
        if self.kind != "interval" or self.mean is None or self.sd is None:
            return None
        from scipy import stats

        t = self.mean / (self.sd / math.sqrt(self.n))
        return float(2 * stats.t.sf(abs(t), df=self.n - 1))

    def of_seed(self, seed: int) -> float | None:
        """The difference on ``seed``, None if that seed is not a pair."""
        for s, d in zip(self.seeds, self.differences, strict=True):
            if s == seed:
                return d
        return None


def paired_difference(
    ablation_values: Mapping[int, Any],
    base_values: Mapping[int, Any],
    *,
    ablation: str = "ablation",
    base: str = "base",
    metric: str = "value",
    confidence: float = CONFIDENCE,
) -> PairedDifference:
    """The paired difference ``ablation - base`` of one metric, from ``{seed: value}`` of each.

    Seeds are paired where both values are finite; a seed only one side has, or where either value
    is missing or not finite (a diverged run has no test NLL), is left out.
    """
    from scipy import stats

    seeds = tuple(sorted(s for s in ablation_values if s in base_values))
    pairs = [(s, finite(ablation_values[s]), finite(base_values[s])) for s in seeds]
    pairs = [(s, a - b) for s, a, b in pairs if a is not None and b is not None]
    seeds = tuple(s for s, _ in pairs)
    diffs = tuple(d for _, d in pairs)
    common = dict(ablation=ablation, base=base, metric=metric, seeds=seeds, differences=diffs)
    n = len(diffs)
    if n == 0:
        return PairedDifference(
            **common, mean=None, sd=None, ci_low=None, ci_high=None, kind="no_pairs", confidence=confidence
        )
    mean = math.fsum(diffs) / n
    if n == 1:
        return PairedDifference(
            **common, mean=mean, sd=None, ci_low=None, ci_high=None, kind="one_pair", confidence=confidence
        )
    if all(d == diffs[0] for d in diffs):  # exactly; fsum / n of equal values may round
        return PairedDifference(
            **common,
            mean=diffs[0],
            sd=0.0,
            ci_low=diffs[0],
            ci_high=diffs[0],
            kind="constant",
            confidence=confidence,
        )
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * sd / math.sqrt(n)
    return PairedDifference(
        **common,
        mean=mean,
        sd=sd,
        ci_low=mean - float(half),
        ci_high=mean + float(half),
        kind="interval",
        confidence=confidence,
    )


def paired_differences(
    rows: Iterable[Mapping[str, Any]], metrics: Sequence[str], *, confidence: float = CONFIDENCE
) -> dict[str, dict[str, PairedDifference]]:
    """For every ablation in ``rows`` (``group == "ablation"``), ``{metric: PairedDifference}``
    against its ``base`` variant, over the seeds they share. An ablation whose base has no rows
    gets ``no_pairs`` differences."""
    by_run: dict[str, dict[int, Mapping[str, Any]]] = {}
    bases: dict[str, str] = {}
    for row in rows:
        if row.get("seed") is None:
            continue
        by_run.setdefault(row["run"], {})[row["seed"]] = row
        if row.get("group") == "ablation" and row.get("base"):
            bases[row["run"]] = row["base"]
    out: dict[str, dict[str, PairedDifference]] = {}
    for name, base in bases.items():
        mine, theirs = by_run[name], by_run.get(base, {})
        out[name] = {
            metric: paired_difference(
                {s: r.get(metric) for s, r in mine.items()},
                {s: r.get(metric) for s, r in theirs.items()},
                ablation=name,
                base=base,
                metric=metric,
                confidence=confidence,
            )
            for metric in metrics
        }
    return out


def holm_adjusted(p_values: Mapping[Any, float | None]) -> dict[Any, float | None]:
    """Holm's step-down adjustment of a family of p-values (``statsmodels``' ``multipletests``,
    method ``holm``): each adjusted value is compared with the level as it is, and the family's
    chance of any false positive stays at most the level. Members without a p-value (None) are
    not in the family and stay None."""
    present = {k: float(p) for k, p in p_values.items() if p is not None}
    out: dict[Any, float | None] = dict.fromkeys(p_values)
    if present:
        from statsmodels.stats.multitest import multipletests

        adjusted = multipletests(list(present.values()), method="holm")[1]
        out.update(zip(present, (float(p) for p in adjusted)))
    return out


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` with its exact (Clopper-Pearson) interval; all None when ``n == 0``."""

    k: int
    n: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float = CONFIDENCE


def binomial_interval(k: int, n: int, *, confidence: float = CONFIDENCE) -> Proportion:
    """The rate ``k / n`` and its Clopper-Pearson interval (``scipy.stats.binomtest``): exact, so
    it is conservative and still meaningful at four seeds (0/4 gives [0, 0.60])."""
    from scipy import stats

    if n == 0:
        return Proportion(k, n, None, None, None, confidence)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return Proportion(k, n, k / n, float(ci.low), float(ci.high), confidence)


def fisher_power(n1: int, n2: int, p1: float, p2: float, *, alpha: float = 0.05) -> float:
    """The exact power of the two-sided Fisher test of equal rates (``scipy.stats.fisher_exact``)
    with ``n1`` and ``n2`` runs whose true divergence rates are ``p1`` and ``p2``: the chance,
    summed over every outcome ``(k1, k2)`` with its binomial probability, that the test rejects
    at ``alpha``. With 4 runs per arm and rates 0.9 against 0.1 it is about 0.43."""
    from scipy import stats

    power = 0.0
    for k1 in range(n1 + 1):
        for k2 in range(n2 + 1):
            p_value = stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue
            if p_value < alpha:
                power += stats.binom.pmf(k1, n1, p1) * stats.binom.pmf(k2, n2, p2)
    return float(power)


def pooled_fisher_power(
    runs: Sequence[int], rates_a: Sequence[float], rates_b: Sequence[float], *, alpha: float = 0.05
) -> float:
    """The exact power of the two-sided Fisher test on counts pooled over strata: arm A and
    arm B each get ``runs[i]`` runs in stratum ``i`` (a learning rate), where their true rates are
    ``rates_a[i]`` and ``rates_b[i]``. Each arm's pooled count is a sum of binomials with
    different rates (its exact distribution is their convolution), and the power is the chance
    that Fisher's test on the pooled 2x2 table rejects at ``alpha``. Pooling is valid when both
    arms have the same runs per stratum (it is conservative where the rates differ across
    strata); with one stratum it is :func:`fisher_power`."""
    import numpy as np
    from scipy import stats

    if not len(runs) == len(rates_a) == len(rates_b):
        raise ValueError("runs, rates_a and rates_b need one entry per stratum")

    def pooled_pmf(rates: Sequence[float]) -> np.ndarray:
        pmf = np.ones(1)
        for n, p in zip(runs, rates):
            pmf = np.convolve(pmf, stats.binom.pmf(np.arange(n + 1), n, p))
        return pmf

    total = int(sum(runs))
    pmf_a, pmf_b = pooled_pmf(rates_a), pooled_pmf(rates_b)
    power = 0.0
    for k1 in range(total + 1):
        for k2 in range(total + 1):
            if pmf_a[k1] * pmf_b[k2] == 0.0:
                continue
            if stats.fisher_exact([[k1, total - k1], [k2, total - k2]]).pvalue < alpha:
                power += pmf_a[k1] * pmf_b[k2]
    return float(power)


def with_odds_ratio(rate: float, odds_ratio: float) -> float:
    """The rate whose odds are ``odds_ratio`` times those of ``rate`` (0 for a ratio of 0)."""
    if rate >= 1.0:
        return 1.0 if odds_ratio > 0 else 0.0
    odds = rate / (1.0 - rate) * odds_ratio
    return odds / (1.0 + odds)


@dataclass(frozen=True)
class Coefficient:
    """One term of a logistic regression: its log-odds estimate with a Wald interval, and the
    odds ratio ``exp(estimate)`` with its interval."""

    term: str
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def odds_ratio(self) -> tuple[float, float, float]:
        return math.exp(self.estimate), math.exp(self.ci_low), math.exp(self.ci_high)


@dataclass(frozen=True)
class LogisticFit:
    """A logistic regression of a 0/1 outcome, or why none could be fitted (``problem``: e.g.
    perfect separation, where some setting's runs all diverge or all survive and the maximum
    likelihood estimate does not exist)."""

    formula: str
    n: int
    coefficients: tuple[Coefficient, ...] = ()
    problem: str | None = None


def logistic_regression(
    rows: Iterable[Mapping[str, Any]], formula: str, *, confidence: float = CONFIDENCE
) -> LogisticFit:
    """Fit ``formula`` (``statsmodels``' formula language, e.g. ``"diverged ~ np.log(lr) +
    C(spectral, Treatment('off'))"``) to ``rows`` by maximum likelihood (``statsmodels.formula.api.logit``)
    and return each coefficient with its Wald interval at ``confidence``."""
    import warnings

    import numpy as np  # noqa: F401 -- the formula is evaluated here, and may call np.log
    import pandas as pd
    import statsmodels.formula.api as smf

    frame = pd.DataFrame(list(rows))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # statsmodels warns (not raises) on separation
            result = smf.logit(formula, data=frame).fit(disp=False)
    except Exception as exc:  # noqa: BLE001 -- separation, a singular matrix: said, not raised
        return LogisticFit(formula, len(frame), problem=f"{type(exc).__name__}: {exc}".strip())
    intervals = result.conf_int(alpha=1 - confidence)
    coefficients = tuple(
        Coefficient(
            term=str(term),
            estimate=float(result.params[term]),
            std_error=float(result.bse[term]),
            ci_low=float(intervals.loc[term, 0]),
            ci_high=float(intervals.loc[term, 1]),
            p_value=float(result.pvalues[term]),
        )
        for term in result.params.index
    )
    return LogisticFit(formula, int(result.nobs), coefficients)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (0 for one value) and count of some values."""

    mean: float
    std: float
    n: int


def summarize(values: Iterable[Any]) -> Summary | None:
    """The finite values' :class:`Summary`; None if there are none."""
    xs = [v for v in (finite(x) for x in values) if v is not None]
    if not xs:
        return None
    mean = math.fsum(xs) / len(xs)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return Summary(mean, std, len(xs))


@dataclass(frozen=True)
class Stability:
    """How one variant or ablation trained over its seeds.

    ``divergence`` counts the runs that are over (finished or diverged); ``not_counted`` are the
    failed and interrupted ones. ``survivors`` are the finished runs: ``final_loss`` (the last
    training step's loss) and ``test_nll`` (of ``nll_key``) summarize them and are None when none
    survived (or none has the value). ``skipped_total`` / ``skipped_mean`` are over the runs that recorded skipped steps
    (diverged ones included: their skipped steps are part of the story).
    """

    run: str
    divergence: Proportion
    not_counted: int
    survivors: int
    skipped_total: float | None
    skipped_mean: float | None
    final_loss: Summary | None
    nll_key: str | None
    test_nll: Summary | None


def stability(
    rows: Iterable[Mapping[str, Any]], *, nll_key: str | None = None, confidence: float = CONFIDENCE
) -> dict[str, Stability]:
    """Per run name (variant or ablation), in the order first seen: its :class:`Stability`.

    ``nll_key`` is the survivors' test NLL to summarize; by default the first of :data:`NLL_KEYS`
    that any finished run has, the same for every run name so that one table compares like with like.
    """
    rows = list(rows)
    if nll_key is None:
        finished = [r for r in rows if r.get("status") == "finished"]
        nll_key = next((k for k in NLL_KEYS if any(finite(r.get(k)) is not None for r in finished)), None)
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    out: dict[str, Stability] = {}
    for name, group in by_run.items():
        over = [r for r in group if r.get("status") in OVER]
        diverged = sum(r.get("status") == "diverged" for r in over)
        survivors = [r for r in over if r.get("status") == "finished"]
        skipped = [v for v in (finite(r.get("skipped_steps")) for r in group) if v is not None]
        out[name] = Stability(
            run=name,
            divergence=binomial_interval(diverged, len(over), confidence=confidence),
            not_counted=len(group) - len(over),
            survivors=len(survivors),
            skipped_total=math.fsum(skipped) if skipped else None,
            skipped_mean=math.fsum(skipped) / len(skipped) if skipped else None,
            final_loss=summarize(r.get("final_loss") for r in survivors),
            nll_key=nll_key,
            test_nll=summarize(r.get(nll_key) for r in survivors) if nll_key else None,
        )
    return out
