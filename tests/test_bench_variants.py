"""benchmarks/model/bench_variants.py: an experiment's runs built as genzoo run builds them and
their training steps timed interleaved in one process."""

from __future__ import annotations

import math

import pytest

from benchmarks.model import bench_variants

QUICKSTART = "experiments/quickstart.yaml"


def test_each_run_is_timed_with_its_own_batch_and_compared_with_the_first(capsys, one_thread):
    code = bench_variants.main(
        [QUICKSTART, "--profile", "smoke", "--runs", "nvae", "standard_vae", "--rounds", "2", "--warmup", "0"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| run | batch | median ms / step | images/s | images/s vs nvae (95% CI) |" in out
    assert "| nvae | 16 |" in out and "1 (base)" in out
    row = next(line for line in out.splitlines() if line.startswith("| standard_vae |"))
    ratio, interval = row.split("|")[5].strip().split("x [")
    low, high = (float(x) for x in interval.rstrip("]").split(", "))
    assert low <= float(ratio) <= high and low > 0
    assert "- command: `python" in out and "2 interleaved rounds after 0 warm-up" in out


def test_the_ratio_is_the_geometric_mean_of_paired_rounds():
    # base twice as slow as the run in every round: images/s 2x, no spread, so no width
    ratio, low, high = bench_variants.ratio_interval([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert (ratio, low, high) == pytest.approx((2.0, 2.0, 2.0))
    ratio, low, high = bench_variants.ratio_interval([1.0, 1.0], [1.0, 4.0])
    assert ratio == pytest.approx(2.0) and low < 2.0 < high and math.isfinite(high)


def test_an_unknown_run_is_named(capsys):
    with pytest.raises(SystemExit, match="no run named nvea"):
        bench_variants.main([QUICKSTART, "--profile", "smoke", "--runs", "nvea"])
