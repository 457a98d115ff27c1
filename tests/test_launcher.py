"""`genzoo run FILE --launcher local|slurm`: the launcher: section is validated like every other
section and never changes a fingerprint; bad input (an unknown launcher, no sbatch, a refused
submission, GPUs the machine lacks) is named with exit code 2 and touches nothing; the sbatch
script carries the options; and with submitit's local executor each run trains in a process of
its own with the same results as in one process.

The real-Slurm tests are in test_slurm.py; the longer process tests (a killed job resubmitted, a
time limit, two concurrent `genzoo run`, DDP inside a job) in test_launcher_processes.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from launcher_helpers import logged_steps, reference_run, results, status, write_matrix

from genzoo.cli import main
from genzoo.errors import ConfigError
from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.launch.launcher import submit_matrix
from genzoo.experiment.run.locks import FileLock, owner_of

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The matrix trained in this process: the experiment folder (treat as read-only)."""
    return reference_run(tmp_path_factory.mktemp("reference"))


def fake_program(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


# -- the launcher: section -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("launcher:\n  gpus: 2\n", r"matrix.yaml:\d+:3: launcher.gpus: unknown key 'gpus'"),
        ("launcher:\n  gpus_per_node: two\n", r"matrix.yaml:\d+:3: launcher.gpus_per_node: expected int"),
        ("launcher:\n  nodes: 0\n", r"launcher.nodes: LauncherConfig.nodes=0; expected an integer >= 1"),
        (
            "launcher:\n  gpus_per_node: 2\n  tasks_per_node: 3\n",
            r"launcher.tasks_per_node: .* expected to equal gpus_per_node=2",
        ),
        (
            "launcher:\n  sbatch_options: {gpu_bnd: closest}\n",
            r"launcher.sbatch_options: .*sbatch has no option --gpu-bnd; did you mean --gpu-bind",
        ),
        ("launcher:\n  sbatch_options: {time: 10}\n", r"--time is set by launcher.timeout_min"),
        ("launcher:\n  sbatch_options: {output: x.log}\n", r"genzoo sets --output itself"),
        ("launcher:\n  timeout_min: 1\n  signal_delay_s: 90\n", r"signal_delay_s=90; expected less than"),
        (
            "launcher:\n  runs_per_gpu: 0\n",
            r"matrix.yaml:\d+:3: launcher.runs_per_gpu: LauncherConfig.runs_per_gpu=0; expected an integer >= 1",
        ),
        ("launcher:\n  runs_per_gpu: two\n", r"matrix.yaml:\d+:3: launcher.runs_per_gpu: expected int"),
        (
            "launcher:\n  gpus_per_node: 0\n  runs_per_gpu: 2\n",
            r"matrix.yaml:\d+:3: launcher.runs_per_gpu: .*expected 1 when gpus_per_node=0 \(more needs gpus_per_node >= 1; on CPU, use max_parallel\)",
        ),
    ],
)
def test_launcher_options_are_checked_with_file_line_and_key(tmp_path, section, message):
    file = write_matrix(tmp_path, launcher=section)
    with pytest.raises(ConfigError, match=message):
        load_experiment(file)
    assert main(["validate", str(file)]) == 2  # genzoo validate checks them too


def test_profiles_and_set_choose_the_resources_and_fingerprints_ignore_them(tmp_path):
    plain = load_experiment(write_matrix(tmp_path))
    file = write_matrix(
        tmp_path,
        launcher="launcher: {partition: gpu, timeout_min: 1440}\n"
        "profiles:\n  big: {launcher: {gpus_per_node: 8, mem_gb: 64, runs_per_gpu: 2}}\n",
    )
    experiment = load_experiment(file, profile="big", overrides=["launcher.partition=a100"])
    options = experiment.launcher
    assert (options.partition, options.gpus_per_node, options.mem_gb, options.timeout_min) == (
        "a100",
        8,
        64,
        1440,
    )
    assert options.world_size == 8 and options.runs_per_gpu == 2  # one process per GPU, two runs on them
    assert [r.fingerprint() for r in experiment.runs] == [r.fingerprint() for r in plain.runs]
    with pytest.raises(ConfigError, match=r"--set launcher.gpus_per_node=-1: launcher.gpus_per_node"):
        load_experiment(file, overrides=["launcher.gpus_per_node=-1"])


