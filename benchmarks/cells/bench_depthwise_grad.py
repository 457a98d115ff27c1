"""The depthwise convolution's weight gradient on its own: oneDNN's (what
``torch.ops.aten.convolution_backward`` runs on CPU, in NCHW and in channels_last) against
genzoo's compiled kernel (``genzoo.layers.cpu_kernels``), for the decoder cell's 5x5
depthwise convolution at 6x expansion. Prints a Markdown table (method: benchmarks/README.md).

    python -m benchmarks.cells.bench_depthwise_grad
    python -m benchmarks.cells.bench_depthwise_grad --channels 32 --resolutions 32 --repeats 20
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.harness.measure import header, interleaved_times, markdown_table, set_threads
from genzoo.layers import cpu_kernels


def onednn(x: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    chs, k = weight.shape[0], weight.shape[2]
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, [1, 1], [k // 2] * 2, [1, 1], False, [0, 0], chs, [False, True, False]
    )[1]


def measure(chs: int, size: int, batch: int, repeats: int, warmup: int) -> list[list[object]]:
    hidden = 6 * chs
    torch.manual_seed(0)
    nchw = torch.randn(batch, hidden, size, size)
    grad_nchw = torch.randn(batch, hidden, size, size)
    weight = torch.randn(hidden, 1, 5, 5)
    nhwc = nchw.contiguous(memory_format=torch.channels_last)
    grad_nhwc = grad_nchw.contiguous(memory_format=torch.channels_last)
    conv = ((1, 1), (2, 2), (1, 1), hidden)
    steps = {
        "oneDNN, NCHW": lambda: onednn(nchw, grad_nchw, weight),
        "oneDNN, channels_last": lambda: onednn(nhwc, grad_nhwc, weight),
        "genzoo kernel, channels_last": lambda: cpu_kernels.depthwise_weight_grad(
            nhwc, grad_nhwc, weight, *conv
        ),
    }
    seconds = interleaved_times(steps, repeats=repeats, warmup=warmup)
    base = seconds["oneDNN, channels_last"]
    label = f"C={chs} (x6 = {hidden}), {size}x{size}"
    return [[label, name, f"{1000 * t:.1f}", f"{base / t:.2f}x"] for name, t in seconds.items()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    if cpu_kernels.load() is None:
        raise SystemExit("genzoo's CPU kernel is not available here (see the warning above)")
    print(
        header(
            "Depthwise 5x5 weight gradient",
            threads=args.threads,
            extra=f"batch {args.batch}, median of {args.repeats} interleaved calls after {args.warmup} "
            "warm-up; speedup relative to oneDNN in channels_last",
        )
    )
    rows = []
    for size in args.resolutions:
        for chs in args.channels:
            rows += measure(chs, size, args.batch, args.repeats, args.warmup)
    print(markdown_table(["shape", "implementation", "ms", "speedup"], rows))


if __name__ == "__main__":
    main()
