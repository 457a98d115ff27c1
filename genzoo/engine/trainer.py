"""The training loop: NVAE's recipe, step by step, with VDVAE's safeguards.

Each step minimizes NVAE's objective (:mod:`.objective`: reconstruction, KL with warm-up and
balancing, regularizer terms) with the optimizer and learning-rate schedule of :mod:`.optim`;
:mod:`.guard` skips bad steps and stops a diverged run; :mod:`.run_state` checkpoints and
resumes the run exactly; :mod:`.results` writes its row of results once, when it is over.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from genzoo.atomic import atomic_write_text
from genzoo.discovery import PluginHost, get_host
from genzoo.engine.config import EvalConfig, TrainConfig
from genzoo.engine.devices import autocast, grad_scaler, resolve_device, resolve_precision, seed_everything
from genzoo.engine.distributed import (
    DistContext,
    ResumableSampler,
    all_reduce_scalars,
    init_distributed,
    revert_sync_batchnorm,
    wrap_model,
)
from genzoo.engine.efficiency import Throughput, parameter_counts, peak_memory_bytes, reset_peak_memory
from genzoo.engine.evaluation import bits_per_dim
from genzoo.engine.evaluator import evaluate
from genzoo.engine.guard import BufferSnapshot, StepGuard
from genzoo.engine.logging import RunLogger
from genzoo.engine.objective import step_objective
from genzoo.engine.optim import build_optimizer, build_scheduler
from genzoo.engine.results import MIB, failed_row, write_results
from genzoo.engine.run_state import RunState
from genzoo.engine.schedules import kl_balance_alpha, kl_coefficient
from genzoo.engine.signals import StopSignals
from genzoo.errors import ConfigError, GenzooError
from genzoo.interfaces.hierarchy import Hierarchy
from genzoo.interfaces.regularizer import Regularizer, TrainProgress
from genzoo.layout import RunPaths
from genzoo.run_info import RunInfo

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
    :param out_dir: the run's folder (:class:`genzoo.layout.RunPaths`): checkpoint, metrics log,
        ``results.json``, image grids. An existing checkpoint there is resumed by :meth:`fit`.
    :param regularizers: :class:`genzoo.Regularizer` objects added to the loss.
    :param eval_config: an :class:`EvalConfig` for the periodic and final evaluations.
    :param name: the run's name (default: the folder's name).
    :param host: the plugin host whose lifecycle hooks are called (default: ``genzoo.get_host()``).
    :param run_config: extra plain values recorded in ``RunInfo.config`` (e.g. the model spec).
    :param dataset_name: names the dataset for the FID reference-statistics cache.
    :param row_fields: fields the caller puts into the run's row of results (the experiment
        runner: run name, seed, group, fingerprint ...); the row is written once, complete.
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
        row_fields: Mapping[str, Any] | None = None,
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
        self.paths = RunPaths(self.out_dir)
        self.regularizers = list(regularizers)
        self.host = host
        self.dataset_name = dataset_name
        self.name = name or self.out_dir.name
        self.row_fields = dict(row_fields or {})
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
        self.alpha = kl_balance_alpha(self.model.groups, cfg.kl_balance_fun).to(self.device)
        wrapped = wrap_model(self.model, self.ctx, self.device, sync_bn=cfg.sync_bn)
        self.train_model = torch.compile(wrapped) if cfg.compile else wrapped
        self._buffers = list(self.model.buffers())
        ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay is not None
            else None
        )
        self.optimizer = build_optimizer(self.model, cfg)
        self.scaler = grad_scaler(self.precision, self.device, cfg.grad_scaler_init)

        self.sampler = ResumableSampler(
            self.train_data, num_replicas=self.ctx.world_size, rank=self.ctx.rank, seed=cfg.seed
        )
        steps_per_epoch = self.sampler.num_samples // cfg.batch_size
        if steps_per_epoch == 0:
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
        self.guard = StepGuard(
            skip_threshold=cfg.skip_threshold, max_consecutive_skips=cfg.max_consecutive_skips
        )
        self.state = RunState(
            path=self.paths.checkpoint,
            config=cfg,
            ctx=self.ctx,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=build_scheduler(self.optimizer, cfg),
            scaler=self.scaler,
            regularizers=self.regularizers,
            ema=ema,
            guard=self.guard,
            recent_losses=deque(maxlen=LOSS_WINDOW),
            last_metrics={},
            steps_per_epoch=steps_per_epoch,
        )
        self.start_step = 0
        self.run = RunInfo(
            name=self.name,
            out_dir=self.out_dir,
            config=self.run_config,
            model=self.model,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
        )

    @property
    def checkpoint_path(self) -> Path:
        return self.paths.checkpoint

    def save(self, step: int, status: str = "running") -> None:
        """Write the checkpoint (rank 0; every rank must call it, as RNG states are gathered)."""
        self.state.save(step, status)

    # -- one step ----------------------------------------------------------------------------
    def _train_step(self, x: torch.Tensor, step: int) -> dict[str, float]:
        cfg, state = self.config, self.state
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
        buffers_before = BufferSnapshot(self._buffers)
        with autocast(self.precision, self.device):
            out = self.train_model(x)
        objective = step_objective(
            out,
            kl_coeff=kl_coeff,
            alpha=self.alpha,
            balance=cfg.kl_balance,
            regularizers=self.regularizers,
            model=self.model,
            progress=progress,
        )
        # Every rank runs backward, even on a non-finite loss, so that DDP's gradient all-reduce
        # stays in step; the skip decision below is the same on every rank.
        self.scaler.scale(objective.loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = self._clip_and_norm()

        scalars = {
            **objective.scalars(),
            "nonfinite": (~torch.isfinite(objective.loss.detach())).float(),
            "stop": torch.tensor(
                float(self.stop_signals.requested is not None), device=objective.loss.device
            ),
            **{f"reg_{n}": v for n, v in zip(self._reg_names, objective.regularizer_losses)},
            **{f"kl_group_{i}": v for i, v in enumerate(objective.kl_per_group.detach().mean(0))},
        }
        totals = all_reduce_scalars(scalars)
        world = self.ctx.world_size
        verdict = self.guard.judge(loss_bad=totals["nonfinite"] > 0, grad_norm=grad_norm)
        if not verdict.skip:
            self.scaler.step(self.optimizer)
            if state.ema is not None:
                state.ema.update_parameters(self.model)
        else:
            buffers_before.restore()
        self.scaler.update()
        with warnings.catch_warnings():
            # A skipped first step makes torch warn that the scheduler stepped before the optimizer.
            warnings.simplefilter("ignore", UserWarning)
            state.scheduler.step()

        nelbo = totals["nelbo"] / world
        metrics = {
            "loss": totals["loss"] / world,
            "nelbo": nelbo,
            "bpd": bits_per_dim(nelbo, self.model.num_dims),
            "recon": totals["recon"] / world,
            "kl": totals["kl"] / world,
            "kl_coeff": kl_coeff,
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": int(verdict.skip),
        }
        self._stop_now = totals["stop"] > 0
        for name in self._reg_names:
            metrics[f"reg_{name}"] = totals[f"reg_{name}"] / world
        self._kl_groups = [totals[f"kl_group_{i}"] / world for i in range(objective.kl_per_group.shape[1])]
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
        """Train to ``config.steps`` (resuming from the run folder's checkpoint when ``resume``
        and it exists), evaluate, and return the run's row of results, also written to the
        folder's ``results.json`` (see :func:`genzoo.engine.train` for its fields).

        ``results["status"]`` is ``finished``, ``interrupted`` (SIGINT/SIGTERM or
        :meth:`request_stop`; a checkpoint was written) or ``diverged`` (too many non-finite
        steps in a row; the last good checkpoint is kept). A run that raises (a bug, out of
        memory) writes a ``failed`` row and its traceback to ``error.txt``, then re-raises;
        errors the user can act on (:class:`genzoo.GenzooError`) are raised as they are.
        """
        try:
            return self._fit(resume)
        except GenzooError:
            raise
        except Exception as exc:
            if getattr(self, "ctx", None) is None or self.ctx.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                write_results(self.paths, failed_row(self.paths, {**self.row_fields, "name": self.name}, exc))
            raise

    def _fit(self, resume: bool) -> dict[str, Any]:
        wall_start = time.perf_counter()
        self.ctx = None
        self._setup()
        cfg = self.config
        if resume and self.checkpoint_path.exists():
            self.start_step = self.state.resume()
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
            import json

            atomic_write_text(self.paths.train_config, json.dumps(self.run_config, indent=2, default=str))
        status = "finished"
        try:
            with self.stop_signals:
                self._hook("genzoo_run_start", run=self.run)
                while step < cfg.steps and status == "finished":
                    epoch, in_epoch = divmod(step, self.state.steps_per_epoch)
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
                        self.state.recent_losses.append(metrics["loss"])
                        self.state.last_metrics.clear()
                        self.state.last_metrics.update({k: float(v) for k, v in metrics.items()})
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
                    write_results(self.paths, results)
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
            record.update(self.guard.counters)
            logger.log("train", step, record)
        self._hook("genzoo_step_end", run=self.run, step=step, metrics=dict(metrics))
        if self.guard.diverged:
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
        model = self.state.ema.module if self.state.ema is not None else self.model
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
        recent = self.state.recent_losses
        peak = peak_memory_bytes(self.device, self.peak_scope)
        return {
            **self.row_fields,
            "name": self.name,
            "status": status,
            "diverged": int(status == "diverged"),
            "step": step,
            "steps": self.config.steps,
            "resumed_from": self.start_step,
            "final_loss": self.state.last_metrics.get("loss", float("nan")),
            "train_loss": sum(recent) / len(recent) if recent else float("nan"),
            "train_bpd": self.state.last_metrics.get("bpd", float("nan")),
            "skipped_nonfinite": self.guard.counters["skipped_nonfinite"],
            "skipped_grad_norm": self.guard.counters["skipped_grad_norm"],
            "skipped_steps": self.guard.skipped_steps,
            "params": counts["total"],
            **{f"params_{k}": v for k, v in counts.items() if k != "total"},
            "train_images_per_s": throughput.rate,
            "peak_memory_bytes": peak,
            "peak_memory_mb": peak / MIB,
            "peak_memory_scope": self.peak_scope,
            "wall_time_s": time.perf_counter() - wall_start,
            "device": str(self.device),
            "precision": self.precision,
            "world_size": self.ctx.world_size,
            "checkpoint": str(self.checkpoint_path) if self.checkpoint_path.exists() else None,
        }

    def _hook(self, name: str, **kwargs: Any) -> None:
        if self.ctx.is_main:
            (self.host or get_host()).call_hook(name, **kwargs)


def _unique_names(names: list[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        out.append(name if names.count(name) == 1 else f"{name}_{i}")
    return out


def train(
    model: Hierarchy,
    train_data: Dataset,
    test_data: Dataset | None,
    config: TrainConfig | None = None,
    out_dir: str | Path = "runs/run",
    *,
    resume: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Train ``model`` and evaluate it: ``Trainer(model, ..., **options).fit(resume=resume)``,
    with :class:`Trainer`'s keyword options (``regularizers``, ``eval_config``, ``name``,
    ``host``, ``run_config``, ``dataset_name``, ``row_fields``).

    Returns the run's row of results, also written to ``out_dir/results.json``: ``status``,
    ``final_loss`` (last step), ``train_loss`` (mean of the last 100 steps), ``skipped_steps``
    (``skipped_nonfinite`` + ``skipped_grad_norm``), ``diverged``, ``params`` and
    ``params_<component>``, ``train_images_per_s``, ``peak_memory_bytes`` / ``peak_memory_mb``
    with ``peak_memory_scope``, and ``wall_time_s`` (of the training part), and after a
    finished run the evaluation's ``test_*`` figures (``test_bpd_elbo``, ``test_bpd_iw``,
    ``test_nats_elbo``, ``test_nats_iw``, ``test_kl_group_<i>``, ``test_active_units``, also as
    ``active_units``), ``sampling_images_per_s`` and ``fid``.
    """
    return Trainer(model, train_data, test_data, config or TrainConfig(), out_dir, **options).fit(
        resume=resume
    )
