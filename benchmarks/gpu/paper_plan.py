"""The plan of ``bench_gpu_paper.py``: its settings in the order they run (the models they
measure are :mod:`benchmarks.harness.paper_models`), and the time budget that decides which of
them fit."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness.paper_models import mnist
from genzoo.engine.config import TrainConfig


# -- the settings --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Setting:
    """One row: a model, its cells and how it is trained."""

    model: str  # a ModelSpec name
    cells: str  # a CELLS key
    precision: str  # fp32, fp16 (with the gradient scaler), bf16
    channels_last: bool = False  # training.channels_last: model and batch
    compile: str | bool = False  # training.compile
    cuda_graphs: bool = False
    batch: int = 32
    steps: int = 20
    section: str = "cifar10"
    regularizers: bool = False
    cudnn_benchmark: bool = False

    @property
    def name(self) -> str:
        parts = [self.model, self.cells, self.precision]
        if self.channels_last:
            parts.append("cl")
        if self.compile:
            parts.append(f"compile-{self.compile}")
        if self.cuda_graphs:
            parts.append("graphs")
        parts.append(f"b{self.batch}")
        if self.regularizers:
            parts.append("reg")
        if self.cudnn_benchmark:
            parts.append("cudnn-benchmark")
        return ".".join(parts)

    @property
    def label(self) -> str:
        """The row's flags in words."""
        flags = [self.precision + (" + scaler" if self.precision == "fp16" else "")]
        if self.channels_last:
            flags.append("channels_last")
        flags.append(f"compile {self.compile}" if self.compile else "eager")
        if self.cuda_graphs:
            flags.append("CUDA graphs")
        if self.regularizers:
            flags.append("NVAE's regularizers")
        if self.cudnn_benchmark:
            flags.append("cudnn.benchmark")
        return ", ".join(flags)

    def train_config(self) -> TrainConfig:
        """The engine's settings: the ``paper`` profile's recipe (warm-up 977 steps of 78,125)."""
        return TrainConfig(
            steps=78_125,
            batch_size=self.batch,
            lr_warmup_steps=977,
            precision=self.precision,
            channels_last=self.channels_last,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs,
            checkpoint_every=0,
            progress_bar=False,
        )


REFERENCE = Setting("cifar10", "naive", "fp32")
"""What the targets are measured against: eager fp32 with the naive cells."""
MNIST_REFERENCE = Setting("mnist", "naive", "fp32", batch=mnist().batch, section="mnist")
"""The MNIST rows' reference, at the ``paper`` profile's per-process batch."""


def core_settings(steps: int, speed_steps: int) -> list[Setting]:
    """The CIFAR-10 rows at batch 32 that the targets need, most important first: the
    reference, the eager precisions, the first compiled candidate (``steps`` steps: is its loss
    finite?), the two rows that decide the cells' CUDA defaults (the CPU's fast paths of the
    decoder cells; the encoder cells in NCHW), then the other compiled candidates. A short
    budget skips the compilations that do not fit and still measures the cheap eager rows."""
    s = functools.partial(Setting, "cifar10", steps=speed_steps)
    return [
        dataclasses.replace(REFERENCE, steps=speed_steps),
        s("default", "fp32"),
        s("default", "fp16"),
        s("default", "bf16"),
        s("default", "fp16", compile="cells", cuda_graphs=True, steps=steps),
        s("cpu-paths", "fp32"),
        s("enc-nchw", "fp32"),
        s("default", "bf16", compile="cells", cuda_graphs=True, steps=steps),
        s("default", "fp32", compile="cells", cuda_graphs=True, steps=steps),
        s("default", "fp16", compile="cells"),
    ]


