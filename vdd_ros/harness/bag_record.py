"""Record topics into a rosbag2 (MCAP or sqlite3) without a rosbag2 install: ``ros2 bag record``'s stand-in.

Each topic is subscribed raw (the serialized CDR bytes, never decoded). A topic given as
``/name:pkg/msg/Type`` is subscribed at once (reliable, volatile), so a recorder started before
the nodes records them from their first matched message ("matched /name" is logged); a bare
``/name`` is subscribed as soon as a publisher appears, with its type and QoS taken from the
graph like ``ros2 bag record`` does (reliable and transient-local only when every publisher
offers them). Messages are stored with the middleware's receive time, in time order, and every
connection carries its message definition, so ``import_bag``, rosbags and the real rosbag2
tools read the package's own messages too. The recording ends after ``stop_count`` messages on ``stop_topic`` (e.g. N
episode results), after ``duration_s``, or on Ctrl-C; the bag is always closed cleanly, and
nothing received after the stop message is written.

    python -m vdd_ros.harness.bag_record -o demo_day1 /observation /command /episode_start
    python -m vdd_ros.harness.bag_record -o demo_day1 /observation:sensor_msgs/msg/JointState ...
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import importlib
import itertools
import pathlib
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import rclpy
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

if TYPE_CHECKING:  # a TypedDict in Kilted's rclpy only; Jazzy's passes a plain dict with the same keys
    from rclpy.subscription import MessageInfo

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_REORDER_NS = 500_000_000  # messages are held this long so that callbacks taken out of order are written in order
_SPIN_S = 0.05


class RecordError(RuntimeError):
    """A topic's type cannot be resolved or stored; the message names the topic and the type."""


@dataclasses.dataclass
class RecordSummary:
    """What was written: the bag, per-topic message counts and types, and why the recording ended."""

    path: str
    counts: dict[str, int]
    types: dict[str, str]
    stopped_by: str  # "stop_topic" | "duration" | "interrupt"
    wall_s: float

    def line(self) -> str:
        topics = ", ".join(f"{t} {n}" for t, n in sorted(self.counts.items()))
        return f"{self.path}: {sum(self.counts.values())} messages ({topics}) in {self.wall_s:.1f} s, {self.stopped_by}"


