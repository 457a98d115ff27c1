"""The ``genzoo`` command.

Errors that the user can act on (:class:`genzoo.GenzooError`) print one line to stderr and exit
with code 2; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from genzoo import __version__
from genzoo.discovery import get_host
from genzoo.errors import GenzooError
from genzoo.interfaces import KINDS

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
    p.add_argument("--kind", choices=sorted(KINDS), help="only components of this kind")

    def run(args: argparse.Namespace) -> int:
        entries = get_host().registry.list(args.pattern, args.kind)
        if not entries:
            print(f"no component matches {args.pattern!r}" + (f" of kind {args.kind}" if args.kind else ""))
            return 0
        rows = [(e.kind, e.key, e.plugin.name, e.description) for e in entries]
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
