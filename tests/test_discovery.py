"""Plugin discovery from the three places genzoo looks: the built-in list (or a registry file),
installed entry points and experiment files, with real ``*.dist-info`` folders, nothing mocked;
and the hooks, called through pluggy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from plugin_fixtures import GATE_PLUGIN, make_distribution

import genzoo
from genzoo import PluginHost


def test_installed_plugin_is_found_through_its_entry_point(site_dir, autoload):
    make_distribution(
        site_dir,
        "genzoo-double",
        "0.3.1",
        {"double_plugin.py": GATE_PLUGIN.format(key="double.gate")},
        {"double": "double_plugin"},
    )
    host = PluginHost()
    host.load_entry_points()
    info = host.plugins["double"]
    assert (info.source, info.distribution, info.version) == ("installed", "genzoo-double", "0.3.1")
    entry = host.registry.get("gate", "double.gate")
    assert entry.plugin == info
    assert entry.description == "Multiplies every channel by two."


def test_environment_variable_turns_off_autoloading(site_dir, monkeypatch):
    make_distribution(
        site_dir,
        "genzoo-double",
        "0.3.1",
        {"double_plugin.py": GATE_PLUGIN.format(key="double.gate")},
        {"double": "double_plugin"},
    )
    monkeypatch.setenv(genzoo.DISABLE_AUTOLOAD_ENV, "1")
    host = PluginHost()
    host.load_entry_points()
    assert "double" not in host.plugins and "double.gate" not in host.registry


def test_plugin_failing_on_import_is_named_with_its_entry_point_and_cause(site_dir, autoload):
    make_distribution(
        site_dir,
        "genzoo-broken",
        "2.0",
        {"broken_plugin.py": "import not_a_real_module_xyz\n"},
        {"broken": "broken_plugin"},
    )
    host = PluginHost()
    with pytest.raises(genzoo.PluginLoadError) as err:
        host.load_entry_points()
    message = str(err.value)
    assert "'broken' (installed, genzoo-broken 2.0)" in message
    assert "entry point 'broken = broken_plugin'" in message
    assert "ModuleNotFoundError" in message and "not_a_real_module_xyz" in message


def test_same_key_from_two_installed_plugins_names_both(site_dir, autoload):
    make_distribution(
        site_dir,
        "genzoo-aaa",
        "1.0",
        {"aaa_plugin.py": GATE_PLUGIN.format(key="shared.gate")},
        {"aaa": "aaa_plugin"},
    )
    make_distribution(
        site_dir,
        "genzoo-bbb",
        "2.5",
        {"bbb_plugin.py": GATE_PLUGIN.format(key="shared.gate")},
        {"bbb": "bbb_plugin"},
    )
    host = PluginHost()
    with pytest.raises(genzoo.DuplicateKeyError) as err:
        host.load_entry_points()
    assert "'aaa' (installed, genzoo-aaa 1.0)" in str(err.value)
    assert "'bbb' (installed, genzoo-bbb 2.5)" in str(err.value)


BOGUS_PLUGIN = "raise RuntimeError('a plugin of whoever runs the tests')\n"


def test_the_suite_runs_without_installed_plugins_unless_a_test_turns_autoload_on(
    site_dir, fresh_host, monkeypatch
):
    # A third-party plugin installed where the tests run (here one that breaks on import) is
    # not loaded: the suite sets GENZOO_DISABLE_PLUGIN_AUTOLOAD (tests/conftest.py) ...
    make_distribution(
        site_dir, "genzoo-bogus", "9.9", {"bogus_plugin.py": BOGUS_PLUGIN}, {"bogus": "bogus_plugin"}
    )
    assert os.environ.get(genzoo.DISABLE_AUTOLOAD_ENV)
    assert "bogus" not in genzoo.get_host().plugins
    # ... and so do the processes a test starts, which inherit the environment.
    path = os.pathsep.join(filter(None, [str(site_dir), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    listed = subprocess.run(
        [sys.executable, "-m", "genzoo.cli", "plugins"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and "bogus" not in listed.stdout, listed.stderr
    # A test of autoloading turns it back on for itself (the autoload fixture) and sees it.
    monkeypatch.delenv(genzoo.DISABLE_AUTOLOAD_ENV)
    with pytest.raises(genzoo.PluginLoadError, match=r"'bogus' \(installed, genzoo-bogus 9.9\)"):
        PluginHost().load_entry_points()


def test_registration_hook_that_raises_is_named(site_dir):
    (site_dir / "raising_plugin.py").write_text(
        textwrap.dedent(
            """
            import genzoo

            @genzoo.hookimpl
            def genzoo_register(registry):
                raise RuntimeError("boom in register")
            """
        )
    )
    host = PluginHost()
    with pytest.raises(
        genzoo.PluginLoadError,
        match=r"'raising_plugin' \(experiment\) failed in genzoo_register: "
        r"RuntimeError: boom in register",
    ):
        host.load_module("raising_plugin")


def test_experiment_plugin_module_and_custom_registry_file(site_dir, tmp_path):
    (site_dir / "exp_plugin.py").write_text(textwrap.dedent(GATE_PLUGIN.format(key="exp.gate")))
    (site_dir / "builtin_like.py").write_text(textwrap.dedent(GATE_PLUGIN.format(key="core.gate")))
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text("plugins:\n  - name: corelike\n    module: builtin_like\n")
    host = PluginHost()
    host.load_builtin(registry_file)
    host.load_module("exp_plugin")
    assert host.plugins["corelike"].source == "built-in"
    assert host.plugins["exp_plugin"].source == "experiment"
    assert host.registry.get("gate", "exp.gate").plugin.name == "exp_plugin"


def test_the_same_module_reached_twice_is_registered_once(site_dir):
    """An installed plugin that an experiment file also lists under ``plugins:``."""
    (site_dir / "twice_plugin.py").write_text(textwrap.dedent(GATE_PLUGIN.format(key="twice.gate")))
    host = PluginHost()
    host.load_module("twice_plugin", source="installed", name="twice")
    host.load_module("twice_plugin")
    assert list(host.plugins) == ["twice"]
    assert host.registry.get("gate", "twice.gate").plugin.name == "twice"


def test_misspelt_hook_is_refused_with_the_closest_names(site_dir):
    (site_dir / "typo_plugin.py").write_text(
        textwrap.dedent(
            """
            import genzoo

            @genzoo.hookimpl
            def genzoo_step_ends(step):
                return None
            """
        )
    )
    host = PluginHost()
    with pytest.raises(
        genzoo.PluginLoadError,
        match=r"'typo_plugin' .* implements unknown hooks: 'genzoo_step_ends' \(did you mean 'genzoo_step_end'",
    ):
        host.load_module("typo_plugin")
    assert "typo_plugin" not in host.plugins


WRAPPING_PLUGIN = """
    import genzoo

    calls = []

    @genzoo.hookimpl(wrapper=True)
    def genzoo_report_columns(results):
        columns = yield  # every other plugin's columns
        return [*columns, {"wrap.plugins": len(columns)}]

    @genzoo.hookimpl(hookwrapper=True)
    def genzoo_step_end(step):
        calls.append(("before", step))
        outcome = yield
        calls.append(("after", step, type(outcome.exception).__name__))
