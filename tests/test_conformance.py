"""Every registered component meets its kind's contract: :mod:`genzoo.testing` run over every key
the built-in plugins register (as timm's tests run over ``list_models()``), so a new component is
checked without a new test; then the example plugin's keys, and checks that the checks have teeth
(a component broken on purpose fails with a message that says what is wrong).

File-backed datasets get a tiny copy of their on-disk format written into ``tmp_path`` (no
downloads); a dataset key without one fails until it gets one.
"""

from __future__ import annotations

import ast
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from example_plugin import loaded_host
from PIL import Image
from torch import nn

import genzoo
import genzoo.testing
from genzoo.interfaces import LatentOutput
from genzoo_plugins.baselines.conv_cell import ConvResidualCell
from genzoo_plugins.baselines.plain_normal import PlainNormal, _normal
from genzoo_plugins.baselines.standard_vae import StandardVAE
from genzoo_plugins.nvae.likelihoods import Bernoulli
from genzoo_plugins.nvae.spectral import SpectralRegularizer


def builtin_registry() -> genzoo.Registry:
    """The built-in plugins alone: what is checked does not depend on what is installed."""
    host = genzoo.PluginHost()
    host.load_builtin()
    return host.registry


BUILTIN = builtin_registry()
COMPONENTS = [entry for entry in BUILTIN.list() if entry.kind != "dataset"]


def test_every_kind_has_a_check():
    assert set(genzoo.testing.CHECKS) == set(genzoo.KINDS)


@pytest.mark.parametrize("entry", COMPONENTS, ids=lambda e: f"{e.kind}:{e.key}")
def test_component_meets_its_kinds_contract(entry):
    genzoo.testing.CHECKS[entry.kind](entry.key, BUILTIN)


