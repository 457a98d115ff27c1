"""Validated settings of the training and evaluation engine.

The defaults reproduce NVAE's recipe (Vahdat & Kautz 2020, Sec. 4 and App. A; the official
``train.py`` flags in brackets): Adamax with ``eps = 1e-3`` and L2 weight decay 3e-4
[``--weight_decay``], learning rate 1e-2 [``--learning_rate``] warmed up linearly, then cosine
to 1e-4 [``--learning_rate_min``], KL warm-up over the first 30% of training
[``--kl_anneal_portion 0.3``] after a constant portion [``--kl_const_portion 1e-4``] at
[``--kl_const_coeff 1e-4``], KL balancing ``square``, mixed precision fp16 with a gradient
scaler starting at ``2**10``. VDVAE's habits (gradient clipping, skipping of steps with a large
gradient norm, EMA) are available and off by default, since NVAE does not use them.

Every field is checked when the dataclass is built; a bad value raises
:class:`genzoo.ConfigError` naming the field, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from genzoo.errors import ConfigError
from genzoo.io.validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_optional_positive,
    invalid,
    is_int,
)

OPTIMIZERS = ("adamax", "adamw")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_MODES = (False, "cells", "model")
"""``TrainConfig.compile``: eager, the repeated blocks compiled one class at a time, or the whole
model (``True`` is accepted as ``"model"``, what it meant before ``"cells"`` existed)."""
KL_BALANCE_FUNS = ("equal", "linear", "sqrt", "square")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class _Config:
    """Shared helpers: building from a mapping with unknown keys named, and back to a dict."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str | None = None):
        """Build from a mapping (e.g. the ``train:`` section of an experiment file)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            prefix = f"{where}: " if where else ""
            raise ConfigError(
                f"{prefix}unknown {cls.__name__} option(s) {', '.join(map(repr, unknown))}; "
                f"known options: {', '.join(sorted(names))}"
            )
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            if where:
                raise ConfigError(f"{where}: {exc}") from exc
            raise

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (tuples as lists), for ``config.json`` and checkpoints."""
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def changed(self) -> dict[str, Any]:
        """The fields that differ from their defaults, as :meth:`to_dict` gives them: what a
        run's fingerprint hashes, so that a setting added to genzoo later, at its default, does
        not make earlier runs look changed."""
        defaults = type(self)().to_dict()  # type: ignore[call-arg]
        return {k: v for k, v in self.to_dict().items() if v != defaults.get(k, object())}

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class TrainConfig(_Config):
    """How to train one model. Step counts are optimizer steps (one batch per process each).

    - ``steps``: total training steps; all schedules are fractions of it.
    - ``batch_size``: images per process and step (NVAE's ``--batch_size`` is per GPU too).
    - ``optimizer``: ``adamax`` (NVAE; L2 weight decay added to the gradient) or ``adamw``
      (decoupled decay). ``eps`` defaults to 1e-3 for Adamax (NVAE) and 1e-8 for AdamW.
    - ``lr``, ``lr_min``, ``lr_warmup_steps``: linear warm-up from 0, then cosine to ``lr_min``.
    - ``kl_anneal_portion``, ``kl_const_portion``, ``kl_const_coeff``: NVAE's KL warm-up.
    - ``kl_balance``, ``kl_balance_fun``: KL balancing across groups while the KL coefficient
      is below 1 (NVAE uses ``square``).
    - ``grad_clip``: clip the gradient norm to this value (None: no clipping, as NVAE).
    - ``skip_threshold``: skip steps whose gradient norm exceeds it (None: only non-finite
      norms are skipped). VDVAE uses a skip threshold of a few hundred.
    - ``max_consecutive_skips``: after this many consecutive steps with a non-finite loss or
      gradient the run stops as ``diverged``.
    - ``diverge_nelbo``: a run whose negative ELBO (nats per image, the bound itself, without
      warm-up or regularizers) stays above this for ``max_consecutive_skips`` steps in a row has
      diverged too: it stops and is recorded as such (None: only non-finite steps count). Such
      steps are not skipped: the bound measures instability, it does not prevent it. A loss can
      explode to 1e15 nats and stay finite, which the non-finite rule alone would call finished.
    - ``ema_decay``: keep an exponential moving average of the weights, used for evaluation.
    - ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    - ``cpu_threads``: torch's intra-op threads, fixed for the whole run, so that its figures
      are a function of its config, seed and commit and not of what else runs on the machine
      (a float sum's rounding depends on how it is split between threads). ``auto``:
      ``OMP_NUM_THREADS`` where it is set (a launcher's ``cpus_per_task`` sets it), else one
      thread per physical core the process may run on; or a number. Resolved once when the
      run starts and recorded in ``train_config.json`` and the checkpoint; a resumed run keeps
      the count it started with (:mod:`genzoo.machine.cpu_share`).
    - ``precision``: ``fp16`` (NVAE, with a gradient scaler), ``bf16`` or ``fp32``; on CPU
      training is always fp32, whatever this says.
    - ``channels_last``: the model and the batches in ``torch.channels_last``.
    - ``compile``: ``false`` (eager), ``"cells"`` (every cell and latent group compiled, one
      compilation per class and configuration shared by all its instances, so the compile cost
      grows with the kinds of blocks, not with depth) or ``"model"`` (the
      whole model through ``torch.compile``; ``true`` means ``"model"``).
      :mod:`genzoo.engine.compilation` says what is compiled and what stays eager.
    - ``cuda_graphs``: replay the compiled parts of the training step as CUDA graphs
      (``torch.compile(mode="reduce-overhead")``): fewer kernel launches, for launch-bound
      models; needs ``compile`` and a CUDA device (refused with ``device: cpu`` here, and at run
      start when ``auto`` finds no GPU). Batches are always full (the last partial batch of an
      epoch is dropped), so the shapes the graphs were recorded for stay the same.
    - ``seed``: seeds python, numpy and torch and the data order; ``deterministic`` also asks
      torch for deterministic kernels.
    - ``checkpoint_every``, ``eval_every``, ``log_every``: in steps (0: only at the end).
    - ``sync_bn``: convert BatchNorm to SyncBatchNorm under DDP (CUDA only).
    """

    steps: int = 1000
    batch_size: int = 32
    optimizer: str = "adamax"
    lr: float = 1e-2
    lr_min: float = 1e-4
    lr_warmup_steps: int = 0
    weight_decay: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float | None = None
    kl_anneal_portion: float = 0.3
    kl_const_portion: float = 1e-4
    kl_const_coeff: float = 1e-4
    kl_balance: bool = True
    kl_balance_fun: str = "square"
    grad_clip: float | None = None
    skip_threshold: float | None = None
    max_consecutive_skips: int = 50
    diverge_nelbo: float | None = None
    ema_decay: float | None = None
    device: str = "auto"
    cpu_threads: int | Literal["auto"] = "auto"
    precision: str = "fp16"
    grad_scaler_init: float = 2.0**10
    channels_last: bool = False
    compile: bool | Literal["cells", "model"] = False
    cuda_graphs: bool = False
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 1000
    eval_every: int = 0
    log_every: int = 10
    num_workers: int = 0
    sync_bn: bool = False
    progress_bar: bool = True

    def __post_init__(self) -> None:
        own = "TrainConfig"
        check_int("steps", self.steps, 1, owner=own)
        check_int("batch_size", self.batch_size, 1, owner=own)
        check_choice("optimizer", self.optimizer, OPTIMIZERS, owner=own)
        check_float("lr", self.lr, 0.0, open_low=True, owner=own)
        check_float("lr_min", self.lr_min, 0.0, self.lr, owner=own)
        check_int("lr_warmup_steps", self.lr_warmup_steps, 0, owner=own)
        if self.lr_warmup_steps >= self.steps:
            raise invalid(
                "lr_warmup_steps", self.lr_warmup_steps, f"fewer than steps={self.steps}", owner=own
            )
        check_float("weight_decay", self.weight_decay, 0.0, owner=own)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if (
            betas is None
            or len(betas) != 2
            or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)
        ):
            raise invalid("betas", self.betas, "two numbers in [0, 1)", owner=own)
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        check_optional_positive("eps", self.eps, owner=own)
        check_float("kl_anneal_portion", self.kl_anneal_portion, 0.0, 1.0, owner=own)
        check_float("kl_const_portion", self.kl_const_portion, 0.0, 1.0, owner=own)
        check_float("kl_const_coeff", self.kl_const_coeff, 0.0, 1.0, owner=own)
        check_choice("kl_balance_fun", self.kl_balance_fun, KL_BALANCE_FUNS, owner=own)
        check_optional_positive("grad_clip", self.grad_clip, owner=own)
        check_optional_positive("skip_threshold", self.skip_threshold, owner=own)
        check_int("max_consecutive_skips", self.max_consecutive_skips, 1, owner=own)
        check_optional_positive("diverge_nelbo", self.diverge_nelbo, owner=own)
        if self.ema_decay is not None:
            check_float("ema_decay", self.ema_decay, 0.0, 1.0, open_low=True, owner=own)
            if self.ema_decay >= 1.0:
                raise invalid("ema_decay", self.ema_decay, "a number in (0, 1) or None", owner=own)
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise invalid("device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'", owner=own)
        if self.cpu_threads != "auto" and not (is_int(self.cpu_threads) and self.cpu_threads >= 1):
            raise invalid("cpu_threads", self.cpu_threads, "'auto' or an integer >= 1", owner=own)
        check_choice("precision", self.precision, PRECISIONS, owner=own)
        check_float("grad_scaler_init", self.grad_scaler_init, 0.0, open_low=True, owner=own)
        check_int("seed", self.seed, 0, owner=own)
        check_int("checkpoint_every", self.checkpoint_every, 0, owner=own)
        check_int("eval_every", self.eval_every, 0, owner=own)
        check_int("log_every", self.log_every, 1, owner=own)
        check_int("num_workers", self.num_workers, 0, owner=own)
        if not (
            isinstance(self.compile, bool)
            or (isinstance(self.compile, str) and self.compile in COMPILE_MODES)
        ):
            raise invalid(
                "compile", self.compile, "false, 'cells' or 'model' (true means 'model')", owner=own
            )
        for name in (
            "kl_balance",
            "channels_last",
            "cuda_graphs",
            "deterministic",
            "sync_bn",
            "progress_bar",
        ):
            check_bool(name, getattr(self, name), owner=own)
        if self.cuda_graphs and self.compile_mode is None:
            raise invalid(
                "cuda_graphs",
                True,
                "false unless compile is 'cells' or 'model' (the graphs are recorded through "
                "torch.compile(mode='reduce-overhead'))",
                owner=own,
            )
        if self.cuda_graphs and self.device == "cpu":
            raise invalid("cuda_graphs", True, "false with device='cpu' (CUDA graphs need a GPU)", owner=own)

    @property
    def compile_mode(self) -> str | None:
        """``None`` (eager), ``"cells"`` or ``"model"``."""
        if self.compile is True:
            return "model"
        return self.compile or None

    @property
    def optimizer_eps(self) -> float:
        """``eps`` or the optimizer's default (Adamax 1e-3 as NVAE, AdamW 1e-8)."""
        if self.eps is not None:
            return float(self.eps)
        return 1e-3 if self.optimizer == "adamax" else 1e-8


