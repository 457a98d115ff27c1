"""The registry: how plugins add components and how everything else finds and builds them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import genzoo
from genzoo import PluginInfo, Registry


class Halve(genzoo.ChannelGate):
    """Halves every channel."""

    def forward(self, x):
        return x / 2


class NotAGate(nn.Module):
    def forward(self, x):
        return x


def test_add_get_create_and_describe():
    registry = Registry()
    registry.add("gate", "demo.halve", Halve)
    entry = registry.get("gate", "demo.halve")
    assert entry.description == "Halves every channel."  # taken from the docstring
    gate = registry.create("gate", "demo.halve", chs=4)
    assert isinstance(gate, genzoo.ChannelGate) and gate.chs == 4
    assert torch.equal(gate(torch.ones(1, 4, 2, 2)), torch.full((1, 4, 2, 2), 0.5))


def test_decorator_form_registers_the_factory():
    registry = Registry()

    @registry.register("gate", "demo.halve2", description="halves, again")
    class Halve2(Halve):
        pass

    assert registry.get("gate", "demo.halve2").factory is Halve2
    assert registry.get("gate", "demo.halve2").description == "halves, again"


# -- components declared where they are defined (@genzoo.component, as timm's @register_model) ---
@genzoo.component("gate", "demo.declared_halve", description="halves, declared at its class")
@genzoo.component("gate", "demo.declared_halve_again")
class DeclaredHalve(Halve):
    """Halves every channel (declared twice, under two keys)."""


class UndeclaredHalve(DeclaredHalve):
    """A subclass is not declared by inheritance."""


def test_declared_components_are_added_by_the_plugin_not_at_import():
    from genzoo.plugin.registry import declarations

    assert [d.key for d in declarations(DeclaredHalve)] == [
        "demo.declared_halve_again",
        "demo.declared_halve",
    ]
    assert declarations(UndeclaredHalve) == ()
    registry = Registry()
    assert "demo.declared_halve" not in registry and "demo.declared_halve" not in genzoo.get_registry()
    registry.add_declared(DeclaredHalve)
    assert registry.get("gate", "demo.declared_halve").factory is DeclaredHalve
    assert registry.get("gate", "demo.declared_halve").description == "halves, declared at its class"
    assert registry.get("gate", "demo.declared_halve_again").description == (
        "Halves every channel (declared twice, under two keys)."
    )


def test_a_module_adds_the_components_defined_in_it_in_order():
    import sys

    registry = Registry()
    registry.add_declared(sys.modules[__name__])  # this test module: DeclaredHalve, not Halve
    assert registry.keys() == ["demo.declared_halve", "demo.declared_halve_again"]
    with pytest.raises(genzoo.RegistryError, match=r"'torch.nn' declares no component"):
        registry.add_declared(nn)


def test_declaring_an_unknown_kind_fails_at_the_definition():
    with pytest.raises(genzoo.RegistryError, match=r"'demo.widget' is declared under unknown kind 'widget'"):

        @genzoo.component("widget", "demo.widget")
        class Widget(Halve):
            pass


def test_every_built_in_component_is_declared_at_its_class():
    """Each built-in key is written where its class is defined, so a reader (or a static tool)
    goes from the key in an experiment file to the class in one search."""
    import inspect

    from genzoo.plugin.registry import declarations

    host = genzoo.PluginHost()
    host.load_builtin()
    assert len(host.registry) > 0
    for entry in host.registry:
        declared = {d.key: d for d in declarations(entry.factory)}
        assert entry.key in declared, f"{entry.key} is not declared at {entry.factory.__qualname__}"
        assert declared[entry.key].kind == entry.kind
        assert entry.factory.__module__.startswith(f"genzoo_plugins.{entry.plugin.name}.")
        assert inspect.getsource(entry.factory).startswith("@"), entry.key  # the decorator opens it


def test_register_modules_adds_declared_components_of_modules_without_register(tmp_path, monkeypatch):
    package = tmp_path / "declaring_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "gate.py").write_text(
        "import genzoo\n\n\n"
        "@genzoo.component('gate', 'declaring.gate', description='does nothing')\n"
        "class Gate(genzoo.ChannelGate):\n"
        "    def forward(self, x):\n"
        "        return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    genzoo.register_modules(registry, "declaring_pkg", ["gate"])
    assert registry.get("gate", "declaring.gate").description == "does nothing"


def test_duplicate_key_names_both_plugins_with_distribution_and_version():
    registry = Registry()
    first = PluginInfo("first", "installed", distribution="first-dist", version="1.2")
    second = PluginInfo("second", "installed", distribution="second-dist", version="3.4")
    with registry._registering_as(first):
        registry.add("gate", "demo.halve", Halve)
    with registry._registering_as(second), pytest.raises(genzoo.DuplicateKeyError) as err:
        registry.add("cell", "demo.halve", Halve)
    message = str(err.value)
    assert "'demo.halve'" in message
    assert "'first' (installed, first-dist 1.2)" in message
    assert "'second' (installed, second-dist 3.4)" in message


def test_unknown_key_lists_the_closest_keys_of_that_kind():
    registry = Registry()
    for key in ("nvae.separable_cell", "nvae.residual_cell", "baselines.conv_cell"):
        registry.add("cell", key, Halve)
    registry.add("gate", "nvae.separable_gate", Halve)  # close, but the wrong kind
    with pytest.raises(genzoo.UnknownKeyError) as err:
        registry.get("cell", "nvae.seperable_cell")
    message = str(err.value)
    assert "did you mean 'nvae.separable_cell'" in message
    assert "nvae.separable_gate" not in message.split("Known")[0]


def test_key_used_as_the_wrong_kind_says_which_kind_it_is():
    registry = Registry()
    registry.add("gate", "nvae.se", Halve)
    with pytest.raises(genzoo.WrongKindError, match=r"'nvae.se' is a gate .* but a cell is expected"):
        registry.create("cell", "nvae.se", in_chs=4, out_chs=4)


def test_factory_returning_the_wrong_type_is_caught_at_build_time():
    registry = Registry()
    registry.add("gate", "demo.not_a_gate", NotAGate)
    with pytest.raises(genzoo.ComponentTypeError, match=r"expected an instance of .*ChannelGate"):
        registry.create("gate", "demo.not_a_gate")


def test_bad_options_name_the_component():
    registry = Registry()
    registry.add("gate", "demo.halve", Halve)
    with pytest.raises(genzoo.RegistryError, match=r"gate 'demo.halve' rejected its options \['width'\]"):
        registry.create("gate", "demo.halve", width=3)


def test_list_filters_by_wildcard_and_kind_like_timm():
    registry = Registry()
    registry.add("cell", "nvae.separable_cell", Halve)
    registry.add("cell", "baselines.conv_cell", Halve)
    registry.add("gate", "nvae.se", Halve)
    assert [e.key for e in registry.list("nvae.*")] == ["nvae.separable_cell", "nvae.se"]
    assert [e.key for e in registry.list("*cell*")] == ["baselines.conv_cell", "nvae.separable_cell"]
    assert registry.keys("gate") == ["nvae.se"]
    with pytest.raises(genzoo.RegistryError, match="unknown kind 'cels'"):
        registry.list(kind="cels")


@pytest.mark.parametrize(
    "kind, key, factory, match",
    [
        ("widget", "demo.x", Halve, "unknown kind 'widget'"),
        ("gate", "", Halve, "invalid key"),
        ("gate", "demo.x", 42, "not callable"),
    ],
)
def test_invalid_registrations_are_refused(kind, key, factory, match):
    with pytest.raises(genzoo.RegistryError, match=match):
        Registry().add(kind, key, factory)


def test_component_spec_accepts_a_key_or_a_mapping():
    registry = Registry()
    registry.add("gate", "demo.halve", Halve)
    spec = genzoo.ComponentSpec.parse({"key": "demo.halve", "chs": 3})
    assert spec == genzoo.ComponentSpec("demo.halve", {"chs": 3})
    assert spec.build("gate", registry).chs == 3
    assert genzoo.ComponentSpec.parse("demo.halve").build("gate", registry, chs=5).chs == 5
    with pytest.raises(genzoo.ConfigError, match="model.gate: expected a registry key"):
        genzoo.ComponentSpec.parse(7, where="model.gate")
