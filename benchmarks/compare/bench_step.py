"""Whole NVAE training steps of two (or more) genzoo versions side by side: time per step, peak
memory, and the loss of the first step (same weights, data and noise in every version).

Each version runs in its own process (``step_worker.py``: the version's own trainer, data
pipeline, regularizers and optimizer); the processes take one step each in turn, alternating
the order every round, so that load from other processes falls on all of them alike. Versions
are commits (exported with ``git archive``) or folders (``.`` is this checkout, uncommitted
changes included), each optionally with environment variables for its process
(``TREE@NAME=VALUE[,NAME=VALUE]``, e.g. ``.@GENZOO_CPU_KERNELS=0``):

    python -m benchmarks.compare.bench_step                          # 7a9c47b against this checkout
    python -m benchmarks.compare.bench_step --trees 7a9c47b main --models mnist --steps 40
    python -m benchmarks.compare.bench_step --trees . .@GENZOO_CPU_KERNELS=0 --models cifar

Time: median over the timed rounds after the warm-up ones, of the wall time and of the CPU time
of all the process's threads (which other processes' load does not inflate as it does the wall
time; with several threads it includes the time OpenMP's threads spin waiting). Memory: ``peak alloc`` is the
highest sum of live tensor bytes during one step above those live at its start
(``torch.profiler``'s memory events); ``peak RSS`` the resident set's high-water mark during one
step (``VmHWM``, restarted at its start) and ``RSS after`` what the process holds after it, both
including glibc's free lists and everything else the process keeps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from benchmarks.harness import command_line
from benchmarks.harness.step_processes import MODELS, Worker, model_spec, resolve_tree

MIB = 2**20
TITLES = {
    "mnist": "NVAE of experiments/mnist.yaml, profile shared_test_split (batch 32, Bernoulli, spectral + BN regularization)",
    "cifar": "CIFAR-sized NVAE of bench_model.py (1 scale, 10 groups, 32 channels, batch 16, spectral + BN regularization)",
    "quickstart": "quickstart NVAE (experiments/quickstart.yaml, variant nvae, batch 16)",
}


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(name: str, trees: list, args: argparse.Namespace) -> str:
    spec = model_spec(name)
    workers = [Worker(path, spec, threads=args.threads, env=env) for path, _, env in trees]
    try:
        first = [w.ready() for w in workers]
        times: list[list[float]] = [[] for _ in workers]
        cpu: list[list[float]] = [[] for _ in workers]
        for r in range(args.warmup + args.steps):
            order = list(enumerate(workers))
            for i, worker in order if r % 2 == 0 else order[::-1]:
                time.sleep(args.gap)  # the other process's idle OpenMP threads stop spinning
                answer = worker.ask("step")
                if r >= args.warmup:
                    times[i].append(answer["seconds"])
                    cpu[i].append(answer["cpu"])
        memory = []
        for worker in workers:
            answers = [worker.ask("memory") for _ in range(args.memory_steps)]
            memory.append(
                {
                    "peak_alloc": max(a["peak_alloc"] for a in answers),
                    "peak_rss": max(a["peak_rss"] - a["rss_before"] for a in answers),
                    "rss_after": answers[-1]["rss_after"],
                }
            )
    finally:
        for worker in workers:
            worker.close()
    batch = spec["training"]["batch_size"]
    medians = [statistics.median(t) for t in times]
    cpu_medians = [statistics.median(c) for c in cpu]
    rows = []
    for (_, label, _), ready, median, cpu_median, mem, ts in zip(
        trees, first, medians, cpu_medians, memory, times
    ):
        spread = f"{1000 * min(ts):.0f}-{1000 * max(ts):.0f}"
        rows.append(
            f"| {label} | {1000 * median:.0f} | {spread} | {batch / median:.1f} | {medians[0] / median:.2f}x "
            f"| {1000 * cpu_median:.0f} | {cpu_medians[0] / cpu_median:.2f}x "
            f"| {mem['peak_alloc'] / MIB:.0f} | {mem['peak_alloc'] / memory[0]['peak_alloc']:.2f}x "
            f"| {mem['peak_rss'] / MIB:.0f} | {mem['rss_after'] / MIB:.0f} | {ready['loss']:.6f} |"
        )
    header = (
        "| version | ms / step | min-max | images/s | speedup | CPU ms / step | speedup | peak alloc MiB | vs first "
        "| peak RSS delta MiB | RSS after MiB | loss of step 1 |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    return f"**{TITLES[name]}**\n\n{header}\n" + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trees", nargs="+", default=["7a9c47b", "."], help="commits or folders (first: the reference)"
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["mnist", "cifar"])
    parser.add_argument(
        "--steps", type=int, default=30, help="timed rounds (one step of each version per round)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds after the first step")
    parser.add_argument("--memory-steps", type=int, default=2, help="profiled steps per version (max taken)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between two steps")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    args = parser.parse_args()
    trees = []
    for given in args.trees:
        tree, _, settings = given.partition("@")
        path, label = resolve_tree(tree)
        env = dict(item.split("=", 1) for item in settings.split(",")) if settings else {}
        trees.append((path, label + "".join(f", {k}={v}" for k, v in env.items()), env))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"### Whole training step, {len(trees)} versions side by side\n")
    print(f"- machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(
        f"- threads: {args.threads or 'torch default'}; {args.steps} timed rounds after {args.warmup} warm-up, alternating"
    )
    print(f"- command: `{command_line()}`")
    print(f"- load average at start: {load()}\n", flush=True)
    for name in args.models:
        table = measure(name, trees, args)
        print(table)
        print(f"(load average after: {load()})\n", flush=True)


if __name__ == "__main__":
    main()
