"""The GPU session's probes and plan (benchmarks/gpu/matrix_probe.py), run on the CPU: the plan
that full.sh follows must choose the number of runs at once and the steps as documented, from
figures that the probes write."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probe():
    return importlib.import_module("benchmarks.gpu.matrix_probe")


def test_the_launcher_deals_runs_round_robin_so_the_slowest_slot_decides(probe):
    assert probe.makespan([1.0, 2.0, 3.0, 4.0], slots=2) == 6.0  # slot 0: 1 + 3, slot 1: 2 + 4
    assert probe.makespan([1.0, 2.0, 3.0], slots=5) == 3.0
    assert probe.makespan([2.0] * 6, slots=1) == 12.0


def steps_doc(**ms):
    return {"rows": [{"run": run, "batch": 256, "ms_per_step": value} for run, value in ms.items()]}


def concurrency_doc(rates: dict[int, float], run: str = "a"):
    levels = [{"runs_at_once": n, "images_per_s": rate} for n, rate in rates.items()]
    return {"run": run, "batch": 256, "levels": levels}


def test_the_plan_takes_the_runs_at_once_with_the_shortest_matrix_and_fills_the_target(probe):
    # alone: run a 100 ms, run b 50 ms per step of 256 images (2,560 and 5,120 images/s)
    solo = steps_doc(a=100.0, b=50.0)
    # two at once: 1.6x the images/s of one (each 1.25x slower); four: no gain over two
    rates = {1: 2560.0, 2: 4096.0, 4: 4096.0}
    plan = probe.plan(
        solo, concurrency_doc(rates), runs=["a", "b"], seeds=2, batch=256,
        target_s=100.0, limit_s=200.0, min_steps=100, overhead_s=10.0,
    )  # fmt: skip
    # per step: alone 0.1+0.1+0.05+0.05 = 0.3 s; two at once (0.125+0.125 | 0.0625+0.0625 dealt
    # round-robin: a,a,b,b -> slot 0: a+b, slot 1: a+b) = 0.1875 s; four at once: 2.5x -> 0.25 s
    assert plan["slowdown"][2] == pytest.approx(1.25) and plan["slowdown"][4] == pytest.approx(2.5)
    assert plan["makespan_s_per_step"][2] == pytest.approx(0.1875)
    assert plan["runs_per_gpu"] == 2
    assert plan["steps"] == 450  # (100 - 10) / 0.1875 = 480, rounded down to a multiple of 50
    assert plan["estimated_s"] == pytest.approx(10 + 450 * 0.1875)


def test_the_plan_keeps_the_minimum_steps_where_the_limit_allows_and_says_when_not(probe):
    common = dict(runs=["a"], seeds=1, batch=256, overhead_s=0.0, target_s=10.0, min_steps=200)
    kept = probe.plan(steps_doc(a=100.0), None, limit_s=25.0, **common)  # 200 x 0.1 s = 20 s <= 25
    assert (kept["steps"], kept["runs_per_gpu"]) == (200, 1) and "minimum" in kept["note"]
    cut = probe.plan(steps_doc(a=100.0), None, limit_s=15.0, **common)
    assert cut["steps"] == 150 and "only 150 of the 200" in cut["note"]
    with pytest.raises(SystemExit, match="no step time at batch 256 for b"):
        probe.plan(steps_doc(a=100.0), None, limit_s=15.0, **{**common, "runs": ["a", "b"]})


def test_the_concurrency_windows_count_the_steps_that_end_inside_them(probe):
    # two processes; windows of 2 s from t0 = 100, the first 0.5 s of each not counted
    records = [
        {"ends": [100.2, 100.6, 101.0, 101.9, 102.7, 103.5], "durations": [0.4] * 6},
        {"ends": [102.8, 103.6], "durations": [0.8, 0.8]},
    ]
    table = probe.concurrency_table(records, [1, 2], t0=100.0, phase_s=2.0, batch=10, skip_s=0.5)
    assert [row["steps"] for row in table] == [3, 4]  # 100.6 101.0 101.9 | 102.7 102.8 103.5 103.6
    assert table[0]["images_per_s"] == pytest.approx(3 * 10 / 1.5)
    assert table[1]["ms_per_step_median"] == pytest.approx(600.0)


def test_the_step_probe_times_each_run_of_the_experiment(probe, tmp_path, one_thread):
    """The probe builds the runs as the matrix does (here the smoke profile on the CPU, with a
    tiny stand-in data set) and writes one row per run and batch size."""
    out = tmp_path / "steps.json"
    data = tmp_path / "mnist"
    write_idx_images(data / "t10k-images-idx3-ubyte", count=10_000)
    code = probe.main(
        ["steps", "--profile", "smoke", "--set", f"data.dataset.root={data}", "--device", "cpu",
         "--runs", "nvae", "standard_cells", "--batches", "4", "--steps", "1", "--warmup", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["run"], r["batch"]) for r in rows] == [("nvae", 4), ("standard_cells", 4)]
    assert all(r["ms_per_step"] > 0 and r["images_per_s"] > 0 for r in rows)


def write_idx_images(path: Path, count: int) -> None:
    """A random IDX image file of ``count`` 28x28 images (MNIST's format)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    header = np.array([2051, count, 28, 28], dtype=">i4").tobytes()
    path.write_bytes(header + pixels.tobytes())
