"""Evaluation: bits/dim, importance-weighted NLL (checked by brute force and against the ELBO),
KL per group, active units, BatchNorm readjustment, samples and reconstructions."""

from __future__ import annotations

import math

import pytest
import torch
from engine_helpers import TinyVAE, ToyImages
from torch import nn

import genzoo
from genzoo import PluginHost
from genzoo.engine import (
    EvalConfig,
    TrainConfig,
    bits_per_dim,
    evaluate,
    evaluate_likelihood,
    importance_weighted_log_likelihood,
    readjusted_batchnorm,
    sample_images,
    train,
)
from genzoo.engine.evaluation import reconstruction_pairs


class Deterministic(genzoo.Hierarchy):
    """One 1x2x2 latent group whose posterior mean is ``x * scale`` per unit, KL ``sum(x)`` and
    random log-weights that it records with the id of their image (its top-left pixel)."""

    def __init__(self) -> None:
        super().__init__(image_shape=(1, 2, 2))
        self.scale = nn.Parameter(torch.tensor([0.0, 0.05, 0.5, 1.0]).view(1, 1, 2, 2))
        self.batch_sizes: list[int] = []
        self.draws: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def groups(self):
        return [genzoo.GroupInfo(index=0, scale=0, groups_in_scale=1, latent_chs=1, height=2, width=2)]

    @property
    def likelihood(self):
        raise NotImplementedError

    def forward(self, x):
        b = x.shape[0]
        self.batch_sizes.append(b)
        log_px = torch.randn(b, dtype=torch.float64)
        self.draws.append((x[:, 0, 0, 0].clone(), log_px))
        kl = x.sum((1, 2, 3))
        zeros = torch.zeros(b)
        latent = genzoo.LatentOutput(
            z=x, kl=kl, kl_per_channel=kl[:, None], log_q=zeros, log_p=zeros, q_mean=x * self.scale
        )
        return genzoo.HierarchyOutput(log_px=log_px, latents=[latent], params=x)

    def sample_params(self, num_samples, temperature=1.0):
        raise NotImplementedError


def test_bits_per_dim_is_nats_over_ln2_times_scored_dims():
    # NVAE's binarized MNIST: about 78 nats over the 784 scored pixels
    assert bits_per_dim(78.0, 784) == pytest.approx(78.0 / (math.log(2) * 784))
    assert bits_per_dim(math.log(2) * 3072 * 2.91, 3072) == pytest.approx(2.91)


@pytest.mark.parametrize(("num_samples", "max_batch"), [(10, 7), (10, 1000), (3, 2)])
def test_importance_weighted_estimate_is_a_logsumexp_over_samples_with_bounded_batches(
    num_samples, max_batch
):
    torch.manual_seed(0)
    model = Deterministic()
    x = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous()
    estimate = importance_weighted_log_likelihood(model, x, num_samples, max_batch)

    assert max(model.batch_sizes) <= max(max_batch, 1)
    ids = torch.cat([i for i, _ in model.draws])
    weights = torch.cat([w for _, w in model.draws])
    for image in range(5):
        mine = weights[ids == image]
        assert len(mine) == num_samples
        brute = math.log(sum(math.exp(w) for w in mine.tolist()) / num_samples)
        assert estimate[image].item() == pytest.approx(brute, abs=1e-9)


def test_kl_per_group_and_active_units_match_a_direct_computation():
    torch.manual_seed(0)
    model = Deterministic()
    x = torch.rand(400, 1, 2, 2)
    scores = evaluate_likelihood(model, x.split(64), active_unit_threshold=0.01)
    # Burda et al.: unit u is active when Var_x(E_q[u|x]) > 0.01
    variance = (x * model.scale.detach()).flatten(1).var(0, unbiased=False)
    assert scores["active_units"] == int((variance > 0.01).sum()) == 2  # scales 0.5 and 1.0
    assert scores["active_units_group_0"] == 2 and scores["latent_units"] == 4
    assert scores["kl_group_0"] == pytest.approx(x.sum((1, 2, 3)).mean().item(), rel=1e-6)
    assert scores["num_images"] == 400
    assert "nats_iw" not in scores  # iw_samples=0 skips it


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyVAE()
    config = TrainConfig(
        steps=60, batch_size=32, lr=3e-3, lr_warmup_steps=5, checkpoint_every=0, progress_bar=False
    )
    train(model, ToyImages(128), None, config, tmp_path_factory.mktemp("run"), host=PluginHost())
    return model


