"""Scripted multi-modal expert for the Avoiding task (spec section 7).

It gives labelled demonstrations whose path distribution is known exactly, so the data
entropy (1.0 for uniform path choice) is a real target for the distilled MoE. Every
demonstration is recorded by running the same AvoidingEnv used for evaluation and kept
only if the replay succeeds with margin and reads out as its own label.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vdd_ros.tasks.avoiding.env import CONTROL_PERIOD_S, MAX_STEPS, START, AvoidingEnv
from vdd_ros.tasks.avoiding.readout import NUM_PATHS, decode_path
from vdd_ros.tasks.base import Demo
from vdd_ros.tasks.modes import sample_labels
from vdd_ros.util.config import knob

GAPS = ((0.425, 0.575), (0.35, 0.50, 0.65), (0.275, 0.425, 0.575, 0.725))
_WAYPOINT_Y = (-0.16, -0.05, 0.035, 0.13, 0.21, 0.40)  # two per row: enter/leave its obstacle zone
_SAMPLES_PER_SEGMENT = 64
_MAX_ROUNDS = 20


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """Variation knobs of the scripted expert (YAML section ``expert``)."""

    nominal_speed: float = knob(0.2, "mean speed along the path [m/s]")
    speed_range: tuple[float, float] = knob((0.8, 1.2), "uniform speed factor range")
    x_jitter: float = knob(0.01, "+- uniform x jitter per waypoint [m], a quarter of the gap clearance")
    lateral_noise: float = knob(0.002, "amplitude of the smooth lateral wobble [m]")
    min_clearance: float = knob(0.01, "margin a demo must keep beyond collision distance [m]")
    max_steps: int = knob(220, "longest accepted demo; keeps demos inside the 250-step limit")


def path_gaps(path: int) -> tuple[float, float, float]:
    """Gap-centre x for rows 1..3 of canonical path 12*i1 + 4*i2 + i3."""
    if not 0 <= path < NUM_PATHS:
        raise ValueError(f"path must be in [0, {NUM_PATHS}), got {path}")
    return GAPS[0][path // 12], GAPS[1][(path // 4) % 3], GAPS[2][path % 4]


def skewed_path_distribution() -> np.ndarray:
    """Declared non-uniform path distribution, p(k) proportional to 0.85**k, for skewed-data studies."""
    p = 0.85 ** np.arange(NUM_PATHS)
    return p / p.sum()


def waypoints(path: int, rng: np.random.Generator | None = None, x_jitter: float = 0.0) -> np.ndarray:
    """(7, 2) waypoints: start, then each row's gap centre at the entry and exit of its obstacle zone."""
    xs = np.repeat(path_gaps(path), 2).astype(np.float64)
    if rng is not None and x_jitter > 0:
        xs = xs + rng.uniform(-x_jitter, x_jitter, xs.shape)
    return np.vstack([START, np.stack([xs, _WAYPOINT_Y], axis=1)])