def message_class(msgtype: str) -> type:
    """The installed Python class of ``pkg/msg/Name`` (what rclpy subscribes with)."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise RecordError(f"message type {msgtype} is not installed (no {package}.msg.{name})") from None


def parse_topics(topics: Sequence[str]) -> dict[str, str]:
    """``/name`` or ``/name:pkg/msg/Type`` -> {name: type or ""}; a malformed entry raises ValueError."""
    wanted = {}
    for entry in topics:
        topic, _, msgtype = entry.partition(":")
        if not topic.startswith("/") or (msgtype and len(msgtype.split("/")) != 3):
            raise ValueError(f"topic {entry!r}: expected /name or /name:pkg/msg/Type")
        wanted[topic] = msgtype
    return wanted


def _referenced(desc: object) -> Iterable[str]:
    """Message type names inside a rosbags field description (nested tuples)."""
    if isinstance(desc, str):
        if "/msg/" in desc:
            yield desc
    elif isinstance(desc, (tuple, list)):
        for item in desc:
            yield from _referenced(item)


def ensure_type(store: Typestore, msgtype: str) -> None:
    """Register ``msgtype`` and what it references from the installed ``share/<pkg>/msg/*.msg`` files."""
    if msgtype in store.fielddefs:
        return
    package, _, name = msgtype.split("/")
    try:
        path = pathlib.Path(get_package_share_directory(package), "msg", f"{name}.msg")
        text = path.read_text()
    except (PackageNotFoundError, OSError):
        raise RecordError(f"no message definition for {msgtype}: share/{package}/msg/{name}.msg not found") from None
    types = get_types_from_msg(text, msgtype)
    store.register(types)
    for referenced in set(_referenced(types[msgtype][1])):
        ensure_type(store, referenced)


def _qos_like_publishers(node: Node, topic: str) -> QoSProfile:
    """Reliable / transient-local only when every publisher offers it, so every publisher matches."""
    infos = node.get_publishers_info_by_topic(topic)
    reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return QoSProfile(
        depth=1000,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


class _Recorder:
    """Subscriptions that feed a time-ordered write queue, and the stop condition."""

    def __init__(
        self, node: Node, writer: Writer, store: Typestore, stop_topic: str, stop_count: int, log: Callable[[str], None]
    ) -> None:
        self.node, self.writer, self.store, self.log = node, writer, store, log
        self.stop_topic, self.stop_count = stop_topic, stop_count
        self.pending: list[tuple[int, int, str, bytes]] = []  # heap of (receive ns, arrival order, topic, data)
        self.order = itertools.count()
        self.connections: dict[str, Connection] = {}
        self.types: dict[str, str] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.matched: set[str] = set()
        self.counts: dict[str, int] = {}
        self.stop_seen = 0
        self.stop_ns: int | None = None  # receive time of the stop message

    def subscribe_new(self, topics: Mapping[str, str]) -> None:
        """Subscribe each wanted topic with a given type, or that now has a publisher (once)."""
        graph = dict(self.node.get_topic_names_and_types())
        for topic, given in topics.items():
            if topic in self.connections:
                continue
            if given:
                msgtype, qos = given, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
            elif topic in graph and self.node.count_publishers(topic):
                msgtype, qos = graph[topic][0], _qos_like_publishers(self.node, topic)
            else:
                continue
            ensure_type(self.store, msgtype)
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store)
            self.types[topic] = msgtype
            self.counts[topic] = 0
            self.subscriptions[topic] = self.node.create_subscription(
                message_class(msgtype), topic, self._callback(topic), qos, raw=True
            )
            self.log(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()}, {qos.durability.name.lower()})")

    def report_matched(self) -> None:
        """Log each topic the first time a publisher matches it: from then on its messages are recorded."""
        for topic, sub in self.subscriptions.items():
            if topic not in self.matched and sub.get_publisher_count() > 0:
                self.matched.add(topic)
                self.log(f"matched {topic}")

    def _callback(self, topic: str) -> Callable[[bytes, MessageInfo], None]:
        def receive(data: bytes, info: MessageInfo) -> None:
            if self.stop_ns is not None:
                return
            received = info.get("received_timestamp") or time.time_ns()
            heapq.heappush(self.pending, (received, next(self.order), topic, data))
            if topic == self.stop_topic:
                self.stop_seen += 1
                if self.stop_seen >= self.stop_count:
                    self.stop_ns = received

        return receive

    def flush(self, until_ns: int) -> None:
        """Write the queued messages received up to ``until_ns``, oldest first."""
        while self.pending and self.pending[0][0] <= until_ns:
            received, _, topic, data = heapq.heappop(self.pending)
            self.writer.write(self.connections[topic], received, data)
            self.counts[topic] += 1
            if self.counts[topic] == 1:  # "matched" is the reader's view; this proves delivery works
                self.log(f"first message on {topic}")


def record(
    topics: Sequence[str],
    output: str | pathlib.Path,
    storage: str = "mcap",
    stop_topic: str = "",
    stop_count: int = 1,
    duration_s: float = 0.0,
    node_name: str = "vdd_bag_record",
    log: Callable[[str], None] = lambda _: None,
) -> RecordSummary:
    """Record ``topics`` (``/name`` or ``/name:pkg/msg/Type``) into the new bag folder ``output`` until a stop.

    Runs in its own rclpy context on the environment's ROS_DOMAIN_ID. With ``stop_topic``, the
    recording ends at its ``stop_count``-th message (which is written, later ones are not);
    ``duration_s`` > 0 bounds it in time; Ctrl-C ends it too. The bag is closed in every case.
    """
    wanted = parse_topics(topics)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    if stop_topic and stop_topic not in wanted:
        raise ValueError(f"stop_topic {stop_topic} is not among the recorded topics {list(wanted)}")
    if pathlib.Path(output).exists():
        raise FileExistsError(f"{output} exists: rosbag2 writes a new folder")
    store = get_typestore(Stores.ROS2_KILTED)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(node_name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    started = time.monotonic()
    stopped_by = "interrupt"  # unless a stop condition ends the loop: Ctrl-C shuts the context down
    writer = Writer(output, version=9, storage_plugin=STORAGES[storage])
    writer.open()
    rec = _Recorder(node, writer, store, stop_topic, stop_count, log)
    try:
        while context.ok():
            rec.subscribe_new(wanted)
            rec.report_matched()
            executor.spin_once(timeout_sec=_SPIN_S)
            if rec.stop_ns is not None:
                stopped_by = "stop_topic"
                break
            if duration_s and time.monotonic() - started >= duration_s:
                stopped_by = "duration"
                break
            rec.flush(time.time_ns() - _REORDER_NS)
    except (KeyboardInterrupt, ExternalShutdownException):
        stopped_by = "interrupt"
    finally:
        rec.flush(rec.stop_ns if rec.stop_ns is not None else 2**63 - 1)
        writer.close()
        executor.shutdown()
        node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    summary = RecordSummary(str(output), rec.counts, rec.types, stopped_by, time.monotonic() - started)
    log(summary.line())
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdd_ros.harness.bag_record", description=__doc__.split("\n")[0])
    parser.add_argument(
        "topics", nargs="+", help="/name (type and QoS from the graph) or /name:pkg/msg/Type (subscribed at once)"
    )
    parser.add_argument("-o", "--output", required=True, help="the bag folder to create")
    parser.add_argument("-s", "--storage", default="mcap", choices=sorted(STORAGES))
    parser.add_argument("--stop-topic", default="", help="end after --stop-count messages on this recorded topic")
    parser.add_argument("--stop-count", type=int, default=1)
    parser.add_argument("--duration", type=float, default=0.0, help="end after this many seconds; 0 = no limit")
    args = parser.parse_args(argv)
    try:
        record(
            args.topics,
            args.output,
            args.storage,
            args.stop_topic,
            args.stop_count,
            args.duration,
            log=lambda line: print(line, flush=True),
        )
    except (RecordError, ValueError, FileExistsError) as exc:
        print(f"bag_record: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
