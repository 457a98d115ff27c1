"""Rewrite experiment.json of the budget matrix as genzoo after 2026-12-06 writes it: every run
that has a folder (asked for by some invocation), each with the invocation that ran it. The
frozen commit 7376750 wrote the last invocation's plan only (all variants of one seed)."""

import json
import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1])  # OUT/mnist_ablations
manifest = json.loads((root / "experiment.json").read_text())
runs, invocations = {}, {}
for config in sorted(root.glob("runs/*/seed*/config.yaml")):
    run_dir = config.parent
    fingerprint = yaml.safe_load(config.read_text())["fingerprint"]
    run_id = f"{run_dir.parent.name}/{run_dir.name}"
    runs[run_id] = fingerprint
    invocations[run_id] = {
        "file": manifest["file"],
        "profile": "budget",
        "overrides": ["training.cpu_threads=1", f"seeds=[{run_dir.name.removeprefix('seed')}]"],
        "plugins": [],
    }
manifest.update(runs=runs, invocations=invocations)
(root / "experiment.json").write_text(json.dumps(manifest, indent=2) + "\n")
print(f"{len(runs)} runs: {', '.join(runs)}")