# -- datasets: a tiny copy of each format on disk --------------------------------------------------
def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> None:
    """An IDX file from the format's definition: magic (0, 0, type 0x08, ndim), sizes, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def noise(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def shapes_data(root, monkeypatch):
    return {"num_train": 8, "num_test": 4, "image_size": 16}, {"train": 8, "test": 4}


def mnist_data(root, monkeypatch):
    """The official file names, gzipped, 28x28 (binarized on reading)."""
    write_idx(root / "train-images-idx3-ubyte.gz", noise(6, 28, 28), compress=True)
    write_idx(root / "t10k-images-idx3-ubyte.gz", noise(4, 28, 28, seed=1), compress=True)
    return {"root": root}, {"train": 6, "test": 4}


def idx_data(root, monkeypatch):
    write_idx(root / "images.idx", noise(6, 5, 7))
    return {"root": root, "train_file": "images.idx", "train_range": [0, 4], "test_range": [4, 6]}, {
        "train": 4,
        "test": 2,
    }


def npz_data(root, monkeypatch):
    np.savez(root / "images.npz", train=noise(5, 8, 6, 3), test=noise(2, 8, 6, 3, seed=1))  # NHWC
    return {"file": root / "images.npz"}, {"train": 5, "test": 2}


def image_folder_data(root, monkeypatch):
    for i in range(5):
        Image.fromarray(noise(10, 12, 3, seed=i)).save(root / f"img{i}.png")
    return {"root": root, "image_size": 8, "test_fraction": 0.4}, {"train": 3, "test": 2}


def cifar10_data(root, monkeypatch):
    """torchvision's layout: pickled dicts of (N, 3072) uint8 rows. Its MD5 check is for the
    real files, so it is waved through."""
    import torchvision.datasets.cifar

    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        batch = {"data": noise(2, 3 * 32 * 32, seed=i), "labels": [0, 1]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(k) for k in range(10)]}))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    return {"root": root}, {"train": 10, "test": 2}


def celeba64_data(root, monkeypatch):
    """Aligned 178x218 images and the partition file (train, train, valid, test)."""
    images = root / "celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    for i, name in enumerate(("000001.png", "000002.png", "162771.png", "182638.png")):
        Image.fromarray(noise(218, 178, 3, seed=i)).save(images / name)
    (root / "celeba" / "list_eval_partition.txt").write_text(
        "000001.png 0\n000002.png 0\n162771.png 1\n182638.png 2\n"
    )
    return {"root": root}, {"train": 2, "test": 1}


DATASETS = {
    "data.shapes": shapes_data,
    "data.mnist": mnist_data,
    "data.idx": idx_data,
    "data.npz": npz_data,
    "data.image_folder": image_folder_data,
    "data.cifar10": cifar10_data,
    "data.celeba64": celeba64_data,
}
"""Dataset key -> ``(folder, monkeypatch) -> (options, lengths)``, writing its files."""


def test_every_dataset_key_has_data_to_check():
    missing = sorted(set(BUILTIN.keys("dataset")) - set(DATASETS))
    assert not missing, f"add a writer of tiny data for {missing} to DATASETS in {__file__}"
    assert not set(DATASETS) - set(BUILTIN.keys("dataset")), "DATASETS names keys nobody registers"


@pytest.mark.parametrize("key", BUILTIN.keys("dataset"))
def test_dataset_meets_the_contract(key, tmp_path, monkeypatch):
    if key not in DATASETS:
        pytest.fail(f"no tiny data for {key!r}: add a writer to DATASETS in {__file__}")
    options, lengths = DATASETS[key](tmp_path, monkeypatch)
    genzoo.testing.check_dataset(key, BUILTIN, lengths=lengths, **options)


# -- the example plugin, found through its entry point --------------------------------------------
def test_the_example_plugins_components_meet_their_contracts(example):
    registry = loaded_host().registry
    entries = registry.list("vdvae.*")
    assert [e.kind for e in entries] == ["cell", "metric"]
    for entry in entries:
        genzoo.testing.check(entry.key, registry)
    registry, keys = genzoo.testing.load_plugin("genzoo_vdvae")  # by module name, as a plugin's tests do
    assert keys == [e.key for e in entries] and "nvae.hierarchy" in registry


# -- the kit itself ----------------------------------------------------------------------------------
def test_a_factory_is_checked_with_the_registry_in_scope():
    genzoo.testing.check_cell(ConvResidualCell, BUILTIN)
    genzoo.testing.check_hierarchy(StandardVAE, BUILTIN, image_shape=(1, 8, 8), num_channels=4, latent_chs=2)


def test_the_options_override_the_example_and_the_kinds_keywords_are_refused():
    genzoo.testing.check_hierarchy("baselines.standard_vae", BUILTIN, image_shape=(3, 8, 8), num_channels=4)
    genzoo.testing.check_latent_group("nvae.residual_normal", BUILTIN, num_flows=1)  # a sampled KL
    with pytest.raises(TypeError, match=r"check_cell\(\) sets in_chs.*'in_chs'"):
        genzoo.testing.check_cell("nvae.residual_cell", BUILTIN, in_chs=3)
    with pytest.raises(genzoo.WrongKindError):
        genzoo.testing.check_cell("nvae.se", BUILTIN)
    with pytest.raises(genzoo.UnknownKeyError, match="nvae.residual_cell"):
        genzoo.testing.check("nvae.residual_cel", BUILTIN)


def test_the_callers_random_state_and_threads_are_left_alone():
    before, threads = torch.random.get_rng_state(), torch.get_num_threads()
    genzoo.testing.check_gate("nvae.se", BUILTIN)
    assert torch.equal(torch.random.get_rng_state(), before) and torch.get_num_threads() == threads


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:  # from genzoo import testing, too
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_the_kit_is_imported_only_on_request_and_needs_no_pytest():
    package = Path(genzoo.__file__).parent
    for path in package.rglob("*.py"):
        modules = imported_modules(path)
        if path.parent.name == "testing":
            assert not any(m.split(".")[0] == "pytest" for m in modules), path
        else:
            assert not any(m.startswith("genzoo.testing") for m in modules), path


# -- the checks have teeth: components broken on purpose -------------------------------------------
class UnusedParameterCell(ConvResidualCell):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.forgotten = nn.Parameter(torch.zeros(3))


class NoDownsamplingCell(ConvResidualCell):
    def forward(self, x):
        out = super().forward(x)
        return nn.functional.interpolate(out, scale_factor=2) if self.resample == "down" else out


class AttributeStateCell(ConvResidualCell):
    """Keeps a random offset in a plain attribute: not in the state_dict."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.offset = torch.randn(1).item()

    def forward(self, x):
        return super().forward(x) + self.offset


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (UnusedParameterCell, r"no gradient reaches the parameters \['forgotten'\]"),
        (
            NoDownsamplingCell,
            r"resample='down'.*the output has shape \(2, 4, 6, 4\); expected \(2, 4, 3, 2\)",
        ),
        (AttributeStateCell, "after loading the state_dict, a fresh instance gives other eval-mode outputs"),
    ],
)
def test_a_broken_cell_fails(cell, message):
    with pytest.raises(AssertionError, match=message):
        genzoo.testing.check_cell(cell, BUILTIN)


class ScaledKL(PlainNormal):
    """A closed-form KL off by a factor."""

    factor = 1.15

    def forward(self, enc_feature, dec_state):
        out = super().forward(enc_feature, dec_state)
        return LatentOutput(
            **{**vars(out), "kl": self.factor * out.kl, "kl_per_channel": self.factor * out.kl_per_channel}
        )


