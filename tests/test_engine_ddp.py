"""Data-parallel training under ``torchrun`` with two CPU processes on the gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from genzoo.engine import load_checkpoint, read_metrics

TESTS_DIR = Path(__file__).parent

SCRIPT = """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import torch
    from engine_helpers import TinyVAE, ToyImages
    from genzoo import PluginHost
    from genzoo.engine import EvalConfig, TrainConfig, train

    torch.manual_seed(int(os.environ["RANK"]))  # different initial weights: DDP must sync them
    config = TrainConfig(steps=6, batch_size=8, lr_warmup_steps=1, checkpoint_every=3, log_every=1,
                         device="cpu", progress_bar=False)
    evaluation = EvalConfig(iw_samples=2, num_samples=2, temperatures=(1.0,), bn_readjust_iters=1,
                            speed_batches=1)
    model = TinyVAE()
    results = train(model, ToyImages(64), ToyImages(10, seed=1), config, {run!r},
                    eval_config=evaluation, host=PluginHost())
    check = {check!r}
    torch.save(model.state_dict(), os.path.join(check, "model_rank%s.pt" % os.environ["RANK"]))
    with open(os.path.join(check, "results_rank%s.json" % os.environ["RANK"]), "w") as f:
        json.dump(results, f, default=str)
"""


def test_two_cpu_processes_train_in_step_and_only_rank_0_writes(tmp_path):
    run, check = tmp_path / "run", tmp_path / "check"
    check.mkdir()
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(TESTS_DIR), run=str(run), check=str(check))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENZOO_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0 = json.loads((check / "results_rank0.json").read_text())
    rank1 = json.loads((check / "results_rank1.json").read_text())
    assert rank0["status"] == rank1["status"] == "finished" and rank0["world_size"] == 2
    # the likelihood is evaluated on both ranks' shards and summed over the whole test split
    assert rank0["test_num_images"] == rank1["test_num_images"] == 10
    assert rank0["test_nats_elbo"] == rank1["test_nats_elbo"]
    assert "sampling_images_per_s" in rank0 and "sampling_images_per_s" not in rank1

    weights0 = torch.load(check / "model_rank0.pt", weights_only=True)
    weights1 = torch.load(check / "model_rank1.pt", weights_only=True)
    for name, value in weights0.items():
        if "running" not in name and "num_batches" not in name:  # BN statistics are per process
            torch.testing.assert_close(value, weights1[name], rtol=0, atol=1e-6, msg=name)

    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl", "train")]
    assert steps == [1, 2, 3, 4, 5, 6]  # written once, by rank 0
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())


def test_resumable_sampler_shards_each_epoch_and_starts_mid_epoch():
    from genzoo.engine.distributed import ResumableSampler

    data = list(range(10))
    shards = [ResumableSampler(data, num_replicas=2, rank=r, seed=7) for r in (0, 1)]
    for s in shards:
        s.set_position(epoch=3, start=0)
    first, second = (list(s) for s in shards)
    assert len(first) == len(second) == 5 and not set(first) & set(second)
    shards[0].set_position(epoch=3, start=2)
    assert list(shards[0]) == first[2:] and len(shards[0]) == 3
    shards[0].set_position(epoch=4, start=0)
    assert list(shards[0]) != first  # a new permutation each epoch


def test_sync_batchnorm_is_reverted_for_single_process_work():
    from torch import nn

    from genzoo.engine.distributed import revert_sync_batchnorm

    model = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)))
    model[1].running_mean.fill_(3.0)
    local = revert_sync_batchnorm(model)
    assert type(local[1]) is nn.BatchNorm2d and type(model[1]) is nn.SyncBatchNorm
    assert local[1].running_mean.tolist() == [3.0, 3.0]
