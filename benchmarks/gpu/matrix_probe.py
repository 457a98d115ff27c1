"""How fast the GPU matrix's runs train on one GPU, alone and several at once, and the plan that
follows: how many runs share the GPU (``launcher.runs_per_gpu``) and how many steps fit a time
budget. Three subcommands, used by ``benchmarks/gpu/smoke.sh`` and ``full.sh``:

    python -m benchmarks.gpu.matrix_probe steps --out probe_steps.json        # each run, alone
    python -m benchmarks.gpu.matrix_probe concurrency --out probe_concurrency.json
    python -m benchmarks.gpu.matrix_probe plan probe_steps.json probe_concurrency.json --target-s 270

``steps`` times the engine's own training step (``benchmarks.harness.engine_step``: autocast, the
objective, the regularizers, Adamax, the schedule) of seed 0 of each selected run of the
experiment file, after warm-up steps, on random binary images of the dataset's shape: the median
of the timed steps, per batch size. ``concurrency`` starts ``--workers`` processes (one CPU
thread each, as the launcher gives runs that share a GPU), each training one run, and lets
1, 2, 4 ... of them step at once in consecutive windows of ``--phase-s`` seconds, all processes
started and warmed up before the first window: the images/s of all processes together in each
window. ``plan`` chooses the number of runs at once with the shortest matrix, assuming every run
slows down as the probed one did, and the steps that end the matrix in ``--target-s``
(``--min-steps`` at least, where that fits ``--limit-s``), counting the final evaluations
(``--eval-passes``: on 2026-12-04, 15 runs evaluating K = 100 on 2,000 images at once did not
end within 75 s), and prints them as shell variables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import command_line, module_command

EXPERIMENT = "experiments/mnist_ablations.yaml"
RUNS = ["nvae", "standard_vae", "standard_cells", "plain_normal", "no_se"]


# -- building one run's training step ------------------------------------------------------------
def build_step(file: str, profile: str, run_name: str, overrides: list[str], batch: int, device: str):
    """``(step, images)``: the engine's training step of seed 0 of ``run_name`` and a batch of
    random binary images of its dataset's shape, on ``device``."""
    import torch

    from benchmarks.harness.engine_step import engine_step
    from genzoo.experiment.config.spec import load_experiment
    from genzoo.experiment.run.runner import build_dataset, build_model, build_regularizers, load_plugins
    from genzoo.plugin.discovery import get_host

    experiment = load_experiment(file, profile=profile, overrides=overrides)
    run = next(r for r in experiment.select([run_name]) if r.seed == experiment.seeds[0])
    host = get_host()
    load_plugins(experiment, host, [run])
    dataset = build_dataset(run.data.dataset, host, {})
    torch.manual_seed(run.seed)
    model = build_model(run, dataset, host).to(device)
    regularizers = build_regularizers(run, host)
    config = run.training.replace(device=device, batch_size=batch, checkpoint_every=0, progress_bar=False)
    step, _ = engine_step(model, config, torch.device(device), regularizers)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((batch, *dataset.image_shape), generator=generator).round().to(device)
    return step, images


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, images, warmup: int, steps: int, device: str) -> list[float]:
    """Seconds of each of ``steps`` timed steps after ``warmup`` untimed ones."""
    out = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step(images, i)
        _sync(device)
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


# -- steps -----------------------------------------------------------------------------------------
def cmd_steps(args: argparse.Namespace) -> int:
    import torch

    doc: dict[str, Any] = {"command": command_line(), "device": _device_name(args.device), "rows": []}
    for name in args.runs:
        for batch in args.batches:
            started = time.perf_counter()
            try:
                step, images = build_step(args.file, args.profile, name, args.set, batch, args.device)
                times = time_steps(step, images, args.warmup, args.steps, args.device)
                row = {"run": name, "batch": batch, "ms_per_step": 1000 * statistics.median(times)}
                row["images_per_s"] = batch / (row["ms_per_step"] / 1000)
                if args.device.startswith("cuda"):
                    row["peak_alloc_mib"] = torch.cuda.max_memory_allocated() / 2**20
                    torch.cuda.reset_peak_memory_stats()
            except Exception as exc:  # noqa: BLE001 -- recorded; the other runs are still measured
                row = {"run": name, "batch": batch, "error": f"{type(exc).__name__}: {exc}"}
            row["seconds"] = time.perf_counter() - started
            doc["rows"].append(row)
            print(json.dumps(row), flush=True)
            _write(args.out, doc)
    return 0


