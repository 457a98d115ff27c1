"""A plain, non-editable install carries the core, every built-in plugin and every non-Python
file the code loads (the CPU kernel's C++ source), so ``genzoo list`` and
the kernel work from any folder. Proved by building the wheel and installing it into a fresh
virtual environment whose dependencies are the ones this interpreter already has."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "runs"
)


def _ignore(folder: str, names: list[str]) -> set[str]:
    """Build outputs, caches and any virtual environment inside the clone (``.ci/run`` makes
    one there): none of them belongs in the wheel, and a venv is gigabytes."""
    skipped = set(COPY_IGNORE(folder, names))
    return skipped | {n for n in names if (Path(folder) / n / "pyvenv.cfg").exists()}


def _package_files() -> dict[str, Path]:
    """Every file under ``genzoo/`` and ``plugins/`` by its name inside the wheel (``plugins/``
    installs as ``genzoo_plugins/``), caches left out."""
    files = {}
    for top, package in (("genzoo", "genzoo"), ("plugins", "genzoo_plugins")):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[f"{package}/{path.relative_to(ROOT / top).as_posix()}"] = path
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_ignore)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(work / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (found,) = (work / "dist").glob("genzoo-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel; torch & co. come from this interpreter's own
    site-packages through a ``.pth`` file. (``--system-site-packages`` would not do: inside a
    venv the "system" packages are the base interpreter's, which need not hold torch.)"""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    venv_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    )
    # Plain path lines: the inherited folders' own .pth files (an editable genzoo's finder among
    # them) are not run, and the venv's site-packages stays first on sys.path.
    inherited = [*site.getsitepackages(), site.getusersitepackages()]
    (venv_site / "inherit_test_dependencies.pth").write_text(
        "".join(f"{p}\n" for p in inherited if Path(p).is_dir())
    )
    # --ignore-installed: where the running genzoo is itself a regular install (``pip install .``),
    # pip sees it through the inherited folders and would otherwise keep it ("already installed
    # with the same version") instead of installing the wheel under test into the venv.
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return venv


def _in_venv(venv: Path, code: str, cwd: Path) -> dict:
    python = venv / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    out = subprocess.run([str(python), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_wheel_holds_every_module_and_every_file_the_code_loads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _package_files()
    assert "genzoo/layers/csrc/depthwise.cpp" in expected  # the check below covers it
    missing = sorted(set(expected) - names)
    assert missing == [], (
        "files missing from the wheel: add their package to [tool.setuptools] packages, or the "
        f"file to [tool.setuptools.package-data] in pyproject.toml: {missing}"
    )
    for name in ("genzoo/layers/csrc/depthwise.cpp",):
        shipped = zipfile.ZipFile(wheel).read(name)
        assert shipped == expected[name].read_bytes(), f"the wheel's {name} is not the source file"
    assert not any(n.startswith(("tests/", "plugins/")) for n in names)


def test_installed_wheel_lists_components_from_another_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _in_venv(
        installed,
        "import json, genzoo, genzoo_plugins; print(json.dumps([genzoo.__file__, genzoo_plugins.__file__]))",
        elsewhere,
    )
    for module_file in where:
        assert Path(module_file).is_relative_to(installed), "the test must import the installed copy"
    genzoo_cmd = installed / ("Scripts" if sys.platform == "win32" else "bin") / "genzoo"
    out = subprocess.run(
        [str(genzoo_cmd), "list"], cwd=elsewhere, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for key in ("nvae.separable_cell", "nvae.se", "baselines.conv_cell", "baselines.standard_vae"):
        assert key in out.stdout


def test_installed_copy_finds_its_cpu_kernel_source(installed, tmp_path):
    # The loader builds from SOURCE on first use; the wheel test above checks the shipped file
    # is byte-identical to the one the source tree builds (tests/test_fast_paths.py).
    source, exists = _in_venv(
        installed,
        "import json; from genzoo.layers import cpu_kernels as k; "
        "print(json.dumps([str(k.SOURCE), k.SOURCE.is_file()]))",
        tmp_path,
    )
    assert Path(source).is_relative_to(installed) and exists, f"kernel source not installed: {source}"
