"""How many compilations ``training.compile: cells`` costs the official models: the repeated
blocks (cells and latent groups) against the graphs dynamo compiles for them in one training
step's forward pass, counted with dynamo's ``CompileCounter`` (it traces and counts, and runs the
traced graphs as they are: no code generation, so it is quick on a CPU). Instances of a block
class share a compilation per configuration and input layout, so the count stays small however
deep the model is. Prints Markdown.

    python -m benchmarks.model.count_compilations                 # CPU, batch 2
    python -m benchmarks.model.count_compilations --device cuda   # the layouts CUDA's defaults give
"""

from __future__ import annotations

import argparse
import time

import torch
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

from benchmarks.harness.measure import header, markdown_table
from benchmarks.harness.paper_models import build_model, cifar10, mnist, random_images
from genzoo.engine import compilation


def count(spec, device: torch.device, batch: int) -> list[object]:
    """``[model, params, blocks, compilations, graph breaks, seconds]`` for one forward pass."""
    torch._dynamo.reset()
    counters.clear()
    model = build_model(spec, "default", device).train()
    counter = CompileCounter()
    blocks = compilation.compile_blocks(model, backend=counter)
    x = random_images(spec, batch, device)
    start = time.perf_counter()
    model(x)  # with autograd on, as in training (the backward pass adds no dynamo graph here)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    breaks = sum(counters["graph_break"].values())
    return [spec.name, f"{params:,}", len(blocks), counter.frame_count, breaks, f"{seconds:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        header(
            f"Compilations of compile: cells ({device.type})",
            threads=torch.get_num_threads(),
            extra=f"batch {args.batch}; one forward pass in training mode; dynamo's CompileCounter",
        )
    )
    rows = [count(spec, device, args.batch) for spec in (cifar10(), mnist())]
    columns = ["model", "params", "blocks compiled", "compilations", "graph breaks", "s (tracing + pass)"]
    print(markdown_table(columns, rows))


if __name__ == "__main__":
    main()
