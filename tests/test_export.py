"""``genzoo export RUN_DIR OUT_DIR`` and ``genzoo.load_model(OUT_DIR)``: a trained run as a model
folder in the Hugging Face Hub's layout (safetensors, config.json, a model card), loaded back
from genzoo's registry without running any code from the folder. Offline: local folders only.

One tiny NVAE run (weight normalization, BatchNorm, squeeze-and-excitation, EMA) is trained for
the module, in this process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # never the Hub: read when huggingface_hub is first imported

import pytest
import torch
from safetensors.torch import load_file

import genzoo
from genzoo.cli import main
from genzoo.experiment.report.sampling import load_run_model
from genzoo.experiment.trained.export import (
    MissingPluginError,
    ModelFolderError,
    PretrainedHierarchy,
    load_model,
)
from genzoo.machine.software import describe

TINY_NVAE = """\
name: tinynvae
seeds: [1]
data:
  dataset: {key: data.shapes, image_size: 16, channels: 1, num_bits: 1, num_train: 32, num_test: 8}
training: {steps: 3, batch_size: 8, lr: 0.005, lr_warmup_steps: 1, ema_decay: 0.9, precision: fp32,
           progress_bar: false}
evaluation: {batch_size: 4, iw_samples: 2, temperatures: [0.8, 1.0], num_samples: 4, bn_readjust_iters: 2,
             bn_readjust_batch_size: 4, num_reconstructions: 0, speed_batches: 0}
variants:
  nvae:
    hierarchy: {key: nvae.hierarchy, num_channels: 8, num_latent_scales: 2, num_groups_per_scale: 2,
                latent_chs: 4, num_preprocess_cells: 1, num_postprocess_cells: 1,
                num_cells_per_group_enc: 1, num_cells_per_group_dec: 1}
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The Hub's client offline even when it was imported before this module set the variable."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny NVAE run (seed 1, EMA weights), trained once for the module."""
    root = tmp_path_factory.mktemp("export")
    (root / "tinynvae.yaml").write_text(TINY_NVAE)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert main(["run", str(root / "tinynvae.yaml"), "--out", str(root / "out")]) == 0
        yield root / "out" / "tinynvae" / "runs" / "nvae" / "seed1"
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """The run exported once for the module (``genzoo export``), and the run folder's files
    before it: ``(folder, digest)``."""
    before = folder_digest(run_dir)
    out = tmp_path_factory.mktemp("exported") / "tinynvae-model"
    assert main(["export", str(run_dir), str(out)]) == 0
    return out, before


def folder_digest(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_export_writes_the_hub_layout_and_leaves_the_run_alone(run_dir, exported):
    out, before = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "samples_t0.8.png",
        "samples_t1.png",
    ]
    assert folder_digest(run_dir) == before  # the run folder: not a byte changed, nothing added
    config = json.loads((out / "config.json").read_text())
    assert (config["format"], config["format_version"], config["genzoo_version"]) == (
        "genzoo.hierarchy",
        1,
        genzoo.__version__,
    )
    assert config["hierarchy"]["key"] == "nvae.hierarchy" and config["hierarchy"]["num_groups_per_scale"] == 2
    assert (config["image_shape"], config["num_bits"]) == ([1, 16, 16], 1)
    # every component the model is made of, those its defaults chose included, with its provider
    assert {
        "nvae.hierarchy",
        "nvae.residual_cell",
        "nvae.separable_cell",
        "nvae.se",
        "nvae.bernoulli",
    } <= set(config["components"])
    assert config["components"]["nvae.se"] == {
        "kind": "gate",
        "plugin": "nvae",
        "source": "built-in",
        "module": "genzoo_plugins.nvae",
        "distribution": "genzoo",
        "version": genzoo.__version__,
    }
    assert config["weights"]["kind"] == "ema" and config["weights"]["ema_decay"] == 0.9
    assert config["training"]["images_seen"] == 3 * 8 and config["training"]["status"] == "finished"


def test_the_model_card_has_the_results_budget_and_command(run_dir, exported):
    out, _ = exported
    card = (out / "README.md").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert card.startswith("---\nlibrary_name: genzoo\n")  # the Hub's metadata header
    assert "# nvae/seed1: `nvae.hierarchy` on `data.shapes`" in card
    row = next(line for line in card.splitlines() if line.startswith("| run's final evaluation"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["test", "3", "8", "2"]  # split, step, images, K
    assert cells[5:9] == [
        f"{results['test_nats_elbo']:.2f}",
        f"{results['test_bpd_elbo']:.4f}",
        f"{results['test_nats_iw']:.2f}",
        f"{results['test_bpd_iw']:.4f}",
    ]
    assert "budget: 24 training images seen (3 steps of 8 images per process)" in card
    yaml_file = run_dir.parents[4] / "tinynvae.yaml"
    assert f"trained with: `genzoo run {yaml_file} --only nvae`" in card
    assert f"- software: {describe(results['software'])}\n" in card
    assert f"trained with genzoo {genzoo.__version__} on `data.shapes`" in card
    assert 'genzoo.load_model("path/to/this/folder")' in card and "![samples_t1.png](samples_t1.png)" in card


def test_the_weights_are_the_runs_ema(run_dir, exported):
    """model.safetensors holds the EMA weights of the checkpoint (which the run's evaluation and
    samples use), read here straight from the checkpoint, not the optimizer's weights."""
    out, _ = exported
    saved = load_file(out / "model.safetensors")
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    assert set(saved) == set(ema) == set(state["model"])
    assert all(torch.equal(saved[k], ema[k]) for k in saved)
    assert not all(torch.equal(saved[k], state["model"][k]) for k in saved)


def test_load_model_gives_the_runs_outputs(run_dir, exported):
    """The round trip: the loaded model and the run's checkpoint model agree on a forward pass
    and on samples drawn with a fixed seed."""
    out, _ = exported
    loaded, reference = genzoo.load_model(out), load_run_model(run_dir)
    assert not loaded.training and type(loaded) is type(reference)
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)).round()
    outputs = []
    for model in (loaded, reference):
        torch.manual_seed(7)
        result = model(x)
        torch.manual_seed(8)
        outputs.append((result.elbo, result.log_weight, model.sample(4, temperature=0.8)))
    for a, b in zip(*outputs):
        assert torch.equal(a, b)


