"""Seed exercise 1 at the level of one cell: how many parameters does NVAE's depthwise-separable
decoder cell (Vahdat & Kautz 2020, Sec. 3.1.1, Fig. 3a) have, against a standard conv residual
cell, and what does one forward + backward pass cost?

Builds each cell from the registry (``resample="none"``, ``in_chs = out_chs = C``), counts
``sum(p.numel() for p in cell.parameters())`` at C = 32, 64, 128, 256, times a training-mode
forward + backward pass of each at one size (C = 64, 16 x 16, batch 32, 2 threads, the median of
``--repeats`` runs after warm-up), and writes the table, with the closed forms, to
``docs/param_counts.md``. Rerun from the repository root:

    python -m benchmarks.cells.param_counts              # counts and timings
    python -m benchmarks.cells.param_counts --repeats 50 # steadier timings

``tests/test_param_counts.py`` checks the counts against closed forms derived independently,
and that the counts in the committed document are the modules' counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import genzoo
from benchmarks.harness import REPO

WIDTHS = (32, 64, 128, 256)
DOC_PATH = REPO / "docs" / "param_counts.md"


@dataclass(frozen=True)
class Column:
    """One cell configuration of the table."""

    title: str
    key: str
    options: dict
    gate: str | None  # gate key, or None for no gate at all


COLUMNS = (
    Column("`nvae.separable_cell` E=6, SE", "nvae.separable_cell", {"expansion": 6}, "nvae.se"),
    Column("`baselines.conv_cell` SE", "baselines.conv_cell", {}, "nvae.se"),
    Column("`baselines.conv_cell` no gate", "baselines.conv_cell", {}, None),
    Column("`nvae.residual_cell` SE", "nvae.residual_cell", {}, "nvae.se"),
)
SEPARABLE, CONV_SE = COLUMNS[0], COLUMNS[1]  # the ratio column divides these two


@dataclass(frozen=True)
class TimingSetup:
    chs: int = 64
    size: int = 16
    batch: int = 32
    threads: int = 2
    warmup: int = 3
    repeats: int = 20


def gate_layer(key: str | None) -> Callable[[int], nn.Module] | None:
    """The ``gate_layer`` a cell takes for the gate ``key`` (``None``: no gate)."""
    if key is None:
        return None
    return lambda chs: genzoo.create("gate", key, chs=chs)


def build(column: Column, chs: int) -> nn.Module:
    """The cell of ``column`` with ``in_chs = out_chs = chs`` and no resampling."""
    return genzoo.create(
        "cell", column.key, in_chs=chs, out_chs=chs, gate_layer=gate_layer(column.gate), **column.options
    )


def count_parameters(column: Column, chs: int) -> int:
    return sum(p.numel() for p in build(column, chs).parameters())


def time_forward_backward(setup: TimingSetup) -> dict[str, dict[str, float]]:
    """Per column, the median wall-clock and CPU seconds (all threads of this process) of one
    training-mode forward + backward pass (parameter and input gradients), after
    ``setup.warmup`` untimed passes. The cells take turns, one pass each per round, so that a
    change in the machine's load affects them alike; the CPU time is the steadier of the two on
    a shared machine (it does not count the time spent waiting for a core)."""
    torch.manual_seed(0)
    cells = {c.title: build(c, setup.chs).train() for c in COLUMNS}
    x = torch.randn(setup.batch, setup.chs, setup.size, setup.size, requires_grad=True)
    grad = torch.randn(setup.batch, setup.chs, setup.size, setup.size)
    wall: dict[str, list[float]] = {title: [] for title in cells}
    cpu: dict[str, list[float]] = {title: [] for title in cells}
    for round_ in range(setup.warmup + setup.repeats):
        for title, cell in cells.items():
            cell.zero_grad(set_to_none=True)
            x.grad = None
            start, start_cpu = time.perf_counter(), time.process_time()
            cell(x).backward(grad)
            if round_ >= setup.warmup:
                wall[title].append(time.perf_counter() - start)
                cpu[title].append(time.process_time() - start_cpu)
    return {
        "wall": {title: statistics.median(t) for title, t in wall.items()},
        "cpu": {title: statistics.median(t) for title, t in cpu.items()},
    }


def machine() -> str:
    """CPU model, core count and torch version, for the timing label."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"