def derived_settings(best: Setting | None, batches: list[int], speed_steps: int) -> list[Setting]:
    """Peak memory against batch size with the fastest CIFAR-10 setting's flags, and the MNIST
    model: naive cells in eager fp32 (its reference), eager fp16 (the recipe without
    compilation) and the fastest setting's flags."""
    flags = _flags(best) if best is not None else dict(precision="fp16")
    cells = best.cells if best is not None else "default"
    rows = [
        Setting("cifar10", cells, batch=b, steps=max(5, min(speed_steps, 10)), section="batch", **flags)
        for b in batches
        if best is None or b != best.batch
    ]
    m = functools.partial(Setting, "mnist", batch=MNIST_REFERENCE.batch, steps=speed_steps, section="mnist")
    rows += [m("naive", "fp32"), m("default", "fp16"), m(cells, **flags)]
    return unique(rows)


def remaining_settings(speed_steps: int) -> list[Setting]:
    """The other CIFAR-10 combinations at batch 32: every precision with and without
    channels_last for both cells, compiled without CUDA graphs, the naive cells compiled."""
    s = functools.partial(Setting, "cifar10", steps=speed_steps)
    rows = [s("default", "fp16", channels_last=True, compile="cells", cuda_graphs=True)]
    for cells in ("default", "naive"):
        for precision in ("fp32", "fp16", "bf16"):
            for channels_last in (False, True):
                rows.append(s(cells, precision, channels_last=channels_last))
    rows += [
        s("cpu-paths", "fp16"),
        s("default", "bf16", compile="cells"),
        s("default", "fp32", compile="cells"),
        s("naive", "fp16", compile="cells", cuda_graphs=True),
        s("default", "bf16", channels_last=True, compile="cells", cuda_graphs=True),
    ]
    return rows


def extra_settings(best: Setting | None, speed_steps: int) -> list[Setting]:
    """The fastest setting with NVAE's regularizers (spectral, BN weight penalty) and with
    cuDNN's autotuner; last, in whatever time is left, the whole model compiled (for a smaller
    model it had not finished in 9.5 minutes)."""
    flags = _flags(best) if best is not None else dict(precision="fp16")
    s = functools.partial(Setting, "cifar10", "default", steps=speed_steps, section="extra")
    return [
        s(regularizers=True, **flags),
        s(cudnn_benchmark=True, **flags),
        s("fp16", compile="model"),
    ]


def _flags(setting: Setting) -> dict[str, Any]:
    return dict(
        precision=setting.precision,
        channels_last=setting.channels_last,
        compile=setting.compile,
        cuda_graphs=setting.cuda_graphs,
    )


def unique(rows: list[Setting]) -> list[Setting]:
    """``rows`` without repeated names, in order."""
    seen, out = set(), []
    for row in rows:
        if row.name not in seen:
            seen.add(row.name)
            out.append(row)
    return out