def test_importance_weighted_nll_does_not_exceed_the_negative_elbo(trained_tiny):
    torch.manual_seed(1)
    batches = ToyImages(64, seed=2).images.split(32)
    k8 = evaluate_likelihood(trained_tiny, batches, iw_samples=8, iw_batch_size=64)
    k64 = evaluate_likelihood(trained_tiny, batches, iw_samples=64, iw_batch_size=256)
    assert k8["nats_iw"] < k8["nats_elbo"]
    assert k64["nats_iw"] <= k8["nats_iw"] + 0.05  # the bound tightens with K
    assert k64["bpd_iw"] == pytest.approx(bits_per_dim(k64["nats_iw"], 64))
    assert k64["nats_elbo"] == pytest.approx(k64["recon_nats"] + k64["kl_nats"])


def test_the_elbo_is_the_same_whatever_the_number_of_importance_samples(trained_tiny):
    """The IW draws do not come out of the ELBO's generator: with one seed, K = 0, 3 and 17 give
    bit-identical ELBO figures over several batches (before, the second batch's ELBO already
    depended on K); and the IW estimate is drawn again the same with the same seed."""
    batches = ToyImages(96, seed=3).images.split(32)
    scores = []
    for k, max_batch in ((0, 64), (3, 64), (17, 64), (17, 64)):
        torch.manual_seed(5)
        scores.append(evaluate_likelihood(trained_tiny, batches, iw_samples=k, iw_batch_size=max_batch))
    for other in scores[1:]:
        assert other["nats_elbo"] == scores[0]["nats_elbo"]
        assert other["kl_group_0"] == scores[0]["kl_group_0"]
    assert scores[2]["nats_iw"] == scores[3]["nats_iw"]
    assert scores[1]["nats_iw"] != scores[2]["nats_iw"]


def test_bn_readjustment_averages_the_statistics_of_sampling_passes_and_restores_the_model(trained_tiny):
    model = trained_tiny.eval()
    bn = model.dec_top[1]
    before = {k: v.clone() for k, v in bn.named_buffers()}
    seen = []
    hook = bn.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach().clone()))
    try:
        with readjusted_batchnorm(model, temperature=0.7, iterations=3, batch_size=5):
            assert not model.training
            inside_mean, inside_var = bn.running_mean.clone(), bn.running_var.clone()
    finally:
        hook.remove()
    assert len(seen) == 3 and all(s.shape[0] == 5 for s in seen)
    # momentum=None: a plain average over the passes of each batch's statistics
    means = torch.stack([s.mean((0, 2, 3)) for s in seen])
    variances = torch.stack([s.var((0, 2, 3), unbiased=True) for s in seen])
    torch.testing.assert_close(inside_mean, means.mean(0))
    torch.testing.assert_close(inside_var, variances.mean(0))
    for name, value in bn.named_buffers():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    assert bn.momentum == 0.1 and not model.training


def test_samples_per_temperature_and_reconstruction_pairs(trained_tiny):
    grids = sample_images(
        trained_tiny, 6, [0.5, 1.0], batch_size=4, bn_readjust_iters=2, bn_readjust_batch_size=4
    )
    assert sorted(grids) == [0.5, 1.0]
    for images in grids.values():
        assert images.shape == (6, 1, 8, 8) and set(images.unique().tolist()) <= {0.0, 1.0}
    x = ToyImages(3, seed=5).images
    pairs = reconstruction_pairs(trained_tiny, x)
    assert pairs.shape == (6, 1, 8, 8)
    torch.testing.assert_close(pairs[0::2], x)
    assert 0 <= pairs[1::2].min() and pairs[1::2].max() <= 1


