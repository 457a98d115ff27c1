"""A whole NVAE training step of any genzoo source tree, in a process of its own, driven step by
step over stdin/stdout: the worker behind ``bench_step.py`` (two commits side by side) and
``bench_concurrent.py`` (two processes at once).

A step is what ``genzoo run`` does per batch: the data loader's batch (MNIST's dynamic
binarization included), forward, the objective with KL warm-up and balancing, the regularizers
(spectral and BatchNorm penalties), backward, the gradient norm, the Adamax update and the
learning-rate schedule: the tree's own ``genzoo.engine.train`` runs, and a stand-in plugin host
holds it at the end of every step (the ``genzoo_step_end`` hook) until the parent says go. The
step's time runs from the hook's return to its next call.

The process starts as ``genzoo run`` does on a CPU: with the tree's allocator settings
(``genzoo.allocator``) and, with ``--cpu-share``, its share of the cores (``genzoo.cpu_share``),
in trees that have them. The tree is imported through a folder of links (``genzoo`` -> TREE/genzoo, ``genzoo_plugins`` ->
TREE/plugins) put first on ``sys.path``, so two workers of two trees run two versions of the
package side by side, whatever is installed.

Protocol: the worker runs its first step (warm-up: kernel builds, allocator growth), prints
``@@ {"ready": ..., "loss": <loss of step 1>}`` and then answers each line on stdin with one
``@@ {json}`` line:

- ``step``: one timed step -> ``{"seconds", "cpu", "loss", "rss"}`` (``cpu``: the CPU seconds of
  all the process's threads, which time taken by other processes does not inflate; ``rss``: the
  resident set after the step);
- ``memory``: one step under ``torch.profiler`` (memory events) -> ``{"peak_alloc"}`` (bytes of
  live tensors above the step's start), and the resident set: ``{"rss_before", "peak_rss",
  "rss_after"}`` (``VmHWM`` restarted at the step's start, Linux);
- ``profile N``: one step under ``torch.profiler`` -> ``{"table", "self"}``, its N operators
  of most self time, and every operator's self seconds;
- ``run N``: N steps back to back -> ``{"spans": [[start, end], ...]}`` (``time.monotonic``, a
  clock shared by all processes);
- ``quit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "@@ "


def link_tree(root: Path) -> Path:
    """A temporary folder whose ``genzoo`` and ``genzoo_plugins`` link to ``root``'s."""
    folder = Path(tempfile.mkdtemp(prefix="genzoo-tree-"))
    (folder / "genzoo").symlink_to(root / "genzoo", target_is_directory=True)
    (folder / "genzoo_plugins").symlink_to(root / "plugins", target_is_directory=True)
    return folder


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def _send(message: dict) -> None:
    sys.__stdout__.write(PREFIX + json.dumps(message) + "\n")
    sys.__stdout__.flush()


class RandomImages:
    """``count`` random 8-bit images in [0, 1] (the step's cost does not depend on them)."""

    def __init__(self, count: int, shape: tuple[int, int, int], seed: int = 0) -> None:
        import torch

        generator = torch.Generator().manual_seed(seed)
        self.codes = torch.randint(0, 256, (count, *shape), generator=generator, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int):
        return self.codes[index].float() / 255


