"""Experiment tracking: MLflow and Weights & Biases besides TensorBoard (``logging:`` in an
experiment file, :class:`genzoo.engine.config.LoggingConfig` from Python), all offline: MLflow
writes a file store under the test's folder, W&B runs in offline mode and its run file is read
back here, without W&B's API or any server. What is checked against what: the trackers' metric
histories against the run's own ``metrics.jsonl``, their final figures against ``results.json``,
their images against the grids in the run folder."""

from __future__ import annotations

import json
import struct
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from engine_helpers import TinyVAE, ToyImages

import genzoo
from genzoo import ConfigError, PluginHost
from genzoo.cli import main as cli_main
from genzoo.engine import EvalConfig, RunRequest, TrainConfig, read_metrics, train_request
from genzoo.engine.config import LoggingConfig
from genzoo.engine.logging import RunLogger
from genzoo.engine.trackers import TrackedRun, Tracker, flatten
from genzoo.experiment.config.spec import load_experiment

QUICK = TrainConfig(steps=4, batch_size=8, log_every=1, device="cpu", precision="fp32", progress_bar=False)
QUICK_EVAL = EvalConfig(
    iw_samples=2,
    num_samples=4,
    temperatures=(1.0,),
    bn_readjust_iters=1,
    speed_batches=0,
    num_reconstructions=2,
)
OFFLINE = {
    "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 writes a folder store only when asked to
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB__DISABLE_STATS": "true",  # W&B's private settings: no system metrics, no machine facts
    "WANDB__DISABLE_META": "true",
    "WANDB__DISABLE_MACHINE_INFO": "true",
}


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory):
    """No tracker of this module reaches a network: MLflow's and W&B's telemetry off, W&B offline
    with its files, cache and config under the test's folder."""
    home = tmp_path_factory.mktemp("wandb-home")
    folders = {"WANDB_DIR": home, "WANDB_CACHE_DIR": home / "cache", "WANDB_CONFIG_DIR": home / "config"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**OFFLINE, **folders, "WANDB_DATA_DIR": home / "data"}.items():
            mp.setenv(name, str(value))
        yield


def mlflow_client(store: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.as_uri())


def request(out_dir: Path, logging: LoggingConfig, *, config=QUICK, test=True, regularizers=()) -> RunRequest:
    torch.manual_seed(0)
    return RunRequest(
        model=TinyVAE(),
        train_data=ToyImages(32),
        test_data=ToyImages(8, seed=1) if test else None,
        config=config,
        eval_config=QUICK_EVAL,
        out_dir=out_dir,
        name="toy/seed0",
        regularizers=regularizers,
        host=PluginHost(),
        logging=logging,
    )


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One run of the toy hierarchy (4 steps and the final evaluation) tracked by TensorBoard,
    MLflow and W&B at once, the way an experiment file's ``logging: {backends: [tensorboard,
    mlflow, wandb]}`` asks."""
    root = tmp_path_factory.mktemp("tracked")
    logging = LoggingConfig(
        backends=("tensorboard", "mlflow", "wandb"),
        mlflow={"tracking_uri": (root / "mlruns").as_uri(), "experiment": "toy", "tags": {"team": "vae"}},
        wandb={"mode": "offline", "project": "toy", "group": "toy", "tags": ["smoke"]},
    )
    results = train_request(request(root / "run", logging))
    assert results["status"] == "finished"
    return root


# -- TensorBoard --------------------------------------------------------------------------------
def tensorboard_events(run_dir: Path):
    """The run's TensorBoard events as TensorBoard itself reads them (its EventAccumulator, which
    drops the events a resumed writer purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_holds_the_scalars_at_their_steps_the_grids_and_the_results(tracked):
    run_dir = tracked / "run"
    events = tensorboard_events(run_dir)
    train = read_metrics(run_dir / "metrics.jsonl", "train")
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    results = json.loads((run_dir / "results.json").read_text())
    (elbo,) = events.Scalars("eval/test_nats_elbo")
    assert elbo.step == 4 and elbo.value == pytest.approx(results["test_nats_elbo"], rel=1e-6)
    images = events.Tags()["images"]
    assert sorted(images) == ["images/reconstructions", "images/samples_t1"]
    from PIL import Image

    (image,) = events.Images("images/samples_t1")
    with Image.open(run_dir / "samples_t1.png") as grid:
        assert (image.width, image.height) == grid.size
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    text = EventMultiplexer({"run": str(run_dir / "tensorboard")})
    text.Reload()
    (tensor,) = text.Tensors("run", "results/text_summary")
    table = tensor.tensor_proto.string_val[0].decode()
    assert f"| test_nats_elbo | {results['test_nats_elbo']} |" in table


