"""Model level: training images/s and peak memory of the quickstart NVAE and a CIFAR-sized NVAE
(one scale, 10 groups, 32 channels, batch 16), built from the naive cells and from the
package's cells (default, checkpointed, channels_last model). Prints Markdown tables (method:
benchmarks/README.md).

    python -m benchmarks.model.bench_model
    python -m benchmarks.model.bench_model --models cifar --repeats 10
"""

from __future__ import annotations

import argparse
import json
import subprocess

from benchmarks.harness import REPO, module_command
from benchmarks.harness.measure import (
    MIB,
    header,
    interleaved_times,
    markdown_table,
    peak_allocated_bytes,
    peak_rss_bytes,
    ratio,
    reset_peak_rss,
    rss_bytes,
    set_threads,
    without_cpu_kernels,
)
from benchmarks.harness.small_models import (
    KERNEL_OFF,
    VARIANTS,
    build,
    cifar_options,
    images,
    quickstart_options,
    training_step,
)

MODELS = {
    "quickstart": lambda: quickstart_options(),
    "cifar": lambda: (cifar_options(), 16),
}
TITLES = {
    "quickstart": "quickstart NVAE (experiments/quickstart.yaml, variant nvae)",
    "cifar": "CIFAR-sized NVAE (1 scale, 10 groups, 32 channels)",
}


def rss_child(model_name: str, variant: str, steps: int, threads: int) -> None:
    """Run in a fresh process: print the peak RSS growth over ``steps`` training steps after a
    first one."""
    set_threads(threads)
    options, batch = MODELS[model_name]()
    model, channels_last = build(options, variant)
    step = training_step(model, images(batch, options["image_shape"]), channels_last)
    if variant == KERNEL_OFF:
        step = without_cpu_kernels(step)
    step()
    reset_peak_rss()
    before = rss_bytes()
    for _ in range(steps):
        step()
    print(json.dumps({"rss_delta": peak_rss_bytes() - before}))


def rss_delta(model_name: str, variant: str, steps: int, threads: int) -> int:
    command = module_command(__spec__.name, "--child", model_name, variant, "--threads", str(threads))
    command += ["--rss-steps", str(steps)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])["rss_delta"]


def measure(model_name: str, args: argparse.Namespace) -> tuple[str, str]:
    options, batch = MODELS[model_name]()
    x = images(batch, options["image_shape"])
    steps, params = {}, {}
    for variant in VARIANTS:
        model, channels_last = build(options, variant)
        steps[variant] = training_step(model, x, channels_last)
        if variant == KERNEL_OFF:
            steps[variant] = without_cpu_kernels(steps[variant])
        params[variant] = sum(p.numel() for p in model.parameters())
    seconds = interleaved_times(steps, repeats=args.repeats, warmup=args.warmup)
    peaks = {variant: peak_allocated_bytes(step) for variant, step in steps.items()}
    rss = {variant: rss_delta(model_name, variant, args.rss_steps, args.threads) for variant in VARIANTS}
    base = VARIANTS[0]
    rows = [
        [
            variant,
            f"{params[variant]:,}",
            f"{1000 * seconds[variant]:.0f}",
            f"{batch / seconds[variant]:.1f}",
            f"{seconds[base] / seconds[variant]:.2f}x",
            f"{peaks[variant] / MIB:.0f}",
            ratio(peaks[variant], peaks[base]),
            f"{rss[variant] / MIB:.0f}",
            ratio(rss[variant], rss[base]),
        ]
        for variant in VARIANTS
    ]
    columns = ["model", "params", "ms / step", "images/s", "speedup", "peak alloc MiB", "vs naive"]
    columns += ["peak RSS delta MiB", "vs naive"]
    return f"**{TITLES[model_name]}, batch {batch}**\n", markdown_table(columns, rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["quickstart", "cifar"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rss-steps", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rss_child(*args.child, args.rss_steps, args.threads)
        return
    set_threads(args.threads)
    print(
        header(
            "Model level: training step",
            threads=args.threads,
            extra=f"median of {args.repeats} interleaved steps after {args.warmup} warm-up; peak RSS "
            f"delta over {args.rss_steps} steps in a fresh process; ratios relative to the naive cells",
        )
    )
    for name in args.models:
        title, table = measure(name, args)
        print(title)
        print(table, flush=True)


if __name__ == "__main__":
    main()
