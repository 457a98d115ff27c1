"""The importance-weighted NLL of trained runs with other K (NVAE's final figure uses
K = 1000), on the held-out images each run was scored on (the same per-seed draws:
``genzoo.engine.evaluator.held_out_batches``), with the run's own checkpoint, on a GPU or a CPU:

    python -m benchmarks.gpu.iw_nll RUN_DIR [RUN_DIR ...] --k 1000 --max-images 2000 --out iw.json
    python -m benchmarks.gpu.iw_nll RUN_DIR --k 10 100 1000 --max-images 200 --out nll_vs_k.json

Each run's figure is written as soon as it is measured; ``--deadline-s`` stops before a run
that would start after it (the others keep their figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from benchmarks.harness import command_line
from genzoo.engine import EvalConfig, evaluate
from genzoo.experiment.report.sampling import load_run_model
from genzoo.io.run_layout import RunPaths
from genzoo.plugin.component_spec import ComponentSpec
from genzoo.plugin.discovery import get_host


def held_out_split(run_dir: Path):
    """The test split of the run's dataset, as its ``config.yaml`` names it."""
    config = yaml.safe_load(RunPaths(run_dir).config.read_text())
    spec = ComponentSpec.parse(config["data"]["dataset"], where=f"{run_dir}: data.dataset")
    return spec.build("dataset", get_host().registry).split("test"), config


def measure(run_dir: Path, k: int, args: argparse.Namespace) -> dict:
    """One run's figures with ``k`` importance samples."""
    t0 = time.perf_counter()
    model = load_run_model(run_dir, args.device)
    test, config = held_out_split(run_dir)
    eval_config = EvalConfig(
        batch_size=config["evaluation"]["batch_size"],  # the run's own batches of held-out images
        iw_samples=k,
        iw_batch_size=args.iw_batch_size,
        max_images=args.max_images,
        num_samples=0,
        num_reconstructions=0,
        speed_batches=0,
    )
    scores = evaluate(model, test, eval_config, device=args.device, seed=int(config["seed"]))
    row = {"run_dir": str(run_dir), "run": config["name"], "seed": config["seed"], "k": k}
    row["seconds"] = time.perf_counter() - t0
    prefixes = ("test_nats", "test_bpd", "test_iw", "test_num")
    row.update({key: value for key, value in scores.items() if key.startswith(prefixes)})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="run folders (OUT/<experiment>/runs/<run>/seed<k>)")
    parser.add_argument(
        "--k", type=int, nargs="+", default=[1000], help="importance samples, one or more (1000)"
    )
    parser.add_argument("--max-images", type=int, default=None, help="first N held-out images (all)")
    parser.add_argument("--iw-batch-size", type=int, default=10000, help="images x samples per pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--deadline-s", type=float, default=None, help="start no run after this many seconds")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    doc = {"command": command_line(), "k": args.k, "runs": []}
    for run_dir in map(Path, args.runs):
        for k in args.k:
            if args.deadline_s is not None and time.perf_counter() - started > args.deadline_s:
                doc["runs"].append({"run_dir": str(run_dir), "k": k, "skipped": "deadline"})
                continue
            row = measure(run_dir, k, args)
            doc["runs"].append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
