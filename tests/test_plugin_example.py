"""The example third-party plugin, end to end: discovered through its entry point with its
distribution named, its cell built by key, an experiment that swaps NVAE's decoder cell for it
trained for a few steps with the plugin's report columns, its own test suite, a real ``pip
install`` (slow), and a misbehaving plugin named in every error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
import torch
from example_plugin import (
    EXAMPLE_DIR,
    EXAMPLE_DIST,
    EXAMPLE_MODULE,
    EXAMPLE_PLUGIN,
    ROOT,
    example_version,
    loaded_host,
)

import genzoo
from genzoo.cli import main as genzoo_main
from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.run.runner import run_matrix

EXPERIMENT = ROOT / "experiments" / "plugin_ablation.yaml"
MONITOR_COLUMNS = ("vdvae.max_grad_norm", "vdvae.mean_grad_norm", "vdvae.loss_spikes")


# -- discovery ----------------------------------------------------------------------------------
def test_installed_example_is_found_with_its_distribution_and_keys(example):
    host = loaded_host()
    info = host.plugins[EXAMPLE_PLUGIN]
    assert (info.source, info.distribution, info.version, info.module) == (
        "installed",
        EXAMPLE_DIST,
        example,
        EXAMPLE_MODULE,
    )
    entries = host.registry.list("vdvae.*")
    assert [(e.kind, e.key) for e in entries] == [
        ("cell", "vdvae.bottleneck_cell"),
        ("metric", "vdvae.reconstruction_psnr"),
    ]
    assert all(e.plugin == info and e.description for e in entries)


def test_example_cell_passes_shape_and_gradient_checks_through_the_registry(example):
    registry = loaded_host().registry
    for resample, in_chs, out_chs, out_hw in (("none", 16, 16, 8), ("down", 16, 32, 4), ("up", 32, 16, 16)):
        cell = registry.create(
            "cell",
            "vdvae.bottleneck_cell",
            in_chs=in_chs,
            out_chs=out_chs,
            resample=resample,
            gate_layer=None,
        )
        assert isinstance(cell, genzoo.Cell)
        x = torch.randn(2, in_chs, 8, 8, requires_grad=True)
        y = cell(x)
        assert y.shape == (2, out_chs, out_hw, out_hw)
        y.square().mean().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in cell.parameters())


def test_genzoo_plugins_and_list_show_the_example(example, fresh_host, capsys):
    assert genzoo_main(["plugins"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(EXAMPLE_PLUGIN + " "))
    assert "installed" in row and example in row and EXAMPLE_MODULE in row
    assert "vdvae.bottleneck_cell" in row and "vdvae.reconstruction_psnr" in row

    assert genzoo_main(["list", "vdvae.*", "--kind", "cell"]) == 0
    out = capsys.readouterr().out
    assert "vdvae.bottleneck_cell" in out and EXAMPLE_PLUGIN in out and "reconstruction_psnr" not in out


# -- the experiment -----------------------------------------------------------------------------
def test_plugin_ablation_experiment_trains_on_cpu_and_reports_the_plugin_columns(
    example, fresh_host, tmp_path
):
    experiment = load_experiment(EXPERIMENT, profile="smoke", overrides=["training.device=cpu"])
    ablation = next(r for r in experiment.runs if r.name == "vdvae_decoder_cell")
    assert ablation.changes == {"hierarchy.decoder_cell": "vdvae.bottleneck_cell"}  # one key swapped

    outcome = run_matrix(
        experiment, tmp_path, only=["nvae", "vdvae_decoder_cell"], host=loaded_host(), echo=lambda _: None
    )
    assert outcome.exit_code == 0 and outcome.finished == ["nvae/seed0", "vdvae_decoder_cell/seed0"]
    exp_dir = tmp_path / "plugin_ablation"
    rows = {r["run"]: r for r in json.loads((exp_dir / "results.json").read_text())}
    assert set(rows) == {"nvae", "vdvae_decoder_cell"}
    for name, row in rows.items():
        assert row["status"] == "finished" and row["step"] == 4
        assert set(row["extra"]) == set(MONITOR_COLUMNS)
        assert row["vdvae.max_grad_norm"] > 0 and row["vdvae.loss_spikes"] == 0
        assert (exp_dir / "runs" / name / "seed0" / "vdvae_stability.json").is_file()
    # The swap changed the model: the bottleneck block has fewer weights than the separable cell.
    assert rows["vdvae_decoder_cell"]["params"] != rows["nvae"]["params"]
    report = (exp_dir / "report.md").read_text()
    assert "| vdvae_decoder_cell |" in report and "vdvae.max_grad_norm" in report
    assert "vdvae.max_grad_norm" in (exp_dir / "results.csv").read_text().splitlines()[0]

    # The columns are asked for when the report is rendered (the hook's contract), so a later
    # `genzoo report` in another process, with the plugin installed, renders them again from
    # the run folders alone.
    from genzoo_vdvae.stability import BOOK

    BOOK.monitors.clear()  # nothing of the runs left in memory, as in a new process
    (exp_dir / "report.md").unlink()
    (exp_dir / "results.json").unlink()
    genzoo.reset_host(None)  # the command loads its plugins afresh
    assert genzoo_main(["report", str(exp_dir)]) == 0
    again = {r["run"]: r for r in json.loads((exp_dir / "results.json").read_text())}
    for name, row in again.items():
        assert row["vdvae.max_grad_norm"] == rows[name]["vdvae.max_grad_norm"]
    assert "vdvae.max_grad_norm" in (exp_dir / "report.md").read_text()


def test_without_the_plugin_the_experiment_says_which_plugin_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv(genzoo.DISABLE_AUTOLOAD_ENV, "1")
    experiment = load_experiment(EXPERIMENT, profile="smoke")
    with pytest.raises(
        genzoo.ConfigError,
        match=r"plugin_ablation.yaml:\d+:\d+: requires plugins that are not loaded here: 'vdvae\.\*' keys: "
        r"pip install \./examples/genzoo-plugin-example",
    ) as err:
        run_matrix(experiment, tmp_path, host=loaded_host(), echo=lambda _: None)
    assert "did you mean" not in str(err.value)
    assert not (tmp_path / "plugin_ablation").exists()  # refused before anything was written


def test_a_key_of_a_plugin_that_is_not_loaded_is_named_as_such(tmp_path, monkeypatch):
    # The same file without its requires: section still says that a plugin is missing, rather
    # than suggesting NVAE's cell for VDVAE's.
    monkeypatch.setenv(genzoo.DISABLE_AUTOLOAD_ENV, "1")
    experiment = load_experiment(EXPERIMENT, profile="smoke")
    experiment.requires = {}
    with pytest.raises(genzoo.ConfigError) as err:
        run_matrix(experiment, tmp_path, host=loaded_host(), echo=lambda _: None)
    message = str(err.value)
    assert "unknown cell key 'vdvae.bottleneck_cell': no loaded plugin provides keys 'vdvae.*'" in message
    assert "nvae.*" in message and "did you mean" not in message


def test_the_example_packages_own_tests_pass():
    # As its author runs them: pytest in the package's folder, which puts src/ on sys.path.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENZOO_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout


# -- a plugin's misbehaviour, named ---------------------------------------------------------------
def test_plugin_api_mismatch_is_refused_at_start_up_naming_the_plugin(
    example, fresh_host, monkeypatch, capsys
):
    import genzoo_vdvae

    monkeypatch.setattr(genzoo_vdvae, "GENZOO_PLUGIN_API", 2)  # as if written for a future genzoo
    with pytest.raises(genzoo.PluginLoadError) as err:
        loaded_host()
    assert str(err.value) == (
        f"plugin '{EXAMPLE_PLUGIN}' (installed, {EXAMPLE_DIST} {example}) needs genzoo plugin API 2, "
        f"but this genzoo provides API {genzoo.PLUGIN_API_VERSION}; upgrade the plugin or genzoo"
    )
    # On the command line: one line naming the plugin, exit code 2, before anything is built.
    assert genzoo_main(["run", str(EXPERIMENT), "--profile", "smoke", "--dry-run"]) == 2
    assert f"'{EXAMPLE_PLUGIN}' (installed, {EXAMPLE_DIST} {example})" in capsys.readouterr().err


SLOPPY_PLUGIN = """
    import genzoo
    from torch import nn

    GENZOO_PLUGIN_API = 1

    @genzoo.hookimpl
    def genzoo_register(registry):
        # A plain conv is not a genzoo.Cell: it has no resample contract.
        registry.add("cell", "sloppy.conv_cell", lambda in_chs, out_chs, **_: nn.Conv2d(in_chs, out_chs, 3))
