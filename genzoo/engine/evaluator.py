"""One call that evaluates a model on a test split: every figure of the comparison table.

It gathers what :mod:`.evaluation`, :mod:`.efficiency` and :mod:`.fid` measure: test negative
ELBO and importance-weighted NLL (nats per image and bits/dim), KL per group, active units,
sample grids at each temperature (after NVAE's BatchNorm readjustment), reconstructions,
parameter counts, sampling images/s and, when asked for, FID.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from genzoo.engine.config import EvalConfig
from genzoo.engine.distributed import DistContext, barrier, init_distributed
from genzoo.engine.efficiency import parameter_counts, sampling_speed
from genzoo.engine.evaluation import (
    evaluate_likelihood,
    readjusted_batchnorm,
    reconstruction_pairs,
    sample_images,
)
from genzoo.interfaces.hierarchy import Hierarchy
from genzoo.io.atomic import atomic_write_bytes
from genzoo.io.run_layout import RunPaths

SAMPLE_GRID_NROW = 8  # images per row of a sample grid


def write_sample_grid(images: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``images`` ``(N, C, H, W)`` in [0, 1] as a PNG grid of :data:`SAMPLE_GRID_NROW`
    images per row, atomically: the evaluation's ``samples_t<T>.png`` and ``genzoo sample``'s
    grids are laid out alike, so that one can be compared with the other."""
    from torchvision.utils import save_image

    buf = io.BytesIO()
    save_image(images.float().cpu(), buf, format="png", nrow=SAMPLE_GRID_NROW)
    return atomic_write_bytes(path, buf.getvalue())


def _images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _first_images(data: Dataset, n: int) -> torch.Tensor:
    return torch.stack([_images(data[i]) for i in range(min(n, len(data)))])  # type: ignore[arg-type]


def held_out_draw_seed(seed: int, index: int) -> int:
    """The seed of held-out image ``index``'s random draws (its dynamic binarization) for runs
    of seed ``seed``: a function of the two alone."""
    digest = hashlib.blake2b(f"genzoo-held-out:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def held_out_batches(
    data: Dataset, batch_size: int, device: torch.device, indices: range, *, seed: int
) -> Iterator[torch.Tensor]:
    """Batches of the held-out images ``indices``, each image read with its own generator
    seeded by :func:`held_out_draw_seed`: whatever the model is and whatever it draws between
    batches, every run of one seed is scored on bit-identical images (the same binarization),
    at every evaluation, with any batch size and any number of processes. The reads leave the
    global generator (the model's evaluation noise) where it was."""
    indices = list(indices)
    for start in range(0, len(indices), batch_size):
        with torch.random.fork_rng(devices=[]):
            images = []
            for index in indices[start : start + batch_size]:
                torch.manual_seed(held_out_draw_seed(seed, index))
                images.append(_images(data[index]))
        yield torch.stack(images).to(device)


