"""FID: the Fréchet distance against scipy, streaming statistics against numpy, the cache of
reference statistics, and the whole path through torch-fidelity's Inception offline (its real
weights cannot be downloaded here: the ``inception_weights`` fixture saves a randomly
initialised network of the same layout, loaded as an offline machine loads the real file)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from engine_helpers import TinyVAE, ToyImages
from torch_fidelity import metric_fid

from genzoo import ConfigError
from genzoo.engine import fid, frechet_distance
from genzoo.engine.config import EvalConfig
from genzoo.engine.evaluator import evaluate
from genzoo.engine.fid import FeatureStatistics, cache_file_for, fid_score, inception_extractor, to_uint8_rgb


def _features(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(n, dim)) @ mixing + shift


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize(("dim", "shift"), [(8, 0.0), (16, 0.3), (32, 1.0)])
def test_frechet_distance_matches_scipy(dim, shift):
    a, b = _features(300, dim, seed=1), _features(200, dim, seed=2, shift=shift)
    ours = frechet_distance(
        torch.from_numpy(a.mean(0)),
        torch.from_numpy(np.cov(a, rowvar=False)),
        torch.from_numpy(b.mean(0)),
        torch.from_numpy(np.cov(b, rowvar=False)),
    )
    assert ours == pytest.approx(_scipy_fid(a, b), rel=1e-6, abs=1e-8)


def test_frechet_distance_of_a_distribution_to_itself_is_zero():
    a = _features(100, 6, seed=3)
    mu, sigma = torch.from_numpy(a.mean(0)), torch.from_numpy(np.cov(a, rowvar=False))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_streaming_statistics_equal_numpy_mean_and_covariance():
    a = _features(250, 5, seed=4)
    stats = FeatureStatistics()
    for chunk in np.array_split(a, 7):
        stats.update(torch.from_numpy(chunk).float())
    mu, sigma = stats.compute()
    np.testing.assert_allclose(mu.numpy(), a.astype(np.float32).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        sigma.numpy(), np.cov(a.astype(np.float32), rowvar=False), rtol=1e-5, atol=1e-6
    )


class CountingExtractor:
    """Stand-in for Inception: a fixed projection of the pooled uint8 RGB image."""

    def __init__(self) -> None:
        self.calls = 0
        self.projection = torch.randn(3 * 4 * 4, 10, generator=torch.Generator().manual_seed(0))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        self.calls += 1
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4)
        return pooled.flatten(1) @ self.projection


def test_reference_statistics_are_cached_per_dataset_and_reused(tmp_path):
    reference = torch.rand(64, 1, 8, 8)
    generated = (torch.rand(48, 1, 8, 8) > 0.5).float()
    cache = cache_file_for(tmp_path, "toy/mnist", "train", len(reference))
    assert cache.parent == tmp_path and "/" not in cache.name
    extractor = CountingExtractor()
    first = fid_score(
        generated.split(16), lambda: reference.split(16), extractor, torch.device("cpu"), cache_file=cache
    )
    assert extractor.calls == 4 + 3 and cache.exists()

    def no_reference_needed():
        raise AssertionError("reference images were read although their statistics are cached")

    second = fid_score(
        generated.split(16), no_reference_needed, extractor, torch.device("cpu"), cache_file=cache
    )
    assert extractor.calls == 7 + 3
    assert second == pytest.approx(first)
    assert torch.load(cache, weights_only=True)["count"] == 64
    same = fid_score(
        reference.split(16), lambda: reference.split(16), CountingExtractor(), torch.device("cpu")
    )
    assert abs(same) < 1e-6 < first


def test_grey_images_become_uint8_rgb():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    rgb = to_uint8_rgb(x)
    assert rgb.dtype == torch.uint8 and rgb.shape == (1, 3, 1, 3)
    assert rgb[0, :, 0].tolist() == [[0, 128, 255]] * 3


def test_without_the_fid_extra_the_error_says_what_to_install(monkeypatch):
    # torch-fidelity is a dev dependency, so its absence is simulated: a None entry in
    # sys.modules makes the import fail as it does where the extra is not installed.
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(ConfigError, match=r"pip install 'genzoo\[fid\]'"):
        inception_extractor(None, torch.device("cpu"))


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="fid_weights_path"):
        inception_extractor(str(tmp_path / "nope.pth"), torch.device("cpu"))


def test_agrees_with_torch_fidelity():
    a, b = _features(200, 12, seed=5), _features(150, 12, seed=6, shift=0.5)
    stats = [{"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)} for f in (a, b)]
    theirs = metric_fid.fid_statistics_to_metric(stats[0], stats[1], verbose=False)[metric_fid.KEY_METRIC_FID]
    ours = frechet_distance(
        *(torch.from_numpy(stats[0][k]) for k in ("mu", "sigma")),
        *(torch.from_numpy(stats[1][k]) for k in ("mu", "sigma")),
    )
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_torch_fidelity_inception_runs_from_a_local_weights_file(inception_weights):
    extract = inception_extractor(str(inception_weights), torch.device("cpu"))
    features = extract(to_uint8_rgb(torch.rand(2, 1, 28, 28)))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


def test_whole_fid_path_offline_equals_scipy_on_the_same_features(inception_weights, tmp_path, monkeypatch):
    """evaluate(fid=True) end to end, offline: torch-fidelity's Inception (random weights of the
    real layout) on the model's samples and on the reference split, the reference statistics
    cached and reused, and the figure computed from the very features the network produced."""
    features: list[np.ndarray] = []
    real_extractor = fid.inception_extractor

    def recording_extractor(weights_path, device):
        extract = real_extractor(weights_path, device)

        def record(images):
            out = extract(images)
            features.append(out.double().numpy())
            return out

        return record

    monkeypatch.setattr(fid, "inception_extractor", recording_extractor)
    torch.manual_seed(0)
    model = TinyVAE(image_shape=(1, 8, 8))
    reference = ToyImages(8, size=8)
    config = EvalConfig(
        batch_size=4,
        iw_samples=0,
        num_samples=0,
        speed_batches=0,
        bn_readjust=False,
        fid=True,
        fid_num_samples=6,
        fid_weights_path=str(inception_weights),
        fid_cache_dir=str(tmp_path / "fid"),
    )
    first = evaluate(model, reference, config, device="cpu", dataset_name="toy", seed=3)["fid"]
    (cache,) = (tmp_path / "fid").glob("toy-*.pt")
    assert torch.load(cache, weights_only=True)["count"] == 8
    assert [len(f) for f in features] == [4, 4, 4, 2]  # reference first, then the samples
    ref_features, gen_features = np.concatenate(features[:2]), np.concatenate(features[2:])
    # The figure is the Fréchet distance of numpy's mean and covariance of those very features
    # (the streaming statistics and the cache add nothing); the distance itself is checked
    # against scipy's sqrtm in test_frechet_distance_matches_scipy (a 2048x2048 sqrtm takes
    # minutes on 2 cores, too long for the default run).
    independent = frechet_distance(
        *(torch.from_numpy(v) for v in (gen_features.mean(0), np.cov(gen_features, rowvar=False))),
        *(torch.from_numpy(v) for v in (ref_features.mean(0), np.cov(ref_features, rowvar=False))),
    )
    assert first == pytest.approx(independent, rel=1e-6)

    # The cache serves a later evaluation: it holds those features' statistics, and reading it
    # needs no reference image.
    def no_images():
        raise AssertionError("the reference set was read again despite its cache")

    cached = fid.reference_statistics(no_images, None, torch.device("cpu"), cache_file=cache)
    np.testing.assert_allclose(cached["mu"].numpy(), ref_features.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        cached["sigma"].numpy(), np.cov(ref_features, rowvar=False), rtol=1e-5, atol=1e-9
    )
