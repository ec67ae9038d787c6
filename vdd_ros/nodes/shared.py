"""Small pieces the nodes share (ROS side only): typed parameter declaration, --help, spinning."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence

import rclpy
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.context import Context
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

DEFAULT_POLICY_FILE = "avoiding_vdd.onnx"


def default_policy_path() -> str:
    """The VDD policy shipped with the package (share/vdd_ros/policies), or '' if not installed."""
    try:
        return os.path.join(get_package_share_directory("vdd_ros"), "policies", DEFAULT_POLICY_FILE)
    except PackageNotFoundError:
        return ""


def low_overhead_executor(context: Context | None = None) -> Executor:
    """rclpy's C++ EventsExecutor where rclpy has it (Kilted; Jazzy's 7.1.6), else the single-threaded one.

    For loops that call ``spin_once`` from one thread (the bench probe). Its ``spin()`` did not
    fire timers when tried (docs/results.md), so the nodes keep the single-threaded executor.
    """
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)


class StartupError(Exception):
    """A node refuses to start; the message is the one line the operator sees."""


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: default, help text, inclusive range for numbers, writable at run time or not."""

    default: object
    description: str
    low: float | None = None
    high: float | None = None
    read_only: bool = True

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.low is not None and self.high is not None:
            if isinstance(self.default, bool) or not isinstance(self.default, (int, float)):
                raise TypeError("a range needs a numeric parameter")
            if isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=0)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=self.low, to_value=self.high, step=0.0)]
        return d

    def constraint(self) -> str:
        parts = [] if self.low is None else [f"[{self.low:g}, {self.high:g}]"]
        parts.append("read-only" if self.read_only else "writable")
        return ", ".join(parts)


def declare_parameters(node: Node, specs: Mapping[str, ParamSpec]) -> dict[str, object]:
    """Declare ``specs`` and return their values; refuse unknown, out-of-range or non-finite ones.

    rclpy silently ignores a params-file or ``-p`` entry the node never declares, so a typo
    would run with the default: every override must name a declared parameter.
    """
    values: dict[str, object] = {}
    for name, spec in specs.items():
        try:
            values[name] = node.declare_parameter(name, spec.default, spec.descriptor()).value
        except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
            raise StartupError(f"parameter {name!r}: {_one_line(exc)} (allowed: {spec.constraint()})") from None
        if isinstance(values[name], float) and not math.isfinite(values[name]):
            raise StartupError(f"parameter {name!r} must be finite, got {values[name]}")
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps them, public API does not expose them
    for name in overrides:
        if not node.has_parameter(name):
            close = difflib.get_close_matches(name, list(specs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise StartupError(f"unknown parameter {name!r} for {node.get_name()}{hint}")
    return values


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def wants_help(args: Sequence[str] | None) -> bool:
    """``--help``/``-h`` given before any ``--ros-args``."""
    argv = list(sys.argv[1:] if args is None else args[1:])
    if "--ros-args" in argv:
        argv = argv[: argv.index("--ros-args")]
    return "--help" in argv or "-h" in argv


def print_help(executable: str, summary: str, specs: Mapping[str, ParamSpec]) -> None:
    """The executable's parameters, defaults and constraints, as ``--help`` shows them."""
    print(f"usage: ros2 run vdd_ros {executable} [--ros-args -p NAME:=VALUE ... --params-file FILE]\n")
    print(summary.strip() + "\n\nparameters:")
    for name, spec in specs.items():
        print(f"  {name} (default {spec.default!r}; {spec.constraint()})\n      {spec.description}")


def print_refusal(executable: str, reason: object) -> None:
    """The one line a refused start prints (the caller exits with status 2)."""
    print(f"{executable}: refused to start: {reason}", file=sys.stderr, flush=True)


def init_or_refuse(args: list[str] | None, executable: str, **options: object) -> None:
    """``rclpy.init``; malformed ROS arguments (a broken params file, an unparsable ``-p``) refuse the start."""
    try:
        rclpy.init(args=args, **options)
    except RuntimeError as exc:
        print_refusal(executable, f"bad ROS arguments: {_one_line(exc)}")
        raise SystemExit(2) from None


def spin_node(
    make_node: Callable[[], Node],
    args: list[str] | None,
    make_executor: Callable[[], Executor] = SingleThreadedExecutor,
    executable: str = "node",
) -> None:
    """init, build, spin until Ctrl-C or shutdown, then tear down cleanly (the nodes' ``main``).

    A StartupError prints one line and exits with status 2 (no traceback).
    """
    init_or_refuse(args, executable)
    node = None
    code = 0
    try:
        node = make_node()
        executor = make_executor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        print_refusal(executable, exc)
        code = 2
    except RuntimeError:
        # Ctrl-C: rclpy's signal thread shuts the context down while this thread may be inside
        # a take, publish or wait-set build, which then raise RCLError -- a shutdown, not a fault.
        if rclpy.ok():
            raise
    finally:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C during teardown stays quiet
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    if code:
        raise SystemExit(code)
