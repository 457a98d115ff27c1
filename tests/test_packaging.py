"""A plain, non-editable install carries the core, every built-in plugin and registry.yaml, so
``genzoo list`` works from any folder. Proved by building the wheel and installing it into a
fresh virtual environment."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _copy_source(dst: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs"
    )
    shutil.copytree(ROOT, dst, symlinks=True, ignore=ignore)
    return dst


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = _copy_source(work / "src")
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


def test_wheel_holds_every_module_and_the_registry_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "genzoo").rglob("*.py")}
    expected |= {
        "genzoo_plugins/" + p.relative_to(ROOT / "plugins").as_posix()
        for p in (ROOT / "plugins").rglob("*.py")
    }
    assert expected - names == set(), "modules missing from the wheel (add their package to pyproject.toml)"
    assert "genzoo_plugins/registry.yaml" in names
    shipped = zipfile.ZipFile(wheel).read("genzoo_plugins/registry.yaml").decode()
    assert shipped == (ROOT / "registry.yaml").read_text(), "the wheel's registry.yaml is not the root file"
    assert not any(n.startswith(("tests/", "plugins/")) for n in names)


def test_installed_wheel_lists_components_from_another_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    # System site packages provide torch & co.; the wheel itself goes into the venv.
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120
    )
    bin_dir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import genzoo_plugins; print(genzoo_plugins.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), "the test must import the installed copy"
    out = subprocess.run(
        [str(bin_dir / "genzoo"), "list"], cwd=elsewhere, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for key in ("nvae.separable_cell", "nvae.se", "baselines.conv_cell", "baselines.standard_vae"):
        assert key in out.stdout
