"""Two training processes on one machine (issue 15): each may take at most 2.5x its time alone,
where sharing the cores costs 2x. ``benchmarks/bench_concurrent.py`` measures the same.

The bound is about the two processes: on a machine that other work keeps busy, neither "alone"
nor "together" means what it says, so the test waits for a quiet moment (1-minute load average
below the number of cores) and skips if none comes, and a burst of outside load during one
attempt is forgiven once (three attempts, one must hold)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _wait_for_quiet(seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while os.getloadavg()[0] >= (os.cpu_count() or 1):
        if time.monotonic() > deadline:
            return False
        time.sleep(5.0)
    return True


@pytest.mark.slow
def test_two_training_processes_at_once_are_each_at_most_2_5x_slower():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_concurrent import solo_and_pair
        from step_runs import REPO, model_spec
    finally:
        sys.path.remove(str(BENCHMARKS))
    results = []
    for _ in range(3):
        if not _wait_for_quiet():
            pytest.skip(
                f"the machine is busy (load average {os.getloadavg()}): alone and together mean nothing"
            )
        result = solo_and_pair(REPO, model_spec("quickstart"), steps=15)
        results.append(result)
        assert min(result["overlap"]) >= 3, result
        if all(p <= 2.5 * s for s, p in zip(result["solo"], result["pair"])):
            return
    pytest.fail(f"each process must take at most 2.5x its time alone, in one attempt of three: {results}")
