"""What a new user meets first: a report of a folder still training names the runs it leaves
out, ``genzoo status`` says how old each step is, and ``genzoo list`` answers without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from plugin_fixtures import GATE_PLUGIN, make_distribution

from genzoo.cli import main
from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.report import render_report
from genzoo.experiment.run.locks import FileLock
from genzoo.experiment.run.outputs import ExperimentDir
from genzoo.experiment.run.status import RunStatus

MATRIX = """\
name: busy
seeds: [0, 1]
data:
  dataset: {key: data.shapes, image_size: 16}
training:
  steps: 400
variants:
  vae:
    hierarchy: baselines.standard_vae
"""


@pytest.fixture
def busy(tmp_path):
    """An experiment folder in the middle of training: vae/seed0 finished, vae/seed1 training
    (this process holds its lock; step 120 of 400 logged 14 s ago)."""
    (tmp_path / "busy.yaml").write_text(MATRIX)
    experiment = load_experiment(tmp_path / "busy.yaml")
    exp_dir = ExperimentDir(tmp_path / "out", experiment)
    exp_dir.prepare(experiment.runs)
    done, training = (exp_dir.run_paths(r) for r in experiment.runs)
    for paths in (done, training):
        paths.config.write_text("training: {steps: 400}\n")
    row = {"run": "vae", "seed": 0, "group": "variant", "base": None, "changes": {}, "status": "finished"}
    row.update(fingerprint=experiment.runs[0].fingerprint(), step=400, test_nats_iw=80.0, diverged=0)
    done.results.write_text(json.dumps(row))
    training.metrics.write_text(json.dumps({"kind": "train", "step": 120, "time": time.time() - 14}) + "\n")
    lock = FileLock(training.lock)
    lock.acquire()
    yield exp_dir.root
    lock.release()


def test_the_report_of_a_folder_still_training_names_the_runs_not_in_its_tables(busy):
    render_report(busy, title="busy")
    report = (busy / "report.md").read_text()
    assert "1 run(s) not in the tables yet: `vae/seed1` (running, step 120/400)." in report
    assert "| vae | 1 | finished |" in report


def test_status_says_when_each_step_was_read(busy, capsys):
    assert main(["status", str(busy)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "state", "step", "read", "job", "detail"]
    running = next(line for line in lines if line.startswith("vae/seed1"))
    assert running.split()[1:3] == ["running", "120/400"]
    assert " 14 s ago " in running or " 15 s ago " in running
    assert "s ago" in next(line for line in lines if line.startswith("vae/seed0"))  # results.json's time


def test_a_steps_age_reads_in_one_unit():
    read = RunStatus("nvae/seed0", "running", 120, 400, read_at=1000.0)
    assert [read.age(now=1000.0 + s) for s in (14, 150, 5 * 3600, 3 * 86400)] == [
        "14 s ago",
        "2 min ago",
        "5 h ago",
        "3 d ago",
    ]
    assert RunStatus("nvae/seed1", "pending").age() == "-"


LIST = "import sys; from genzoo.cli import main; main(['list']); print('torch' in sys.modules)"


def genzoo_list(home, pythonpath=None) -> tuple[list[str], bool]:
    """``genzoo list`` in a fresh interpreter with its own home (its own cache): the listing and
    whether torch was imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENZOO_")}
    env["HOME"] = str(home)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", LIST], cwd=home, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    *listing, torch_imported = done.stdout.splitlines()
    return listing, torch_imported == "True"


def test_list_reads_its_cached_listing_without_importing_torch_until_the_plugins_change(tmp_path):
    first, loaded_plugins = genzoo_list(tmp_path)
    assert loaded_plugins, "the first listing loads the plugins (and torch) and caches what they registered"
    again, imported = genzoo_list(tmp_path)
    assert (again, imported) == (first, False)
    assert any(line.split()[:3] == ["cell", "nvae.separable_cell", "nvae"] for line in again)

    site = make_distribution(
        tmp_path / "site", "genzoo-double", "0.3.1", {"double_plugin.py": GATE_PLUGIN.format(key="double.gate")},
        {"double": "double_plugin"},
    )  # fmt: skip
    listing, imported = genzoo_list(tmp_path, pythonpath=site)
    assert imported, "a newly installed plugin is loaded, not hidden behind the cached listing"
    assert any(line.split()[:3] == ["gate", "double.gate", "double"] for line in listing)
    assert genzoo_list(tmp_path, pythonpath=site) == (listing, False)
