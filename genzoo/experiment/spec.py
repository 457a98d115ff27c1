"""The experiment file: what it may contain, how profiles and ``--set`` apply, and how it expands
into runs.

An experiment file declares (see ``docs/experiments.md`` for every key)::

    name: quickstart                 # the output folder's name
    seeds: [0, 1]
    plugins: [my_package.my_plugin]  # extra plugin modules to load
    requires: {vdvae: "pip install genzoo-plugin-example"}  # key namespaces and how to get them
    data: {dataset: {key: data.shapes, image_size: 32}}
    training: {...}                  # genzoo.engine.TrainConfig fields
    evaluation: {...}                # genzoo.engine.EvalConfig fields
    variants:                        # named models composed from registry keys
      nvae:
        hierarchy: {key: nvae.hierarchy, num_channels: 32}
        regularizers: {spectral: nvae.spectral_regularizer}
    ablations:                       # changes to a base variant, one run each (or a grid)
      base: nvae
      swaps: {no_se: {hierarchy.gate: baselines.none_gate}}
      grid: {hierarchy.gate: [nvae.se, baselines.none_gate]}
    profiles:                        # named override sets: --profile quick
      quick: {training: {steps: 200}}

Resolution order: the file, then the chosen profile (deep-merged), then each ``--set`` override.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genzoo.errors import ConfigError
from genzoo.experiment.typed import build_dataclass, located, unknown_key_error
from genzoo.experiment.yamlio import KeyPath, SourceMap, format_path, load_yaml, parse_override
from genzoo.spec import ComponentSpec

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "seeds",
    "plugins",
    "requires",
    "data",
    "training",
    "evaluation",
    "variants",
    "ablations",
    "profiles",
)
VARIANT_KEYS = ("hierarchy", "regularizers", "training", "evaluation", "description")
DATA_KEYS = ("dataset",)
ABLATION_KEYS = ("base", "swaps", "grid")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


def check_name(name: Any, path: KeyPath, source: SourceMap | None) -> str:
    """Names become folder names: letters, digits and ``_.+=-`` only, never ``..`` or ``/``."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise located(
            source,
            path,
            f"invalid name {name!r}: names become folder names, so use letters, digits and _ . + = - "
            "(no '/', no '..', not starting with '.')",
        )
    return name


@dataclass(frozen=True)
class DataSpec:
    """The dataset (batch sizes and loader workers are ``training`` / ``evaluation`` options)."""

    dataset: ComponentSpec


