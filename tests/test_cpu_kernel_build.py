"""Where and how genzoo builds its CPU kernels (issue 23): one folder per environment, named by
everything that changes the build, so that environments sharing torch's extensions cache each
build once; later processes load that build without building; and a build lock that waits for a
live builder but never for a dead one. The build the file uses is the one every CPU test uses
(torch's extensions root as this process has it): made by the module's fixture if no test made
it before (about 45 s on 2 cores), so that the suite builds the kernels once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from genzoo.layers import cpu_kernels

ISA = torch.backends.cpu.get_cpu_capability()
REPO = Path(__file__).resolve().parents[1]

# A process that loads the kernels (building them if they are not built yet) and says when it
# returned, whether it got the module and from which folder; it logs to stderr.
LOADER = """
import logging, time
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from genzoo.layers import cpu_kernels
module = cpu_kernels.load()
print(time.time(), module is not None, cpu_kernels.build_directory(), flush=True)
"""
# A process that holds the build lock of the folder sys.argv[1] until its stdin is closed.
HOLDER = """
import fcntl, os, sys
fd = os.open(os.path.join(sys.argv[1], "genzoo.lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, b"process %d" % os.getpid(), 0)
print("held", flush=True)
sys.stdin.read()
"""


def _environment(root: Path | None) -> dict[str, str]:
    env = {**os.environ}
    if root is not None:
        env["TORCH_EXTENSIONS_DIR"] = str(root)
    env.pop(cpu_kernels.ENV_SWITCH, None)
    return env


def _load_in_a_new_process(root: Path | None) -> tuple[float, Path, str]:
    done = subprocess.run(
        [sys.executable, "-c", LOADER], env=_environment(root), cwd=REPO, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    returned, loaded, folder = done.stdout.split()
    assert loaded == "True", done.stderr
    return float(returned), Path(folder), done.stderr


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Each build product's modification time, and the ninja log's content."""
    return {
        path.name: (path.stat().st_mtime_ns, path.read_bytes() if path.name == ".ninja_log" else b"")
        for path in folder.iterdir()
        if path.suffix in (".so", ".o", ".pyd", ".obj") or path.name == ".ninja_log"
    }


@pytest.fixture(scope="module")
def built():
    """The kernels built (or found built) by another process, under the extensions root every
    test uses (``None``: this process's environment)."""
    root = None
    env = _environment(root)
    done = subprocess.run(
        [sys.executable, "-c", LOADER], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0 or done.stdout.split()[1] != "True":
        pytest.skip(f"the CPU kernels could not be built here: {done.stderr[-2000:]}")
    folder = Path(done.stdout.split()[2])
    assert (folder / f"{cpu_kernels.module_name(ISA)}.so").exists() or any(folder.glob("*.so"))
    return root, folder, _files(folder)


# -- (a) the build folder's key ------------------------------------------------------------------
def test_each_environment_has_a_build_folder_of_its_own(monkeypatch, tmp_path):
    here = cpu_kernels.module_name(ISA)
    assert here == cpu_kernels.module_name(ISA) and here.isidentifier()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert cpu_kernels.build_directory(ISA) == tmp_path / here  # under the root torch builds in

    elsewhere = {}
    with monkeypatch.context() as patch:
        patch.setattr(sys, "prefix", "/opt/another-venv")
        elsewhere["another virtual environment"] = cpu_kernels.module_name(ISA)
    with monkeypatch.context() as patch:
        patch.setattr(torch, "__version__", "2.5.1+cpu")
        elsewhere["another torch"] = cpu_kernels.module_name(ISA)
    with monkeypatch.context() as patch:
        patch.setattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", not torch._C._GLIBCXX_USE_CXX11_ABI)
        elsewhere["torch's other C++ ABI"] = cpu_kernels.module_name(ISA)
    with monkeypatch.context() as patch:
        patch.setenv("CXX", "clang++")
        elsewhere["another compiler"] = cpu_kernels.module_name(ISA)
    elsewhere["another instruction set"] = cpu_kernels.module_name("AVX2" if ISA != "AVX2" else "DEFAULT")
    assert len({here, *elsewhere.values()}) == 1 + len(elsewhere), elsewhere
    assert cpu_kernels.module_name(ISA) == here  # and back in this one, its folder again


def test_the_build_folder_changes_with_the_sources(monkeypatch, tmp_path):
    csrc = shutil.copytree(cpu_kernels.CSRC, tmp_path / "csrc")
    monkeypatch.setattr(cpu_kernels, "CSRC", csrc)
    before = cpu_kernels.module_name(ISA)
    source = csrc / "elu.cpp"
    text = source.read_text()
    source.write_text(text + "\n// an edit\n")
    assert cpu_kernels.module_name(ISA) != before
    source.write_text(text)
    assert cpu_kernels.module_name(ISA) == before


# -- (b) one build per environment -----------------------------------------------------------------
def test_a_later_process_loads_the_build_without_building(built):
    root, folder, files = built
    _, loaded_from, log = _load_in_a_new_process(root)
    assert loaded_from == folder
    assert "building" not in log
    assert _files(folder) == files  # neither compiled nor linked again; the ninja log as it was


# -- (c) the build lock ----------------------------------------------------------------------------
def test_a_live_builder_makes_a_loader_wait_until_it_is_done(built):
    root, folder, files = built
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(120, holder.kill)  # the test fails, rather than hangs, if it goes wrong
    watchdog.start()
    try:
        assert holder.stdout.readline() == "held\n"
        loader = subprocess.Popen(
            [sys.executable, "-c", LOADER], env=_environment(root), cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        log = []
        for line in loader.stderr:
            log.append(line)
            if "waiting for" in line:
                break
        assert f"waiting for process {holder.pid}" in "".join(log)
        time.sleep(0.5)
        assert loader.poll() is None  # still waiting
        released = time.time()
        holder.stdin.close()
        holder.wait(timeout=30)
        out, err = loader.communicate(timeout=120)
    finally:
        watchdog.cancel()
        holder.kill()
    assert loader.returncode == 0, err
    returned, loaded, _ = out.split()
    assert loaded == "True" and float(returned) >= released
    assert _files(folder) == files


def test_a_killed_builder_leaves_no_stale_lock(built):
    root, folder, files = built
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    holder.kill()  # SIGKILL: no clean-up of any kind
    holder.wait(timeout=30)
    (folder / "lock").touch()  # and what older torch's lock (a FileBaton) leaves behind a killed builder
    _, loaded_from, log = _load_in_a_new_process(root)
    assert loaded_from == folder
    assert "waiting for" not in log
    assert _files(folder) == files


def test_without_fcntl_torch_s_own_lock_is_all_there_is(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_kernels, "fcntl", None)
    with cpu_kernels._build_lock(tmp_path):
        pass
    assert not (tmp_path / cpu_kernels.LOCK_FILE).exists()
