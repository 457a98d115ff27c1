"""Bad input, case by case: each gives exit code 2, one line naming the file, the key or value
and what was expected, and no traceback (unless --debug). See docs/reliability.md.

The commands run in the test's own process (``cli_in_process``: torch is imported once, not once
a case), but for one run in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from cli_helpers import cli_in_process, run_cli

ROOT = Path(__file__).resolve().parents[1]

EXPERIMENT = """\
name: tiny
seeds: [0]
data:
  dataset: {key: data.shapes, image_size: 16, channels: 1, num_bits: 1, num_train: 32, num_test: 8}
training:
  steps: 2
  batch_size: 8
  lr: 0.01
  precision: fp32
  progress_bar: false
  checkpoint_every: 1
evaluation:
  batch_size: 8
  iw_samples: 2
  temperatures: [1.0]
  num_samples: 4
  bn_readjust_iters: 1
  speed_batches: 0
variants:
  vae:
    hierarchy: {key: baselines.standard_vae, num_channels: 8, latent_chs: 4, num_downsamples: 2}
  nvae:
    hierarchy:
      key: nvae.hierarchy
      num_channels: 8
      num_latent_scales: 1
      num_groups_per_scale: 2
      latent_chs: 4
      num_preprocess_blocks: 1
      num_preprocess_cells: 1
      num_postprocess_blocks: 1
      num_postprocess_cells: 1
      num_cells_per_group_enc: 1
      num_cells_per_group_dec: 1
      latent_group: {key: nvae.residual_normal, num_flows: 0}
    regularizers:
      spectral: nvae.spectral_regularizer