@dataclass(frozen=True)
class EvalConfig(_Config):
    """How to evaluate a trained model on the test split.

    - ``batch_size``: test images per forward pass for the ELBO and the other metrics.
    - ``iw_samples``: K of the importance-weighted NLL (NVAE's final number uses 1000; 0 skips
      it). ``iw_batch_size`` bounds the images per forward pass (test images x samples), so
      memory stays bounded whatever K is.
    - ``max_images``: evaluate on the first N test images only (None: all).
    - ``active_unit_threshold``: a latent unit is active when the variance over the data of
      its posterior mean exceeds it (Burda et al. 2016: 0.01).
    - ``temperatures``, ``num_samples``: sample grids drawn at each temperature.
    - ``bn_readjust``: readjust BatchNorm statistics before sampling, as NVAE does
      (``bn_readjust_iters`` sampling passes of ``bn_readjust_batch_size`` images in train mode).
    - ``num_reconstructions``: test images shown next to their reconstructions.
    - ``fid``: compute FID (needs the ``fid`` extra); ``fid_num_samples`` generated images,
      ``fid_temperature``, ``fid_reference_split`` (NVAE compares with the training set),
      ``fid_weights_path`` (Inception weights for offline machines),
      ``fid_cache_dir`` (reference statistics per dataset; default ``~/.cache/genzoo/fid``).
    - ``speed_batches``: timed batches for the sampling images/s figure (0: not measured).
    - ``curve_at_images``: numbers of training images seen (all processes together) at which
      the held-out likelihood is measured while training, and once more at the end, so that a
      report can draw each effect against the budget (``kind: "curve"`` records of the
      metrics log, with ``images_seen``); the point is taken at the first step that reaches
      it. ``curve_iw_samples`` (K, 0: ELBO only) and ``curve_max_images`` (the first N held-out
      images; None: all) say what each point measures. Empty (default): no curve.
    """

    batch_size: int = 64
    iw_samples: int = 1000
    iw_batch_size: int = 1024
    max_images: int | None = None
    active_unit_threshold: float = 0.01
    temperatures: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0)
    num_samples: int = 64
    bn_readjust: bool = True
    bn_readjust_iters: int = 500
    bn_readjust_batch_size: int = 16
    num_reconstructions: int = 8
    fid: bool = False
    fid_num_samples: int = 50_000
    fid_temperature: float = 1.0
    fid_reference_split: str = "train"
    fid_weights_path: str | None = None
    fid_cache_dir: str | None = None
    speed_batches: int = 5
    curve_at_images: tuple[int, ...] = ()
    curve_iw_samples: int = 10
    curve_max_images: int | None = None

    def __post_init__(self) -> None:
        own = "EvalConfig"
        check_int("batch_size", self.batch_size, 1, owner=own)
        check_int("iw_samples", self.iw_samples, 0, owner=own)
        check_int("iw_batch_size", self.iw_batch_size, 1, owner=own)
        if self.max_images is not None:
            check_int("max_images", self.max_images, 1, owner=own)
        check_float("active_unit_threshold", self.active_unit_threshold, 0.0, owner=own)
        temps = self.temperatures
        if not isinstance(temps, (list, tuple)) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 10 for t in temps
        ):
            raise invalid("temperatures", temps, "a list of numbers in (0, 10]", owner=own)
        object.__setattr__(self, "temperatures", tuple(float(t) for t in temps))
        check_int("num_samples", self.num_samples, 0, owner=own)
        check_int("bn_readjust_iters", self.bn_readjust_iters, 0, owner=own)
        check_int("bn_readjust_batch_size", self.bn_readjust_batch_size, 2, owner=own)
        check_int("num_reconstructions", self.num_reconstructions, 0, owner=own)
        check_int("fid_num_samples", self.fid_num_samples, 2, owner=own)
        check_float("fid_temperature", self.fid_temperature, 0.0, 10.0, open_low=True, owner=own)
        check_choice("fid_reference_split", self.fid_reference_split, ("train", "test"), owner=own)
        for name in ("fid_weights_path", "fid_cache_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise invalid(name, value, "a path string or None", owner=own)
        check_int("speed_batches", self.speed_batches, 0, owner=own)
        points = self.curve_at_images
        if not isinstance(points, (list, tuple)) or not all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in points
        ):
            raise invalid("curve_at_images", points, "a list of image counts >= 1", owner=own)
        object.__setattr__(self, "curve_at_images", tuple(sorted(set(points))))
        check_int("curve_iw_samples", self.curve_iw_samples, 0, owner=own)
        if self.curve_max_images is not None:
            check_int("curve_max_images", self.curve_max_images, 1, owner=own)
        for name in ("bn_readjust", "fid"):
            check_bool(name, getattr(self, name), owner=own)