class ReversedKL(PlainNormal):
    """KL(p || q) in place of KL(q || p): the same at q = p, not elsewhere."""

    def forward(self, enc_feature, dec_state):
        z = super().forward(enc_feature, dec_state).z
        q = _normal(self.encoder_params(enc_feature))
        p = self._prior(dec_state, q.mu)
        return LatentOutput.from_elementwise(
            z, kl=p.kl(q), log_q=q.log_prob(z), log_p=p.log_prob(z), q_mean=q.mu
        )


class TemperatureBlindPrior(PlainNormal):
    def sample(self, dec_state, *, temperature=1.0, size=None):
        return super().sample(dec_state, temperature=1.0, size=size)


@pytest.mark.parametrize(
    ("group", "message"),
    [
        (ScaledKL, "disagrees with its Monte Carlo estimate"),
        (ReversedKL, "disagrees with its Monte Carlo estimate"),
        (TemperatureBlindPrior, "does not shrink with the temperature"),
    ],
)
def test_a_broken_latent_group_fails(group, message):
    with pytest.raises(AssertionError, match=message):
        genzoo.testing.check_latent_group(group, BUILTIN)


class UnnormalizedBernoulli(Bernoulli):
    def log_prob(self, params, x):
        return super().log_prob(params, x) - 0.01 * x.flatten(1).sum(1)  # a value's mass leaks


class HotBernoulli(Bernoulli):
    """The official code's mistake for the mixture, here: a lower temperature makes more noise."""

    def sample(self, params, temperature=1.0):
        return super().sample(params, 1.0 / temperature)


@pytest.mark.parametrize(
    ("likelihood", "message"),
    [
        (UnnormalizedBernoulli, "values of a pixel sum to"),
        (HotBernoulli, "does not shrink with the temperature"),
    ],
)
def test_a_broken_likelihood_fails(likelihood, message):
    with pytest.raises(AssertionError, match=message):
        genzoo.testing.check_likelihood(likelihood, BUILTIN)


class ForgetfulSpectral(SpectralRegularizer):
    """Saves nothing: a resume starts its power iteration over."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_a_regularizer_that_forgets_its_state_fails():
    with pytest.raises(AssertionError, match="after the state_dict round trip the loss at step 4"):
        genzoo.testing.check_regularizer(ForgetfulSpectral, BUILTIN)


class MiscountedVAE(StandardVAE):
    def parameter_counts(self):
        counts = super().parameter_counts()
        del counts["head"]
        return counts


def test_a_hierarchy_whose_parameter_counts_miss_a_part_fails():
    with pytest.raises(AssertionError, match=r"parameter_counts\(\) sums to"):
        genzoo.testing.check_hierarchy(
            MiscountedVAE, BUILTIN, image_shape=(1, 8, 8), num_channels=4, latent_chs=2
        )


class EightBitCodes(genzoo.ImageDataset):
    """Hands out the 0..255 codes instead of images in [0, 1]."""

    image_shape, num_bits = (1, 4, 4), 8

    def __init__(self, **options):
        pass

    def split(self, name):
        return [torch.randint(0, 256, (1, 4, 4)).float() for _ in range(3)]


def test_a_dataset_outside_the_unit_interval_fails():
    with pytest.raises(AssertionError, match=r"split 'train', item 0.*leaves \[0, 1\]"):
        genzoo.testing.check_dataset(EightBitCodes, BUILTIN)
    with pytest.raises(AssertionError, match="the split has 8 items; expected 6"):
        genzoo.testing.check_dataset("data.shapes", BUILTIN, lengths={"train": 6}, num_train=8, num_test=2)


class GradientMetric(genzoo.Metric):
    """Forgets eval mode and torch.no_grad()."""

    name = "broken.mean_elbo"

    def compute(self, model, batches):
        values = [model(x).elbo.mean().item() for x in batches]
        return {self.name: sum(values) / len(values)}


def test_a_metric_in_training_mode_with_gradients_fails():
    with pytest.raises(AssertionError, match="compute runs modules in training mode"):
        genzoo.testing.check_metric(GradientMetric, BUILTIN)


def test_a_metric_is_checked_on_the_probe_model_and_its_likelihood_is_normalized():
    class MeanELBO(GradientMetric):
        @torch.no_grad()
        def compute(self, model, batches):
            model.eval()
            return super().compute(model, batches)

    genzoo.testing.check_metric(MeanELBO, BUILTIN)
    registry = genzoo.Registry()
    registry.add("likelihood", "kit.categorical", genzoo.testing.metric.CategoricalPixels)
    genzoo.testing.check_likelihood("kit.categorical", registry)
    genzoo.testing.check_hierarchy(genzoo.testing.ProbeHierarchy, registry)