"""


def cli(*args, cwd, env_extra=None):
    """The command in this process (tests/cli_helpers.py says what that changes); the experiment
    folder is on the import path, so that experiment plugins written there import."""
    return cli_in_process(*args, cwd=cwd, pythonpath=cwd, env_extra=env_extra)


def cli_subprocess(*args, cwd, env_extra=None):
    """The command as a user runs it, in a fresh interpreter of its own."""
    return run_cli(*args, cwd=cwd, pythonpath=cwd, env_extra=env_extra, timeout=300)


def write_experiment(tmp_path: Path, text: str = EXPERIMENT) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def assert_clean_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genzoo: error: "), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize(
    "old, new, fragments",
    [
        # malformed YAML: line and column
        ("  lr: 0.01", "  lr: [0.01", ["exp.yaml:", "malformed YAML", "expected ',' or ']'"]),
        # unknown keys, top-level and nested
        ("seeds: [0]", "seedz: [0]", ["exp.yaml:2:1: seedz: unknown key 'seedz'; did you mean 'seeds'?"]),
        ("  lr: 0.01", "  learning_rate: 0.01", ["exp.yaml:8:3: training.learning_rate: unknown key"]),
        # wrong type
        ("  steps: 2", "  steps: two", ["exp.yaml:6:3: training.steps: expected int, got 'two'"]),
        # out of range: negative learning rate, temperature <= 0
        ("  lr: 0.01", "  lr: -0.01", ["exp.yaml:8:3: training.lr:", "expected a finite number > 0"]),
        ("  temperatures: [1.0]", "  temperatures: [0.0]", ["evaluation.temperatures", "(0, 10]"]),
    ],
)
def test_config_mistakes(tmp_path, old, new, fragments):
    assert old in EXPERIMENT
    out = cli("validate", str(write_experiment(tmp_path, EXPERIMENT.replace(old, new, 1))), cwd=tmp_path)
    assert_clean_error(out, *fragments)


def test_zero_groups_is_out_of_range(tmp_path):
    exp = write_experiment(tmp_path, EXPERIMENT.replace("num_groups_per_scale: 2", "num_groups_per_scale: 0"))
    out = cli("validate", str(exp), cwd=tmp_path)
    assert_clean_error(out, "exp.yaml:", "run 'nvae'", "num_groups_per_scale")


def test_unknown_registry_key_gets_suggestions(tmp_path):
    exp = write_experiment(
        tmp_path,
        EXPERIMENT.replace("spectral: nvae.spectral_regularizer", "spectral: nvae.spectral_regulariser"),
    )
    out = cli("validate", str(exp), cwd=tmp_path)
    assert_clean_error(out, "regularizer 'spectral'", "did you mean 'nvae.spectral_regularizer'?")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_required_plugin_that_is_missing_is_named_with_its_install_hint(tmp_path, command):
    text = EXPERIMENT.replace(
        "seeds: [0]\n", "seeds: [0]\nrequires: {vdvae: pip install ./examples/genzoo-plugin-example}\n"
    ).replace("hierarchy: {key: baselines.standard_vae", "hierarchy: {key: vdvae.hierarchy")
    extra = ["--out", "out"] if command == "run" else []
    out = cli(command, str(write_experiment(tmp_path, text)), *extra, cwd=tmp_path)
    assert_clean_error(
        out,
        "exp.yaml:3:",
        "requires plugins that are not loaded here: 'vdvae.*' keys: pip install ./examples/genzoo-plugin-example",
    )
    assert not (tmp_path / "out").exists()


def test_a_key_of_no_loaded_plugin_says_a_plugin_is_missing(tmp_path):
    exp = write_experiment(
        tmp_path,
        EXPERIMENT.replace("hierarchy: {key: baselines.standard_vae", "hierarchy: {key: vdvae.hierarchy"),
    )
    out = cli("validate", str(exp), cwd=tmp_path)
    assert_clean_error(
        out, "unknown hierarchy key 'vdvae.hierarchy': no loaded plugin provides keys 'vdvae.*'"
    )
    assert "did you mean" not in out.stderr


def test_key_of_the_wrong_kind_says_which_kind(tmp_path):
    exp = write_experiment(
        tmp_path, EXPERIMENT.replace("spectral: nvae.spectral_regularizer", "spectral: nvae.se")
    )
    out = cli("validate", str(exp), cwd=tmp_path)
    assert_clean_error(out, "'nvae.se' is a gate", "but a regularizer is expected")


def test_likelihood_that_does_not_fit_the_data(tmp_path):
    text = EXPERIMENT.replace("channels: 1, num_bits: 1", "channels: 3, num_bits: 8").replace(
        "latent_group: {key: nvae.residual_normal, num_flows: 0}",
        "latent_group: {key: nvae.residual_normal, num_flows: 0}\n      likelihood: nvae.bernoulli",
    )
    out = cli("validate", str(write_experiment(tmp_path, text)), cwd=tmp_path)
    assert_clean_error(out, "run 'nvae'", "Bernoulli likelihood models binary pixels", "num_bits=8")


def test_channel_counts_that_cannot_work(tmp_path):
    exp = write_experiment(
        tmp_path, EXPERIMENT.replace("num_channels: 8, latent_chs: 4", "num_channels: 0, latent_chs: 4")
    )
    out = cli("validate", str(exp), cwd=tmp_path)
    assert_clean_error(out, "run 'vae'", "num_channels")


def test_image_size_not_divisible_by_the_downsampling(tmp_path):
    text = EXPERIMENT.replace("image_size: 16", "image_size: 12").replace(
        "num_latent_scales: 1", "num_latent_scales: 3"
    )
    out = cli("validate", str(write_experiment(tmp_path, text)), cwd=tmp_path)
    assert_clean_error(out, "run 'nvae'", "12")


def test_missing_dataset_files_are_named(tmp_path):
    text = EXPERIMENT.replace(
        "dataset: {key: data.shapes, image_size: 16, channels: 1, num_bits: 1, num_train: 32, num_test: 8}",
        f"dataset: {{key: data.mnist, root: {tmp_path / 'nowhere'}}}",
    )
    exp = write_experiment(tmp_path, text)
    out = cli("run", str(exp), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(out, "data.mnist", "train-images-idx3-ubyte", "nowhere")
    # validate still checks the file, and says the data is missing here
    out = cli("validate", str(exp), cwd=tmp_path)
    assert out.returncode == 0 and "the data is not available here" in out.stderr and "nowhere" in out.stderr


def test_corrupt_dataset_file_is_named(tmp_path):
    bad = tmp_path / "mnist"
    bad.mkdir()
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (bad / name).write_bytes(b"\x00\x00\x08\x01not an image file")
    text = EXPERIMENT.replace(
        "dataset: {key: data.shapes, image_size: 16, channels: 1, num_bits: 1, num_train: 32, num_test: 8}",
        f"dataset: {{key: data.mnist, root: {bad}}}",
    )
    out = cli(
        "run",
        str(write_experiment(tmp_path, text)),
        "--only",
        "vae",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert_clean_error(out, "data.mnist", "train-images-idx3-ubyte")


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """One finished run of the tiny experiment, trained once for the module (about 5 s)."""
    root = tmp_path_factory.mktemp("finished")
    exp = write_experiment(root)
    out = cli("run", str(exp), "--only", "vae", "--out", str(root / "out"), cwd=root)
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture
def finished_run(tmp_path, trained_once):
    """A copy of that run's folder and experiment file in this test's own folder, to damage."""
    shutil.copytree(trained_once, tmp_path, dirs_exist_ok=True)
    return tmp_path / "exp.yaml", tmp_path / "out" / "tiny" / "runs" / "vae" / "seed0"


def test_corrupt_or_truncated_checkpoint(tmp_path, finished_run):
    exp, run_dir = finished_run
    ckpt = run_dir / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    out = cli("sample", str(run_dir), "-n", "4", cwd=tmp_path)
    assert_clean_error(out, "checkpoint.pt", "corrupt, truncated")
    # an unfinished run resuming from it says the same
    results = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").write_text(json.dumps({**results, "status": "running"}))
    out = cli("run", str(exp), "--only", "vae", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(out, "checkpoint.pt", "corrupt, truncated", "Move it away")


def test_checkpoint_from_an_incompatible_model(tmp_path, finished_run):
    exp, run_dir = finished_run
    (run_dir / "results.json").unlink()  # pretend the run was interrupted
    out = cli(
        "run", str(exp), "--only", "vae", "--out", str(tmp_path / "out"), "--resume",
        "--set", "variants.vae.hierarchy.num_channels=16", cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(out, "checkpoint.pt holds another model than this run builds")


def test_output_folder_with_results_of_another_config_is_refused(tmp_path, finished_run):
    exp, run_dir = finished_run
    before = (run_dir / "results.json").read_text()
    out = cli(
        "run",
        str(exp),
        "--only",
        "vae",
        "--out",
        str(tmp_path / "out"),
        "--set",
        "training.lr=0.02",
        cwd=tmp_path,
    )
    assert_clean_error(
        out, "already holds results of 1 run(s) with a different configuration", "--resume", "--fresh"
    )
    assert (run_dir / "results.json").read_text() == before, "nothing was touched"
    out = cli(
        "run",
        str(exp),
        "--only",
        "vae",
        "--out",
        str(tmp_path / "out"),
        "--set",
        "training.lr=0.02",
        "--fresh",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    archived = list((tmp_path / "out" / "tiny" / "archive").glob("*/runs/vae/seed0/results.json"))
    assert len(archived) == 1 and archived[0].read_text() == before, "--fresh archives, never deletes"


def test_plugin_raising_inside_a_hook_is_named(tmp_path):
    (tmp_path / "angry_plugin.py").write_text(
        textwrap.dedent(
            """
            import genzoo

            @genzoo.hookimpl
            def genzoo_step_end(step):
                raise RuntimeError("metric exploded")
            """
        )
    )
    exp = write_experiment(tmp_path, EXPERIMENT.replace("seeds: [0]", "seeds: [0]\nplugins: [angry_plugin]"))
    out = cli("run", str(exp), "--only", "vae", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(
        out,
        "plugin 'angry_plugin' (experiment) raised in hook genzoo_step_end: RuntimeError: metric exploded",
    )


def test_variant_name_cannot_escape_the_output_folder(tmp_path):
    exp = write_experiment(tmp_path, EXPERIMENT.replace("  vae:", "  ../../etc:"))
    out = cli("run", str(exp), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(out, "variants.../../etc: invalid name '../../etc'")
    assert not (tmp_path / "etc").exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    # a subprocess: the one line is all a fresh interpreter prints, its imports and exit included
    out = cli_subprocess(
        "run", str(write_experiment(tmp_path)), "--only", "vae", "--out", str(blocker), cwd=tmp_path
    )
    assert_clean_error(out, "cannot create the output folder")
    assert blocker.read_text() == "a file where the output folder should be"


def test_debug_shows_the_traceback(tmp_path):
    exp = write_experiment(tmp_path, EXPERIMENT.replace("  lr: 0.01", "  lr: -0.01"))
    out = cli("--debug", "validate", str(exp), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" in out.stderr