"""


def test_factory_returning_the_wrong_type_is_caught_when_the_model_is_built(site_dir, tmp_path):
    (site_dir / "sloppy_plugin.py").write_text(textwrap.dedent(SLOPPY_PLUGIN))
    experiment = load_experiment(
        EXPERIMENT,
        profile="smoke",
        overrides=["plugins=[sloppy_plugin]", "variants.nvae.hierarchy.decoder_cell=sloppy.conv_cell"],
    )
    host = genzoo.PluginHost()
    host.load_builtin()
    with pytest.raises(genzoo.ConfigError) as err:
        run_matrix(experiment, tmp_path, only=["nvae"], host=host, echo=lambda _: None)
    message = str(err.value)
    assert "plugin_ablation.yaml" in message and "run 'nvae'" in message
    assert "cell 'sloppy.conv_cell' from plugin 'sloppy_plugin' (experiment)" in message
    assert (
        "returned a torch.nn.modules.conv.Conv2d; expected an instance of genzoo.interfaces.cell.Cell"
        in message
    )
    assert not (tmp_path / "plugin_ablation").exists()  # caught before any training


CRASHY_PLUGIN = """
    import genzoo

    @genzoo.hookimpl
    def genzoo_step_end(step, metrics):
        if step == 2:
            raise KeyError("ema_loss")
