"""What ``genzoo run`` sets up for training on a CPU: glibc's allocator thresholds
(:mod:`genzoo.allocator`) and the cores shared with other genzoo processes
(:mod:`genzoo.cpu_share`)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from genzoo import allocator, cpu_share

HOLD_LOCK = """
import fcntl, sys
lock = open(sys.argv[1], "w")
fcntl.flock(lock, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


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


@pytest.mark.skipif(cpu_share.fcntl is None, reason="needs fcntl")
def test_cpu_share_splits_the_cores_between_genzoo_processes(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(cpu_share.ENV_SWITCH, raising=False)
    threads = torch.get_num_threads()
    share = cpu_share.CpuShare.start(folder=tmp_path, cores=4, interval=0.0)
    try:
        assert share.processes() == 1 and share.threads() == 4
        other = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "999999999.lock")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert other.stdout.readline().strip() == "locked"
            assert share.processes() == 2 and share.threads() == 2
            share.genzoo_step_end(run=None, step=1, metrics={})  # the hook takes the share
            assert torch.get_num_threads() == 2
        finally:
            other.stdin.close()
            other.wait(30)
        assert (tmp_path / "999999999.lock").exists()  # left behind by a process that ended ...
        assert share.processes() == 1  # ... and recognized as such
        assert not (tmp_path / "999999999.lock").exists()
        share.genzoo_step_end(run=None, step=2, metrics={})
        assert torch.get_num_threads() == 4
    finally:
        share.close()
        torch.set_num_threads(threads)
    assert not list(tmp_path.iterdir())


def test_cpu_share_checks_at_most_every_interval(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(cpu_share.ENV_SWITCH, raising=False)
    if cpu_share.fcntl is None:
        pytest.skip("needs fcntl")
    share = cpu_share.CpuShare.start(folder=tmp_path, interval=3600.0)
    try:
        checked = share._checked
        share.genzoo_step_end(run=None, step=1, metrics={})
        assert share._checked == checked
        share._checked = time.monotonic() - 3601.0
        share.genzoo_step_end(run=None, step=2, metrics={})
        assert share._checked > checked
    finally:
        share.close()


@pytest.mark.parametrize("name,value", [("GENZOO_CPU_SHARE", "0"), ("OMP_NUM_THREADS", "2")])
def test_cpu_share_can_be_turned_off(tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert cpu_share.CpuShare.start(folder=tmp_path) is None
    assert not list(tmp_path.iterdir())