TRACKER_BACKENDS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
"""``LoggingConfig.backends``: each tracker's name -> the package it needs, which is also the name
of genzoo's extra that installs it (``pip install 'genzoo[mlflow]'``)."""
WANDB_MODES = ("online", "offline", "disabled")


def tracker_installed(backend: str) -> bool:
    """Whether the package ``backend`` needs can be imported (looked up, not imported: reading a
    config stays fast)."""
    try:
        return importlib.util.find_spec(TRACKER_BACKENDS[backend]) is not None
    except (ImportError, ValueError):
        return False


def _optional_str(name: str, value: Any, owner: str) -> None:
    if value is not None and not (isinstance(value, str) and value):
        raise invalid(name, value, "a non-empty string or null", owner=owner)


@dataclass(frozen=True)
class MlflowConfig(_Config):
    """Where the ``mlflow`` tracker logs (:mod:`genzoo.engine.trackers`).

    - ``tracking_uri``: MLflow's tracking URI: a database (``sqlite:///mlflow.db``), a server
      (``http://host:5000``) or a folder (``file:./mlruns``; MLflow 3 asks for
      ``MLFLOW_ALLOW_FILE_STORE=true`` before it writes one). None: ``MLFLOW_TRACKING_URI``, else
      MLflow's default (``sqlite:///mlflow.db`` in the working directory since MLflow 3).
    - ``experiment``: the MLflow experiment of the run; None: the experiment file's ``name``
      (from Python: MLflow's ``Default`` experiment).
    - ``tags``: tags set on every run, ``{name: value}``.
    """

    tracking_uri: str | None = None
    experiment: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        own = "MlflowConfig"
        _optional_str("tracking_uri", self.tracking_uri, own)
        _optional_str("experiment", self.experiment, own)
        if not (isinstance(self.tags, Mapping) and all(isinstance(k, str) for k in self.tags)):
            raise invalid("tags", self.tags, "a mapping of tag name -> value", owner=own)
        object.__setattr__(self, "tags", {k: str(v) for k, v in self.tags.items()})


