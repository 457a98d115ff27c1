"""Measuring a trained hierarchical VAE the way the field does.

- Negative ELBO on the test split, in nats per image and in bits per dimension,
  ``nats / (ln 2 * D)`` with ``D = model.num_dims``, the scored dimensions (NVAE pads MNIST to
  32x32 but scores the 28x28 interior, so D = 784).
- Importance-weighted NLL (Burda et al. 2016): ``-log (1/K) sum_k w_k`` with
  ``log w = log p(x|z) + log p(z) - log q(z|x)``, computed as a ``logsumexp`` over K samples
  minus ``log K``. NVAE's final numbers use K = 1000. Images and samples are processed in chunks
  of at most ``iw_batch_size`` forward passes, so memory does not grow with K.
- KL per group and active units (Burda et al. 2016, Sec. 5.2): a latent unit ``u`` is active
  when ``Cov_x(E_q[u | x]) > 0.01``. For a hierarchy the posterior mean of a lower group is
  conditional on the sampled upper groups; that is what ``q_mean`` holds and what is measured.
- Reconstructions, and samples at given temperatures with NVAE's BatchNorm readjustment
  (Sec. 5 / the official ``evaluate.py``: sampling passes in train mode update the running
  statistics before the samples are drawn in eval mode).

All functions run the model in eval mode without gradients and restore its mode afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch
from einops import rearrange, repeat
from torch import nn

from genzoo.engine.distributed import all_reduce_
from genzoo.interfaces.hierarchy import Hierarchy


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, its previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def bits_per_dim(nats_per_image: float, num_dims: int) -> float:
    """``nats / (ln 2 * D)``: nats per image to bits per scored dimension."""
    return nats_per_image / (math.log(2.0) * num_dims)


def importance_weighted_log_likelihood(
    model: Hierarchy, x: torch.Tensor, num_samples: int, max_batch: int
) -> torch.Tensor:
    """``log p(x)`` estimated with ``num_samples`` importance samples, per image ``(B,)``.

    Each forward pass holds at most ``max_batch`` images (copies of test images), whatever
    ``num_samples`` and the batch size are. Call in eval mode under ``torch.no_grad()``.
    """
    if num_samples < 1 or max_batch < 1:
        raise ValueError(f"num_samples={num_samples!r}, max_batch={max_batch!r}; expected both >= 1")
    images_per_pass = max(1, max_batch // num_samples)
    samples_per_pass = max(1, min(num_samples, max_batch // images_per_pass))
    results = []
    for xs in x.split(images_per_pass):
        chunk_lse = []
        done = 0
        while done < num_samples:
            k = min(samples_per_pass, num_samples - done)
            log_w = model(repeat(xs, "b c h w -> (b k) c h w", k=k)).log_weight.double()
            chunk_lse.append(torch.logsumexp(rearrange(log_w, "(b k) -> b k", k=k), dim=1))
            done += k
        results.append(torch.logsumexp(torch.stack(chunk_lse, dim=1), dim=1) - math.log(num_samples))
    return torch.cat(results)


@torch.no_grad()
def evaluate_likelihood(
    model: Hierarchy,
    batches: Iterable[torch.Tensor],
    *,
    iw_samples: int = 0,
    iw_batch_size: int = 1024,
    active_unit_threshold: float = 0.01,
) -> dict[str, float]:
    """Test-set likelihood figures of ``model`` over ``batches`` (already on its device).

    Returns ``nats_elbo``, ``bpd_elbo``, ``recon_nats``, ``kl_nats``, ``kl_group_<i>`` (mean KL
    of group i, nats), ``active_units`` (and ``active_units_group_<i>``), ``latent_units``,
    ``num_images`` and, with ``iw_samples > 0``, ``nats_iw``, ``bpd_iw`` and
    ``iw_samples``. Under DDP each rank passes its own shard; the sums are all-reduced, so
    every rank returns the figures of the whole set.

    The importance samples of each batch come from a generator of their own, seeded by one draw
    from the global CPU generator that is made whether or not ``iw_samples`` is set: the ELBO's
    draws, and so the ELBO, are the same for every K (0 included).
    """
    groups = model.groups
    device = next(model.parameters()).device
    sums = {
        "count": torch.zeros((), dtype=torch.float64, device=device),
        "nelbo": torch.zeros((), dtype=torch.float64, device=device),
        "recon": torch.zeros((), dtype=torch.float64, device=device),
        "nll_iw": torch.zeros((), dtype=torch.float64, device=device),
        "kl": torch.zeros(len(groups), dtype=torch.float64, device=device),
    }
    mean_sum = [torch.zeros(g.num_latents, dtype=torch.float64, device=device) for g in groups]
    mean_sq_sum = [torch.zeros(g.num_latents, dtype=torch.float64, device=device) for g in groups]
    with eval_mode(model):
        for x in batches:
            iw_seed = int(torch.randint(0, 2**62, (), device="cpu"))
            out = model(x)
            sums["count"] += x.shape[0]
            sums["nelbo"] -= out.elbo.double().sum()
            sums["recon"] -= out.log_px.double().sum()
            sums["kl"] += torch.stack([kl.double().sum() for kl in out.kl])
            for i, latent in enumerate(out.latents):
                q_mean = rearrange(latent.q_mean.double(), "b c h w -> b (c h w)")
                mean_sum[i] += q_mean.sum(0)
                mean_sq_sum[i] += q_mean.square().sum(0)
            if iw_samples > 0:
                with _seeded_draws(iw_seed, device):
                    sums["nll_iw"] -= importance_weighted_log_likelihood(
                        model, x, iw_samples, iw_batch_size
                    ).sum()
    for value in [*sums.values(), *mean_sum, *mean_sq_sum]:
        all_reduce_(value)
    n = sums["count"].item()
    if n == 0:
        raise ValueError("no test images to evaluate on")
    d = model.num_dims
    nelbo = sums["nelbo"].item() / n
    results: dict[str, float] = {
        "num_images": int(n),
        "nats_elbo": nelbo,
        "bpd_elbo": bits_per_dim(nelbo, d),
        "recon_nats": sums["recon"].item() / n,
        "kl_nats": sums["kl"].sum().item() / n,
    }
    active_total = 0
    for i, kl_sum in enumerate(sums["kl"].tolist()):
        results[f"kl_group_{i}"] = kl_sum / n
        variance = mean_sq_sum[i] / n - (mean_sum[i] / n).square()
        active = int((variance > active_unit_threshold).sum().item())
        results[f"active_units_group_{i}"] = active
        active_total += active
    results["active_units"] = active_total
    results["latent_units"] = sum(g.num_latents for g in groups)
    if iw_samples > 0:
        nll = sums["nll_iw"].item() / n
        results.update(nats_iw=nll, bpd_iw=bits_per_dim(nll, d), iw_samples=iw_samples)
    return results


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@contextlib.contextmanager
def readjusted_batchnorm(
    model: Hierarchy, *, temperature: float, iterations: int = 500, batch_size: int = 16
) -> Iterator[Hierarchy]:
    """Inside the block, ``model`` is in eval mode with BatchNorm statistics re-estimated from
    its own samples at ``temperature``; everything is restored on exit.

    NVAE (``evaluate.py``, ``set_bn``) runs 500 sampling passes in train mode before drawing
    samples, so that the running statistics match the activations of the sampling path
    (App. B of the paper: samples at T < 1 look much better). The official code keeps the
    momentum of 0.05 (after 500 passes the old statistics weigh 0.95**500 ~ 1e-11); here the
    statistics are reset and averaged with equal weights (``momentum=None``), which converges
    to the same values with less noise.
    """
    norms = _batchnorms(model)
    saved = [(m.momentum, {k: v.clone() for k, v in m.named_buffers()}) for m in norms]
    was_training = model.training
    try:
        if norms and iterations > 0:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None
            model.train()
            with torch.no_grad():
                for _ in range(iterations):
                    model.sample_params(batch_size, temperature)
        model.eval()
        yield model
    finally:
        for m, (momentum, buffers) in zip(norms, saved):
            m.momentum = momentum
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
        model.train(was_training)


@torch.no_grad()
def sample_images(
    model: Hierarchy,
    num_samples: int,
    temperatures: Iterable[float],
    *,
    batch_size: int = 64,
    bn_readjust: bool = True,
    bn_readjust_iters: int = 500,
    bn_readjust_batch_size: int = 16,
    seed: int | None = None,
) -> dict[float, torch.Tensor]:
    """``num_samples`` images ``(N, C, H, W)`` in [0, 1] per temperature, drawn in eval mode,
    after BatchNorm readjustment at that temperature when ``bn_readjust`` is on, in chunks of
    ``batch_size``.

    With ``seed``, each temperature's draws (the readjustment passes, then the samples) start
    from ``torch.manual_seed(seed)`` in a forked generator: a grid depends on the model, the seed,
    the temperature and these settings alone, not on what was drawn before (the evaluation's
    likelihood figures, other temperatures), so ``genzoo sample`` redraws the run's own grids;
    the caller's random state is left as it was. Without it, the draws come from the global
    generator.
    """
    device = next(model.parameters()).device
    images: dict[float, torch.Tensor] = {}
    for t in temperatures:
        iters = bn_readjust_iters if bn_readjust else 0
        with (
            _seeded_draws(seed, device),
            readjusted_batchnorm(model, temperature=t, iterations=iters, batch_size=bn_readjust_batch_size),
        ):
            chunks = [
                model.sample(min(batch_size, num_samples - i), t) for i in range(0, num_samples, batch_size)
            ]
        images[float(t)] = torch.cat(chunks) if chunks else torch.empty(0)
    return images


@contextlib.contextmanager
def _seeded_draws(seed: int | None, device: torch.device) -> Iterator[None]:
    """Inside the block, draws come from a forked generator seeded with ``seed`` (None: from the
    global generator, as they are)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def reconstruction_pairs(model: Hierarchy, x: torch.Tensor) -> torch.Tensor:
    """Rows of inputs and their reconstructions interleaved, ``(2N, C, H, W)``, for a grid with
    each image next to its reconstruction."""
    with eval_mode(model):
        recon = model.reconstruct(x)
    return rearrange(torch.stack([x, recon.to(x.dtype)], dim=1), "n two c h w -> (n two) c h w")
