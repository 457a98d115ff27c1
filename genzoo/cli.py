"""The ``genzoo`` command.

Errors that the user can act on (:class:`genzoo.GenzooError`) print one line to stderr and exit
with code 2; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from genzoo import __version__
from genzoo.errors import ConfigError, GenzooError
from genzoo.interfaces import KIND_NAMES
from genzoo.plugin.discovery import component_listing, get_host

EXIT_USAGE = 2

Command = Callable[[argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], Command]
_COMMANDS: dict[str, tuple[Configure, str]] = {}


def command(name: str, help: str) -> Callable[[Configure], Configure]:
    """Register a sub-command: the decorated function adds its arguments to the parser and
    returns the function that runs it."""

    def decorate(configure: Configure) -> Configure:
        _COMMANDS[name] = (configure, help)
        return configure

    return decorate


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@command("list", help="list registered components, e.g. genzoo list 'nvae.*' --kind cell")
def _configure_list(p: argparse.ArgumentParser) -> Command:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard on keys (default: *)")
    p.add_argument("--kind", choices=sorted(KIND_NAMES), help="only components of this kind")

    def run(args: argparse.Namespace) -> int:
        entries = component_listing(args.pattern, args.kind)  # cached: no torch while nothing changed
        if not entries:
            print(f"no component matches {args.pattern!r}" + (f" of kind {args.kind}" if args.kind else ""))
            return 0
        rows = [(e.kind, e.key, e.plugin, e.description) for e in entries]
        print(_table(rows, ("kind", "key", "plugin", "description")))
        return 0

    return run


@command("plugins", help="list loaded plugins: name, source, version and keys")
def _configure_plugins(p: argparse.ArgumentParser) -> Command:
    def run(args: argparse.Namespace) -> int:
        host = get_host()
        rows = []
        for info in host.plugins.values():
            keys = [e.key for e in host.registry.list() if e.plugin.name == info.name]
            version = info.version or (__version__ if info.source == "built-in" else "-")
            rows.append((info.name, info.source, version, info.module, ", ".join(keys) or "(none)"))
        print(_table(rows, ("plugin", "source", "version", "module", "keys")))
        return 0

    return run


def _add_experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="experiment file (YAML)")
    p.add_argument("--profile", help="a profile of the file, e.g. quick or paper")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override one value, e.g. --set training.lr=1e-3 (repeatable)",
    )


@command("run", help="train and evaluate an experiment's runs and write the report")
def _configure_run(p: argparse.ArgumentParser) -> Command:
    _add_experiment_args(p)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides training.device)")
    p.add_argument(
        "--out", default="runs", help="output root; the experiment writes OUT/<name>/ (default: runs)"
    )
    p.add_argument(
        "--only", action="append", metavar="RUN", help="run only this variant or ablation (repeatable)"
    )
    p.add_argument("--dry-run", action="store_true", help="validate and print the runs; train nothing")
    p.add_argument(
        "--launcher",
        metavar="NAME",
        help="submit one job per pending run instead of training here: slurm, or local (processes "
        "on this machine); resources from the file's launcher: section (docs/cluster.md)",
    )
    p.add_argument(
        "--wait", action="store_true", help="with --launcher: wait for the jobs, then render the report"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue runs whose configuration changed")
    group.add_argument(
        "--fresh", action="store_true", help="move earlier results to archive/ and start again"
    )

    def run(args: argparse.Namespace) -> int:
        from genzoo.experiment.launch.options import check_launcher_name
        from genzoo.experiment.run.runner import run_matrix

        if args.launcher is not None:
            check_launcher_name(args.launcher)
        elif args.wait:
            raise ConfigError("--wait waits for the jobs of --launcher; without it genzoo run trains here")
        experiment = _load(args)
        if args.dry_run:
            return _print_plan(experiment, args.only, args.launcher)
        common = dict(only=args.only, device=args.device, resume=args.resume, fresh=args.fresh)
        if args.launcher is None:
            from genzoo.machine.cpu_share import cpu_training

            with cpu_training(_trains_on_cpu(experiment, args.device)):
                outcome = run_matrix(experiment, args.out, **common)
            print(f"report: {outcome.exp_dir / 'report.md'}")
            return outcome.exit_code
        from genzoo.experiment.launch.launcher import submit_matrix

        outcome = submit_matrix(experiment, args.out, launcher=args.launcher, wait=args.wait, **common)
        if args.wait:
            print(f"report: {outcome.exp_dir / 'report.md'}")
            return outcome.exit_code
        submitted = len(outcome.submitted)
        print(
            f"{submitted} job(s) submitted. `genzoo status {outcome.exp_dir}` follows them; each job renders "
            f"the report when its run ends: {outcome.exp_dir / 'report.md'}"
        )
        return 0

    return run


@command("validate", help="check an experiment file and print the resolved runs")
def _configure_validate(p: argparse.ArgumentParser) -> Command:
    _add_experiment_args(p)

    def run(args: argparse.Namespace) -> int:
        return _print_plan(_load(args), None)

    return run


@command("report", help="render an experiment folder's report again")
def _configure_report(p: argparse.ArgumentParser) -> Command:
    p.add_argument("dir", help="an experiment output folder (OUT/<name>)")

    def run(args: argparse.Namespace) -> int:
        from genzoo.experiment.report import render_report
        from genzoo.io.run_layout import ExperimentPaths

        paths = ExperimentPaths(Path(args.dir))
        try:
            manifest = json.loads(paths.manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise GenzooError(
                f"{paths.root}: not an experiment output folder (no readable experiment.json)"
            ) from exc
        host = get_host()
        for module in manifest.get("plugins") or []:  # its columns come from the same plugins
            host.load_module(module, source="experiment")
        for path in render_report(paths.root, title=manifest.get("name"), host=host).values():
            print(path)
        return 0

    return run


@command("status", help="show each run of an experiment folder: state, step (and how old it is), job")
def _configure_status(p: argparse.ArgumentParser) -> Command:
    p.add_argument("dir", help="an experiment output folder (OUT/<name>)")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")

    def run(args: argparse.Namespace) -> int:
        import dataclasses

        from genzoo.experiment.run.status import experiment_status

        rows = experiment_status(args.dir)
        if args.json:
            for row in rows:
                print(json.dumps(dataclasses.asdict(row)))
            return 0
        body = [(r.run, r.state, r.progress(), r.age(), r.job_id or "-", r.detail) for r in rows]
        print(_table(body, ("run", "state", "step", "read", "job", "detail")))
        return 0

    return run


@command("evaluate", help="score a trained run's checkpoint: ELBO and IW NLL (nats, bits/dim), FID")
def _configure_evaluate(p: argparse.ArgumentParser) -> Command:
    p.add_argument("run_dir", help="a run folder (OUT/<name>/runs/<run>/seed<k>)")
    p.add_argument("--iw-samples", "-k", type=int, metavar="K", help="default: the run's evaluation's K")
    p.add_argument("--fid", action="store_true", help="FID too (torch-fidelity, cached reference statistics)")
    p.add_argument("--split", default="test", choices=("test", "train"), help="default: test")
    p.add_argument("--max-images", "-n", type=int, metavar="N", help="the first N images (default: run's)")
    p.add_argument("--batch-size", type=int, metavar="B", help="default: the run's evaluation.batch_size")
    p.add_argument("--seed", type=int, help="evaluation noise (default: the run's seed, as its evaluation)")
    p.add_argument("--fid-samples", type=int, metavar="N", help="default: evaluation.fid_num_samples")
    p.add_argument("--fid-weights", metavar="PATH", help="Inception weights file for offline machines")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none when stderr is no TTY)")

    def run(args: argparse.Namespace) -> int:
        from genzoo.experiment.trained.evaluate import evaluate_run, format_evaluation, progress_wanted

        record, path = evaluate_run(
            args.run_dir,
            iw_samples=args.iw_samples,
            max_images=args.max_images,
            split=args.split,
            batch_size=args.batch_size,
            seed=args.seed,
            fid=args.fid,
            fid_samples=args.fid_samples,
            fid_weights=args.fid_weights,
            device=args.device,
            progress=progress_wanted(args.no_progress),
        )
        print(format_evaluation(record))
        print(f"written: {path}")
        return 0

    return run


@command("export", help="write a trained run as a model folder (safetensors, config.json, model card)")
def _configure_export(p: argparse.ArgumentParser) -> Command:
    p.add_argument("run_dir", help="a run folder (OUT/<name>/runs/<run>/seed<k>)")
    p.add_argument("out_dir", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--no-samples", action="store_true", help="leave the run's sample grids out")

    def run(args: argparse.Namespace) -> int:
        from genzoo.experiment.trained.export import export_run

        print(export_run(args.run_dir, args.out_dir, samples=not args.no_samples))
        return 0

    return run


@command("sample", help="write a sample grid from a trained run, drawn as its own grids are")
def _configure_sample(p: argparse.ArgumentParser) -> Command:
    p.add_argument("run_dir", help="a run folder (OUT/<name>/runs/<run>/seed<k>)")
    p.add_argument("--temperature", "-t", type=float, default=1.0, help="prior temperature (default 1.0)")
    p.add_argument("-n", type=int, help="number of samples (default: the run's evaluation.num_samples)")
    p.add_argument("--out", help="PNG file to write (default: RUN_DIR/samples_cli_t<T>.png)")
    p.add_argument("--seed", type=int, help="default: the run's seed, which its own sample grids use")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--readjust-bn",
        action=argparse.BooleanOptionalAction,
        help="re-estimate BatchNorm statistics from the model's own samples before drawing, for any "
        "hierarchy with BatchNorm layers (default: the run's evaluation.bn_readjust, on unless it "
        "was turned off; without it such models draw mostly noise)",
    )
    p.add_argument(
        "--bn-readjust-iters", type=int, metavar="N", help="default: the run's evaluation.bn_readjust_iters"
    )
    p.add_argument(
        "--bn-readjust-batch-size",
        type=int,
        metavar="N",
        help="default: the run's evaluation.bn_readjust_batch_size",
    )

    def run(args: argparse.Namespace) -> int:
        from genzoo.experiment.report.sampling import sample_run

        print(
            sample_run(
                args.run_dir,
                temperature=args.temperature,
                num_samples=args.n,
                out=args.out,
                seed=args.seed,
                device=args.device,
                readjust_bn=args.readjust_bn,
                bn_readjust_iters=args.bn_readjust_iters,
                bn_readjust_batch_size=args.bn_readjust_batch_size,
            )
        )
        return 0

    return run


def _add_latent_args(p: argparse.ArgumentParser) -> None:
    """The options ``genzoo reconstruct`` and ``genzoo interpolate`` share."""
    p.add_argument("--temperature", "-t", type=float, default=1.0, help="of the prior draws (default 1.0)")
    p.add_argument("--out", help="PNG file to write; it must not exist (default: a new file in RUN_DIR)")
    p.add_argument("--seed", type=int, help="of every draw (default: the run's seed)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--readjust-bn",
        action=argparse.BooleanOptionalAction,
        help="re-estimate BatchNorm statistics from the model's own samples before decoding prior "
        "draws, as genzoo sample does (default: the run's evaluation.bn_readjust)",
    )
    p.add_argument("--resize", action="store_true", help="resize image files to the model's size (stretched)")
    p.add_argument(
        "--convert", action="store_true", help="convert image files grey <-> RGB as the model needs"
    )
    p.add_argument(
        "--binarize",
        choices=("threshold", "bernoulli"),
        default="threshold",
        help="for a binarized model (num_bits 1), how an image file's grey levels k become 0 or 1: "
        "threshold k >= 128 (default; as the built-in datasets read 1-bit data), or bernoulli: a "
        "Bernoulli(k/255) draw per pixel, as dynamically binarized data (MNIST) are read in "
        "training. Images of the run's dataset (test:12) are read as the run reads them",
    )


def _input_options(args: argparse.Namespace):
    from genzoo.experiment.trained.inputs import InputOptions

    return InputOptions(resize=args.resize, convert=args.convert, binarize=args.binarize)


def _group_counts(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--keep-groups {text}: expected group counts separated by commas, e.g. 1,2,4"
        ) from None


@command("reconstruct", help="write a grid of reconstructions of images by a trained run, keeping k groups")
def _configure_reconstruct(p: argparse.ArgumentParser) -> Command:
    p.add_argument("run_dir", help="a run folder (OUT/<name>/runs/<run>/seed<k>)")
    p.add_argument(
        "images",
        nargs="+",
        help="image files (PNG, JPEG) or images of the run's dataset as <split>:<index>, e.g. test:12",
    )
    p.add_argument(
        "--keep-groups",
        metavar="K,K,...",
        help="a row per k: the posterior of the top k latent groups, the rest drawn from the prior at "
        "--temperature (NVAE's figure; default 1,2,4,... below the number of groups). The first rows "
        "are the inputs and their full reconstructions; one column per image",
    )
    _add_latent_args(p)

    def run(args: argparse.Namespace) -> int:
        from genzoo.experiment.trained.latents import reconstruct_run

        print(
            reconstruct_run(
                args.run_dir,
                args.images,
                keep_groups=_group_counts(args.keep_groups),
                temperature=args.temperature,
                out=args.out,
                seed=args.seed,
                device=args.device,
                readjust_bn=args.readjust_bn,
                inputs=_input_options(args),
            )
        )
        return 0

    return run


@command(
    "interpolate", help="write an interpolation between two images in a trained run's latents, or a traversal"
)
def _configure_interpolate(p: argparse.ArgumentParser) -> Command:
    p.add_argument("run_dir", help="a run folder (OUT/<name>/runs/<run>/seed<k>)")
    p.add_argument("a", help="an image file (PNG, JPEG) or an image of the run's dataset, e.g. test:12")
    p.add_argument("b", nargs="?", help="the other end (not needed with --traverse)")
    p.add_argument("--steps", type=int, default=8, help="frames (default 8)")
    p.add_argument(
        "--groups",
        type=int,
        metavar="K",
        help="interpolate the top K latent groups only; the rest are one prior draw at --temperature, "
        "shared by every frame (default: all groups)",
    )
    p.add_argument(
        "--traverse",
        type=int,
        metavar="GROUP",
        help="instead, traverse latent group GROUP (0 is the top group) of each image: its standardized "
        "latent moved along one seeded direction, the other groups kept",
    )
    p.add_argument("--span", type=float, default=2.0, help="a traversal goes from -SPAN to SPAN (default 2)")
    _add_latent_args(p)

    def run(args: argparse.Namespace) -> int:
        from genzoo.experiment.trained.latents import interpolate_run

        print(
            interpolate_run(
                args.run_dir,
                args.a,
                args.b,
                steps=args.steps,
                groups=args.groups,
                traverse=args.traverse,
                span=args.span,
                temperature=args.temperature,
                out=args.out,
                seed=args.seed,
                device=args.device,
                readjust_bn=args.readjust_bn,
                inputs=_input_options(args),
            )
        )
        return 0

    return run


def _trains_on_cpu(experiment, device: str | None) -> bool:
    """Whether some run of ``experiment`` trains on the CPU (``--device`` or its ``training.device``)."""
    import torch

    devices = {device or run.training.device for run in experiment.runs}
    return any(d == "cpu" or (d == "auto" and not torch.cuda.is_available()) for d in devices)


def _load(args: argparse.Namespace):
    from genzoo.experiment.config.spec import load_experiment

    return load_experiment(args.file, profile=args.profile, overrides=args.overrides)


def _print_plan(experiment, only, launcher: str | None = None) -> int:
    from genzoo.experiment.run.runner import check_compositions, load_plugins

    host = get_host()
    runs = experiment.select(only)
    load_plugins(experiment, host, runs)
    data_problems: list[str] = []
    counts = check_compositions(runs, host, {}, data_problems=data_problems)
    profile = f" (profile {experiment.profile})" if experiment.profile else ""
    print(f"{experiment.file}: experiment {experiment.name!r}{profile}, {len(runs)} run(s)")
    rows = []
    for run, params in zip(runs, counts):
        regs = ", ".join(f"{k}={v.key}" for k, v in run.regularizers.items()) or "-"
        change = ", ".join(f"{k}={v}" for k, v in run.changes.items()) or "-"
        shown = "?" if params is None else f"{params:,}"
        rows.append((run.run_id, run.hierarchy.key, shown, regs, change, str(run.training.steps)))
    print(_table(rows, ("run", "hierarchy", "params", "regularizers", "changes", "steps")))
    if launcher is not None or experiment.launcher.summary() != "defaults":
        print(f"launcher{' ' + launcher if launcher else ''}: {experiment.launcher.summary()}")
    for problem in data_problems:
        print(
            f"genzoo: warning: the data is not available here, so models on it were not built: {problem}",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genzoo",
        description="A plugin-based zoo of deep hierarchical VAEs: list components, run experiments.",
    )
    parser.add_argument("--version", action="version", version=f"genzoo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (configure, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_run=configure(p))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except GenzooError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"genzoo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("genzoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
