"""Timed streams -> episodes of one row per control tick.

Episodes are time spans (the whole bag, marker to marker, or runs of the action topic
without a silence longer than ``gap_s``). In each span the ticks start at the first action
message that follows a message of every observation topic (at the phase most actions have), and
repeat every ``control_period_s`` up to the last action message, so row t pairs the command sent at
tick t with the observation it answered. Each topic is sampled at each tick (nearest
sample, or linear between the two around it for observations); a tick whose nearest sample
is farther than ``max_staleness_s`` is a gap and an error, because a row made from a
stale reading would teach the policy something the robot never saw.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vdd_ros.data.bag.config import BagMapping
from vdd_ros.data.bag.reader import BagError, Recording, Stream

_NS = 1_000_000_000
_FOREVER = np.iinfo(np.int64).max


@dataclasses.dataclass
class TopicStats:
    """What resampling did to one topic, over all episodes of all bags."""

    topic: str
    msgtype: str
    messages: int = 0  # inside the ticks' time range
    intervals: list[np.ndarray] = dataclasses.field(default_factory=list)  # ns between messages
    longest_silence_ns: int = 0
    longest_silence_at: str = ""
    ticks: int = 0
    filled: int = 0  # ticks whose nearest message is over half a period away: a message was missing
    repeated: int = 0  # ticks that took the same message as the tick before
    unused: int = 0  # messages no tick took (a faster topic, or duplicates)

    def line(self) -> str:
        rate = f"{_NS / np.median(np.concatenate(self.intervals)):.1f} Hz" if self.intervals else "rate n/a"
        return (
            f"topic {self.topic} ({self.msgtype}): {self.messages} messages, {rate}, longest silence "
            f"{self.longest_silence_ns * 1e-9:.3f} s ({self.longest_silence_at}); ticks {self.ticks}: "
            f"{self.filled} filled across a missing message, {self.repeated} repeated, {self.unused} messages unused"
        )


@dataclasses.dataclass
class Episode:
    """One episode's rows; ``bag`` and ``where`` (number, start time) name it in messages."""

    bag: str
    where: str
    observations: np.ndarray  # (L, obs_dim) float64
    actions: np.ndarray  # (L, act_dim) float64

    @property
    def steps(self) -> int:
        return len(self.actions)


def spans(rec: Recording, mapping: BagMapping) -> list[tuple[int, int]]:
    """The episodes of ``rec`` as [start, end) time spans in ns, in time order."""
    split = mapping.episodes.split
    if split == "bag":
        return [(-_FOREVER, _FOREVER)]
    if split == "marker":
        if not len(rec.markers):
            raise BagError(f"{rec.path}: topic {mapping.episodes.marker_topic} has no message: no episode starts")
        starts = np.unique(rec.markers)
        return list(zip(starts.tolist(), [*starts[1:].tolist(), _FOREVER], strict=True))
    times = rec.action.times
    if not len(times):
        raise BagError(f"{rec.path}: topic {rec.action.topic} has no message: no episode")
    cuts = np.flatnonzero(np.diff(times) > round(mapping.episodes.gap_s * _NS))
    starts = [int(times[0]), *times[cuts + 1].tolist()]
    ends = [*(times[cuts] + 1).tolist(), int(times[-1]) + 1]
    return list(zip(starts, ends, strict=True))


def _inside(stream: Stream, start: int, end: int) -> Stream:
    lo, hi = np.searchsorted(stream.times, [start, end])
    return Stream(stream.topic, stream.msgtype, stream.times[lo:hi], stream.values[lo:hi])


def _ticks(rec: Recording, span: tuple[int, int], period_ns: float) -> np.ndarray:
    """Tick times of the span: from the first action after every observation topic has spoken to the last.

    The ticks keep the control period and the phase most actions have relative to it.
    """
    actions = _inside(rec.action, *span).times
    observed = [_inside(s, *span).times for s in rec.observations]
    if not len(actions) or any(not len(t) for t in observed):
        return np.zeros(0, dtype=np.int64)
    ready = max(int(t[0]) for t in observed)
    actions = actions[actions >= ready]
    if not len(actions):
        return np.zeros(0, dtype=np.int64)
    # the grid takes the actions' median phase, so one slow answer (often the first) shifts no row
    offsets = (actions - actions[0] + period_ns / 2) % period_ns - period_ns / 2
    first = int(actions[0]) + round(float(np.median(offsets)))
    count = int(np.floor((actions[-1] - first) / period_ns + 0.5)) + 1
    return first + np.round(np.arange(count) * period_ns).astype(np.int64)


