"""The latent API of a hierarchy: ``traverse``, ``encode``, ``decode``, per-group temperatures
in ``sample`` and ``reconstruct(keep_groups=k)`` (issue 27), on NVAE's hierarchy and the standard
VAE, built small (their registry ``example`` options) with seeded weights, in eval mode.

Most checks are exact: the API reuses each hierarchy's own encoder and decoder passes, so for
the same seed it draws the same numbers as ``forward`` and ``sample_params``.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import TinyVAE

import genzoo
import genzoo.testing
from genzoo.interfaces.hierarchy import LatentStep

torch.set_num_threads(1)

MODELS = {
    "nvae.hierarchy": (3, 16, 16),  # 4 groups over 2 scales, flows, 8-bit logistic mixture
    "baselines.standard_vae": (1, 16, 16),  # 1 group, N(0, I) prior, Bernoulli
}
TOP_PRIOR_SIGMA = {"nvae.hierarchy": 1.01, "baselines.standard_vae": 1.0}
"""NVAE's top prior is N(0, 1.01^2) (exp(0) plus its 1e-2 floor); the plain normal's N(0, 1)."""


@pytest.fixture(scope="module", params=list(MODELS))
def key(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(key) -> genzoo.Hierarchy:
    registry = genzoo.get_registry()
    torch.manual_seed(0)
    example = registry.get("hierarchy", key).example
    return registry.create("hierarchy", key, image_shape=MODELS[key], **example).eval()


@pytest.fixture(scope="module")
def images(model) -> torch.Tensor:
    top = 2**model.likelihood.num_bits - 1
    codes = torch.randint(0, top + 1, (4, *model.image_shape), generator=torch.Generator().manual_seed(1))
    return codes / top


def seeded(seed, fn):
    torch.manual_seed(seed)
    with torch.no_grad():
        return fn()


def spy_on_traverse(model, monkeypatch) -> list[dict]:
    """Record every step of the model's next passes: its group, whether ``draw`` asked for the
    posterior, and the standardized value of the ``z`` it returned."""
    records: list[dict] = []
    original = model.traverse

    def traverse(draw, **kwargs):
        def recorded(step: LatentStep) -> torch.Tensor:
            record = {"index": step.index, "posterior": False}
            posterior = step.posterior

            def asked() -> genzoo.LatentOutput:
                record["posterior"] = True
                return posterior()

            step.posterior = asked
            z = draw(step)
            record["eps"] = step.standardize(z)
            records.append(record)
            return z

        return original(recorded, **kwargs)

    monkeypatch.setattr(model, "traverse", traverse)
    return records


# -- traverse and encode are faithful to forward ---------------------------------------------------
def test_traverse_with_posterior_draws_is_forward(model, images):
    out = seeded(5, lambda: model(images))
    params = seeded(5, lambda: model.traverse(lambda step: step.posterior().z, x=images))
    assert torch.equal(params, out.params)


def test_encode_returns_forwards_draws_and_decode_of_its_eps_gives_them_back(model, images):
    out = seeded(5, lambda: model(images))
    code = seeded(5, lambda: model.encode(images))
    assert len(code.z) == len(code.eps) == len(model.groups)
    assert torch.equal(code.params, out.params)
    for mine, theirs in zip(code.latents, out.latents):
        assert torch.equal(mine.z, theirs.z) and torch.equal(mine.kl, theirs.kl)
    with torch.no_grad():
        assert torch.equal(model.decode(code.z, standardized=False), out.params)
        torch.testing.assert_close(model.decode(code.eps), out.params, rtol=1e-5, atol=1e-5)


def test_the_top_groups_eps_is_z_over_its_fixed_prior_sigma(key, model, images):
    """An independent reference for the standardization: the top group's fixed prior."""
    code = seeded(5, lambda: model.encode(images))
    torch.testing.assert_close(code.eps[0], code.z[0] / TOP_PRIOR_SIGMA[key], rtol=1e-6, atol=1e-6)


# -- temperature in every group (NVAE PR #55) ------------------------------------------------------
def test_sample_params_honours_the_temperature_of_every_group(model):
    """``sample_params`` (each hierarchy's own sampler, through each group's ``sample``) draws the
    same numbers as the API's prior draws at the same temperature; the next test shows those
    are scaled by the temperature in every group. A sampler that ignores the temperature
    below the top group, as NVAE's did before PR #55, gives other parameters here."""
    for t in (0.5, 0.8):
        ours = seeded(7, lambda t=t: model.decode(num_samples=6, temperature=t))
        theirs = seeded(7, lambda t=t: model.sample_params(6, t))
        assert torch.equal(ours, theirs), t
    per_group = seeded(8, lambda: model.sample(6, [0.8] * len(model.groups), output_temperature=0.8))
    assert torch.equal(per_group, seeded(8, lambda: model.sample(6, 0.8)))


