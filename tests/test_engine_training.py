"""The training loop on a tiny model: exact resume after Ctrl-C (SIGINT) and SIGTERM, divergence,
skipped steps, EMA, lifecycle hooks and the metrics log."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from engine_helpers import HeadSpectralNorm, NaNAfter, TinyVAE, ToyImages

import genzoo
from genzoo import PluginHost, PluginInfo
from genzoo.engine import EvalConfig, RunInfo, TrainConfig, evaluate, load_checkpoint, read_metrics, train
from genzoo.engine.guard import StepGuard
from genzoo.engine.signals import STOP_SIGNALS, StopSignals

QUICK_EVAL = EvalConfig(
    iw_samples=4, num_samples=4, temperatures=(0.8,), bn_readjust_iters=2, speed_batches=1
)


def _config(**changes) -> TrainConfig:
    base = dict(steps=30, batch_size=16, lr=3e-3, lr_warmup_steps=2, checkpoint_every=0, progress_bar=False)
    return TrainConfig(**{**base, **changes})


def _host(*plugins) -> PluginHost:
    host = PluginHost()
    for i, plugin in enumerate(plugins):
        host.register_plugin(
            plugin, PluginInfo(name=getattr(plugin, "name", f"test-plugin-{i}"), source="python")
        )
    return host


class SignalAt:
    """Sends this process a signal from the step-end hook: SIGINT as Ctrl-C would, SIGTERM as a
    scheduler would."""

    name = "signal"

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        self.at, self.signum = step, signum

    @genzoo.hookimpl
    def genzoo_step_end(self, step):
        if step == self.at:
            os.kill(os.getpid(), self.signum)


def _model(seed: int = 0) -> TinyVAE:
    torch.manual_seed(seed)
    return TinyVAE()


def test_ctrl_c_raises_after_the_checkpoint_and_the_resumed_run_matches_an_uninterrupted_one(
    tmp_path, request
):
    """From Python, Ctrl-C stops ``train()`` as it stops any script, with a KeyboardInterrupt, but
    only after the step in flight and its checkpoint; training again resumes from it."""
    # 48 images / 16 per batch = 3 steps per epoch, so the run stops in the middle of an epoch.
    config = _config(steps=40, ema_decay=0.9, eval_every=10, seed=3)
    data, test = ToyImages(48), ToyImages(16, seed=1)

    def fit(model, folder, *plugins):
        regularizers = [HeadSpectralNorm()]
        return train(
            model,
            data,
            test,
            config,
            folder,
            regularizers=regularizers,
            eval_config=QUICK_EVAL,
            host=_host(*plugins),
        )

    # the caller's Ctrl-C as an interactive Python has it, whatever started the tests (a
    # background job starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    straight_model = _model()
    straight = fit(straight_model, tmp_path / "a")

    with pytest.raises(KeyboardInterrupt) as ctrl_c:
        fit(_model(), tmp_path / "b", SignalAt(19))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is the caller's again
    stopped = ctrl_c.value.results  # the row, also in results.json: what stopped where
    assert stopped["status"] == "interrupted"
    assert stopped["step"] == 20  # the signal is acted on after the step in progress
    assert json.loads((tmp_path / "b" / "results.json").read_text())["status"] == "interrupted"
    assert not (tmp_path / "b" / "error.txt").exists()  # an interrupt is no failure
    checkpoint = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (checkpoint["step"], checkpoint["data"]) == (20, {"epoch": 6, "start": 32, "seed": 3})

    resumed_model = _model(seed=99)  # different initial weights: everything must come from the checkpoint
    resumed = fit(resumed_model, tmp_path / "b")
    assert (resumed["status"], resumed["resumed_from"], resumed["step"]) == ("finished", 20, 40)
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], abs=1e-5)
    assert resumed["test_nats_elbo"] == pytest.approx(straight["test_nats_elbo"], abs=1e-5)
    for (name, a), b in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    losses_a = [r["loss"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl", "train")]
    losses_b = [r["loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl", "train")]
    assert losses_b == pytest.approx(losses_a, abs=1e-5)


def test_non_finite_steps_are_skipped_and_a_run_that_keeps_failing_is_marked_diverged(tmp_path):
    model = _model()
    config = _config(steps=30, checkpoint_every=5, max_consecutive_skips=3)
    results = train(
        model, ToyImages(64), None, config, tmp_path, regularizers=[NaNAfter(start=5)], host=_host()
    )
    assert results["status"] == "diverged"
    assert (results["step"], results["skipped_nonfinite"]) == (8, 3)
    last_good = load_checkpoint(tmp_path / "checkpoint.pt")
    assert last_good["step"] == 5  # the last good checkpoint is kept, not overwritten
    # skipped steps did not touch the weights
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, last_good["model"][name], rtol=0, atol=0, msg=name)
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "diverged"


def test_a_loss_that_explodes_but_stays_finite_is_a_divergence_when_asked(tmp_path):
    # Every negative ELBO of this model is far above 1e-3 nats: with diverge_nelbo=1e-3 the run
    # has "exploded" from its first step and stops after max_consecutive_skips of them, skipping
    # nothing (the bound measures instability, it does not change training).
    config = _config(steps=30, max_consecutive_skips=4, diverge_nelbo=1e-3)
    results = train(_model(), ToyImages(64), None, config, tmp_path, host=_host())
    assert (results["status"], results["step"], results["skipped_steps"]) == ("diverged", 4, 0)
    assert results["reason"] == "negative ELBO above 0.001 nats for 4 steps in a row"
    unbounded = train(_model(), ToyImages(64), None, _config(steps=6), tmp_path / "default", host=_host())
    assert unbounded["status"] == "finished" and "reason" not in unbounded


def test_the_divergence_bound_counts_consecutive_steps_and_ignores_non_finite_ones():
    guard = StepGuard(skip_threshold=None, max_consecutive_skips=2, diverge_nelbo=100.0)
    guard.judge(loss_bad=False, grad_norm=1.0, nelbo=1e6)
    guard.judge(loss_bad=False, grad_norm=1.0, nelbo=50.0)  # back under the bound: count restarts
    guard.judge(loss_bad=True, grad_norm=1.0, nelbo=float("nan"))  # non-finite: the other rule
    assert not guard.diverged and guard.counters["consecutive_exploded"] == 0
    guard.judge(loss_bad=False, grad_norm=1.0, nelbo=1e6)
    verdict = guard.judge(loss_bad=False, grad_norm=1.0, nelbo=1e6)
    assert not verdict.skip and guard.diverged
    assert guard.divergence_reason == "negative ELBO above 100 nats for 2 steps in a row"


def test_a_few_bad_steps_are_counted_and_training_goes_on(tmp_path):
    results = train(
        _model(),
        ToyImages(64),
        None,
        _config(steps=12),
        tmp_path,
        regularizers=[NaNAfter(start=4, stop=6)],
        host=_host(),
    )
    assert (results["status"], results["skipped_nonfinite"], results["skipped_steps"]) == ("finished", 2, 2)
    skipped = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train") if r["skipped"]]
    assert skipped == [5, 6]


def test_steps_with_a_gradient_norm_above_the_threshold_are_skipped(tmp_path):
    model = _model()
    before = {
        k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "batches" not in k
    }
    results = train(model, ToyImages(64), None, _config(steps=6, skip_threshold=1e-3), tmp_path, host=_host())
    assert (results["status"], results["skipped_grad_norm"], results["skipped_nonfinite"]) == (
        "finished",
        6,
        0,
    )
    for name, value in before.items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0, msg=name)


class ParamRecorder:
    name = "recorder"

    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []
        self.calls: list[tuple] = []

    @genzoo.hookimpl
    def genzoo_run_start(self, run):
        self.calls.append(("run_start", run.step))

    @genzoo.hookimpl
    def genzoo_step_end(self, run, step, metrics):
        self.params.append({k: v.detach().clone() for k, v in run.model.named_parameters()})
        self.calls.append(("step_end", step, sorted(metrics)))

    @genzoo.hookimpl
    def genzoo_evaluation_end(self, run, step, metrics):
        self.calls.append(("evaluation_end", step, "test_bpd_elbo" in metrics))

    @genzoo.hookimpl
    def genzoo_run_end(self, run, results):
        assert isinstance(run, RunInfo) and run.out_dir.exists()
        self.calls.append(("run_end", results["status"]))


def test_ema_averages_the_weights_after_every_update_and_is_used_for_evaluation(tmp_path):
    recorder = ParamRecorder()
    decay = 0.8
    test = ToyImages(16, seed=1)
    results = train(
        _model(),
        ToyImages(64),
        test,
        _config(steps=5, ema_decay=decay),
        tmp_path,
        eval_config=QUICK_EVAL,
        host=_host(recorder),
    )
    expected = dict(recorder.params[0])
    for params in recorder.params[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * params[k] for k in expected}
    ema = load_checkpoint(tmp_path / "checkpoint.pt")["ema"]
    for name, value in expected.items():
        torch.testing.assert_close(ema[f"module.{name}"], value, msg=name)

    ema_model = TinyVAE()
    ema_model.load_state_dict({k.removeprefix("module."): v for k, v in ema.items() if k != "n_averaged"})
    assert evaluate(ema_model, test, QUICK_EVAL)["test_nats_elbo"] == pytest.approx(results["test_nats_elbo"])


def test_lifecycle_hooks_see_the_run_in_order(tmp_path):
    recorder = ParamRecorder()
    train(
        _model(),
        ToyImages(32),
        ToyImages(8),
        _config(steps=4, eval_every=2),
        tmp_path,
        eval_config=QUICK_EVAL,
        host=_host(recorder),
    )
    kinds = [c[0] for c in recorder.calls]
    assert kinds == [
        "run_start",
        "step_end",
        "step_end",
        "evaluation_end",
        "step_end",
        "step_end",
        "evaluation_end",
        "run_end",
    ]
    step_metrics = recorder.calls[1][2]
    assert {"loss", "bpd", "kl", "kl_coeff", "lr", "grad_norm", "skipped", "images_per_s"} <= set(
        step_metrics
    )
    assert recorder.calls[-1] == ("run_end", "finished")


class Boom:
    name = "boom-plugin"

    @genzoo.hookimpl
    def genzoo_step_end(self, step):
        raise RuntimeError("exploded")


def test_a_raising_hook_is_reported_with_the_plugin_name(tmp_path):
    with pytest.raises(genzoo.PluginHookError, match=r"'boom-plugin'.*genzoo_step_end.*exploded"):
        train(_model(), ToyImages(32), None, _config(steps=3), tmp_path, host=_host(Boom()))


def test_metrics_log_and_progress_bar(tmp_path, capsys):
    config = _config(steps=6, log_every=2, progress_bar=True)
    train(_model(), ToyImages(32), None, config, tmp_path, host=_host(), name="tiny-run")
    records = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all(r["bpd"] == pytest.approx(r["nelbo"] / (0.6931471805599453 * 64)) for r in records)
    bar = capsys.readouterr().err
    assert "tiny-run" in bar and "img/s" in bar and "6/6" in bar


def test_training_lowers_the_loss_and_reports_efficiency(tmp_path):
    results = train(
        _model(),
        ToyImages(128),
        ToyImages(32, seed=1),
        _config(steps=60, batch_size=32),
        tmp_path,
        eval_config=QUICK_EVAL,
        host=_host(),
    )
    first = read_metrics(tmp_path / "metrics.jsonl", "train")[0]["nelbo"]
    assert results["test_nats_elbo"] < 0.8 * first
    assert results["params"] == sum(p.numel() for p in TinyVAE().parameters())
    assert results["train_images_per_s"] > 0 and results["sampling_images_per_s"] > 0
    assert results["peak_memory_bytes"] > 0
    assert (tmp_path / "samples_t0.8.png").exists() and (tmp_path / "reconstructions.png").exists()


def test_channels_last_and_adamw_train(tmp_path):
    config = _config(steps=4, channels_last=True, optimizer="adamw", grad_clip=1.0)
    results = train(_model(), ToyImages(32), None, config, tmp_path, host=_host())
    assert results["status"] == "finished" and results["precision"] == "fp32"


def test_a_batch_larger_than_the_data_is_a_config_error(tmp_path):
    with pytest.raises(genzoo.ConfigError, match="batch_size=64"):
        train(_model(), ToyImages(32), None, _config(batch_size=64), tmp_path, host=_host())


def test_held_out_curve_at_fixed_images_seen_survives_a_resume(tmp_path):
    """``evaluation.curve_at_images``: the held-out ELBO and IW NLL at the first step that reaches
    each number of images seen (16 per step: 40 -> step 3, 100 -> step 7, 160 -> step 10) and at
    the end, as ``curve`` records; a run stopped and resumed logs the same points as one that was
    not, each once, with the same figures."""
    config = _config(steps=12, seed=2)
    curve = QUICK_EVAL.replace(curve_at_images=[160, 40, 100], curve_iw_samples=3, curve_max_images=8)
    data, test = ToyImages(48), ToyImages(16, seed=1)
    straight = train(_model(), data, test, config, tmp_path / "a", eval_config=curve, host=_host())
    assert straight["images_seen"] == 12 * 16
    sigterm = SignalAt(6, signal.SIGTERM)  # a scheduler's stop: train() returns the interrupted row
    stopped = train(_model(), data, test, config, tmp_path / "b", eval_config=curve, host=_host(sigterm))
    assert (stopped["status"], stopped["step"]) == ("interrupted", 7)  # stopped at a point of the curve
    train(_model(seed=5), data, test, config, tmp_path / "b", eval_config=curve, host=_host())
    runs = [read_metrics(tmp_path / run / "metrics.jsonl", "curve") for run in ("a", "b")]
    for records in runs:
        assert [(r["step"], r["images_seen"]) for r in records] == [(3, 48), (7, 112), (10, 160), (12, 192)]
        assert all(r["test_iw_samples"] == 3 and r["test_num_images"] == 8 for r in records)
        assert all(r["test_nats_iw"] <= r["test_nats_elbo"] + 1e-6 for r in records)
    for a, b in zip(*runs):
        assert b["test_nats_elbo"] == pytest.approx(a["test_nats_elbo"], abs=1e-5)


def test_training_images_per_second_leave_out_evaluations(monkeypatch):
    from genzoo.engine import efficiency

    now = [0.0]
    monkeypatch.setattr(efficiency.time, "perf_counter", lambda: now[0])
    throughput = efficiency.Throughput(warmup=1)
    for _ in range(3):
        throughput.step(10)
        now[0] += 1.0
    with throughput.paused():  # an evaluation of 5 s between steps
        now[0] += 5.0
    throughput.step(10)
    assert throughput.rate == pytest.approx(30 / 3.0)  # 3 steps of 10 images after the first, in 3 s


def test_a_stop_signal_the_process_ignores_stays_ignored(request):
    """A background job (``cmd &`` from a script) starts with SIGINT ignored; the trainer leaves
    it so, as POSIX tools do, and still stops cleanly on SIGTERM."""
    previous = {
        s: signal.signal(s, signal.SIG_IGN if s == signal.SIGINT else signal.SIG_DFL) for s in STOP_SIGNALS
    }
    request.addfinalizer(lambda: [signal.signal(s, h) for s, h in previous.items()])
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        signal.raise_signal(signal.SIGINT)
        assert stop.requested is None
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested == signal.SIGTERM
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (
        signal.SIG_IGN,
        signal.SIG_DFL,
    )
