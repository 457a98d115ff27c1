"""Efficiency figures: parameter counts, images per second, peak memory."""

from __future__ import annotations

import torch
from engine_helpers import TinyVAE
from torch import nn

from genzoo.engine import parameter_counts, peak_memory_bytes, sampling_speed
from genzoo.engine.efficiency import Throughput


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
