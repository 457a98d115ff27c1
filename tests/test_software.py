"""The software record every run and every command on a trained run writes
(:mod:`genzoo.machine.software`): genzoo's commit asked of git itself, or of pip's record."""

from __future__ import annotations

import json
import platform
import subprocess

import pytest
import torch

from genzoo.machine import software as sw


def git(folder, *args):
    return subprocess.run(
        ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def work_tree(tmp_path):
    """A git repository holding a package folder, with one commit."""
    package = tmp_path / "repo" / "genzoo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "core.py").write_text("x = 1\n")
    git(tmp_path / "repo", "init", "-q")
    git(tmp_path / "repo", "add", "-A")
    git(tmp_path / "repo", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return package


def test_the_commit_of_a_work_tree_and_whether_tracked_files_changed(work_tree):
    head = git(work_tree, "rev-parse", "HEAD").strip()
    clean = sw._git_source(work_tree)
    assert clean == {"commit": head, "dirty": False, "source": f"git work tree {work_tree.parent.resolve()}"}
    (work_tree / "new.py").write_text("untracked files do not count\n")
    assert sw._git_source(work_tree)["dirty"] is False
    (work_tree / "core.py").write_text("x = 2\n")
    assert sw._git_source(work_tree) == {**clean, "dirty": True}


def test_no_work_tree_and_no_git(work_tree, tmp_path, monkeypatch):
    assert sw._git_source(tmp_path) is None  # not in a repository
    installed = work_tree.parent / ".venv" / "site-packages" / "genzoo"  # a copy the tree ignores
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert sw._git_source(installed) is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git program at all
    assert sw._git("/", "rev-parse", "HEAD") is None


class FakeDistribution:
    def __init__(self, direct_url):
        self.direct_url = direct_url

    def read_text(self, name):
        assert name == "direct_url.json"
        return None if self.direct_url is None else json.dumps(self.direct_url)


@pytest.mark.parametrize(
    "direct_url, expected",
    [
        (  # pip install git+https://...@<ref>: pip records the commit it checked out
            {"url": "https://example.org/genzoo.git", "vcs_info": {"vcs": "git", "commit_id": "ab" * 20}},
            {"commit": "ab" * 20, "dirty": False, "source": "https://example.org/genzoo.git"},
        ),
        (  # pip install ./folder: where from, no commit
            {"url": "file:///src/genzoo", "dir_info": {}},
            {"commit": None, "dirty": None, "source": "file:///src/genzoo"},
        ),
        (None, {"commit": None, "dirty": None, "source": None}),  # a wheel from an index
    ],
)
def test_what_pip_recorded(monkeypatch, direct_url, expected):
    monkeypatch.setattr(sw, "distribution", lambda name: FakeDistribution(direct_url))
    assert sw._pip_source() == expected


def test_the_record_of_this_process():
    record = sw.software()
    assert set(record) == {"genzoo", "commit", "dirty", "source", "torch", "cuda", "python"}
    assert (record["torch"], record["cuda"], record["python"]) == (
        torch.__version__,
        torch.version.cuda,
        platform.python_version(),
    )
    record["torch"] = "changed"  # a copy: the cached record stays
    assert sw.software()["torch"] == torch.__version__


def test_one_line_for_people():
    record = {"genzoo": "0.1.0", "commit": "0123456789abcdef", "dirty": True, "source": "x"}
    record.update(torch="2.5.1", cuda="12.4", python="3.11.9")
    assert sw.describe(record) == (
        "genzoo 0.1.0 (commit 0123456789ab, with local changes), torch 2.5.1, CUDA 12.4, Python 3.11.9"
    )
    record.update(commit=None, dirty=None, source="file:///src/genzoo", cuda=None)
    assert sw.describe(record) == (
        "genzoo 0.1.0 (no commit known, from file:///src/genzoo), torch 2.5.1, Python 3.11.9"
    )
