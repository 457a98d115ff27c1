"""What a process that trains on a CPU sets up: glibc's allocator thresholds
(:mod:`genzoo.machine.allocator`) and the run's intra-op threads, fixed from its config and the machine
(:mod:`genzoo.machine.cpu_share`; ``tests/test_concurrency.py`` trains a run beside another)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from engine_helpers import TinyVAE, ToyImages

import genzoo
from genzoo import PluginHost, PluginInfo
from genzoo.engine import TrainConfig, load_checkpoint, train
from genzoo.machine import allocator, cpu_share

TESTS = Path(__file__).resolve().parent


def test_allocator_keeps_large_blocks_on_linux(monkeypatch):
    for name in (allocator.ENV_SWITCH, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    done = allocator.configure()
    if sys.platform.startswith("linux") and done:  # glibc
        assert done == {"M_MMAP_THRESHOLD": 32 * 2**20, "M_TRIM_THRESHOLD": 2**31 - 1}
    else:
        assert done == {}


@pytest.mark.parametrize("name,value", [("GENZOO_MALLOC_TUNING", "0"), ("MALLOC_TRIM_THRESHOLD_", "1000000")])
def test_allocator_tuning_can_be_turned_off(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert not allocator.enabled()
    assert allocator.configure() == {}


def _topology(root, cores: list[int]) -> None:
    """A fake ``/sys/devices/system/cpu``: logical CPU i on physical core ``cores[i]``."""
    for cpu, core in enumerate(cores):
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text("0\n")
        (folder / "core_id").write_text(f"{core}\n")


def test_auto_threads_are_one_per_physical_core_or_omp_num_threads(tmp_path, monkeypatch):
    _topology(tmp_path, [0, 0, 1, 1, 2, 2])  # three cores with two hyperthreads each
    monkeypatch.setattr(cpu_share, "_TOPOLOGY", tmp_path)
    monkeypatch.setattr(cpu_share, "_usable_cpus", lambda: [0, 1, 2, 3])  # e.g. taskset -c 0-3
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_share.machine_threads() == 2 == cpu_share.resolve_threads("auto")
    assert cpu_share.resolve_threads(5) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # a launcher's cpus_per_task, or the user's choice
    assert cpu_share.resolve_threads("auto") == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested parallelism: the outer level counts
    assert cpu_share.resolve_threads("auto") == 4
    monkeypatch.setattr(cpu_share, "_TOPOLOGY", tmp_path / "absent")  # no topology: logical CPUs
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_share.machine_threads() == 4


class ThreadsPerStep:
    """Records torch's intra-op threads at every step's end."""

    name = "threads-per-step"

    def __init__(self) -> None:
        self.seen: list[int] = []

    @genzoo.hookimpl
    def genzoo_step_end(self, step):
        self.seen.append(torch.get_num_threads())


def _train(out, *, steps: int = 6, **changes) -> tuple[dict, list[int]]:
    torch.manual_seed(0)
    config = TrainConfig(
        steps=steps, batch_size=16, lr=3e-3, checkpoint_every=0, progress_bar=False, device="cpu", **changes
    )
    recorder, host = ThreadsPerStep(), PluginHost()
    host.register_plugin(recorder, PluginInfo(name=recorder.name, source="python"))
    row = train(TinyVAE(), ToyImages(64), None, config, out, host=host)
    return row, recorder.seen


@pytest.mark.parametrize("setting", ["auto", 1])
def test_a_runs_threads_are_fixed_from_its_config_and_recorded(tmp_path, monkeypatch, setting):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    expected = cpu_share.resolve_threads(setting)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(expected + 1)  # what the process had does not matter
        row, seen = _train(tmp_path / "run", cpu_threads=setting)
    finally:
        torch.set_num_threads(before)
    assert row["status"] == "finished" and seen == [expected] * 6
    recorded = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert recorded["cpu_threads"]["threads"] == expected and recorded["cpu_threads"]["setting"] == setting
    assert recorded["train"]["cpu_threads"] == setting
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["cpu_threads"]["threads"] == expected


OTHER_TRAINING = """
import sys, torch, genzoo
from pathlib import Path
from engine_helpers import TinyVAE, ToyImages
from genzoo.machine.cpu_share import cpu_training
from genzoo.engine import TrainConfig, train

