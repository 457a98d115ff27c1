"""The ``genzoo`` command, run from another folder: in the test's own process (``cli_in_process``,
which gives what a subprocess would), and in a subprocess, as a user runs it, where the point is
a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from cli_helpers import cli_in_process, run_cli
from plugin_fixtures import GATE_PLUGIN, make_distribution

import genzoo


def genzoo_cli(*args, cwd, env_extra=None, pythonpath=None):
    """The command in this process (tests/cli_helpers.py says what that changes)."""
    return cli_in_process(*args, cwd=cwd, env_extra=env_extra, pythonpath=pythonpath)


def genzoo_cli_subprocess(*args, cwd, env_extra=None, pythonpath=None):
    """The command in a fresh interpreter of its own, as a user runs it."""
    return run_cli(*args, cwd=cwd, env_extra=env_extra, pythonpath=pythonpath, timeout=120)


def test_version_and_help(tmp_path):
    out = genzoo_cli("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"genzoo {genzoo.__version__}"
    out = genzoo_cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    for sub in ("list", "plugins"):
        assert sub in out.stdout


def test_list_from_any_folder_shows_the_builtin_components(tmp_path):
    out = genzoo_cli("list", "nvae.*", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["kind", "key", "plugin", "description"]
    rows = [line.split()[:3] for line in lines[2:]]
    assert ["cell", "nvae.separable_cell", "nvae"] in rows
    assert all(key.startswith("nvae.") for _, key, _ in rows)
    assert all(len(line.split()) > 3 for line in lines[2:]), "every component has a description"


def test_list_filters_by_kind(tmp_path):
    out = genzoo_cli("list", "--kind", "gate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    kinds = {line.split()[0] for line in out.stdout.splitlines()[2:]}
    assert kinds == {"gate"}
    assert "nvae.se" in out.stdout and "baselines.none_gate" in out.stdout


def test_plugins_shows_name_source_version_and_keys(tmp_path, autoload):
    site = make_distribution(
        tmp_path / "site",
        "genzoo-double",
        "0.3.1",
        {"double_plugin.py": GATE_PLUGIN.format(key="double.gate")},
        {"double": "double_plugin"},
    )
    out = genzoo_cli("plugins", cwd=tmp_path, pythonpath=site)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[2:]}
    assert rows["nvae"].split()[1:3] == ["built-in", genzoo.__version__]
    assert rows["double"].split()[1:3] == ["installed", "0.3.1"]
    assert "double.gate" in rows["double"]
    out = genzoo_cli("plugins", cwd=tmp_path, pythonpath=site, env_extra={genzoo.DISABLE_AUTOLOAD_ENV: "1"})
    assert "double" not in out.stdout


def test_broken_plugin_exits_2_with_one_line_and_traceback_only_with_debug(tmp_path, autoload):
    site = make_distribution(
        tmp_path / "site",
        "genzoo-broken",
        "2.0",
        {"broken_plugin.py": "raise RuntimeError('cannot start')\n"},
        {"broken": "broken_plugin"},
    )
    out = genzoo_cli("list", cwd=tmp_path, pythonpath=site)
    assert out.returncode == 2
    assert out.stderr.startswith(
        "genzoo: error: plugin 'broken' (installed, genzoo-broken 2.0) failed to import"
    )
    assert "RuntimeError: cannot start" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = genzoo_cli("--debug", "list", cwd=tmp_path, pythonpath=site)
    assert out.returncode == 2 and "Traceback" in out.stderr


def test_duplicate_key_from_an_installed_plugin_exits_2_naming_both(tmp_path, autoload):
    site = make_distribution(
        tmp_path / "site",
        "genzoo-clash",
        "1.1",
        {"clash_plugin.py": GATE_PLUGIN.format(key="nvae.se")},
        {"clash": "clash_plugin"},
    )
    out = genzoo_cli("list", cwd=tmp_path, pythonpath=site)
    assert out.returncode == 2
    assert "'nvae' (built-in" in out.stderr and "'clash' (installed, genzoo-clash 1.1)" in out.stderr


def test_unknown_kind_and_no_command_are_usage_errors(tmp_path):
    assert genzoo_cli("list", "--kind", "widget", cwd=tmp_path).returncode == 2
    assert genzoo_cli(cwd=tmp_path).returncode == 2


@pytest.mark.parametrize("pattern", ["zzz.*"])
def test_list_without_matches_says_so(tmp_path, pattern):
    out = genzoo_cli("list", pattern, cwd=tmp_path)
    assert out.returncode == 0 and f"no component matches {pattern!r}" in out.stdout


def test_console_script_is_installed(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "genzoo")
    out = subprocess.run([script, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "genzoo" in out.stdout
    assert textwrap.dedent(out.stdout).strip() == f"genzoo {genzoo.__version__}"


def test_import_genzoo_loads_neither_the_engine_nor_torch():
    # A plugin module's `import genzoo` (for @genzoo.hookimpl) and `genzoo --version` stay light;
    # the interfaces come with torch on first use.
    code = (
        "import sys, genzoo; "
        "assert 'genzoo.engine' not in sys.modules, 'engine imported'; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert genzoo.Cell.__module__ == 'genzoo.interfaces.cell' and 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_kinds_are_named_without_torch_and_each_has_its_interface():
    # The kinds are declared once, in genzoo/interfaces/__init__.py, which names them without
    # importing torch (the registry and `genzoo list --kind` need the names only).
    code = (
        "import sys; from genzoo.interfaces import KIND_NAMES; import genzoo.cli; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "import genzoo, genzoo.interfaces as i; "
        "assert tuple(genzoo.KINDS) == KIND_NAMES and genzoo.KINDS['cell'] is i.Cell; "
        "assert all(c.__module__.startswith('genzoo.interfaces.') for c in genzoo.KINDS.values())"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_genzoo_re_exports_every_interface_it_names_lazily():
    # genzoo/__init__.py re-exports the interfaces' own __all__ (less the constant RESAMPLE_MODES),
    # on first use, as genzoo.interfaces itself imports them.
    import genzoo
    import genzoo.interfaces

    assert set(genzoo._INTERFACES) == set(genzoo.interfaces.__all__) - {"RESAMPLE_MODES"}
    for name in genzoo._INTERFACES:
        assert getattr(genzoo, name) is getattr(genzoo.interfaces, name)


TINY_RUN = """\
name: tiny
seeds: [3]
data:
  dataset: {key: data.shapes, image_size: 16, channels: 1, num_bits: 1, num_train: 64, num_test: 16}
