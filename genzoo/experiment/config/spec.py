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
    logging: {backends: [mlflow]}    # trackers besides metrics.jsonl (docs/tracking.md)
    variants:                        # named models composed from registry keys
      nvae:
        hierarchy: {key: nvae.hierarchy, num_channels: 32}
        regularizers: {spectral: nvae.spectral_regularizer}
    ablations:                       # changes to a base variant, one run each (or a grid)
      base: nvae
      swaps: {no_se: {hierarchy.gate: baselines.none_gate}}
      grid: {hierarchy.gate: [nvae.se, baselines.none_gate]}
    launcher: {partition: gpu, gpus_per_node: 8}  # each run's job under --launcher slurm|local
    profiles:                        # named override sets: --profile quick
      quick: {training: {steps: 200}}

Resolution order: the file, then the chosen profile (deep-merged), then each ``--set`` override.
Merging is :mod:`.merging`'s and ablations :mod:`.ablations`'s; this module holds what a
resolved experiment is and the named steps that resolve one.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genzoo.errors import ConfigError
from genzoo.experiment.config.ablations import ablation_runs
from genzoo.experiment.config.merging import deep_merge, expand_dotted, leaf_paths, set_path
from genzoo.experiment.config.typed import build_dataclass, check_name, located, unknown_key_error
from genzoo.experiment.config.yamlio import KeyPath, SourceMap, format_path, load_yaml, parse_override
from genzoo.experiment.launch.options import LauncherConfig
from genzoo.io.validation import is_int
from genzoo.plugin.component_spec import ComponentSpec

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "seeds",
    "plugins",
    "requires",
    "data",
    "training",
    "evaluation",
    "logging",
    "variants",
    "ablations",
    "launcher",
    "profiles",
)
VARIANT_KEYS = ("hierarchy", "regularizers", "training", "evaluation", "logging", "description")
SETTINGS_SECTIONS = ("training", "evaluation", "logging")
"""The sections a variant may set for itself, deep-merged over the experiment's own."""
DATA_KEYS = ("dataset",)


@dataclass(frozen=True)
class DataSpec:
    """The dataset (batch sizes and loader workers are ``training`` / ``evaluation`` options)."""

    dataset: ComponentSpec


@dataclass(frozen=True)
class RunSpec:
    """One training run of the matrix: a model, its regularizers, the data and a seed. Resolved
    once and not changed afterwards, so that its :meth:`fingerprint` is computed once."""

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
    # genzoo.engine.config.LoggingConfig: where the run is tracked; not in to_config() nor in the
    # fingerprint (adding a tracker to an experiment retrains nothing)
    logging: Any = None
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

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
        """A hash of everything that decides the run's results, to detect a changed config
        (:func:`run_fingerprint`), computed on first use and kept: the output folder's checks,
        the run's claim, its ``config.yaml`` and its row of results all read this one."""
        if self._fingerprint is None:
            object.__setattr__(self, "_fingerprint", run_fingerprint(self))
        return self._fingerprint  # type: ignore[return-value]


def run_fingerprint(run: RunSpec) -> str:
    """The hash of ``run``'s resolved configuration. Training and evaluation settings count where
    they differ from their defaults, so that a setting genzoo adds later (at its default) leaves
    earlier runs' fingerprints as they were."""
    config = {
        **run.to_config(),
        "training": run.training.changed(),
        "evaluation": run.evaluation.changed(),
    }
    text = json.dumps(config, sort_keys=True, default=str)
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
    # resources of each run's job under ``genzoo run --launcher``; never part of a fingerprint
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    launcher_origin: str = ""  # file:line of ``launcher``, for error messages

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
    """The experiment of a parsed file: the profile applied, then the overrides, then the top
    level checked, then the runs expanded (variants first, then ablations, each once per seed)."""
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
    doc = _apply_profile(doc, profiles, profile, source)
    _apply_overrides(doc, overrides, source)
    top = _top_level(doc, source)
    return Experiment(
        name=top["name"],
        file=source.file,
        description=top["description"],
        seeds=top["seeds"],
        plugins=top["plugins"],
        profile=profile,
        overrides=overrides,
        runs=_runs(doc, top["seeds"], source),
        profiles=sorted(profiles),
        requires=top["requires"],
        requires_origin=source.where(("requires",)),
        launcher=build_dataclass(LauncherConfig, doc.get("launcher") or {}, ("launcher",), source),
        launcher_origin=source.where(("launcher",)),
    )


def _apply_profile(doc: dict, profiles: Mapping, profile: str | None, source: SourceMap) -> dict:
    """``doc`` with the profile deep-merged in; each value it sets remembers its line."""
    if profile is None:
        return doc
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "(none defined)"
        raise ConfigError(f"{source.file}: unknown profile {profile!r}; known profiles: {known}")
    body = profiles[profile]
    if not isinstance(body, Mapping):
        raise located(source, ("profiles", profile), "expected a mapping of overrides")
    expanded = expand_dotted(body)
    bad = [k for k in expanded if k not in TOP_LEVEL_KEYS or k == "profiles"]
    if bad:
        raise unknown_key_error(
            source, ("profiles", profile), bad[0], [k for k in TOP_LEVEL_KEYS if k != "profiles"]
        )
    for leaf in leaf_paths(expanded):
        source.origins[leaf] = source.where(("profiles", profile, *leaf)) + f" (profile {profile!r})"
    return deep_merge(doc, expanded)


def _apply_overrides(doc: dict, overrides: list[str], source: SourceMap) -> None:
    """Each ``--set path=value`` into ``doc``, in order; each value remembers its flag."""
    for item in overrides:
        key_path, value = parse_override(item)
        if key_path[0] not in TOP_LEVEL_KEYS or key_path[0] == "profiles":
            raise ConfigError(f"--set {item!r}: unknown top-level key {key_path[0]!r}")
        set_path(doc, key_path, value, f"--set {item!r}")
        source.origins[key_path] = f"--set {item}"