def test_a_resumed_run_purges_the_tensorboard_steps_it_trains_again(tmp_path):
    """A crash in step 6 of 6 after the checkpoint at step 3: the resumed session trains steps 4
    and 5 again, and TensorBoard shows each step once, with the resumed session's values."""
    logging = LoggingConfig(backends=("tensorboard",))
    config = QUICK.replace(steps=6, checkpoint_every=3)
    with pytest.raises(RuntimeError, match="crash in step 6"):
        train_request(
            request(tmp_path / "run", logging, config=config, test=False, regularizers=[CrashAt(6)])
        )
    assert [e.step for e in tensorboard_events(tmp_path / "run").Scalars("train/loss")] == [1, 2, 3, 4, 5]
    train_request(request(tmp_path / "run", logging, config=config, test=False, regularizers=[CrashAt(None)]))
    loss = tensorboard_events(tmp_path / "run").Scalars("train/loss")
    own = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")
    assert [e.step for e in loss] == [r["step"] for r in own] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in own], rel=1e-5)


# -- MLflow -------------------------------------------------------------------------------------
def test_mlflow_holds_the_config_the_scalars_at_their_steps_the_results_and_the_grids(tracked):
    run_dir = tracked / "run"
    ids = json.loads((run_dir / "trackers.json").read_text())
    client = mlflow_client(tracked / "mlruns")
    run = client.get_run(ids["mlflow"]["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "toy"
    assert run.info.run_name == "toy/seed0" and run.info.status == "FINISHED"
    assert run.data.tags["team"] == "vae" and run.data.tags["genzoo.status"] == "finished"

    # params: the resolved run config, nested keys dotted, as train_config.json has it
    ran = json.loads((run_dir / "train_config.json").read_text())
    assert run.data.params["train.lr"] == str(ran["train"]["lr"]) == str(QUICK.lr)
    assert run.data.params["eval.iw_samples"] == "2"
    assert run.data.params["cpu_threads.threads"] == str(ran["cpu_threads"]["threads"])

    # every training record at its step, with the value metrics.jsonl has
    train = read_metrics(run_dir / "metrics.jsonl", "train")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [r["step"] for r in train] == [1, 2, 3, 4]
    by_step = {m.step: m.value for m in history}
    assert all(by_step[r["step"]] == pytest.approx(r["loss"], rel=1e-6) for r in train)
    kl = client.get_metric_history(run.info.run_id, "train/kl_group_1")
    assert [m.value for m in kl] == pytest.approx([r["kl_group_1"] for r in train], rel=1e-6)

    # the final evaluation at the last step, and results.json's numbers as metrics of their own
    results = json.loads((run_dir / "results.json").read_text())
    (elbo,) = client.get_metric_history(run.info.run_id, "eval/test_nats_elbo")
    assert elbo.step == 4 and elbo.value == pytest.approx(results["test_nats_elbo"], rel=1e-6)
    assert run.data.metrics["test_bpd_iw"] == pytest.approx(results["test_bpd_iw"], rel=1e-6)
    assert run.data.metrics["params"] == results["params"] > 0

    # the evaluator's grids, byte for byte
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id, "grids"))
    assert names == ["grids/reconstructions.png", "grids/samples_t1.png"]
    local = Path(client.download_artifacts(run.info.run_id, "grids/samples_t1.png", str(tracked)))
    assert local.read_bytes() == (run_dir / "samples_t1.png").read_bytes()