"""


def test_wrapper_hook_implementations_wrap_the_other_plugins_calls(site_dir):
    # genzoo calls its hooks through pluggy, so pluggy's wrappers (new and old style) work.
    (site_dir / "wrapping_plugin.py").write_text(textwrap.dedent(WRAPPING_PLUGIN))
    (site_dir / "columns_plugin.py").write_text(
        textwrap.dedent(
            """
            import genzoo

            @genzoo.hookimpl
            def genzoo_report_columns(results):
                return {"c.x": results["value"]}

            @genzoo.hookimpl
            def genzoo_step_end(step):
                if step == 2:
                    raise ValueError("bad step")
            """
        )
    )
    host = PluginHost()
    host.load_module("columns_plugin")
    host.load_module("wrapping_plugin")
    assert host.call_hook("genzoo_report_columns", results={"value": 3}) == [{"c.x": 3}, {"wrap.plugins": 1}]
    host.call_hook("genzoo_step_end", run=None, step=1, metrics={})
    # The plugin that raises inside the wrapper is still the one named.
    with pytest.raises(
        genzoo.PluginHookError, match=r"'columns_plugin' \(experiment\) raised in hook genzoo_step_end"
    ):
        host.call_hook("genzoo_step_end", run=None, step=2, metrics={})
    import wrapping_plugin

    assert wrapping_plugin.calls == [
        ("before", 1),
        ("after", 1, "NoneType"),
        ("before", 2),
        ("after", 2, "ValueError"),
    ]


def test_a_raising_wrapper_is_named(site_dir):
    (site_dir / "failing_wrapper.py").write_text(
        textwrap.dedent(
            """
            import genzoo

            @genzoo.hookimpl(wrapper=True)
            def genzoo_run_end(results):
                yield
                raise RuntimeError("wrapper broke")
            """
        )
    )
    host = PluginHost()
    host.load_module("failing_wrapper")
    with pytest.raises(
        genzoo.PluginHookError,
        match=r"'failing_wrapper' \(experiment\) raised in hook genzoo_run_end: RuntimeError: wrapper broke",
    ):
        host.call_hook("genzoo_run_end", run=None, results={})


def test_a_wrapper_of_the_registration_hook_runs_around_its_own_plugins_registration(site_dir):
    # genzoo_register is called once per plugin, on that plugin's implementations only.
    (site_dir / "self_wrapping.py").write_text(
        textwrap.dedent(GATE_PLUGIN.format(key="selfwrap.gate"))
        + textwrap.dedent(
            """
            order = []

            @genzoo.hookimpl(wrapper=True, specname="genzoo_register")
            def around_register(registry):
                order.append(len(registry))
                yield
                order.append(len(registry))
            """
        )
    )
    host = PluginHost()
    host.load_module("self_wrapping")
    import self_wrapping

    assert self_wrapping.order == [0, 1] and "selfwrap.gate" in host.registry


def test_installed_plugins_are_loaded_by_pluggy_with_their_distribution(site_dir, autoload):
    make_distribution(
        site_dir,
        "genzoo-double",
        "0.3.1",
        {"double_plugin.py": GATE_PLUGIN.format(key="double.gate")},
        {"double": "double_plugin"},
    )
    host = PluginHost()
    host.load_entry_points()
    [(plugin, dist)] = host.pm.list_plugin_distinfo()
    assert plugin is host.pm.get_plugin("double") and dist.metadata["Name"] == "genzoo-double"
    host.load_entry_points()  # found again: loaded once
    assert list(host.plugins) == ["double"]


def test_an_installed_plugin_named_as_a_loaded_one_is_refused_naming_both(site_dir, autoload):
    (site_dir / "builtin_like.py").write_text(textwrap.dedent(GATE_PLUGIN.format(key="core.gate")))
    make_distribution(
        site_dir,
        "genzoo-impostor",
        "1.0",
        {"impostor_plugin.py": GATE_PLUGIN.format(key="impostor.gate")},
        {"corelike": "impostor_plugin"},
    )
    host = PluginHost()
    host.load_module("builtin_like", source="built-in", name="corelike")
    with pytest.raises(
        genzoo.PluginLoadError,
        match=r"two plugins are named 'corelike': 'corelike' \(built-in\) and "
        r"'corelike' \(installed, genzoo-impostor 1.0\)",
    ):
        host.load_entry_points()


def test_malformed_registry_file_is_named(tmp_path):
    bad = tmp_path / "registry.yaml"
    bad.write_text("plugins:\n  - nvae\n")
    with pytest.raises(genzoo.PluginLoadError, match=r"registry.yaml: plugins\[0\] must be a mapping"):
        PluginHost().load_builtin(bad)


def test_plugin_api_version_mismatch_is_refused(site_dir):
    (site_dir / "future_plugin.py").write_text("GENZOO_PLUGIN_API = 99\n")
    with pytest.raises(
        genzoo.PluginLoadError,
        match=r"'future_plugin' .* needs genzoo plugin API 99, but this "
        r"genzoo provides API 1",
    ):
        PluginHost().load_module("future_plugin")


def test_lifecycle_hook_that_raises_is_reported_with_the_plugin_name(site_dir):
    (site_dir / "noisy_plugin.py").write_text(
        textwrap.dedent(
            """
            import genzoo

            seen = []

            @genzoo.hookimpl
            def genzoo_step_end(step, metrics):
                seen.append(step)
                if step == 2:
                    raise ValueError("bad metric")
            """
        )
    )
    host = PluginHost()
    host.load_module("noisy_plugin")
    host.call_hook("genzoo_step_end", run=None, step=1, metrics={})
    import noisy_plugin

    assert noisy_plugin.seen == [1]
    with pytest.raises(
        genzoo.PluginHookError,
        match=r"'noisy_plugin' \(experiment\) raised in hook "
        r"genzoo_step_end: ValueError: bad metric",
    ):
        host.call_hook("genzoo_step_end", run=None, step=2, metrics={})


def test_report_columns_hook_collects_every_plugins_columns(site_dir):
    for name, col in (("cols_a", "a.x"), ("cols_b", "b.y")):
        (site_dir / f"{name}.py").write_text(
            textwrap.dedent(
                f"""
                import genzoo

                @genzoo.hookimpl
                def genzoo_report_columns(results):
                    return {{"{col}": results["value"] * 2}}
                """
            )
        )
    host = PluginHost()
    host.load_module("cols_a")
    host.load_module("cols_b")
    columns = host.call_hook("genzoo_report_columns", results={"value": 21})
    assert sorted(columns, key=str) == [{"a.x": 42}, {"b.y": 42}]
