"""Two training processes at once: how much slower is each than when it runs alone?

Two workers (``step_worker.py``: whole training steps of the same model, each in its own
process with torch's default threads and sharing the cores as two ``genzoo run`` processes
would, ``genzoo.cpu_share``; ``--no-cpu-share`` shows what happens without it) run ``--steps``
steps each: the first alone, then both at the same time, then the second alone after the first
has ended. The slowdown of a worker is its median step time in the pair (over the steps
that ran while the other was running too) over its median alone. On a machine with as many
cores as one process has threads, sharing them costs 2x; more is lost to the processes getting
in each other's way.

    python benchmarks/bench_concurrent.py
    python benchmarks/bench_concurrent.py --model mnist --steps 30 --env GENZOO_CPU_KERNELS=0
    python benchmarks/bench_concurrent.py --tree 7a9c47b      # a commit, exported with git archive

Each ``--env`` setting (``NAME=VALUE[,NAME=VALUE]``, or ``default``) is measured in turn, in
fresh processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from step_runs import MODELS, Worker, model_spec, resolve_tree


def _durations(spans: list[list[float]], window: tuple[float, float] | None = None) -> list[float]:
    return [
        end - start for start, end in spans if window is None or (start >= window[0] and end <= window[1])
    ]


def solo_and_pair(
    tree,
    spec: dict,
    *,
    steps: int,
    warmup: int = 3,
    env: dict[str, str] | None = None,
    threads: int = 0,
    cpu_share: bool = True,
) -> dict[str, list[float]]:
    """Median step seconds of two workers, each alone (``solo``: A before B starts, B after A
    has ended) and together (``pair``: the steps that ran while the other ran too), and how many
    steps that was. ``cpu_share``: the workers share the cores as ``genzoo run`` does, in trees
    that can (``genzoo.cpu_share``)."""
    a = Worker(tree, spec, env=env, threads=threads, cpu_share=cpu_share)
    b = None
    try:
        a.ready()
        a.ask(f"run {warmup}")
        solo_a = statistics.median(_durations(a.ask(f"run {steps}")["spans"]))
        b = Worker(tree, spec, env=env, threads=threads, cpu_share=cpu_share)
        b.ready()
        for worker in (a, b):  # both take their share (genzoo.cpu_share checks every 2 s)
            worker.ask(f"run {warmup}")
        time.sleep(2.0)
        for worker in (a, b):
            worker.send(f"run {steps}")
        spans = [worker.receive()["spans"] for worker in (a, b)]
        a.close()
        time.sleep(2.0)
        b.ask(f"run {warmup}")  # B takes the cores back
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


def _env(setting: str) -> dict[str, str]:
    if setting == "default":
        return {}
    return dict(item.split("=", 1) for item in setting.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", default=".", help="a commit or folder (default: this checkout)")
    parser.add_argument("--model", choices=MODELS, default="quickstart")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="measure every setting this many times")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    parser.add_argument("--env", nargs="+", default=["default"], help="settings to compare (see above)")
    parser.add_argument(
        "--no-cpu-share", action="store_true", help="do not share the cores as `genzoo run` does (the defect)"
    )
    args = parser.parse_args()
    tree, label = resolve_tree(args.tree)
    spec = model_spec(args.model)
    print(f"### Two processes at once: {label}, model {args.model}\n")
    print(f"- command: `python benchmarks/bench_concurrent.py {' '.join(os.sys.argv[1:])}`")
    print(f"- {os.cpu_count()} logical CPUs; threads per process: {args.threads or 'torch default'}\n")
    print("| setting | alone ms / step | together ms / step | slowdown | load average before |")
    print("|---|---|---|---|---|")
    for _ in range(args.repeats):
        for setting in args.env:
            load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
            r = solo_and_pair(
                tree,
                spec,
                steps=args.steps,
                env=_env(setting),
                threads=args.threads,
                cpu_share=not args.no_cpu_share,
            )
            alone = " / ".join(f"{1000 * s:.0f}" for s in r["solo"])
            together = " / ".join(f"{1000 * p:.0f}" for p in r["pair"])
            slowdown = " / ".join(f"{p / s:.2f}x" for p, s in zip(r["pair"], r["solo"]))
            print(f"| {setting} | {alone} | {together} | {slowdown} | {load} |", flush=True)


if __name__ == "__main__":
    main()
