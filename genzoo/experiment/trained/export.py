"""``genzoo export`` and :func:`genzoo.load_model`: a trained run as a self-contained model folder.

The folder follows the Hugging Face Hub's conventions (what ``ModelHubMixin.save_pretrained``
writes and ``from_pretrained`` reads), so that it can be pushed with the hub's own client::

    OUT_DIR/
      model.safetensors   the weights the run's samples use (its EMA where it kept one)
      config.json         what rebuilds the model from genzoo's registry: the hierarchy's spec as
                          the run resolved it, image_shape, num_bits, every component key the
                          model is made of with the plugin and distribution providing it, the
                          genzoo version and the folder's format version
      README.md           the model card: what it is, its results (K, images), its training budget
                          in images seen, the command that trained it, how to load it
      samples_t<T>.png    the run's sample grids (unless ``--no-samples``)

Loading runs no code from the folder: the weights are safetensors, the config is JSON, and
every component is built from the registry by its key. A key no loaded plugin provides is a
:class:`MissingPluginError` naming the key and the distribution to install; a damaged or
foreign folder is a :class:`ModelFolderError` naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelHubMixin, constants

from genzoo import __version__
from genzoo.errors import ConfigError, GenzooError
from genzoo.experiment.report.sampling import (
    RunCheckpoint,
    build_hierarchy,
    load_run_weights,
    read_run_config,
)
from genzoo.experiment.run.outputs import run_invocation
from genzoo.interfaces.hierarchy import Hierarchy
from genzoo.io.run_layout import RunPaths
from genzoo.machine.software import describe
from genzoo.plugin.discovery import PluginHost, get_host
from genzoo.plugin.registry import Entry

FORMAT = "genzoo.hierarchy"
FORMAT_VERSION = 1
"""The layout of ``config.json``; a folder of a later version is refused with its number."""
CONFIG_NAME = constants.CONFIG_NAME  # config.json
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
CARD_NAME = "README.md"


class ModelFolderError(GenzooError):
    """A model folder that cannot be loaded: no such folder, a missing, damaged or foreign
    ``config.json``, weights that are missing, damaged or do not fit the model."""


class MissingPluginError(ModelFolderError):
    """The folder's model uses a component key that no loaded plugin provides."""


