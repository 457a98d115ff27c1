"""The report's statistics, checked against values computed by hand.

Paired differences: Student's t over the per-seed differences. The quantiles used below have
closed forms, so they are stated here rather than taken from the code under test:
t_{0.975, 1} = tan(0.475 pi) = 12.706204736174696 (one degree of freedom is the Cauchy law) and
t_{0.975, 2} = 0.95 / sqrt(2 * 0.975 * 0.025) = 4.302652729749464.
Divergence rates: Clopper-Pearson, whose bounds at k = 0 and k = n have closed forms too:
0/n -> [0, 1 - 0.025^(1/n)], n/n -> [0.025^(1/n), 1].
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from genzoo.experiment.report import COLUMNS, ablation_sentence, render_report
from genzoo.experiment.report.statistics import (
    binomial_interval,
    paired_difference,
    paired_differences,
    stability,
)

T_975_DF1 = 12.706204736174696
T_975_DF2 = 4.302652729749464
NLL_IW = next(c for c in COLUMNS if c.key == "test_nats_iw")

BASE = {0: 80.0, 1: 81.0, 2: 79.5}
NO_SE = {0: 81.0, 1: 82.5, 2: 80.6}  # differences 1.0, 1.5, 1.1


def test_paired_interval_is_student_t_over_the_differences():
    diff = paired_difference(NO_SE, BASE, ablation="no_se", base="nvae", metric="test_nats_iw")
    # by hand: mean 1.2; deviations -0.2, 0.3, -0.1; sd = sqrt(0.14 / 2); se = sd / sqrt(3)
    half = T_975_DF2 * math.sqrt(0.07) / math.sqrt(3)
    assert diff.kind == "interval" and diff.n == 3 and diff.seeds == (0, 1, 2)
    assert diff.mean == pytest.approx(1.2)
    assert diff.sd == pytest.approx(math.sqrt(0.07))
    assert (diff.ci_low, diff.ci_high) == pytest.approx((1.2 - half, 1.2 + half))
    assert (diff.ci_low, diff.ci_high) == pytest.approx((0.542759, 1.857241), abs=1e-6)
    assert diff.excludes_zero
    # the same interval as scipy's paired t-test, an independent route to it
    ci = scipy_stats.ttest_rel([NO_SE[s] for s in BASE], list(BASE.values())).confidence_interval()
    assert (diff.ci_low, diff.ci_high) == pytest.approx((ci.low, ci.high))


def test_an_interval_that_spans_zero_is_no_effect_detected_with_what_it_does_not_rule_out():
    diff = paired_difference({0: 81.0, 1: 79.5, 2: 79.8}, BASE, ablation="plain_normal", base="nvae")
    # differences 1.0, -1.5, 0.3: mean -0.0667, sd = sqrt((1.0667^2 + 1.4333^2 + 0.3667^2) / 2)
    sd = math.sqrt(((1 + 1 / 15) ** 2 + (1.5 - 1 / 15) ** 2 + (0.3 + 1 / 15) ** 2) / 2)
    assert diff.mean == pytest.approx(-1 / 15)
    assert diff.ci_high - diff.mean == pytest.approx(T_975_DF2 * sd / math.sqrt(3))
    assert diff.ci_low < 0 < diff.ci_high and diff.excludes_zero is False
    sentence = ablation_sentence(diff, NLL_IW, {"hierarchy.latent_group": "baselines.plain_normal"})
    assert sentence == (
        "`plain_normal` (`hierarchy.latent_group` → `baselines.plain_normal`): no effect on test NLL (IW) "
        "detected against `nvae` at this budget and power (Δ −0.07 nats, 95% CI [−3.27, +3.14], 3 seeds): "
        "effects up to 3.27 nats either way are not ruled out."
    )


def test_seeds_that_only_partly_overlap_are_paired_where_both_have_a_value():
    ablation = {0: 81.0, 1: 82.0, 2: float("nan"), 4: 90.0}  # seed 2 diverged; seed 4 has no base
    base = {0: 80.0, 1: 80.5, 2: 79.5, 3: 80.0}
    diff = paired_difference(ablation, base)
    assert diff.seeds == (0, 1) and diff.differences == (1.0, 1.5)
    # mean 1.25, sd = 0.5 / sqrt(2), one degree of freedom
    half = T_975_DF1 * (0.5 / math.sqrt(2)) / math.sqrt(2)
    assert (diff.mean, diff.ci_low, diff.ci_high) == pytest.approx((1.25, 1.25 - half, 1.25 + half))
    assert diff.excludes_zero is False  # two seeds are little: [-1.93, 4.43]
    assert diff.of_seed(1) == 1.5 and diff.of_seed(2) is None and diff.of_seed(4) is None


def test_one_pair_gives_no_interval_and_says_so():
    diff = paired_difference({0: 80.4, 1: None}, {0: 80.0, 1: 81.0}, ablation="no_spectral", base="nvae")
    assert diff.kind == "one_pair" and diff.n == 1 and diff.mean == pytest.approx(0.4)
    assert diff.ci_low is None and diff.ci_high is None and diff.excludes_zero is None
    sentence = ablation_sentence(diff, NLL_IW, {"regularizers.spectral": "baselines.none"})
    assert sentence == (
        "`no_spectral` (`regularizers.spectral` → `baselines.none`) changes test NLL (IW) by +0.40 nats "
        "against `nvae` on seed 0: one seed, no interval can be given."
    )


def test_no_pairs_gives_nothing():
    diff = paired_difference({0: float("inf")}, {0: 80.0, 1: 81.0}, ablation="no_bn", base="nvae")
    assert diff.kind == "no_pairs" and diff.n == 0
    assert diff.mean is None and diff.ci_low is None and diff.excludes_zero is None
    assert "so no difference can be given" in ablation_sentence(
        diff, NLL_IW, {}, why="every run of it diverged"
    )


def test_the_same_difference_on_every_seed_is_reported_as_that_point():
    """Zero variance (parameter counts): no NaN from 0 / 0; the interval is the point itself."""
    diff = paired_difference({0: 900, 1: 900, 2: 900}, {0: 1000, 1: 1000, 2: 1000})
    assert diff.kind == "constant" and diff.sd == 0.0
    assert (diff.mean, diff.ci_low, diff.ci_high) == (-100.0, -100.0, -100.0)
    assert diff.excludes_zero
    same = paired_difference({0: 1000, 1: 1000}, {0: 1000, 1: 1000})
    assert (same.mean, same.ci_low, same.ci_high, same.excludes_zero) == (0.0, 0.0, 0.0, False)


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (0, 4, 0.0, 1 - 0.025 ** (1 / 4)),  # [0, 0.6024]
        (4, 4, 0.025 ** (1 / 4), 1.0),  # [0.3976, 1]
        (3, 3, 0.025 ** (1 / 3), 1.0),  # [0.2924, 1]
        (2, 4, 0.0676, 0.9324),  # tabulated
        (1, 10, 0.0025, 0.4450),  # tabulated
    ],
)
def test_divergence_rate_has_a_clopper_pearson_interval(k, n, low, high):
    p = binomial_interval(k, n)
    assert p.rate == k / n
    assert (p.ci_low, p.ci_high) == pytest.approx((low, high), abs=5e-5)


def test_no_run_over_gives_no_rate():
    p = binomial_interval(0, 0)
    assert p.rate is None and p.ci_low is None and p.ci_high is None


def row(run, seed, group="variant", base=None, changes=None, status="finished", **values):
    """A per-run row as the runner writes it, with only the fields these tests need."""
    meta = {
        "run": run,
        "seed": seed,
        "group": group,
        "base": base,
        "changes": changes or {},
        "status": status,
    }
    return {**meta, "diverged": int(status == "diverged"), **values}


def test_all_diverged_has_rate_one_and_no_survivors():
    rows = [row("no_bn", s, status="diverged", skipped_steps=20, final_loss=float("nan")) for s in range(3)]
    rows += [
        row("no_bn", 3, status="failed"),
        row("nvae", 0, skipped_steps=0, final_loss=85.0, test_nats_iw=80.0),
    ]
    result = stability(rows)
    no_bn = result["no_bn"]
    assert (no_bn.divergence.k, no_bn.divergence.n, no_bn.divergence.rate) == (3, 3, 1.0)
    assert (no_bn.divergence.ci_low, no_bn.divergence.ci_high) == pytest.approx((0.025 ** (1 / 3), 1.0))
    assert no_bn.not_counted == 1  # the failed run is no outcome of training
    assert no_bn.survivors == 0 and no_bn.final_loss is None and no_bn.test_nll is None
    assert (no_bn.skipped_total, no_bn.skipped_mean) == (60.0, 20.0)
    assert no_bn.nll_key == "test_nats_iw"  # chosen over all runs, the same for every row of the table
    assert result["nvae"].test_nll.mean == 80.0 and result["nvae"].divergence.rate == 0.0


def test_stability_of_survivors():
    rows = [
        row("nvae", 0, final_loss=85.0, test_nats_iw=80.0, skipped_steps=2),
        row("nvae", 1, final_loss=87.0, test_nats_iw=81.0, skipped_steps=0),
        row("nvae", 2, status="diverged", final_loss=float("nan"), skipped_steps=50),
        row("nvae", 3, status="interrupted", skipped_steps=0),
    ]
    s = stability(rows)["nvae"]
    assert (s.divergence.k, s.divergence.n, s.survivors, s.not_counted) == (1, 3, 2, 1)
    assert (s.final_loss.mean, s.final_loss.std, s.final_loss.n) == pytest.approx((86.0, math.sqrt(2), 2))
    assert (s.test_nll.mean, s.test_nll.n) == (80.5, 2)
    assert (s.skipped_total, s.skipped_mean) == (52.0, 13.0)


def write_runs(exp: Path, rows: list[dict]) -> None:
    for r in rows:
        folder = exp / "runs" / r["run"] / f"seed{r['seed']}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(r))


NO_SE_P = scipy_stats.ttest_rel(list(NO_SE.values()), list(BASE.values())).pvalue  # about 0.016
SE = {"hierarchy.gate": "baselines.none_gate"}
SPECTRAL = {"regularizers.spectral": "baselines.none"}


def matrix() -> list[dict]:
    rows = []
    for s, v in BASE.items():
        rows.append(row("nvae", s, test_nats_iw=v, params=1000, skipped_steps=0, final_loss=v + 5))
    for s, v in NO_SE.items():
        rows.append(
            row(
                "no_se",
                s,
                "ablation",
                "nvae",
                SE,
                test_nats_iw=v,
                params=900,
                skipped_steps=0,
                final_loss=v + 5,
            )
        )
    rows.append(
        row(
            "no_spectral",
            0,
            "ablation",
            "nvae",
            SPECTRAL,
            test_nats_iw=80.4,
            params=1000,
            skipped_steps=1,
            final_loss=85,
        )
    )
    for s in (1, 3):  # seed 3: the base never ran it
        rows.append(
            row(
                "no_spectral",
                s,
                "ablation",
                "nvae",
                SPECTRAL,
                status="diverged",
                params=1000,
                skipped_steps=20,
            )
        )
    return rows  # fmt: skip


def test_paired_differences_of_a_matrix():
    deltas = paired_differences(matrix(), ["test_nats_iw", "params"])
    assert set(deltas) == {"no_se", "no_spectral"}
    assert deltas["no_se"]["test_nats_iw"].mean == pytest.approx(1.2)
    assert deltas["no_se"]["params"].kind == "constant"
    assert deltas["no_spectral"]["test_nats_iw"].kind == "one_pair"
    assert deltas["no_spectral"]["params"].seeds == (0, 1)


def test_report_json_and_csv_carry_the_statistics(tmp_path):
    write_runs(tmp_path, matrix())
    render_report(tmp_path, title="stats")
    report = (tmp_path / "report.md").read_text()

    # the ablation table: mean ± std, then the paired Δ with its interval and the mark
    assert "| no_se | nvae | `hierarchy.gate` → `baselines.none_gate` | 3 (3) |" in report
    assert "81.37 ± 1.00; Δ +1.20 [+0.54, +1.86] *" in report
    assert "900 ± 0; Δ −100 (same each seed) *" in report
    assert "| no_spectral | nvae | `regularizers.spectral` → `baselines.none` | 3 (2) |" in report
    assert "80.40; Δ +0.40 (1 seed, no CI)" in report
    # one sentence per ablation, to quote as it is
    assert (
        "- `no_se` (`hierarchy.gate` → `baselines.none_gate`) changes test NLL (IW) by +1.20 nats against "
        f"`nvae` (95% CI [+0.54, +1.86], 3 seeds, Holm-adjusted p = {NO_SE_P:.3g} over 1 ablation): worse. "
        "Also beyond noise: parameters −100 (same each seed)."
    ) in report
    # the family is no_se alone (no_spectral has one pair, so no p-value): Holm leaves p as it is
    assert f"| {NO_SE_P:.3g} ({NO_SE_P:.3g}) |" in report and "| – |" in report
    assert "on seed 0: one seed, no interval can be given." in report
    # the stability table: something diverged
    assert "## Stability" in report
    assert "| no_spectral | 2 / 3 | 0.67 [0.09, 0.99] | 41 (13.7) | 1 | 85.00 (n=1) | 80.40 (n=1) |" in report
    assert (
        "| nvae | 0 / 3 | 0.00 [0.00, 0.71] | 0 (0.0) | 3 | 85.17 ± 0.76 (n=3) | 80.17 ± 0.76 (n=3) |"
        in report
    )

    rows = json.loads((tmp_path / "results.json").read_text())
    assert isinstance(rows, list) and len(rows) == 9  # still one row per run
    by_id = {(r["run"], r["seed"]): r for r in rows}
    no_se = by_id["no_se", 1]
    assert no_se["delta_test_nats_iw"] == pytest.approx(1.5)  # this seed's own difference
    assert no_se["delta_test_nats_iw_mean"] == pytest.approx(1.2)
    assert (no_se["delta_test_nats_iw_ci_low"], no_se["delta_test_nats_iw_ci_high"]) == pytest.approx(
        (0.542759, 1.857241), abs=1e-6
    )
    assert no_se["delta_test_nats_iw_n"] == 3 and no_se["delta_params"] == -100
    unpaired = by_id["no_spectral", 3]
    assert unpaired["delta_params"] is None and unpaired["delta_params_n"] == 2
    assert unpaired["delta_test_nats_iw_mean"] == pytest.approx(0.4)
    assert unpaired["delta_test_nats_iw_ci_low"] is None and unpaired["delta_test_nats_iw_n"] == 1
    assert unpaired["divergence_rate"] == pytest.approx(2 / 3) and unpaired["divergence_n"] == 3
    assert not any(k.startswith("delta_") for k in by_id["nvae", 0])  # variants have no base
    assert (by_id["nvae", 0]["divergence_ci_low"], by_id["nvae", 0]["divergence_ci_high"]) == pytest.approx(
        (0.0, 1 - 0.025 ** (1 / 3))
    )

    with (tmp_path / "results.csv").open() as fh:
        reader = csv.DictReader(fh)
        table = list(reader)
    assert len(table) == 9 and all(None not in r for r in table)  # one row per run, no ragged line
    assert reader.fieldnames[0] == "run" and reader.fieldnames[-1] == "divergence_n"
    csv_no_se = next(r for r in table if r["run"] == "no_se" and r["seed"] == "1")
    assert float(csv_no_se["delta_test_nats_iw"]) == pytest.approx(1.5)
    assert float(csv_no_se["delta_test_nats_iw_ci_high"]) == pytest.approx(1.857241, abs=1e-6)
    assert next(r for r in table if r["run"] == "nvae")["delta_test_nats_iw"] == ""


def test_all_diverged_ablation_in_the_report(tmp_path):
    rows = [row("nvae", s, test_nats_iw=80.0 + s, skipped_steps=0, final_loss=85.0) for s in range(2)]
    rows += [row("no_bn", s, "ablation", "nvae", {"regularizers.bn": "baselines.none"}, status="diverged") for s in range(2)]  # fmt: skip
    write_runs(tmp_path, rows)
    render_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "no seed where both it and `nvae` have a finite test NLL (IW) (every run of it diverged)" in report
    assert "| no_bn | 2 / 2 | 1.00 [0.16, 1.00] | – | 0 | none survived | none survived |" in report


def test_one_seed_without_trouble_has_no_stability_table(tmp_path):
    write_runs(
        tmp_path,
        [
            row("nvae", 0, test_nats_iw=80.0, skipped_steps=0, final_loss=85.0),
            row("no_se", 0, "ablation", "nvae", SE, test_nats_iw=81.0, skipped_steps=0, final_loss=86.0),
        ],
    )
    render_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Stability" not in report
    assert (
        "changes test NLL (IW) by +1.00 nats against `nvae` on seed 0: one seed, no interval can be given."
        in report
    )


def test_fisher_power_is_exact_and_matches_the_referees_figure():
    """Exercise 2's old design (4 runs per arm) had about 0.43 power for 90% against 10%
    divergence; 12 per arm has most of it. Checked against a brute-force sum."""
    from scipy import stats

    from genzoo.experiment.report.statistics import fisher_power

    assert fisher_power(4, 4, 0.9, 0.1) == pytest.approx(0.43, abs=0.01)
    assert fisher_power(12, 12, 0.9, 0.1) > 0.95
    assert fisher_power(12, 12, 0.3, 0.3) < 0.05  # no effect: at most the level
    brute = sum(
        stats.binom.pmf(a, 3, 0.7) * stats.binom.pmf(b, 5, 0.2)
        for a in range(4)
        for b in range(6)
        if stats.fisher_exact([[a, 3 - a], [b, 5 - b]]).pvalue < 0.05
    )
    assert fisher_power(3, 5, 0.7, 0.2) == pytest.approx(brute)


def test_pooled_fisher_power_is_exact_over_strata():
    """Exercise 2's realized power: Fisher's test on counts pooled over learning rates, where each
    arm's count is a sum of binomials with different rates. One stratum is fisher_power; two
    strata are checked against a brute-force sum over every outcome of every stratum."""
    import itertools

    from scipy import stats

    from genzoo.experiment.report.statistics import fisher_power, pooled_fisher_power, with_odds_ratio

    assert pooled_fisher_power([5], [0.7], [0.2]) == pytest.approx(fisher_power(5, 5, 0.7, 0.2))
    runs, rates_a, rates_b = [2, 3], [0.1, 0.6], [0.5, 0.9]
    brute = 0.0
    for a1, a2, b1, b2 in itertools.product(range(3), range(4), range(3), range(4)):
        prob = (
            stats.binom.pmf(a1, 2, 0.1) * stats.binom.pmf(a2, 3, 0.6)
            * stats.binom.pmf(b1, 2, 0.5) * stats.binom.pmf(b2, 3, 0.9)
        )  # fmt: skip
        if stats.fisher_exact([[a1 + a2, 5 - a1 - a2], [b1 + b2, 5 - b1 - b2]]).pvalue < 0.05:
            brute += prob
    assert pooled_fisher_power(runs, rates_a, rates_b) == pytest.approx(brute)
    assert with_odds_ratio(0.5, 3.0) == pytest.approx(0.75) and with_odds_ratio(0.25, 0.0) == 0.0
    # no effect: at most the level, whatever the rates across strata
    assert pooled_fisher_power([12, 12, 12], [0.0, 0.04, 0.31], [0.0, 0.04, 0.31]) < 0.05


def test_logistic_regression_of_a_two_by_two_table_gives_its_log_odds_ratio():
    """A known case: with one binary factor the fitted coefficient is the table's log odds
    ratio log(ad / bc) and its standard error sqrt(1/a + 1/b + 1/c + 1/d) (Woolf)."""
    import math

    from genzoo.experiment.report.statistics import logistic_regression

    a, b, c, d = 8, 4, 3, 9  # spectral off: 8 diverged, 4 not; on: 3 diverged, 9 not
    rows = (
        [{"diverged": 1, "spectral": "off"}] * a
        + [{"diverged": 0, "spectral": "off"}] * b
        + [{"diverged": 1, "spectral": "on"}] * c
        + [{"diverged": 0, "spectral": "on"}] * d
    )
    fit = logistic_regression(rows, "diverged ~ C(spectral, Treatment('off'))")
    assert fit.problem is None and fit.n == 24
    term = next(t for t in fit.coefficients if "on" in t.term)
    assert term.estimate == pytest.approx(math.log((c * b) / (a * d)), rel=1e-6)
    assert term.std_error == pytest.approx(math.sqrt(1 / a + 1 / b + 1 / c + 1 / d), rel=1e-4)
    assert term.ci_low < term.estimate < term.ci_high
    separated = [{"diverged": 1, "spectral": "off"}] * 4 + [{"diverged": 0, "spectral": "on"}] * 4
    assert logistic_regression(separated, "diverged ~ C(spectral)").problem is not None
    # the formula of docs/scripts/stability_plot.py, with numpy's log of the learning rate: the same
    # fit as with log(lr) computed beforehand
    rows = [dict(r, lr=lr, log_lr=math.log(lr)) for r, lr in zip(rows, [0.03, 0.05, 0.07] * 8, strict=True)]
    by_np = logistic_regression(rows, "diverged ~ np.log(lr) + C(spectral, Treatment('off'))")
    by_column = logistic_regression(rows, "diverged ~ log_lr + C(spectral, Treatment('off'))")
    assert by_np.problem is None, by_np.problem
    assert [t.estimate for t in by_np.coefficients] == pytest.approx(
        [t.estimate for t in by_column.coefficients]
    )


def test_the_ablation_table_adjusts_the_family_by_holm_and_words_the_effects_by_it(tmp_path):
    """Three ablations of one base; by hand, Holm multiplies the smallest p-value by 3, the next by
    2 and the largest by 1, each at least the one before. An ablation whose interval excludes zero
    but whose adjusted p-value does not fall below 0.05 is "inconclusive"."""
    base = {0: 80.0, 1: 81.0, 2: 79.5, 3: 80.2}
    shifts = {  # per-seed differences from the base
        "strong": (3.0, 3.2, 2.9, 3.1),
        "weak": (0.5, 1.5, 0.4, 1.2),
        "none": (0.4, -0.6, 0.1, -0.2),
    }
    rows = [row("nvae", s, test_nats_iw=v) for s, v in base.items()]
    for name, diffs in shifts.items():
        rows += [row(name, s, "ablation", "nvae", SE, test_nats_iw=base[s] + d) for s, d in zip(base, diffs)]
    write_runs(tmp_path, rows)
    render_report(tmp_path)
    report = (tmp_path / "report.md").read_text()

    p = {n: scipy_stats.ttest_rel([base[s] + d for s, d in zip(base, diffs)], list(base.values())).pvalue
         for n, diffs in shifts.items()}  # fmt: skip
    order = sorted(p, key=p.get)
    holm, running = {}, 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * p[name]))
        holm[name] = running
    assert p["weak"] < 0.05 <= holm["weak"]  # the case the wording rule is about
    for name in shifts:
        assert f"| {p[name]:.3g} ({holm[name]:.3g}) |" in report
    assert "p (Holm), test nats (IW)" in report
    assert f"Holm-adjusted p = {holm['strong']:.3g} over 3 ablations): worse." in report
    assert (
        "the interval excludes zero, but not after Holm's adjustment over the 3 ablations "
        f"(adjusted p = {holm['weak']:.3g})."
    ) in report
    assert "`none` (`hierarchy.gate` → `baselines.none_gate`): no effect on test NLL (IW) detected" in report


def test_speeds_measured_under_shared_load_are_marked_and_get_no_interval(tmp_path):
    rows = []
    for s in range(3):
        rows.append(
            row("nvae", s, test_nats_iw=80.0 + s, train_images_per_s=100.0 + s, train_shared_load=0.0)
        )
        rows.append(
            row("fast", s, "ablation", "nvae", SE, test_nats_iw=80.5 + s, train_images_per_s=150.0 + 2 * s,
                train_shared_load=0.5 if s == 1 else 0.0)
        )  # fmt: skip
        rows.append(
            row("alone", s, "ablation", "nvae", SPECTRAL, test_nats_iw=80.5 + s, train_images_per_s=120.0 + 2 * s,
                train_shared_load=0.0)
        )  # fmt: skip
    write_runs(tmp_path, rows)
    render_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    # the shared run's own cell is marked, its difference keeps its mean and loses its interval
    assert "152.0 ± 2.0 ‡; Δ +51.0 ‡ (shared load: no interval)" in report
    assert "Δ +21.0 [" in report  # measured alone: an interval as usual
    assert "‡ measured while other genzoo processes trained on this machine" in report
    by_id = {(r["run"], r["seed"]): r for r in json.loads((tmp_path / "results.json").read_text())}
    assert by_id["fast", 0]["delta_train_images_per_s_mean"] == pytest.approx(51.0)
    assert by_id["fast", 0]["delta_train_images_per_s_ci_low"] is None
    assert by_id["alone", 0]["delta_train_images_per_s_ci_low"] is not None