def test_evaluate_gives_the_table_figures_and_writes_images(trained_tiny, tmp_path):
    config = EvalConfig(
        iw_samples=4,
        max_images=20,
        batch_size=8,
        num_samples=4,
        temperatures=(0.7,),
        bn_readjust_iters=2,
        num_reconstructions=4,
        speed_batches=1,
    )
    state = torch.get_rng_state()
    scores = evaluate(trained_tiny, ToyImages(50, seed=3), config, out_dir=tmp_path)
    assert torch.equal(torch.get_rng_state(), state)  # evaluation leaves the caller's generator alone
    assert scores["test_num_images"] == 20
    for key in (
        "test_bpd_elbo",
        "test_bpd_iw",
        "test_kl_group_0",
        "test_kl_group_1",
        "test_active_units",
        "sampling_images_per_s",
        "params",
    ):
        assert key in scores, key
    assert scores["test_bpd_iw"] < scores["test_bpd_elbo"]
    assert (tmp_path / "samples_t0.7.png").exists() and (tmp_path / "reconstructions.png").exists()
    again = evaluate(trained_tiny, ToyImages(50, seed=3), config)
    assert again["test_nats_elbo"] == scores["test_nats_elbo"]  # seeded: repeatable


class NoisyRecorder(Deterministic):
    """:class:`Deterministic` that also draws ``extra`` numbers from the global generator on
    every forward pass, as a model with more latent groups would: two such models with
    different ``extra`` advance the generator differently between held-out batches."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x):
        torch.randn(self.extra)
        return super().forward(x)


def held_out_images_seen(model: NoisyRecorder, seed: int) -> torch.Tensor:
    from genzoo_plugins.data.image_tensors import UInt8Images

    codes = torch.full((12, 1, 2, 2), 128, dtype=torch.uint8)  # every pixel a fair coin
    data = UInt8Images(codes, binarize=True)
    config = EvalConfig(batch_size=4, iw_samples=0, num_samples=0, num_reconstructions=0, speed_batches=0)
    evaluate(model, data, config, device="cpu", seed=seed)
    return torch.cat([x for x, _ in model.draws])


def test_models_of_one_seed_are_scored_on_the_same_binarized_images():
    """True pairing: the held-out binarization is a function of the seed and the image alone, so
    two hierarchies that draw different amounts of noise between batches still see bit-identical
    held-out batches (before, the second batch's draws depended on the model's own)."""
    first = held_out_images_seen(NoisyRecorder(extra=1), seed=3)
    second = held_out_images_seen(NoisyRecorder(extra=1000), seed=3)
    assert torch.equal(first, second)
    assert 0 < first.sum() < first.numel()  # really random: neither all black nor all white
    other_seed = held_out_images_seen(NoisyRecorder(extra=1), seed=4)
    assert not torch.equal(first, other_seed)  # each seed has its own draws


def test_each_held_out_image_keeps_its_draws_whatever_the_batch_size():
    from genzoo.engine.evaluator import held_out_batches
    from genzoo_plugins.data.image_tensors import UInt8Images

    data = UInt8Images(torch.full((10, 1, 4, 4), 100, dtype=torch.uint8), binarize=True)
    by_three = torch.cat(list(held_out_batches(data, 3, torch.device("cpu"), range(10), seed=0)))
    whole = torch.cat(list(held_out_batches(data, 10, torch.device("cpu"), range(10), seed=0)))
    shard = torch.cat(list(held_out_batches(data, 2, torch.device("cpu"), range(1, 10, 2), seed=0)))
    assert torch.equal(by_three, whole)
    assert torch.equal(shard, whole[1::2])  # a DDP rank's shard sees the same images
    state = torch.get_rng_state()
    list(held_out_batches(data, 4, torch.device("cpu"), range(10), seed=0))
    assert torch.equal(torch.get_rng_state(), state)  # the model's evaluation noise is left alone