class PretrainedHierarchy(
    ModelHubMixin,
    library_name="genzoo",
    tags=["genzoo", "hierarchical-vae", "vae", "image-generation"],
):
    """A genzoo hierarchy and the config that rebuilds it, saved and loaded in the Hugging Face
    Hub's folder layout: ``save_pretrained(folder)``, ``from_pretrained(folder or repo id)`` and
    ``push_to_hub(repo_id)`` come from :class:`huggingface_hub.ModelHubMixin`.

    :param model: the hierarchy (its weights are what is saved).
    :param config: the content of ``config.json`` (:func:`model_config` builds it).

    ``card``, when set, is written as ``README.md``; a folder's own card is kept on loading,
    so that saving a loaded model writes the same folder again (less its sample grids).
    """

    def __init__(self, model: Hierarchy, config: dict[str, Any]) -> None:
        self.model = model
        self.config = config
        self.card: str | None = None

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_model

        metadata = {"format": "pt", "genzoo_version": __version__, "genzoo_format": FORMAT}
        save_model(self.model, str(save_directory / WEIGHTS_NAME), metadata=metadata)
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n")
        if self.card is not None:
            (save_directory / CARD_NAME).write_text(self.card)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> PretrainedHierarchy:
        """A local folder, or a Hub repository fetched first (its config, weights and card
        only: nothing that runs); ``config``, which the mixin read, is read again and checked."""
        folder = Path(model_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(
                    repo_id=model_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    local_files_only=local_files_only,
                    token=token,
                    allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
                )
            )
        return cls.load_folder(folder, device=device)

    @classmethod
    def load_folder(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> PretrainedHierarchy:
        """Rebuild the model of a local model folder from the registry and load its weights
        (eval mode, on ``device``)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_model as load_weights

        folder = Path(folder)
        config = read_model_config(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        host = get_host()
        check_components(config, config_path, host)
        try:
            model = build_hierarchy(
                config["hierarchy"], config["image_shape"], config.get("num_bits"), where=str(config_path)
            )
        except GenzooError as exc:
            raise ModelFolderError(f"{config_path}: the model cannot be built: {exc}") from exc
        if not weights_path.is_file():
            raise ModelFolderError(f"{folder}: no {WEIGHTS_NAME} (the folder genzoo export writes has one)")
        try:
            load_weights(model, weights_path, strict=True)
        except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
            raise ModelFolderError(
                f"{weights_path}: the weights do not fit the model {config['hierarchy']!r} of {config_path} "
                f"(damaged, or from another model): {str(exc).splitlines()[0]}"
            ) from exc
        loaded = cls(model.to(device).eval(), config)
        card = folder / CARD_NAME
        loaded.card = card.read_text() if card.is_file() else None
        return loaded


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> Hierarchy:
    """The hierarchy of a model folder written by ``genzoo export`` (or
    :meth:`PretrainedHierarchy.save_pretrained`), rebuilt from the registry with its weights, in
    eval mode on ``device``. A local folder only (for a Hub repository:
    ``PretrainedHierarchy.from_pretrained(repo_id).model``, or download it first).

    :raises ModelFolderError: no such folder, a missing, damaged or foreign ``config.json``,
        weights missing, damaged or not fitting; :class:`MissingPluginError` when a component
        key of the model is provided by no loaded plugin (the message names the distribution).
    """
    return PretrainedHierarchy.load_folder(path, device=device).model


def read_model_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json``, checked to be a genzoo model config this version reads."""
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: no such folder (expected a model folder written by genzoo export)")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelFolderError(
            f"{folder}: not a genzoo model folder: no {CONFIG_NAME} (genzoo export writes {CONFIG_NAME}, "
            f"{WEIGHTS_NAME} and {CARD_NAME})"
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFolderError(f"{path}: unreadable, expected a JSON object ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ModelFolderError(
            f"{path}: not a genzoo model config (format {found!r}; expected {FORMAT!r}, as genzoo export "
            "writes)"
        )
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFolderError(f"{path}: format_version {version!r}; expected an integer >= 1")
    if version > FORMAT_VERSION:
        raise ModelFolderError(
            f"{path}: format_version {version}, written by genzoo {config.get('genzoo_version')}; this genzoo "
            f"({__version__}) reads format_version {FORMAT_VERSION}: upgrade genzoo to load it"
        )
    for key in ("hierarchy", "image_shape"):
        if key not in config:
            raise ModelFolderError(f"{path}: no {key!r} (expected the model's {key})")
    return config


def check_components(config: dict[str, Any], where: Path, host: PluginHost) -> None:
    """Raise :class:`MissingPluginError` naming every component of ``config`` that no loaded
    plugin provides, and where to get each one."""
    components = config.get("components") or {}
    if not isinstance(components, dict):
        raise ModelFolderError(f"{where}: components {components!r}; expected a mapping key -> provider")
    missing = [
        f"{key!r} ({info.get('kind', 'component')}) {_how_to_get(info)}"
        for key, info in components.items()
        if key not in host.registry and isinstance(info, dict)
    ]
    if missing:
        loaded = ", ".join(f"{n}.*" for n in host.registry.namespaces()) or "none"
        raise MissingPluginError(
            f"{where}: the model needs components no loaded plugin provides: {'; '.join(missing)} "
            f"(loaded: {loaded})"
        )


def _how_to_get(info: dict[str, Any]) -> str:
    plugin, module = info.get("plugin"), info.get("module")
    if info.get("source") in ("installed", "built-in") and info.get("distribution"):
        pin = f"{info['distribution']}=={info['version']}" if info.get("version") else info["distribution"]
        return f"from plugin {plugin!r} of the distribution {info['distribution']}: pip install '{pin}'"
    if info.get("source") == "experiment":
        return (
            f"from the plugin module {module!r} the run's experiment loaded: put it on sys.path and call "
            f"genzoo.get_host().load_module({module!r}) before loading"
        )
    return (
        f"from plugin {plugin!r} (module {module!r}), registered from Python code: register it before loading"
    )


def model_config(
    model: Hierarchy,
    run_config: dict[str, Any],
    checkpoint: RunCheckpoint,
    host: PluginHost | None = None,
) -> dict[str, Any]:
    """The content of ``config.json`` for ``model``, trained as the run's ``run_config``
    (``config.yaml``) says."""
    host = host or get_host()
    training = run_config.get("training") or {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "genzoo_version": __version__,
        "hierarchy": run_config["hierarchy"],
        "image_shape": list(run_config["image_shape"]),
        "num_bits": run_config.get("num_bits", 8),
        "components": {e.key: _provider(e) for e in components_of(model, run_config["hierarchy"], host)},
        "weights": {
            "file": WEIGHTS_NAME,
            "kind": checkpoint.weights,
            "ema_decay": checkpoint.ema_decay,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        },
        "training": {
            "run": f"{run_config.get('name')}/seed{run_config.get('seed')}",
            "seed": run_config.get("seed"),
            "fingerprint": run_config.get("fingerprint"),
            "dataset": (run_config.get("data") or {}).get("dataset"),
            "step": checkpoint.step,
            "steps": training.get("steps"),
            "status": checkpoint.status,
            "images_seen": checkpoint.images_seen,
            "batch_size": training.get("batch_size"),
            "checkpoint_genzoo_version": checkpoint.genzoo_version,
        },
    }


def components_of(model: Hierarchy, spec: Any, host: PluginHost) -> list[Entry]:
    """The registry entries the model is made of: every key its spec names, and every
    component class among its modules (those it built from its defaults), sorted by key."""
    entries = {
        e.key: e for e in (host.registry.get(_kind_of(key, host), key) for key in _keys_in(spec, host))
    }
    by_class = {e.factory: e for e in host.registry if isinstance(e.factory, type)}
    for module in model.modules():
        entry = by_class.get(type(module))
        if entry is not None:
            entries.setdefault(entry.key, entry)
    return [entries[k] for k in sorted(entries)]


def _keys_in(value: Any, host: PluginHost) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _keys_in(item, host)
    elif isinstance(value, list):
        for item in value:
            yield from _keys_in(item, host)
    elif isinstance(value, str) and value in host.registry:
        yield value


def _kind_of(key: str, host: PluginHost) -> str:
    return next(e.kind for e in host.registry if e.key == key)


def _provider(entry: Entry) -> dict[str, Any]:
    plugin = entry.plugin
    built_in = plugin.source == "built-in"
    return {
        "kind": entry.kind,
        "plugin": plugin.name,
        "source": plugin.source,
        "module": plugin.module,
        "distribution": "genzoo" if built_in else plugin.distribution,
        "version": __version__ if built_in else plugin.version,
    }


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, samples: bool = True) -> Path:
    """Write the model folder of the run's latest checkpoint to ``out_dir`` (which must not
    exist, or be empty); returns it. The folder is written beside it and moved into place, so
    a failed export leaves nothing."""
    run_dir, out = Path(run_dir), Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{out}: exists and is not empty; genzoo export never overwrites, name a new or empty folder"
        )
    model, checkpoint = load_run_weights(run_dir)
    run_config = read_run_config(run_dir)
    pretrained = PretrainedHierarchy(model, model_config(model, run_config, checkpoint))
    grids = RunPaths(run_dir).sample_grids() if samples else []
    pretrained.card = model_card(run_dir, pretrained.config, [path.name for _, path in grids])
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pretrained.save_pretrained(staging)
        for _, path in grids:
            shutil.copyfile(path, staging / path.name)
        staging.chmod(0o755)
        try:
            os.rename(staging, out)  # replaces an empty folder; refuses one that got files meanwhile
        except OSError as exc:
            raise ConfigError(
                f"{out}: cannot be written ({exc.strerror}); genzoo export never overwrites"
            ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def model_card(run_dir: Path, config: dict[str, Any], grids: list[str]) -> str:
    """``README.md``: the Hub's metadata header, then what the model is, its results, how it
    was trained and how to load it."""
    training, weights = config["training"], config["weights"]
    key = config["hierarchy"]["key"] if isinstance(config["hierarchy"], dict) else config["hierarchy"]
    dataset = training.get("dataset") or {}
    dataset_key = dataset.get("key") if isinstance(dataset, dict) else dataset
    c, h, w = config["image_shape"]
    kind = (
        f"EMA (decay {weights['ema_decay']:g})" if weights["kind"] == "ema" else "raw (the run kept no EMA)"
    )
    lines = [
        "---",
        "library_name: genzoo",
        "tags: [genzoo, hierarchical-vae, vae, image-generation]",
        "---",
        "",
        f"# {training['run']}: `{key}` on `{dataset_key}`",
        "",
        f"A hierarchical VAE (`{key}`, {weights['num_parameters']:,} parameters) trained with genzoo "
        f"{training.get('checkpoint_genzoo_version') or 'of an unknown version'} on `{dataset_key}` ({h}x{w}, {c} channel(s), {config['num_bits']}-bit pixels). "
        f"Weights: {kind}, from step {training['step']}"
        + (f" of {training['steps']}" if training.get("steps") else "")
        + f" ({training['status']}).",
        "",
        "## Results",
        "",
        *_results_table(run_dir),
        "",
        "## Training",
        "",
        f"- budget: {training['images_seen']:,} training images seen ({training['step']} steps of "
        f"{training.get('batch_size')} images per process)",
        f"- run `{training['run']}`, seed {training['seed']}, fingerprint `{training.get('fingerprint')}`",
        *_command_lines(run_dir, training),
        _software_line(run_dir),
        f"- dataset: `{json.dumps(dataset)}`",
        "",
        "## Use",
        "",
        "```python",
        "import genzoo",
        "",
        'model = genzoo.load_model("path/to/this/folder")  # a genzoo Hierarchy, in eval mode',
        "images = model.sample(16, temperature=0.8)  # (16, C, H, W) in [0, 1]",
        "```",
        "",
        "From the Hub: `genzoo.experiment.trained.export.PretrainedHierarchy.from_pretrained(repo_id).model`.",
        "Loading runs no code from the folder (safetensors and JSON); it needs these components:",
        "",
        "| key | kind | plugin | distribution |",
        "| --- | --- | --- | --- |",
        *(
            f"| `{k}` | {p['kind']} | {p['plugin']} | {p.get('distribution') or p.get('module')} "
            f"{p.get('version') or ''} |"
            for k, p in config["components"].items()
        ),
        "",
        f"Files: `{WEIGHTS_NAME}`, `{CONFIG_NAME}` (the hierarchy's spec: `{json.dumps(config['hierarchy'])}`), "
        f"`{CARD_NAME}`" + "".join(f", `{g}`" for g in grids) + ".",
    ]
    lines += ["", *(f"![{g}]({g})" for g in grids)] if grids else []
    return "\n".join(lines) + "\n"


def _results_table(run_dir: Path) -> list[str]:
    """The run's own final evaluation (``results.json``) and those of ``genzoo evaluate``."""
    rows = []
    results_path = RunPaths(run_dir).results
    results = _read_json(results_path)
    if results and "test_nats_elbo" in results:
        rows.append(
            _row(
                f"run's final evaluation (`{results_path.name}`)",
                "test",
                results.get("step"),
                {k.removeprefix("test_"): v for k, v in results.items() if k.startswith("test_")}
                | ({"fid": results["fid"]} if "fid" in results else {}),
            )
        )
    for path in sorted(run_dir.glob("evaluation_*.json")):
        record = _read_json(path)
        if record and isinstance(record.get("metrics"), dict):
            step = (record.get("checkpoint") or {}).get("step")
            rows.append(
                _row(f"`genzoo evaluate` (`{path.name}`)", record.get("split"), step, record["metrics"])
            )
    if not rows:
        return ["No evaluation yet (the run did not finish): score it with `genzoo evaluate RUN_DIR`."]
    header = [
        "| evaluation | split | step | images | K | ELBO nats | ELBO bits/dim | IW NLL nats | IW bits/dim | FID |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    return header + rows


def _row(source: str, split: Any, step: Any, m: dict[str, Any]) -> str:
    def num(name: str, digits: int) -> str:
        value = m.get(name)
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    cells = [
        source,
        str(split),
        str(step),
        str(m.get("num_images", "-")),
        str(m.get("iw_samples", "-")),
        num("nats_elbo", 2),
        num("bpd_elbo", 4),
        num("nats_iw", 2),
        num("bpd_iw", 4),
        num("fid", 2),
    ]
    return "| " + " | ".join(cells) + " |"


def _command_lines(run_dir: Path, training: dict[str, Any]) -> list[str]:
    """The command that trained the run, from its experiment's ``experiment.json``."""
    invocation = run_invocation(run_dir)
    if not invocation:
        return ["- command: unknown (no experiment.json beside the run)"]
    run_name = str(training["run"]).split("/seed")[0]
    words = ["genzoo", "run", str(invocation.get("file"))]
    if invocation.get("profile"):
        words += ["--profile", str(invocation["profile"])]
    for override in invocation.get("overrides") or []:
        words += ["--set", str(override)]
    words += ["--only", run_name]
    plugins = invocation.get("plugins") or []
    return [
        f"- experiment `{invocation.get('name')}`, trained with: `{' '.join(words)}`",
        *(
            [f"- plugin modules the experiment loaded: {', '.join(f'`{p}`' for p in plugins)}"]
            if plugins
            else []
        ),
    ]


def _software_line(run_dir: Path) -> str:
    """What trained the run (``software`` in its ``results.json``), or that it is not known."""
    results = _read_json(RunPaths(run_dir).results)
    recorded = results.get("software") if isinstance(results, dict) else None
    if not isinstance(recorded, dict):
        return "- software: not recorded (no results.json, or one written by an older genzoo)"
    return f"- software: {describe(recorded)}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
