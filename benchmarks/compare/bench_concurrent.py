"""Two training processes at once: how much slower is each than when it runs alone?

Two workers (``step_worker.py``: whole training steps of the same model, each in its own
process) run ``--steps`` steps each: the first alone, then both at the same time, then the
second alone after the first has ended. The slowdown of a worker is its median step time in the
pair (over the steps that ran while the other was running too) over its median alone. On a
machine with as many cores as one process has threads, sharing them costs 2x; more is lost to
the processes getting in each other's way (threads that spin while they wait for a descheduled
one).

Each process keeps its thread count for the whole run, as ``genzoo run`` does since
``training.cpu_threads`` (``--cpu-threads``; trees before it took torch's default, or shared
the cores with ``genzoo.cpu_share``'s old ``--cpu-share``). How the OpenMP runtime waits is
what an ``--env`` setting changes: torch's wheels ship GNU libgomp, which reads
``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` when torch is imported (``KMP_BLOCKTIME`` is
Intel's runtime's and is ignored).

    python -m benchmarks.compare.bench_concurrent
    python -m benchmarks.compare.bench_concurrent --env default OMP_WAIT_POLICY=PASSIVE --repeats 3
    python -m benchmarks.compare.bench_concurrent --model mnist --steps 30 --env GENZOO_CPU_KERNELS=0
    python -m benchmarks.compare.bench_concurrent --tree 7a9c47b      # a commit, exported with git archive

Each ``--env`` setting (``NAME=VALUE[,NAME=VALUE]``, or ``default``; ``second:NAME=VALUE`` sets
a variable for the second worker only) is measured in turn, in
fresh processes, the order rotated from one repeat to the next so that a burst of outside load
does not always fall on the same setting (each repeat's rows are printed when it ends). *vs first alone* divides a worker's time together by
its time alone under the first setting of the same repeat: what a setting costs two runs at
once against one run in the first setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.harness import command_line
from benchmarks.harness.step_processes import MODELS, Worker, model_spec, resolve_tree


def _durations(spans: list[list[float]], window: tuple[float, float] | None = None) -> list[float]:
    return [
        end - start for start, end in spans if window is None or (start >= window[0] and end <= window[1])
    ]


def alone(tree, spec: dict, *, steps: int, warmup: int = 3, env: dict[str, str] | None = None) -> float:
    """Median step seconds of one worker with the machine to itself."""
    worker = Worker(tree, spec, env=env)
    try:
        worker.ready()
        worker.ask(f"run {warmup}")
        return statistics.median(_durations(worker.ask(f"run {steps}")["spans"]))
    finally:
        worker.close()


def solo_and_pair(
    tree,
    spec: dict,
    *,
    steps: int,
    warmup: int = 3,
    env: dict[str, str] | None = None,
    second_env: dict[str, str] | None = None,
    threads: int = 0,
    cpu_share: bool = False,
) -> dict[str, list[float]]:
    """Median step seconds of two workers, each alone (``solo``: A before B starts, B after A
    has ended) and together (``pair``: the steps that ran while the other ran too), and how many
    steps that was. ``second_env``: added to B's environment only (a process started beside one
    that runs already). ``cpu_share``: the workers share the cores as ``genzoo run`` did before
    ``training.cpu_threads`` (in trees that have ``genzoo.cpu_share.CpuShare``)."""
    a = Worker(tree, spec, env=env, threads=threads, cpu_share=cpu_share)
    b = None
    try:
        a.ready()
        a.ask(f"run {warmup}")
        solo_a = statistics.median(_durations(a.ask(f"run {steps}")["spans"]))
        b = Worker(
            tree, spec, env={**(env or {}), **(second_env or {})}, threads=threads, cpu_share=cpu_share
        )
        b.ready()
        for worker in (a, b):
            worker.ask(f"run {warmup}")
        if cpu_share:
            time.sleep(2.0)  # both take their share (the old genzoo.cpu_share checked every 2 s)
        for worker in (a, b):
            worker.send(f"run {steps}")
        spans = [worker.receive()["spans"] for worker in (a, b)]
        a.close()
        if cpu_share:
            time.sleep(2.0)
        b.ask(f"run {warmup}")  # after A's end (and, with cpu_share, B takes the cores back)
        solo_b = statistics.median(_durations(b.ask(f"run {steps}")["spans"]))
    finally:
        for worker in (a, b):
            if worker is not None:
                worker.close()
    window = (max(s[0][0] for s in spans), min(s[-1][1] for s in spans))
    together = [_durations(s, window) for s in spans]
    if min(len(t) for t in together) < 3:  # one finished almost before the other began
        together = [_durations(s) for s in spans]
    return {
        "solo": [solo_a, solo_b],
        "pair": [statistics.median(t) for t in together],
        "overlap": [len(t) for t in together],
    }


def _env(setting: str) -> tuple[dict[str, str], dict[str, str]]:
    """Both workers' variables, and the second's only (``second:NAME=VALUE`` items)."""
    both, second = {}, {}
    for item in [] if setting == "default" else setting.split(","):
        target = second if item.startswith("second:") else both
        name, value = item.removeprefix("second:").split("=", 1)
        target[name] = value
    return both, second


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", default=".", help="a commit or folder (default: this checkout)")
    parser.add_argument("--model", choices=MODELS, default="quickstart")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="measure every setting this many times")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    parser.add_argument(
        "--cpu-threads", help="training.cpu_threads of both workers (trees that have it; default: auto)"
    )
    parser.add_argument("--env", nargs="+", default=["default"], help="settings to compare (see above)")
    parser.add_argument(
        "--cpu-share", action="store_true", help="share the cores as `genzoo run` did before cpu_threads"
    )
    args = parser.parse_args()
    tree, label = resolve_tree(args.tree)
    spec = model_spec(args.model)
    if args.cpu_threads is not None:
        value = args.cpu_threads
        spec["training"]["cpu_threads"] = int(value) if value.isdigit() else value
    threads = args.cpu_threads or args.threads or "torch default"
    print(f"### Two processes at once: {label}, model {args.model}\n")
    print(f"- command: `{command_line()}`")
    print(f"- {os.cpu_count()} logical CPUs; threads per process: {threads}\n")
    print(
        "| repeat | setting | alone ms / step | together ms / step | slowdown | vs first alone | load average before |"
    )
    print("|---|---|---|---|---|---|---|")
    for repeat in range(args.repeats):
        shift = repeat % len(args.env)
        rows = {}
        for setting in args.env[shift:] + args.env[:shift]:
            load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
            both, second = _env(setting)
            rows[setting] = (
                load,
                solo_and_pair(
                    tree,
                    spec,
                    steps=args.steps,
                    env=both,
                    second_env=second,
                    threads=args.threads,
                    cpu_share=args.cpu_share,
                ),
            )
        first = rows[args.env[0]][1]["solo"]
        for setting in args.env:
            load, r = rows[setting]
            alone = " / ".join(f"{1000 * s:.0f}" for s in r["solo"])
            together = " / ".join(f"{1000 * p:.0f}" for p in r["pair"])
            slowdown = " / ".join(f"{p / s:.2f}x" for p, s in zip(r["pair"], r["solo"]))
            against = " / ".join(f"{p / s:.2f}x" for p, s in zip(r["pair"], first))
            print(
                f"| {repeat + 1} | {setting} | {alone} | {together} | {slowdown} | {against} | {load} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
