"""``experiment.json`` across invocations: a matrix run one variant or one seed at a time
(``--only``, ``--set seeds=[k]``) keeps every run an invocation asked for, lists no run that none
asked for, and remembers per run the command that asked for it (the model card's command)."""

from __future__ import annotations

import json
import shutil

from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.run.outputs import ExperimentDir, run_invocation
from genzoo.experiment.run.status import experiment_status

MATRIX = """\
name: matrix
seeds: [0, 1, 2]
data:
  dataset: {key: data.shapes, image_size: 16}
training:
  steps: 4
variants:
  wide:
    hierarchy: {key: baselines.standard_vae, num_channels: 8}
  narrow:
    hierarchy: {key: baselines.standard_vae, num_channels: 4}
profiles:
  short:
    training: {steps: 2}
"""


def ask(tmp_path, only, overrides, profile=None):
    """What ``genzoo run matrix.yaml --only ONLY --set OVERRIDES`` does to the folder first."""
    experiment = load_experiment(tmp_path / "matrix.yaml", profile=profile, overrides=overrides)
    exp_dir = ExperimentDir(tmp_path / "out", experiment)
    exp_dir.prepare(experiment.select(only))
    return exp_dir


def listed(exp_dir):
    return [s.run for s in experiment_status(exp_dir.root)]


def test_a_matrix_run_one_seed_at_a_time_keeps_every_run_and_each_ones_command(tmp_path):
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    ask(tmp_path, ["wide"], ["seeds=[0]"])
    ask(tmp_path, ["narrow"], ["seeds=[0]"], profile="short")
    exp_dir = ask(tmp_path, ["wide"], ["seeds=[1]"])
    # before: the last invocation's plan only, seed 1 of both variants (narrow/seed1 "pending"),
    # seed 0 forgotten
    assert listed(exp_dir) == ["wide/seed0", "narrow/seed0", "wide/seed1"]
    invocation = run_invocation(exp_dir.root / "runs" / "wide" / "seed0")
    assert invocation == {
        "name": "matrix",
        "file": str(tmp_path / "matrix.yaml"),
        "profile": None,
        "overrides": ["seeds=[0]"],
        "plugins": [],
    }
    assert run_invocation(exp_dir.root / "runs" / "narrow" / "seed0")["profile"] == "short"
    assert run_invocation(exp_dir.root / "runs" / "wide" / "seed1")["overrides"] == ["seeds=[1]"]
    manifest = json.loads(exp_dir.paths.manifest.read_text())
    assert manifest["overrides"] == ["seeds=[1]"]  # the top level stays the last invocation's

    # the same run asked again under another command: its entry is the new one's
    ask(tmp_path, ["wide"], ["seeds=[0]", "training.steps=3"])
    assert run_invocation(exp_dir.root / "runs" / "wide" / "seed0")["overrides"] == [
        "seeds=[0]",
        "training.steps=3",
    ]
    manifest = json.loads(exp_dir.paths.manifest.read_text())
    fingerprints = {r.run_id: r.fingerprint() for r in load_experiment(tmp_path / "matrix.yaml").runs}
    assert manifest["runs"]["wide/seed1"] == fingerprints["wide/seed1"]
    assert manifest["runs"]["wide/seed0"] != fingerprints["wide/seed0"]  # 3 steps, not 4


def test_a_run_folder_removed_by_hand_is_no_longer_listed(tmp_path):
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    ask(tmp_path, ["wide"], ["seeds=[0, 1]"])
    shutil.rmtree(tmp_path / "out" / "matrix" / "runs" / "wide" / "seed1")
    exp_dir = ask(tmp_path, ["narrow"], ["seeds=[2]"])
    assert listed(exp_dir) == ["wide/seed0", "narrow/seed2"]


def test_another_experiments_manifest_is_not_merged(tmp_path):
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    exp_dir = ask(tmp_path, ["wide"], ["seeds=[0]"])
    manifest = json.loads(exp_dir.paths.manifest.read_text())
    manifest["name"] = "another"
    exp_dir.paths.manifest.write_text(json.dumps(manifest))
    exp_dir = ask(tmp_path, ["narrow"], ["seeds=[0]"])
    assert listed(exp_dir) == ["narrow/seed0"]


def test_a_manifest_of_an_older_genzoo_gives_its_last_invocation(tmp_path):
    """Written before genzoo recorded invocations per run: every run, the top-level command."""
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    exp_dir = ask(tmp_path, ["wide"], ["seeds=[0]"])
    manifest = json.loads(exp_dir.paths.manifest.read_text())
    del manifest["invocations"]
    manifest["overrides"] = ["seeds=[2]"]
    exp_dir.paths.manifest.write_text(json.dumps(manifest))
    assert run_invocation(exp_dir.root / "runs" / "wide" / "seed0")["overrides"] == ["seeds=[2]"]
    exp_dir = ask(tmp_path, ["narrow"], ["seeds=[0]"])  # merged: the older run keeps the old one
    assert run_invocation(exp_dir.root / "runs" / "wide" / "seed0")["overrides"] == ["seeds=[2]"]
    assert run_invocation(exp_dir.root / "runs" / "narrow" / "seed0")["overrides"] == ["seeds=[0]"]
    assert listed(exp_dir) == ["wide/seed0", "narrow/seed0"]


def test_no_manifest_gives_no_invocation(tmp_path):
    run_dir = tmp_path / "out" / "matrix" / "runs" / "wide" / "seed0"
    run_dir.mkdir(parents=True)
    assert run_invocation(run_dir) is None
    (tmp_path / "out" / "matrix" / "experiment.json").write_text("[1, 2]")
    assert run_invocation(run_dir) is None
