"""One typed hand-off from the experiment layer to the engine: each run reaches the trainer as one
:class:`genzoo.engine.RunRequest`, built once, with its fingerprint computed once and the process
group joined once; the engine trusts the validated ``TrainConfig`` it holds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from engine_helpers import TinyVAE, ToyImages
from launcher_helpers import write_matrix

import genzoo.engine
from genzoo import ConfigError, PluginHost
from genzoo.engine import EvalConfig, RunRequest, TrainConfig, config, distributed, evaluator, train, trainer
from genzoo.experiment.config import spec
from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.run import runner
from genzoo.experiment.run.outputs import ExperimentDir

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = TrainConfig(steps=4, batch_size=8, device="cpu", precision="fp32", progress_bar=False)
QUICK_EVAL = EvalConfig(
    iw_samples=2, num_samples=2, temperatures=(1.0,), bn_readjust_iters=1, speed_batches=0
)


@pytest.fixture
def fingerprints(monkeypatch) -> Counter:
    """How many times each run's fingerprint is computed (by run id)."""
    computed: Counter = Counter()
    compute = spec.run_fingerprint

    def counting(run):
        computed[run.run_id] += 1
        return compute(run)

    monkeypatch.setattr(spec, "run_fingerprint", counting)
    return computed


@pytest.fixture
def joins(monkeypatch) -> Counter:
    """Who calls ``init_distributed`` (joins the process group), and how often."""
    calls: Counter = Counter()
    join = distributed.init_distributed
    for module in (distributed, runner, trainer, evaluator):

        def counting(device_type, _where=module.__name__):
            calls[_where] += 1
            return join(device_type)

        monkeypatch.setattr(module, "init_distributed", counting)
    return calls


@pytest.fixture
def requests(monkeypatch) -> list[RunRequest]:
    """Every request the experiment layer hands to the engine."""
    handed: list[RunRequest] = []
    train_request = genzoo.engine.train_request

    def recording(request, **options):
        handed.append(request)
        return train_request(request, **options)

    monkeypatch.setattr(genzoo.engine, "train_request", recording)
    return handed


def test_a_matrix_hands_each_run_to_the_engine_as_one_request(tmp_path, fingerprints, joins, requests):
    experiment = load_experiment(write_matrix(tmp_path))
    outcome = runner.run_matrix(experiment, tmp_path / "out", echo=lambda _: None)
    assert sorted(outcome.finished) == ["narrow/seed0", "wide/seed0"]

    # the output folder's checks, each run's claim, config.yaml and row of results share one hash
    assert fingerprints == {"wide/seed0": 1, "narrow/seed0": 1}
    # one join for the whole matrix, by the runner; the engine uses the group it is handed
    assert joins == {"genzoo.experiment.run.runner": 1}

    exp_dir = ExperimentDir(tmp_path / "out", experiment)
    assert [r.name for r in requests] == ["wide/seed0", "narrow/seed0"]
    for run, request in zip(experiment.runs, requests):
        paths = exp_dir.run_paths(run)
        assert isinstance(request, RunRequest) and request.dist is requests[0].dist
        assert (request.out_dir, request.seed, request.fingerprint) == (
            paths.dir,
            run.seed,
            run.fingerprint(),
        )
        assert request.config == run.training and request.eval_config == run.evaluation
        row = json.loads(paths.results.read_text())
        assert (
            row["fingerprint"] == yaml.safe_load(paths.config.read_text())["fingerprint"] == run.fingerprint()
        )
        assert (row["name"], row["run"], row["seed"], row["group"]) == (run.run_id, run.name, 0, "variant")


