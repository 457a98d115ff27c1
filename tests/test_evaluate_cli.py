"""``genzoo evaluate RUN_DIR``: a trained run's checkpoint scored as the run's own evaluation scores
it, written to a new JSON file beside it; bad input is a one-line error with exit code 2.

One tiny run is trained for the module, in this process (``genzoo.cli.main``), on one thread:
the run's evaluation and the command's then run the same kernels, so their figures compare."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch
import yaml

import genzoo
from genzoo.cli import main
from genzoo.engine import fid
from genzoo.experiment.trained.evaluate import evaluate_run
from genzoo.machine.software import software

TINY_RUN = """\
name: tiny
seeds: [3]
data:
  dataset: {{key: data.shapes, image_size: 16, channels: 1, num_bits: 1, num_train: 48, num_test: 16}}
training: {{steps: 6, batch_size: 16, lr: 0.005, lr_warmup_steps: 1, ema_decay: 0.9, precision: fp32,
           progress_bar: false}}
evaluation: {{batch_size: 4, iw_samples: 2, temperatures: [1.0], num_samples: 4, bn_readjust_iters: 2,
             bn_readjust_batch_size: 4, num_reconstructions: 2, speed_batches: 0,
             fid_reference_split: test, fid_cache_dir: {fid_cache}}}
variants:
  vae:  # a hierarchy with BatchNorm layers
    hierarchy: {{key: baselines.standard_vae, num_channels: 8, latent_chs: 4, num_downsamples: 2}}
"""
RESULTS_FIGURES = ("nats_elbo", "bpd_elbo", "nats_iw", "bpd_iw", "recon_nats", "kl_nats", "kl_group_0")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The experiment folder of a finished run (seed 3, EMA weights), trained once for the module
    on one thread (what the tests' own evaluations then use too)."""
    root = tmp_path_factory.mktemp("evaluate")
    (root / "tiny.yaml").write_text(TINY_RUN.format(fid_cache=root / "fid-cache"))
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert main(["run", str(root / "tiny.yaml"), "--out", str(root / "out")]) == 0
        yield root / "out" / "tiny"
    torch.set_num_threads(threads)


@pytest.fixture
def run_dir(trained):
    return trained / "runs" / "vae" / "seed3"


@pytest.fixture
def copied_run(trained, tmp_path):
    """A copy of the experiment folder, whose run's checkpoint a test may change; its run folder."""
    shutil.copytree(trained, tmp_path / "tiny")
    return tmp_path / "tiny" / "runs" / "vae" / "seed3"