# -- W&B ------------------------------------------------------------------------------------------
def wandb_records(path: Path):
    """The records of a W&B run file (``run-<id>.wandb``), read without W&B's API: a 7-byte
    header (``:W&B``, magic, version), then LevelDB's log format (32 KiB blocks of chunks, each
    with a 7-byte header: CRC-32, length, type; full = 1, first = 2, middle = 3, last = 4), each
    record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending = 7, 32 * 1024, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding up to the block's end
            pos += block - pos % block
            continue
        if pos + 7 + length > len(data):
            return  # a record still being written
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_run(folder: Path, run_id: str) -> dict:
    """What the offline run files of ``run_id`` under ``folder`` hold: the config, each history
    row by step (in the order written, across resumed sessions) and the last summary values."""
    files = sorted(folder.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert files, f"no offline run {run_id} under {folder}"
    sessions = [written(file) for file in files]
    config, rows, summary = {}, [], {}
    for records in sessions:
        for record in records:
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            elif kind == "history":
                rows.append((record.history.step.num, nested(record.history.item)))
            elif kind == "summary":
                summary.update(nested(record.summary.update))
    return {"files": files, "config": config, "history": rows, "summary": summary}


def written(file: Path, timeout: float = 30.0) -> list:
    """The records of ``file`` once its session's ``exit`` record is there: W&B's service
    process writes the file, and may still be writing when ``finish()`` has returned."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(file))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def nested(items) -> dict:
    """W&B's ``(nested_key or key, value_json)`` items as a mapping (an image's fields nest
    under its name)."""
    out: dict = {}
    for item in items:
        *parents, leaf = list(item.nested_key) or [item.key]
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = json.loads(item.value_json)
    return out


def test_wandb_offline_run_holds_the_config_the_history_the_results_and_the_grids(tracked):
    run_dir = tracked / "run"
    ids = json.loads((run_dir / "trackers.json").read_text())["wandb"]
    assert ids["mode"] == "offline" and ids["project"] == "toy"
    run = wandb_run(run_dir, ids["run_id"])  # W&B writes into the run's folder by default
    ran = json.loads((run_dir / "train_config.json").read_text())
    assert run["config"]["train"]["lr"] == ran["train"]["lr"] == QUICK.lr
    assert run["config"]["eval"]["temperatures"] == [1.0]

    train = read_metrics(run_dir / "metrics.jsonl", "train")
    logged = [(step, row["train/loss"]) for step, row in run["history"] if "train/loss" in row]
    assert [step for step, _ in logged] == [r["step"] for r in train] == [1, 2, 3, 4]
    assert [loss for _, loss in logged] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    results = json.loads((run_dir / "results.json").read_text())
    last_step, last = run["history"][-1]  # the final evaluation and its grids join step 4's row
    assert last_step == 4 and last["train/loss"] == pytest.approx(train[-1]["loss"], rel=1e-6)
    assert last["eval/test_nats_elbo"] == pytest.approx(results["test_nats_elbo"], rel=1e-6)
    image = last["images/samples_t1"]
    assert image["_type"] == "image-file"
    media = run["files"][0].parent / "files" / image["path"]
    assert media.read_bytes() == (run_dir / "samples_t1.png").read_bytes()
    assert run["summary"]["test_bpd_elbo"] == pytest.approx(results["test_bpd_elbo"], rel=1e-6)
    assert run["summary"]["status"] == "finished"


# -- resume -------------------------------------------------------------------------------------
class CrashAt(genzoo.Regularizer):
    """A regularizer that raises in step ``at`` (counted from 1, as the metrics log counts): a
    crash after the last checkpoint, so that a resumed run trains the steps between them again."""

    def __init__(self, at: int | None) -> None:
        super().__init__(coeff=0.0)
        self.at = at

    def penalty(self, model) -> torch.Tensor:
        return next(model.parameters()).sum() * 0.0

    def loss(self, model, progress: genzoo.TrainProgress) -> torch.Tensor:
        if progress.step + 1 == self.at:  # progress.step: the steps done before this one
            raise RuntimeError(f"crash in step {self.at}")
        return super().loss(model, progress)