def test_a_launcher_job_computes_its_fingerprint_once_and_joins_once(tmp_path, fingerprints, joins, requests):
    from genzoo.experiment.run.job import RunJob

    file = write_matrix(tmp_path)
    run = load_experiment(file).runs[1]
    job = RunJob(
        experiment_text=file.read_text(),
        experiment_file=str(file),
        profile=None,
        overrides=[],
        experiment_name="matrix",
        run_name=run.name,
        seed=run.seed,
        fingerprint=run.fingerprint(),  # computed at submission, in another process
        out_root=str(tmp_path / "out"),
        cwd=str(tmp_path),
    )
    fingerprints.clear()
    one_process = SimpleNamespace(num_tasks=1, global_rank=0)
    assert job._run(one_process, SimpleNamespace(requested=False)) == "finished"

    assert fingerprints == {"narrow/seed0": 1}  # checked against the submitted one, then carried
    assert joins == {"genzoo.engine.distributed": 1}  # the job's, before it claims the run
    (request,) = requests
    assert (request.name, request.fingerprint) == ("narrow/seed0", run.fingerprint())


def test_train_builds_the_request_itself_and_its_trainer_joins_the_group(tmp_path, joins):
    results = train(
        TinyVAE(),
        ToyImages(32),
        ToyImages(8, seed=1),
        QUICK,
        tmp_path / "run",
        eval_config=QUICK_EVAL,
        host=PluginHost(),
        row_fields={"study": "a"},
    )
    assert results["status"] == "finished" and results["study"] == "a" and results["name"] == "run"
    assert "fingerprint" not in results  # a bare call has none: the runner would train it again
    assert joins == {"genzoo.engine.trainer": 1}  # the evaluations use the trainer's group

    request = RunRequest(TinyVAE(), ToyImages(32), None, QUICK, tmp_path / "other", fingerprint="abc")
    assert genzoo.engine.train_request(request)["fingerprint"] == "abc"


def test_a_request_refuses_what_is_not_a_model_or_a_config(tmp_path):
    with pytest.raises(TypeError, match="model is a str; expected a genzoo.Hierarchy"):
        RunRequest("nvae", ToyImages(8), None, QUICK, tmp_path)
    with pytest.raises(TypeError, match="config is a dict; expected a TrainConfig"):
        RunRequest(TinyVAE(), ToyImages(8), None, {"lr": 1e-3}, tmp_path)
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        train(TinyVAE(), ToyImages(8), None, QUICK, tmp_path, learning_rate=1e-3)


def test_a_bad_learning_rate_is_refused_once_by_the_config_naming_the_key(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^TrainConfig\.lr=0; expected a finite number > 0"):
        TrainConfig(lr=0)
    file = write_matrix(tmp_path)
    file.write_text(file.read_text().replace("lr: 0.005", "lr: -0.005"))
    with pytest.raises(ConfigError, match=r"matrix\.yaml:\d+:\d+: training\.lr: TrainConfig\.lr=-0\.005"):
        load_experiment(file)

    # past the config, nothing checks it again: not the optimizer, not the schedule
    checked: list[str] = []
    check_float = config.check_float
    monkeypatch.setattr(
        config, "check_float", lambda name, *a, **k: (checked.append(name), check_float(name, *a, **k))
    )
    train(TinyVAE(), ToyImages(32), None, QUICK, tmp_path / "run", host=PluginHost())
    assert "lr" not in checked


def test_the_schedule_uses_the_config_as_it_is(tmp_path):
    from genzoo.engine.optim import build_optimizer, build_scheduler

    cfg = TrainConfig(steps=10, lr=0.5, lr_min=0.05, lr_warmup_steps=2, optimizer="adamw")
    optimizer = build_optimizer(TinyVAE(), cfg)
    schedule = build_scheduler(optimizer, cfg).lr_lambdas[0]
    assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["lr"] == 0.5
    assert (schedule.lr, schedule.lr_min, schedule.warmup_steps, schedule.total_steps) == (0.5, 0.05, 2, 10)
    assert schedule.learning_rate(1) == pytest.approx(0.25) and schedule.learning_rate(10) == pytest.approx(
        0.05
    )


def test_request_fields_are_normalized(tmp_path: Path):
    request = RunRequest(TinyVAE(), ToyImages(8), None, QUICK, str(tmp_path / "run"), regularizers=[])
    assert request.out_dir == tmp_path / "run" and request.name == "run" and request.regularizers == ()
    assert request.results_fields() == {} and request.eval_config == EvalConfig() and request.dist is None
