"""Efficiency figures: parameter counts, images per second, peak memory."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from engine_helpers import TinyVAE
from torch import nn

from genzoo.engine import efficiency, parameter_counts, peak_memory_bytes, sampling_speed
from genzoo.engine.efficiency import Throughput
from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.run.runner import run_matrix


def test_parameters_are_grouped_by_top_level_module():
    model = TinyVAE()
    counts = parameter_counts(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["head"] == sum(p.numel() for p in model.head.parameters())
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"]


def test_a_model_can_split_its_parameters_by_component_kind():
    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 3), nn.Linear(3, 1)

        def parameter_counts(self):
            return {"cell": 9, "latent_group": 4}

    assert parameter_counts(Split()) == {"total": 13, "cell": 9, "latent_group": 4}


def test_peak_memory_on_cpu_is_the_resident_set_high_water_mark():
    before = peak_memory_bytes(torch.device("cpu"))
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    after = peak_memory_bytes(torch.device("cpu"))
    assert after >= before > 0 and after >= block.numel() * 4


def test_throughput_and_sampling_speed_are_positive():
    meter = Throughput(warmup=2)
    meter.step(8)
    assert meter.rate != meter.rate  # NaN until there is an interval to measure
    for _ in range(3):
        meter.step(8)
    assert meter.rate > 0
    assert sampling_speed(TinyVAE(), batch_size=4, batches=2) > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the per-run CPU peak needs Linux /proc")
@pytest.mark.slow  # 7 s; the reset of the peak itself is checked below in-process
def test_each_run_of_a_matrix_gets_its_own_peak_memory(tmp_path):
    # A large model then a tiny one in one process: the tiny run's figure must not carry the
    # large run's peak (as the process-wide peak RSS would).
    text = textwrap.dedent(
        """\
        name: memory
        data:
          dataset: {key: data.shapes, image_size: 64, channels: 1, num_bits: 1, num_train: 256, num_test: 8}
        training: {steps: 2, batch_size: 128, precision: fp32, progress_bar: false, checkpoint_every: 0}
        evaluation: {batch_size: 8, iw_samples: 0, num_samples: 0, speed_batches: 0, bn_readjust: false}
        variants:
          large:
            hierarchy: {key: baselines.standard_vae, num_channels: 96, latent_chs: 8, num_downsamples: 2}
          tiny:
            hierarchy: {key: baselines.standard_vae, num_channels: 4, latent_chs: 2, num_downsamples: 2}
            training: {batch_size: 4}
        """
    )
    (tmp_path / "memory.yaml").write_text(text)
    outcome = run_matrix(load_experiment(tmp_path / "memory.yaml"), tmp_path / "out", echo=lambda _: None)
    assert outcome.finished == ["large/seed0", "tiny/seed0"]
    rows = {r["run"]: r for r in json.loads((outcome.exp_dir / "results.json").read_text())}
    large, tiny = rows["large"], rows["tiny"]
    assert large["peak_memory_scope"] == tiny["peak_memory_scope"] == "run_rss"
    assert large["peak_memory_bytes"] - tiny["peak_memory_bytes"] > 200 * 2**20, (large, tiny)
    assert (
        "Peak memory: peak resident set size of the process during the run"
        in (outcome.exp_dir / "report.md").read_text()
    )


def test_where_the_peak_cannot_be_reset_the_figure_says_it_covers_the_process(monkeypatch, tmp_path):
    monkeypatch.setattr(efficiency, "_CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    scope = efficiency.reset_peak_memory(torch.device("cpu"))
    assert scope == "process_rss"
    assert "includes earlier runs" in efficiency.PEAK_SCOPES[scope]
    assert efficiency.peak_memory_bytes(torch.device("cpu"), scope) > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the per-run CPU peak needs Linux /proc")
def test_a_reset_peak_starts_below_an_earlier_larger_one():
    block = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched
    before = efficiency.peak_memory_bytes(torch.device("cpu"), "run_rss")
    del block
    scope = efficiency.reset_peak_memory(torch.device("cpu"))
    after = efficiency.peak_memory_bytes(torch.device("cpu"), scope)
    assert scope == "run_rss" and after < before - 128 * 2**20


def test_throughput_counts_the_load_checks_that_found_another_process():
    answers = iter([0, 1, None, 2, 0])
    throughput = Throughput(warmup=1, load_probe=lambda: next(answers), probe_every_s=0.0)
    assert throughput.shared_load is None  # nothing checked yet
    for _ in range(5):
        throughput.step(8)
    # four checks could be answered (None: not known), two of them found another process
    assert (throughput.load_checks, throughput.shared_checks) == (4, 2)
    assert throughput.shared_load == 0.5
    assert Throughput().shared_load is None  # no probe: not known
    slow = Throughput(load_probe=lambda: 1, probe_every_s=3600.0)
    for _ in range(3):
        slow.step(8)
    assert slow.load_checks == 1  # asked at the first step, then not before the hour is out