@dataclass
class RunSpec:
    """One training run of the matrix: a model, its regularizers, the data and a seed."""

    name: str
    seed: int
    hierarchy: ComponentSpec
    regularizers: dict[str, ComponentSpec]
    data: DataSpec
    training: Any  # genzoo.engine.TrainConfig
    evaluation: Any  # genzoo.engine.EvalConfig
    group: str  # "variant" or "ablation"
    base: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # where the run is declared (file:line), for error messages

    @property
    def run_id(self) -> str:
        return f"{self.name}/seed{self.seed}"

    def to_config(self) -> dict[str, Any]:
        """The resolved configuration, as written to the run's ``config.yaml``."""
        return {
            "name": self.name,
            "seed": self.seed,
            "group": self.group,
            "base": self.base,
            "changes": self.changes,
            "hierarchy": self.hierarchy.to_config(),
            "regularizers": {k: v.to_config() for k, v in self.regularizers.items()},
            "data": {"dataset": self.data.dataset.to_config()},
            "training": self.training.to_dict(),
            "evaluation": self.evaluation.to_dict(),
        }

    def fingerprint(self) -> str:
        """A hash of everything that decides the run's results, to detect a changed config."""
        text = json.dumps(self.to_config(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Experiment:
    """A validated experiment file, with its profile and overrides applied."""

    name: str
    file: str
    description: str
    seeds: list[int]
    plugins: list[str]
    profile: str | None
    overrides: list[str]
    runs: list[RunSpec]
    profiles: list[str]
    requires: dict[str, str] = field(default_factory=dict)  # key namespace -> how to install it
    requires_origin: str = ""  # file:line of ``requires``, for error messages

    def select(self, only: list[str] | None) -> list[RunSpec]:
        """The runs whose name is in ``only`` (all when ``only`` is empty)."""
        if not only:
            return list(self.runs)
        names = {r.name for r in self.runs}
        missing = [o for o in only if o not in names]
        if missing:
            raise ConfigError(
                f"{self.file}: --only {', '.join(missing)}: no such variant or ablation; "
                f"known: {', '.join(sorted(names))}"
            )
        return [r for r in self.runs if r.name in only]


# -- merging ------------------------------------------------------------------------------------
def _set_path(doc: dict, path: KeyPath, value: Any, where: str) -> None:
    node = doc
    for i, part in enumerate(path[:-1]):
        nxt = node.get(part) if isinstance(node, dict) else None
        if isinstance(nxt, str) and i >= 1:
            nxt = {"key": nxt}  # a bare registry key grows into {key: ...} when an option is set
            node[part] = nxt
        if nxt is None:
            nxt = {}
            node[part] = nxt
        if not isinstance(nxt, dict):
            raise ConfigError(
                f"{where}: cannot set {format_path(path)}: {format_path(path[: i + 1])} is not a mapping"
            )
        node = nxt
    node[path[-1]] = value


def _expand_dotted(mapping: Mapping) -> dict:
    out: dict = {}
    for key, value in mapping.items():
        value = _expand_dotted(value) if isinstance(value, Mapping) else value
        if isinstance(key, str) and "." in key:
            nested: Any = value
            for part in reversed(key.split(".")[1:]):
                nested = {part: nested}
            out = deep_merge(out, {key.split(".")[0]: nested})
        else:
            out = deep_merge(out, {key: value})
    return out


def _leaf_paths(mapping: Mapping, prefix: KeyPath = ()) -> list[KeyPath]:
    out: list[KeyPath] = []
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out += _leaf_paths(value, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


def deep_merge(base: Any, update: Any) -> Any:
    """``update`` merged into a copy of ``base``; mappings merge, everything else replaces. A
    component mapping whose ``key`` changes replaces the old one whole (the old component's
    options would not fit the new one)."""
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        if "key" in update and update.get("key") != base.get("key"):
            return copy.deepcopy(dict(update))  # another component: its options start afresh
        out = dict(base)
        for key, value in update.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), str) and "key" not in value:
                out[key] = {"key": out[key]}  # options added to a bare registry key
            out[key] = deep_merge(out.get(key), value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(update)


# -- loading ------------------------------------------------------------------------------------
def load_experiment(
    path: str | Path,
    *,
    profile: str | None = None,
    overrides: list[str] | None = None,
) -> Experiment:
    """Read, merge and validate an experiment file; nothing is built or run."""
    raw, source = load_yaml(path)
    return resolve_experiment(raw, source, profile=profile, overrides=overrides or [])


def resolve_experiment(
    raw: Any, source: SourceMap, *, profile: str | None = None, overrides: list[str] | None = None
) -> Experiment:
    from genzoo.engine.config import EvalConfig, TrainConfig

    overrides = list(overrides or [])
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source.file}: expected a mapping of experiment keys at the top level")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise unknown_key_error(source, (), key, list(TOP_LEVEL_KEYS))
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        raise located(source, ("profiles",), "expected a mapping of profile name -> overrides")
    doc = {k: copy.deepcopy(v) for k, v in raw.items() if k != "profiles"}
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "(none defined)"
            raise ConfigError(f"{source.file}: unknown profile {profile!r}; known profiles: {known}")
        body = profiles[profile]
        if not isinstance(body, Mapping):
            raise located(source, ("profiles", profile), "expected a mapping of overrides")
        bad = [k for k in _expand_dotted(body) if k not in TOP_LEVEL_KEYS or k == "profiles"]
        if bad:
            raise unknown_key_error(
                source, ("profiles", profile), bad[0], [k for k in TOP_LEVEL_KEYS if k != "profiles"]
            )
        expanded = _expand_dotted(body)
        doc = deep_merge(doc, expanded)
        for leaf in _leaf_paths(expanded):
            source.origins[leaf] = source.where(("profiles", profile, *leaf)) + f" (profile {profile!r})"
    for item in overrides:
        key_path, value = parse_override(item)
        if key_path[0] not in TOP_LEVEL_KEYS or key_path[0] == "profiles":
            raise ConfigError(f"--set {item!r}: unknown top-level key {key_path[0]!r}")
        _set_path(doc, key_path, value, f"--set {item!r}")
        source.origins[key_path] = f"--set {item}"

    name = check_name(doc.get("name"), ("name",), source)
    description = doc.get("description") or ""
    seeds = doc.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not (
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise located(source, ("seeds",), f"expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise located(source, ("seeds",), f"seeds repeat: {seeds!r}")
    plugins = doc.get("plugins") or []
    if not (isinstance(plugins, list) and all(isinstance(p, str) and p for p in plugins)):
        raise located(source, ("plugins",), f"expected a list of module names, got {plugins!r}")
    requires = doc.get("requires") or {}
    if not (
        isinstance(requires, Mapping)
        and all(isinstance(k, str) and k and "." not in k and isinstance(v, str) for k, v in requires.items())
    ):
        raise located(
            source,
            ("requires",),
            "expected a mapping of key namespace -> how to get the plugin, e.g. "
            f"{{vdvae: 'pip install genzoo-plugin-example'}}; got {requires!r}",
        )

    data = _data_spec(doc.get("data"), source)
    training = doc.get("training") or {}
    evaluation = doc.get("evaluation") or {}
    for section, value in (("training", training), ("evaluation", evaluation)):
        if not isinstance(value, Mapping):
            raise located(source, (section,), f"expected a mapping, got {value!r}")

    variants = doc.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        raise located(source, ("variants",), "expected a mapping of at least one named model variant")
    resolved: dict[str, dict] = {}
    for vname, body in variants.items():
        check_name(vname, ("variants", vname), source)
        resolved[vname] = _variant(body, ("variants", vname), source)

    runs: list[RunSpec] = []

    def add_runs(
        rname: str, body: dict, vpath: KeyPath, group: str, base=None, changes=None, origin: KeyPath = ()
    ) -> None:
        train_cfg = build_dataclass(
            TrainConfig,
            deep_merge(training, body.get("training") or {}),
            (*vpath, "training") if body.get("training") else ("training",),
            source,
        )
        eval_cfg = build_dataclass(
            EvalConfig,
            deep_merge(evaluation, body.get("evaluation") or {}),
            (*vpath, "evaluation") if body.get("evaluation") else ("evaluation",),
            source,
        )
        for seed in seeds:
            runs.append(
                RunSpec(
                    name=rname,
                    seed=seed,
                    hierarchy=body["hierarchy"],
                    regularizers=body["regularizers"],
                    data=data,
                    training=train_cfg.replace(seed=seed),
                    evaluation=eval_cfg,
                    group=group,
                    base=base,
                    changes=dict(changes or {}),
                    origin=source.where(origin or vpath),
                )
            )

    for vname, body in resolved.items():
        add_runs(vname, body, ("variants", vname), "variant", origin=("variants", vname, "hierarchy"))
    for aname, base, changes in _ablations(doc.get("ablations"), variants, source):
        if aname in resolved or any(r.name == aname for r in runs):
            raise located(source, ("ablations",), f"ablation name {aname!r} is already used by another run")
        body = copy.deepcopy(variants[base])
        for change_path, value in changes.items():
            _set_path(body, tuple(change_path.split(".")), value, f"{source.file}: ablations.{aname}")
        add_runs(
            aname,
            _variant(body, ("ablations", aname), source),
            ("ablations", aname),
            "ablation",
            base=base,
            changes=changes,
            origin=("ablations", "swaps", aname)
            if ("ablations", "swaps", aname) in source.marks
            else ("ablations", "grid"),
        )
    return Experiment(
        name=name,
        file=source.file,
        description=description,
        seeds=list(seeds),
        plugins=list(plugins),
        profile=profile,
        overrides=overrides,
        runs=runs,
        profiles=sorted(profiles),
        requires=dict(requires),
        requires_origin=source.where(("requires",)),
    )


def _data_spec(value: Any, source: SourceMap) -> DataSpec:
    if not isinstance(value, Mapping):
        raise located(source, ("data",), "expected a mapping with at least 'dataset' (a registry key)")
    for key in value:
        if key not in DATA_KEYS:
            raise unknown_key_error(source, ("data",), key, list(DATA_KEYS))
    if "dataset" not in value:
        raise located(source, ("data",), "missing 'dataset': a dataset registry key such as data.shapes")
    spec = ComponentSpec.parse(value["dataset"], where=f"{source.where(('data', 'dataset'))}: data.dataset")
    return DataSpec(dataset=spec)


def _variant(body: Any, path: KeyPath, source: SourceMap) -> dict:
    if not isinstance(body, Mapping):
        raise located(source, path, "expected a mapping with 'hierarchy' and optional 'regularizers'")
    for key in body:
        if key not in VARIANT_KEYS:
            raise unknown_key_error(source, path, key, list(VARIANT_KEYS))
    if "hierarchy" not in body:
        raise located(source, path, "missing 'hierarchy': a hierarchy registry key such as nvae.hierarchy")
    where = f"{source.where((*path, 'hierarchy'))}: {format_path((*path, 'hierarchy'))}"
    hierarchy = ComponentSpec.parse(body["hierarchy"], where=where)
    regs = body.get("regularizers") or {}
    if not isinstance(regs, Mapping):
        raise located(
            source,
            (*path, "regularizers"),
            "expected a mapping of name -> regularizer key, e.g. {spectral: nvae.spectral_regularizer}",
        )
    regularizers = {}
    for rname, rspec in regs.items():
        rwhere = (
            f"{source.where((*path, 'regularizers', rname))}: {format_path((*path, 'regularizers', rname))}"
        )
        regularizers[str(rname)] = ComponentSpec.parse(rspec, where=rwhere)
    return {
        "hierarchy": hierarchy,
        "regularizers": regularizers,
        "training": body.get("training") or {},
        "evaluation": body.get("evaluation") or {},
    }


def _ablations(value: Any, variants: Mapping, source: SourceMap) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, base, {dotted.path: value})`` for every ablation run."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise located(source, ("ablations",), "expected a mapping with 'base' and 'swaps' and/or 'grid'")
    for key in value:
        if key not in ABLATION_KEYS:
            raise unknown_key_error(source, ("ablations",), key, list(ABLATION_KEYS))
    base = value.get("base")
    if base not in variants:
        raise located(
            source,
            ("ablations", "base"),
            f"base {base!r} is not a variant; known variants: {', '.join(sorted(variants))}",
        )
    out: list[tuple[str, str, dict[str, Any]]] = []
    swaps = value.get("swaps") or {}
    if not isinstance(swaps, Mapping):
        raise located(source, ("ablations", "swaps"), "expected a mapping of ablation name -> {path: value}")
    for aname, changes in swaps.items():
        check_name(aname, ("ablations", "swaps", aname), source)
        if not isinstance(changes, Mapping) or not changes:
            raise located(
                source,
                ("ablations", "swaps", aname),
                "expected a mapping of variant paths to new values, e.g. {hierarchy.gate: baselines.none_gate}",
            )
        _check_change_paths(changes, ("ablations", "swaps", aname), source)
        out.append((aname, base, dict(changes)))
    grid = value.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise located(source, ("ablations", "grid"), "expected a mapping of variant path -> list of values")
    _check_change_paths(grid, ("ablations", "grid"), source)
    for gpath, options in grid.items():
        if not isinstance(options, list) or not options:
            raise located(
                source, ("ablations", "grid", gpath), f"expected a non-empty list of values, got {options!r}"
            )
    for combo in itertools.product(*grid.values()) if grid else []:
        changes = dict(zip(grid.keys(), combo))
        label = "+".join(f"{p.split('.')[-1]}={_short(v)}" for p, v in changes.items())
        out.append((label, base, changes))
    return out


def _check_change_paths(changes: Mapping, path: KeyPath, source: SourceMap) -> None:
    for change_path in changes:
        head = str(change_path).split(".")[0]
        if head not in VARIANT_KEYS or head == "description":
            raise located(
                source,
                (*path, change_path),
                f"cannot change {change_path!r}: paths start with one of hierarchy, regularizers, training, evaluation",
            )


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("key", "custom")
    text = str(value).split(".")[-1] if isinstance(value, str) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)