class Told:
    @genzoo.hookimpl
    def genzoo_step_end(self, step):
        if step == 1:
            print("training", flush=True)

host = genzoo.PluginHost()
host.register_plugin(Told(), genzoo.PluginInfo(name="told", source="python"))
config = TrainConfig(steps=10**6, batch_size=16, checkpoint_every=0, progress_bar=False, device="cpu")
with cpu_training(True, register_folder=Path(sys.argv[2])):  # what `genzoo run` sets up
    train(TinyVAE(), ToyImages(64), None, config, sys.argv[1], host=host)
"""


def test_a_runs_threads_do_not_depend_on_other_genzoo_processes_training(tmp_path, monkeypatch):
    """Until issue 23 a genzoo process took ``cores // (genzoo processes training on CPU)``
    threads, and changed them as others started and ended. Now another genzoo process training
    at the same time changes nothing: the run's count is its config's and the machine's. The
    register of processes training on CPU only warns that together they take more threads than
    there are cores."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_TRAINING, str(tmp_path / "other"), str(tmp_path / "register")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    before = torch.get_num_threads()
    try:
        assert other.stdout.readline().strip() == "training", other.stderr.read() if other.poll() else ""
        with cpu_share.cpu_training(True, register_folder=tmp_path / "register"):
            with pytest.warns(UserWarning, match=r"1 other genzoo process\(es\) train on this machine"):
                row, seen = _train(tmp_path / "run", steps=8)
        assert other.poll() is None  # it trained all along
    finally:
        other.kill()
        other.wait(30)
        torch.set_num_threads(before)
    assert row["status"] == "finished" and seen == [cpu_share.resolve_threads("auto")] * 8


def test_a_resumed_run_keeps_the_threads_it_started_with_on_another_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the machine the run started on
    before = torch.get_num_threads()
    try:
        _train(tmp_path / "run", steps=3)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # another machine: auto gives 2 here
        with pytest.warns(
            UserWarning, match=r"started with 1 CPU threads .* goes on with them, not with the 2"
        ):
            row, seen = _train(tmp_path / "run", steps=6)
        assert row["resumed_from"] == 3 and seen == [1, 1, 1]
        recorded = json.loads((tmp_path / "run" / "train_config.json").read_text())["cpu_threads"]
        assert recorded["threads"] == 1
        assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["cpu_threads"]["threads"] == 1
        # the same machine: no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            monkeypatch.setenv("OMP_NUM_THREADS", "1")
            _train(tmp_path / "run", steps=8)
    finally:
        torch.set_num_threads(before)


