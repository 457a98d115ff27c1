"""Training speed of an experiment's runs, timed interleaved in one process: what the speed
columns of a report cannot say when its runs shared the machine (issue 24).

Each named run of the experiment file (seed 0, the file's profile and ``--set`` overrides) is
built as ``genzoo run`` builds it (``runner.run_request``: dataset, model, regularizers, its
training settings) and handed to the engine's own ``Trainer``, whose training step (forward,
objective, regularizers, backward, optimizer, EMA) is then timed on one fixed batch of the run's
own data: one step of every run in turn, the order rotated each round, so that load from outside
falls on all of them alike. Reported per run: the median step time over the rounds after the
warm-up, images/s at that median, and against the first run the ratio of images/s with a 95%
interval (Student's t over the rounds' log ratios of paired steps, ``scipy.stats``).

    python -m benchmarks.model.bench_variants experiments/mnist_ablations.yaml \\
        --runs nvae standard_cells no_se plain_normal half_channels standard_vae
    python -m benchmarks.model.bench_variants experiments/exercise1_params.yaml --profile mnist \\
        --runs separable_c16 conv_c16 --rounds 20 --threads 1

Nothing is written but what the engine builds in a temporary folder; the runs' own seeds and
data make the batches, so two runs see the same images when their data settings agree.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch
from scipy import stats

from benchmarks.harness.measure import header, markdown_table, set_threads
from genzoo import get_host
from genzoo.engine.batches import batch_images
from genzoo.engine.distributed import init_distributed
from genzoo.engine.trainer import Trainer
from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.run.outputs import ExperimentDir
from genzoo.experiment.run.runner import load_plugins, run_request


def build_steps(args: argparse.Namespace, out: str) -> dict[str, tuple[object, torch.Tensor, int]]:
    """Per run name: (its Trainer, one batch of its training data, the batch size)."""
    # the runs' own thread setting would override --threads when the trainer sets up
    overrides = [*args.set, f"training.cpu_threads={args.threads}"]
    experiment = load_experiment(args.experiment, profile=args.profile, overrides=overrides)
    runs = {run.name: run for run in experiment.runs if run.seed == experiment.runs[0].seed}
    missing = [name for name in args.runs if name not in runs]
    if missing:
        raise SystemExit(f"{args.experiment}: no run named {', '.join(missing)}; runs: {', '.join(runs)}")
    host = get_host()
    load_plugins(experiment, host)
    folder, ctx, datasets = ExperimentDir(out, experiment), init_distributed("cpu"), {}
    steps = {}
    for name in args.runs:
        request = run_request(runs[name], folder.run_paths(runs[name]), host, datasets, ctx, device="cpu")
        trainer = Trainer.from_request(request)
        trainer._setup()  # what fit() does before its first step: device, optimizer, step, batches
        batch = batch_images(next(iter(trainer.batches.from_step(0)))).to(trainer.device)
        steps[name] = (trainer, batch, batch.shape[0])
    return steps


def interleaved(
    steps: dict[str, tuple[object, torch.Tensor, int]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds of each run's step, round by round (warm-up rounds dropped), the order rotated."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            trainer, batch, _ = steps[name]
            started = time.perf_counter()
            trainer.step(batch, index)
            times[name].append(time.perf_counter() - started)
    return {name: seconds[warmup:] for name, seconds in times.items()}


def ratio_interval(
    run: list[float], base: list[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """images/s of ``run`` over ``base``: the geometric mean of the rounds' ratios with its
    Student-t interval (on log ratios)."""
    logs = [math.log(b / r) for r, b in zip(run, base, strict=True)]
    mean = statistics.fmean(logs)
    half = stats.t.ppf((1 + confidence) / 2, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="an experiment file")
    parser.add_argument("--runs", nargs="+", required=True, help="run names; the first is the base")
    parser.add_argument("--profile")
    parser.add_argument("--set", action="append", default=[], help="an override, as genzoo run's --set")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (an interval needs two rounds)")
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        steps = build_steps(args, out)
        times = interleaved(steps, args.rounds, args.warmup)
    base = args.runs[0]
    rows = []
    for name in args.runs:
        median = statistics.median(times[name])
        images = steps[name][2]
        versus = "1 (base)"
        if name != base:
            ratio, low, high = ratio_interval(times[name], times[base])
            versus = f"{ratio:.2f}x [{low:.2f}, {high:.2f}]"
        rows.append([name, images, f"{median * 1000:.0f}", f"{images / median:.1f}", versus])
    extra = (
        f"seed 0 of each run, one fixed batch, {args.rounds} interleaved rounds after {args.warmup} warm-up"
    )
    print(
        header(f"Training speed of {args.experiment}'s runs, interleaved", threads=args.threads, extra=extra)
    )
    print(
        markdown_table(["run", "batch", "median ms / step", "images/s", f"images/s vs {base} (95% CI)"], rows)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