# -- the budget ----------------------------------------------------------------------------------
class Budget:
    """Wall-clock seconds for the whole run, from its start; estimates what a setting needs
    from what was measured so far (:meth:`learn`), with cautious guesses before that."""

    # Guesses before anything is measured (seconds), on the cautious side: a step in eager mode
    # (an H100 took about 0.2 s for a CIFAR-sized NVAE of 10 groups and 32 channels; the official
    # one has 30 groups and 128 channels), building the model, one cold compilation of its
    # blocks. Each is replaced by the measured value as soon as there is one.
    GUESS_STEP_S = {"cifar10": 1.0, "mnist": 0.5}
    GUESS_BUILD_S = 15.0
    GUESS_COMPILE_S = 150.0
    MARGIN = 1.15  # estimates are stretched by this much before being compared with what is left
    OPEN_ENDED_MIN_S = 60.0

    def __init__(
        self,
        seconds: float,
        *,
        clock: Callable[[], float] = time.perf_counter,
        compile_guess_s: float | None = None,
    ) -> None:
        self.seconds = seconds
        if compile_guess_s is not None:
            self.GUESS_COMPILE_S = compile_guess_s
        self.clock = clock
        self.start = clock()
        self.step_s: dict[tuple, float] = {}
        self.build_s: dict[str, float] = {}
        self.compile_s: dict[tuple[str, str], float] = {}  # (model, compile mode)

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def learn(self, setting: Setting, row: dict[str, Any]) -> None:
        """Take a row's step time, build time and compile time as estimates; a compiled row
        that ran out of time gives its duration as the compile time (a lower bound)."""
        if row.get("ms_per_step"):
            self.step_s[_step_key(setting)] = row["ms_per_step"] / 1000
        if row.get("build_s") is not None:
            self.build_s[setting.model] = row["build_s"]
        seconds = row.get("compile_time_s")
        if setting.compile and row.get("status") == "timed out":
            seconds = row.get("elapsed_s")
        if setting.compile and seconds is not None:
            key = (setting.model, setting.compile)
            self.compile_s[key] = max(seconds, self.compile_s.get(key, 0.0))

    def step_estimate(self, setting: Setting) -> float:
        """Seconds per step: measured for this setting; else the slowest measured step of the
        same model and batch that is compiled and replayed alike (any cells, precision, memory
        format); else of the same model and batch; else of the same model at another batch,
        scaled up by the batch (not down: small batches are launch-bound); else the guess."""
        key = _step_key(setting)
        if key in self.step_s:
            return self.step_s[key]
        model, batch, how = setting.model, setting.batch, (setting.compile, setting.cuda_graphs)
        tiers = [
            lambda k: k[0] == model and k[-1] == batch and (k[4], k[5]) == how,
            lambda k: k[0] == model and k[-1] == batch,
            lambda k: k[0] == model,
        ]
        for matches in tiers:
            found = [(k[-1], v) for k, v in self.step_s.items() if matches(k)]
            if found:
                measured_batch, seconds = max(found, key=lambda kv: kv[1])
                return seconds * max(1.0, batch / measured_batch)
        return self.GUESS_STEP_S.get(model, 1.0) * max(1.0, batch / 32)

    def estimate(self, setting: Setting, steps: int | None = None) -> float:
        """Seconds ``setting`` needs for ``steps`` steps (default its own)."""
        steps = setting.steps if steps is None else steps
        seconds = self.build_s.get(setting.model, self.GUESS_BUILD_S)
        if setting.compile:
            seconds += self.compile_s.get((setting.model, setting.compile), self.GUESS_COMPILE_S)
        return (seconds + steps * self.step_estimate(setting)) * self.MARGIN

    def plan(self, setting: Setting, min_steps: int) -> tuple[int, str]:
        """How many steps to run (0: skip) and why, given what is left. A whole-model
        compilation has no estimate: it runs if a minute is left, until the budget ends."""
        left = self.left()
        if setting.compile == "model":
            if left < self.OPEN_ENDED_MIN_S:
                return 0, f"skipped: whole-model compilation, only {max(left, 0):.0f} s left"
            return min_steps, f"whole-model compilation, given the {left:.0f} s left"
        if self.estimate(setting) <= left:
            return setting.steps, ""
        if min_steps < setting.steps and self.estimate(setting, min_steps) <= left:
            return min_steps, (
                f"{min_steps} steps instead of {setting.steps}: {self.estimate(setting):.0f} s "
                f"estimated, {left:.0f} s left"
            )
        return 0, f"skipped: needs about {self.estimate(setting, min_steps):.0f} s, {max(left, 0):.0f} s left"


def _step_key(setting: Setting) -> tuple:
    return (
        setting.model,
        setting.cells,
        setting.precision,
        setting.channels_last,
        setting.compile,
        setting.cuda_graphs,
        setting.regularizers,
        setting.batch,
    )


class OutOfTime(Exception):
    """The budget ran out while a setting was running."""


@contextlib.contextmanager
def deadline(seconds: float, why: str = "the budget ran out") -> Iterator[None]:
    """Raise :class:`OutOfTime` in this (main) thread after ``seconds`` (SIGALRM, Unix)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise OutOfTime(f"stopped after {seconds:.0f} s: {why}")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def select(settings: list[Setting], patterns: list[str] | None) -> list[Setting]:
    """The settings whose name matches one of the glob ``patterns`` (all without any)."""
    if not patterns:
        return settings
    return [s for s in settings if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
