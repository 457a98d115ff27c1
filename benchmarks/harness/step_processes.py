"""The parent's side of ``step_worker.py``: which source trees to run, the models' options, and
a handle on one worker process. Imports no genzoo (each worker imports its own tree's).

Models (the two of issue 15, and the quickstart's for quick checks):

- ``mnist``: the NVAE of ``experiments/mnist.yaml``'s ``shared_test_split`` profile (2 scales,
  4 + 2 groups, 16 channels, Bernoulli likelihood, spectral and BatchNorm regularization,
  batch 32) on the offline MNIST copy, dynamically binarized, with that profile's training
  options (learning-rate and KL warm-up, KL balancing);
- ``cifar``: the CIFAR-sized NVAE of ``bench_model.py`` (1 scale of 10 groups, 32 channels,
  one flow per group, 10 logistic mixtures) at batch 16 on random 8-bit images, with the same
  two regularizers at NVAE's coefficient 1e-2;
- ``quickstart``: the ``nvae`` variant of ``experiments/quickstart.yaml`` (batch 16) on random
  8-bit images.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness import REPO

WORKER = Path(__file__).resolve().parent / "step_worker.py"
PREFIX = "@@ "
REGULARIZER_NAMES = {"nvae.spectral_regularizer": "spectral", "nvae.bn_weight_penalty": "bn"}
TRAINING_FIELDS = ("steps", "batch_size", "lr", "lr_min", "lr_warmup_steps", "kl_anneal_portion")
MODELS = ("mnist", "cifar", "quickstart")


def _merge(base: Any, update: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(update, dict)):
        return update
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(base[key], value) if key in base else value
    return merged


def _variant(file: str, variant: str, profile: str | None) -> tuple[dict, dict, dict, dict]:
    """(hierarchy options, regularizers, data, training) of ``variant`` in ``experiments/file``."""
    doc = yaml.safe_load((REPO / "experiments" / file).read_text())
    body = doc["variants"][variant]
    data, training = doc["data"], doc["training"]
    if profile:
        over = doc["profiles"][profile]
        body = _merge(body, over.get("variants", {}).get(variant, {}))
        data, training = _merge(data, over.get("data", {})), _merge(training, over.get("training", {}))
    hierarchy = {k: v for k, v in body["hierarchy"].items() if k != "key"}
    regularizers = {
        REGULARIZER_NAMES[r["key"]]: {k: v for k, v in r.items() if k != "key"}
        for r in body.get("regularizers", {}).values()
    }
    training = {k: training[k] for k in TRAINING_FIELDS if k in training}
    return hierarchy, regularizers, data, training


def model_spec(name: str) -> dict[str, Any]:
    """What ``step_worker.py --spec`` builds for model ``name`` (see the module docstring)."""
    if name == "mnist":
        hierarchy, regularizers, data, training = _variant("mnist.yaml", "nvae", "shared_test_split")
        options = {k: v for k, v in data["dataset"].items() if k != "key"}
        options["root"] = str(
            (REPO / options["root"]).resolve()
        )  # relative to the repository, as `genzoo run`
        data = {"kind": "dataset", "key": data["dataset"]["key"], "options": options}
        return {"hierarchy": hierarchy, "regularizers": regularizers, "data": data, "training": training}
    nvae_regularizers = {"spectral": {"coeff": 1e-2}, "bn": {"coeff": 1e-2}}
    if name == "cifar":
        hierarchy = {"num_channels": 32, "num_latent_scales": 1, "num_groups_per_scale": 10}
        return {
            "hierarchy": hierarchy,
            "regularizers": nvae_regularizers,
            "data": {"kind": "random", "count": 512, "shape": [3, 32, 32]},
            "training": {"steps": 100_000, "batch_size": 16},
        }
    if name == "quickstart":
        hierarchy, regularizers, data, training = _variant("quickstart.yaml", "nvae", None)
        size, chs = data["dataset"]["image_size"], data["dataset"]["channels"]
        training["steps"] = 100_000
        return {
            "hierarchy": hierarchy,
            "regularizers": regularizers,
            "data": {"kind": "random", "count": 512, "shape": [chs, size, size]},
            "training": training,
        }
    raise ValueError(f"model {name!r}; expected one of {MODELS}")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def resolve_tree(what: str) -> tuple[Path, str]:
    """(source tree, label) for a folder (``.``: this checkout, uncommitted changes included) or a
    commit, which is exported once with ``git archive`` under the temporary folder."""
    if Path(what).is_dir():
        path = Path(what).resolve()
        try:
            head = subprocess.run(
                ["git", "-C", str(path), "log", "-1", "--format=%h %s"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.CalledProcessError):
            head, dirty = "", ""
        return path, f"{path.name} ({head[:60]}{', uncommitted changes' if dirty else ''})"
    sha = _git("rev-parse", "--verify", what + "^{commit}")
    label = f"{sha[:7]} ({_git('log', '-1', '--format=%s', sha)[:60]})"
    path = Path(tempfile.gettempdir()) / "genzoo-bench-trees" / sha
    if not (path / "genzoo").is_dir():
        path.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", sha], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
    return path, label


class Worker:
    """One ``step_worker.py`` process; ``ask(command)`` returns its JSON answer."""

    def __init__(
        self,
        tree: Path,
        spec: dict,
        *,
        threads: int = 0,
        env: dict[str, str] | None = None,
        cpu_share: bool = False,
    ) -> None:
        command = [sys.executable, str(WORKER), "--root", str(tree), "--spec", json.dumps(spec)]
        if threads:
            command += ["--threads", str(threads)]
        if cpu_share:
            command.append("--cpu-share")
        self.log = tempfile.NamedTemporaryFile("w+", prefix="genzoo-worker-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, **(env or {})}, cwd=str(tree),
        )  # fmt: skip
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)

    def ready(self, timeout: float = 900.0) -> dict:
        """Wait for the first step (which may build the CPU kernels) and return its answer."""
        return self.receive(timeout)

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = 600.0) -> dict:
        while True:
            if not self.selector.select(timeout):
                raise TimeoutError(
                    f"worker {self.process.pid} gave no answer in {timeout} s (log: {self.log.name})"
                )
            line = self.process.stdout.readline()
            if not line:
                self.log.seek(0)
                raise RuntimeError(f"worker {self.process.pid} ended:\n{self.log.read()[-3000:]}")
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX) :])

    def ask(self, command: str, timeout: float = 600.0) -> dict:
        self.send(command)
        return self.receive(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        if not self.log.closed:
            self.log.close()
            os.unlink(self.log.name)