training: {steps: 6, batch_size: 16, lr: 0.005, lr_warmup_steps: 1, ema_decay: 0.9, precision: fp32,
           progress_bar: false}
evaluation: {batch_size: 4, iw_samples: 2, temperatures: [0.7, 1.0], num_samples: 10,
             bn_readjust_iters: 3, bn_readjust_batch_size: 5, num_reconstructions: 2, speed_batches: 0}
variants:
  vae:  # a hierarchy with BatchNorm layers that is not NVAE's
    hierarchy: {key: baselines.standard_vae, num_channels: 8, latent_chs: 4, num_downsamples: 2}
"""
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same CPU kernels in both processes, so pixels compare exactly


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run of a tiny standard VAE (seed 3, EMA weights), trained once for the module."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.yaml").write_text(TINY_RUN)
    out = genzoo_cli("run", "tiny.yaml", "--out", "out", cwd=root, env_extra=ONE_THREAD)
    assert out.returncode == 0, out.stderr
    return root / "out" / "tiny" / "runs" / "vae" / "seed3"


def pixels(path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


@pytest.mark.parametrize("temperature", ["0.7"])  # 1: the readjusted case of the next test
def test_sample_redraws_the_runs_own_grid(tiny_run, tmp_path, temperature):
    """By default `genzoo sample` draws as the run's evaluation drew its samples_t<T>.png: the run's
    seed, its number of samples, BatchNorm readjusted with its settings, the same chunks and rows."""
    grid = tmp_path / "grid.png"
    # a subprocess: a process of its own, sharing nothing with the one that trained, redraws the grid
    out = genzoo_cli_subprocess(
        "sample", str(tiny_run), "-t", temperature, "--out", str(grid), cwd=tmp_path, env_extra=ONE_THREAD
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(grid)
    own = pixels(tiny_run / f"samples_t{temperature}.png")
    assert own.shape[:2] == (2 + 2 * 18, 2 + 8 * 18)  # 10 images of 16x16, 8 a row, 2 pixels apart
    assert (pixels(grid) == own).all()


def test_sample_without_bn_readjustment_draws_another_grid(tiny_run, tmp_path):
    """--no-readjust-bn samples with the BatchNorm statistics of training (NVAE's App. B: worse
    samples); --readjust-bn with the run's own settings, spelt out, is the default."""
    own = pixels(tiny_run / "samples_t1.png")
    readjusted = ["--readjust-bn", "--bn-readjust-iters", "3", "--bn-readjust-batch-size", "5"]
    for flags, same in ((["--no-readjust-bn"], False), (readjusted, True)):
        grid = tmp_path / f"grid_{same}.png"
        # a subprocess: a process of its own, sharing nothing with the one that trained, redraws the grid
        out = genzoo_cli_subprocess(
            "sample", str(tiny_run), "--out", str(grid), *flags, cwd=tmp_path, env_extra=ONE_THREAD
        )
        assert out.returncode == 0, out.stderr
        assert (pixels(grid) == own).all() == same, flags


@pytest.mark.slow  # 6 s; the quickstart smoke test samples into a run folder too
def test_sample_writes_into_the_run_folder_and_checks_its_options(tiny_run, tmp_path):
    out = genzoo_cli("sample", str(tiny_run), "-t", "0.7", "-n", "3", "--seed", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tiny_run / "samples_cli_t0.7.png")
    assert pixels(tiny_run / "samples_cli_t0.7.png").shape[:2] == (2 + 18, 2 + 3 * 18)
    again = genzoo_cli("sample", str(tiny_run), "-t", "0.7", "-n", "3", "--seed", "1", cwd=tmp_path)
    assert again.stdout.strip() == str(tiny_run / "samples_cli_t0.7-1.png")  # the first one is kept
    taken = genzoo_cli("sample", str(tiny_run), "--out", str(tiny_run / "samples_t1.png"), cwd=tmp_path)
    assert taken.returncode == 2 and "never overwrites" in taken.stderr
    bad = genzoo_cli("sample", str(tiny_run), "--bn-readjust-batch-size", "1", cwd=tmp_path)
    assert bad.returncode == 2 and "--bn-readjust-batch-size 1" in bad.stderr
