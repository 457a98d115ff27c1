"""Experiment files: how variants, ablations, profiles and --set overrides resolve into runs,
and how mistakes are reported (file, line, key path, what was expected)."""

from __future__ import annotations

import textwrap

import pytest

import genzoo
from genzoo.engine.config import TrainConfig
from genzoo.experiment.config.spec import load_experiment

BASE = """\
name: demo
seeds: [0, 1]
data:
  dataset: {key: data.shapes, image_size: 16}
training:
  steps: 100
  lr: 0.01
variants:
  vae:
    hierarchy: baselines.standard_vae
  nvae:
    hierarchy: {key: nvae.hierarchy, num_channels: 16}
    regularizers: {spectral: nvae.spectral_regularizer}
ablations:
  base: nvae
  swaps:
    no_se: {hierarchy.gate: baselines.none_gate}
    no_sr: {regularizers.spectral: baselines.none}
profiles:
  quick:
    training: {steps: 10}
    variants.nvae.hierarchy.num_channels: 8
"""


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_variants_and_ablations_expand_into_runs_per_seed(tmp_path):
    exp = load_experiment(write(tmp_path, BASE))
    assert [r.run_id for r in exp.runs] == [
        "vae/seed0", "vae/seed1", "nvae/seed0", "nvae/seed1",
        "no_se/seed0", "no_se/seed1", "no_sr/seed0", "no_sr/seed1",
    ]  # fmt: skip
    no_se = exp.runs[4]
    assert (no_se.group, no_se.base) == ("ablation", "nvae")
    assert no_se.hierarchy == genzoo.ComponentSpec(
        "nvae.hierarchy", {"num_channels": 16, "gate": "baselines.none_gate"}
    )
    assert exp.runs[6].regularizers["spectral"].key == "baselines.none"
    assert [r.training.seed for r in exp.runs[:2]] == [0, 1], "each run trains with its own seed"


def test_profile_then_overrides_apply_in_order(tmp_path):
    exp = load_experiment(write(tmp_path, BASE), profile="quick", overrides=["training.lr=2e-3", "seeds=[3]"])
    nvae = next(r for r in exp.runs if r.name == "nvae")
    assert nvae.training.steps == 10 and nvae.training.lr == 2e-3
    assert nvae.hierarchy.options["num_channels"] == 8
    assert {r.seed for r in exp.runs} == {3}


def test_grid_ablation_is_the_cartesian_product(tmp_path):
    text = BASE.replace(
        "profiles:",
        "  grid:\n    hierarchy.gate: [nvae.se, baselines.none_gate]\n"
        "    hierarchy.latent_group: [nvae.residual_normal, baselines.plain_normal]\nprofiles:",
    )
    exp = load_experiment(write(tmp_path, text), overrides=["seeds=[0]"])
    grid = [r for r in exp.runs if r.name.startswith("gate=")]
    assert len(grid) == 4
    assert {(r.hierarchy.options["gate"], r.hierarchy.options["latent_group"]) for r in grid} == {
        (g, l)
        for g in ("nvae.se", "baselines.none_gate")
        for l in ("nvae.residual_normal", "baselines.plain_normal")
    }


def test_fingerprint_changes_with_the_config(tmp_path):
    a = load_experiment(write(tmp_path, BASE)).runs[0]
    b = load_experiment(write(tmp_path, BASE), overrides=["training.lr=0.02"]).runs[0]
    assert a.fingerprint() == load_experiment(write(tmp_path, BASE)).runs[0].fingerprint()
    assert a.fingerprint() != b.fingerprint()


def test_a_setting_at_its_default_does_not_change_the_fingerprint(tmp_path):
    # A setting genzoo adds later arrives at its default: runs written before keep their
    # fingerprint and are not refused as changed (whether the file spells the default or not).
    a = load_experiment(write(tmp_path, BASE)).runs[0]
    spelled = load_experiment(write(tmp_path, BASE), overrides=["training.diverge_nelbo=null"]).runs[0]
    assert a.fingerprint() == spelled.fingerprint()
    assert "diverge_nelbo" in spelled.to_config()["training"]  # still recorded in config.yaml
    assert TrainConfig().changed() == {} and "diverge_nelbo" in TrainConfig(diverge_nelbo=1e5).changed()


