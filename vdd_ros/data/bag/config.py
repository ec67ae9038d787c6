"""The mapping from a rosbag2 recording to dataset columns: which topics, fields, names, timing, episodes.

Plain frozen dataclasses of ``knob``s (no rosbags import), so ``import_bag --help`` and the
config checks answer without loading the bag library. Everything the mapping can get wrong
without opening a bag (names, counts, periods) fails here, before anything is read.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from vdd_ros.util.config import ConfigError, knob

JOINT_STATE = "sensor_msgs/msg/JointState"
ARRAY = "std_msgs/msg/Float64MultiArray"
POSE = "geometry_msgs/msg/PoseStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
POLICY_ACTION = "vdd_ros_msgs/msg/PolicyAction"

# message type -> its fields (the first is the default), for observations and the action alike;
# what each yields is in docs/dataset_format.md
FIELDS: dict[str, tuple[str, ...]] = {
    JOINT_STATE: ("position", "velocity", "effort"),
    ARRAY: ("data",),
    POSE: ("position", "orientation", "yaw"),
    ODOMETRY: ("position", "orientation", "yaw", "linear", "angular"),
    TRAJECTORY: ("positions", "velocities"),
    POLICY_ACTION: ("action",),
}
# PoseStamped/Odometry fields of a fixed width: position x,y,z; orientation quaternion x,y,z,w; yaw; twist x,y,z
POSE_WIDTH = {"position": 3, "orientation": 4, "yaw": 1, "linear": 3, "angular": 3}


@dataclasses.dataclass(frozen=True)
class Source:
    """One topic's field as dataset columns."""

    topic: str = knob("", "topic name as recorded, e.g. /observation or /command")
    type: str = knob("", "expected message type (e.g. sensor_msgs/msg/JointState); empty = as recorded")
    field: str = knob(
        "",
        "field to read (JointState position|velocity|effort, Float64MultiArray data, "
        "PoseStamped/Odometry position|orientation|yaw, Odometry linear|angular, "
        "JointTrajectory positions|velocities, PolicyAction action); empty = the type's first",
    )
    names: tuple[str, ...] = knob((), "output column names; for JointState/JointTrajectory also the joints to pick")
    indices: tuple[int, ...] = knob((), "Float64MultiArray/PolicyAction: element per name; empty = all, in order")

    def check(self, where: str) -> None:
        if not self.topic:
            raise ConfigError(f"{where}.topic is empty")
        if not self.names:
            raise ConfigError(f"{where}.names is empty (topic {self.topic})")
        if self.type and self.type not in FIELDS:
            raise ConfigError(
                f"{where}: unsupported message type {self.type!r} (topic {self.topic}); supported: {', '.join(FIELDS)}"
            )
        if self.type and self.field and self.field not in FIELDS[self.type]:
            raise ConfigError(f"{where}.field {self.field!r} is not one of {FIELDS[self.type]} for {self.type}")
        if self.indices and len(self.indices) != len(self.names):
            raise ConfigError(f"{where}: {len(self.indices)} indices for {len(self.names)} names")
        if any(i < 0 for i in self.indices):
            raise ConfigError(f"{where}.indices must be >= 0, got {list(self.indices)}")


@dataclasses.dataclass(frozen=True)
class ActionSource(Source):
    """The command topic and how its values become the dataset's actions."""

    kind: Literal["value", "difference"] = knob(
        "value",
        "value: action t = the command at tick t as recorded (an absolute target, or a topic that already "
        "carries deltas such as the controller's command); difference: the topic is an absolute command "
        "signal and action t = its value at tick t+1 minus at tick t (each episode loses its last tick)",
    )


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """How samples at their own times become one row per control tick."""

    interpolation: Literal["nearest", "linear"] = knob(
        "nearest", "observations at a tick: nearest sample, or linear between the two around it (actions: nearest)"
    )
    max_staleness_s: float = knob(0.1, "a tick whose nearest sample of a topic is farther than this is a gap: error")
    stamp: Literal["receive", "header"] = knob("receive", "message time: bag receive time, or header.stamp")


@dataclasses.dataclass(frozen=True)
class EpisodesConfig:
    """Where episodes start and end, and which are too short."""

    split: Literal["bag", "marker", "gap"] = knob(
        "bag",
        "bag: each bag is one episode; marker: each message on marker_topic starts one; "
        "gap: a silence longer than gap_s on the action topic ends one",
    )
    marker_topic: str = knob("/episode_start", "split=marker: topic whose messages (any type) start episodes")
    gap_s: float = knob(1.0, "split=gap: silence on the action topic that separates episodes [s]")
    min_steps: int = knob(5, "shortest episode kept (at least the teacher's obs_window)")
    drop_short: bool = knob(False, "false: a shorter episode is an error; true: it is dropped and reported")


@dataclasses.dataclass(frozen=True)
class BagMapping:
    """A rosbag2 recording -> dataset columns, one row per control tick."""

    observations: tuple[Source, ...] = knob((), "observation sources in column order (list of mappings)")
    action: ActionSource = dataclasses.field(default_factory=ActionSource)
    control_period_s: float = knob(0.035, "time between dataset rows [s]")
    task: str = knob("", "registered task the data is for (evaluation during distillation); empty = none")
    align: AlignConfig = dataclasses.field(default_factory=AlignConfig)
    episodes: EpisodesConfig = dataclasses.field(default_factory=EpisodesConfig)

    @property
    def obs_names(self) -> tuple[str, ...]:
        return tuple(n for s in self.observations for n in s.names)

    def check(self) -> None:
        if not self.observations:
            raise ConfigError("observations is empty: list at least one {topic, field, names} source")
        for i, source in enumerate(self.observations):
            source.check(f"observations[{i}]")
        self.action.check("action")
        for what, names in (("observation", self.obs_names), ("action", self.action.names)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ConfigError(f"duplicate {what} names {dupes}")
        if not self.control_period_s > 0:
            raise ConfigError(f"control_period_s must be > 0, got {self.control_period_s}")
        if not self.align.max_staleness_s > 0:
            raise ConfigError(f"align.max_staleness_s must be > 0, got {self.align.max_staleness_s}")
        if self.episodes.split == "gap" and not self.episodes.gap_s > self.control_period_s:
            raise ConfigError(f"episodes.gap_s ({self.episodes.gap_s}) must exceed control_period_s")
        if self.episodes.split == "marker" and not self.episodes.marker_topic:
            raise ConfigError("episodes.marker_topic is empty but episodes.split is 'marker'")
        if self.episodes.min_steps < 1:
            raise ConfigError(f"episodes.min_steps must be >= 1, got {self.episodes.min_steps}")
