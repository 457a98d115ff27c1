"""GPU at paper scale (issue 17): NVAE's official CIFAR-10 model (``nvae.hierarchy`` defaults,
130,852,480 parameters) at batch 32, NVAE's per-GPU batch, in every setting a user can choose,
against the same model built from the naive cells (``genzoo_plugins.nvae.naive_cells``); then peak memory
against batch size for the fastest setting, the official MNIST model of experiments/mnist.yaml at
its per-GPU batch of 100, and the cost of NVAE's regularizers. One command, on one GPU:

    python -m benchmarks.gpu.bench_gpu_paper --budget-s 420       # writes $OUT (default ./out)
    python -m benchmarks.gpu.bench_gpu_paper --dry-run            # the plan, on any machine

Per setting: images/s (the median step after the warm-up steps), peak allocated memory (the
whole setting: model, optimizer state, gradients, activations, CUDA graph pools) and what the
step adds above the memory allocated before it, compile time (the first three steps' time beyond
three steady steps, as the engine's ``compile_time_s``), and whether every step's loss stayed
finite on random 8-bit images (steps the fp16 gradient scaler skips are counted apart). A step
is the engine's own training step (``genzoo.engine.step.TrainStep``: autocast, the objective,
the gradient scaler, the gradient norm, Adamax, the schedule) with the recipe of
experiments/nvae_vs_standard.yaml's ``paper`` profile; NVAE's regularizers only in the row that
says so.

Settings run one after another in this process, most important first (the reference and the
candidates for the targets, then the rest). Before each, the time it needs is estimated from what
was measured so far; what would not fit into ``--budget-s`` is skipped, or run with fewer steps,
and the tables say so. A setting that fails (out of memory, a compiler error) is recorded with its
error and the next one runs; one that outlives the budget is stopped and recorded as such. The
figures are written after every setting to ``bench_gpu_paper.json`` and ``bench_gpu_paper.md``.
Ratios are taken between rows of one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import genzoo
from benchmarks.gpu.paper_plan import (
    Budget,
    OutOfTime,
    Setting,
    core_settings,
    deadline,
    derived_settings,
    extra_settings,
    remaining_settings,
    select,
    unique,
)
from benchmarks.gpu.paper_report import best_setting, markdown, targets
from benchmarks.harness import command_line
from benchmarks.harness.engine_step import engine_step
from benchmarks.harness.paper_models import ModelSpec, build_model, cifar10, mnist, random_images
from genzoo.engine import compilation
from genzoo.io.atomic import atomic_write_text

MIB = 2**20
STEM = "bench_gpu_paper"


# -- one setting ---------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(setting: Setting, spec: ModelSpec, device: torch.device, steps: int) -> dict[str, Any]:
    """Run ``steps`` training steps of ``setting`` and return its figures (see the module doc)."""
    cuda = device.type == "cuda"
    if setting.compile:
        torch._dynamo.reset()
        _compile_counters()  # from zero
    torch.backends.cudnn.benchmark = setting.cudnn_benchmark
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        left_over = torch.cuda.memory_allocated(device)  # by earlier settings: should be ~0
    config = setting.train_config()
    started = time.perf_counter()
    model = build_model(spec, setting.cells, device)
    params = sum(p.numel() for p in model.parameters())
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    regularizers = []
    if setting.regularizers:
        regularizers = [genzoo.create("regularizer", key, **opts) for key, opts in spec.regularizers.items()]
    x = random_images(spec, setting.batch, device)
    if setting.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    step, blocks = engine_step(model, config, device, regularizers)
    _sync(device)
    build_s = time.perf_counter() - started

    clock = compilation.CompileClock()
    warmup = min(clock.warmup if setting.compile else 2, steps - 1)  # steps not timed
    times, losses, skipped = [], [], 0
    base = peak_before = 0
    try:
        for i in range(steps):
            if i == warmup and cuda:
                base = torch.cuda.memory_allocated(device)
                peak_before = torch.cuda.max_memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            metrics = step(x, i)
            _sync(device)
            seconds = time.perf_counter() - t0
            clock.record(seconds)
            times.append(seconds)
            losses.append(metrics["loss"])
            skipped += int(metrics["skipped"])
    finally:
        compilation.release(blocks)
    timed = times[warmup:]
    median = statistics.median(timed)
    row: dict[str, Any] = {
        "params": params,
        "build_s": build_s,
        "steps_run": len(times),
        "timed_steps": len(timed),
        "ms_per_step": 1000 * median,
        "images_per_s": setting.batch / median,
        "first_step_s": times[0],
        "compile_time_s": clock.seconds if setting.compile else None,
        "finite": all(math.isfinite(v) for v in losses),
        "nonfinite_steps": sum(not math.isfinite(v) for v in losses),
        "skipped_steps": skipped,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    if spec.params is not None and params != spec.params:
        row["note"] = f"{params:,} parameters, expected {spec.params:,}"
    if cuda:
        steady_peak = torch.cuda.max_memory_allocated(device)
        row["peak_alloc_mib"] = max(peak_before, steady_peak) / MIB
        row["step_peak_mib"] = (steady_peak - base) / MIB
        row["left_over_mib"] = left_over / MIB
    if setting.compile:
        row.update(_compile_counters())
    return row


def _compile_counters() -> dict[str, int]:
    """What dynamo and inductor did: graphs compiled, graph breaks, graphs run without CUDA
    graphs (``cudagraph_skips``), inductor cache hits."""
    from torch._dynamo.utils import counters

    out = {
        "graphs": int(counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "cudagraph_skips": int(counters["inductor"].get("cudagraph_skips", 0)),
        "fxgraph_cache_hits": int(counters["inductor"].get("fxgraph_cache_hit", 0)),
    }
    counters.clear()
    return out


def _cleanup(setting: Setting, device: torch.device) -> None:
    if setting.compile:
        torch._dynamo.reset()
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            from torch._inductor import cudagraph_trees

            cudagraph_trees.reset_cudagraph_trees()
        with contextlib.suppress(Exception):
            torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# -- the run -------------------------------------------------------------------------------------
class Run:
    """The settings measured so far and the files they are written to."""

    def __init__(self, out_dir: Path, budget: Budget, args: dict[str, Any], device: str) -> None:
        self.out_dir = out_dir
        self.budget = budget
        self.rows: list[dict[str, Any]] = []
        self.meta = {
            "command": command_line(),
            "arguments": args,
            "device": device,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "tf32": {
                "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            },
        }

    def record(self, setting: Setting, row: dict[str, Any]) -> dict[str, Any]:
        row = {"name": setting.name, "setting": dataclasses.asdict(setting), "label": setting.label, **row}
        self.rows.append(row)
        self.write()
        return row

    def write(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        best = best_setting(self.rows)
        doc = {
            **self.meta,
            "elapsed_s": self.budget.elapsed(),
            "best": best.name if best else None,
            "targets": targets(self.rows),
            "rows": self.rows,
        }
        atomic_write_text(self.out_dir / f"{STEM}.json", json.dumps(doc, indent=2, default=str) + "\n")
        atomic_write_text(self.out_dir / f"{STEM}.md", markdown(doc))


def run_setting(
    run: Run,
    setting: Setting,
    spec: ModelSpec,
    device: torch.device,
    *,
    args: argparse.Namespace,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure ``setting`` if the budget allows (for at most ``args.max_setting_s``), recording
    it whatever happens."""
    steps, why = run.budget.plan(setting, args.min_steps)
    if steps == 0:
        echo(f"[{run.budget.elapsed():5.0f} s] {setting.name}: {why}")
        return run.record(setting, {"status": "skipped", "reason": why})
    echo(f"[{run.budget.elapsed():5.0f} s] {setting.name}: {steps} steps ({setting.label}) ...")
    started = time.perf_counter()
    try:
        left = run.budget.left()
        cap = "the budget ran out" if left <= args.max_setting_s else "--max-setting-s"
        with deadline(min(left, args.max_setting_s), cap):
            row = {"status": "ok", **measure(setting, spec, device, steps)}
    except OutOfTime as exc:
        row = {"status": "timed out", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 -- recorded, and the next setting runs
        row = {
            "status": "failed",
            "reason": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    finally:
        _cleanup(setting, device)
    row["elapsed_s"] = time.perf_counter() - started
    if why:
        row["planned"] = why  # fewer steps than planned, to fit
    run.budget.learn(setting, row)
    if row["status"] == "ok":
        echo(
            f"[{run.budget.elapsed():5.0f} s]   {row['images_per_s']:.1f} images/s, "
            f"{row.get('peak_alloc_mib', float('nan')):.0f} MiB peak, "
            f"compile {row['compile_time_s'] or 0:.0f} s, finite {row['finite']}"
        )
    else:
        echo(f"[{run.budget.elapsed():5.0f} s]   {row['status']}: {row.get('reason', '')}")
    return run.record(setting, row)


def run_all(
    args: argparse.Namespace,
    device: torch.device,
    *,
    specs: dict[str, ModelSpec] | None = None,
    settings: list[Setting] | None = None,
    echo: Callable[[str], None] = print,
) -> Run:
    """Measure the core CIFAR-10 rows, the rows derived from the fastest of them, the other
    CIFAR-10 rows, then the extras (or only ``settings``); ``specs`` replaces the models
    (tests use tiny ones)."""
    specs = specs or {"cifar10": cifar10(), "mnist": mnist()}
    budget = Budget(args.budget_s, compile_guess_s=args.compile_guess_s)
    run = Run(Path(args.out), budget, vars(args), _device_name(device))

    def measure_all(rows: list[Setting]) -> None:
        for setting in select(unique(rows), args.only):
            if any(r["name"] == setting.name for r in run.rows):
                continue
            run_setting(run, setting, specs[setting.model], device, args=args, echo=echo)

    if settings is not None:
        measure_all(settings)
    else:
        measure_all(core_settings(args.steps, args.speed_steps))
        best = best_setting(run.rows)
        echo(f"[{budget.elapsed():5.0f} s] fastest finite setting so far: {best.name if best else 'none'}")
        derived = derived_settings(best, args.batches, args.speed_steps)
        measure_all(derived)
        # a compiled setting's memory at another batch compiles again: where that did not fit,
        # the same flags in eager mode give the memory without compilation
        skipped = {r["name"] for r in run.rows if r["status"] == "skipped"}
        measure_all(
            [
                dataclasses.replace(s, compile=False, cuda_graphs=False)
                for s in derived
                if s.section == "batch" and s.compile and s.name in skipped
            ]
        )
        measure_all(remaining_settings(args.speed_steps))
        measure_all(extra_settings(best_setting(run.rows), args.speed_steps))
    run.write()
    echo(
        f"[{budget.elapsed():5.0f} s] done: {run.out_dir / (STEM + '.json')}, {run.out_dir / (STEM + '.md')}"
    )
    return run


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        return f"{torch.cuda.get_device_name(device)} ({memory:.0f} GiB)"
    return f"{device} ({platform.processor() or platform.machine()})"


# -- the command ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="wall-clock seconds for the whole run (default 420)"
    )
    parser.add_argument(
        "--out", default=os.environ.get("OUT", "out"), help="output folder (default $OUT, else ./out)"
    )
    parser.add_argument(
        "--steps", type=int, default=100, help="steps of the compiled candidates: is their loss finite? (100)"
    )
    parser.add_argument("--speed-steps", type=int, default=20, help="steps of the other rows (20)")
    parser.add_argument("--min-steps", type=int, default=8, help="fewest steps a row is cut to, to fit (8)")
    parser.add_argument(
        "--compile-guess-s",
        type=float,
        default=Budget.GUESS_COMPILE_S,
        help=f"seconds one compilation is guessed to take until one is measured ({Budget.GUESS_COMPILE_S:.0f}); "
        "a lower guess lets a short budget try a compiled row, which is stopped when the budget ends",
    )
    parser.add_argument(
        "--max-setting-s",
        type=float,
        default=300.0,
        help="a setting still running after this is stopped (300)",
    )
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[8, 16, 32, 64], help="batch sizes of the memory rows"
    )
    parser.add_argument("--only", nargs="+", help="glob patterns of setting names to run (see --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (any machine)")
    args = parser.parse_args(argv)
    if (
        args.budget_s <= 0
        or args.steps < 1
        or args.speed_steps < 1
        or args.min_steps < 1
        or args.compile_guess_s <= 0
    ):
        parser.error("--budget-s, --steps, --speed-steps, --min-steps and --compile-guess-s must be positive")
    return args


