"""GPU, model level: training images/s and peak memory of the quickstart NVAE and the
CIFAR-sized NVAE (bench_model.py's models) with bf16 autocast, channels_last and
``torch.compile``, each on and off, against fp32 eager, and the naive cells as a reference.
Prints Markdown tables (method: benchmarks/README.md).

    python -m benchmarks.gpu.bench_gpu
    python -m benchmarks.gpu.bench_gpu --models cifar --batches 16 128 --repeats 30

Timing: CUDA events around each step, after ``--warmup`` steps (which include the compilation);
the median of ``--repeats`` steps, variants measured one after another in one process. Peak
memory: ``torch.cuda.max_memory_allocated`` over the timed steps, minus the memory allocated
before them (model, optimizer state and gradients), so it is what the step adds.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from benchmarks.harness.measure import MIB, header, markdown_table
from benchmarks.harness.small_models import build, cifar_options, images, quickstart_options, training_step

MODELS = {
    "quickstart": lambda: quickstart_options()[0],
    "cifar": lambda: cifar_options(),
}
DEFAULT_BATCH = {"quickstart": quickstart_options()[1], "cifar": 16}
# (label, cells, bf16 autocast, channels_last, torch.compile)
VARIANTS = [
    ("naive cells, fp32", "naive cells (NCHW)", False, False, False),
    ("fp32 (reference)", "default", False, False, False),
    ("bf16", "default", True, False, False),
    ("channels_last", "default", False, True, False),
    ("compile", "default", False, False, True),
    ("bf16 + channels_last", "default", True, True, False),
    ("bf16 + channels_last + compile", "default", True, True, True),
]
REFERENCE = "fp32 (reference)"


def gpu_step(options: dict, cells: str, batch: int, bf16: bool, channels_last: bool, compile_: bool):
    """The model and its training step (models.training_step) on CUDA, with the given options."""
    model, _ = build(options, cells)
    model = model.cuda()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = images(batch, options["image_shape"]).cuda()
    return model, training_step(model, x, channels_last, bf16=bf16, compile=compile_)


def time_step(step: Callable[[], None], repeats: int, warmup: int) -> tuple[float, int]:
    """Median seconds per step and peak bytes the step adds."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times), torch.cuda.max_memory_allocated() - base


def measure(name: str, batch: int, args: argparse.Namespace) -> str:
    options = MODELS[name]()
    rows, seconds, peaks = [], {}, {}
    for label, cells, bf16, channels_last, compile_ in VARIANTS:
        if compile_ and args.no_compile:
            continue
        torch.manual_seed(0)
        torch._dynamo.reset()
        model, step = gpu_step(options, cells, batch, bf16, channels_last, compile_)
        seconds[label], peaks[label] = time_step(step, args.repeats, args.warmup)
        params = sum(p.numel() for p in model.parameters())
        del model, step
        torch.cuda.empty_cache()
        rows.append([label, f"{params:,}"])
    for row in rows:
        label = row[0]
        row += [
            f"{1000 * seconds[label]:.1f}",
            f"{batch / seconds[label]:,.0f}",
            f"{seconds[REFERENCE] / seconds[label]:.2f}x",
            f"{peaks[label] / MIB:.0f}",
            f"{peaks[label] / peaks[REFERENCE]:.2f}x",
        ]
    columns = ["variant", "params", "ms / step", "images/s", "speedup", "peak MiB", "vs fp32"]
    return f"**{name}, batch {batch}**\n\n" + markdown_table(columns, rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["quickstart", "cifar"])
    parser.add_argument("--batches", type=int, nargs="+", help="batch sizes (default: each model's own)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device; bench_model.py measures the CPU")
    torch.backends.cudnn.benchmark = True
    print(
        header(
            f"GPU model level: training step on {torch.cuda.get_device_name()}",
            threads=torch.get_num_threads(),
            extra=f"median of {args.repeats} steps after {args.warmup} warm-up (compilation included "
            "there); peak = max_memory_allocated during the timed steps minus memory allocated "
            "before them; speedup and memory relative to fp32 eager with the default cells",
        ).replace("dtype float32", "dtype float32 or bf16 autocast (per row)")
    )
    for name in args.models:
        for batch in args.batches or [DEFAULT_BATCH[name]]:
            print(measure(name, batch, args), flush=True)


if __name__ == "__main__":
    main()
