"""The hooks genzoo calls: the contract between genzoo and its plugins.

Every hook is declared here once, with its docstring as the contract, in the manner of
``_pytest/hookspec.py``. Plugins implement them as plain functions marked ``@genzoo.hookimpl``
in a module that genzoo loads as a built-in plugin (``genzoo_plugins.BUILTIN_PLUGINS``), from an
installed package's entry point in the group ``genzoo.plugins``, or from an experiment file's
``plugins:`` list.

Hook arguments are passed by keyword; an implementation may accept any subset of them. genzoo
calls every hook through pluggy's plugin manager, so pluggy's options apply: ``tryfirst`` and
``trylast`` order the implementations, and an implementation marked ``wrapper=True`` (or the
older ``hookwrapper=True``) wraps the others' calls of that hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from genzoo.plugin.registry import Registry
    from genzoo.plugin.run_info import RunInfo

PROJECT_NAME = "genzoo"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def genzoo_register(registry: Registry) -> None:
    """Register this plugin's components.

    Called once per plugin, right after the plugin is loaded, on that plugin's implementations
    only. Call ``registry.add(kind, key, factory, description=...)`` for each component, where
    ``kind`` is one of :data:`genzoo.KINDS` (``genzoo list --kind`` names them), ``key`` is
    ``plugin.component`` in snake case, and ``factory`` is a callable (usually the class) that
    takes keyword arguments and returns an instance of the kind's interface. Components declared
    where they are defined, with ``@genzoo.component(kind, key, ...)``, are added with
    ``registry.add_declared(module, ...)``.

    :param registry: the :class:`genzoo.Registry` being populated.
    """


@hookspec
def genzoo_run_start(run: RunInfo) -> None:
    """Called once before the first training step of a run.

    :param run: a :class:`genzoo.RunInfo` (name, output folder, resolved config, model) of the
        run that starts. On a resumed run it is called again, with ``run.step`` set to the step
        the run resumes from.
    """


@hookspec
def genzoo_step_end(run: RunInfo, step: int, metrics: dict[str, float]) -> None:
    """Called after every optimizer step (also after a skipped one).

    :param run: the :class:`genzoo.RunInfo` of the run.
    :param step: the number of steps taken so far (1 after the first step).
    :param metrics: the scalars of this step (``loss``, ``bpd``, ``kl``, ``grad_norm``,
        ``lr``, ``skipped`` ...). Read-only: copy before storing.
    """


@hookspec
def genzoo_evaluation_end(run: RunInfo, step: int, metrics: dict[str, float]) -> None:
    """Called after each evaluation of a run on the held-out split.

    :param run: the :class:`genzoo.RunInfo` of the run.
    :param step: the training step the evaluation belongs to.
    :param metrics: the evaluation scalars (``test_bpd_elbo``, ``test_bpd_iw`` ...).
    """


@hookspec
def genzoo_run_end(run: RunInfo, results: dict[str, Any]) -> None:
    """Called once after a run has finished, diverged or been interrupted.

    :param run: the :class:`genzoo.RunInfo` of the run.
    :param results: the run's final row of results (what goes into ``results.json``), including
        ``status`` (``finished``, ``diverged`` or ``interrupted``).
    """


@hookspec
def genzoo_report_columns(results: dict[str, Any]) -> dict[str, Any] | None:
    """Return extra columns for one run's row of the report.

    Called for every run each time the report is rendered: by ``genzoo run`` as runs finish,
    and by ``genzoo report DIR`` in a later process (so a column must be computable from the
    row and the run's folder alone; ``results["checkpoint"]`` locates the folder). Return a
    mapping of column name to value (a number or a short string), or ``None`` to add nothing.
    Column names from different plugins must not clash; prefix them with the plugin name.

    :param results: the run's row of results, as read from its ``results.json``.
    """