def test_from_pretrained_and_save_pretrained_write_the_same_folder(exported, tmp_path):
    """The folder is the Hub's: ModelHubMixin's from_pretrained reads it (offline), and
    save_pretrained writes the same config, card and weights again (push_to_hub writes through
    save_pretrained, so a pushed repository holds this folder)."""
    out, _ = exported
    pretrained = PretrainedHierarchy.from_pretrained(out)
    again = tmp_path / "again"
    pretrained.save_pretrained(again)
    assert sorted(p.name for p in again.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    for name in ("README.md", "config.json"):
        assert (again / name).read_text() == (out / name).read_text()
    first, second = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert set(first) == set(second) and all(torch.equal(first[k], second[k]) for k in first)


def test_genzoo_exports_load_model_lazily():
    assert "load_model" in genzoo.__all__ and genzoo.load_model is load_model


def test_export_refuses_a_folder_that_is_not_empty(run_dir, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), str(taken)]) == 2
    err = capsys.readouterr().err
    assert f"{taken}: exists and is not empty; genzoo export never overwrites" in err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(run_dir), str(empty), "--no-samples"]) == 0  # an empty folder is fine
    assert sorted(p.name for p in empty.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_export_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "model")]) == 2
    assert "not a trained run folder (expected config.yaml and checkpoint.pt)" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def damage(folder, case):
    """Change a copy of an exported folder as ``case`` says."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if case == "no config":
        config_path.unlink()
    elif case == "invalid json":
        config_path.write_text("{not json")
    elif case == "foreign":
        config_path.write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    elif case == "later format":
        config_path.write_text(json.dumps({**config, "format_version": 99}))
    elif case == "other model":
        config["hierarchy"]["num_channels"] = 16
        config_path.write_text(json.dumps(config))
    elif case == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:2000])
    elif case == "no weights":
        (folder / "model.safetensors").unlink()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no config", "not a genzoo model folder: no config.json"),
        ("invalid json", "config.json: unreadable, expected a JSON object"),
        ("foreign", "config.json: not a genzoo model config (format None; expected 'genzoo.hierarchy'"),
        ("later format", "format_version 99, written by genzoo"),
        ("other model", "model.safetensors: the weights do not fit the model"),
        ("truncated weights", "model.safetensors: the weights do not fit the model"),
        ("no weights", "no model.safetensors"),
    ],
)
def test_a_damaged_or_foreign_folder_is_named(exported, tmp_path, case, expected):
    folder = tmp_path / "model"
    shutil.copytree(exported[0], folder)
    damage(folder, case)
    with pytest.raises(ModelFolderError, match=None) as error:
        load_model(folder)
    assert expected in str(error.value)


def test_load_model_of_a_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="no such folder"):
        genzoo.load_model(tmp_path / "nowhere")


def test_a_missing_plugin_names_the_key_and_the_distribution_and_no_code_runs(exported, tmp_path):
    """Components of plugins that are not loaded are named with what provides them; the folder's
    own files (a plugin module beside config.json) are never imported."""
    folder = tmp_path / "model"
    shutil.copytree(exported[0], folder)
    (folder / "genzoo_folder_plugin.py").write_text("raise SystemExit('code from the model folder ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["components"]["faraway.cell"] = {
        "kind": "cell",
        "plugin": "faraway",
        "source": "installed",
        "module": "genzoo_faraway",
        "distribution": "genzoo-faraway",
        "version": "0.3.1",
    }
    config["components"]["local.gate"] = {
        "kind": "gate",
        "plugin": "genzoo_folder_plugin",
        "source": "experiment",
        "module": "genzoo_folder_plugin",
        "distribution": None,
        "version": None,
    }
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MissingPluginError) as error:
        load_model(folder)
    message = str(error.value)
    assert "'faraway.cell' (cell) from plugin 'faraway' of the distribution genzoo-faraway" in message
    assert "pip install 'genzoo-faraway==0.3.1'" in message
    assert "'local.gate' (gate) from the plugin module 'genzoo_folder_plugin'" in message
    assert "genzoo_folder_plugin" not in sys.modules


def test_load_model_errors_exit_2_through_the_cli_of_export(run_dir, tmp_path, capsys):
    """A damaged run checkpoint: genzoo export says so and writes nothing."""
    copy = tmp_path / "tinynvae"
    shutil.copytree(run_dir.parents[2], copy)
    run = copy / "runs" / "nvae" / "seed1"
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["export", str(run), str(tmp_path / "model")]) == 2
    assert "checkpoint.pt: cannot read the checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