def catmull_rom(points: np.ndarray, samples_per_segment: int = _SAMPLES_PER_SEGMENT) -> np.ndarray:
    """Dense centripetal Catmull-Rom curve through ``points`` (m, 2); centripetal avoids cusps and loops."""
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    out = [points[:1]]
    u = np.linspace(0.0, 1.0, samples_per_segment + 1)[1:, None]
    for i in range(len(points) - 1):
        p0, p1, p2, p3 = padded[i : i + 4]
        t0 = 0.0
        t1 = t0 + np.linalg.norm(p1 - p0) ** 0.5
        t2 = t1 + np.linalg.norm(p2 - p1) ** 0.5
        t3 = t2 + np.linalg.norm(p3 - p2) ** 0.5
        t = t1 + u * (t2 - t1)
        a1 = ((t1 - t) * p0 + (t - t0) * p1) / (t1 - t0)
        a2 = ((t2 - t) * p1 + (t - t1) * p2) / (t2 - t1)
        a3 = ((t3 - t) * p2 + (t - t2) * p3) / (t3 - t2)
        b1 = ((t2 - t) * a1 + (t - t0) * a2) / (t2 - t0)
        b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
        out.append(((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1))
    return np.vstack(out)


def minimum_jerk(tau: np.ndarray) -> np.ndarray:
    """Fraction of the path covered at normalised time tau in [0, 1]; zero velocity and acceleration at both ends."""
    return tau**3 * (10 - 15 * tau + 6 * tau**2)


def plan_actions(path: int, rng: np.random.Generator, config: ExpertConfig = ExpertConfig()) -> np.ndarray:
    """Desired-position deltas (K, 2), one per control period, for one varied demonstration of ``path``."""
    curve = catmull_rom(waypoints(path, rng, config.x_jitter))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    length = arc[-1]
    phase = rng.uniform(0, 2 * np.pi, 2)
    wobble = config.lateral_noise * np.sin(np.pi * arc / length)  # zero at both ends
    wobble = wobble * 0.5 * (np.sin(2 * np.pi * arc / length + phase[0]) + np.sin(5 * np.pi * arc / length + phase[1]))
    curve = curve + np.stack([wobble, np.zeros_like(wobble)], axis=1)

    speed = config.nominal_speed * rng.uniform(*config.speed_range)
    steps = int(np.ceil(length / speed / CONTROL_PERIOD_S))
    s = length * minimum_jerk(np.arange(steps + 1) / steps)
    desired = np.stack([np.interp(s, arc, curve[:, 0]), np.interp(s, arc, curve[:, 1])], axis=1)
    return np.diff(desired, axis=0)


def _record(plans: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, AvoidingEnv]:
    """Run plans in one AvoidingEnv (holding still after a plan ends).

    Returns obs (T, n, 4), actions (T, n, 2) and the finished env.
    """
    n = len(plans)
    acts = np.zeros((MAX_STEPS, n, 2))
    for i, p in enumerate(plans):
        acts[: len(p), i] = p[:MAX_STEPS]
    env = AvoidingEnv(n)
    obs = env.reset()
    obs_log, act_log = [], []
    for t in range(MAX_STEPS):
        obs_log.append(obs)
        act_log.append(acts[t])
        obs = env.step(acts[t]).obs
        if env.done.all():
            break
    return np.stack(obs_log), np.stack(act_log).astype(np.float32), env


def generate_demos(labels: np.ndarray, rng: np.random.Generator, config: ExpertConfig = ExpertConfig()) -> list[Demo]:
    """One validated demonstration per path id in ``labels``, in order (``Demo.mode`` = path).

    A candidate is kept only if its replay succeeds within ``max_steps``, keeps ``min_clearance``
    beyond collision distance and reads out as its label; otherwise that slot is re-planned.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    num = len(labels)
    demos: list[Demo | None] = [None] * num
    for _ in range(_MAX_ROUNDS):
        todo = [i for i, d in enumerate(demos) if d is None]
        if not todo:
            return [d for d in demos if d is not None]
        obs, acts, env = _record([plan_actions(int(labels[i]), rng, config) for i in todo])
        path, _ = decode_path(env.bits)
        ok = env.success & (env.min_clearance >= config.min_clearance) & (env.steps <= config.max_steps)
        for j, i in enumerate(todo):
            if ok[j] and path[j] == labels[i]:
                length = int(env.steps[j])
                demos[i] = Demo(obs[:length, j].copy(), acts[:length, j].copy(), int(labels[i]))
    raise RuntimeError(f"scripted expert: could not validate demos after {_MAX_ROUNDS} rounds; check ExpertConfig")


class ScriptedExpertPolicy:
    """Policy-protocol wrapper: each stream replays a freshly generated, validated expert plan.

    Lets the rollout/evaluation pipeline be tested end to end without a trained model.
    Open loop: observations are ignored, so with tracking noise results may differ from the data.
    """

    name = "scripted_expert"

    def __init__(self, path_probs: np.ndarray | None = None, config: ExpertConfig = ExpertConfig()) -> None:
        self.path_probs = path_probs
        self.config = config
        self._plans = np.zeros((0, 0, 2), dtype=np.float32)
        self._t = 0

    def reset(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        probs = np.full(NUM_PATHS, 1.0 / NUM_PATHS) if self.path_probs is None else self.path_probs
        demos = generate_demos(sample_labels(n, probs, rng), rng, self.config)
        self._plans = np.zeros((n, max(len(d.actions) for d in demos), 2), dtype=np.float32)
        for i, d in enumerate(demos):
            self._plans[i, : len(d.actions)] = d.actions
        self._t = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        n = self._plans.shape[0]
        if np.shape(obs)[0] != n:
            raise ValueError(f"ScriptedExpertPolicy: expected {n} streams, got {np.shape(obs)[0]}")
        action = self._plans[:, self._t] if self._t < self._plans.shape[1] else np.zeros((n, 2), dtype=np.float32)
        self._t += 1
        return action