@dataclass(frozen=True)
class WandbConfig(_Config):
    """Where the ``wandb`` tracker logs (:mod:`genzoo.engine.trackers`).

    - ``project``, ``entity``: the W&B project and team or user; None: the experiment file's
      ``name`` (from Python: W&B's default) and your default entity.
    - ``mode``: ``online``, ``offline`` (files only, uploaded later with ``wandb sync``) or
      ``disabled``; None: ``WANDB_MODE``, else online.
    - ``group``: W&B's run group; None: the run's variant or ablation name, so that its seeds
      are grouped (from Python: no group).
    - ``tags``: tags of every run.
    - ``dir``: where W&B writes its local files (it adds ``wandb/``); None: the run's folder.
    """

    project: str | None = None
    entity: str | None = None
    mode: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    dir: str | None = None

    def __post_init__(self) -> None:
        own = "WandbConfig"
        for name in ("project", "entity", "group", "dir"):
            _optional_str(name, getattr(self, name), own)
        if self.mode is not None:
            check_choice("mode", self.mode, WANDB_MODES, owner=own)
        tags = self.tags
        if not (isinstance(tags, (list, tuple)) and all(isinstance(t, str) and t for t in tags)):
            raise invalid("tags", tags, "a list of strings", owner=own)
        object.__setattr__(self, "tags", tuple(tags))