@pytest.mark.parametrize(
    "old, new, match",
    [
        (
            "  lr: 0.01",
            "  lr: -0.01",
            r"exp.yaml:7:3: training.lr: TrainConfig.lr=-0.01; expected a finite number > 0",
        ),
        ("  lr: 0.01", "  lrr: 0.01", r"exp.yaml:7:3: training.lrr: unknown key 'lrr'; did you mean 'lr'\?"),
        ("  steps: 100", "  steps: many", r"exp.yaml:6:3: training.steps: expected int, got 'many'"),
        ("seeds: [0, 1]", "seeds: [0, 0]", r"exp.yaml:2:1: seeds: seeds repeat"),
        ("name: demo", "name: ../../etc", r"exp.yaml:1:1: name: invalid name '../../etc'"),
        ("  vae:", "  ../escape:", r"variants.../escape: invalid name"),
        (
            "  base: nvae",
            "  base: nvea",
            r"ablations.base: base 'nvea' is not a variant; known variants: nvae, vae",
        ),
        (
            "variants:",
            "variantz:",
            r"exp.yaml:8:1: variantz: unknown key 'variantz'; did you mean 'variants'\?",
        ),
        ("    no_se: {hierarchy.gate", "    no_se: {model.gate", r"cannot change 'model.gate'"),
    ],
)
def test_mistakes_name_the_file_line_and_key(tmp_path, old, new, match):
    assert old in BASE
    with pytest.raises(genzoo.ConfigError, match=match):
        load_experiment(write(tmp_path, BASE.replace(old, new, 1)))


def test_malformed_yaml_gives_line_and_column(tmp_path):
    with pytest.raises(
        genzoo.ConfigError, match=r"exp.yaml:7:5: malformed YAML: expected .,. or .\]., but got .:."
    ):
        load_experiment(write(tmp_path, BASE.replace("  steps: 100", "  steps: [100")))


def test_yaml_tags_never_construct_python_objects(tmp_path):
    evil = BASE.replace("  lr: 0.01", "  lr: !!python/object/apply:os.system ['echo pwned']")
    with pytest.raises(genzoo.ConfigError, match="malformed YAML: could not determine a constructor"):
        load_experiment(write(tmp_path, evil))


def test_override_and_profile_errors_point_at_their_origin(tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(genzoo.ConfigError, match=r"^--set training.lr=-1: training.lr: TrainConfig.lr=-1"):
        load_experiment(path, overrides=["training.lr=-1"])
    with pytest.raises(genzoo.ConfigError, match=r"unknown profile 'paper'; known profiles: quick"):
        load_experiment(path, profile="paper")
    with pytest.raises(genzoo.ConfigError, match=r"--set 'training.lr': expected PATH=VALUE"):
        load_experiment(path, overrides=["training.lr"])


def test_only_selects_runs_and_rejects_unknown_names(tmp_path):
    exp = load_experiment(write(tmp_path, BASE))
    assert {r.name for r in exp.select(["vae", "no_se"])} == {"vae", "no_se"}
    with pytest.raises(genzoo.ConfigError, match="--only nvea: no such variant or ablation"):
        exp.select(["nvea"])


DEEP = """\
name: demo
data:
  dataset: {key: data.shapes, image_size: 16}
training:
  steps: 100
  batch_size: 8
  lr: 0.01
variants:
  nvae:
    hierarchy: {key: nvae.hierarchy, num_channels: 16}
    training:
      steps: 10
      batch_size: 4
ablations:
  base: nvae
  swaps:
    no_se: {hierarchy.gate: baselines.none_gate}
profiles:
  quick:
    evaluation.batch_size: 8
"""


@pytest.mark.parametrize(
    "old, new, profile, match",
    [
        # the shared section's key, though the variant's own training block is merged over it
        ("  lr: 0.01", "  lrr: 0.01", None, r"/exp.yaml:7:3: training.lrr: unknown key 'lrr'"),
        (
            "      batch_size: 4",
            "      batch_sise: 4",
            None,
            r"/exp.yaml:13:7: variants.nvae.training.batch_sise",
        ),
        # a dotted key of a profile, and of an ablation's swap
        (
            "    evaluation.batch_size: 8",
            "    evaluation.batch_sise: 8",
            "quick",
            r"/exp.yaml:20:5 \(profile 'quick'\)",
        ),
        (
            "    evaluation.batch_size: 8",
            "    evaluatio.batch_size: 8",
            "quick",
            r"/exp.yaml:20:5: profiles.quick.evaluatio: unknown key 'evaluatio'",
        ),
        (
            "{hierarchy.gate: baselines.none_gate}",
            "{training.stepz: 3}",
            None,
            r"/exp.yaml:17:13: ablations.swaps",
        ),
    ],
)
def test_a_misspelt_key_deep_in_a_block_points_at_its_own_line(tmp_path, old, new, profile, match):
    assert old in DEEP
    with pytest.raises(genzoo.ConfigError, match=match):
        load_experiment(write(tmp_path, DEEP.replace(old, new, 1)), profile=profile)
