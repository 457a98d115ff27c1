"""The stability monitor and the metric, driven the way genzoo drives them: through the plugin's
hooks (``PluginHost.call_hook``) with a real ``genzoo.RunInfo``."""

from __future__ import annotations

import json
import math

import genzoo
import pytest
import torch
from torch import nn

from genzoo_vdvae.stability import COLUMNS, STATE_FILE, StabilityMonitor


@pytest.fixture
def host() -> genzoo.PluginHost:
    host = genzoo.PluginHost()
    host.load_module("genzoo_vdvae", source="python", name="vdvae")
    return host


def test_a_jump_far_above_the_recent_losses_is_one_spike():
    monitor = StabilityMonitor(warmup_steps=5)
    for i in range(30):
        monitor.update({"loss": 100.0 - i + 0.3 * (-1) ** i, "grad_norm": 1.0 + i})
    assert monitor.loss_spikes == 0
    monitor.update({"loss": 400.0, "grad_norm": 5.0})
    assert monitor.loss_spikes == 1
    assert monitor.columns() == {
        "vdvae.max_grad_norm": 30.0,
        "vdvae.mean_grad_norm": pytest.approx((sum(range(1, 31)) + 5.0) / 31),
        "vdvae.loss_spikes": 1,
    }


def test_non_finite_values_are_left_out():
    monitor = StabilityMonitor(warmup_steps=1)
    for loss, grad in [(10.0, 1.0), (math.nan, math.inf), (10.0, 3.0)]:
        monitor.update({"loss": loss, "grad_norm": grad})
    assert (monitor.steps, monitor.finite_losses, monitor.loss_spikes) == (3, 2, 0)
    assert monitor.columns()["vdvae.max_grad_norm"] == 3.0


def test_hooks_follow_a_run_and_give_its_report_columns(host, tmp_path):
    run = genzoo.RunInfo(name="nvae/seed0", out_dir=tmp_path, config={}, model=nn.Linear(1, 1))
    host.call_hook("genzoo_run_start", run=run)
    for step in range(1, 4):
        run.step = step
        host.call_hook("genzoo_step_end", run=run, step=step, metrics={"loss": 5.0, "grad_norm": step})
    host.call_hook("genzoo_run_end", run=run, results={"status": "finished"})

    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["steps"] == 3 and saved["max_grad_norm"] == 3.0
    [columns] = host.call_hook("genzoo_report_columns", results={"name": "nvae/seed0"})
    assert set(columns) == set(COLUMNS) and columns["vdvae.mean_grad_norm"] == 2.0
    assert host.call_hook("genzoo_report_columns", results={"name": "never-ran"}) == []


def test_a_resumed_run_continues_its_statistics(host, tmp_path):
    run = genzoo.RunInfo(name="resumed", out_dir=tmp_path, config={}, model=nn.Linear(1, 1))
    host.call_hook("genzoo_run_start", run=run)
    host.call_hook("genzoo_step_end", run=run, step=1, metrics={"loss": 1.0, "grad_norm": 9.0})
    host.call_hook("genzoo_run_end", run=run, results={"status": "interrupted"})
    run.step = 1
    host.call_hook("genzoo_run_start", run=run)
    host.call_hook("genzoo_step_end", run=run, step=2, metrics={"loss": 1.0, "grad_norm": 1.0})
    [columns] = host.call_hook("genzoo_report_columns", results={"name": "resumed"})
    assert columns["vdvae.max_grad_norm"] == 9.0 and columns["vdvae.mean_grad_norm"] == 5.0


class NoisyReconstructions(genzoo.Hierarchy):
    """A stand-in model whose reconstructions are off by 0.1 everywhere: PSNR is exactly 20 dB."""

    groups = []
    likelihood = None

    def __init__(self) -> None:
        super().__init__(image_shape=(1, 4, 4))

    def forward(self, x):
        raise NotImplementedError

    def sample_params(self, num_samples, temperature=1.0):
        raise NotImplementedError

    def reconstruct(self, x):
        return x + 0.1


def test_reconstruction_psnr_metric(host):
    metric = host.registry.create("metric", "vdvae.reconstruction_psnr", max_batches=2)
    batches = [torch.rand(3, 1, 4, 4) for _ in range(5)]
    scores = metric.compute(NoisyReconstructions(), batches)
    assert scores == {"vdvae.reconstruction_psnr": pytest.approx(20.0, abs=1e-4)}