def folder_digest(folder):
    """``{name: sha256}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def change_checkpoint(run_dir, **changes):
    path = run_dir / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None and key == "genzoo_version":
            state.pop(key)
        else:
            state[key] = value
    torch.save(state, path)


def test_evaluate_reproduces_the_runs_own_test_figures(run_dir, capsys):
    """With the run's own K, N, batch size, seed and split (the defaults), the command gives the
    figures the run's final evaluation wrote to results.json: the same weights (EMA), images
    (held-out binarization) and noise. Nothing in the run folder changes but the new file."""
    before = folder_digest(run_dir)
    assert main(["evaluate", str(run_dir), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint: step 6 of 6, finished" in out
    assert "weights:    EMA (decay 0.9)" in out
    assert "16 images of the test split, batch size 4, seed 3, on cpu" in out
    path = run_dir / "evaluation_test_k2.json"
    assert out.strip().endswith(f"written: {path}")

    after = folder_digest(run_dir)
    assert set(after) - set(before) == {path.name} and all(after[k] == v for k, v in before.items())
    record = json.loads(path.read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert (record["split"], record["iw_samples"], record["num_images"], record["seed"]) == ("test", 2, 16, 3)
    assert (record["weights"], record["ema_decay"], record["checkpoint"]["step"]) == ("ema", 0.9, 6)
    assert record["checkpoint"]["genzoo_version"] == genzoo.__version__  # recorded by the trainer
    # the software of the run and of this command: here the same process's (tests/test_software.py)
    assert record["software"] == results["software"] == software()
    m = record["metrics"]
    for name in RESULTS_FIGURES:
        assert m[name] == pytest.approx(results[f"test_{name}"], rel=1e-9, abs=1e-9), name
    for name in ("num_images", "iw_samples", "active_units", "latent_units"):
        assert m[name] == results[f"test_{name}"], name
    # bits/dim are nats over ln 2 times the scored dimensions (1 x 16 x 16)
    assert m["bpd_iw"] == pytest.approx(m["nats_iw"] / (math.log(2) * 256))
    assert m["nats_iw"] != m["nats_elbo"]


def written(out):
    """The files a series of ``genzoo evaluate`` calls wrote, from their last lines."""
    return [line.removeprefix("written: ") for line in out.splitlines() if line.startswith("written: ")]


def test_other_k_n_and_seed_are_scored_and_written_under_new_names(run_dir, capsys):
    args = ["evaluate", str(run_dir), "--device", "cpu", "-k", "3", "-n", "8", "--batch-size", "8"]
    for seed in ("5", "5", "6"):
        assert main([*args, "--seed", seed]) == 0
    out = capsys.readouterr().out
    assert "IW NLL (K=3)" in out and "8 images of the test split, batch size 8, seed 5" in out
    paths = written(out)
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "evaluation_test_k3.json",
        "evaluation_test_k3-1.json",
        "evaluation_test_k3-2.json",
    ]
    same, again, other = (json.loads(open(p).read()) for p in paths)
    assert (same["num_images"], same["iw_samples"], same["batch_size"]) == (8, 3, 8)
    assert same["metrics"] == again["metrics"]  # the seed fixes every draw
    assert other["metrics"]["nats_elbo"] != same["metrics"]["nats_elbo"]  # another noise


def test_the_train_split_with_a_progress_bar(run_dir, capsys):
    record, path = evaluate_run(run_dir, split="train", max_images=48, device="cpu", progress=True)
    assert path.name == "evaluation_train_k2.json" and record["num_images"] == 48
    assert "scoring train" in capsys.readouterr().err  # tqdm's bar, on stderr
    assert record["metrics"]["nats_elbo"] > 0


def test_raw_weights_of_an_interrupted_run(copied_run, run_dir, capsys):
    """A run that kept no EMA is scored with its raw weights, and an interrupted one at the step
    it stopped at; the output says both."""
    change_checkpoint(copied_run, ema=None, status="interrupted", step=4)
    assert main(["evaluate", str(copied_run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "weights:    raw" in out and "step 4 of 6, interrupted" in out
    (path,) = written(out)
    raw = json.loads(open(path).read())
    ema = json.loads((run_dir / "results.json").read_text())
    assert raw["weights"] == "raw" and raw["metrics"]["nats_elbo"] != ema["test_nats_elbo"]


def test_a_checkpoint_of_another_genzoo_version(copied_run, capsys):
    """The checkpoint format decides: another format is refused, naming the version that wrote
    it; another version of the same format is read with a warning; a checkpoint from before
    versions were recorded is read as it is."""
    change_checkpoint(copied_run, format=2, genzoo_version="9.9.9")
    assert main(["evaluate", str(copied_run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint format 2, written by genzoo 9.9.9" in err and "reads format 1" in err
    change_checkpoint(copied_run, format=1, genzoo_version="0.0.1")
    with pytest.warns(UserWarning, match="written by genzoo 0.0.1, this is genzoo"):
        assert main(["evaluate", str(copied_run), "--device", "cpu"]) == 0
    change_checkpoint(copied_run, genzoo_version=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["evaluate", str(copied_run), "--device", "cpu"]) == 0
    (*_, path) = written(capsys.readouterr().out)
    assert json.loads(open(path).read())["checkpoint"]["genzoo_version"] is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-k", "0"], "--iw-samples 0: expected K >= 1"),
        (["-n", "0"], "--max-images 0: expected at least 1"),
        (["-n", "17"], "--max-images 17: expected 1 to 16 (the test split of data.shapes has 16 images)"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--device", "tpu"], "--device tpu: expected auto, cpu, cuda or cuda:N"),
        (
            ["--fid", "--fid-weights", "/no/such/inception.pth"],
            "--fid-weights /no/such/inception.pth: no such file",
        ),
    ],
)
def test_options_out_of_range_are_named(run_dir, capsys, args, expected):
    before = folder_digest(run_dir)
    device = [] if "--device" in args else ["--device", "cpu"]
    assert main(["evaluate", str(run_dir), *device, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genzoo: error: ") and expected in err
    assert folder_digest(run_dir) == before  # no file left behind


def test_a_folder_that_is_not_a_run_or_a_damaged_checkpoint(copied_run, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "not a trained run folder (expected config.yaml and checkpoint.pt)" in capsys.readouterr().err
    ckpt = copied_run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["evaluate", str(copied_run), "--device", "cpu"]) == 2
    assert f"{ckpt}: cannot read the checkpoint, it is corrupt, truncated" in capsys.readouterr().err


@pytest.fixture
def pooled_features(monkeypatch):
    """FID's feature extractor replaced by one that is quick on a CPU and easy to check: the mean
    of the top and of the bottom half of each image; returns the feature batches it produced."""
    batches = []

    def extractor(weights_path, device):
        def extract(images):  # uint8 RGB (B, 3, H, W), as torch-fidelity's Inception receives
            halves = images[:, 0].double().chunk(2, dim=1)
            batches.append(torch.stack([h.mean(dim=(1, 2)) for h in halves], dim=1))
            return batches[-1]

        return extract

    monkeypatch.setattr(fid, "inception_extractor", extractor)
    return batches


def test_fid_uses_the_runs_reference_statistics_cache(run_dir, trained, pooled_features, capsys):
    """--fid: FID between the model's samples and the reference split the run names
    (evaluation.fid_reference_split: test), whose statistics are cached where and under the name
    the run's own evaluation uses, and read from there the second time. The figure is the
    Fréchet distance computed with numpy and scipy from the very features extracted."""
    from scipy import linalg

    args = ["evaluate", str(run_dir), "--device", "cpu", "-n", "4", "--fid", "--fid-samples", "6"]
    assert main(args) == 0
    dataset = json.dumps(
        yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["dataset"], sort_keys=True
    )
    cache = fid.cache_file_for(trained.parent.parent / "fid-cache", dataset, "test", 16)
    assert torch.load(cache, weights_only=True)["count"] == 16
    reference = torch.cat(pooled_features[:4]).numpy()  # the 16 test images, in batches of 4
    first_samples = torch.cat(pooled_features[4:]).numpy()
    assert (len(reference), len(first_samples)) == (16, 6)
    pooled_features.clear()
    stamp = cache.stat().st_mtime_ns
    assert main(args) == 0
    second_samples = torch.cat(pooled_features).numpy()
    assert len(second_samples) == 6  # only the samples: the reference statistics came from the cache
    assert cache.stat().st_mtime_ns == stamp
    out = capsys.readouterr().out
    first, second = (json.loads(open(p).read()) for p in written(out))
    # the samples come from their own generator: the same whether the reference was read or cached
    np.testing.assert_array_equal(first_samples, second_samples)
    for record, samples in ((first, first_samples), (second, second_samples)):
        s1, s2 = np.cov(samples, rowvar=False), np.cov(reference, rowvar=False)
        expected = ((samples.mean(0) - reference.mean(0)) ** 2).sum() + np.trace(
            s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real
        )
        assert record["metrics"]["fid"] == pytest.approx(expected, rel=1e-6)
    assert first["fid"] == {"num_samples": 6, "temperature": 1.0, "reference_split": "test"}
    assert "(6 samples at T=1, reference: test split)" in out


@pytest.mark.slow  # 10-15 s on 2 cores: torch-fidelity's Inception-v3 on 20 images at 299x299
def test_fid_offline_with_torch_fidelitys_inception(run_dir, inception_weights, tmp_path, capsys):
    """The real extractor, loaded offline from a weights file (--fid-weights; random weights of
    the real layout here, as the real ones cannot be downloaded), runs end to end."""
    args = ["evaluate", str(run_dir), "--device", "cpu", "-n", "4", "--fid", "--fid-samples", "4"]
    assert main([*args, "--fid-weights", str(inception_weights)]) == 0
    (path,) = written(capsys.readouterr().out)
    assert math.isfinite(json.loads(open(path).read())["metrics"]["fid"])
