"""Safe YAML loading that remembers where every key came from.

Experiment files are read with ``yaml.SafeLoader`` only: no tag can construct a Python object, and
no value is ever evaluated as code. Alongside the data, :func:`load_yaml` returns a map from key
paths (``("training", "lr")``) to line and column, so that errors can point at the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genzoo.errors import ConfigError

KeyPath = tuple[Any, ...]


@dataclass
class SourceMap:
    """Where each key path of a document was written."""

    file: str
    marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    # Values that came from elsewhere (a profile, a --set override): path -> where to point.
    origins: dict[KeyPath, str] = field(default_factory=dict)

    def where(self, path: KeyPath) -> str:
        """``file:line:col`` of the longest known prefix of ``path`` (1-based), or ``file``;
        for values set by a profile or ``--set``, where that was."""
        for cut in range(len(path), -1, -1):
            origin = self.origins.get(tuple(path[:cut]))
            if origin is not None:
                return origin
            mark = self.marks.get(tuple(path[:cut]))
            if mark is not None:
                return f"{self.file}:{mark[0]}:{mark[1]}"
        return self.file

    def wrote(self, path: KeyPath) -> bool:
        """Whether the file, a profile or a ``--set`` wrote ``path`` itself (not only a prefix)."""
        return tuple(path) in self.marks or tuple(path) in self.origins


def format_path(path: KeyPath) -> str:
    """``training.kl_warmup.portion`` / ``seeds[1]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _collect_marks(node: yaml.Node, path: KeyPath, marks: dict[KeyPath, tuple[int, int]]) -> None:
    marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            marks[(*path, key)] = mark
            _collect_marks(value_node, (*path, key), marks)
            if isinstance(key, str) and "." in key:
                # A dotted key (``training.lr: 1e-3`` in a profile or an ablation) is found under
                # the path it expands to, and its prefixes, as well; where the same path is written
                # twice, the later mark is kept, as merging keeps the later value.
                parts = key.split(".")
                for cut in range(1, len(parts)):
                    marks.setdefault((*path, *parts[:cut]), mark)
                marks[(*path, *parts)] = mark
                _collect_marks(value_node, (*path, *parts), marks)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_marks(item, (*path, i), marks)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node, deep=False):  # noqa: D102
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {first_line[key]})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads ``1e-3`` as a string; experiment files are full of such numbers, so
# floats are resolved as YAML 1.2 does (a dot is optional before the exponent).
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_UniqueKeyLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse ``text`` safely; errors name ``file``, line and column."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: malformed YAML: {exc}") from None
    finally:
        loader.dispose()
    source = SourceMap(file)
    if node is not None:
        _collect_marks(node, (), source.marks)
    return data, source


def load_yaml(path: str | Path) -> tuple[Any, SourceMap]:
    """Read and parse a YAML file (see :func:`parse_yaml`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return parse_yaml(text, str(p))


def parse_override(item: str) -> tuple[KeyPath, Any]:
    """``"training.lr=1e-3"`` -> ``(("training", "lr"), 0.001)``; the value is parsed as YAML
    (safely), so numbers, booleans and ``[lists]`` work."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected PATH=VALUE, e.g. --set training.lr=1e-3")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""  # noqa: S506 - safe
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from None
    path = tuple(part for part in key.strip().split("."))
    if any(not part for part in path):
        raise ConfigError(f"--set {item!r}: empty part in the key path {key!r}")
    return path, value