# -- concurrency ---------------------------------------------------------------------------------
def cmd_concurrency(args: argparse.Namespace) -> int:
    """Start the workers, wait until all are warmed up, then give them one start time."""
    folder = Path(args.out).resolve().parent / f".{Path(args.out).stem}"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):
        stale.unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            module_command(__spec__.name, "worker", str(folder), str(i), *_worker_args(args)), env=env
        )
        for i in range(args.workers)
    ]
    deadline = time.time() + args.ready_timeout_s
    ready = []
    while time.time() < deadline and any(w.poll() is None for w in workers):
        ready = list(folder.glob("ready-*"))
        if len(ready) == args.workers:
            break
        time.sleep(0.2)
    started = len(ready)
    levels = [n for n in args.levels if n <= started]
    t0 = time.time() + 0.5
    (folder / "go.json").write_text(json.dumps({"t0": t0, "levels": levels, "phase_s": args.phase_s}))
    for w in workers:
        try:
            w.wait(timeout=max(1.0, t0 + len(levels) * args.phase_s + 30 - time.time()))
        except subprocess.TimeoutExpired:
            w.kill()
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("steps-*.json"))]
    doc = {
        "command": command_line(),
        "device": _device_name(args.device),
        "run": args.run,
        "batch": args.batch,
        "workers_started": started,
        "phase_s": args.phase_s,
        "levels": concurrency_table(records, levels, t0, args.phase_s, args.batch, args.skip_s),
    }
    _write(args.out, doc)
    print(json.dumps(doc["levels"], indent=1), flush=True)
    return 0 if levels else 1


def _worker_args(args: argparse.Namespace) -> list[str]:
    out = ["--file", args.file, "--profile", args.profile, "--run", args.run, "--batch", str(args.batch)]
    out += ["--device", args.device, "--warmup", str(args.warmup)]
    for item in args.set:
        out += ["--set", item]
    return out


def concurrency_table(
    records: list[dict[str, Any]], levels: list[int], t0: float, phase_s: float, batch: int, skip_s: float
) -> list[dict[str, Any]]:
    """Per window: how many processes stepped, the images/s of all together (steps that ended
    in the window after its first ``skip_s`` seconds) and each process's median step time."""
    table = []
    for k, level in enumerate(levels):
        start, end = t0 + k * phase_s + skip_s, t0 + (k + 1) * phase_s
        ends = [t for r in records for t in r["ends"] if start <= t < end]
        durations = [d for r in records for t, d in zip(r["ends"], r["durations"]) if start <= t < end]
        table.append(
            {
                "runs_at_once": level,
                "steps": len(ends),
                "images_per_s": len(ends) * batch / (end - start),
                "ms_per_step_median": 1000 * statistics.median(durations) if durations else None,
            }
        )
    return table


def cmd_worker(args: argparse.Namespace) -> int:
    step, images = build_step(args.file, args.profile, args.run, args.set, args.batch, args.device)
    time_steps(step, images, args.warmup, 1, args.device)
    folder = Path(args.folder)
    (folder / f"ready-{args.index}").write_text(str(os.getpid()))
    go = folder / "go.json"
    while not go.exists():
        time.sleep(0.05)
    plan = json.loads(go.read_text())
    ends, durations = [], []
    i = 0
    for k, level in enumerate(plan["levels"]):
        phase_end = plan["t0"] + (k + 1) * plan["phase_s"]
        if args.index >= level:
            time.sleep(max(0.0, phase_end - time.time()))
            continue
        time.sleep(max(0.0, plan["t0"] + k * plan["phase_s"] - time.time()))
        while time.time() < phase_end:
            t0 = time.perf_counter()
            step(images, i)
            _sync(args.device)
            durations.append(time.perf_counter() - t0)
            ends.append(time.time())
            i += 1
    (folder / f"steps-{args.index}.json").write_text(json.dumps({"ends": ends, "durations": durations}))
    return 0


# -- plan ------------------------------------------------------------------------------------------
def makespan(per_run_s: list[float], slots: int) -> float:
    """Seconds until the last of the runs ends when the launcher deals them round-robin to
    ``slots`` slots that each train their runs one after another (``launcher.LocalBackend``)."""
    loads = [0.0] * slots
    for i, seconds in enumerate(per_run_s):
        loads[i % slots] += seconds
    return max(loads)