def test_a_resumed_run_continues_its_mlflow_run_and_sends_no_step_twice(tmp_path):
    """A crash in step 6 of 6 (checkpoint at step 3, steps 1-5 logged): the resumed session
    trains steps 4 and 5 again but MLflow, which cannot forget a point, is sent only 6 onwards;
    its one run goes from FAILED to FINISHED, and its history equals the run's own log."""
    store = tmp_path / "mlruns"
    logging = LoggingConfig(backends=("mlflow",), mlflow={"tracking_uri": store.as_uri()})
    config = QUICK.replace(steps=6, checkpoint_every=3)
    with pytest.raises(RuntimeError, match="crash in step 6"):
        train_request(
            request(tmp_path / "run", logging, config=config, test=False, regularizers=[CrashAt(6)])
        )
    run_id = json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"]["run_id"]
    client = mlflow_client(store)
    assert client.get_run(run_id).info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4, 5]

    results = train_request(
        request(tmp_path / "run", logging, config=config, test=False, regularizers=[CrashAt(None)])
    )
    assert (results["status"], results["resumed_from"]) == ("finished", 3)
    assert json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"]["run_id"] == run_id
    (experiment,) = [e for e in client.search_experiments() if e.name == "Default"]
    assert len(client.search_runs([experiment.experiment_id])) == 1
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["genzoo.status"] == "finished"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
    own = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "train")]
    assert [step for step, _ in history] == [step for step, _ in own] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in history] == pytest.approx([v for _, v in own], rel=1e-5)  # resumes are exact


@pytest.mark.slow  # MLflow creates a new database's tables first (seconds)
def test_mlflow_logs_to_a_database_store_as_mlflow_3_does_by_default(tmp_path):
    """``sqlite:///...``, MLflow 3's default store, works with the ``mlflow`` extra (MLflow's
    client with SQLAlchemy and Alembic, without its server)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logging = LoggingConfig(backends=("mlflow",), mlflow={"tracking_uri": uri, "experiment": "db"})
    train_request(request(tmp_path / "run", logging, test=False))
    run_id = json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"]["run_id"]
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]


@pytest.mark.slow  # a second W&B session (its service starts again: seconds)
def test_a_resumed_run_continues_its_wandb_run(tmp_path):
    """W&B offline: the resumed session writes a second offline folder with the same run id,
    whose history starts after the steps the first one has."""
    logging = LoggingConfig(backends=("wandb",), wandb={"mode": "offline"})
    config = QUICK.replace(steps=6, checkpoint_every=3)
    with pytest.raises(RuntimeError, match="crash in step 6"):
        train_request(
            request(tmp_path / "run", logging, config=config, test=False, regularizers=[CrashAt(6)])
        )
    first = json.loads((tmp_path / "run" / "trackers.json").read_text())["wandb"]["run_id"]
    train_request(request(tmp_path / "run", logging, config=config, test=False, regularizers=[CrashAt(None)]))
    assert json.loads((tmp_path / "run" / "trackers.json").read_text())["wandb"]["run_id"] == first
    run = wandb_run(tmp_path / "run", first)
    assert len(run["files"]) == 2
    assert [step for step, row in run["history"] if "train/loss" in row] == [1, 2, 3, 4, 5, 6]


# -- the experiment file ------------------------------------------------------------------------
EXPERIMENT = """\
name: tracked
seeds: [0, 1]
data:
  dataset: {key: data.shapes, image_size: 16}
logging:
  backends: [mlflow]
  mlflow: {tracking_uri: "sqlite:///mlflow.db"}
variants:
  vae:
    hierarchy: baselines.standard_vae
  watched:
    hierarchy: baselines.standard_vae
    logging:
      backends: [mlflow, wandb]
      wandb: {mode: offline, tags: [small]}
"""


def write(tmp_path, text=EXPERIMENT) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_experiment_file_chooses_trackers_for_all_runs_or_per_variant(tmp_path):
    """``logging`` merges as ``training`` does: the variant's keys over the file's; what the file
    leaves open is named after the experiment (MLflow experiment, W&B project) and the run (W&B
    group, so that seeds group together). Trackers never change a run's fingerprint."""
    runs = {r.run_id: r for r in load_experiment(write(tmp_path)).runs}
    vae, watched = runs["vae/seed1"].logging, runs["watched/seed1"].logging
    assert vae.backends == ("mlflow",) and watched.backends == ("mlflow", "wandb")
    assert vae.mlflow == watched.mlflow
    assert (watched.mlflow.tracking_uri, watched.mlflow.experiment) == ("sqlite:///mlflow.db", "tracked")
    assert (watched.wandb.project, watched.wandb.group, watched.wandb.mode) == (
        "tracked",
        "watched",
        "offline",
    )
    assert watched.wandb.tags == ("small",)

    top_level = 'logging:\n  backends: [mlflow]\n  mlflow: {tracking_uri: "sqlite:///mlflow.db"}\n'
    assert top_level in EXPERIMENT
    untracked = load_experiment(write(tmp_path, EXPERIMENT.replace(top_level, "")))
    plain = {r.run_id: r for r in untracked.runs}
    assert plain["vae/seed1"].logging == LoggingConfig().replace(
        mlflow=LoggingConfig().mlflow.replace(experiment="tracked"),
        wandb=LoggingConfig().wandb.replace(project="tracked", group="vae"),
    )
    assert all(plain[k].fingerprint() == runs[k].fingerprint() for k in runs)
    assert "logging" not in runs["vae/seed1"].to_config()