HOLD_ENTRY = """
import fcntl, sys
entry = open(sys.argv[1], "w")
fcntl.flock(entry, fcntl.LOCK_EX)
entry.write(sys.argv[2]); entry.flush()
print("registered", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.mark.skipif(cpu_share.fcntl is None, reason="needs fcntl")
def test_the_register_warns_of_more_threads_than_cores_and_forgets_ended_processes(tmp_path):
    register = cpu_share.ThreadRegister(tmp_path, cores=4)
    try:
        assert register.record(4) is None  # alone on the cores
        other = subprocess.Popen(
            [sys.executable, "-c", HOLD_ENTRY, str(tmp_path / "999999999.threads"), "2"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert other.stdout.readline().strip() == "registered"
            assert register.others() == [2]
            assert (
                "1 other genzoo process(es) train on this machine's 4 cores with 2 threads"
                in register.record(4)
            )
            assert "training.cpu_threads=2" in register.record(3)
            assert register.record(2) is None  # each with its share
        finally:
            other.stdin.close()
            other.wait(30)
        assert (tmp_path / "999999999.threads").exists()  # left behind by a process that ended ...
        assert register.others() == []  # ... and recognized as such
        assert not (tmp_path / "999999999.threads").exists()
    finally:
        register.close()
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(cpu_share.fcntl is None, reason="needs fcntl")
def test_a_speed_measured_beside_another_genzoo_process_is_marked_as_shared_load(tmp_path):
    """``train_shared_load``: the fraction of the run's load checks that found another genzoo
    process training (a register entry with threads); 0 alone; a process that registered but
    has not started a run (0 threads) does not count."""
    with cpu_share.cpu_training(True, register_folder=tmp_path / "register"):
        alone, _ = _train(tmp_path / "alone", steps=8, cpu_threads=1)
        other = subprocess.Popen(
            [sys.executable, "-c", HOLD_ENTRY, str(tmp_path / "register" / "999999999.threads"), "1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert other.stdout.readline().strip() == "registered"
            assert cpu_share.others_training() == 1
            beside, _ = _train(tmp_path / "beside", steps=8, cpu_threads=1)
        finally:
            other.stdin.close()
            other.wait(30)
        assert cpu_share.others_training() == 0
    assert alone["train_shared_load"] == 0.0 and alone["train_images_per_s"] > 0
    assert beside["train_shared_load"] == 1.0
    # read by a process that is not in the register; an entry held with 0 threads does not count
    import fcntl

    for threads, expected in (("0", 0), ("2", 1)):
        with open(tmp_path / "register" / "999999998.threads", "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            held.write(threads)
            held.flush()
            assert cpu_share.others_training(tmp_path / "register") == expected


HOLD_OWN_ENTRY = HOLD_ENTRY.replace("import fcntl, sys", "import fcntl, os, sys").replace(
    "open(sys.argv[1]", "open(f'{sys.argv[1]}/{os.getpid()}.threads'"
)
"""HOLD_ENTRY with an entry named by the process's own pid, as genzoo's are."""


@pytest.mark.skipif(cpu_share.fcntl is None or not Path("/proc/self/stat").exists(), reason="Linux")
def test_a_process_stopped_by_a_signal_does_not_count_as_load(tmp_path):
    """A run paused with ``kill -STOP`` (or Ctrl-Z) holds its entry but takes no CPU: it is not
    load beside which a speed is marked, until it is continued."""
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_OWN_ENTRY, str(tmp_path), "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    entry = tmp_path / f"{other.pid}.threads"
    try:
        assert other.stdout.readline().strip() == "registered" and entry.exists()
        assert cpu_share.others_training(tmp_path) == 1
        os.kill(other.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not cpu_share._stopped(str(other.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cpu_share.others_training(tmp_path) == 0
        assert entry.exists()  # still held: not taken for an ended process
        os.kill(other.pid, signal.SIGCONT)
        while cpu_share._stopped(str(other.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cpu_share.others_training(tmp_path) == 1
    finally:
        os.kill(other.pid, signal.SIGCONT)
        other.stdin.close()
        other.wait(30)
    assert not cpu_share._stopped("999999999")  # no such process: counted, as before


@pytest.mark.skipif(cpu_share.fcntl is None, reason="needs fcntl")
def test_a_run_that_already_takes_its_share_is_not_told_to_take_it(tmp_path):
    import fcntl

    register = cpu_share.ThreadRegister(tmp_path, cores=4)
    try:
        with open(tmp_path / "999999997.threads", "w") as greedy:  # another process with every core
            fcntl.flock(greedy, fcntl.LOCK_EX)
            greedy.write("4")
            greedy.flush()
            warning = register.record(2)  # two of four cores: its share beside one other process
            assert "more threads than cores, so the processes take turns" in warning
            assert "--set training.cpu_threads" not in warning
            assert "training.cpu_threads=2" in register.record(3)  # more than its share: advised
    finally:
        register.close()
