"""The one command-line convention of every vdd_ros tool: ``TOOL [CONFIG.yaml] [key=value ...]``.

A tool declares a frozen dataclass of ``knob``s (nesting the configs of the components it
runs) and a ``run(cfg)`` function. ``run_tool`` reads the optional YAML file, applies the
dotted ``key=value`` overrides (values parsed as YAML), calls the config's ``check()`` and
only then calls ``run``: a typo or an impossible value costs one line, ``TOOL: error: ...``
with exit status 2, before torch or rclpy is imported and before any directory exists.
This module must stay light (no torch, no rclpy): ``--help`` has to answer at once.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from vdd_ros.util.config import ConfigError, help_table, load_config

T = TypeVar("T")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ToolError(Exception):
    """A user-facing failure while a tool runs (bad input file, nothing to resume): one line, exit 2."""


def usage(name: str) -> str:
    return f"usage: {name} [CONFIG.yaml] [key=value ...]"


def help_text(name: str, doc: str, config: type) -> str:
    """The tool's one-paragraph description, usage and every setting with type, default and help."""
    description = doc.strip().split("\n\n", 1)[0]
    return (
        f"{usage(name)}\n\n{description}\n\n"
        "CONFIG.yaml (plain or a ROS 2 parameter file) and key=value pairs (dotted keys for nested\n"
        "settings, values parsed as YAML) override the defaults below, in that order.\n\n"
        f"settings:\n{help_table(config)}\n"
    )


def parse_args(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Split ``[CONFIG.yaml] [key=value ...]`` into the config path and the overrides."""
    path: str | None = None
    overrides: list[str] = []
    for i, arg in enumerate(argv):
        if "=" in arg and not arg.startswith("-"):
            overrides.append(arg)
        elif i == 0 and not arg.startswith("-"):
            path = arg
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}: settings are given as key=value (see --help)")
        else:
            raise ConfigError(f"expected key=value, got {arg!r} (only the first argument may be a YAML file)")
    if path is not None and not pathlib.Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")
    return path, overrides


def parse_config(config: type[T], argv: Sequence[str]) -> T:
    """The tool's config from ``argv``, checked; every problem raises ConfigError."""
    path, overrides = parse_args(argv)
    try:
        cfg = load_config(config, path, overrides)
        check = getattr(cfg, "check", None)
        if check is not None:
            check()
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a component config's own __post_init__ validation
        raise ConfigError(str(exc)) from exc
    return cfg


def fail(name: str, message: str) -> int:
    print(f"{name}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_tool(
    name: str, doc: str, config: type[T], run: Callable[[T], int], argv: Sequence[str] | None = None
) -> int:
    """Parse, check, then ``run``; the exit status of the tool (0, 2 for usage/input errors, 130 on Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(help_text(name, doc, config), end="")
        return 0
    try:
        cfg = parse_config(config, argv)
    except ConfigError as exc:
        return fail(name, str(exc))
    try:
        return run(cfg)
    except ToolError as exc:
        return fail(name, str(exc))
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# Checks shared by the tools' ``check()`` methods.


def require_file(path: str, what: str) -> None:
    if not pathlib.Path(path).is_file():
        raise ConfigError(f"{what} {path or '(empty)'} does not exist")


def require_dir(path: str, what: str) -> None:
    if not pathlib.Path(path).is_dir():
        raise ConfigError(f"{what} {path or '(empty)'} is not a directory")


def require_positive(values: dict[str, float]) -> None:
    """Counts and durations that must be > 0, by their setting names."""
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")


def narrow(obj: Any, cls: type[T]) -> T:
    """The ``cls`` part of ``obj``, whose dataclass extends ``cls`` with tool-only settings."""
    return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)})


def output_dir(path: str) -> pathlib.Path:
    """Create the tool's output directory (called by ``run``, after every check passed)."""
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out
