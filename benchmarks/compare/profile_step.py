"""Where the time of a whole NVAE training step goes, by kind of work, for one or more genzoo
versions (commits or folders, as ``bench_step.py``): ``torch.profiler``'s self time of every
operator over a few steps, summed into categories. Prints Markdown.

    python -m benchmarks.compare.profile_step --trees 7a9c47b . --models mnist --threads 1
"""

from __future__ import annotations

import argparse
import os

from benchmarks.harness import command_line
from benchmarks.harness.step_processes import MODELS, Worker, model_spec, resolve_tree

CATEGORIES = {
    "oneDNN convolutions (forward, backward)": ("aten::mkldnn_convolution", "aten::convolution_backward"),
    "BatchNorm (forward, backward)": ("aten::native_batch_norm", "aten::native_batch_norm_backward"),
    "Swish (forward, recomputed, backward)": ("aten::silu", "aten::silu_", "aten::silu_backward"),
    "ELU (forward, backward)": ("aten::elu", "aten::elu_backward", "_ELU", "_ELUBackward"),
    "matrix products (folded statistics, SE, spectral)": ("aten::mm", "aten::bmm", "aten::addmm"),
    "optimizer (Adamax)": ("Optimizer.step#Adamax.step", "aten::lerp_", "aten::maximum", "aten::addcdiv_"),
    "genzoo's fused steps (incl. its depthwise kernel)": (
        "_BNSwishConvBackward", "_ConvSwishConvBackward", "_BNSwishConv", "_ConvSwishConv",
    ),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trees", nargs="+", default=["7a9c47b", "."])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["mnist"])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 untimed)")
    args = parser.parse_args()
    trees = [resolve_tree(t) for t in args.trees]
    print(f"- command: `{command_line()}`")
    print(f"- load average at start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    for name in args.models:
        columns = []
        for path, label in trees:
            worker = Worker(path, model_spec(name), threads=args.threads)
            try:
                worker.ready()
                for _ in range(3):
                    worker.ask("step")
                totals: dict[str, float] = {}
                for _ in range(args.steps):
                    for op, seconds in worker.ask("profile 1")["self"].items():
                        totals[op] = totals.get(op, 0.0) + seconds / args.steps
            finally:
                worker.close()
            columns.append((label, totals))
        print(f"**{name}** (ms of self time per step; share of the step)\n")
        print("| kind | " + " | ".join(label for label, _ in columns) + " |")
        print("|---|" + "---|" * len(columns))
        rows = {}
        for _, totals in columns:
            whole = sum(totals.values())
            counted = 0.0
            for kind, ops in CATEGORIES.items():
                value = sum(totals.get(op, 0.0) for op in ops)
                counted += value
                rows.setdefault(kind, []).append(f"{1000 * value:.0f} ({value / whole:.0%})")
            rows.setdefault("everything else", []).append(
                f"{1000 * (whole - counted):.0f} ({(whole - counted) / whole:.0%})"
            )
            rows.setdefault("step (profiled)", []).append(f"{1000 * whole:.0f}")
        for kind, values in rows.items():
            print(f"| {kind} | " + " | ".join(values) + " |")
        print(flush=True)


if __name__ == "__main__":
    main()