# -- bad input on the command line: exit code 2, nothing touched -------------------------------
def test_an_unknown_launcher_is_named(tmp_path, capsys):
    assert main(["run", str(write_matrix(tmp_path)), "--launcher", "slrum"]) == 2
    assert (
        "unknown launcher 'slrum'; did you mean 'slurm'? Expected one of: local, slurm"
        in capsys.readouterr().err
    )


def finished_copy(reference: Path, tmp_path: Path) -> Path:
    """A copy of the reference output (both runs finished) and the matrix file beside it."""
    shutil.copytree(reference, tmp_path / "out" / reference.name)
    return write_matrix(tmp_path, launcher="launcher: {partition: gpu}\n")


def test_slurm_without_sbatch_is_refused_before_anything_is_touched(reference, tmp_path, monkeypatch, capsys):
    file = finished_copy(reference, tmp_path)
    before = snapshot(tmp_path / "out")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["run", str(file), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    assert "--launcher slurm: sbatch was not found on the PATH" in capsys.readouterr().err
    assert snapshot(tmp_path / "out") == before


def test_a_refused_submission_shows_the_schedulers_message(reference, tmp_path, monkeypatch, capsys):
    file = finished_copy(reference, tmp_path)
    (tmp_path / "out" / "matrix" / "runs" / "narrow" / "seed0" / "results.json").unlink()  # one to submit
    before = snapshot(tmp_path / "out" / "matrix" / "runs")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_program(bin_dir, "sbatch", 'echo "sbatch: error: invalid partition specified: gpu" >&2\nexit 1\n')
    fake_program(bin_dir, "srun", "exit 0\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert main(["run", str(file), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert (
        "the slurm scheduler refused the submission of 1 run(s): sbatch: error: invalid partition specified: gpu"
        in err
    )
    assert "(launcher: partition=gpu; " in err and "matrix.yaml:26:1)" in err and err.count("\n") == 1
    assert snapshot(tmp_path / "out" / "matrix" / "runs") == before  # no job.json, the finished run untouched


def test_the_local_launcher_refuses_gpus_or_nodes_this_machine_lacks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    file = write_matrix(tmp_path, launcher="launcher: {gpus_per_node: 1}\n")
    assert main(["run", str(file), "--out", str(tmp_path / "out"), "--launcher", "local"]) == 2
    assert (
        "launcher.gpus_per_node: 1 run(s) at once with gpus_per_node=1 need 1 GPU(s); this machine has 0"
        in (capsys.readouterr().err)
    )
    file = write_matrix(tmp_path, launcher="launcher: {nodes: 2}\n")
    assert main(["run", str(file), "--out", str(tmp_path / "out"), "--launcher", "local"]) == 2
    assert (
        "launcher.nodes: nodes=2, but the local launcher runs every job on this machine"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_slurm_refuses_runs_per_gpu_before_anything_is_submitted(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_program(bin_dir, "sbatch", 'touch "$SUBMITTED"\necho "Submitted batch job 77"\n')
    fake_program(bin_dir, "srun", "exit 0\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("SUBMITTED", str(tmp_path / "submitted"))
    file = write_matrix(tmp_path, launcher="launcher: {gpus_per_node: 1, runs_per_gpu: 2}\n")
    assert main(["run", str(file), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    assert (
        "matrix.yaml:26:1: launcher.runs_per_gpu: runs_per_gpu=2 applies to the local launcher only "
        "(Slurm schedules GPUs itself)" in capsys.readouterr().err
    )
    assert not (tmp_path / "submitted").exists() and not (tmp_path / "out").exists()


def test_the_sbatch_script_carries_the_launcher_options(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_program(bin_dir, "sbatch", '/bin/cp "$1" "$SBATCH_COPY"\necho "Submitted batch job 77"\n')
    fake_program(bin_dir, "srun", "exit 0\n")
    monkeypatch.setenv("PATH", str(bin_dir))  # no squeue here: states cannot be asked
    monkeypatch.setenv("SBATCH_COPY", str(tmp_path / "script.sh"))
    launcher = """\
launcher:
  partition: gpu
  account: vision
  gpus_per_node: 2
  cpus_per_task: 6
  mem_gb: 32
  timeout_min: 90
  max_parallel: 1
  setup: ["source .venv/bin/activate"]
  sbatch_options: {qos: high, exclusive: true}
"""
    file = write_matrix(tmp_path, launcher=launcher)
    assert main(["run", str(file), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 0
    out = capsys.readouterr().out
    assert (
        "[1/2] wide/seed0: submitted as job 77_0" in out
        and "[2/2] narrow/seed0: submitted as job 77_1" in out
    )
    script = (tmp_path / "script.sh").read_text()
    for line in [
        "#SBATCH --partition=gpu", "#SBATCH --account=vision", "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=32GB", "#SBATCH --time=90",
        "#SBATCH --signal=USR2@120", "#SBATCH --array=0-1%1", "#SBATCH --qos=high", "#SBATCH --exclusive",
        "#SBATCH --job-name=genzoo-matrix", "source .venv/bin/activate",
    ]:  # fmt: skip
        assert line in script
    states = status(tmp_path / "out" / "matrix")
    assert states["wide/seed0"]["state"] == "queued" and states["wide/seed0"]["job_id"] == "77_0"
    assert states["narrow/seed0"]["detail"] == "state unknown (no squeue here)"
    # submitted twice by mistake: what is queued is not submitted again
    assert main(["run", str(file), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 0
    assert "wide/seed0: already queued as job 77_0" in capsys.readouterr().out


# -- the local executor: real processes --------------------------------------------------------
def test_local_launcher_trains_each_run_in_its_own_process_with_the_same_results(reference, tmp_path):
    file = write_matrix(tmp_path, launcher="launcher: {max_parallel: 2, cpus_per_task: 1}\n")
    lines: list[str] = []
    outcome = submit_matrix(
        load_experiment(file), tmp_path / "out", launcher="local", wait=True, echo=lines.append
    )
    assert outcome.exit_code == 0 and sorted(outcome.finished) == ["narrow/seed0", "wide/seed0"]
    assert results(outcome.exp_dir) == results(reference)
    states = status(outcome.exp_dir)
    jobs = {run: s["job_id"] for run, s in states.items()}
    assert all(s["state"] == "finished" for s in states.values()) and len(set(jobs.values())) == 2
    for run, job_id in jobs.items():  # each job's own log names its run: one run per process
        log = (outcome.exp_dir / "jobs" / f"{job_id}_0_log.out").read_text()
        assert f"genzoo: {run}: training (8 steps)" in log
        assert logged_steps(outcome.exp_dir / "runs" / run) == list(range(1, 9))
    assert (outcome.exp_dir / "report.md").exists()


def test_the_local_launcher_gives_each_slot_its_own_gpus(tmp_path, monkeypatch):
    from genzoo.experiment.launch.launcher import LocalBackend
    from genzoo.experiment.run.job import RunJob

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    experiment = load_experiment(write_matrix(tmp_path, launcher="launcher: {gpus_per_node: 2}\n"))
    backend = LocalBackend(experiment)  # two runs at once: four GPUs, two per run
    fields = {"text": "", "out_root": str(tmp_path / "out"), "device": None, "render_report": True}
    jobs = [backend.job(run, i, **fields) for i, run in enumerate(experiment.runs * 2)]
    assert [(job.slot, job.slot_gpus) for job in jobs] == [(0, [4, 5]), (1, [6, 7]), (0, [4, 5]), (1, [6, 7])]

    class Rank0:
        global_rank = 0

    class NoSignal:
        requested = False

    slot = RunJob._wait_for_slot(jobs[1], Rank0(), NoSignal())  # what the job does before torch loads
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6,7" and owner_of(slot.path).pid == os.getpid()
    slot.release()


def test_the_local_launcher_shares_each_gpu_between_runs_per_gpu_slots(tmp_path, monkeypatch):
    from genzoo.experiment.launch.launcher import LocalBackend

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    fields = {"text": "", "out_root": str(tmp_path / "out"), "device": None, "render_report": True}

    def backend(launcher: str) -> LocalBackend:
        return LocalBackend(load_experiment(write_matrix(tmp_path, launcher=launcher)))

    shared = backend("launcher: {gpus_per_node: 1, runs_per_gpu: 3}\n")  # six runs at once on two GPUs
    assert shared.slots == 6
    jobs = [shared.job(run, i, **fields) for i, run in enumerate(shared.experiment.runs * 3)]
    assert [(job.slot, job.slot_gpus) for job in jobs] == [
        (0, [0]), (1, [0]), (2, [0]), (3, [1]), (4, [1]), (5, [1]),
    ]  # fmt: skip
    assert backend("launcher: {gpus_per_node: 1, runs_per_gpu: 3, max_parallel: 4}\n").slots == 4
    with pytest.raises(ConfigError) as refused:
        backend("launcher: {gpus_per_node: 1, runs_per_gpu: 3, max_parallel: 7}\n")
    assert (
        "launcher.max_parallel: 7 run(s) at once with gpus_per_node=1 and runs_per_gpu=3 need 3 GPU(s); "
        "this machine has 2. At most 6 fit: lower launcher.max_parallel or raise launcher.runs_per_gpu"
    ) in str(refused.value)


def test_runs_that_share_a_gpu_get_one_thread_per_process_unless_cpus_per_task_says_otherwise(
    tmp_path, monkeypatch
):
    from genzoo.experiment.launch.launcher import LocalBackend

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    fields = {"text": "", "out_root": str(tmp_path / "out"), "device": None, "render_report": True}

    def threads(launcher: str) -> list[int | None]:
        backend = LocalBackend(load_experiment(write_matrix(tmp_path, launcher=launcher)))
        return [backend.job(run, i, **fields).cpus_per_task for i, run in enumerate(backend.experiment.runs)]

    assert threads("launcher: {gpus_per_node: 1}\n") == [None, None]  # torch's default, as before
    assert threads("launcher: {gpus_per_node: 1, runs_per_gpu: 8}\n") == [1, 1]  # OMP_NUM_THREADS=1
    assert threads("launcher: {gpus_per_node: 1, runs_per_gpu: 8, cpus_per_task: 3}\n") == [3, 3]


def test_status_reads_each_runs_state_from_its_folder_and_the_scheduler(tmp_path):
    from genzoo.experiment.run.outputs import ExperimentDir
    from genzoo.experiment.run.status import JobRecord

    experiment = load_experiment(write_matrix(tmp_path))
    exp_dir = ExperimentDir(tmp_path / "out", experiment)
    exp_dir.prepare(experiment.runs)
    wide, narrow = (exp_dir.run_paths(r) for r in experiment.runs)
    assert {r: s["state"] for r, s in status(exp_dir.root).items()} == {
        "wide/seed0": "pending",
        "narrow/seed0": "pending",
    }
    ended = subprocess.Popen(["true"])  # a local job whose process has ended
    ended.wait()
    JobRecord("local", str(ended.pid), socket.gethostname(), time.time(), "jobs/1_0_log.out").write(wide)
    assert status(exp_dir.root)["wide/seed0"]["state"] == "failed"
    assert (
        "its job ended before the run started; log: jobs/1_0_log.out"
        in status(exp_dir.root)["wide/seed0"]["detail"]
    )
    wide.metrics.write_text('{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n')
    assert (status(exp_dir.root)["wide/seed0"]["state"], status(exp_dir.root)["wide/seed0"]["step"]) == (
        "interrupted",
        2,
    )
    lock = FileLock(wide.lock)
    lock.acquire()
    state = status(exp_dir.root)["wide/seed0"]
    assert (state["state"], state["step"]) == ("running", 2) and f"pid {os.getpid()}" in state["detail"]
    lock.release()
    narrow.results.write_text(
        json.dumps({"status": "diverged", "fingerprint": experiment.runs[1].fingerprint(), "step": 3})
    )
    assert status(exp_dir.root)["narrow/seed0"]["state"] == "diverged"