def dry_run(args: argparse.Namespace) -> str:
    """The plan as text, in the order it runs, with the first estimates (they adapt)."""
    budget = Budget(args.budget_s, compile_guess_s=args.compile_guess_s)
    phases = [
        ("the core CIFAR-10 rows", core_settings(args.steps, args.speed_steps)),
        ("with the fastest finite setting's flags (fp16 eager stands in here)",
         derived_settings(None, args.batches, args.speed_steps)),
        ("the other CIFAR-10 rows", remaining_settings(args.speed_steps)),
        ("extras", extra_settings(None, args.speed_steps)),
    ]  # fmt: skip
    lines = [f"budget {args.budget_s:.0f} s; first estimates, before anything is measured:"]
    listed = set()
    for title, rows in phases:
        lines.append(f"{title}:")
        for setting in select(unique(rows), args.only):
            if setting.name in listed:
                continue
            listed.add(setting.name)
            estimate = "open-ended" if setting.compile == "model" else f"~{budget.estimate(setting):.0f} s"
            lines.append(f"  {setting.name:55s} {setting.steps:4d} steps  {estimate}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print(dry_run(args))
        return 0
    if not torch.cuda.is_available():
        print(
            "bench_gpu_paper.py needs a CUDA device and torch sees none; nothing was measured. "
            "(--dry-run prints the plan on any machine; benchmarks/model/bench_model.py measures the CPU.)",
            file=sys.stderr,
        )
        return 2
    print(f"bench_gpu_paper: {torch.cuda.get_device_name()}, torch {torch.__version__}, budget {args.budget_s:.0f} s, "
          f"writing to {args.out}", flush=True)  # fmt: skip
    run_all(args, torch.device("cuda"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
