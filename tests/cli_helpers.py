"""Running the ``genzoo`` command as a user does: a subprocess, in a folder of the test's choosing,
with no ``GENZOO_*`` variables leaking in from the environment."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args, cwd, pythonpath=None, env_extra=None, timeout=600) -> subprocess.CompletedProcess:
    """``python -m genzoo.cli ARGS`` in ``cwd``; ``pythonpath`` is prepended to ``PYTHONPATH``."""
    # a clean genzoo environment, but the session's own register of CPU training (tests/conftest.py)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENZOO_") or k == "GENZOO_CPU_REGISTER"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH", "")]))
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "genzoo.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
