"""Checkpoints: atomic writes, ``weights_only`` loading, and random-generator state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from engine_helpers import TinyVAE, ToyImages

import genzoo
from genzoo import PluginHost
from genzoo.engine import TrainConfig, load_checkpoint, save_checkpoint, train
from genzoo.engine.checkpoint import rng_state, set_rng_state


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def crash_half_way(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(
        genzoo.GenzooError,
        match=r"cannot write .*checkpoint.pt: disk full; the previous version is left intact",
    ):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_a_trainer_checkpoint_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig(steps=3, batch_size=16, ema_decay=0.9, progress_bar=False)
    train(TinyVAE(), ToyImages(32), None, config, tmp_path, host=PluginHost())
    # torch.load(weights_only=True) refuses anything but tensors and plain containers
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["status"] == "finished"
    for key in (
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "regularizers",
        "ema",
        "rng",
        "data",
        "counters",
    ):
        assert key in ckpt, key
    assert set(ckpt["rng"][0]) >= {"torch", "numpy", "python"}
    assert ckpt["data"] == {
        "epoch": 1,
        "start": 16,
        "seed": 0,
    }  # 2 batches per epoch; next is batch 1 of epoch 1
    model = TinyVAE()
    model.load_state_dict(ckpt["model"])


def test_random_generators_are_restored_exactly():
    state = rng_state()
    before = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    after = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2] == after[2]
