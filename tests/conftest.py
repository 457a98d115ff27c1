"""What every test shares. The suite runs without the installed plugins of whoever runs it:
``GENZOO_DISABLE_PLUGIN_AUTOLOAD`` is set for the whole session, here at import, before any test
builds a plugin host, so the subprocesses tests start inherit it too; and with a register of CPU
training processes of its own (``GENZOO_CPU_REGISTER``), blind to the user's other genzoo runs.
A test of autoloading turns autoload back on for itself with the :func:`autoload` fixture and
installs its own plugins (``site_dir``, ``example``)."""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile

import pytest
import torch
from example_plugin import forget_example, install_example

import genzoo

os.environ[genzoo.DISABLE_AUTOLOAD_ENV] = "1"
# The register of genzoo processes training on CPU (genzoo.machine.cpu_share) of this session only: the
# runs the tests start neither see nor warn about other genzoo runs on the machine.
os.environ["GENZOO_CPU_REGISTER"] = tempfile.mkdtemp(prefix="genzoo-test-register-")
atexit.register(shutil.rmtree, os.environ["GENZOO_CPU_REGISTER"], True)


@pytest.fixture
def autoload(monkeypatch):
    """Entry-point autoload on for one test, which brings its own plugins (``site_dir``)."""
    monkeypatch.delenv(genzoo.DISABLE_AUTOLOAD_ENV, raising=False)


@pytest.fixture
def fresh_host(monkeypatch):
    """A process-wide plugin host that is rebuilt on first use and discarded afterwards."""
    genzoo.reset_host(None)
    yield
    genzoo.reset_host(None)


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    """A fresh folder on ``sys.path`` standing in for ``site-packages``; modules imported from
    it are forgotten afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is not None and str(getattr(module, "__file__", "") or "").startswith(str(site)):
            del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def example(site_dir, autoload, monkeypatch):
    """The example third-party plugin (``examples/genzoo-plugin-example``), discoverable as an
    installed distribution for one test, with autoload on; yields its version."""
    yield install_example(site_dir, monkeypatch)
    forget_example()


@pytest.fixture
def one_thread(monkeypatch):
    """One intra-op thread for the test: what the subprocesses of the same test use
    (``OMP_NUM_THREADS=1``), so results compare exactly, and no oversubscribed cores. Runs
    trained in the test's own process take it too (``training.cpu_threads: auto`` reads
    ``OMP_NUM_THREADS``)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A state-dict file of torch-fidelity's FID Inception-v3 with random weights: the layout of
    the real ``weights-inception-2015-12-05-6726825d.pth``, which cannot be downloaded here,
    loaded through ``feature_extractor_weights_path`` as an offline machine loads the real one."""
    from torch_fidelity import feature_extractor_inceptionv3 as inception

    with pytest.MonkeyPatch.context() as patch:  # build the network without fetching its weights
        patch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        net = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    torch.save(net.state_dict(), path)
    return path