def table(counts: dict[tuple[str, int], int], timings: dict[str, float] | None, setup: TimingSetup) -> str:
    """The Markdown table: one row of parameter counts per width, then one row of timings."""
    lines = [
        "| C | " + " | ".join(c.title for c in COLUMNS) + " | separable / conv (SE) |",
        "|---:|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for chs in WIDTHS:
        row = [counts[c.title, chs] for c in COLUMNS]
        ratio = counts[SEPARABLE.title, chs] / counts[CONV_SE.title, chs]
        lines.append(f"| {chs} | " + " | ".join(f"{n:,}" for n in row) + f" | {ratio:.3f} |")
    if timings is not None:
        size = f"C={setup.chs}, {setup.size}x{setup.size}, batch {setup.batch}, {setup.threads} threads"
        for measure_, what in (("wall", "wall ms"), ("cpu", "CPU ms (all threads)")):
            t = timings[measure_]
            ratio = t[SEPARABLE.title] / t[CONV_SE.title]
            label = f"fwd+bwd {what}, {size}, median of {setup.repeats}"
            lines.append(
                f"| {label} | " + " | ".join(f"{1e3 * t[c.title]:.1f}" for c in COLUMNS) + f" | {ratio:.2f} |"
            )
    return "\n".join(lines)


def render(counts, timings, setup: TimingSetup, machine_label: str) -> str:
    """The whole of ``docs/param_counts.md``."""
    timing_note = (
        f"The last two rows time one training-mode forward + backward pass (input and parameter "
        f"gradients) at C = {setup.chs}, {setup.size} x {setup.size} pixels, batch {setup.batch}, "
        f"float32, `torch.set_num_threads({setup.threads})`: the median of {setup.repeats} runs "
        f"after {setup.warmup} warm-up runs, measured on {machine_label}. {speed_verdict(timings)} "
        "The CPU time counts the work of both threads and not the time spent waiting for a core, so "
        "it is the steadier measure where other processes share the machine (they did here); read "
        "ratios rather than absolute times."
        if timings is not None
        else "Timings were not measured in this run."
    )
    return DOC_TEMPLATE.format(
        table=table(counts, timings, setup), timing_note=textwrap.fill(timing_note, 100)
    )


def speed_verdict(timings: dict[str, dict[str, float]]) -> str:
    cpu = timings["cpu"]
    ratio = cpu[SEPARABLE.title] / cpu[CONV_SE.title]
    if ratio >= 1:
        return f"In CPU time per pass the separable cell is {ratio:.1f}x slower than the conv cell with SE."
    return f"In CPU time per pass the separable cell is {1 / ratio:.1f}x faster than the conv cell with SE."


DOC_TEMPLATE = """\
# Parameter counts of single cells (seed exercise 1)

<!-- Written by benchmarks/cells/param_counts.py; edit the script, not this file. -->

Does NVAE's depthwise-separable decoder cell save parameters against a standard conv cell, and
what does it cost in speed? Each cell below is built from the registry with `resample="none"`
and `in_chs = out_chs = C`, and its count is `sum(p.numel() for p in cell.parameters())`: conv
weights and biases, BatchNorm affine parameters (weight and bias) and the weight-norm log-norms;
BatchNorm running statistics are buffers and are not counted. Rerun from the repository root:

    python -m benchmarks.cells.param_counts

{table}

{timing_note}

## Closed forms

With `C` channels, `s = max(C // 16, 4)` hidden units in SE, and `k` the kernel size:

| part | parameters |
|---|---|
| SE gate (`nvae.se`): `Linear(C, s)` and `Linear(s, C)`, with biases | `2Cs + s + C` |
| `nvae.separable_cell`, expansion `E`, depthwise `k x k` (default 5) | `2E C^2 + (4 + 4E + k^2 E) C` (+ SE) |
| `baselines.conv_cell`, two `k x k` convs (default 3) | `2k^2 C^2 + 6C` (+ SE) |
| `nvae.residual_cell`, two weight-normalized `k x k` convs (default 3) | `2k^2 C^2 + 8C` (+ SE) |

Term by term:

- `nvae.separable_cell` (official `InvertedResidual`, whose convs have neither bias nor weight
  normalization because each is followed by a BatchNorm): BN(C) `2C`; 1x1 conv C -> EC `E C^2`;
  BN(EC) `2EC`; depthwise conv (`groups = EC`) `k^2 EC`; BN(EC) `2EC`; 1x1 conv EC -> C `E C^2`;
  BN(C) `2C`. With E = 6, k = 5 and SE: `12 C^2 + 179 C + 2Cs + s`.
- `baselines.conv_cell`: two BN(C) `4C`; two `k x k` convs with bias `2(k^2 C^2 + C)`. With k = 3
  and SE: `18 C^2 + 7 C + 2Cs + s`.
- `nvae.residual_cell`: as the conv cell, plus one weight-norm log-norm per output channel of
  each conv (`2C`). With k = 3 and SE: `18 C^2 + 9 C + 2Cs + s`.

So for large C the separable cell (E = 6) has 12/18 = 2/3 of the parameters of a standard
two-conv cell; at small C the `178 C` of its wide BatchNorms and depthwise kernels narrows the gap
(at C = 32 the two are within 4 %). The SE gate adds about `C^2 / 8` (`s = C / 16` once C >= 64),
small beside the convs. Post-process cells (E = 3) have `6 C^2 + 91 C` without the gate.

Parameters are not cost. The separable cell's hidden activations are 6C channels wide, so it
keeps far more activation memory for backward than the conv cell, and its BatchNorms, Swishes and
depthwise convolution are limited by memory traffic rather than arithmetic, so fewer parameters
need not mean a faster pass (the timing row).
`benchmarks/README.md` and the `train img/s` and peak-memory columns of
`experiments/exercise1_params.yaml` measure the same for whole models. Resampling cells add their
skip path (a factorized reduction or a bilinear x2 + 1x1 conv), which is not in this table.
"""


def measure(setup: TimingSetup, timed: bool) -> tuple[dict, dict | None]:
    counts = {(c.title, chs): count_parameters(c, chs) for c in COLUMNS for chs in WIDTHS}
    if not timed:
        return counts, None
    threads = torch.get_num_threads()
    torch.set_num_threads(setup.threads)
    try:
        timings = time_forward_backward(setup)
    finally:
        torch.set_num_threads(threads)
    return counts, timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=TimingSetup.repeats, help="timed runs per cell")
    parser.add_argument("--threads", type=int, default=TimingSetup.threads, help="torch threads while timing")
    parser.add_argument("--no-timing", action="store_true", help="counts only (the timing row is left out)")
    parser.add_argument("--output", type=Path, default=DOC_PATH, help="where to write the Markdown")
    args = parser.parse_args(argv)
    setup = TimingSetup(repeats=args.repeats, threads=args.threads)
    counts, timings = measure(setup, timed=not args.no_timing)
    text = render(counts, timings, setup, machine())
    args.output.write_text(text)
    print(table(counts, timings, setup))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