@torch.no_grad()
def evaluate(
    model: Hierarchy,
    test_data: Dataset,
    config: EvalConfig | None = None,
    *,
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike | None = None,
    reference_data: Dataset | None = None,
    dataset_name: str | None = None,
    seed: int = 0,
    ctx: DistContext | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``test_data`` and return the figures as ``test_*`` scalars.

    :param config: what to measure (:class:`EvalConfig`; the defaults follow NVAE).
    :param device: where to run (default: where the model's parameters are).
    :param out_dir: where to write ``samples_t<T>.png`` and ``reconstructions.png`` (None: no
        images written).
    :param reference_data: the FID reference set (default: ``test_data``).
    :param dataset_name: names the cached FID reference statistics (None: not cached).
    :param seed: evaluation draws its noise from this seed in a forked generator, so it is
        repeatable and leaves the caller's random state untouched; the held-out images' own
        draws (dynamic binarization) come from generators of their own, one per image and seed
        (:func:`held_out_batches`), so that two models of one seed are scored on the same images.
        Each temperature's sample grid starts again from ``seed`` (:func:`sample_images`), so
        ``genzoo sample`` with this seed draws the same grid.
    :param ctx: the process group the caller joined (the trainer's); None: joined here from
        the environment (:func:`~genzoo.engine.distributed.init_distributed`).

    Under DDP every rank evaluates its shard of the test set for the likelihood figures; the
    images, speed and FID are computed on rank 0 only.
    """
    config = config or EvalConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    if ctx is None:
        ctx = init_distributed(device.type)
    n = len(test_data)  # type: ignore[arg-type]
    if config.max_images is not None:
        n = min(n, config.max_images)
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed + ctx.rank)
        scores = evaluate_likelihood(
            model,
            held_out_batches(
                test_data, config.batch_size, device, range(ctx.rank, n, ctx.world_size), seed=seed
            ),
            iw_samples=config.iw_samples,
            iw_batch_size=config.iw_batch_size,
            active_unit_threshold=config.active_unit_threshold,
        )
        results = {f"test_{k}": v for k, v in scores.items()}
        if ctx.is_main:
            results.update(
                _rank0_figures(model, test_data, config, device, out_dir, reference_data, dataset_name, seed)
            )
    barrier()
    return results


def _rank0_figures(
    model: Hierarchy,
    test_data: Dataset,
    config: EvalConfig,
    device: torch.device,
    out_dir: str | os.PathLike | None,
    reference_data: Dataset | None,
    dataset_name: str | None,
    seed: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    folder = Path(out_dir) if out_dir is not None else None
    if config.num_samples > 0 and config.temperatures:
        grids = sample_images(
            model,
            config.num_samples,
            config.temperatures,
            batch_size=config.batch_size,
            bn_readjust=config.bn_readjust,
            bn_readjust_iters=config.bn_readjust_iters,
            bn_readjust_batch_size=config.bn_readjust_batch_size,
            seed=seed,
        )
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for t, images in grids.items():
                write_sample_grid(images, RunPaths(folder).samples(t))
    if config.num_reconstructions > 0 and folder is not None:
        from torchvision.utils import save_image

        pairs = reconstruction_pairs(model, _first_images(test_data, config.num_reconstructions).to(device))
        folder.mkdir(parents=True, exist_ok=True)
        save_image(pairs.float().cpu(), RunPaths(folder).reconstructions, nrow=2)
    if config.speed_batches > 0:
        results["sampling_images_per_s"] = sampling_speed(
            model, batch_size=config.batch_size, batches=config.speed_batches
        )
    counts = parameter_counts(model)
    results["params"] = counts.pop("total")
    results.update({f"params_{k}": v for k, v in counts.items()})
    if config.fid:
        results["fid"] = _fid(model, reference_data or test_data, config, device, dataset_name, seed)
    return results


FID_REFERENCE_SEED = 0
"""The seed of the FID reference images' draws (their dynamic binarization,
:func:`held_out_batches`): one for every run, as their statistics are cached per dataset."""


def _fid(
    model: Hierarchy,
    reference: Dataset,
    config: EvalConfig,
    device: torch.device,
    dataset_name: str | None,
    seed: int,
) -> float:
    """FID of ``config.fid_num_samples`` samples against the reference split. The samples come
    from a generator seeded with ``seed`` alone and the reference images from their own
    (``FID_REFERENCE_SEED``), so the figure does not depend on what was drawn before it, nor on
    whether the reference statistics were read from the cache or computed."""
    from genzoo.engine.fid import cache_file_for, fid_score, inception_extractor

    extractor = inception_extractor(config.fid_weights_path, device)
    count = len(reference)  # type: ignore[arg-type]
    cache = None
    if dataset_name is not None:
        cache = cache_file_for(config.fid_cache_dir, dataset_name, config.fid_reference_split, count)

    def generated() -> Iterator[torch.Tensor]:
        iters = config.bn_readjust_iters if config.bn_readjust else 0
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # before the BatchNorm readjustment, which samples too
            with readjusted_batchnorm(
                model,
                temperature=config.fid_temperature,
                iterations=iters,
                batch_size=config.bn_readjust_batch_size,
            ):
                for start in range(0, config.fid_num_samples, config.batch_size):
                    yield model.sample(
                        min(config.batch_size, config.fid_num_samples - start), config.fid_temperature
                    )

    return fid_score(
        generated(),
        lambda: held_out_batches(reference, config.batch_size, device, range(count), seed=FID_REFERENCE_SEED),
        extractor,
        device,
        cache_file=cache,
    )