def plan(
    steps_doc: dict[str, Any],
    concurrency_doc: dict[str, Any] | None,
    *,
    runs: list[str],
    seeds: int,
    batch: int,
    target_s: float,
    limit_s: float,
    min_steps: int,
    overhead_s: float,
    eval_passes: int = 0,
    round_to: int = 50,
) -> dict[str, Any]:
    """The runs at once and the steps for the matrix of ``runs`` x ``seeds`` (see the module
    doc). A run at ``n`` at once steps ``slowdown(n)`` times slower than alone, ``slowdown`` as
    measured for the probed run (1 at n = 1; the largest level probed beyond that)."""
    solo = {
        r["run"]: r["ms_per_step"] / 1000
        for r in steps_doc["rows"]
        if r.get("batch") == batch and "ms_per_step" in r
    }
    missing = [r for r in runs if r not in solo]
    if missing:
        raise SystemExit(f"plan: no step time at batch {batch} for {', '.join(missing)} in the step probe")
    slowdown = {1: 1.0}
    if concurrency_doc:
        probed = concurrency_doc["run"]
        base_rate = batch / solo[probed]
        for level in concurrency_doc["levels"]:
            if level["images_per_s"] > 0:
                per_run_rate = level["images_per_s"] / level["runs_at_once"]
                slowdown[level["runs_at_once"]] = max(1.0, base_rate / per_run_rate)
    total = len(runs) * seeds
    per_step = {}  # makespan per training step, by runs at once
    for n, factor in slowdown.items():
        per_run = [solo[r] * factor for r in runs for _ in range(seeds)]
        per_step[n] = makespan(per_run, min(n, total))
    best = min(per_step, key=per_step.get)
    # The final evaluations: ``eval_passes`` forward passes of one image per run (K x held-out
    # images), all runs' together at the GPU's training rate with these runs at once, a forward
    # pass taken as a third of a training step's work (forward + backward).
    rate = total * batch / per_step[best]  # training images/s of all runs together
    eval_s = total * eval_passes / (3 * rate)
    overhead_s = overhead_s + eval_s
    fits = int((target_s - overhead_s) / per_step[best])
    steps = max(round_to, fits // round_to * round_to)
    note = f"{steps} steps end the matrix in about {target_s:.0f} s"
    if steps < min_steps:
        if overhead_s + min_steps * per_step[best] <= limit_s:
            steps, note = min_steps, f"the minimum {min_steps} steps, within the {limit_s:.0f} s limit"
        else:
            most = max(round_to, int((limit_s - overhead_s) / per_step[best]) // round_to * round_to)
            note = f"only {most} of the {min_steps} steps asked for fit the {limit_s:.0f} s limit"
            steps = most
    return {
        "runs_per_gpu": best,
        "steps": steps,
        "images_per_run": steps * batch,
        "estimated_s": overhead_s + steps * per_step[best],
        "final_evaluation_s": eval_s,
        "note": note,
        "solo_s_per_step": solo,
        "slowdown": slowdown,
        "makespan_s_per_step": per_step,
    }


def cmd_plan(args: argparse.Namespace) -> int:
    steps_doc = json.loads(Path(args.steps_json).read_text())
    concurrency_doc = json.loads(Path(args.concurrency_json).read_text()) if args.concurrency_json else None
    result = plan(
        steps_doc,
        concurrency_doc,
        runs=args.runs,
        seeds=args.seeds,
        batch=args.batch,
        target_s=args.target_s,
        limit_s=args.limit_s,
        min_steps=args.min_steps,
        overhead_s=args.overhead_s,
        eval_passes=args.eval_passes,
    )
    if args.out:
        _write(args.out, {"command": command_line(), **result})
    print(f"RUNS_PER_GPU={result['runs_per_gpu']}\nSTEPS={result['steps']}")
    print(f"# {result['note']}; estimated {result['estimated_s']:.0f} s", file=sys.stderr)
    return 0


# -- the command ---------------------------------------------------------------------------------
def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{device} (torch {torch.__version__})"


def _write(path: str, doc: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", default=EXPERIMENT, help=f"experiment file ({EXPERIMENT})")
    p.add_argument("--profile", default="gpu", help="its profile (gpu)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="as genzoo run --set")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu, for a dry run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("steps", help="each run's step time, alone")
    _common(p)
    p.add_argument("--runs", nargs="+", default=RUNS)
    p.add_argument("--batches", type=int, nargs="+", default=[256])
    p.add_argument("--steps", type=int, default=10, help="timed steps (10)")
    p.add_argument("--out", required=True)
    p = sub.add_parser("concurrency", help="images/s of 1, 2, 4 ... runs at once")
    _common(p)
    p.add_argument("--run", default="nvae")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=15)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 15])
    p.add_argument("--phase-s", type=float, default=4.0)
    p.add_argument("--skip-s", type=float, default=0.5, help="seconds of each window not counted (0.5)")
    p.add_argument("--ready-timeout-s", type=float, default=60.0)
    p.add_argument("--out", required=True)
    p = sub.add_parser("worker", help=argparse.SUPPRESS)
    p.add_argument("folder")
    p.add_argument("index", type=int)
    _common(p)
    p.add_argument("--run", default="nvae")
    p.add_argument("--batch", type=int, default=256)
    p = sub.add_parser("plan", help="runs at once and steps for the matrix")
    p.add_argument("steps_json")
    p.add_argument("concurrency_json", nargs="?")
    p.add_argument("--runs", nargs="+", default=RUNS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--target-s", type=float, default=270.0, help="the matrix's wall time to aim at (270)")
    p.add_argument("--limit-s", type=float, default=330.0, help="never plan beyond this (330)")
    p.add_argument(
        "--min-steps", type=int, default=2500, help="steps wanted at least (2500: 50x 12,800 images)"
    )
    p.add_argument(
        "--overhead-s", type=float, default=60.0, help="start-up and evaluations while training (60)"
    )
    p.add_argument(
        "--eval-passes",
        type=int,
        default=0,
        help="forward passes of one image in each run's final evaluation: K x held-out images (0)",
    )
    p.add_argument("--out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return {"steps": cmd_steps, "concurrency": cmd_concurrency, "worker": cmd_worker, "plan": cmd_plan}[
        args.command
    ](args)


if __name__ == "__main__":
    sys.exit(main())
