"""Engine settings: NVAE's defaults, and errors that name the field."""

from __future__ import annotations

import pytest

from genzoo import ConfigError
from genzoo.engine import EvalConfig, TrainConfig


def test_defaults_are_nvae_recipe():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.optimizer_eps, cfg.weight_decay) == ("adamax", 1e-3, 3e-4)
    assert (cfg.lr, cfg.lr_min) == (1e-2, 1e-4)
    assert (cfg.kl_anneal_portion, cfg.kl_const_portion, cfg.kl_const_coeff) == (0.3, 1e-4, 1e-4)
    assert (cfg.kl_balance, cfg.kl_balance_fun, cfg.precision) == (True, "square", "fp16")
    assert TrainConfig(optimizer="adamw").optimizer_eps == 1e-8
    assert EvalConfig().iw_samples == 1000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("batch_size", 2.5),
        ("optimizer", "sgd"),
        ("lr", -1.0),
        ("lr_min", 1.0),  # above lr
        ("lr_warmup_steps", 1000),  # not fewer than steps
        ("kl_anneal_portion", 1.5),
        ("kl_balance_fun", "cubic"),
        ("grad_clip", 0.0),
        ("ema_decay", 1.0),
        ("device", "tpu"),
        ("precision", "fp8"),
        ("betas", (0.9,)),
        ("channels_last", "yes"),
        ("cpu_threads", 0),
        ("cpu_threads", "all"),
        ("cpu_threads", True),
    ],
)
def test_bad_train_option_names_field_and_value(field, value):
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field}="):
        TrainConfig(**{field: value})


def test_cpu_threads_is_auto_by_default_and_a_count_changes_the_fingerprint():
    # auto is resolved when the run starts (genzoo.machine.cpu_share): not part of what a run hashes,
    # so runs from before the option existed keep their fingerprint
    assert TrainConfig().cpu_threads == "auto" and "cpu_threads" not in TrainConfig().changed()
    assert TrainConfig(cpu_threads=4).changed() == {"cpu_threads": 4}
    with pytest.raises(ConfigError, match=r"TrainConfig\.cpu_threads=0; expected 'auto' or an integer >= 1"):
        TrainConfig(cpu_threads=0)


@pytest.mark.parametrize(
    ("field", "value"), [("iw_samples", -1), ("temperatures", [0.0]), ("fid_reference_split", "val")]
)
def test_bad_eval_option_names_field(field, value):
    with pytest.raises(ConfigError, match=rf"EvalConfig\.{field}="):
        EvalConfig(**{field: value})


def test_from_dict_round_trips_and_names_unknown_keys_and_where():
    cfg = TrainConfig.from_dict({"steps": 10, "betas": [0.8, 0.9]})
    assert cfg.betas == (0.8, 0.9)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"exp\.yaml: train: unknown TrainConfig option\(s\) 'stepz'"):
        TrainConfig.from_dict({"stepz": 10}, where="exp.yaml: train")
    with pytest.raises(ConfigError, match=r"exp\.yaml: train: TrainConfig\.steps=-1"):
        TrainConfig.from_dict({"steps": -1}, where="exp.yaml: train")