@pytest.mark.parametrize(
    "override, match",
    [
        ("logging.backends=[mlfow]", r"logging.backends: .*'mlfow' is none of them \(did you mean 'mlflow'\?\)"),
        ("logging.backends=[mlflow, mlflow]", r"logging.backends: .*each tracker named once"),
        ("logging.bakends=[wandb]", r"logging.bakends: unknown key 'bakends'; did you mean 'backends'"),
        ("logging.mlflow.trackin_uri=x", r"logging.mlflow.trackin_uri: unknown key .*did you mean 'tracking_uri'"),
        ("variants.watched.logging.wandb.mod=online", r"^--set variants.watched.logging.wandb.mod=online: .*unknown key 'mod'; did you mean 'mode'"),
        ("logging.wandb.mode=shared", r"logging.wandb.mode: .*WandbConfig.mode='shared'; expected one of 'online', 'offline', 'disabled'"),
        ("logging.wandb=offline", r"logging.wandb: expected a mapping"),
    ],
)  # fmt: skip
def test_logging_mistakes_name_the_key_and_what_was_meant(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment(write(tmp_path), overrides=[override])


def test_a_misspelt_key_in_a_variants_logging_points_at_its_line(tmp_path):
    path = write(tmp_path, EXPERIMENT.replace("tags: [small]}", "tags: [small], projec: x}"))
    with pytest.raises(
        ConfigError, match=r"exp.yaml:15:\d+: variants.watched.logging.wandb.projec: .*'project'"
    ):
        load_experiment(path)


def test_a_missing_tracker_package_is_named_by_genzoo_validate_with_its_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if W&B were not installed
    path = write(tmp_path)
    assert cli_main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "logging.backends" in err and "'wandb' needs wandb: pip install 'genzoo[wandb]'" in err
    assert cli_main(["validate", str(path), "--set", "variants.watched.logging.backends=[mlflow]"]) == 0


def test_tensorboard_stays_the_default_unless_backends_are_given(tmp_path, monkeypatch):
    from genzoo.engine import config

    installed = {"tensorboard": True}
    monkeypatch.setattr(config, "tracker_installed", lambda backend: installed[backend])
    assert LoggingConfig().trackers == ("tensorboard",)
    assert LoggingConfig(backends=()).trackers == ()
    installed["tensorboard"] = False
    assert LoggingConfig().trackers == ()  # as before: TensorBoard when it is there, else nothing
    with pytest.raises(
        ConfigError, match=r"'tensorboard' needs tensorboard: pip install 'genzoo\[tensorboard\]'"
    ):
        LoggingConfig(backends=["tensorboard"])


# -- the tracker interface ----------------------------------------------------------------------
class ListTracker(Tracker):
    """A tracker of one's own: everything it is sent, in a list (``fail_on``: a method that
    raises, as a tracker whose server went away would)."""

    name = "list"

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail_on = fail_on

    def _record(self, *call) -> None:
        if call[0] == self.fail_on:
            raise ConnectionError("server gone")
        self.calls.append(call)

    def start(self, run: TrackedRun) -> dict:
        self._record("start", run.name, flatten(run.config), run.start_step)
        return {"run_id": "r1"}

    def log_scalars(self, kind, step, scalars) -> None:
        self._record("log_scalars", kind, step, dict(scalars))

    def log_image(self, name, path, step) -> None:
        self._record("log_image", name, path.name, step)

    def log_final(self, results, step) -> None:
        self._record("log_final", dict(results), step)

    def close(self, status) -> None:
        self._record("close", status)


def test_a_tracker_gets_the_config_numbers_images_results_and_status(tmp_path):
    tracker = ListTracker()
    config = {"train": {"lr": 0.1}}
    logger = RunLogger(
        tmp_path, total_steps=2, progress_bar=False, trackers=[tracker], name="r", run_config=config
    )
    logger.log("train", 1, {"loss": torch.tensor(2.5), "skipped": 0, "bad": float("nan"), "note": "x"})
    (tmp_path / "grid.png").write_bytes(b"png")
    logger.log_images([("grid", tmp_path / "grid.png"), ("absent", tmp_path / "absent.png")], 2)
    logger.log_final({"status": "finished", "test_bpd_elbo": 1.5}, 2)
    logger.close("finished")
    start, scalars, *rest = tracker.calls
    assert start == ("start", "r", {"train.lr": 0.1}, 0)
    assert scalars[:3] == ("log_scalars", "train", 1) and set(scalars[3]) == {"loss", "skipped", "bad"}
    assert scalars[3]["loss"] == 2.5 and scalars[3]["bad"] != scalars[3]["bad"]  # NaN reaches trackers
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["bad"] == "nan"  # and stays valid JSON in the log
    assert rest == [
        ("log_image", "grid", "grid.png", 2),  # the grid that is not there is not sent
        ("log_final", {"status": "finished", "test_bpd_elbo": 1.5}, 2),
        ("close", "finished"),
    ]
    assert json.loads((tmp_path / "trackers.json").read_text()) == {"list": {"run_id": "r1"}}


def test_a_failing_tracker_is_dropped_with_a_warning_and_the_run_log_goes_on(tmp_path):
    tracker = ListTracker(fail_on="log_scalars")
    logger = RunLogger(tmp_path, total_steps=2, progress_bar=False, trackers=[tracker])
    with pytest.warns(
        RuntimeWarning, match=r"the list tracker failed \(ConnectionError: server gone\); the run goes on"
    ):
        logger.log("train", 1, {"loss": 1.0})
    logger.log("train", 2, {"loss": 0.5})
    logger.close("finished")
    assert [c[0] for c in tracker.calls] == ["start", "close"]  # closed as failed, sent nothing more
    assert tracker.calls[-1] == ("close", "failed")
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_a_tracker_that_cannot_start_stops_the_run_before_it_trains(tmp_path):
    with pytest.raises(
        genzoo.GenzooError, match=r"logging.backends: the list tracker could not start: ConnectionError"
    ):
        RunLogger(tmp_path, total_steps=2, progress_bar=False, trackers=[ListTracker(fail_on="start")])


def test_train_and_trainer_take_the_logging_of_an_experiment_file(tmp_path):
    """From Python, ``train(..., logging=...)`` chooses the trackers as ``logging:`` does in a
    file: MLflow alone here (no TensorBoard folder), and none with ``backends=[]``."""
    from genzoo.engine import train

    store = tmp_path / "mlruns"
    torch.manual_seed(0)
    results = train(
        TinyVAE(), ToyImages(16), None, QUICK, tmp_path / "mlflow", host=PluginHost(),
        logging=LoggingConfig(backends=("mlflow",), mlflow={"tracking_uri": store.as_uri()}),
    )  # fmt: skip
    assert results["status"] == "finished"
    run_id = json.loads((tmp_path / "mlflow" / "trackers.json").read_text())["mlflow"]["run_id"]
    history = mlflow_client(store).get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert not (tmp_path / "mlflow" / "tensorboard").exists()

    train(
        TinyVAE(),
        ToyImages(16),
        None,
        QUICK,
        tmp_path / "none",
        host=PluginHost(),
        logging=LoggingConfig(backends=()),
    )
    assert (
        not (tmp_path / "none" / "tensorboard").exists()
        and not (tmp_path / "none" / "trackers.json").exists()
    )
    train(TinyVAE(), ToyImages(16), None, QUICK, tmp_path / "default", host=PluginHost())
    assert (tmp_path / "default" / "tensorboard").is_dir()  # TensorBoard is installed with dev


def test_the_runner_hands_each_runs_logging_to_the_engine(tmp_path):
    from genzoo.engine.distributed import init_distributed
    from genzoo.experiment.run import runner
    from genzoo.io.run_layout import RunPaths

    small = [
        "seeds=[0]",
        "data.dataset.num_train=8",
        "data.dataset.num_test=4",
        "variants.watched.hierarchy.num_channels=8",
    ]
    (run,) = load_experiment(write(tmp_path), overrides=small).select(["watched"])
    made = runner.run_request(run, RunPaths(tmp_path / "run"), genzoo.get_host(), {}, init_distributed("cpu"))
    assert made.logging == run.logging