def _nearest(times: np.ndarray, ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per tick: the samples before/after it (lo, hi), the nearest one and its distance in ns."""
    j = np.searchsorted(times, ticks)
    lo = np.clip(j - 1, 0, len(times) - 1)
    hi = np.clip(j, 0, len(times) - 1)
    d_lo, d_hi = np.abs(ticks - times[lo]), np.abs(times[hi] - ticks)
    nearest = np.where(d_hi < d_lo, hi, lo)
    return lo, hi, nearest, np.minimum(d_lo, d_hi)


def _sample(
    stream: Stream,
    ticks: np.ndarray,
    linear: bool,
    rec: Recording,
    where: str,
    mapping: BagMapping,
    stats: TopicStats | None,
) -> np.ndarray:
    """The stream's values at the ticks; a gap above the staleness limit raises BagError saying where."""
    times, values = stream.times, stream.values
    lo, hi, nearest, dist = _nearest(times, ticks)
    limit = mapping.align.max_staleness_s
    stale = np.flatnonzero(dist > round(limit * _NS))
    if len(stale):
        k = int(stale[0])
        before = times[times <= ticks[k]]
        after = times[times > ticks[k]]
        if len(before) and len(after):
            silence = f"silent for {(after[0] - before[-1]) * 1e-9:.3f} s from {rec.at(int(before[-1]))}"
        elif len(before):
            silence = f"silent after {rec.at(int(before[-1]))}"
        else:
            silence = f"silent before {rec.at(int(after[0]))}"
        raise BagError(
            f"{rec.path}: topic {stream.topic} {silence}, at the tick at {rec.at(int(ticks[k]))} ({where}): "
            f"above align.max_staleness_s={limit}"
        )
    if stats is not None:
        _count(stats, stream, ticks, nearest, dist, rec, mapping.control_period_s)
    if not linear:
        return values[nearest]
    span = (times[hi] - times[lo]).astype(np.float64)
    weight = np.divide(ticks - times[lo], span, out=np.zeros(len(ticks)), where=span > 0)[:, None]
    between = (lo != hi) & (times[lo] <= ticks) & (ticks <= times[hi])
    return np.where(between[:, None], (1.0 - weight) * values[lo] + weight * values[hi], values[nearest])


def _count(
    stats: TopicStats,
    stream: Stream,
    ticks: np.ndarray,
    nearest: np.ndarray,
    dist: np.ndarray,
    rec: Recording,
    period_s: float,
) -> None:
    half = round(period_s * _NS / 2)
    lo, hi = np.searchsorted(stream.times, [ticks[0] - half, ticks[-1] + half], side="right")
    window = stream.times[lo:hi]
    stats.messages += len(window)
    stats.ticks += len(ticks)
    stats.filled += int(np.sum(dist > half))
    stats.repeated += int(np.sum(nearest[1:] == nearest[:-1]))
    stats.unused += len(set(range(lo, hi)) - set(nearest.tolist()))
    if len(window) > 1:
        gaps = np.diff(window)
        stats.intervals.append(gaps)
        k = int(np.argmax(gaps))
        if gaps[k] > stats.longest_silence_ns:
            stats.longest_silence_ns = int(gaps[k])
            stats.longest_silence_at = f"from {rec.at(int(window[k]))} in {rec.path}"


def episodes(rec: Recording, mapping: BagMapping, stats: dict[str, TopicStats]) -> list[Episode]:
    """Every episode of ``rec`` (short ones included: the caller decides), counting into ``stats``."""
    period_ns = mapping.control_period_s * _NS
    linear = mapping.align.interpolation == "linear"
    out = []
    for number, span in enumerate(spans(rec, mapping)):
        ticks = _ticks(rec, span, period_ns)
        start = rec.at(int(ticks[0])) if len(ticks) else rec.at(max(span[0], rec.origin_ns))
        where = f"episode {number} from {start}"
        if not len(ticks):
            nothing = np.zeros((0, len(mapping.obs_names))), np.zeros((0, len(mapping.action.names)))
            out.append(Episode(rec.path, where, *nothing))
            continue
        columns = []
        counted = set()
        for stream in [*rec.observations, rec.action]:
            inside = _inside(stream, *span)
            topic_stats = None
            if stream.topic not in counted:
                counted.add(stream.topic)
                topic_stats = stats.setdefault(stream.topic, TopicStats(stream.topic, stream.msgtype))
            is_action = stream is rec.action
            columns.append(_sample(inside, ticks, linear and not is_action, rec, where, mapping, topic_stats))
        obs, act = np.concatenate(columns[:-1], axis=1), columns[-1]
        if mapping.action.kind == "difference":
            obs, act = obs[:-1], np.diff(act, axis=0)
        out.append(Episode(rec.path, where, obs, act))
    return out
