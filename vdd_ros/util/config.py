"""The one typed configuration layer: YAML files and ``key=value`` overrides -> frozen dataclasses.

Every component declares a dataclass whose fields are ``knob``s (default + help text); a job
nests its components' dataclasses instead of re-declaring their fields. ``load_config`` fills
a job's dataclass from its code defaults, then a YAML file (plain, or a ROS 2 parameter file),
then ``a.b=value`` overrides, checking keys and types so that a typo fails at start-up, not
hours later. ``flatten`` gives the dotted names the nodes declare as ROS parameters and the
docs tabulate, so the CLI, ``-p`` and the YAML spell every setting the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
import types
import typing
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or mapping does not match its schema."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        return origin(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {args}, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(names)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def knob(default: Any, help: str) -> Any:
    """A config field with its help text (shown by ``--help``, ``ros2 param describe`` and the docs)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults: config dataclasses are frozen")
    return dataclasses.field(default=default, metadata={"help": help})


def read_yaml(path: str | pathlib.Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; a ROS 2 parameter file yields its one ``ros__parameters`` section."""
    path = pathlib.Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    sections = [v["ros__parameters"] for v in data.values() if isinstance(v, dict) and "ros__parameters" in v]
    if sections:
        if len(sections) != 1 or len(data) != 1:
            raise ConfigError(f"{path}: a parameter file for this tool holds exactly one '<node>: ros__parameters'")
        data = sections[0] or {}
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value parsed as YAML, so 3 is an int and [1, 2] a list)."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"expected key=value, got {item!r}")
    try:
        return key, yaml.safe_load(text) if text else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{item!r}: the value is not valid YAML ({exc})") from exc


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {part!r} is a value, not a section")
            node = child
        node[leaf] = value
    return nested


def load_config(
    cls: type[T],
    path: str | pathlib.Path | None = None,
    overrides: typing.Iterable[str] | dict[str, Any] = (),
    section: str | None = None,
) -> T:
    """Code defaults, then YAML ``path`` (optionally one top-level ``section``), then dotted overrides."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        data = read_yaml(path)
        where = str(path)
        if section is not None:
            if section not in data:
                raise ConfigError(f"{path}: missing section {section!r}")
            data = data[section]
    flat = dict(overrides) if isinstance(overrides, dict) else dict(parse_override(i) for i in overrides)
    if flat:
        data = _merge(data, unflatten(flat))
        where = f"{where} + overrides" if path is not None else "overrides"
    return from_dict(cls, data, where=where)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One leaf of a config tree: dotted name, type, default and help text."""

    name: str
    type: Any
    default: Any
    help: str


def settings(cls: type, prefix: str = "") -> list[Setting]:
    """Every leaf setting of dataclass ``cls``, nested dataclasses expanded to dotted names."""
    hints = typing.get_type_hints(cls)
    rows: list[Setting] = []
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(settings(tp, name + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        rows.append(Setting(name, tp, default, f.metadata.get("help", "")))
    return rows


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted name -> value for every leaf of config instance ``obj`` (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, prefix + f.name + "."))
        else:
            out[prefix + f.name] = list(value) if isinstance(value, tuple) else value
    return out


def type_name(tp: Any) -> str:
    """Short readable type: ``int``, ``float``, ``mean | sample``, ``list[float]``."""
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (tuple, list):
        return f"list[{type_name(typing.get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))


def help_table(cls: type) -> str:
    """The ``--help`` text for a config: one line per setting with type, default and help."""
    rows = settings(cls)
    width = max(len(r.name) for r in rows)
    lines = []
    for r in rows:
        default = "(required)" if r.default is dataclasses.MISSING else repr(r.default)
        lines.append(f"  {r.name:<{width}}  {type_name(r.type)} = {default}\n  {'':<{width}}  {r.help}")
    return "\n".join(lines)


def markdown_table(cls: type) -> str:
    """The docs' parameter table for a config (docs are checked against this, so they cannot drift)."""
    def cell(text: str) -> str:  # a literal "|" (``a | b`` types, q(z|s)) would end the cell
        return text.replace("|", "\\|")

    lines = ["| Setting | Type | Default | Meaning |", "|---|---|---|---|"]
    for r in settings(cls):
        default = "" if r.default is dataclasses.MISSING else f"`{r.default!r}`"
        lines.append(f"| `{r.name}` | {cell(type_name(r.type))} | {default} | {cell(r.help)} |")
    return "\n".join(lines)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (for JSON metadata)."""
    return dataclasses.asdict(obj)
