"""Long engine tests (``pytest -m slow``): the real models trained for a few hundred steps on CPU
with NVAE's recipe, an exact resume of NVAE, and ``torch.compile``."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import TinyVAE, ToyImages

import genzoo
from genzoo import PluginHost
from genzoo.engine import EvalConfig, TrainConfig, evaluate, read_metrics, train

pytestmark = pytest.mark.slow

IMAGE_SHAPE = (1, 28, 28)
SMALL_NVAE = dict(
    num_channels=16,
    num_latent_scales=2,
    num_groups_per_scale=2,
    latent_chs=8,
    num_preprocess_blocks=1,
    num_preprocess_cells=1,
    num_postprocess_blocks=1,
    num_postprocess_cells=1,
    num_cells_per_group_enc=1,
    num_cells_per_group_dec=1,
)
MODELS = {
    "baselines.standard_vae": {"padding": 2},  # 28 + 2 * 2 = 32, divisible by its 2**3
    "nvae.hierarchy": SMALL_NVAE,
}
EVAL = EvalConfig(
    iw_samples=16,
    iw_batch_size=256,
    max_images=128,
    num_samples=16,
    temperatures=(0.7, 1.0),
    bn_readjust_iters=20,
    speed_batches=2,
)


def _create(kind: str, key: str, **options):
    try:
        return genzoo.create(kind, key, **options)
    except (genzoo.PluginLoadError, genzoo.UnknownKeyError) as exc:
        pytest.skip(f"{key} is not available yet: {exc}")


def _regularizers(key: str) -> list[genzoo.Regularizer]:
    if not key.startswith("nvae."):
        return []
    return [
        _create("regularizer", "nvae.spectral_regularizer", coeff=1e-2),
        _create("regularizer", "nvae.bn_weight_penalty", coeff=1e-2),
    ]


@pytest.mark.parametrize("key", sorted(MODELS))
def test_real_models_learn_with_the_nvae_recipe_on_cpu(key, tmp_path):
    torch.manual_seed(0)
    model = _create("hierarchy", key, image_shape=IMAGE_SHAPE, **MODELS[key])
    config = TrainConfig(
        steps=300,
        batch_size=32,
        lr=1e-2,
        lr_warmup_steps=20,
        precision="fp32",
        checkpoint_every=100,
        progress_bar=False,
    )
    results = train(
        model,
        ToyImages(1024, size=28),
        ToyImages(128, seed=1, size=28),
        config,
        tmp_path,
        regularizers=_regularizers(key),
        eval_config=EVAL,
        host=PluginHost(),
    )
    assert results["status"] == "finished" and results["skipped_steps"] == 0
    nelbo = [r["nelbo"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert sum(nelbo[-5:]) / 5 < 0.7 * sum(nelbo[:3]) / 3, nelbo
    assert results["test_nats_iw"] <= results["test_nats_elbo"]
    assert results["test_bpd_iw"] <= results["test_bpd_elbo"]
    for figure in ("params", "train_images_per_s", "sampling_images_per_s", "peak_memory_bytes"):
        assert results[figure] > 0, figure


def test_nvae_resumes_exactly(tmp_path):
    class StopAt:
        name = "stop-at-7"

        @genzoo.hookimpl
        def genzoo_step_end(self, step):
            if step == 7:
                trainer.request_stop()

    def fresh():
        torch.manual_seed(0)
        return _create("hierarchy", "nvae.hierarchy", image_shape=IMAGE_SHAPE, **SMALL_NVAE)

    data = ToyImages(96, size=28)
    config = TrainConfig(steps=16, batch_size=32, lr_warmup_steps=2, checkpoint_every=0, progress_bar=False)
    straight = train(
        fresh(), data, None, config, tmp_path / "a", regularizers=_regularizers("nvae."), host=PluginHost()
    )

    from genzoo.engine import Trainer
    from genzoo.plugin.registry import PluginInfo

    host = PluginHost()
    host.register_plugin(StopAt(), PluginInfo(name="stop-at-7", source="python"))
    trainer = Trainer(
        fresh(), data, None, config, tmp_path / "b", regularizers=_regularizers("nvae."), host=host
    )
    assert trainer.fit()["status"] == "interrupted"
    resumed = train(
        fresh(), data, None, config, tmp_path / "b", regularizers=_regularizers("nvae."), host=PluginHost()
    )
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], abs=1e-5)


def test_torch_compile_and_channels_last(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig(
        steps=8, batch_size=16, lr_warmup_steps=1, compile=True, channels_last=True, progress_bar=False
    )
    results = train(
        TinyVAE(),
        ToyImages(64),
        ToyImages(16),
        config,
        tmp_path,
        host=PluginHost(),
        eval_config=EvalConfig(iw_samples=2, num_samples=2, bn_readjust_iters=2, speed_batches=1),
    )
    assert results["status"] == "finished" and results["test_bpd_elbo"] > 0


def test_fid_through_evaluate_with_a_local_weights_file_and_a_cache(tmp_path, monkeypatch):
    inception = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with monkeypatch.context() as patch:  # random weights stand in for the real, undownloadable file
        patch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        net = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), tmp_path / "inception.pth")
    config = EvalConfig(
        iw_samples=0,
        num_samples=0,
        speed_batches=0,
        bn_readjust_iters=2,
        batch_size=8,
        fid=True,
        fid_num_samples=8,
        fid_weights_path=str(tmp_path / "inception.pth"),
        fid_cache_dir=str(tmp_path / "cache"),
        fid_reference_split="test",
    )
    scores = evaluate(TinyVAE(), ToyImages(8), config, dataset_name="toy")
    assert scores["fid"] >= 0 and list((tmp_path / "cache").iterdir())
