"""Per message type: the values of one field as a float vector, in the order of the mapping's names.

An extractor is built once per topic (type and field resolved, indices fixed) and called on
every decoded message; it raises ``FieldError`` with the reason only, and the bag reader
adds bag, topic and time, so each bad message costs the user one precise line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from vdd_ros.data.bag.config import (
    ARRAY,
    FIELDS,
    JOINT_STATE,
    ODOMETRY,
    POLICY_ACTION,
    POSE,
    POSE_WIDTH,
    TRAJECTORY,
    Source,
)

Extractor = Callable[[Any], np.ndarray]


class FieldError(ValueError):
    """A message does not carry what the mapping asks for (reason only; the caller adds where)."""


def has_header(msgtype: str) -> bool:
    return msgtype != ARRAY


def header_ns(msg: Any) -> int:
    """header.stamp in nanoseconds."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _by_name(names: tuple[str, ...], what: str) -> Callable[[list[str], Any], np.ndarray]:
    """Pick ``names`` out of a named vector; the lookup is cached per distinct name list."""
    cache: dict[tuple[str, ...], np.ndarray] = {}

    def pick(msg_names: list[str], values: Any) -> np.ndarray:
        key = tuple(msg_names)
        index = cache.get(key)
        if index is None:
            missing = [n for n in names if n not in key]
            if missing:
                raise FieldError(f"{what} {missing} not found; the message has {list(key)}")
            index = cache[key] = np.array([key.index(n) for n in names])
        values = np.asarray(values, dtype=np.float64)
        if len(values) != len(key):
            raise FieldError(f"{len(key)} names but {len(values)} values")
        return values[index]

    return pick


def _by_index(source: Source) -> Callable[[Any], np.ndarray]:
    indices = np.array(source.indices, dtype=np.int64)

    def pick(values: Any) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if not len(indices):
            if len(values) != len(source.names):
                raise FieldError(f"{len(values)} values for {len(source.names)} names (set indices to pick some)")
            return values
        if indices.max() >= len(values):
            raise FieldError(f"index {int(indices.max())} out of range: the message has {len(values)} values")
        return values[indices]

    return pick


def _vector3(v: Any) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def _quaternion(q: Any) -> np.ndarray:
    return np.array([q.x, q.y, q.z, q.w], dtype=np.float64)


def _yaw(q: Any) -> np.ndarray:
    return np.array([math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))])


def _pose_field(field: str) -> Callable[[Any], np.ndarray]:
    return {
        "position": lambda pose: _vector3(pose.position),
        "orientation": lambda pose: _quaternion(pose.orientation),
        "yaw": lambda pose: _yaw(pose.orientation),
    }[field]


def extractor(source: Source, msgtype: str) -> Extractor:
    """The function msg -> values (float64, one per name) for ``source`` on a topic of ``msgtype``.

    Raises FieldError if the type or field is not supported (the caller names topic and bag).
    """
    if msgtype not in FIELDS:
        raise FieldError(f"unsupported message type {msgtype}; supported: {', '.join(FIELDS)}")
    field = source.field or FIELDS[msgtype][0]
    if field not in FIELDS[msgtype]:
        raise FieldError(f"field {field!r} is not one of {FIELDS[msgtype]} for {msgtype}")
    if msgtype == JOINT_STATE:
        named = _by_name(source.names, "joint(s)")
        return lambda msg: named(msg.name, getattr(msg, field))
    if msgtype == TRAJECTORY:
        named = _by_name(source.names, "joint(s)")

        def first_point(msg: Any) -> np.ndarray:
            if not msg.points:
                raise FieldError("trajectory has no points")
            return named(msg.joint_names, getattr(msg.points[0], field))

        return first_point
    if msgtype in (ARRAY, POLICY_ACTION):
        indexed = _by_index(source)
        return lambda msg: indexed(getattr(msg, field))
    if len(source.names) != POSE_WIDTH[field]:
        raise FieldError(
            f"field {field!r} of {msgtype} gives {POSE_WIDTH[field]} values, {len(source.names)} names given"
        )
    if msgtype == POSE:
        pose = _pose_field(field)
        return lambda msg: pose(msg.pose)
    assert msgtype == ODOMETRY
    if field in ("linear", "angular"):
        return lambda msg: _vector3(getattr(msg.twist.twist, field))
    pose = _pose_field(field)
    return lambda msg: pose(msg.pose.pose)