def _top_level(doc: dict, source: SourceMap) -> dict[str, Any]:
    """``name``, ``description``, ``seeds``, ``plugins`` and ``requires``, checked."""
    name = check_name(doc.get("name"), ("name",), source)
    seeds = doc.get("seeds", [0])
    if is_int(seeds):
        seeds = [seeds]
    if not (isinstance(seeds, list) and seeds and all(is_int(s) for s in seeds)):
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
    return {
        "name": name,
        "description": doc.get("description") or "",
        "seeds": list(seeds),
        "plugins": list(plugins),
        "requires": dict(requires),
    }


def _runs(doc: dict, seeds: list[int], source: SourceMap) -> list[RunSpec]:
    """Every run: each variant, then each ablation (its base changed by its paths), per seed."""
    data = _data_spec(doc.get("data"), source)
    experiment = str(doc["name"])  # checked by _top_level
    shared = {section: doc.get(section) or {} for section in SETTINGS_SECTIONS}
    for section, value in shared.items():
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
    for vname, body in resolved.items():
        runs += _seed_runs(vname, body, ("variants", vname), seeds, data, shared, source, group="variant",
                           origin=("variants", vname, "hierarchy"), own_at=[("variants", vname)],
                           experiment=experiment)  # fmt: skip
    for aname, base, changes in ablation_runs(doc.get("ablations"), variants, source):
        if aname in resolved or any(r.name == aname for r in runs):
            raise located(source, ("ablations",), f"ablation name {aname!r} is already used by another run")
        body = copy.deepcopy(variants[base])
        for change_path, value in changes.items():
            set_path(body, tuple(change_path.split(".")), value, f"{source.file}: ablations.{aname}")
        swap = ("ablations", "swaps", aname)
        changed_at = swap if swap in source.marks else ("ablations", "grid")
        runs += _seed_runs(
            aname,
            _variant(body, ("ablations", aname), source),
            ("ablations", aname),
            seeds,
            data,
            shared,
            source,
            group="ablation",
            base=base,
            changes=changes,
            origin=changed_at,
            own_at=[changed_at, ("variants", base)],
            experiment=experiment,
        )
    return runs


def _seed_runs(
    rname: str,
    body: dict,
    vpath: KeyPath,
    seeds: list[int],
    data: DataSpec,
    shared: dict[str, Mapping],
    source: SourceMap,
    *,
    group: str,
    origin: KeyPath,
    own_at: list[KeyPath],
    experiment: str,
    base: str | None = None,
    changes: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """One run of ``body`` per seed, its training, evaluation and logging settings the shared
    sections with the run's own deep-merged in. ``own_at``: where the run's own settings may be
    written, first place first (an ablation's change, then its base variant), for error positions."""
    from genzoo.engine.config import EvalConfig, TrainConfig

    configs = {}
    for section, cls in (("training", TrainConfig), ("evaluation", EvalConfig)):
        own = body.get(section) or {}
        key_paths = {key: (section, key) for key in shared[section]}
        for key in own:
            written = [(*at, section, key) for at in own_at]
            key_paths[key] = next((p for p in written if source.wrote(p)), written[-1])
        configs[section] = build_dataclass(
            cls, deep_merge(shared[section], own), (*vpath, section) if own else (section,), source, key_paths
        )
    logging = _logging_config(
        deep_merge(shared["logging"], body.get("logging") or {}), own_at, source, experiment, rname
    )
    return [
        RunSpec(
            name=rname,
            seed=seed,
            hierarchy=body["hierarchy"],
            regularizers=body["regularizers"],
            data=data,
            training=configs["training"].replace(seed=seed),
            evaluation=configs["evaluation"],
            group=group,
            base=base,
            changes=dict(changes or {}),
            origin=source.where(origin),
            logging=logging,
        )
        for seed in seeds
    ]


def _logging_config(
    merged: Any, own_at: list[KeyPath], source: SourceMap, experiment: str, run_name: str
) -> Any:
    """The run's :class:`genzoo.engine.config.LoggingConfig`: the ``logging`` sections merged,
    each key checked where it was written (the run's own block first, else the top level), and
    what the file leaves open named after the experiment: the MLflow experiment and the W&B
    project (the experiment's ``name``) and the W&B group (the run's name, grouping its seeds)."""
    from genzoo.engine.config import LoggingConfig, MlflowConfig, WandbConfig

    def written(*keys: str) -> KeyPath:
        own = [(*at, "logging", *keys) for at in own_at]
        return next((p for p in own if source.wrote(p)), ("logging", *keys))

    if not isinstance(merged, Mapping):
        raise located(source, written(), f"expected a mapping, got {merged!r}")
    body = dict(merged)
    for sub, cls in (("mlflow", MlflowConfig), ("wandb", WandbConfig)):
        if body.get(sub) is None:
            body.pop(sub, None)
            continue
        keys = body[sub] if isinstance(body[sub], Mapping) else {}
        body[sub] = build_dataclass(cls, body[sub], written(sub), source, {k: written(sub, k) for k in keys})
    config = build_dataclass(LoggingConfig, body, written(), source, {k: written(k) for k in body})
    return config.replace(
        mlflow=config.mlflow.replace(experiment=config.mlflow.experiment or experiment),
        wandb=config.wandb.replace(
            project=config.wandb.project or experiment, group=config.wandb.group or run_name
        ),
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
        **{section: body.get(section) or {} for section in SETTINGS_SECTIONS},
    }
