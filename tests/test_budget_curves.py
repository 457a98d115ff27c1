"""Effects against the training budget, from the ``kind: "curve"`` records of the metrics logs.

The experiment below is written by hand: a base variant ``nvae`` and three ablations over seeds
0-2, each logging its held-out NLL at 12.8k, 51.2k and 204.8k images seen. The per-seed
differences ablation - base are chosen, and every expected interval is computed here from them
with scipy's paired t-test, independently of :mod:`genzoo.experiment.report.statistics`:

- ``late_gain`` is worse early and better late, both beyond noise: a significant flip.
- ``slight_flip`` wobbles around zero: its mean changes sign, but no interval excludes zero.
- ``steady`` is worse at every point: no flip. Its seed 2 is still running (no ``results.json``)
  and has not reached the last point, so that point has two pairs.

The logs carry what real ones do: training records in between, a line cut by a kill, ``"nan"``
and ``"inf"`` strings, and a point logged twice by a resumed run (the later record counts).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from scipy import stats

from genzoo.experiment.report import collect_results, render_report
from genzoo.experiment.report.budget import budget_effects, budget_label, read_curve_points
from genzoo.io.run_layout import ExperimentPaths

POINTS = (12800, 51200, 204800)
SEEDS = (0, 1, 2)
BASE_IW = {12800: (100.0, 101.0, 99.5), 51200: (90.0, 90.5, 89.8), 204800: (85.0, 85.2, 84.9)}
DIFFERENCES = {  # ablation - base, per point and seed; None: the seed has not reached the point
    "late_gain": {12800: (2.0, 2.4, 1.8), 51200: (0.3, -0.5, 0.1), 204800: (-1.0, -1.3, -0.9)},
    "slight_flip": {12800: (0.5, -0.4, 0.2), 51200: (-0.3, 0.2, -0.2), 204800: (0.1, 0.3, -0.2)},
    "steady": {12800: (1.0, 1.5, 1.1), 51200: (0.8, 1.2, 0.9), 204800: (0.5, 0.7, None)},
}
ELBO_GAP = {"base": 3.0, "ablation": 3.5}  # ELBO = IW + gap, so the ELBO differences are IW's + 0.5


def curve(images: int, iw: float | str, elbo: float | str) -> str:
    record = {
        "kind": "curve",
        "step": images // 256,
        "time": 1733333333.0,
        "images_seen": images,
        "test_nats_iw": iw,
        "test_nats_elbo": elbo,
        "test_bpd_iw": iw / 784 / 0.6931 if isinstance(iw, float) else iw,
        "test_iw_samples": 10,
        "test_num_images": 500,
    }
    return json.dumps(record)


def train(step: int) -> str:
    return json.dumps({"kind": "train", "step": step, "time": 1733333000.0, "loss": 95.0, "bpd": 0.17})


def write_run(root: Path, run: str, seed: int, lines: list[str], row: dict | None) -> None:
    """A run folder as the trainer leaves it: the metrics log and, once it is over, its row."""
    paths = ExperimentPaths(root).run(run, seed)
    paths.dir.mkdir(parents=True)
    paths.metrics.write_text("\n".join(lines) + "\n")
    if row is not None:
        paths.results.write_text(json.dumps(row))


def base_iw(images: int, seed: int) -> float:
    return BASE_IW[images][seed]


def ablation_iw(name: str, images: int, seed: int) -> float | None:
    diff = DIFFERENCES[name][images][seed]
    return None if diff is None else base_iw(images, seed) + diff


def base_log(seed: int) -> list[str]:
    lines = []
    for images in POINTS:
        iw = base_iw(images, seed)
        elbo = "nan" if (images, seed) == (204800, 2) else iw + ELBO_GAP["base"]
        lines += [train(images // 256 - 1), curve(images, iw, elbo)]
    if seed == 1:  # killed after 51.2k with a bad value logged, resumed: the point again, then on
        lines.insert(3, curve(51200, 999.0, 999.0))
        lines.insert(4, train(199))
    if seed == 0:
        lines.append('{"kind": "train", "st')  # cut by a kill
    return lines


def ablation_log(name: str, seed: int) -> list[str]:
    lines = []
    for images in POINTS:
        iw = ablation_iw(name, images, seed)
        if iw is None:
            continue
        elbo = "inf" if (name, images, seed) == ("slight_flip", 12800, 1) else iw + ELBO_GAP["ablation"]
        lines += [train(images // 256 - 1), curve(images, iw, elbo)]
    if (name, seed) == ("late_gain", 0):
        lines.insert(2, '{"kind": "curve", "step": 100, "images_seen": 25600, "test_nats_iw": 1')
    return lines


def row(run: str, seed: int, iw: float, group: str = "variant", base: str | None = None) -> dict:
    return {"run": run, "seed": seed, "group": group, "base": base, "changes": {}, "status": "finished", "test_nats_iw": iw}  # fmt: skip


def write_experiment(root: Path) -> Path:
    for seed in SEEDS:
        write_run(root, "nvae", seed, base_log(seed), row("nvae", seed, base_iw(204800, seed)))
        for name in DIFFERENCES:
            final = ablation_iw(name, 204800, seed)
            finished = row(name, seed, final, "ablation", "nvae") if final is not None else None
            write_run(root, name, seed, ablation_log(name, seed), finished)
    return root


def expected(name: str, images: int, elbo: bool = False) -> tuple[tuple[int, ...], float, float, float]:
    """Seeds paired, mean, and 95% interval of ablation - base at ``images``, from scipy."""
    seeds, ablation, base = [], [], []
    for seed in SEEDS:
        a = ablation_iw(name, images, seed)
        b = base_iw(images, seed)
        if a is None or (elbo and ((images, seed) == (204800, 2) or (name, images, seed) == ("slight_flip", 12800, 1))):  # fmt: skip
            continue
        gap = ELBO_GAP["ablation"] - ELBO_GAP["base"] if elbo else 0.0
        seeds.append(seed)
        ablation.append(a + gap)
        base.append(b)
    test = stats.ttest_rel(ablation, base)
    ci = test.confidence_interval(0.95)
    return tuple(seeds), sum(ablation) / len(ablation) - sum(base) / len(base), ci.low, ci.high


@pytest.fixture
def experiment(tmp_path) -> Path:
    return write_experiment(tmp_path / "exp")


def test_a_log_is_read_robustly(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        "\n".join(
            [
                train(49),
                curve(12800, 100.0, "nan"),
                curve(51200, 999.0, 999.0),  # the point before a kill ...
                train(199),
                curve(51200, 90.0, 93.0),  # ... evaluated again after resuming: this one counts
                '{"kind": "curve", "step": 800, "images_seen": 204800, "test_na',
            ]
        )
    )
    points = read_curve_points(log)
    assert list(points) == [12800, 51200]  # the cut line is skipped
    assert points[51200]["test_nats_iw"] == 90.0
    assert points[12800]["test_nats_elbo"] == "nan"  # kept as logged; the statistics skip it
    assert read_curve_points(tmp_path / "missing.jsonl") == {}


def test_paired_differences_at_each_point_are_student_t(experiment):
    budget = budget_effects(ExperimentPaths(experiment), collect_results(experiment))
    assert budget.metrics == ("test_nats_iw", "test_nats_elbo")
    assert (budget.eval_images, budget.iw_samples) == ((500,), (10,))
    for metric in budget.metrics:
        effects = {e.ablation: e for e in budget.of_metric(metric)}
        assert list(effects) == list(DIFFERENCES)
        for name, effect in effects.items():
            assert effect.base == "nvae" and list(effect.differences) == list(POINTS)  # not the cut 25.6k
            for images, diff in effect.differences.items():
                seeds, mean, low, high = expected(name, images, elbo=metric == "test_nats_elbo")
                assert diff.seeds == seeds
                assert (diff.mean, diff.ci_low, diff.ci_high) == pytest.approx((mean, low, high))


def test_missing_points_and_non_finite_values_pair_fewer_seeds(experiment):
    budget = budget_effects(ExperimentPaths(experiment), collect_results(experiment))
    iw = {e.ablation: e for e in budget.of_metric("test_nats_iw")}
    elbo = {e.ablation: e for e in budget.of_metric("test_nats_elbo")}
    assert iw["steady"].differences[204800].seeds == (0, 1)  # seed 2 is still running
    assert elbo["late_gain"].differences[204800].seeds == (0, 1)  # the base's seed 2 logged "nan"
    assert elbo["slight_flip"].differences[12800].seeds == (0, 2)  # its seed 1 logged "inf"
    # the resumed base run's second record of 51.2k counts, not the 999 before the kill
    assert iw["steady"].differences[51200].differences == pytest.approx((0.8, 1.2, 0.9))


def test_ranking_flips(experiment):
    budget = budget_effects(ExperimentPaths(experiment), collect_results(experiment))
    iw = {e.ablation: e for e in budget.of_metric("test_nats_iw")}
    late, slight, steady = iw["late_gain"], iw["slight_flip"], iw["steady"]
    assert late.flips and late.flips_significantly  # [+1.3, +2.8] early, [-1.6, -0.5] late
    assert late.differences[12800].ci_low > 0 and late.differences[204800].ci_high < 0
    assert slight.flips and not slight.flips_significantly  # means +0.1, -0.1, +0.07; all span 0
    assert not any(d.excludes_zero for d in slight.differences.values())
    assert not steady.flips and not steady.flips_significantly
    assert all(e.comparable for e in iw.values())


def signed(value: float) -> str:
    """As the report writes a difference: two decimals, a sign, and a true minus sign."""
    return f"{value:+.2f}".replace("-", "−")


def test_the_report_has_the_section_the_figure_and_the_csv(experiment):
    written = render_report(experiment, title="budget")
    paths = ExperimentPaths(experiment)
    assert written["budget_curves"] == paths.budget_curves and written["budget_csv"] == paths.budget_csv
    assert paths.budget_curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = paths.report.read_text()

    section = report.index("## Effects against budget (images seen)")
    assert report.index("## Ablations") < section < report.index("## Stability")
    assert "Nothing is adjusted across points" in report and "Holm's adjustment" in report
    assert "(each point on 500 held-out images, K = 10 importance samples for the IW NLL)" in report
    assert "### test nats (IW)" in report and "### test nats (ELBO)" in report
    assert "| ablation | base | 12.8k | 51.2k | 205k | ranking flips |" in report
    _, mean, low, high = expected("late_gain", 12800)
    early = f"{signed(mean)} [{signed(low)}, {signed(high)}] *"
    _, mean, low, high = expected("late_gain", 51200)
    middle = f"{signed(mean)} [{signed(low)}, {signed(high)}]"  # spans zero: no mark
    _, mean, low, high = expected("late_gain", 204800)
    late = f"{signed(mean)} [{signed(low)}, {signed(high)}] *"
    row = next(line for line in report[section:].splitlines() if line.startswith("| late_gain |"))
    assert row.replace(" †", "") == f"| late_gain | nvae | {early} | {middle} | {late} | yes, significant |"
    # † where the difference survives Holm's adjustment over the ablations at that point
    effect = next(
        e for e in budget_effects(paths, collect_results(paths.root)).effects if e.ablation == "late_gain"
    )
    marks = [cell.endswith("†") for cell in row.split(" | ")[2:5]]
    assert marks == [effect.holm_significant(x) for x in (12800, 51200, 204800)]
    assert marks[1] is False  # the middle point spans zero: no adjustment makes it significant
    assert early == "+2.07 [+1.31, +2.83] *"  # the figures a reader sees, for the record
    _, mean, low, high = expected("steady", 204800)
    assert f" | {signed(mean)} [{signed(low)}, {signed(high)}] n=2 | no |" in report  # fewer pairs
    slight = next(line for line in report[section:].splitlines() if line.startswith("| slight_flip |"))
    assert slight.endswith("| yes |")
    assert "![effects against budget](budget.png)" in report

    with paths.budget_csv.open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3 * 2 * 3  # ablations x metrics x points
    first = table[0]
    assert (first["ablation"], first["base"], first["metric"], first["images_seen"]) == (
        "late_gain",
        "nvae",
        "test_nats_iw",
        "12800",
    )
    _, mean, low, high = expected("late_gain", 12800)
    figures = (float(first["mean"]), float(first["ci_low"]), float(first["ci_high"]))
    assert figures == pytest.approx((mean, low, high))
    assert (first["n"], first["excludes_zero"]) == ("3", "True")


def test_no_curve_records_no_budget(tmp_path):
    """An experiment whose runs logged no curve renders as before: no section, no budget files."""
    for seed in SEEDS:
        write_run(tmp_path, "nvae", seed, [train(10)], row("nvae", seed, 80.0 + seed))
        write_run(tmp_path, "no_se", seed, [train(10)], row("no_se", seed, 81.0 + seed, "ablation", "nvae"))
    written = render_report(tmp_path)
    paths = ExperimentPaths(tmp_path)
    assert "budget_curves" not in written and "budget_csv" not in written
    assert not paths.budget_curves.exists() and not paths.budget_csv.exists()
    assert "Effects against budget" not in paths.report.read_text()
    assert budget_effects(paths, collect_results(tmp_path)) is None


def test_bits_per_dim_stand_in_where_no_nats_were_logged(tmp_path):
    """With K = 0 there is no IW NLL; a log with only bits/dim is compared in bits/dim."""
    record = {"kind": "curve", "step": 50, "images_seen": 12800, "test_bpd_elbo": 0.2}
    write_run(tmp_path, "nvae", 0, [json.dumps(record)], row("nvae", 0, 80.0))
    budget = budget_effects(ExperimentPaths(tmp_path), collect_results(tmp_path))
    assert budget.metrics == ("test_bpd_elbo",) and budget.effects == () and budget.iw_samples == ()
    assert [(v.run, v.points[12800].mean) for v in budget.variants] == [("nvae", 0.2)]


@pytest.mark.parametrize(
    "images, label",
    [(640, "640"), (12800, "12.8k"), (51200, "51.2k"), (204800, "205k"), (999_999, "1M"), (1310720, "1.31M")],
)
def test_budget_labels(images, label):
    assert budget_label(images) == label


def test_holm_adjustment_against_a_hand_computed_family():
    """Holm: sort the m p-values, multiply the i-th smallest by (m - i), keep the running maximum,
    cap at 1; members without a p-value stay out of the family."""
    from genzoo.experiment.report.statistics import holm_adjusted

    adjusted = holm_adjusted({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert adjusted["a"] == pytest.approx(0.03)  # 3 x 0.01
    assert adjusted["c"] == pytest.approx(0.06)  # 2 x 0.03
    assert adjusted["b"] == pytest.approx(0.06)  # max(1 x 0.04, 0.06)
    assert adjusted["d"] is None
    assert holm_adjusted({"x": 0.6, "y": 0.7}) == {"x": pytest.approx(1.0), "y": pytest.approx(1.0)}


def test_a_paired_difference_has_the_p_value_of_scipys_paired_t_test():
    from scipy import stats

    from genzoo.experiment.report.statistics import paired_difference

    a, b = {0: 1.0, 1: 2.5, 2: 2.0}, {0: 0.2, 1: 0.9, 2: 1.8}
    diff = paired_difference(a, b)
    assert diff.p_value == pytest.approx(stats.ttest_rel([1.0, 2.5, 2.0], [0.2, 0.9, 1.8]).pvalue)
    assert paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 1.0}).p_value == 0.0  # constant, nonzero
    assert paired_difference({0: 1.0}, {0: 0.0}).p_value is None
