"""The training loop: NVAE's objective and recipe, with VDVAE's safeguards.

Each step minimizes the mean over the batch of ``-log p(x|z) + beta * sum_g w_g KL_g`` (NVAE,
Sec. 3.2 and App. A: ``beta`` the KL warm-up coefficient, ``w`` the KL balancing weights while
``beta < 1``) plus every regularizer's ``loss(model, progress)`` (spectral regularization,
BN weight penalty ...), with the optimizer and learning-rate schedule of :mod:`.optim`.

Safeguards (VDVAE, Child 2021, Sec. 5): the gradient norm can be clipped, and a step whose
gradient norm is non-finite or above ``skip_threshold``, or whose loss is non-finite, is skipped
(no update) and counted. After ``max_consecutive_skips`` non-finite steps in a row the run stops
as ``diverged`` and the last good checkpoint is left in place.

A run is resumable: the checkpoint holds the model, optimizer, scheduler, gradient scaler,
regularizer states, EMA, every random generator (per rank) and the data position, so a run that
is stopped (SIGINT/SIGTERM) and resumed takes the same steps on the same batches with the same
noise as one that was never stopped (exactly so on CPU with ``num_workers=0``; with worker
processes, random transforms inside the dataset are re-drawn per epoch, not per item).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.utils import parametrize
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from genzoo.atomic import atomic_write_text
from genzoo.discovery import PluginHost, get_host
from genzoo.engine.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from genzoo.engine.config import EvalConfig, TrainConfig
from genzoo.engine.devices import autocast, grad_scaler, resolve_device, resolve_precision, seed_everything
from genzoo.engine.distributed import (
    DistContext,
    ResumableSampler,
    all_reduce_,
    barrier,
    init_distributed,
    revert_sync_batchnorm,
    wrap_model,
)
from genzoo.engine.efficiency import Throughput, parameter_counts, peak_memory_bytes, reset_peak_memory
from genzoo.engine.evaluation import bits_per_dim
from genzoo.engine.evaluator import evaluate
from genzoo.engine.logging import RunLogger
from genzoo.engine.optim import build_optimizer, build_scheduler
from genzoo.engine.run_info import RunInfo
from genzoo.engine.schedules import balanced_kl, kl_balance_alpha, kl_coefficient
from genzoo.engine.signals import StopSignals
from genzoo.errors import ConfigError
from genzoo.interfaces.hierarchy import Hierarchy
from genzoo.interfaces.regularizer import Regularizer, TrainProgress

RESULTS_FILE = "results.json"
CHECKPOINT_FORMAT = 1
LOSS_WINDOW = 100  # steps averaged into results["train_loss"]


def batch_images(batch: Any) -> torch.Tensor:
    """The images of a batch: datasets may yield images or ``(image, label)`` pairs."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class Trainer:
    """Trains one :class:`genzoo.Hierarchy`; :meth:`fit` runs (or resumes) it to the end.

    :param model: the model (its parameters are moved to the configured device).
    :param train_data: a ``torch.utils.data.Dataset`` of images ``(C, H, W)`` in [0, 1] (or
        ``(image, label)`` pairs).
    :param test_data: the held-out split, or ``None`` to skip evaluation.
    :param config: a :class:`TrainConfig`.
    :param out_dir: the run's folder: ``checkpoint.pt``, ``metrics.jsonl``, ``results.json``,
        image grids. An existing checkpoint there is resumed by :meth:`fit`.
    :param regularizers: :class:`genzoo.Regularizer` objects added to the loss.
    :param eval_config: an :class:`EvalConfig` for the periodic and final evaluations.
    :param name: the run's name (default: the folder's name).
    :param host: the plugin host whose lifecycle hooks are called (default: ``genzoo.get_host()``).
    :param run_config: extra plain values recorded in ``RunInfo.config`` (e.g. the model spec).
    :param dataset_name: names the dataset for the FID reference-statistics cache.
    """

    def __init__(
        self,
        model: Hierarchy,
        train_data: Dataset,
        test_data: Dataset | None,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        regularizers: Sequence[Regularizer] = (),
        eval_config: EvalConfig | None = None,
        name: str | None = None,
        host: PluginHost | None = None,
        run_config: dict[str, Any] | None = None,
        dataset_name: str | None = None,
    ) -> None:
        if not isinstance(model, Hierarchy):
            raise TypeError(f"model is a {type(model).__name__}; expected a genzoo.Hierarchy")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config is a {type(config).__name__}; expected a TrainConfig")
        for i, reg in enumerate(regularizers):
            if not isinstance(reg, Regularizer):
                raise TypeError(f"regularizers[{i}] is a {type(reg).__name__}; expected a genzoo.Regularizer")
        self.model = model
        self.train_data = train_data
        self.test_data = test_data
        self.config = config
        self.eval_config = eval_config or EvalConfig()
        self.out_dir = Path(out_dir)
        self.regularizers = list(regularizers)
        self.host = host
        self.dataset_name = dataset_name
        self.name = name or self.out_dir.name
        self.run_config = {
            "train": config.to_dict(),
            "eval": self.eval_config.to_dict(),
            **(run_config or {}),
        }
        self._reg_names = _unique_names([type(r).__name__ for r in self.regularizers])
        self.stop_signals = StopSignals()

    # -- set-up ------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.config
        device_type = (
            "cuda"
            if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        self.ctx: DistContext = init_distributed(device_type)
        self.device = resolve_device(cfg.device, self.ctx)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        # CPU runs fall back to fp32 silently: one config serves laptops and GPUs; results
        # record the precision actually used.
        seed_everything(cfg.seed + self.ctx.rank, deterministic=cfg.deterministic)

        memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.model.to(self.device, memory_format=memory_format)
        self.memory_format = memory_format
        self.alpha = kl_balance_alpha(self.model.groups, cfg.kl_balance_fun).to(self.device)
        wrapped = wrap_model(self.model, self.ctx, self.device, sync_bn=cfg.sync_bn)
        self.train_model = torch.compile(wrapped) if cfg.compile else wrapped
        self._buffers = list(self.model.buffers())
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay is not None
            else None
        )
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = grad_scaler(self.precision, self.device, cfg.grad_scaler_init)

        self.sampler = ResumableSampler(
            self.train_data, num_replicas=self.ctx.world_size, rank=self.ctx.rank, seed=cfg.seed
        )
        self.steps_per_epoch = self.sampler.num_samples // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"TrainConfig.batch_size={cfg.batch_size} is larger than the {self.sampler.num_samples} training "
                f"images each of the {self.ctx.world_size} process(es) reads per epoch"
            )
        self.loader_generator = torch.Generator()
        self.loader = DataLoader(
            self.train_data,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=self.loader_generator,
        )
        self.counters = {"skipped_nonfinite": 0, "skipped_grad_norm": 0, "consecutive_nonfinite": 0}
        self.recent_losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self.last_metrics: dict[str, float] = {}
        self.start_step = 0
        self.run = RunInfo(
            name=self.name,
            out_dir=self.out_dir,
            config=self.run_config,
            model=self.model,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
        )

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def _state(self, step: int, status: str) -> dict[str, Any]:
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        return {
            "format": CHECKPOINT_FORMAT,
            "status": status,
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "regularizers": [r.state_dict() for r in self.regularizers],
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": self._gather_rng(),
            "data": {"epoch": epoch, "start": in_epoch * self.config.batch_size, "seed": self.config.seed},
            "counters": dict(self.counters),
            "recent_losses": list(self.recent_losses),
            "last_metrics": dict(self.last_metrics),
            "world_size": self.ctx.world_size,
            "config": self.config.to_dict(),
        }

    def _gather_rng(self) -> list[dict[str, Any]]:
        """Every rank's generator states, in rank order (each rank draws its own noise)."""
        state = rng_state()
        if not self.ctx.is_distributed:
            return [state]
        states: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(states, state)
        return states

    def save(self, step: int, status: str = "running") -> None:
        """Write the checkpoint (rank 0; every rank must call it, as RNG states are gathered)."""
        state = self._state(step, status)
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, state)
        barrier()

    def _resume(self) -> int:
        ckpt = load_checkpoint(self.checkpoint_path)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(
                f"{self.checkpoint_path}: checkpoint format {ckpt.get('format')!r} is not supported"
            )
        old = ckpt["config"]
        if old["batch_size"] != self.config.batch_size or ckpt["world_size"] != self.ctx.world_size:
            raise ConfigError(
                f"{self.checkpoint_path} was written with batch_size={old['batch_size']} on "
                f"{ckpt['world_size']} process(es); this run has batch_size={self.config.batch_size} on "
                f"{self.ctx.world_size}, so the data position cannot be carried over. Use another out_dir "
                "or resume=False."
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{self.checkpoint_path} holds another model than this run builds (changed options or "
                f"keys?): {str(exc).splitlines()[0]}. Use another output folder, or --fresh to archive "
                "the old run."
            ) from exc
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        if len(ckpt["regularizers"]) != len(self.regularizers):
            raise ConfigError(
                f"{self.checkpoint_path} holds {len(ckpt['regularizers'])} regularizer state(s); "
                f"this run has {len(self.regularizers)} regularizer(s)"
            )
        for reg, state in zip(self.regularizers, ckpt["regularizers"]):
            reg.load_state_dict(state)
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"][self.ctx.rank])
        self.counters.update(ckpt["counters"])
        self.recent_losses.extend(ckpt["recent_losses"])
        self.last_metrics = dict(ckpt["last_metrics"])
        return int(ckpt["step"])

    # -- one step ----------------------------------------------------------------------------
    def _train_step(self, x: torch.Tensor, step: int) -> dict[str, float]:
        cfg = self.config
        kl_coeff = kl_coefficient(
            step,
            cfg.steps,
            anneal_portion=cfg.kl_anneal_portion,
            const_portion=cfg.kl_const_portion,
            const_coeff=cfg.kl_const_coeff,
        )
        progress = TrainProgress(step=step, total_steps=cfg.steps, kl_coeff=kl_coeff)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        # A skipped step must leave the model as it was, BatchNorm running statistics included
        # (a non-finite forward pass would otherwise poison them for good).
        buffers_before = [b.detach().clone() for b in self._buffers]
        # Parametrized weights (weight normalization) are computed once for the forward pass and
        # the regularizers, which read them again (the same values; one backward through them).
        with parametrize.cached() if not cfg.compile else contextlib.nullcontext():
            with autocast(self.precision, self.device):
                out = self.train_model(x)
            # The objective is summed in fp32 whatever the autocast dtype (nats per image are large).
            kl = torch.stack([k.float() for k in out.kl], dim=1)
            log_px = out.log_px.float()
            kl_term, _ = balanced_kl(kl, kl_coeff, self.alpha, balance=cfg.kl_balance)
            loss = (kl_term - log_px).mean()
            reg_losses = [reg.loss(self.model, progress) for reg in self.regularizers]
        for value in reg_losses:
            loss = loss + value
        # Every rank runs backward, even on a non-finite loss, so that DDP's gradient all-reduce
        # stays in step; the skip decision below is the same on every rank.
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = self._clip_and_norm()

        stats = torch.stack(
            [
                loss.detach().float(),
                (kl.sum(1) - log_px).detach().mean(),
                -log_px.detach().mean(),
                kl.detach().sum(1).mean(),
                (~torch.isfinite(loss.detach())).float(),
                torch.tensor(float(self.stop_signals.requested is not None), device=loss.device),
                *[v.detach().float().reshape(()) for v in reg_losses],
                *kl.detach().mean(0),
            ]
        )
        all_reduce_(stats)
        world = self.ctx.world_size
        loss_bad = bool(stats[4] > 0)
        grad_bad = not math.isfinite(grad_norm)
        too_large = not grad_bad and cfg.skip_threshold is not None and grad_norm > cfg.skip_threshold
        skip = loss_bad or grad_bad or too_large
        if not skip:
            self.scaler.step(self.optimizer)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        else:
            with torch.no_grad():
                for buffer, saved in zip(self._buffers, buffers_before):
                    buffer.copy_(saved)
        self.scaler.update()
        with warnings.catch_warnings():
            # A skipped first step makes torch warn that the scheduler stepped before the optimizer.
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

        if loss_bad or grad_bad:
            self.counters["skipped_nonfinite"] += 1
            self.counters["consecutive_nonfinite"] += 1
        else:
            self.counters["consecutive_nonfinite"] = 0
        if too_large:
            self.counters["skipped_grad_norm"] += 1
        nelbo = stats[1].item() / world
        metrics = {
            "loss": stats[0].item() / world,
            "nelbo": nelbo,
            "bpd": bits_per_dim(nelbo, self.model.num_dims),
            "recon": stats[2].item() / world,
            "kl": stats[3].item() / world,
            "kl_coeff": kl_coeff,
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": int(skip),
        }
        self._stop_now = bool(stats[5] > 0)
        n_reg = len(reg_losses)
        for name, value in zip(self._reg_names, stats[6 : 6 + n_reg].tolist()):
            metrics[f"reg_{name}"] = value / world
        self._kl_groups = [v / world for v in stats[6 + n_reg :].tolist()]
        return metrics

    def _clip_and_norm(self) -> float:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        if self.config.grad_clip is not None:
            params = [p for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm(grads)
        return float(norm)

    # -- the run -----------------------------------------------------------------------------
    def fit(self, *, resume: bool = True) -> dict[str, Any]:
        """Train to ``config.steps`` (resuming from ``out_dir/checkpoint.pt`` when ``resume``
        and it exists), evaluate, and return the results (also written to ``results.json``).

        ``results["status"]`` is ``finished``, ``interrupted`` (SIGINT/SIGTERM or
        :meth:`request_stop`; a checkpoint was written) or ``diverged`` (too many non-finite
        steps in a row; the last good checkpoint is kept).
        """
        wall_start = time.perf_counter()
        self._setup()
        cfg = self.config
        if resume and self.checkpoint_path.exists():
            self.start_step = self._resume()
        elif self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        step = self.start_step
        self.run.step = step
        self.peak_scope = reset_peak_memory(self.device)
        throughput = Throughput()
        logger = RunLogger(
            self.out_dir,
            total_steps=cfg.steps,
            start_step=step,
            enabled=self.ctx.is_main,
            progress_bar=cfg.progress_bar,
            description=self.name,
        )
        if self.ctx.is_main:
            atomic_write_text(
                self.out_dir / "train_config.json", json.dumps(self.run_config, indent=2, default=str)
            )
        status = "finished"
        try:
            with self.stop_signals:
                self._hook("genzoo_run_start", run=self.run)
                while step < cfg.steps and status == "finished":
                    epoch, in_epoch = divmod(step, self.steps_per_epoch)
                    self.sampler.set_position(epoch, in_epoch * cfg.batch_size)
                    self.loader_generator.manual_seed(cfg.seed * 100_003 + epoch)
                    for batch in self.loader:
                        x = batch_images(batch).to(self.device, non_blocking=True)
                        if cfg.channels_last:
                            x = x.contiguous(memory_format=torch.channels_last)
                        metrics = self._train_step(x, step)
                        step += 1
                        self.run.step = step
                        throughput.step(x.shape[0] * self.ctx.world_size)
                        metrics["images_per_s"] = throughput.rate
                        self.recent_losses.append(metrics["loss"])
                        self.last_metrics = {k: float(v) for k, v in metrics.items()}
                        status = self._after_step(step, metrics, logger)
                        if status != "finished" or step >= cfg.steps:
                            break
                if status == "interrupted" or status == "finished":
                    self.save(step, status)
                results = self._results(step, status, throughput, wall_start)
                if status == "finished" and self.test_data is not None:
                    results.update(self._final_evaluation(step, logger))
                    results["active_units"] = results["test_active_units"]  # the report's column
                if self.ctx.is_main:
                    atomic_write_text(self.out_dir / RESULTS_FILE, json.dumps(_json_safe(results), indent=2))
                self._hook("genzoo_run_end", run=self.run, results=results)
        finally:
            logger.close()
        return results

    def request_stop(self) -> None:
        """Ask the run to stop after the current step, as SIGTERM does."""
        self.stop_signals.request()

    def _after_step(self, step: int, metrics: dict[str, float], logger: RunLogger) -> str:
        cfg = self.config
        logger.progress(
            step, {"loss": metrics["loss"], "bpd": metrics["bpd"], "img/s": metrics["images_per_s"]}
        )
        if step % cfg.log_every == 0 or step == cfg.steps or metrics["skipped"]:
            record = dict(metrics)
            record.update({f"kl_group_{i}": v for i, v in enumerate(self._kl_groups)})
            record.update(self.counters)
            logger.log("train", step, record)
        self._hook("genzoo_step_end", run=self.run, step=step, metrics=dict(metrics))
        if self.counters["consecutive_nonfinite"] >= cfg.max_consecutive_skips:
            return "diverged"
        if self._stop_now:
            return "interrupted"
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            self.save(step)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and self.test_data is not None:
            scores = evaluate(
                self.eval_model,
                self.test_data,
                self.eval_config.replace(
                    iw_samples=0, num_samples=0, num_reconstructions=0, speed_batches=0, fid=False
                ),
                device=self.device,
                seed=cfg.seed,
            )
            logger.log("eval", step, scores)
            self._hook("genzoo_evaluation_end", run=self.run, step=step, metrics=scores)
        return "finished"

    @property
    def eval_model(self) -> Hierarchy:
        """The model evaluations use: the EMA weights when EMA is on (with plain BatchNorm in
        place of SyncBatchNorm, as part of the evaluation runs on rank 0 alone)."""
        model = self.ema.module if self.ema is not None else self.model
        if self.config.sync_bn and self.ctx.is_distributed:
            model = revert_sync_batchnorm(model)
        return model

    def _final_evaluation(self, step: int, logger: RunLogger) -> dict[str, Any]:
        scores = evaluate(
            self.eval_model,
            self.test_data,
            self.eval_config,
            device=self.device,
            out_dir=self.out_dir if self.ctx.is_main else None,
            reference_data=self.train_data if self.eval_config.fid_reference_split == "train" else None,
            dataset_name=self.dataset_name,
            seed=self.config.seed,
        )
        logger.log("eval", step, scores)
        self._hook("genzoo_evaluation_end", run=self.run, step=step, metrics=scores)
        return scores

    def _results(self, step: int, status: str, throughput: Throughput, wall_start: float) -> dict[str, Any]:
        counts = parameter_counts(self.model)
        results: dict[str, Any] = {
            "name": self.name,
            "status": status,
            "step": step,
            "steps": self.config.steps,
            "resumed_from": self.start_step,
            "final_loss": self.last_metrics.get("loss", float("nan")),
            "train_loss": sum(self.recent_losses) / len(self.recent_losses)
            if self.recent_losses
            else float("nan"),
            "train_bpd": self.last_metrics.get("bpd", float("nan")),
            "skipped_nonfinite": self.counters["skipped_nonfinite"],
            "skipped_grad_norm": self.counters["skipped_grad_norm"],
            "skipped_steps": self.counters["skipped_nonfinite"] + self.counters["skipped_grad_norm"],
            "params": counts["total"],
            **{f"params_{k}": v for k, v in counts.items() if k != "total"},
            "train_images_per_s": throughput.rate,
            "peak_memory_bytes": peak_memory_bytes(self.device, self.peak_scope),
            "peak_memory_scope": self.peak_scope,
            "wall_time_s": time.perf_counter() - wall_start,
            "device": str(self.device),
            "precision": self.precision,
            "world_size": self.ctx.world_size,
            "checkpoint": str(self.checkpoint_path) if self.checkpoint_path.exists() else None,
        }
        return results

    def _hook(self, name: str, **kwargs: Any) -> None:
        if self.ctx.is_main:
            (self.host or get_host()).call_hook(name, **kwargs)


def _unique_names(names: list[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        out.append(name if names.count(name) == 1 else f"{name}_{i}")
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def train(
    model: Hierarchy,
    train_data: Dataset,
    test_data: Dataset | None,
    config: TrainConfig | None = None,
    out_dir: str | Path = "runs/run",
    *,
    regularizers: Sequence[Regularizer] = (),
    eval_config: EvalConfig | None = None,
    name: str | None = None,
    host: PluginHost | None = None,
    run_config: dict[str, Any] | None = None,
    dataset_name: str | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Train ``model`` and evaluate it; the one-call form of :class:`Trainer` (same arguments).

    Returns the run's results, also written to ``out_dir/results.json``: ``status``,
    ``final_loss`` (last step), ``train_loss`` (mean of the last 100 steps), ``skipped_steps``
    (``skipped_nonfinite`` + ``skipped_grad_norm``), ``params`` and ``params_<component>``,
    ``train_images_per_s``, ``peak_memory_bytes`` and ``wall_time_s`` (of the training part),
    and after a finished run the evaluation's ``test_*`` figures (``test_bpd_elbo``,
    ``test_bpd_iw``, ``test_nats_elbo``, ``test_nats_iw``, ``test_kl_group_<i>``,
    ``test_active_units``, also as ``active_units``), ``sampling_images_per_s`` and ``fid``.
    """
    trainer = Trainer(
        model,
        train_data,
        test_data,
        config or TrainConfig(),
        out_dir,
        regularizers=regularizers,
        eval_config=eval_config,
        name=name,
        host=host,
        run_config=run_config,
        dataset_name=dataset_name,
    )
    return trainer.fit(resume=resume)