class StepGate:
    """The plugin host the trainer calls: holds the run at every step's end until told to go."""

    def __init__(self) -> None:
        self.started = None  # monotonic time the current step started (None: not timed)
        self.cpu_started = 0.0  # the process's CPU time then (all its threads)
        self.free_steps = 0  # steps left to run without asking
        self.spans: list[list[float]] = []
        self.profiler = None
        self.rss_before = 0
        self.ready = False
        self.share = None  # the tree's genzoo.cpu_share.CpuShare, with --cpu-share
        self.table = 0

    def call_hook(self, name: str, **kwargs):
        if name == "genzoo_step_end":
            self._step_end(kwargs["metrics"])
        return []

    def _step_end(self, metrics: dict) -> None:
        now = time.monotonic()
        if self.share is not None:
            self.share.genzoo_step_end(run=None, step=0, metrics=metrics)
        if self.free_steps:
            self.spans.append([self.started, now])
            self.free_steps -= 1
            if self.free_steps:
                self.started = time.monotonic()
                return
            _send({"spans": self.spans})
        elif self.profiler is not None and self.table:
            self.profiler.stop()
            averages = self.profiler.key_averages()
            totals = {e.key: e.self_cpu_time_total / 1e6 for e in averages}
            _send(
                {"table": averages.table(sort_by="self_cpu_time_total", row_limit=self.table), "self": totals}
            )
            self.profiler = None
        elif self.profiler is not None:
            self.profiler.stop()
            _send(
                {
                    "peak_alloc": _peak_alloc(self.profiler),
                    "rss_before": self.rss_before,
                    "peak_rss": _status("VmHWM"),
                    "rss_after": _status("VmRSS"),
                }
            )
            self.profiler = None
        elif self.ready:
            cpu = time.process_time() - self.cpu_started
            _send(
                {
                    "seconds": now - self.started,
                    "cpu": cpu,
                    "loss": float(metrics["loss"]),
                    "rss": _status("VmRSS"),
                }
            )
        else:
            self.ready = True
            _send({"ready": True, "loss": float(metrics["loss"]), "pid": os.getpid()})
        self._next_command()

    def _next_command(self) -> None:
        line = sys.stdin.readline().split()
        if not line or line[0] == "quit":
            os._exit(0)  # the run's remaining steps, checkpoint and report are of no interest
        if line[0] == "run":
            self.free_steps, self.spans = int(line[1]), []
        elif line[0] in ("memory", "profile"):
            from torch.profiler import ProfilerActivity, profile

            self.table = int(line[1]) if line[0] == "profile" else 0
            self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=not self.table)
            self.profiler.start()
            Path("/proc/self/clear_refs").write_text("5")
            self.rss_before = _status("VmRSS")
        elif line[0] != "step":
            raise SystemExit(f"step_worker: unknown command {line!r}")
        self.cpu_started = time.process_time()
        self.started = time.monotonic()


def _peak_alloc(prof) -> int:
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="the genzoo source tree to import")
    parser.add_argument("--spec", required=True, help="the model, data and training options (JSON)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    parser.add_argument("--cpu-share", action="store_true", help="share the cores as `genzoo run` does")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    sys.path.insert(0, str(link_tree(root)))
    import torch

    import genzoo

    if Path(genzoo.__file__).resolve().parent != root / "genzoo":
        raise SystemExit(f"step_worker: imported genzoo from {genzoo.__file__}, not from {root}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:  # what `genzoo run` does at start-up on CPU, in trees that do it (genzoo/machine/ since
        from genzoo.machine import allocator  # the package was regrouped by layer; genzoo/ before)
    except ImportError:
        try:
            from genzoo import allocator
        except ImportError:
            allocator = None
    if allocator is not None:
        allocator.configure()
    gate = StepGate()
    if args.cpu_share:
        try:
            from genzoo.cpu_share import CpuShare
        except ImportError:  # a tree without it
            CpuShare = None
        gate.share = CpuShare.start() if CpuShare is not None else None
    from genzoo.engine import TrainConfig, train
    from genzoo_plugins.nvae.bn_penalty import BatchNormPenalty
    from genzoo_plugins.nvae.hierarchy import NVAEHierarchy
    from genzoo_plugins.nvae.spectral import SpectralRegularizer

    spec = json.loads(args.spec)
    data = spec["data"]
    if data["kind"] == "random":
        train_data = RandomImages(data["count"], tuple(data["shape"]))
        image_shape = tuple(data["shape"])
    else:
        dataset = genzoo.create("dataset", data["key"], **data["options"])
        train_data, image_shape = dataset.split("train"), tuple(dataset.image_shape)
    torch.manual_seed(0)  # the same initial weights in every tree
    model = NVAEHierarchy(image_shape=image_shape, **spec["hierarchy"])
    regularizers = []
    for name, options in spec["regularizers"].items():
        cls = {"spectral": SpectralRegularizer, "bn": BatchNormPenalty}[name]
        regularizers.append(cls(**options))
    training = {
        **spec["training"],
        "device": "cpu",
        "precision": "fp32",
        "checkpoint_every": 0,
        "eval_every": 0,
        "log_every": 10**9,
        "progress_bar": False,
        "num_workers": 0,
    }
    out = tempfile.mkdtemp(prefix="genzoo-step-")
    train(model, train_data, None, TrainConfig(**training), out, regularizers=regularizers, host=gate)
    raise SystemExit("step_worker: the run ended before the parent said quit (raise training.steps)")


if __name__ == "__main__":
    main()
