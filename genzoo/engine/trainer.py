"""The training loop: NVAE's recipe, step by step, with VDVAE's safeguards.

Each step minimizes NVAE's objective (:mod:`.objective`: reconstruction, KL with warm-up and
balancing, regularizer terms) with the optimizer and learning-rate schedule of :mod:`.optim`;
:mod:`.guard` skips bad steps and stops a diverged run; :mod:`.run_state` checkpoints and
resumes the run exactly; :mod:`.results` writes its row of results once, when it is over;
:mod:`.step` takes one optimizer step, :mod:`.batches` serves the batches and
:mod:`.compilation` compiles what ``training.compile`` asks for. What stays here is the loop
around them, its evaluations and hooks.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset

from genzoo.engine import compilation
from genzoo.engine.batches import TrainingBatches, batch_images
from genzoo.engine.config import EvalConfig, LoggingConfig, TrainConfig
from genzoo.engine.devices import (
    device_type,
    grad_scaler,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from genzoo.engine.distributed import (
    DistContext,
    init_distributed,
    revert_sync_batchnorm,
    wrap_model,
)
from genzoo.engine.efficiency import Throughput, peak_memory_bytes, reset_peak_memory
from genzoo.engine.evaluator import evaluate
from genzoo.engine.guard import StepGuard
from genzoo.engine.logging import RunLogger
from genzoo.engine.optim import build_optimizer, build_scheduler
from genzoo.engine.request import RunRequest
from genzoo.engine.results import failed_row, run_results, write_results
from genzoo.engine.run_state import RunState
from genzoo.engine.schedules import kl_balance_alpha
from genzoo.engine.signals import RunInterrupted, StopSignals
from genzoo.engine.step import TrainStep
from genzoo.engine.trackers import build_trackers
from genzoo.errors import GenzooError
from genzoo.interfaces.hierarchy import Hierarchy
from genzoo.interfaces.regularizer import Regularizer
from genzoo.io.atomic import atomic_write_text
from genzoo.io.run_layout import RunPaths
from genzoo.machine import cpu_share
from genzoo.machine.software import software
from genzoo.plugin.discovery import PluginHost, get_host
from genzoo.plugin.run_info import RunInfo

LOSS_WINDOW = 100  # steps averaged into results["train_loss"]


class Trainer:
    """Trains one :class:`genzoo.Hierarchy`; :meth:`fit` runs (or resumes) it to the end.

    Built from a :class:`~genzoo.engine.request.RunRequest` (:meth:`from_request`, as the
    experiment runner does), or from the same fields as arguments:

    :param model: the model (its parameters are moved to the configured device).
    :param train_data: a ``torch.utils.data.Dataset`` of images ``(C, H, W)`` in [0, 1] (or
        ``(image, label)`` pairs).
    :param test_data: the held-out split, or ``None`` to skip evaluation.
    :param config: a :class:`TrainConfig`.
    :param out_dir: the run's folder (:class:`genzoo.io.run_layout.RunPaths`): checkpoint, metrics log,
        ``results.json``, image grids. An existing checkpoint there is resumed by :meth:`fit`.
    :param regularizers: :class:`genzoo.Regularizer` objects added to the loss.
    :param eval_config: an :class:`EvalConfig` for the periodic and final evaluations.
    :param name: the run's name (default: the folder's name).
    :param host: the plugin host whose lifecycle hooks are called (default: ``genzoo.get_host()``).
    :param run_config: extra plain values recorded in ``RunInfo.config`` (e.g. the model spec).
    :param dataset_name: names the dataset for the FID reference-statistics cache.
    :param row_fields: fields the caller puts into the run's row of results; the row is written
        once, complete.
    :param logging: a :class:`LoggingConfig`: the trackers besides ``metrics.jsonl`` (default:
        TensorBoard where it is installed), as an experiment file's ``logging:`` section.
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
        run_config: Mapping[str, Any] | None = None,
        dataset_name: str | None = None,
        row_fields: Mapping[str, Any] | None = None,
        logging: LoggingConfig | None = None,
    ) -> None:
        self._take(
            RunRequest(
                model=model,
                train_data=train_data,
                test_data=test_data,
                config=config,
                out_dir=Path(out_dir),
                eval_config=eval_config or EvalConfig(),
                regularizers=regularizers,
                name=name or "",
                row_fields=row_fields or {},
                run_config=run_config or {},
                dataset_name=dataset_name,
                host=host,
                logging=logging or LoggingConfig(),
            )
        )

    @classmethod
    def from_request(cls, request: RunRequest) -> Trainer:
        """The trainer of ``request``."""
        trainer = cls.__new__(cls)
        trainer._take(request)
        return trainer

    def _take(self, request: RunRequest) -> None:
        self.request = request
        self.model = request.model
        self.train_data = request.train_data
        self.test_data = request.test_data
        self.config = request.config
        self.eval_config = request.eval_config
        self.out_dir = request.out_dir
        self.paths = RunPaths(self.out_dir)
        self.regularizers = list(request.regularizers)
        self.host = request.host
        self.dataset_name = request.dataset_name
        self.name = request.name
        self.row_fields = request.results_fields()
        self.run_config = {
            "train": request.config.to_dict(),
            "eval": request.eval_config.to_dict(),
            **request.run_config,
        }
        self.stop_signals = StopSignals()

    # -- set-up ------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.config
        # fixed for the whole run, from its config and the machine (a resumed run: RunState.resume)
        threads = cpu_share.thread_record(cfg.cpu_threads, cpu_share.resolve_threads(cfg.cpu_threads))
        cpu_share.apply_threads(threads["threads"])
        self.run_config["cpu_threads"] = threads  # train_config.json
        # the code this process runs, asked now, at the run's start (cached for results.json)
        self.run_config["software"] = software()
        # the caller's process group (the experiment runner joins it once for all its runs)
        joined = self.request.dist
        self.ctx: DistContext = init_distributed(device_type(cfg.device)) if joined is None else joined
        self.device = resolve_device(cfg.device, self.ctx)
        compilation.check_device(cfg, self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        # CPU runs fall back to fp32 silently: one config serves laptops and GPUs; results
        # record the precision actually used.
        seed_everything(cfg.seed + self.ctx.rank, deterministic=cfg.deterministic)

        memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.model.to(self.device, memory_format=memory_format)
        wrapped = wrap_model(self.model, self.ctx, self.device, sync_bn=cfg.sync_bn)
        ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay is not None
            else None
        )
        self.optimizer = build_optimizer(self.model, cfg)
        # after the EMA's copy of the model, which must not hold compiled blocks
        self.train_model, self.compiled_blocks = compilation.training_model(self.model, wrapped, cfg)
        self.scaler = grad_scaler(self.precision, self.device, cfg.grad_scaler_init)

        self.batches = TrainingBatches(self.train_data, cfg, self.ctx, self.device)
        self.guard = StepGuard(
            skip_threshold=cfg.skip_threshold,
            max_consecutive_skips=cfg.max_consecutive_skips,
            diverge_nelbo=cfg.diverge_nelbo,
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
            steps_per_epoch=self.batches.steps_per_epoch,
            threads=threads,
        )
        self.step = TrainStep(
            config=cfg,
            ctx=self.ctx,
            model=self.model,
            train_model=self.train_model,
            optimizer=self.optimizer,
            scheduler=self.state.scheduler,
            scaler=self.scaler,
            ema=ema,
            guard=self.guard,
            regularizers=self.regularizers,
            alpha=kl_balance_alpha(self.model.groups, cfg.kl_balance_fun).to(self.device),
            precision=self.precision,
            device=self.device,
            stop_signals=self.stop_signals,
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

    # -- the run -----------------------------------------------------------------------------
    def fit(self, *, resume: bool = True) -> dict[str, Any]:
        """Train to ``config.steps`` (resuming from the run folder's checkpoint when ``resume``
        and it exists), evaluate, and return the run's row of results, also written to the
        folder's ``results.json`` (see :func:`genzoo.engine.train` for its fields).

        ``results["status"]`` is ``finished``, ``interrupted`` (SIGTERM or :meth:`request_stop`;
        a checkpoint was written) or ``diverged`` (too many non-finite steps in a row; the last
        good checkpoint is kept). Ctrl-C (SIGINT) writes the checkpoint and the ``interrupted``
        row as well, then raises :class:`genzoo.engine.signals.RunInterrupted` (a
        ``KeyboardInterrupt`` holding the row): the user stopped the caller too; fitting again
        resumes. A run that raises (a bug, out of memory) writes a ``failed`` row and its
        traceback to ``error.txt``, then re-raises; errors the user can act on
        (:class:`genzoo.GenzooError`) are raised as they are.
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
        self.compiled_blocks = []
        try:
            return self._train(resume, wall_start)
        finally:
            compilation.release(self.compiled_blocks)

    def _train(self, resume: bool, wall_start: float) -> dict[str, Any]:
        self._setup()
        cfg = self.config
        if resume and self.checkpoint_path.exists():
            self.start_step = self.state.resume()
        elif self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        step = self.start_step
        self.run.step = step
        self.peak_scope = reset_peak_memory(self.device)
        throughput = Throughput(load_probe=cpu_share.others_training if self.device.type == "cpu" else None)
        compile_clock = compilation.CompileClock() if cfg.compile_mode else None
        logger = RunLogger(
            self.out_dir,
            total_steps=cfg.steps,
            start_step=step,
            enabled=self.ctx.is_main,
            progress_bar=cfg.progress_bar,
            trackers=build_trackers(self.request.logging) if self.ctx.is_main else (),
            name=self.name,
            run_config=self.run_config,
            description=self.name,
        )
        if self.ctx.is_main:
            import json

            atomic_write_text(self.paths.train_config, json.dumps(self.run_config, indent=2, default=str))
        status = "finished"
        ended = "failed"  # what the trackers are told if the run raises
        try:
            with self.stop_signals:
                self._hook("genzoo_run_start", run=self.run)
                while step < cfg.steps and status == "finished":
                    for batch in self.batches.from_step(step):
                        x = batch_images(batch).to(self.device, non_blocking=True)
                        if cfg.channels_last:
                            x = x.contiguous(memory_format=torch.channels_last)
                        started = time.perf_counter()
                        metrics = self.step(x, step)
                        if compile_clock is not None:
                            compile_clock.record(time.perf_counter() - started)
                        step += 1
                        self.run.step = step
                        throughput.step(x.shape[0] * self.ctx.world_size)
                        metrics["images_per_s"] = throughput.rate
                        self.state.recent_losses.append(metrics["loss"])
                        self.state.last_metrics.clear()
                        self.state.last_metrics.update({k: float(v) for k, v in metrics.items()})
                        status = self._after_step(step, metrics, logger, throughput)
                        if status != "finished" or step >= cfg.steps:
                            break
                if status == "finished" and self._curve_due(step, at_end=True):
                    self._curve_point(step, logger)
                if status == "interrupted" or status == "finished":
                    self.save(step, status)
                results = self._results(step, status, throughput, wall_start, compile_clock)
                if status == "finished" and self.test_data is not None:
                    results.update(self._final_evaluation(step, logger))
                    results["active_units"] = results["test_active_units"]  # the report's column
                if self.ctx.is_main:
                    write_results(self.paths, results)
                    logger.log_final(results, step)
                self._hook("genzoo_run_end", run=self.run, results=results)
                ended = status
        finally:
            logger.close(ended)
        if status == "interrupted" and self.stop_signals.by_user:
            raise RunInterrupted(results)  # after the handlers are restored and the log is closed
        return results

    def request_stop(self) -> None:
        """Ask the run to stop after the current step, as SIGTERM does: :meth:`fit` returns the
        ``interrupted`` row."""
        self.stop_signals.request()

    def _after_step(
        self, step: int, metrics: dict[str, float], logger: RunLogger, throughput: Throughput
    ) -> str:
        cfg = self.config
        logger.progress(
            step, {"loss": metrics["loss"], "bpd": metrics["bpd"], "img/s": metrics["images_per_s"]}
        )
        if step % cfg.log_every == 0 or step == cfg.steps or metrics["skipped"]:
            record = dict(metrics)
            record.update({f"kl_group_{i}": v for i, v in enumerate(self.step.kl_groups)})
            record.update(self.guard.counters)
            logger.log("train", step, record)
        self._hook("genzoo_step_end", run=self.run, step=step, metrics=dict(metrics))
        if self.guard.diverged:
            return "diverged"
        if step < cfg.steps and self._curve_due(step):  # before any checkpoint: a resumed run has it
            with throughput.paused():
                self._curve_point(step, logger)
        if self.step.stop_requested:
            return "interrupted"
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            self.save(step)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and self.test_data is not None:
            with throughput.paused():
                scores = self._evaluate(self._likelihood_only(iw_samples=0))
            logger.log("eval", step, scores)
            self._hook("genzoo_evaluation_end", run=self.run, step=step, metrics=scores)
        return "finished"

    def images_seen(self, step: int) -> int:
        """Training images seen after ``step`` steps, all processes together."""
        return step * self.config.batch_size * self.ctx.world_size

    def _curve_due(self, step: int, *, at_end: bool = False) -> bool:
        """Whether a point of ``evaluation.curve_at_images`` was reached by this step (the first
        step at or past it); ``at_end``, whether there is a curve at all (its last point is the
        end of training)."""
        points = self.eval_config.curve_at_images
        if not points or self.test_data is None:
            return False
        seen, before = self.images_seen(step), self.images_seen(step - 1)
        return at_end or any(before < p <= seen for p in points)

    def _curve_point(self, step: int, logger: RunLogger) -> None:
        """The held-out likelihood at this budget, logged as a ``curve`` record."""
        ev = self.eval_config
        scores = self._evaluate(
            self._likelihood_only(iw_samples=ev.curve_iw_samples, max_images=ev.curve_max_images)
        )
        logger.log("curve", step, {"images_seen": self.images_seen(step), **scores})

    def _likelihood_only(self, **changes: Any) -> EvalConfig:
        """The evaluation settings without images, speed or FID (evaluations while training)."""
        return self.eval_config.replace(
            num_samples=0, num_reconstructions=0, speed_batches=0, fid=False, **changes
        )

    @property
    def eval_model(self) -> Hierarchy:
        """The model evaluations use: the EMA weights when EMA is on (with plain BatchNorm in
        place of SyncBatchNorm, as part of the evaluation runs on rank 0 alone)."""
        model = self.state.ema.module if self.state.ema is not None else self.model
        if self.config.sync_bn and self.ctx.is_distributed:
            model = revert_sync_batchnorm(model)
        return model

    def _evaluate(self, config: EvalConfig, **options: Any) -> dict[str, Any]:
        """:func:`evaluate` on the test split, with compiled blocks run eagerly (evaluations
        see other batch sizes and eval mode, which would each compile again: .compilation)."""
        with compilation.eager() if self.compiled_blocks else contextlib.nullcontext():
            return evaluate(
                self.eval_model,
                self.test_data,
                config,
                device=self.device,
                seed=self.config.seed,
                ctx=self.ctx,
                **options,
            )

    def _final_evaluation(self, step: int, logger: RunLogger) -> dict[str, Any]:
        scores = self._evaluate(
            self.eval_config,
            out_dir=self.out_dir if self.ctx.is_main else None,
            reference_data=self.train_data if self.eval_config.fid_reference_split == "train" else None,
            dataset_name=self.dataset_name,
        )
        logger.log("eval", step, scores)
        logger.log_images(self._grids(), step)
        self._hook("genzoo_evaluation_end", run=self.run, step=step, metrics=scores)
        return scores

    def _grids(self) -> list[tuple[str, Path]]:
        """The grids the final evaluation wrote, by name: ``samples_t<T>`` and ``reconstructions``."""
        ev = self.eval_config
        grids = [(f"samples_t{t:g}", self.paths.samples(t)) for t in ev.temperatures if ev.num_samples > 0]
        if ev.num_reconstructions > 0:
            grids.append(("reconstructions", self.paths.reconstructions))
        return grids

    def _results(
        self,
        step: int,
        status: str,
        throughput: Throughput,
        wall_start: float,
        compile_clock: compilation.CompileClock | None,
    ) -> dict[str, Any]:
        return run_results(
            self.row_fields,
            name=self.name,
            status=status,
            step=step,
            config=self.config,
            start_step=self.start_step,
            state=self.state,
            throughput=throughput,
            peak_memory=(peak_memory_bytes(self.device, self.peak_scope), self.peak_scope),
            wall_time_s=time.perf_counter() - wall_start,
            compile_time_s=compile_clock.seconds if compile_clock is not None else None,
            device=self.device,
            precision=self.precision,
        )

    def _hook(self, name: str, **kwargs: Any) -> None:
        if self.ctx.is_main:
            (self.host or get_host()).call_hook(name, **kwargs)


def train(
    model: Hierarchy,
    train_data: Dataset,
    test_data: Dataset | None,
    config: TrainConfig | None = None,
    out_dir: str | Path = "runs/run",
    *,
    resume: bool = True,
    regularizers: Sequence[Regularizer] = (),
    eval_config: EvalConfig | None = None,
    name: str | None = None,
    host: PluginHost | None = None,
    run_config: Mapping[str, Any] | None = None,
    dataset_name: str | None = None,
    row_fields: Mapping[str, Any] | None = None,
    logging: LoggingConfig | None = None,
) -> dict[str, Any]:
    """Train ``model`` and evaluate it: the :class:`Trainer` of the
    :class:`~genzoo.engine.request.RunRequest` its arguments make (their meaning is
    :class:`Trainer`'s), fitted with ``resume``; :func:`train_request` takes a request
    built by the caller.

    Returns the run's row of results, also written to ``out_dir/results.json``: ``status``,
    ``final_loss`` (last step), ``train_loss`` (mean of the last 100 steps), ``skipped_steps``
    (``skipped_nonfinite`` + ``skipped_grad_norm``), ``diverged``, ``params`` and
    ``params_<component>``, ``train_images_per_s``, ``peak_memory_bytes`` / ``peak_memory_mb``
    with ``peak_memory_scope``, and ``wall_time_s`` (of the training part), and after a
    finished run the evaluation's ``test_*`` figures (``test_bpd_elbo``, ``test_bpd_iw``,
    ``test_nats_elbo``, ``test_nats_iw``, ``test_kl_group_<i>``, ``test_active_units``, also as
    ``active_units``), ``sampling_images_per_s`` and ``fid``.

    Ctrl-C (SIGINT) stops the run after the step in flight: its checkpoint and its
    ``interrupted`` row are written, then :class:`genzoo.engine.signals.RunInterrupted` (a
    ``KeyboardInterrupt``) is raised, so that a script stops too; calling ``train`` again
    resumes. SIGTERM and :meth:`Trainer.request_stop` return the ``interrupted`` row instead.
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
        row_fields=row_fields,
        logging=logging,
    )
    return trainer.fit(resume=resume)


def train_request(request: RunRequest, *, resume: bool = True) -> dict[str, Any]:
    """Train and evaluate the run ``request`` describes (resuming from its folder's checkpoint
    when ``resume``): ``Trainer.from_request(request).fit(resume=resume)``; the row of results
    is :func:`train`'s."""
    return Trainer.from_request(request).fit(resume=resume)