@dataclass(frozen=True)
class LoggingConfig(_Config):
    """Where a run's metrics go besides ``metrics.jsonl``, which is always written
    (``docs/tracking.md``).

    - ``backends``: the trackers, from ``tensorboard``, ``mlflow`` and ``wandb``; each needs its
      package (the extra of the same name: ``pip install 'genzoo[mlflow]'``), checked here, when
      the experiment file is read. None (default): TensorBoard when it is installed.
    - ``mlflow``: :class:`MlflowConfig`; ``wandb``: :class:`WandbConfig` (used when the backend is
      listed).

    Where a run is tracked never changes what it computes: these settings are not part of a run's
    fingerprint.
    """

    backends: tuple[str, ...] | None = None
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        own = "LoggingConfig"
        for name, cls in (("mlflow", MlflowConfig), ("wandb", WandbConfig)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, cls.from_dict(value, where=f"{own}.{name}"))
            elif not isinstance(value, cls):
                raise invalid(name, value, f"a mapping of {cls.__name__} options", owner=own)
        if self.backends is None:
            return
        backends = self.backends
        if not (isinstance(backends, (list, tuple)) and all(isinstance(b, str) for b in backends)):
            raise invalid("backends", backends, f"a list of {', '.join(TRACKER_BACKENDS)}", owner=own)
        for backend in backends:
            if backend not in TRACKER_BACKENDS:
                close = difflib.get_close_matches(backend, TRACKER_BACKENDS, n=1, cutoff=0.5)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = ", ".join(TRACKER_BACKENDS)
                expected = f"names from {known}; {backend!r} is none of them{hint}"
                raise invalid("backends", list(backends), expected, owner=own)
            if not tracker_installed(backend):
                package = TRACKER_BACKENDS[backend]
                expected = f"trackers whose package is installed; {backend!r} needs {package}"
                raise invalid(
                    "backends", list(backends), f"{expected}: pip install 'genzoo[{backend}]'", owner=own
                )
        if len(set(backends)) != len(backends):
            raise invalid("backends", list(backends), "each tracker named once", owner=own)
        object.__setattr__(self, "backends", tuple(backends))

    @property
    def trackers(self) -> tuple[str, ...]:
        """The trackers a run starts: ``backends``, or TensorBoard where it is installed."""
        if self.backends is not None:
            return self.backends
        return ("tensorboard",) if tracker_installed("tensorboard") else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "backends": None if self.backends is None else list(self.backends),
            "mlflow": self.mlflow.to_dict(),
            "wandb": self.wandb.to_dict(),
        }
