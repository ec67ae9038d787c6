"""One rosbag2 recording (a folder, or a single .mcap / .db3 file) -> timed value streams of the mapped topics.

Only the mapped topics are decoded. Standard types come from rosbags' Kilted typestore; any
other type (the package's own ``vdd_ros_msgs/msg/PolicyAction``) is registered from the
definition the recorder stored in the bag, so no ROS installation is needed to import.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from vdd_ros.data.bag.config import BagMapping, Source
from vdd_ros.data.bag.fields import Extractor, FieldError, extractor, has_header, header_ns


class BagError(ValueError):
    """A recording does not fit the mapping; the message is one line naming bag, topic and time."""


@dataclasses.dataclass
class Stream:
    """One topic's samples in time order: times in ns, values (n, len(names)) float64."""

    topic: str
    msgtype: str
    times: np.ndarray
    values: np.ndarray


@dataclasses.dataclass
class Recording:
    """The mapped topics of one bag; ``origin_ns`` is the time reported as 0 s in messages."""

    path: str
    origin_ns: int
    observations: list[Stream]
    action: Stream
    markers: np.ndarray  # ns, sorted; empty unless episodes.split is "marker"

    def at(self, ns: int) -> str:
        """A time as the user finds it in ``ros2 bag play --start-offset``: seconds into the bag."""
        return f"{(ns - self.origin_ns) * 1e-9:.3f} s"


def _typestore(reader: Reader, topics: list[str], bag: str) -> Typestore:
    """The Kilted typestore plus any recorded type it lacks, from the bag's own definitions."""
    store = get_typestore(Stores.ROS2_KILTED)
    for conn in reader.connections:
        if conn.topic not in topics or conn.msgtype in store.types:
            continue
        fmt, text = conn.msgdef.format, conn.msgdef.data
        if fmt == MessageDefinitionFormat.MSG and text:
            store.register(get_types_from_msg(text, conn.msgtype))
        elif fmt == MessageDefinitionFormat.IDL and text:
            store.register(get_types_from_idl(text))
        else:
            raise BagError(
                f"{bag}: topic {conn.topic}: type {conn.msgtype} is unknown and the bag stores no "
                "definition of it (rosbag2 before Iron does not): record a standard type instead"
            )
    return store


def _stamp_of(msg: Any, msgtype: str) -> int | None:
    """header.stamp (or the stamp of a bare std_msgs/Header), None if the type has neither."""
    if msgtype == "std_msgs/msg/Header":
        return int(msg.stamp.sec) * 1_000_000_000 + int(msg.stamp.nanosec)
    return header_ns(msg) if hasattr(msg, "header") else None


def read_bag(path: str, mapping: BagMapping) -> Recording:
    """The mapped streams of the bag at ``path``; any mismatch raises BagError (one line)."""
    if not pathlib.Path(path).exists():
        raise BagError(f"{path}: no such bag")
    sources: list[Source] = [*mapping.observations, mapping.action]
    topics = list(dict.fromkeys(s.topic for s in sources))
    marker = mapping.episodes.marker_topic if mapping.episodes.split == "marker" else ""
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unreadable storage
        raise BagError(f"{path}: not a readable rosbag2 recording ({exc})") from None
    try:
        recorded = {c.topic: c.msgtype for c in reader.connections}
        for topic in [*topics, *([marker] if marker else [])]:
            if topic not in recorded:
                raise BagError(f"{path}: topic {topic} is not in the bag; recorded: {', '.join(sorted(recorded))}")
        use_header = mapping.align.stamp == "header"
        extract = []
        for i, source in enumerate(sources):
            where = "action" if i == len(sources) - 1 else f"observations[{i}]"
            msgtype = recorded[source.topic]
            if source.type and source.type != msgtype:
                raise BagError(f"{path}: topic {source.topic} is {msgtype}, {where}.type expects {source.type}")
            if use_header and not has_header(msgtype):
                raise BagError(f"{path}: topic {source.topic}: {msgtype} has no header; set align.stamp=receive")
            try:
                extract.append(extractor(source, msgtype))
            except FieldError as exc:
                raise BagError(f"{path}: topic {source.topic} ({where}): {exc}") from None
        store = _typestore(reader, [*topics, marker], path)
        samples: dict[str, list[tuple[int, Any]]] = {t: [] for t in [*topics, *([marker] if marker else [])]}
        connections = [c for c in reader.connections if c.topic in samples]
        for conn, receive_ns, data in reader.messages(connections=connections):
            samples[conn.topic].append((receive_ns, store.deserialize_cdr(data, conn.msgtype)))
        origin = reader.start_time
    finally:
        reader.close()
    silent = [t for t in topics if not samples[t]]
    if silent:
        raise BagError(f"{path}: topic {silent[0]} is in the bag but has no message")
    streams = [
        _stream(path, s, recorded[s.topic], samples[s.topic], pick, use_header, origin)
        for s, pick in zip(sources, extract, strict=True)
    ]
    if use_header:
        origin = min((int(s.times[0]) for s in streams if len(s.times)), default=origin)
    markers = np.zeros(0, dtype=np.int64)
    if marker:
        times = [(_stamp_of(m, recorded[marker]) if use_header else None) or t for t, m in samples[marker]]
        markers = np.sort(np.array(times, dtype=np.int64))
    return Recording(path, origin, streams[:-1], streams[-1], markers)


def _stream(
    path: str, source: Source, msgtype: str, samples: list, pick: Extractor, use_header: bool, start_ns: int
) -> Stream:
    times = np.empty(len(samples), dtype=np.int64)
    values = np.empty((len(samples), len(source.names)), dtype=np.float64)
    for k, (receive_ns, msg) in enumerate(samples):
        times[k] = header_ns(msg) if use_header else receive_ns
        try:
            values[k] = pick(msg)
            if not np.all(np.isfinite(values[k])):
                raise FieldError(f"NaN or Inf in {list(source.names)}")
        except FieldError as exc:
            raise BagError(f"{path}: topic {source.topic} at {(receive_ns - start_ns) * 1e-9:.3f} s: {exc}") from None
    order = np.argsort(times, kind="stable")
    return Stream(source.topic, msgtype, times[order], values[order])