"""


def test_hook_that_raises_during_training_is_reported_with_the_plugin_name(site_dir, tmp_path):
    (site_dir / "crashy_plugin.py").write_text(textwrap.dedent(CRASHY_PLUGIN))
    experiment = load_experiment(
        EXPERIMENT, profile="smoke", overrides=["plugins=[crashy_plugin]", "training.device=cpu"]
    )
    host = genzoo.PluginHost()
    host.load_builtin()
    with pytest.raises(
        genzoo.PluginHookError,
        match=r"plugin 'crashy_plugin' \(experiment\) raised in hook genzoo_step_end: KeyError: 'ema_loss'",
    ):
        run_matrix(experiment, tmp_path, only=["nvae"], host=host, echo=lambda _: None)


# -- a real installation --------------------------------------------------------------------------
@pytest.mark.slow
def test_pip_install_into_a_virtual_environment_makes_the_plugin_visible(tmp_path):
    env_dir = tmp_path / "venv"
    # --system-site-packages: genzoo, torch and setuptools come from this interpreter's environment.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENZOO_") and k != "PYTHONPATH"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(python), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )

    # A copy, because an in-tree build leaves build/ and *.egg-info behind in the checkout.
    source = shutil.copytree(
        EXAMPLE_DIR,
        tmp_path / "src" / EXAMPLE_DIR.name,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".*_cache"),
    )
    # The venv's interpreter runs this interpreter's pip; the install goes into the venv.
    # --no-build-isolation and --no-index: build with the setuptools already installed, offline.
    installed = run(
        "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", str(source)
    )
    assert installed.returncode == 0, installed.stderr
    where = run("-c", f"import {EXAMPLE_MODULE}; print({EXAMPLE_MODULE}.__file__)")
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(env_dir), where

    plugins = run("-c", "import sys; from genzoo.cli import main; sys.exit(main(['plugins']))")
    assert plugins.returncode == 0, plugins.stderr
    row = next(line for line in plugins.stdout.splitlines() if line.startswith(EXAMPLE_PLUGIN + " "))
    assert "installed" in row and example_version() in row and "vdvae.bottleneck_cell" in row

    listed = run("-c", "import sys; from genzoo.cli import main; sys.exit(main(['list', 'vdvae.*']))")
    assert listed.returncode == 0, listed.stderr
    assert "vdvae.bottleneck_cell" in listed.stdout and "vdvae.reconstruction_psnr" in listed.stdout

    # And the experiment file uses the installed plugin's key with no `plugins:` entry.
    ran = run(
        "-m", "genzoo.cli", "run", str(EXPERIMENT), "--profile", "smoke", "--only", "vdvae_decoder_cell",
        "--device", "cpu", "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = (tmp_path / "runs" / "plugin_ablation" / "report.md").read_text()
    assert "| vdvae_decoder_cell |" in report and "vdvae.loss_spikes" in report
