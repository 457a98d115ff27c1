"""The paper-scale GPU benchmark (benchmarks/gpu/bench_gpu_paper.py), in the parts a CPU can run:
its arguments, its plan, its time budget, and a whole run of a tiny model that writes the JSON
and Markdown files, keeps going past a failing setting and says what it could not measure."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

import benchmarks.gpu.bench_gpu_paper as bench
import benchmarks.gpu.paper_plan as plan
import benchmarks.gpu.paper_report as report
from benchmarks.harness.paper_models import ModelSpec

TINY = ModelSpec(
    "cifar10",
    dict(
        image_shape=(3, 8, 8),
        num_channels=4,
        num_groups_per_scale=2,
        latent_chs=2,
        num_preprocess_blocks=0,
        num_postprocess_blocks=0,
        latent_group={"key": "nvae.residual_normal", "num_flows": 0},
    ),
    num_bits=8,
    batch=4,
)


# tiny models: one CPU thread (more only add synchronization, on a shared machine)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_arguments_default_to_a_seven_minute_budget_written_to_OUT(monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    args = bench.parse_args([])
    assert (args.budget_s, args.out, args.steps, args.batches) == (420, str(tmp_path), 100, [8, 16, 32, 64])
    assert bench.parse_args(["--budget-s", "60", "--out", "elsewhere"]).out == "elsewhere"
    monkeypatch.delenv("OUT")
    assert bench.parse_args([]).out == "out"
    with pytest.raises(SystemExit):
        bench.parse_args(["--budget-s", "0"])


def test_the_plan_starts_with_the_reference_and_covers_what_the_issue_asks():
    core = plan.core_settings(steps=100, speed_steps=20)
    assert core[0] == plan.Setting("cifar10", "naive", "fp32", steps=20)
    everything = core + plan.remaining_settings(20)
    measured = {(s.cells, s.precision, s.channels_last, s.compile, s.cuda_graphs) for s in everything}
    for cells in ("naive", "default"):
        for precision in ("fp32", "fp16", "bf16"):
            for channels_last in (False, True):
                assert (cells, precision, channels_last, False, False) in measured
    graphs = [s for s in core if s.cuda_graphs]
    assert {s.precision for s in graphs} == {"fp32", "fp16", "bf16"} and all(s.steps == 100 for s in graphs)
    assert all(s.compile == "cells" for s in graphs)
    best = plan.Setting("cifar10", "default", "bf16", compile="cells", cuda_graphs=True)
    derived = plan.derived_settings(best, [8, 16, 32, 64], 20)
    assert [s.batch for s in derived if s.section == "batch"] == [8, 16, 64]  # 32 is the best row itself
    assert all(s.compile == "cells" and s.precision == "bf16" for s in derived if s.section == "batch")
    assert {(s.model, s.batch) for s in derived if s.section == "mnist"} == {("mnist", 100)}
    assert "cifar10.naive.fp32.b32" in bench.dry_run(bench.parse_args(["--dry-run"]))


def test_the_budget_shortens_or_skips_what_would_not_fit():
    now = [0.0]
    budget = plan.Budget(100, clock=lambda: now[0])
    eager = plan.Setting("cifar10", "default", "fp32", steps=20)
    budget.learn(eager, {"ms_per_step": 1000.0, "build_s": 5.0})  # 1 s per step, 5 s to build
    assert budget.estimate(eager) == pytest.approx((5 + 20) * budget.MARGIN)
    assert budget.plan(eager, min_steps=8) == (20, "")
    now[0] = 80.0  # 20 s left: 8 steps fit
    steps, why = budget.plan(eager, min_steps=8)
    assert steps == 8 and why.startswith("8 steps instead of 20")
    now[0] = 95.0
    steps, why = budget.plan(eager, min_steps=8)
    assert steps == 0 and why.startswith("skipped: needs about 15 s, 5 s left")
    # a compiled setting pays the guessed compilation until one was measured, and its steps
    # are estimated from the slowest measured step of the model meanwhile
    compiled = plan.Setting("cifar10", "default", "fp16", compile="cells", cuda_graphs=True, steps=20)
    assert budget.estimate(compiled) == pytest.approx((5 + budget.GUESS_COMPILE_S + 20) * budget.MARGIN)
    budget.learn(compiled, {"ms_per_step": 250.0, "build_s": 5.0, "compile_time_s": 60.0})
    bf16 = plan.Setting("cifar10", "default", "bf16", compile="cells", cuda_graphs=True, steps=20)
    assert budget.estimate(bf16) == pytest.approx((5 + 60 + 20 * 0.25) * budget.MARGIN)
    # the whole model compiled has no estimate: it runs in whatever is left, from a minute on
    whole = plan.Setting("cifar10", "default", "fp16", compile="model")
    assert budget.plan(whole, min_steps=8)[0] == 0
    now[0] = 0.0
    assert budget.plan(whole, min_steps=8)[0] == 8


def test_a_setting_that_outlives_its_deadline_is_stopped():
    with pytest.raises(plan.OutOfTime):
        with plan.deadline(0.2):
            time.sleep(5)


def test_a_run_on_the_cpu_records_every_setting_and_writes_both_files(tmp_path):
    args = bench.parse_args(["--out", str(tmp_path), "--budget-s", "600"])
    settings = [
        plan.Setting("cifar10", "naive", "fp32", batch=4, steps=3),  # the reference
        plan.Setting("cifar10", "default", "fp32", batch=4, steps=3),
        # CUDA graphs need a GPU: this one fails, is recorded, and the run goes on
        plan.Setting("cifar10", "default", "fp32", compile="cells", cuda_graphs=True, batch=4, steps=3),
    ]
    lines: list[str] = []
    run = bench.run_all(
        args, torch.device("cpu"), specs={"cifar10": TINY}, settings=settings, echo=lines.append
    )

    doc = json.loads((tmp_path / "bench_gpu_paper.json").read_text())
    assert [r["status"] for r in doc["rows"]] == ["ok", "ok", "failed"]
    assert "cuda_graphs=True needs a CUDA device" in doc["rows"][2]["reason"]
    ok = doc["rows"][0]
    assert ok["steps_run"] == 3 and ok["finite"] and ok["images_per_s"] > 0 and ok["params"] > 0
    assert "peak_alloc_mib" not in ok  # no allocator statistics on a CPU
    assert doc["best"] in {r["name"] for r in doc["rows"]} and run.rows == doc["rows"]
    targets = {t["target"]: t for t in doc["targets"]}
    speed = targets["fastest setting >= 2x the images/s of eager fp32 with the naive cells"]
    assert speed["met"] in (True, False) and speed["measured"].endswith(")")
    assert targets["... at most 0.6x its peak memory"]["met"] is None

    markdown = (tmp_path / "bench_gpu_paper.md").read_text()
    assert "| target | measured | met? |" in markdown and "not measured" in markdown
    assert "| fp32, eager, batch 4 | naive |" in markdown and "failed" in markdown
    assert any(line.endswith("(fp32, compile cells, CUDA graphs) ...") for line in lines)
    assert any("failed: ConfigError" in line for line in lines)


def gpu_row(setting, images_per_s, *, peak, step_peak, compile_time_s=None, status="ok"):
    """A row as a GPU run records it (figures made up for the test)."""
    return {
        "name": setting.name,
        "setting": dataclasses.asdict(setting),
        "label": setting.label,
        "status": status,
        "params": 130_852_480,
        "steps_run": setting.steps,
        "ms_per_step": 1000 * setting.batch / images_per_s,
        "images_per_s": images_per_s,
        "peak_alloc_mib": peak,
        "step_peak_mib": step_peak,
        "compile_time_s": compile_time_s,
        "finite": True,
        "nonfinite_steps": 0,
        "skipped_steps": 0,
    }


def test_the_targets_and_tables_read_as_the_issue_states_them():
    s = plan.Setting
    rows = [
        gpu_row(s("cifar10", "naive", "fp32"), 40.0, peak=9000, step_peak=6000),
        gpu_row(s("cifar10", "default", "fp16"), 50.0, peak=7000, step_peak=4000),
        gpu_row(s("cifar10", "default", "bf16"), 46.0, peak=7000, step_peak=4000),
        gpu_row(
            s("cifar10", "default", "fp16", compile="cells", cuda_graphs=True, steps=100),
            100.0, peak=6000, step_peak=3000, compile_time_s=95.0,
        ),
        gpu_row(s("cifar10", "default", "bf16", compile="cells", cuda_graphs=True, steps=100), 80.0,
                peak=6000, step_peak=3000, compile_time_s=90.0),
    ]  # fmt: skip
    assert report.best_setting(rows).name == "cifar10.default.fp16.compile-cells.graphs.b32"
    met = {t["target"]: (t["met"], t["measured"]) for t in report.targets(rows)}
    assert met["fastest setting >= 2x the images/s of eager fp32 with the naive cells"][0] is True  # 2.50x
    assert met["... at most 0.6x its peak memory"] == (
        True, "0.50x what the step adds (3000 MiB against 6000); whole peak 0.67x"
    )  # fmt: skip
    assert met["... compiled in at most 2 minutes"] == (True, "95 s")
    fp16_bf16 = met["fp16 and bf16 within 10% of each other"]
    assert fp16_bf16[0] is False  # eager 0.92x, compiled 0.80x
    assert "fp16/bf16, eager: bf16 0.92x fp16" in fp16_bf16[1]

    doc = {"device": "GPU", "torch": "2.x", "cuda": "13", "python": "3.12", "command": "python x",
           "started": "today", "elapsed_s": 1.0, "tf32": {"cudnn.allow_tf32": True,
           "cuda.matmul.allow_tf32": False}, "best": rows[3]["name"], "targets": report.targets(rows),
           "rows": rows}  # fmt: skip
    table = report.markdown(doc)
    assert "| fp16 + scaler, compile cells, CUDA graphs, batch 32 | default | 130,852,480 | 100 |" in table
    assert "| 320.0 | 100.0 | 2.50x | 6000 | 0.67x | 3000 | 95 | yes |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_without_cuda_it_stops_at_once_and_says_why(tmp_path, capsys):
    assert bench.main(["--out", str(tmp_path)]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