def test_each_group_is_drawn_at_its_own_temperature(model, monkeypatch):
    """The standardized prior draws of each group have the standard deviation of its own
    temperature (64 samples: at least 4096 values a group, so 5% is over 4 standard errors),
    and a group at temperature 0 gets its prior mean exactly."""
    records = spy_on_traverse(model, monkeypatch)
    n = len(model.groups)
    temperatures = [0.3 + 0.6 * i / max(n - 1, 1) for i in range(n)]
    seeded(9, lambda: model.sample(64, temperatures))
    assert [r["index"] for r in records] == list(range(n))
    for record, t in zip(records, temperatures):
        eps = record["eps"]
        assert abs(eps.std().item() / t - 1) < 0.05, (record["index"], eps.std().item(), t)
        assert abs(eps.mean().item()) < 0.05 * t
    for cold in range(n):
        records.clear()
        seeded(10, lambda cold=cold: model.sample(4, [0.0 if i == cold else 1.0 for i in range(n)]))
        stds = [r["eps"].std().item() for r in records]
        assert torch.equal(records[cold]["eps"], torch.zeros_like(records[cold]["eps"])), stds
        assert all(s > 0.5 for i, s in enumerate(stds) if i != cold), stds


# -- reconstructions that keep the top groups ------------------------------------------------------
def test_reconstruct_keeps_the_posterior_of_exactly_the_top_k_groups(model, images, monkeypatch):
    n = len(model.groups)
    code = seeded(11, lambda: model.encode(images))
    for k in range(n):
        # the top k draws are encode's (the same draws in the same order), the rest the prior means
        top_k = code.z[:k]
        params = seeded(
            11, lambda top_k=top_k: model.decode(top_k, standardized=False, temperature=0.0, num_samples=4)
        )
        expected = model.likelihood.mean(params)
        got = seeded(11, lambda k=k: model.reconstruct(images, keep_groups=k, temperature=0.0))
        assert torch.equal(got, expected), k
    records = spy_on_traverse(model, monkeypatch)
    for k in range(n):
        records.clear()
        seeded(12, lambda k=k: model.reconstruct(images, keep_groups=k, temperature=0.5))
        assert [r["posterior"] for r in records] == [i < k for i in range(n)]
    monkeypatch.undo()
    full = seeded(13, lambda: model.likelihood.mean(model(images).params))
    assert torch.equal(seeded(13, lambda: model.reconstruct(images)), full)
    assert torch.equal(seeded(13, lambda: model.reconstruct(images, keep_groups=n)), full)


# -- what is refused, by name ----------------------------------------------------------------------
def test_bad_arguments_are_named(model, images):
    n = len(model.groups)
    info = model.groups[0]
    with torch.no_grad():
        with pytest.raises(genzoo.ConfigError, match=r"temperature=\[1\.0, 1\.0, 1\.0, 1\.0, 1\.0\]"):
            model.sample(2, [1.0] * 5)
        with pytest.raises(genzoo.ConfigError, match="temperature=-1"):
            model.decode(num_samples=2, temperature=-1)
        with pytest.raises(genzoo.ConfigError, match=f"at most one per latent group \\({n}\\)"):
            model.decode([None] * (n + 1), num_samples=2)
        with pytest.raises(genzoo.ConfigError, match="num_samples=None; expected the batch size"):
            model.decode()
        with pytest.raises(
            genzoo.ConfigError, match=r"latents\[0\]=\(2, 1, 1, 1\); expected a tensor of shape"
        ):
            model.decode([torch.zeros(2, 1, 1, 1)])
        with pytest.raises(
            genzoo.ConfigError, match=f"keep_groups={n + 1}; expected an integer in \\[0, {n}\\]"
        ):
            model.reconstruct(images, keep_groups=n + 1)
        with pytest.raises(
            genzoo.ConfigError, match="give images x or num_samples, exactly one \\(got both\\)"
        ):
            model.traverse(lambda step: step.sample_prior(), x=images, num_samples=2)
        with pytest.raises(genzoo.GenzooError, match="no posterior in a pass without images"):
            model.traverse(lambda step: step.posterior().z, num_samples=2)
        z = model.decode([torch.zeros(2, info.latent_chs, info.height, info.width)])
        assert z.shape[0] == 2


def test_a_hierarchy_or_group_without_the_api_says_which_and_still_samples():
    model = TinyVAE().eval()
    with pytest.raises(genzoo.GenzooError, match="hierarchy TinyVAE does not implement Hierarchy.traverse"):
        model.encode(torch.zeros(2, 1, 8, 8))
    assert model.sample(3, 0.5).shape == (3, 1, 8, 8)  # a float temperature needs no traverse

    class OldGroup(genzoo.LatentGroup):
        def forward(self, enc_feature, dec_state):
            raise NotImplementedError

        def sample(self, dec_state, *, temperature=1.0, size=None):
            raise NotImplementedError

    with pytest.raises(genzoo.GenzooError, match="latent group .*OldGroup does not expose its prior"):
        OldGroup(enc_chs=1, dec_chs=1, latent_chs=1).prior_distribution(None, size=(1, 1, 1))


# -- the conformance kit checks the API where it is implemented ----------------------------------
class ColdBelowTheTop(genzoo.get_registry().get("hierarchy", "nvae.hierarchy").factory):
    """NVAE's sampler before PR #55: the temperature reaches the top group only."""

    def sample_params(self, num_samples, temperature=1.0):
        groups, top = list(self.latent_groups), self.groups[0]
        z = groups[0].sample(None, temperature=temperature, size=(num_samples, top.height, top.width))
        return self._decode(z, lambda i, state: groups[i].sample(state))


def test_the_kit_fails_a_sampler_that_ignores_the_temperature_below_the_top():
    example = dict(genzoo.get_registry().get("hierarchy", "nvae.hierarchy").example)
    with pytest.raises(AssertionError, match="sample_params ignores the temperature of a group"):
        genzoo.testing.check_hierarchy(ColdBelowTheTop, image_shape=(1, 16, 16), **example)
