"""Running the ``genzoo`` command as a user does: a subprocess, in a folder of the test's choosing,
with no ``GENZOO_*`` variables leaking in from the environment (:func:`run_cli`); or the same
command in the test's own process, which spares the seconds of importing torch again, with the
process state that the command reads and changes set as a fresh process has it and put back
afterwards (:func:`cli_in_process`)."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping
from unittest import mock

KEPT_GENZOO_VARIABLES = ("GENZOO_CPU_REGISTER", "GENZOO_DISABLE_PLUGIN_AUTOLOAD")
"""The ``GENZOO_*`` variables the command keeps, as the test has them: the session's own register
of CPU training, and autoload off for the session unless the test turned it on with the
``autoload`` fixture (tests/conftest.py), so that the command loads no plugin of whoever runs
the tests."""


def cli_environment(pythonpath=None, env_extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the command runs in: this process's, less every ``GENZOO_*`` variable but
    :data:`KEPT_GENZOO_VARIABLES`, with ``pythonpath`` prepended to ``PYTHONPATH`` and
    ``env_extra`` applied last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENZOO_") or k in KEPT_GENZOO_VARIABLES}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH", "")]))
    env.update(env_extra or {})
    return env


def run_cli(*args, cwd, pythonpath=None, env_extra=None, timeout=600) -> subprocess.CompletedProcess:
    """``python -m genzoo.cli ARGS`` in ``cwd``; ``pythonpath`` is prepended to ``PYTHONPATH``."""
    return subprocess.run(
        [sys.executable, "-m", "genzoo.cli", *args],
        cwd=cwd,
        env=cli_environment(pythonpath, env_extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_in_process(*args, cwd, pythonpath=None, env_extra=None) -> subprocess.CompletedProcess:
    """What :func:`run_cli` returns for the same arguments, from ``genzoo.cli.main`` called in
    this process: the return code, and what the command wrote to stdout and stderr.

    The call sees what the subprocess would. It runs in ``cwd``, with the environment of
    :func:`cli_environment` in ``os.environ``. ``cwd`` and then ``pythonpath`` (relative to
    ``cwd``) come first on ``sys.path``, as ``python -m`` and ``PYTHONPATH`` put them; a module
    imported from either during the call is dropped from ``sys.modules`` afterwards, so that a
    plugin module of the same name in another test's folder is imported afresh. The process-wide
    plugin host is discarded before and after the call, so that the built-in plugins, the
    installed ones (entry points, read from ``sys.path`` as it is during the call) and those an
    experiment file names under ``plugins:`` are loaded anew each time. Torch starts with the
    intra-op threads a fresh process takes (``OMP_NUM_THREADS``, else one per physical core), no
    deterministic algorithms, ``float32`` as the default type, and freshly seeded generators
    (torch's, ``random``'s and numpy's). Python's warnings are filtered as in a fresh interpreter
    (its default filters, then ``-W`` options and ``PYTHONWARNINGS``, with ``genzoo.cli`` in the
    place of ``__main__``) and printed to the captured stderr; log records reach the root logger
    with no handler and level WARNING, so that logging's last-resort handler prints them there
    too. An exit through ``SystemExit`` (argparse's usage errors exit with 2) returns its code;
    any other exception returns 1, with its traceback in stderr as the interpreter would print
    it. Everything named here is put back as it was when the call returns.

    What differs from a subprocess:

    - modules already imported stay imported: torch and genzoo are not imported again, so output
      at import time is not seen, and a module of this process (``tests/`` is on ``sys.path``)
      wins over one of the same name in ``cwd`` or ``pythonpath``; module-level caches (genzoo's
      compiled CPU kernels, torch's) are shared between calls;
    - what is written to the file descriptors themselves (by C code, or by child processes) is
      not captured, and neither is what goes to ``sys.__stdout__`` or ``sys.__stderr__``;
    - signals go to the test process; a ``KeyboardInterrupt`` that ``genzoo.cli.main`` lets
      through is raised to the test, not turned into an exit code;
    - ``atexit`` handlers do not run, and threads the command leaves behind keep running;
    - what is measured of the whole process (a run's peak memory) is the test process's;
    - the C library's allocator thresholds that ``genzoo run`` sets
      (:mod:`genzoo.machine.allocator`) stay set for the rest of the test session, as other
      process-wide settings outside the list above (CUDA's generators, torch's inter-op threads);
    - a traceback starts in this helper rather than in ``runpy``.
    """
    import genzoo.cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_working_directory(cwd))
        stack.enter_context(mock.patch.dict(os.environ, cli_environment(pythonpath, env_extra), clear=True))
        folders = [os.getcwd()] + ([os.path.abspath(str(pythonpath))] if pythonpath else [])
        stack.enter_context(_import_path(list(dict.fromkeys(folders))))
        stack.enter_context(_fresh_plugin_host())
        stack.enter_context(_fresh_torch())
        stack.enter_context(_fresh_logging())
        stack.enter_context(_fresh_warnings(err))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            returncode = genzoo.cli.main(list(args))
        except SystemExit as exc:
            returncode = _exit_status(exc.code, err)
        except Exception:
            traceback.print_exc(file=err)
            returncode = 1
    return subprocess.CompletedProcess(
        [sys.executable, "-m", "genzoo.cli", *args], returncode, out.getvalue(), err.getvalue()
    )


def _exit_status(code: object, err: io.StringIO) -> int:
    """The exit status of an interpreter leaving through ``sys.exit(code)``: 0 for None, an int
    as it is, anything else printed to stderr and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=err)
    return 1


@contextlib.contextmanager
def _working_directory(folder) -> Iterator[None]:
    """``folder`` the working directory for the duration (``contextlib.chdir`` from Python 3.11)."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _import_path(folders: list[str]) -> Iterator[None]:
    """``folders`` first on ``sys.path`` for the duration; afterwards the modules imported from
    them meanwhile are dropped from ``sys.modules``, and the import system's caches of them too
    (its finders' listings and ``importlib.metadata``'s, which read entry points)."""
    modules_before = set(sys.modules)
    path_before = list(sys.path)
    sys.path[:0] = folders
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = path_before
        for name in set(sys.modules) - modules_before:
            if _imported_from(sys.modules.get(name), folders):
                del sys.modules[name]
        for folder in folders:
            sys.path_importer_cache.pop(folder, None)
        importlib.invalidate_caches()


def _imported_from(module, folders: list[str]) -> bool:
    """Whether ``module`` (a module, a package or a namespace package) lies in one of ``folders``."""
    if module is None:
        return False
    files = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])]
    roots = [os.path.realpath(folder) for folder in folders]
    for file in filter(None, files):
        real = os.path.realpath(file)
        if any(os.path.commonpath([real, root]) == root for root in roots):
            return True
    return False


@contextlib.contextmanager
def _fresh_plugin_host() -> Iterator[None]:
    """No process-wide plugin host before the call and none after it: the command loads its
    plugins as a new process does, and leaves none of them to the next call."""
    from genzoo.plugin.discovery import reset_host

    reset_host(None)
    try:
        yield
    finally:
        reset_host(None)


@contextlib.contextmanager
def _fresh_torch() -> Iterator[None]:
    """Torch's process-wide settings and the random generators as a new process starts with
    them (see :func:`cli_in_process`), then as they were."""
    import random

    import numpy as np
    import torch

    from genzoo.machine.cpu_share import machine_threads

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    dtype = torch.get_default_dtype()
    torch_state, random_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    # what a fresh torch takes: OMP_NUM_THREADS where it is set, else one thread per physical core
    if threads != machine_threads():
        torch.set_num_threads(machine_threads())
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False
    torch.set_default_dtype(torch.float32)
    torch.seed()
    random.seed()
    np.random.seed()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        torch.set_default_dtype(dtype)
        torch.set_rng_state(torch_state)
        random.setstate(random_state)
        np.random.set_state(numpy_state)


@contextlib.contextmanager
def _fresh_logging() -> Iterator[None]:
    """The root logger as a new process has it, with no handler and level WARNING (pytest's
    capturing handler is set aside), so that warnings and errors logged reach logging's
    last-resort handler, which writes to ``sys.stderr``."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@contextlib.contextmanager
def _fresh_warnings(err: io.StringIO) -> Iterator[None]:
    """A fresh interpreter's warning filters (pytest's set aside), and warnings printed to
    ``err`` as the interpreter prints them to stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        (file or err).write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        # `python -m genzoo.cli` runs genzoo.cli as __main__, whose deprecation warnings are shown
        warnings.filterwarnings("default", category=DeprecationWarning, module=r"genzoo\.cli\Z", append=True)
        warnings.filterwarnings("ignore", category=DeprecationWarning, append=True)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, append=True)
        warnings.filterwarnings("ignore", category=ImportWarning, append=True)
        warnings.filterwarnings("ignore", category=ResourceWarning, append=True)
        warnings._processoptions(sys.warnoptions)  # -W and PYTHONWARNINGS, as the interpreter reads them
        warnings.showwarning = show
        yield
